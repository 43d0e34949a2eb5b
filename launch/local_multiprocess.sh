#!/usr/bin/env bash
# Runs `python -m cyclegan_jax.main` as several JAX processes on this machine (127.0.0.1), each
# with its own forced CPU devices: multi-host training, as on a TPU pod, without a pod. All
# arguments go to cyclegan_jax.main, e.g.
#   launch/local_multiprocess.sh --config=configs/test.py --workdir=/tmp/mp
# Process 0 prints to the terminal; every process's output is also in LOG_DIR/process_N.log.
# If any process fails, the others are stopped and the script exits non-zero.
# Settings (environment): NUM_PROCESSES (2), DEVICES_PER_PROCESS (2), PORT (a free one),
# LOG_DIR (a new temporary directory), PYTHON (python on PATH).
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0
fi
num_processes="${NUM_PROCESSES:-2}"
devices="${DEVICES_PER_PROCESS:-2}"
python="${PYTHON:-python}"
port="${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
log_dir="${LOG_DIR:-$(mktemp -d -t cyclegan_mp.XXXXXX)}"
mkdir -p "$log_dir"
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
index_of() {
  local i
  for i in "${!pids[@]}"; do [[ "${pids[$i]}" == "$1" ]] && echo "$i"; done
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM
for ((i = 0; i < num_processes; i++)); do
  log="$log_dir/process_$i.log"
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
  JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES='' TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" \
    "$python" -m cyclegan_jax.main --jax_distributed --coordinator_address="127.0.0.1:$port" \
    --num_processes="$num_processes" --process_id="$i" "$@" >"$log" 2>&1 &
  pids+=("$!")
done
tail -n +1 -f "$log_dir/process_0.log" --pid="${pids[0]}" &
status=0
running=("${pids[@]}")
while ((${#running[@]})); do
  finished=''
  if ! wait -n -p finished "${running[@]}"; then
    status=1
    echo "error: process $(index_of "$finished") failed; stopping the others. Logs: $log_dir" >&2
    break
  fi
  mapfile -t running < <(printf '%s\n' "${running[@]}" | grep -vx "$finished")
done
stop_all
wait || true
if [[ "$status" == 0 ]]; then echo "all $num_processes processes finished. Logs: $log_dir"; fi
exit "$status"
