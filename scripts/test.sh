#!/usr/bin/env bash
# Install msc_rules with its test extra, then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test]"
ruff check msc_rules tests benchmarks
mypy
python -m pytest -q
