"""The training loop end to end, through the command line users run (`python -m
cyclegan_jax.main --config=configs/test.py`): outputs on disk, bit-exact resume, recovery from
kill -9 and SIGTERM, the non-finite-loss stop, resuming on another device count, config typos.

Every run is a subprocess with its own forced CPU device count. All of them share the
session's compilation cache, and runs that do not depend on each other go concurrently (a run spends
much of its time importing TensorFlow and compiling), which keeps the module in minutes.
"""

import csv
import io
import json
import pathlib
import random
import re
import shutil
import signal
import time
import types

from etils import epath
import numpy as np
import pytest
from PIL import Image

from cyclegan_jax import checkpointing, train, visualize
from tests.helpers import complete_steps, read_loss_csv, restore
from tests.test_results_page import parse_page
from tests.runs import TIMEOUT_S, Run, assert_bit_identical, flat, wait_for_checkpoint
from tests.runs import stop_leftover_runs  # noqa: F401  (an autouse fixture: no run outlives us)

TILE, PAD = 32, 2  # configs/test.py crops; visualize.image_grid's padding.
NUM_SAMPLE_IMAGES = 2  # configs/test.py
SCALARS = ('g_total', 'd_a', 'cycle_a', 'lr_g')
LOSS_RTOL_ACROSS_DEVICE_COUNTS = 1e-2  # Measured: 1.7e-7 at steps 8-10, 3.2e-4 at 12.
KILLS = 1  # Killed at a random moment 0-2 s after its first checkpoint (perhaps mid-save).
# Long enough to kill mid-run: checkpoints every 4 steps, no sample grids until the end.
LONG_RUN = ('--config.num_train_steps=40', '--config.checkpoint_every_steps=4',
            '--config.log_every_steps=2', '--config.sample_every_steps=1000')


def assert_finite(tree):
  bad = [k for k, x in flat(tree).items()
         if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x))]
  assert not bad, bad


@pytest.fixture(scope='module')
def runs(tmp_path_factory, cache):
  """The runs most tests inspect, each started as soon as what it resumes from exists.

  six: 6 steps on 8 devices (the issue's end-to-end command); twelve: 12 straight; resumed:
  a copy of six continued to 12; to_one: another copy continued on 1 device; nan: an lr
  that overflows the parameters; timed: 12 steps with a time limit already past at step 1.
  twelve and timed start once six has checkpointed, so they read its compiled programs from
  the cache instead of compiling the same ones beside it.
  """
  root = tmp_path_factory.mktemp('runs')
  start = lambda name, *flags, devices=8: Run(root / name, *flags, cache=cache, devices=devices)
  six = start('six', '--config.num_train_steps=6')
  nan = start('nan', '--config.optim.lr=1e30', '--config.checkpoint_every_steps=1')
  wait_for_checkpoint(six)
  twelve = start('twelve', '--config.num_train_steps=12')
  timed = start('timed', '--config.num_train_steps=12', '--config.max_train_minutes=1e-6')
  done = {'six': six.wait().succeeded(), 'timed': timed.wait().succeeded()}
  for name in ('resumed', 'to_one'):
    shutil.copytree(six.workdir, root / name)
  resumed = start('resumed', '--config.num_train_steps=12')
  to_one = start('to_one', '--config.num_train_steps=12', devices=1)
  done.update(twelve=twelve.wait(), nan=nan.wait(), resumed=resumed.wait(),
              to_one=to_one.wait())
  return done


@pytest.fixture(scope='module')
def sigterm(tmp_path_factory, cache):
  """A run on 1 device stopped by SIGTERM a random moment after its first checkpoint, and the
  same command on 8 devices that finishes it."""
  workdir = tmp_path_factory.mktemp('sigterm') / 'workdir'
  stopped = Run(workdir, *LONG_RUN, cache=cache, devices=1)
  first = wait_for_checkpoint(stopped)
  time.sleep(random.Random(0).uniform(0.3, 1.5))
  stopped.proc.send_signal(signal.SIGTERM)
  stopped.wait().succeeded()
  steps = complete_steps(workdir)
  saved_state, _ = restore(workdir, steps[-1])
  finished = Run(workdir, *LONG_RUN, cache=cache).wait()
  return types.SimpleNamespace(first=first, stopped=stopped, steps=steps,
                               saved_state=saved_state, finished=finished)


@pytest.mark.slow
def test_end_to_end_writes_checkpoints(runs):
  six = runs['six']
  assert complete_steps(six.workdir) == [3, 6]
  state, pools = restore(six.workdir, 6)
  assert int(state['step']) == 6
  assert sorted(state['params']) == ['d_a', 'd_b', 'g_ab', 'g_ba']
  assert pools['a']['images'].shape[0] == 1  # One global pool, the same on every device.
  assert_finite((state, pools))
  assert json.loads((six.workdir / 'config.json').read_text())['num_train_steps'] == 6


