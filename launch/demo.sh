#!/usr/bin/env bash
# Sets up .venv and trains the offline demo (photos → The Starry Night, CUT) on this machine.
# Extra arguments go to cyclegan_jax.main, e.g. --config.num_train_steps=200.
# Settings: WORKDIR (default workdirs/demo).
set -euo pipefail
if [[ "${1:-}" == "--help" ]]; then
  sed -n '2,4p' "$0"; exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/launch/setup.sh"
workdir="${WORKDIR:-workdirs/demo}"
CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}" TF_CPP_MIN_LOG_LEVEL=2 \
  "${VENV:-$root/.venv}/bin/python" -m cyclegan_jax.main --config=configs/demo.py \
  --workdir="$workdir" "$@"
echo "Sample grids: $workdir/samples/  Loss curves: $workdir/loss_curves.png"
echo "TensorBoard:  tensorboard --logdir $workdir"
