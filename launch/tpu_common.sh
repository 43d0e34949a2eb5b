# Settings and helpers shared by the tpu_*.sh scripts (sourced, not run). Every setting comes
# from the environment; DRY_RUN=1 prints each gcloud command instead of running it.
# shellcheck shell=bash

TPU_NAME="${TPU_NAME:-cyclegan}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"
QUEUED="${QUEUED:-0}"  # 1: create/delete through a queued resource.
SPOT="${SPOT:-0}"  # 1: preemptible capacity (runs resume from their last checkpoint).
REMOTE_DIR="${REMOTE_DIR:-cyclegan_jax}"  # Checkout on each worker, relative to its home.
DRY_RUN="${DRY_RUN:-0}"

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
    echo "${words[*]}"
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
