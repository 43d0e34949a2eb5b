#!/usr/bin/env bash
# Copies this checkout (git HEAD) to every worker of the TPU VM and installs it there in a venv
# with jax[tpu]. Idempotent: run it again after a commit to update the workers.
# Settings (environment): TPU_NAME, ZONE, PROJECT, REMOTE_DIR (cyclegan_jax, under the home
# directory), DRY_RUN (0; 1 prints the gcloud commands instead of running them).
# Next: launch/tpu_prepare_data.sh, then launch/tpu_run.sh.
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="${TMPDIR:-/tmp}/cyclegan_jax_src.tar.gz"
run git -C "$root" archive --format=tar.gz -o "$archive" HEAD
mapfile -t location < <(gcloud_location)
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:cyclegan_jax_src.tar.gz" \
  "${location[@]}" --worker=all
on_workers all "set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/cyclegan_jax_src.tar.gz -C ~/$REMOTE_DIR \
&& cd ~/$REMOTE_DIR && { [ -x .venv/bin/python ] || python3 -m venv .venv; } \
&& .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e . 'jax[tpu]'"
