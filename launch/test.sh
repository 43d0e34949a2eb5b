#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite, one test file per worker
# (TEST_WORKERS, default 2). Extra arguments go to pytest: -m "not slow" is the fast tier.
# A worker that dies (a native crash) fails the run at once, naming its test: with --dist
# loadfile, pytest-xdist 3.8 can wait forever on the worker it would start in its place.
# --capture=sys leaves native stderr alone, so the message of such a crash (an XLA check, a
# glibc heap error) reaches the log instead of a capture file that dies with the worker.
set -euo pipefail
if [[ "${1:-}" == "--help" ]]; then
  sed -n '2,3p' "$0"; exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/launch/setup.sh" test
"${VENV:-$root/.venv}/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile \
  --max-worker-restart=0 --capture=sys "$@"
