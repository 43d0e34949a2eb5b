#!/usr/bin/env bash
# Stops the run on every worker of the TPU VM: SIGTERM to each trainer, which all stop at the same
# step and save it (JAX's preemption sync, as on a real preemption), then waits until every
# trainer has exited. Resume later with launch/tpu_run.sh; checkpoints stay in WORKDIR.
# Settings (environment): STOP_TIMEOUT_S (600: how long each worker waits for its trainer),
# TPU_NAME, ZONE, PROJECT, REMOTE_DIR, DRY_RUN (0; 1 prints the gcloud command instead).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
on_workers all "cd ~/$REMOTE_DIR && STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-600} launch/tpu_worker.sh stop"
