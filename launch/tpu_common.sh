# Settings and helpers shared by the tpu_*.sh scripts (sourced, not run). Every setting comes
# from the environment. DRY_RUN=1 prints each command that would create, change, copy, start or
# stop something instead of running it; the read-only queries of the TPU's state (describe) and
# of the bucket (ls) still run, since what a script does next depends on their answers.
# shellcheck shell=bash

TPU_NAME="${TPU_NAME:-cyclegan}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"
QUEUED="${QUEUED:-0}"  # 1: create/delete through a queued resource.
SPOT="${SPOT:-0}"  # 1: Spot capacity; a preempted slice is recreated (tpu_resume.sh).
REMOTE_DIR="${REMOTE_DIR:-cyclegan_jax}"  # Checkout on each worker, relative to its home.
DRY_RUN="${DRY_RUN:-0}"
WAIT_TIMEOUT_S="${WAIT_TIMEOUT_S:-7200}"  # QUEUED=1: how long to wait for ACTIVE.
POLL_S="${POLL_S:-30}"  # QUEUED=1: seconds between looks at the queued resource.
# DRY_RUN lines go to fd 3, the script's stdout, so that they show even when printed from inside
# a $(...) that captures a command's answer.
exec 3>&1

# Prints the comment block at the top of the calling script and exits, for --help.
usage_if_asked() {
  if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
    sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
  fi
}

# Runs a command, or prints it on one line under DRY_RUN=1, quoting only the words that need it
# (the output can be pasted back into a shell).
run() {
  if [[ "$DRY_RUN" == "1" ]]; then
    local word words=()
    for word in "$@"; do
      if [[ "$word" =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then words+=("$word"); else words+=("${word@Q}"); fi
    done
    echo "${words[*]}" >&3
  else
    "$@"
  fi
}

# The flags every `gcloud compute tpus` call takes.
gcloud_location() {
  echo "--zone=$ZONE"
  if [[ -n "$PROJECT" ]]; then echo "--project=$PROJECT"; fi
}

# Runs a shell command line on the TPU VM's workers ("all", or a worker number).
on_workers() {
  local workers="$1" command="$2"
  local location
  mapfile -t location < <(gcloud_location)
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${location[@]}" --worker="$workers" \
    --command="$command"
}

# Fails with a message naming a setting that must be given.
require() {
  local name="$1"
  if [[ -z "${!name:-}" ]]; then
    echo "error: set $name (see --help)" >&2
    exit 2
  fi
}

# Prints the TPU VM's state (READY, PREEMPTED, ...) or, with QUEUED=1, its queued resource's
# (ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED, ...); NOT_FOUND if there is none.
tpu_state() {
  local location command err state
  mapfile -t location < <(gcloud_location)
  if [[ "$QUEUED" == "1" ]]; then
    command=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${location[@]}"
             --format='value(state.state)')
  else
    command=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${location[@]}" --format='value(state)')
  fi
  err="$(mktemp)"
  if state="$("${command[@]}" 2>"$err")"; then
    echo "$state"
  elif grep -q NOT_FOUND "$err"; then
    echo NOT_FOUND
  else
    cat "$err" >&2
    rm -f "$err"
    exit 1
  fi
  rm -f "$err"
}

# QUEUED=1: waits until the queued resource is ACTIVE (its TPU VM exists), showing its state.
wait_until_active() {
  if [[ "$DRY_RUN" == "1" ]]; then
    echo "# then waits until queued resource $TPU_NAME is ACTIVE (up to ${WAIT_TIMEOUT_S}s)" >&3
    return
  fi
  local state start="$SECONDS"
  while true; do
    state="$(tpu_state)"
    echo "queued resource $TPU_NAME: $state ($(( (SECONDS - start) / 60 )) of $(( WAIT_TIMEOUT_S / 60 )) min)" >&2
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDING|SUSPENDED|NOT_FOUND)
        echo "error: queued resource $TPU_NAME is $state; see gcloud compute tpus queued-resources describe $TPU_NAME" >&2
        exit 1 ;;
    esac
    if (( SECONDS - start >= WAIT_TIMEOUT_S )); then
      echo "error: queued resource $TPU_NAME is still $state after ${WAIT_TIMEOUT_S}s. It stays in the queue: watch it with launch/tpu_status.sh, continue with launch/tpu_resume.sh once ACTIVE, or remove it with launch/tpu_delete.sh" >&2
      exit 1
    fi
    sleep "$POLL_S"
  done
}

# Refuses, before anything runs, the settings a pod run cannot work with. $1 is the config file,
# the rest the run's --config.* overrides.
check_run_settings() {
  local config="$1"
  shift
  require WORKDIR
  if [[ "$WORKDIR" != gs://* ]]; then
    echo "error: WORKDIR=$WORKDIR is not a gs:// path. orbax writes checkpoints from process 0 only, so every worker must see the same workdir to restore them: use a bucket, e.g. gs://my-bucket/runs/vg" >&2
    exit 2
  fi
  # TFDS data: the config file sets data.source, or an override does (the last one counts).
  local file source arg
  file="$(dirname "${BASH_SOURCE[0]}")/../${config%%:*}"
  if [[ ! -f "$file" ]]; then
    echo "error: CONFIG=$config: no such file in this checkout" >&2
    exit 2
  fi
  source="$(sed -n "s/^ *config\.data\.source = '\(.*\)'.*/\1/p" "$file" | tail -n 1)"
  for arg in "$@"; do
    if [[ "$arg" == --config.data.source=* ]]; then source="${arg#*=}"; fi
    if [[ "$arg" == --config.data.path=* ]]; then return 0; fi
  done
  if [[ "$source" == tfds && -z "${TFDS_DATA_DIR:-}" ]]; then
    echo "error: $config reads TFDS data: set TFDS_DATA_DIR to the data_dir tpu_prepare_data.sh built (e.g. gs://my-bucket/tfds); without it every worker looks in its own ~/tensorflow_datasets" >&2
    exit 2
  fi
}
