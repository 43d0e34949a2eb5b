"""parallel.check_shared_workdir with 2 real JAX processes on 127.0.0.1: a folder both see passes
(as a local multi-process run's does), a folder per process is refused on every process with the
reason, and no token file is left behind."""

import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import xla_flags
from tests.runs import free_port

pytestmark = pytest.mark.slow  # Two subprocesses that start JAX: seconds.
ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = '''
import sys
import jax
from cyclegan_jax import parallel
address, index, shared, own = sys.argv[1:]
jax.distributed.initialize(address, 2, int(index))
parallel.check_shared_workdir(shared)
print('shared: ok')
try:
  parallel.check_shared_workdir(own)
except ValueError as e:
  print(f'own: {e}')
'''


def test_a_workdir_only_one_process_sees_is_refused_on_every_process(tmp_path):
  address = f'127.0.0.1:{free_port()}'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': xla_flags(1)}
  procs = [subprocess.Popen([sys.executable, '-c', SCRIPT, address, str(i),
                             str(tmp_path / 'shared'), str(tmp_path / f'own{i}')],
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE) for i in range(2)]
  outputs = []
  for proc in procs:
    try:
      out, err = proc.communicate(timeout=120)
    finally:
      proc.kill()
    assert proc.returncode == 0, err[-3000:]
    outputs.append([line for line in out.splitlines() if line.startswith(('shared:', 'own:'))])
  for i, lines in enumerate(outputs):
    assert lines == [
        'shared: ok',
        f'own: --workdir={tmp_path}/own{i} is not shared: process 1 of 2 cannot see a file '
        'process 0 writes there. orbax writes checkpoints from process 0 only, so the others '
        'would find nothing to restore: use a gs:// bucket (or a folder every host mounts).']
  assert list((tmp_path / 'shared').iterdir()) == [] and list((tmp_path / 'own0').iterdir()) == []
