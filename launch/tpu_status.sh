#!/usr/bin/env bash
# Shows where a pod run stands: the TPU VM's state (or, with QUEUED=1, its queued resource's),
# the latest finished checkpoint in WORKDIR, and, while the slice is up, each worker's trainer
# (running or not) with the last line of its log.
# Settings (environment): WORKDIR (the run's gs:// workdir; without it no checkpoint is shown),
# TPU_NAME, ZONE, PROJECT, QUEUED (0), REMOTE_DIR, DRY_RUN (0; 1 prints the ssh command instead
# of running it; the state and the bucket are still read).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
state="$(tpu_state)"
what="TPU VM"
if [[ "$QUEUED" == "1" ]]; then what="queued resource"; fi
echo "$what $TPU_NAME ($ZONE): $state"
if [[ -n "${WORKDIR:-}" ]]; then
  # On gs:// orbax marks a finished checkpoint with commit_success.txt in its step's folder.
  latest="$(gcloud storage ls "$WORKDIR/checkpoints/*/commit_success.txt" 2>/dev/null \
            | sed -n 's#.*/checkpoints/\([0-9]*\)/commit_success.txt$#step \1#p' | sort -k2n | tail -n 1 \
            || true)"
  echo "latest checkpoint in $WORKDIR: ${latest:-none yet}"
fi
case "$state" in
  READY|ACTIVE) on_workers all "cd ~/$REMOTE_DIR && launch/tpu_worker.sh status" ;;
  PREEMPTED|TERMINATED|SUSPENDING|SUSPENDED|FAILED)
    echo "the slice is gone: launch/tpu_resume.sh recreates it and resumes from the checkpoint" ;;
  *) echo "no workers to ask while it is $state" ;;
esac
