"""`python -m cyclegan_jax.main` as a subprocess, the way users run it, for the end-to-end tests
(test_train_loop.py, test_faults.py): start, wait, read its output, compare its checkpoints."""

import itertools
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.helpers import complete_steps, xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 400  # Per run; a healthy one takes well under a minute even on 2 busy cores.
_log_numbers = itertools.count()


class Run:
  """One `python -m cyclegan_jax.main` subprocess on `devices` forced CPU devices."""

  started: list['Run'] = []  # Every run of the session, so a failed test leaves none behind.

  def __init__(self, workdir, *flags, cache, devices=8, extra_env=None):
    self.workdir = pathlib.Path(workdir)
    name = f'{self.workdir.name}.{next(_log_numbers)}'
    self.stdout_path = self.workdir.parent / f'{name}.stdout'
    self.stderr_path = self.workdir.parent / f'{name}.stderr'
    env = {**os.environ,
           'XLA_FLAGS': xla_flags(devices),
           'JAX_COMPILATION_CACHE_DIR': str(cache), 'JAX_PLATFORMS': 'cpu',
           'CUDA_VISIBLE_DEVICES': '', 'TF_CPP_MIN_LOG_LEVEL': '2', **(extra_env or {})}
    with open(self.stdout_path, 'w') as out, open(self.stderr_path, 'w') as err:
      self.proc = subprocess.Popen(
          [sys.executable, '-m', 'cyclegan_jax.main', '--config=configs/test.py',
           f'--workdir={self.workdir}', *flags], cwd=ROOT, env=env, stdout=out,
          stderr=err)
    self.rc = self.stdout = self.stderr = None
    Run.started.append(self)

  def wait(self) -> 'Run':
    if self.rc is not None:
      return self
    try:
      self.rc = self.proc.wait(TIMEOUT_S)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait()
    self.stdout = self.stdout_path.read_text()
    self.stderr = self.stderr_path.read_text()
    return self

  def succeeded(self) -> 'Run':
    assert self.rc == 0, f'{self.proc.args} exited {self.rc}:\n{self.stderr[-4000:]}'
    return self


def flat(tree):
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def assert_bit_identical(expected, actual):
  expected, actual = flat(expected), flat(actual)
  assert sorted(expected) == sorted(actual)
  differ = [k for k in expected if expected[k].dtype != actual[k].dtype
            or not np.array_equal(expected[k], actual[k])]
  assert not differ, f'{len(differ)} of {len(expected)} leaves differ, e.g. {differ[:5]}'


def wait_for_checkpoint(run, after=-1, timeout_s=TIMEOUT_S) -> int:
  """Polls until `run` has finished a checkpoint past step `after`; returns its step."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    steps = [s for s in complete_steps(run.workdir) if s > after]
    if steps:
      return steps[0]
    if run.proc.poll() is not None:
      pytest.fail(f'run exited {run.proc.returncode} before its first checkpoint:\n'
                  f'{run.stderr_path.read_text()[-4000:]}')
    time.sleep(0.02)
  pytest.fail('no checkpoint appeared in time')


def free_port() -> int:
  """A port on 127.0.0.1 for a multi-process run's coordinator."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module', autouse=True)
def stop_leftover_runs():
  """At the end of a module that imports it: kills every run still going (after a failed
  test), so none outlives its test."""
  yield
  for run in Run.started:
    if run.proc.poll() is None:
      run.proc.kill()
      run.proc.wait()
