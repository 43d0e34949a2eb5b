#!/usr/bin/env bash
# Follows the training log of worker 0 (process 0: losses, steps/s, checkpoints), or of the
# worker given as the first argument (a number, or all). Ctrl-C stops following; training goes on.
#   launch/tpu_logs.sh      launch/tpu_logs.sh 3
# Settings (environment): LOG_LINES (50: lines shown before following), TPU_NAME, ZONE, PROJECT,
# REMOTE_DIR, DRY_RUN (0; 1 prints the gcloud command instead).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
worker="${1:-0}"
if [[ ! "$worker" =~ ^([0-9]+|all)$ ]]; then
  echo "error: worker '$worker': expected a number or all (see --help)" >&2
  exit 2
fi
on_workers "$worker" "tail -n ${LOG_LINES:-50} -F ~/$REMOTE_DIR/train.log"