@pytest.mark.slow
def test_end_to_end_writes_tensorboard_events(runs):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.util import tensor_util
  acc = event_accumulator.EventAccumulator(str(runs['six'].workdir),
                                           size_guidance={'tensors': 0})
  acc.Reload()
  tags = acc.Tags()['tensors']
  for tag in SCALARS:
    assert tag in tags, tags
    events = acc.Tensors(tag)
    assert [e.step for e in events] == [2, 4, 6]
    assert all(np.isfinite(tensor_util.make_ndarray(e.tensor_proto)) for e in events)
  rates = acc.Tensors('steps_per_sec')  # Over training time only (progress.py).
  assert [e.step for e in rates] == [2, 4, 6]
  assert all(tensor_util.make_ndarray(e.tensor_proto) > 0 for e in rates)
  samples = acc.Tensors('samples')
  assert [e.step for e in samples] == [3, 6]
  width, height, png = tensor_util.make_ndarray(samples[-1].tensor_proto)[:3]
  assert (int(width), int(height)) == Image.open(io.BytesIO(png)).size == (104, 138)


@pytest.mark.slow
def test_end_to_end_writes_sample_grids(runs):
  """3 columns (real, translated, reconstructed) × 2·num_sample_images rows of 32² tiles."""
  samples = runs['six'].workdir / 'samples'
  assert sorted(p.name for p in samples.iterdir()) == ['step_0000003.png', 'step_0000006.png']
  for path in samples.iterdir():
    assert path.stat().st_size > 0
    grid = np.asarray(Image.open(path).convert('RGB'))
    rows, cols = 2 * NUM_SAMPLE_IMAGES, 3
    assert grid.shape == (rows * (TILE + PAD) + PAD, cols * (TILE + PAD) + PAD, 3)
    for i in range(rows + 1):
      assert np.all(grid[i * (TILE + PAD):i * (TILE + PAD) + PAD] == 255)  # Padding rows.
    for j in range(cols + 1):
      assert np.all(grid[:, j * (TILE + PAD):j * (TILE + PAD) + PAD] == 255)  # Columns.
    tiles = [grid[PAD + i * (TILE + PAD):][:TILE, PAD + j * (TILE + PAD):][:, :TILE]
             for i in range(rows) for j in range(cols)]
    assert all(tile.std() > 0 for tile in tiles)  # Pictures, not blank tiles.


@pytest.mark.slow
def test_end_to_end_writes_loss_table_and_curves(runs):
  workdir = runs['six'].workdir
  rows = read_loss_csv(workdir)
  assert [int(r['step']) for r in rows] == [2, 4, 6]
  assert set(SCALARS) <= set(rows[0])
  assert all(np.isfinite(float(v)) for r in rows for v in r.values())
  with Image.open(workdir / 'loss_curves.png') as curves:
    assert curves.width > 0 and curves.height > 0


@pytest.mark.slow
def test_end_to_end_writes_the_results_page_and_manifest(runs):
  """index.html links both grids (newest first) and the curves, shows the last loss row; the
  manifest is in W and in each checkpoint, with the command the user ran."""
  workdir = runs['six'].workdir
  page = parse_page(workdir)
  assert page.images == ['loss_curves.png', 'samples/step_0000006.png',
                         'samples/step_0000003.png']
  last = read_loss_csv(workdir)[-1]
  assert f'{float(last["d_total"]):.4g}' in page.cells  # Loss_D of the last logged step.
  written = json.loads((workdir / 'manifest.json').read_text())
  assert '--config.num_train_steps=6' in written['command'] and written['device_count'] == 8
  manager = checkpointing.create_manager(workdir, 1, reader=True)
  assert [checkpointing.restored_manifest(manager, s) for s in (3, 6)] == [written, written]
  manager.close()


@pytest.mark.slow
def test_resume_is_bit_exact(runs):
  """12 steps straight == 6 steps, then a second invocation to 12: parameters, optimizer
  states, rng and the image pools, and the logged losses too."""
  resumed = runs['resumed'].succeeded()
  assert 'resumed from the checkpoint of step 6' in resumed.stderr
  straight = runs['twelve'].succeeded()
  assert_bit_identical(restore(straight.workdir, 12), restore(resumed.workdir, 12))
  assert read_loss_csv(resumed.workdir) == read_loss_csv(straight.workdir)


