"""Faults a long run meets, through the command line users run, on configs/test.py:

- a corrupt latest checkpoint: one warning naming it, moved aside as `<step>.corrupt`, the run
  goes on from the one before and reaches the same state as an uninterrupted run;
- no readable checkpoint at all: one line listing them and how to start fresh, from training
  and from every command that reads a workdir (translate, export, digit_figure);
- a full disk (a 1 MB tmpfs, when the tests run as root): one line naming the checkpoint, the
  space and the last complete checkpoint, and the next start cleans the leftover;
- a lost peer: kill -9 of one process of a 2-process run ends the other in bounded time, with a
  message naming the lost process;
- and on none of these paths a traceback or `RuntimeError: Event loop is closed`.

The in-process tests check the error texts and the atomic writers on hand-made failures.
"""

import asyncio
import errno
import gc
import importlib
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

from etils import epath
import numpy as np
import pytest

from cyclegan_jax import checkpointing, faults, visualize
from tests.helpers import complete_steps, read_loss_csv, restore
from tests.runs import Run, assert_bit_identical, free_port, wait_for_checkpoint
from tests.runs import stop_leftover_runs  # noqa: F401  (an autouse fixture: no run outlives us)

# The in-process fallback test leaves orbax reads that failed; when they are collected, later in
# this module, tensorstore reports "Event loop is closed" through sys.unraisablehook.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
SIX_STEPS = ('--config.num_train_steps=6', '--config.checkpoint_every_steps=2',
             '--config.sample_every_steps=1000')
NOISE = ('Traceback', 'Event loop is closed', 'Check failure')


def assert_quiet(run):
  """No traceback or teardown noise anywhere in what the run printed."""
  for text in (run.stdout, run.stderr):
    for noise in NOISE:
      assert noise not in text, f'{noise!r} in the output:\n{text[-3000:]}'


def last_line(run) -> str:
  return run.stderr.strip().splitlines()[-1]


def truncate_data_files(step_dir: pathlib.Path) -> None:
  """Cuts every data file of the state to 100 bytes: disk damage, or a partial copy.

  All of them, because how many files OCDBT packs the arrays into varies from machine to
  machine (CI has had two where this VM has more), and every array must be unreadable."""
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file() and
           p.parent.name == 'd' and p.stat().st_size > 1000]
  assert files, f'no data files under {step_dir}'
  for path in files:
    os.truncate(path, 100)


@pytest.fixture(scope='module')
def corrupt_runs(tmp_path_factory, cache):
  """straight: 6 steps, checkpoints 2, 4, 6. fallback: its copy as a crash in the middle of
  saving step 6 leaves it (6 still a temporary folder) with step 4 damaged, run again.
  hopeless: a copy with every checkpoint damaged, run again."""
  root = tmp_path_factory.mktemp('corrupt')
  straight = Run(root / 'straight', *SIX_STEPS, cache=cache).wait().succeeded()
  assert complete_steps(straight.workdir) == [2, 4, 6]
  fallback, hopeless = root / 'fallback', root / 'hopeless'
  for copy in (fallback, hopeless):
    shutil.copytree(straight.workdir, copy)
  (fallback / 'checkpoints' / '6').rename(fallback / 'checkpoints' / '6.orbax-checkpoint-tmp-1')
  truncate_data_files(fallback / 'checkpoints' / '4')
  for step in (2, 4, 6):
    truncate_data_files(hopeless / 'checkpoints' / str(step))
  runs = {'fallback': Run(fallback, *SIX_STEPS, cache=cache),
          'hopeless': Run(hopeless, *SIX_STEPS, cache=cache)}
  return {'straight': straight, **{k: run.wait() for k, run in runs.items()}}


@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_one_before_is_used(corrupt_runs):
  assert_quiet(corrupt_runs['straight'])  # A normal run and its exit are quiet too.
  run = corrupt_runs['fallback'].succeeded()
  assert_quiet(run)
  warnings = [l for l in run.stderr.splitlines() if 'cannot be read' in l]
  assert len(warnings) == 1, warnings
  assert 'checkpoint 4 cannot be read (OUT_OF_RANGE' in warnings[0]
  assert f'moved it aside to {run.workdir}/checkpoints/4.corrupt' in warnings[0]
  assert 'resumed from the checkpoint of step 2' in run.stderr
  checkpoints = sorted(p.name for p in (run.workdir / 'checkpoints').iterdir())
  assert checkpoints == ['2', '4', '4.corrupt', '6']  # The crash's temporary folder is gone.
  # From step 2 on, the same steps as the run that was never interrupted, to the last bit.
  straight = corrupt_runs['straight'].workdir
  assert_bit_identical(restore(straight, 6), restore(run.workdir, 6))
  assert read_loss_csv(run.workdir) == read_loss_csv(straight)


