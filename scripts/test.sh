#!/usr/bin/env bash
# Install msc_rules with its test extra, then lint, type-check and run the tests.
# Every check runs even when an earlier one fails; the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e ".[test]" || exit 1
status=0
ruff check msc_rules tests benchmarks examples || status=1
mypy || status=1
# The suite runs both ways (msc_rules/native): the whole of it with the native walk
# (built here at first use; the run fails if it cannot be built), then the tests that
# write markers with the pure-Python fallback (about 5.5 + 3 min on the loaded 2-core
# development machine; everything twice would be about 11). The rest (DSL, layout
# algebra, engine, CLI rendering) never reaches the rebuild, and tests/test_native.py,
# test_naming_native.py, test_rewrite_columns.py and test_prune.py compare both paths
# (read, naming, marker rebuild, prune rebuild) anyway.
MSC_RULES_NATIVE=1 python -m pytest -q || status=1
MSC_RULES_NATIVE=0 python -m pytest -q tests/test_set_expr_layout.py tests/test_naming.py \
    tests/test_pipeline.py tests/test_odd_modules.py tests/test_random_modules.py \
    tests/test_threads.py tests/test_scale.py tests/test_native.py tests/test_prune_shapes.py \
    tests/test_view_columns.py || status=1
exit $status
