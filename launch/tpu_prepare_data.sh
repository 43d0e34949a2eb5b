#!/usr/bin/env bash
# Builds a TFDS data set once, on worker 0, into a bucket every worker reads: the default is
# cycle_gan/vangogh2photo in array_record format (what the tfds source reads, without TF).
# Settings (environment): TFDS_DATA_DIR (required, e.g. gs://my-bucket/tfds), DATASET
# (cycle_gan/vangogh2photo), TPU_NAME, ZONE, PROJECT, REMOTE_DIR, DRY_RUN (0; 1 prints the
# gcloud command instead of running it).
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
require TFDS_DATA_DIR
dataset="${DATASET:-cycle_gan/vangogh2photo}"
on_workers 0 "cd ~/$REMOTE_DIR && .venv/bin/tfds build $(printf '%q' "$dataset") \
--data_dir=$(printf '%q' "$TFDS_DATA_DIR") --file_format=array_record"