@pytest.mark.slow
def test_no_readable_checkpoint_stops_with_their_list(corrupt_runs):
  run = corrupt_runs['hopeless']
  assert run.rc == 1
  assert_quiet(run)
  workdir = run.workdir
  assert last_line(run).startswith(
      f'error: none of the checkpoints in {workdir}/checkpoints can be read: 6 (OUT_OF_RANGE')
  assert '; 4 (OUT_OF_RANGE' in last_line(run) and '; 2 (OUT_OF_RANGE' in last_line(run)
  assert last_line(run).endswith(f'To start fresh, use a new --workdir (or move '
                                 f'{workdir}/checkpoints away).')
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [
      '2.corrupt', '4.corrupt', '6.corrupt']
  warnings = [l for l in run.stderr.splitlines() if 'cannot be read (' in l and 'aside' in l]
  assert [w.endswith(', trying earlier ones') for w in warnings] == [True, True, False]


@pytest.mark.slow
def test_readers_fall_back_without_moving_anything(corrupt_runs, tmp_path, caplog):
  """evaluate and translate read a workdir through checkpointing.load."""
  workdir = tmp_path / 'workdir'
  shutil.copytree(corrupt_runs['straight'].workdir, workdir)
  truncate_data_files(workdir / 'checkpoints' / '6')
  loaded = checkpointing.load(workdir)
  assert loaded.step == 4
  assert_bit_identical(restore(workdir, 4)[0]['params'], loaded.params)
  assert 'checkpoint 6 cannot be read (OUT_OF_RANGE' in caplog.text
  assert complete_steps(workdir) == [2, 4, 6]
  with pytest.raises(ValueError, match='OUT_OF_RANGE'):  # An asked-for step does not fall back.
    checkpointing.load(workdir, step=6)


