#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
if [[ "${1:-}" == "--help" ]]; then
  sed -n '2p' "$0"; exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/launch/setup.sh" test
"${VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
