#!/usr/bin/env bash
# Creates a TPU VM (or, with QUEUED=1, a queued resource that becomes one) for training, and
# returns once it is up: gcloud waits for a TPU VM; a queued resource is polled until ACTIVE
# (its state is shown; it gives up after WAIT_TIMEOUT_S and leaves the request queued).
# Settings (environment): TPU_NAME (cyclegan), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-32),
# RUNTIME_VERSION (tpu-ubuntu2204-base), PROJECT (gcloud's default), QUEUED (0), SPOT (0),
# WAIT_TIMEOUT_S (7200), POLL_S (30), DRY_RUN (0; 1 prints the gcloud command instead).
# Next: launch/tpu_setup.sh.
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
mapfile -t location < <(gcloud_location)
spot=()
if [[ "$SPOT" == "1" ]]; then spot=(--spot); fi
if [[ "$QUEUED" == "1" ]]; then
  run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
    "${location[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${spot[@]}"
  wait_until_active
else
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${location[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${spot[@]}"
fi