@pytest.mark.slow
def test_resume_on_one_device_after_eight_continues_the_same_run(runs):
  """The checkpoint holds host arrays and one global pool per domain; with the global data
  order, steps 7..12 on one device are those of the 8-device run, up to float32 rounding of
  another per-device batch (bit-identical resume is for the same topology)."""
  run = runs['to_one'].succeeded()
  assert 'resumed from the checkpoint of step 6' in run.stderr
  assert complete_steps(run.workdir)[-1] == 12
  state, pools = restore(run.workdir, 12)
  assert int(state['step']) == 12
  assert pools['a']['images'].shape[0] == pools['b']['count'].shape[0] == 1
  assert_finite((state, pools))
  rows, straight = read_loss_csv(run.workdir), read_loss_csv(runs['twelve'].workdir)
  assert [int(r['step']) for r in rows] == [int(r['step']) for r in straight] == [2, 4, 6, 8,
                                                                                  10, 12]
  worst = max(abs(float(r[k]) / float(s[k]) - 1) for r, s in zip(rows[3:], straight[3:])
              for k in SCALARS)
  assert worst < LOSS_RTOL_ACROSS_DEVICE_COUNTS, f'{worst:.2e}'


@pytest.mark.slow
def test_time_limit_stops_at_the_first_log_step_with_a_checkpoint(runs):
  run = runs['timed']
  assert 'max_train_minutes=1e-06 reached: stopped and saved at step 2.' in run.stderr
  assert complete_steps(run.workdir) == [2]  # log_every_steps is 2; checkpoints every 3.
  assert [row['step'] for row in read_loss_csv(run.workdir)] == ['2']


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_named_error(runs):
  run = runs['nan']
  assert run.rc == 1
  match = re.search(r'non-finite loss at step (\d+)', run.stderr)
  assert match, run.stderr[-4000:]
  assert 'error: non-finite loss at step' in run.stderr  # Printed for people, not only logged.
  assert 'Traceback' not in run.stderr
  saved = complete_steps(run.workdir)
  assert all(step < int(match[1]) for step in saved)  # The bad step never reached disk.
  for step in saved:
    assert_finite(restore(run.workdir, step))


@pytest.mark.slow
def test_mistyped_config_key_is_named(tmp_path, cache):
  run = Run(tmp_path / 'typo', '--config.modle.ngf=4', cache=cache).wait()
  assert run.rc != 0
  assert 'modle' in run.stderr
  assert not (tmp_path / 'typo' / 'checkpoints').exists()


@pytest.mark.slow
def test_sigterm_saves_the_current_step(sigterm):
  """Exit 0 with a checkpoint of the step it was at, in general off the every-4 schedule."""
  match = re.search(r'SIGTERM received: saved step (\d+)', sigterm.stopped.stderr)
  assert match, sigterm.stopped.stderr[-4000:]
  step = int(match[1])
  assert sigterm.first < step < 40
  assert f'checkpoint for step {step} is being written' in sigterm.stopped.stderr
  assert sigterm.steps[-1] == step
  assert int(sigterm.saved_state['step']) == step
  assert 'Traceback' not in sigterm.stopped.stderr  # Nor any teardown noise (test_faults.py).


@pytest.mark.slow
def test_resume_after_sigterm_on_eight_devices_after_one(sigterm):
  """The same command finishes the run, from the signal's step, on 8 devices: the one saved
  pool per domain goes to all of them."""
  finished = sigterm.finished.succeeded()
  match = re.search(r'resumed from the checkpoint of step (\d+)', finished.stderr)
  assert match and int(match[1]) == sigterm.steps[-1]
  assert complete_steps(finished.workdir)[-1] == 40
  state, pools = restore(finished.workdir, 40)
  assert pools['a']['images'].shape[0] == pools['b']['count'].shape[0] == 1
  assert_finite((state, pools))
  steps = [int(r['step']) for r in read_loss_csv(finished.workdir)]
  assert steps == sorted(set(steps)) and steps[-1] == 40


@pytest.mark.slow
def test_kill9_restart_resumes_from_the_latest_complete_checkpoint(tmp_path, cache):
  """SIGKILL at a random moment after the first checkpoint (perhaps mid-save), KILLS times in
  parallel workdirs; each restart resumes from the latest complete step, finishes, and ends
  bit-identical to a run never interrupted. On 1 device: the cheapest run on 2 cores."""
  rng = random.Random(0)
  start = lambda name: Run(tmp_path / name, *LONG_RUN, cache=cache, devices=1)
  reference = start('reference')
  victims = [start(f'kill{i}') for i in range(KILLS)]
  delays = [rng.uniform(0.0, 2.0) for _ in victims]
  kill_at: list[float | None] = [None] * KILLS
  deadline = time.monotonic() + TIMEOUT_S
  while any(v.rc is None for v in victims) and time.monotonic() < deadline:
    for i, victim in enumerate(victims):
      if victim.rc is not None:
        continue
      if victim.proc.poll() is not None:
        pytest.fail(f'kill{i} exited {victim.proc.returncode} before it was killed:\n'
                    f'{victim.stderr_path.read_text()[-4000:]}')
      if kill_at[i] is None and complete_steps(victim.workdir):
        kill_at[i] = time.monotonic() + delays[i]
      if kill_at[i] is not None and time.monotonic() >= kill_at[i]:
        victim.proc.send_signal(signal.SIGKILL)
        assert victim.wait().rc == -signal.SIGKILL
    time.sleep(0.02)
  assert all(v.rc == -signal.SIGKILL for v in victims), 'not every run was killed in time'
  latest = [complete_steps(v.workdir)[-1] for v in victims]
  restarts = [start(v.workdir.name) for v in victims]
  expected = restore(reference.wait().succeeded().workdir, 40)
  for restart, step in zip(restarts, latest):
    restart.wait().succeeded()
    assert f'resumed from the checkpoint of step {step}' in restart.stderr
    assert complete_steps(restart.workdir)[-1] == 40
    assert not list((restart.workdir / 'checkpoints').glob('*.orbax-checkpoint-tmp*'))
    assert_bit_identical(expected, restore(restart.workdir, 40))
    # Rows logged after the checkpoint by the killed run are not repeated.
    assert [int(r['step']) for r in read_loss_csv(restart.workdir)] == list(range(2, 41, 2))