@pytest.fixture
def tiny_disk(tmp_path):
  """A 1 MB filesystem: a checkpoint of configs/test.py needs about 2 MB."""
  mount = tmp_path / 'tiny_disk'
  mount.mkdir()
  if os.geteuid() != 0:
    pytest.skip('mounting a tmpfs needs root; test_write_error_* cover the message')
  subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(mount)], check=True)
  yield mount
  subprocess.run(['umount', '-l', str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_ends_the_run_with_one_line_and_the_next_start_cleans_up(tiny_disk, cache):
  workdir = tiny_disk / 'workdir'
  full = Run(workdir, *SIX_STEPS, cache=cache).wait()
  assert full.rc == 1
  assert_quiet(full)
  line = last_line(full)
  assert line.startswith(f'error: could not write checkpoint 2 in {workdir}: No space left on '
                         'device (')
  assert 'no checkpoint has been completed yet' in line
  needed_mb = float(re.search(r'it needs about ([\d.]+) MB', line)[1])
  assert line.endswith('Free some space or move the workdir, then run the same command to '
                       'resume.')
  assert [p.name.split('.')[0] for p in (workdir / 'checkpoints').iterdir()] == ['2']
  # The save of step 2 fails in the background and the run stops at the next save, step 4; or,
  # when the loss row of step 4 is written while that save fills the disk, at that row (a race;
  # the checkpoint's error is the one reported, it is the cause). Either way the loss table
  # holds whole rows only, up to the stop.
  assert [int(r['step']) for r in read_loss_csv(workdir)] in ([2], [2, 4])
  subprocess.run(['mount', '-o', 'remount,size=64m', str(tiny_disk)], check=True)
  again = Run(workdir, *SIX_STEPS, cache=cache).wait().succeeded()
  assert_quiet(again)
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['2', '4', '6']
  assert 'training steps 0..6' in again.stderr
  written_mb = sum(p.stat().st_size for p in (workdir / 'checkpoints' / '6').rglob('*')
                   if p.is_file()) / 2**20
  assert 0.8 * written_mb < needed_mb < 1.2 * written_mb, (needed_mb, written_mb)


@pytest.mark.slow
def test_a_lost_peer_ends_the_survivor_in_bounded_time(tmp_path, cache):
  timeout_s = 10
  port = free_port()
  flags = (*SIX_STEPS[1:], '--config.num_train_steps=1000', '--config.batch_size=4',
           '--jax_distributed', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
           f'--peer_timeout_s={timeout_s}')
  workdir = tmp_path / 'workdir'
  processes = [Run(workdir, *flags, f'--process_id={i}', cache=cache, devices=2)
               for i in range(2)]
  wait_for_checkpoint(processes[0])
  processes[1].proc.send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  survivor = processes[0].wait()
  took = time.monotonic() - killed_at
  assert survivor.rc == 1
  assert_quiet(survivor)
  line = [l for l in survivor.stderr.splitlines() if 'has been silent' in l]
  assert len(line) == 1 and 'process 1 of 2 has been silent for' in line[0]
  last = complete_steps(workdir)[-1]
  assert line[0].endswith(f'The last complete checkpoint is step {last}: restart all processes '
                          'with the same command to resume.')
  assert took < timeout_s + 20, f'the survivor took {took:.0f} s'
  processes[1].wait()


@pytest.mark.parametrize('command, flags', [
    ('translate', ('--input=IN', '--output=OUT')), ('export', ('--out=OUT',)),
    ('digit_figure', ('--out=OUT/figure.png',))])
def test_every_reading_command_says_an_unreadable_workdir_in_one_line(command, flags, tmp_path,
                                                                       caplog):
  (tmp_path / 'checkpoints' / '5').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '5' / 'state').write_text('not a checkpoint')
  (tmp_path / 'in').mkdir()
  flags = [f.replace('IN', str(tmp_path / 'in')).replace('OUT', str(tmp_path / 'out'))
           for f in flags]
  with pytest.raises(SystemExit) as exit_info:
    importlib.import_module(f'cyclegan_jax.{command}').main([f'--workdir={tmp_path}', *flags])
  message = str(exit_info.value.code)
  assert message.startswith(f'error: none of the checkpoints in {tmp_path}/checkpoints can be '
                            'read: 5 (') and '\n' not in message, message
  assert not (tmp_path / 'out').exists()
  # The warning of the oldest checkpoint promises no other.
  assert 'checkpoint 5 cannot be read' in caplog.text and 'the one before' not in caplog.text


def test_write_error_names_the_full_disk_the_space_and_the_last_checkpoint(tmp_path):
  (tmp_path / 'checkpoints' / '8').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '12.orbax-checkpoint-tmp-5').mkdir()
  error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  message = str(faults.write_error('checkpoint 12', error, tmp_path, 3 * 2**20))
  free_mb = shutil.disk_usage(tmp_path).free / 2**20
  assert message == (
      f'could not write checkpoint 12 in {tmp_path}: No space left on device ({free_mb:.1f} MB '
      'free; it needs about 3.0 MB). Training stopped; the last complete checkpoint is step 8. '
      'Free some space or move the workdir, then run the same command to resume.')


def test_a_checkpoint_is_complete_once_renamed_or_on_gs_once_committed(tmp_path, monkeypatch):
  """Local disks: a step folder exists only once orbax renamed it there. gs:// cannot rename,
  so orbax writes into the step folder and commit_success.txt last; a folder without it is a
  save still in progress (or cut short)."""
  for step in (2, 4):
    (tmp_path / 'checkpoints' / str(step)).mkdir(parents=True)
  (tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp-1').mkdir()
  (tmp_path / 'checkpoints' / '2' / faults.COMMIT_MARKER).write_text('')
  assert faults.complete_checkpoints(tmp_path) == [2, 4]
  assert faults.renames_atomically(epath.Path('/w')) and not faults.renames_atomically(
      epath.Path('gs://bucket/w'))
  monkeypatch.setattr(faults, 'renames_atomically', lambda path: False)  # As on gs://.
  assert faults.complete_checkpoints(tmp_path) == [2]


def test_reason_finds_the_os_error_or_a_library_full_disk_or_the_first_line():
  wrapped = RuntimeError('save failed')
  wrapped.__cause__ = PermissionError(errno.EACCES, 'denied')
  assert faults.reason(wrapped) == 'Permission denied'
  assert faults.reason(ValueError('RESOURCE_EXHAUSTED: Error writing "x": Failed to write 3 '
                                  'bytes: No space left on device [os_error=28]')) == (
                                      'No space left on device')
  assert faults.reason(ValueError('OUT_OF_RANGE: bad range\nmore detail')) == (
      'OUT_OF_RANGE: bad range')


def test_a_failed_save_is_one_write_error_reported_once(tmp_path, monkeypatch):
  manager = checkpointing.create_manager(tmp_path, keep=2)

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, 'save', full_disk)
  with pytest.raises(faults.WriteError, match=r'^could not write checkpoint 7 in .*: No space '
                     r'left on device \(.* MB free; it needs about 0\.5 MB\)'):
    manager.save(7, size_bytes=2**19)
  monkeypatch.undo()
  manager.close()  # Nothing in flight: closing raises nothing.


