#!/usr/bin/env bash
# Brings a pod run back after a preemption, in one command. A preempted Spot or preemptible TPU VM
# (PREEMPTED, TERMINATED) cannot be restarted, and a preempted queued resource (SUSPENDING,
# SUSPENDED, FAILED) is not given capacity again: both are deleted and created anew (a queued
# resource waits in the queue until ACTIVE), this checkout is installed (tpu_setup.sh) and the
# run started (tpu_run.sh); it restores the latest checkpoint in WORKDIR. A missing slice is
# created, one still queued is waited for, and on a READY/ACTIVE slice only the run is started
# (tpu_run.sh refuses if a trainer runs). --recreate (first argument) recreates a READY slice too.
# Other arguments go to tpu_run.sh.
# Settings (environment): those of tpu_create.sh, tpu_setup.sh and tpu_run.sh (WORKDIR required).
# DRY_RUN=1 reads the state, then prints the commands it would run.
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
here="$(dirname "${BASH_SOURCE[0]}")"
recreate=0
if [[ "${1:-}" == "--recreate" ]]; then recreate=1; shift; fi
check_run_settings "${CONFIG:-configs/vangogh2photo_tpu.py}" "$@"  # Before anything is deleted.
state="$(tpu_state)"
echo "$TPU_NAME: $state" >&2
case "$state" in
  READY|ACTIVE)
    if [[ "$recreate" == "0" ]]; then exec "$here/tpu_run.sh" "$@"; fi
    "$here/tpu_delete.sh" ;;
  PREEMPTED|TERMINATED|SUSPENDING|SUSPENDED|FAILED) "$here/tpu_delete.sh" ;;
  NOT_FOUND) ;;
  CREATING|ACCEPTED|PROVISIONING|WAITING_FOR_RESOURCES)
    if [[ "$QUEUED" != "1" ]]; then
      echo "error: $TPU_NAME is $state; run this again once it is READY" >&2
      exit 1
    fi
    wait_until_active
    "$here/tpu_setup.sh"
    exec "$here/tpu_run.sh" "$@" ;;
  *)
    echo "error: $TPU_NAME is $state; run this again once that has settled (launch/tpu_status.sh)" >&2
    exit 1 ;;
esac
"$here/tpu_create.sh"
"$here/tpu_setup.sh"
exec "$here/tpu_run.sh" "$@"