def test_truncate_csv_drops_rows_after_the_checkpoint_and_a_cut_row(tmp_path):
  path = tmp_path / 'loss_history.csv'
  for step in (2, 4, 6):
    visualize.append_csv(path, step, {'g_total': float(step)})
  with open(path, 'a') as f:
    f.write('8,0.')  # A row cut short by kill -9.
  visualize.truncate_csv(path, 4)
  visualize.append_csv(path, 6, {'g_total': 6.5})
  assert visualize.read_csv(path)['step'].tolist() == [2, 4, 6]
  assert visualize.read_csv(path)['g_total'].tolist() == [2, 4, 6.5]
  cut_header = tmp_path / 'cut.csv'
  cut_header.write_text('step,g_to')
  visualize.truncate_csv(cut_header, 4)
  assert not cut_header.exists()


def test_a_kill_while_the_table_is_rewritten_keeps_every_earlier_row(tmp_path, monkeypatch):
  """The table is rewritten on every log step; a kill mid-write must not cut earlier rows (a
  kill -9 test once found rows 2 and 4 gone)."""
  path = tmp_path / 'loss_history.csv'
  for step in (2, 4):
    visualize.append_csv(path, step, {'g_total': float(step)})
  write_text = visualize.epath.Path.write_text

  def killed_mid_write(self, text, *args, **kwargs):
    write_text(self, text[:len(text) // 3], *args, **kwargs)
    raise KeyboardInterrupt('killed')

  monkeypatch.setattr(visualize.epath.Path, 'write_text', killed_mid_write)
  for write in (lambda: visualize.append_csv(path, 6, {'g_total': 6.0}),
                lambda: visualize.truncate_csv(path, 2)):
    with pytest.raises(KeyboardInterrupt):
      write()
    assert visualize.read_csv(path)['step'].tolist() == [2, 4]


def test_the_loss_curves_are_redrawn_only_when_the_loss_table_changed(tmp_path, monkeypatch):
  """The page is rewritten at every sample step and at the end; the plot, its slow part, only
  when there are new rows (the last step's samples and the end came one after the other)."""
  drawn = []
  monkeypatch.setattr(visualize, 'plot_loss_curves',
                      lambda table, path, groups: drawn.append(table['step'].tolist()))
  run = object.__new__(train.Run)  # Only what update_page reads.
  run.workdir, run.plotted = epath.Path(tmp_path), None
  run.family = types.SimpleNamespace(loss_groups={'losses': ['g_total']})
  run.update_page()  # No loss table yet: a page, no plot.
  visualize.append_csv(tmp_path / 'loss_history.csv', 2, {'g_total': 1.0})
  run.update_page()
  run.update_page()
  visualize.append_csv(tmp_path / 'loss_history.csv', 4, {'g_total': 0.5})
  run.update_page()
  assert drawn == [[2], [2, 4]]
  assert (tmp_path / 'index.html').exists()


@pytest.mark.slow
def test_end_to_end_writes_seed_s0_loss_table(runs):
  workdir = pathlib.Path(runs['six'].workdir)
  with open(workdir / 'loss_table.csv') as f:
    table = list(csv.DictReader(f))
  history = read_loss_csv(workdir)
  assert list(table[0]) == ['step', 'Loss_C', 'Loss_D', 'Loss_G']
  assert [r['step'] for r in table] == [r['step'] for r in history]
  for row, losses in zip(table, history):
    assert float(row['Loss_C']) == pytest.approx(float(losses['cycle_a']) +
                                                 float(losses['cycle_b']))
    assert float(row['Loss_G']) == pytest.approx(float(losses['g_adv_a']) +
                                                 float(losses['g_adv_b']))
    assert float(row['Loss_D']) == float(losses['d_total'])
