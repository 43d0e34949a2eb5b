#!/usr/bin/env bash
# Starts training on every worker of the TPU VM, detached, and returns: the same
# `python -m cyclegan_jax.main --jax_distributed` on each worker (they find each other on TPU
# VMs) under nohup and setsid, its output appended to ~/REMOTE_DIR/train.log. Extra arguments are
# passed on, e.g. --config.num_train_steps=1000. A run restores the latest checkpoint in WORKDIR.
# It refuses to start while a trainer runs on any worker; --replace (first argument) stops those
# first (launch/tpu_stop.sh: they save a checkpoint). Then: launch/tpu_logs.sh, tpu_status.sh.
# After a preemption use launch/tpu_resume.sh, which recreates the slice first.
# Settings (environment): WORKDIR (required, a gs:// path: every worker must see the checkpoints
# process 0 writes), CONFIG (configs/vangogh2photo_tpu.py), TFDS_DATA_DIR (the tfds data_dir,
# e.g. gs://my-bucket/tfds; required when the config reads TFDS data), TPU_NAME, ZONE, PROJECT,
# REMOTE_DIR, DRY_RUN (0; 1 prints the gcloud commands instead).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
replace=0
if [[ "${1:-}" == "--replace" ]]; then replace=1; shift; fi
config="${CONFIG:-configs/vangogh2photo_tpu.py}"
check_run_settings "$config" "$@"
args=(--config="$config" --workdir="$WORKDIR" --jax_distributed)
if [[ -n "${TFDS_DATA_DIR:-}" ]]; then args+=(--config.data.path="$TFDS_DATA_DIR"); fi
args+=("$@")
if [[ "$replace" == "1" ]]; then
  "$(dirname "${BASH_SOURCE[0]}")/tpu_stop.sh"
else
  running="$(on_workers all "cd ~/$REMOTE_DIR && launch/tpu_worker.sh running")"
  if grep -q ': trainer running' <<<"$running"; then
    echo "error: a trainer is already running (a second would find the TPU in use):" >&2
    grep ': trainer running' <<<"$running" >&2
    echo "Stop it with launch/tpu_stop.sh (it saves a checkpoint), or rerun with --replace." >&2
    exit 1
  fi
fi
quoted="$(printf '%q ' "${args[@]}")"
on_workers all "cd ~/$REMOTE_DIR && launch/tpu_worker.sh start ${quoted% }"
if [[ "$DRY_RUN" != "1" ]]; then
  echo "Training runs detached on every worker. Follow it: launch/tpu_logs.sh; state: launch/tpu_status.sh; stop: launch/tpu_stop.sh" >&2
fi
