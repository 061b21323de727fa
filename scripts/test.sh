#!/usr/bin/env bash
# Install what is missing and run the whole test suite: lint, types, unit tests, and the
# integration tests on a lab of real hosts (real sshd + dockerd in network namespaces).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export DISTRIB_REQUIRE_LAB=1 # the lab tests must run here, never be skipped
status=0
.venv/bin/ruff check distrib tests || status=1
.venv/bin/mypy || status=1
.venv/bin/python -m pytest -v "$@"
rc=$?
if [ "$rc" = 5 ]; then
    echo "pytest collected no tests" >&2
    rc=1
fi
[ "$rc" = 0 ] || status=$rc
# The suite tears its lab down; make sure nothing is left even if pytest was killed.
.venv/bin/distrib lab down >/dev/null 2>&1 || true
exit $status