def test_atomic_writes_leave_the_old_table_whole_when_the_disk_is_full(tmp_path, monkeypatch):
  table = tmp_path / 'loss_history.csv'
  visualize.append_csv(table, 2, {'g': 1.0})
  before = table.read_text()

  def full_disk(self, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(type(epath.Path(table)), 'write_text', full_disk)
  with pytest.raises(OSError, match='No space left'):
    visualize.append_csv(table, 4, {'g': 0.5})
  monkeypatch.undo()
  assert table.read_text() == before == 'step,g\n2,1.0\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['loss_history.csv']
  png = np.zeros((4, 4, 3), np.uint8)
  visualize.write_png(tmp_path / 'grid.png', png)
  assert (tmp_path / 'grid.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def _drop_a_failed(kind: str, loop: asyncio.AbstractEventLoop) -> None:
  """A Future (or Task) whose error no one reads, collected: asyncio logs it, as tensorstore's
  writes of a failed save do when the run exits."""
  error = ValueError('RESOURCE_EXHAUSTED: Error writing "x": No space left on device')
  if kind == 'Future':
    failed = loop.create_future()
    failed.set_exception(error)
  else:
    async def write():
      raise error
    failed = loop.create_task(write())
    loop.run_until_complete(asyncio.sleep(0))
  del failed
  gc.collect()


def test_teardown_noise_is_dropped_and_everything_else_still_reported(monkeypatch, caplog):
  reported = []
  monkeypatch.setattr(sys, 'unraisablehook', reported.append)
  monkeypatch.setattr(threading, 'excepthook', reported.append)
  asyncio_logger = logging.getLogger('asyncio')
  monkeypatch.setattr(asyncio_logger, 'filters', list(asyncio_logger.filters))
  loop = asyncio.new_event_loop()
  _drop_a_failed('Future', loop)
  assert 'Future exception was never retrieved' in caplog.text  # What CI once ended with.
  caplog.clear()

  faults.silence_teardown_noise()
  for kind in ('Future', 'Task'):
    _drop_a_failed(kind, loop)
  asyncio_logger.error('a real asyncio error')
  assert [r.getMessage() for r in caplog.records] == ['a real asyncio error']
  loop.close()
  closed = types.SimpleNamespace(exc_type=RuntimeError,
                                 exc_value=RuntimeError('Event loop is closed'))
  other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError('a real error'))
  for hook in (sys.unraisablehook, threading.excepthook):
    hook(closed)
    hook(other)
  assert reported == [other, other]


def test_two_processes_writing_one_file_at_once_each_rename_a_whole_file(tmp_path, monkeypatch):
  """As runs that share a step cache may: another process has written its partial file and is
  about to rename it when this one writes and renames the same file."""
  target = tmp_path / 'step'
  path_type = type(epath.Path(target))
  rename, own_pid = path_type.replace, os.getpid

  def this_process_writes_first(partial, to):
    monkeypatch.setattr(path_type, 'replace', rename)
    monkeypatch.setattr(os, 'getpid', own_pid)
    visualize.write_atomically(target, b'first to finish')
    return rename(partial, to)

  monkeypatch.setattr(os, 'getpid', lambda: own_pid() + 1)  # The other process.
  monkeypatch.setattr(path_type, 'replace', this_process_writes_first)
  visualize.write_atomically(target, b'last to finish')
  assert target.read_bytes() == b'last to finish'
  assert [p.name for p in tmp_path.iterdir()] == ['step']
