#!/usr/bin/env bash
# Runs on one TPU VM worker, in its checkout: the tpu_*.sh scripts call it over ssh on every
# worker at once. It starts the trainer detached, says whether one runs, or stops it.
#   launch/tpu_worker.sh start ARGS...  `python -m cyclegan_jax.main ARGS` under nohup and setsid,
#                                       output appended to the log; does nothing if one runs
#   launch/tpu_worker.sh running        "HOST: trainer running (pid N)", only if one runs
#   launch/tpu_worker.sh status         whether a trainer runs, and the log's last line
#   launch/tpu_worker.sh stop           SIGTERM to the trainer (it saves a checkpoint), then
#                                       waits until it has exited
# Settings (environment): PYTHON (.venv/bin/python), LOG (train.log, in the checkout),
# STOP_TIMEOUT_S (600).
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-.venv/bin/python}"
# Trainer processes, for pgrep -f: this venv's python running cyclegan_jax.main (also one an
# earlier version started in the foreground). The shells that run this script never match:
# their command lines hold `tpu_worker.sh start ...`, not the python command.
pattern="$python -m cyclegan_jax[.]main"
log="${LOG:-train.log}"
if [[ "$log" != /* ]]; then log="$PWD/$log"; fi
stop_timeout_s="${STOP_TIMEOUT_S:-600}"
host="$(hostname)"

trainers() {
  pgrep -f "$pattern" | paste -sd ' ' || true
}

case "${1:-}" in
  start)
    shift
    # Also what makes a repeated start harmless: gcloud reruns a command whose ssh exits 255.
    if [[ -n "$(trainers)" ]]; then
      echo "$host: a trainer is already running (pid $(trainers)); not starting another"
      exit 0
    fi
    nohup setsid "$python" -m cyclegan_jax.main "$@" >>"$log" 2>&1 </dev/null &
    echo "$host: trainer started (pid $!), log $log"
    ;;
  running)
    if [[ -n "$(trainers)" ]]; then echo "$host: trainer running (pid $(trainers))"; fi
    ;;
  status)
    state="no trainer"
    if [[ -n "$(trainers)" ]]; then state="trainer running (pid $(trainers))"; fi
    echo "$host: $state; last log line: $(tail -n 1 "$log" 2>/dev/null || echo '(no log)')"
    ;;
  stop)
    if ! pkill -TERM -f "$pattern"; then
      echo "$host: no trainer running"
      exit 0
    fi
    echo "$host: SIGTERM sent; waiting for the trainer to save a checkpoint and exit"
    deadline=$((SECONDS + stop_timeout_s))
    while [[ -n "$(trainers)" ]]; do
      if ((SECONDS >= deadline)); then
        echo "$host: trainer still running after ${stop_timeout_s}s (pid $(trainers))" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "$host: trainer stopped"
    ;;
  *)
    echo "usage: launch/tpu_worker.sh start ARGS... | running | status | stop (see --help)" >&2
    exit 2
    ;;
esac
