#!/usr/bin/env bash
# Starts training on every worker of the TPU VM at once: the same `python -m cyclegan_jax.main`
# with --jax_distributed (workers find each other on TPU VMs). Extra arguments are passed on,
# e.g. --config.num_train_steps=1000. Run it again to resume after a preemption.
# Settings (environment): WORKDIR (required, e.g. gs://my-bucket/runs/vg), CONFIG
# (configs/vangogh2photo_tpu.py), TFDS_DATA_DIR (the tfds data_dir, e.g. gs://my-bucket/tfds),
# TPU_NAME, ZONE, PROJECT, REMOTE_DIR, DRY_RUN (0; 1 prints the gcloud command instead).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
require WORKDIR
args=(--config="${CONFIG:-configs/vangogh2photo_tpu.py}" --workdir="$WORKDIR" --jax_distributed)
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then args+=(--config.data.path="$TFDS_DATA_DIR"); fi
args+=("$@")
quoted="$(printf '%q ' "${args[@]}")"
on_workers all "cd ~/$REMOTE_DIR && .venv/bin/python -m cyclegan_jax.main ${quoted% }"
