#!/usr/bin/env bash
# Copies this checkout (git HEAD: commit first) to every worker of the TPU VM and installs it
# there: a venv with Python PYTHON_VERSION whatever the image ships (python3 is 3.10 on the
# Ubuntu 22.04 TPU images; the project needs >= 3.11), made by uv from PyPI, which downloads a
# standalone CPython when the image has no such python; then launch/setup.sh with EXTRAS, as on
# a local machine (evaluation weights included), and jax[tpu]. Ends by printing each worker's
# Python, jax and TPU devices, or fails if a worker's jax sees no TPU. Idempotent: run it again
# after a commit to update the workers (the venv is kept while its Python is right).
# Settings (environment): PYTHON_VERSION (3.11), EXTRAS (none; as launch/setup.sh's argument),
# TPU_NAME, ZONE, PROJECT, REMOTE_DIR (cyclegan_jax, under the home directory), DRY_RUN (0; 1
# prints the commands instead of running them).
# Next: launch/tpu_prepare_data.sh (once per bucket), then launch/tpu_run.sh.
set -euo pipefail
# shellcheck source=tpu_common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/tpu_common.sh"
usage_if_asked "$@"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_version="${PYTHON_VERSION:-3.11}"
extras="${EXTRAS:-}"
archive="${TMPDIR:-/tmp}/cyclegan_jax_src.tar.gz"
run git -C "$root" archive --format=tar.gz -o "$archive" HEAD
mapfile -t location < <(gcloud_location)
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:cyclegan_jax_src.tar.gz" \
  "${location[@]}" --worker=all
# On each worker: unpack; (re)make .venv unless it already has the wanted Python; install.
has_python="[ \"\$(.venv/bin/python -c 'import sys; print(*sys.version_info[:2], sep=\".\")' 2>/dev/null)\" = $python_version ]"
make_venv="python3 -m pip install --user --quiet --upgrade uv && python3 -m uv venv --clear --seed --python $python_version .venv"
on_workers all "set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/cyclegan_jax_src.tar.gz -C ~/$REMOTE_DIR \
&& cd ~/$REMOTE_DIR && { $has_python || { $make_venv; }; } && launch/setup.sh${extras:+ $(printf %q "$extras")} \
&& .venv/bin/python -m pip install --quiet 'jax[tpu]' && .venv/bin/python launch/tpu_check.py"
