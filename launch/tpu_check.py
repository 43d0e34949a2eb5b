"""The last step of launch/tpu_setup.sh, run on every worker at once (JAX on a pod slice starts
on all hosts together): prints this worker's Python and jax versions and its TPU devices, or
stops with the reason jax sees no TPU."""

import platform
import socket
import sys

import jax

host = socket.gethostname()
try:
  backend = jax.default_backend()
except RuntimeError as e:  # For instance "TPU initialization failed: ... already in use".
  sys.exit(f'error: {host}: jax could not start the TPU: {e}')
if backend != 'tpu':
  sys.exit(f'error: {host}: jax sees no TPU, only {backend} devices. Is a trainer still running '
           '(launch/tpu_status.sh), or did jax[tpu] (libtpu) fail to install?')
print(f'{host}: Python {platform.python_version()}, jax {jax.__version__}, '
      f'{jax.device_count()} TPU devices in the slice, here {jax.local_devices()}')
