#!/usr/bin/env bash
# Install msc_rules with its test extra, then lint, type-check and run the tests.
# Every check runs even when an earlier one fails; the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test]" || exit 1
status=0
ruff check msc_rules tests benchmarks examples || status=1
mypy || status=1
python -m pytest -q || status=1
exit $status
