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
.venv/bin/lint-imports || status=1  # the layering contracts in pyproject.toml
# The pure core (planner, playbook, inventory, patterns, decisions) needs only pyyaml (issue 15):
# its tests run first in a venv without fabric, paramiko and tqdm, so an I/O import there fails.
PURE_TESTS=(tests/test_plan.py tests/test_playbook.py tests/test_inventory.py tests/test_patterns.py
    tests/test_refs.py tests/test_platforms.py tests/test_sources.py tests/test_fanout.py
    tests/test_properties.py tests/test_commands.py tests/test_tidy.py tests/test_auto_codec.py
    tests/test_delta.py tests/test_decide.py tests/test_codecs.py)
if [ ! -x .venv-pure/bin/python ]; then
    python3 -m venv .venv-pure
fi
.venv-pure/bin/python -m pip install -q pyyaml pytest hypothesis >/dev/null 2>&1 || status=1
if .venv-pure/bin/python -c 'import fabric' 2>/dev/null; then
    echo "scripts/test.sh: .venv-pure must not have fabric" >&2
    status=1
fi
.venv-pure/bin/python -m pytest -q -p no:cacheprovider -m "not lab" "${PURE_TESTS[@]}" || status=1
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
