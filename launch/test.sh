#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite, one test file per worker
# (TEST_WORKERS, default 2). Extra arguments go to pytest: -m "not slow" is the fast tier.
set -euo pipefail
if [[ "${1:-}" == "--help" ]]; then
  sed -n '2,3p' "$0"; exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/launch/setup.sh" test
"${VENV:-$root/.venv}/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
