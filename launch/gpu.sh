#!/usr/bin/env bash
# Trains on every GPU of this machine (one process, pmap over the GPUs): sets up .venv with
# CUDA JAX, then runs `python -m cyclegan_jax.main`. Extra arguments are passed on, e.g.
#   CONFIG=configs/vangogh2photo.py launch/gpu.sh --config.data.path=/data/vangogh2photo.zip
# The global batch defaults to BATCH_PER_GPU × the number of GPUs.
# Settings (environment): CONFIG (configs/default.py), WORKDIR (workdirs/gpu), BATCH_PER_GPU (1),
# CUDA_VISIBLE_DEVICES (all), JAX_CUDA_EXTRA (cuda12), DRY_RUN (0; 1 prints the command only).
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${VENV:-$root/.venv}/bin/python"
if [[ "${DRY_RUN:-0}" != "1" ]]; then
  "$root/launch/setup.sh"
  "$python" -m pip install --quiet "jax[${JAX_CUDA_EXTRA:-cuda12}]"
fi
gpus="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | wc -l || true)"
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  gpus="$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)"
fi
if [[ "$gpus" == "0" ]]; then
  echo "error: no GPU found (nvidia-smi lists none)" >&2
  exit 1
fi
command=("$python" -m cyclegan_jax.main --config="${CONFIG:-configs/default.py}"
         --workdir="${WORKDIR:-workdirs/gpu}" --config.batch_size="$(( ${BATCH_PER_GPU:-1} * gpus ))"
         "$@")
if [[ "${DRY_RUN:-0}" == "1" ]]; then echo "${command[*]}"; else exec "${command[@]}"; fi
