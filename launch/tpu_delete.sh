#!/usr/bin/env bash
# Deletes the TPU VM (or, with QUEUED=1, its queued resource). Checkpoints in a gs:// workdir stay.
# Settings (environment): TPU_NAME, ZONE, PROJECT, QUEUED (0), DRY_RUN (0; 1 prints the gcloud
# command instead of running it).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
mapfile -t location < <(gcloud_location)
if [[ "$QUEUED" == "1" ]]; then
  run gcloud compute tpus queued-resources delete "$TPU_NAME" "${location[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${location[@]}" --quiet
fi
