"""train_and_evaluate: the loop around the pmapped step, with logging, samples and checkpoints.

Nothing is lost on a crash: checkpoints are atomic, a SIGTERM/SIGINT saves the current step
before leaving, and a non-finite loss stops the run before any bad state reaches disk. A
collapse (divergence.py) is warned about, stops the run, or rolls it back, as configured.
config.family picks the models, step, sample grids and scores (families/); the loop is shared.
"""

import contextlib
import functools
import json
import time
from typing import Any

from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from cyclegan_jax import (checkpointing, convert, divergence, faults, families, host_memory,
                          manifest as manifests, optim, parallel, results_page, step_cache,
                          summaries, visualize)
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families.base import TrainState
from cyclegan_jax.preemption import StopRequest
from cyclegan_jax.progress import Progress


class MetricsBuffer:
  """Collects per-step metrics on the host, one step behind the devices so the next step is
  already queued while this one is read back, and stops the run on a non-finite loss."""

  def __init__(self):
    self._pending: tuple[int, Any] | None = None
    self.rows: list[dict[str, float]] = []

  def add(self, step: int, device_metrics: Any) -> None:
    self.flush()
    self._pending = (step, device_metrics)

  def flush(self) -> None:
    if self._pending is None:
      return
    step, device_metrics = self._pending
    self._pending = None
    row = {k: float(v[0]) for k, v in jax.device_get(device_metrics).items()}
    bad = sorted(k for k, v in row.items() if not np.isfinite(v))
    if bad:
      raise FloatingPointError(
          f'non-finite loss at step {step}: {", ".join(bad)}. Stopped without saving; the '
          'latest checkpoint on disk is untouched. Lower optim.lr or check the data.')
    self.rows.append(row)

  def discard(self) -> None:
    """Forgets every collected row (their steps were rolled back)."""
    self._pending, self.rows = None, []

  def mean_and_reset(self) -> dict[str, float]:
    self.flush()
    means = {k: float(np.mean([r[k] for r in self.rows])) for k in self.rows[0]}
    self.rows = []
    return means


class Run:
  """One training run: what it reads and writes, built once, and the loop over its steps."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = epath.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.is_chief = jax.process_index() == 0
    self.family = families.get(config)
    self.data = input_pipeline.open(config)
    self.epoch_steps = self.data.steps_per_epoch()
    self.num_steps = optim.total_train_steps(config, self.epoch_steps)
    self.guard = divergence.Guard(config.divergence, self.workdir)
    self.models = self.family.create_models(config, self.epoch_steps, self.guard.lr_scale)
    self.template = self.family.state_shapes(config, self.models)  # What a restore fills.
    self.manager = checkpointing.create_manager(self.workdir, config.keep_checkpoints)
    self.writer = summaries.EventWriter(self.workdir if self.is_chief else None)
    self.metrics = MetricsBuffer()
    self.manifest = manifests.build(config)
    self.plotted = None  # The loss table that loss_curves.png shows.

  def close(self) -> None:
    """Finishes the save in flight, then closes the manager and the writers, in that order
    and all of them even if the save failed (its error is raised after)."""
    try:
      self.manager.wait_until_finished()
    finally:
      self.manager.close()
      with _writing('TensorBoard events', self.workdir):
        self.writer.close()

  def initial_state(self) -> TrainState:
    """The newest readable checkpoint's state, or a fresh one (with any reference weights),
    replicated."""
    state = checkpointing.restore_latest_readable(self.manager, self.template)
    if state is not None:
      step = self.manager.latest_step()
      logging.info('resumed from the checkpoint of step %d', step)
      manifests.warn_of_changes(checkpointing.restored_manifest(self.manager, step),
                                self.manifest, f'the checkpoint of step {step}')
    else:
      state = self.fresh_state()
      hparams = traverse_util.flatten_dict(self.config.to_dict(), sep='.')
      with _writing('TensorBoard events', self.workdir):
        self.writer.write_hparams({k: str(v) for k, v in hparams.items()})
    if self.is_chief:
      with _writing('config.json and manifest.json', self.workdir):
        visualize.write_atomically(self.workdir / 'config.json',
                                   self.config.to_json_best_effort(indent=2))
        visualize.write_atomically(self.workdir / results_page.MANIFEST,
                                   json.dumps(self.manifest, indent=2))
    return state

  def fresh_state(self) -> TrainState:
    """The state of step 0: drawn from config.seed, with any reference weights, replicated."""
    state = self.family.fresh_state(self.config, self.models)
    return parallel.replicate(state.replace(
        params=convert.init_params_from_pth(self.config, state.params)))

  def start(self, state: TrainState):
    """(pmapped step, device batches) for training on from `state`'s step. Log rows past that
    step came from lost or rolled-back steps."""
    step = int(jax.device_get(state.step)[0])
    p_step = _compiled_at_first_call(parallel.pmap_step(functools.partial(
        self.family.train_step, models=self.models, config=self.config)),
        built_from=(self.config.to_json_best_effort(), self.epoch_steps, self.guard.lr_scale))
    batches = parallel.prefetch_to_device(
        self.data.train_iterator(step, domains=self.family.domains), self.config.data.prefetch)
    if self.is_chief:
      for table in ('loss_history.csv', 'loss_table.csv', 'digit_metrics.csv'):
        visualize.truncate_csv(self.workdir / table, step)
    return p_step, batches

  def roll_back(self) -> TrainState:
    """The last checkpoint's state (step 0's if none was written), replicated, with models
    rebuilt for the guard's lowered lr."""
    self.manager.wait_until_finished()
    self.metrics.discard()
    self.models = self.family.create_models(self.config, self.epoch_steps, self.guard.lr_scale)
    if self.manager.latest_step() is None:
      return self.fresh_state()
    return checkpointing.restore(self.manager, self.template)

  def save(self, state: TrainState) -> None:
    self.metrics.flush()
    step = checkpointing.save(self.manager, state, self.config, self.manifest)
    logging.info('checkpoint for step %d is being written', step)

  def log(self, step: int, steps_per_sec: float | None) -> dict[str, float]:
    scalars = self.metrics.mean_and_reset()
    with _writing('TensorBoard events', self.workdir):
      self.writer.write_scalars(step, scalars)
      if steps_per_sec:  # Of training time only (progress.py); None until measured.
        self.writer.write_scalars(step, {'steps_per_sec': steps_per_sec})
    if self.is_chief:
      columns = self.family.log_columns(scalars)
      logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4f}' for k, v in columns.items()))
      with _writing('the loss tables (loss_history.csv, loss_table.csv)', self.workdir):
        visualize.append_csv(self.workdir / 'loss_history.csv', step, scalars)
        visualize.append_csv(self.workdir / 'loss_table.csv', step, columns)
    return scalars

  def write_samples(self, step: int, sampler, state: TrainState) -> None:
    grid = sampler(*parallel.unreplicate((state.params, state.batch_stats)))
    path = self.workdir / 'samples' / f'step_{step:07d}.png'
    with _writing(f'the sample grid {path.name}', self.workdir):
      path.parent.mkdir(parents=True, exist_ok=True)
      visualize.write_png(path, grid)
      self.writer.write_images(step, {'samples': grid[None]})
    self.update_page()

  def update_page(self) -> None:
    """loss_curves.png (redrawn only if the loss table changed: plotting is the slow part) and
    index.html (results_page.py) as of now; process 0 only."""
    table_path = self.workdir / 'loss_history.csv'
    table = table_path.read_text() if table_path.exists() else None
    if table is not None and table != self.plotted:
      with _writing('loss_curves.png', self.workdir):
        visualize.plot_loss_curves(visualize.parse_csv(table),
                                   self.workdir / 'loss_curves.png', self.family.loss_groups)
      self.plotted = table
    with _writing(results_page.PAGE, self.workdir):
      results_page.write(self.workdir)

  def log_digit_metrics(self, step: int, state: TrainState) -> None:
    """The family's digit metrics (metrics/digits.py) as scalars and digit_metrics.csv."""
    params, batch_stats = parallel.unreplicate((state.params, state.batch_stats))
    metrics = self.family.digit_metrics(self.config, self.models, self.data, params, batch_stats)
    with _writing('the digit metrics (digit_metrics.csv, TensorBoard events)', self.workdir):
      self.writer.write_scalars(step, metrics)
      if self.is_chief:
        visualize.append_csv(self.workdir / 'digit_metrics.csv', step, metrics)

  def train(self, state: TrainState) -> TrainState:
    config = self.config
    step = int(jax.device_get(state.step)[0])
    logging.info('training steps %d..%d (%d steps per epoch, global batch %d)',
                 step, self.num_steps, self.epoch_steps, config.batch_size)
    p_step, batches = self.start(state)
    sampler = self.family.make_sampler(config, self.models, self.data)
    progress = lambda: Progress('Training', self.num_steps, 'steps', every_s=30, done=step)
    report = progress()
    deadline = time.monotonic() + 60 * config.max_train_minutes
    out_of_time = False
    with StopRequest() as stop:
      while step < self.num_steps and not stop.stopping and not out_of_time:
        state, step_metrics = p_step(state, next(batches))
        step += 1
        stop.check(step)
        self.metrics.add(step, step_metrics)
        report.update(step)
        out_of_time = step % config.log_every_steps == 0 and _past(deadline, config)
        last = step == self.num_steps or out_of_time
        if step % config.log_every_steps == 0 or last:
          if self.guard.check(step, self.log(step, report.rate)) == 'rollback':
            state = self.roll_back()
            step = int(jax.device_get(state.step)[0])
            logging.warning('rolled back to step %d', step)
            p_step, batches = self.start(state)
            report = progress()
            continue
        with report.paused():  # Not training: the rate and ETA leave these out.
          if config.eval_every_steps and (step % config.eval_every_steps == 0 or last):
            self.log_digit_metrics(step, state)
          if self.is_chief and (step % config.sample_every_steps == 0 or last):
            self.write_samples(step, sampler, state)
          if step % config.checkpoint_every_steps == 0 or last or stop.stopping:
            self.save(state)
      if stop.stopping:
        logging.warning('%s received: saved step %d; run the same command to resume.',
                        stop.received, step)
      if out_of_time:
        logging.info('max_train_minutes=%g reached: stopped and saved at step %d.',
                     config.max_train_minutes, step)
    if self.is_chief:
      self.update_page()
    with _writing('TensorBoard events', self.workdir):
      self.writer.flush()
    return state


def _compiled_at_first_call(p_step, built_from):
  """`p_step`, compiled ahead of its first run (step_cache: loaded without tracing if a run
  before compiled it from the same `built_from`: config and models' inputs), after which the
  heap the compiler freed goes back to the OS (host_memory): the first step's peak memory then
  does not sit on top of it. Across processes pmap's ahead-of-time form expects global shapes,
  so there it stays as is."""
  if jax.process_count() > 1:
    return p_step
  compiled = None

  def step(state, batch):
    nonlocal compiled
    if compiled is None:
      compiled = step_cache.compile_step(p_step, (state, batch), built_from)
      host_memory.release_freed()
    return compiled(state, batch)
  return step


@contextlib.contextmanager
def _writing(what: str, workdir: epath.Path):
  """Turns a failed write of `what` (OSError, or the TensorBoard writer's own errors) into a
  one-line faults.WriteError."""
  try:
    yield
  except faults.WriteError:
    raise
  except Exception as e:
    raise faults.write_error(what, e, workdir) from e


def _past(deadline: float, config: ml_collections.ConfigDict) -> bool:
  """Whether config.max_train_minutes (if set) have passed; with several processes, process 0's
  clock decides for all, so they stop at the same step."""
  if config.max_train_minutes <= 0:
    return False
  late = time.monotonic() > deadline
  if jax.process_count() > 1:
    late = bool(multihost_utils.broadcast_one_to_all(np.asarray(late)))
  return late


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains until `num_train_steps` (or the epoch budget), resuming from `workdir` if it holds
  a checkpoint. Returns the final (replicated) train state. `config` is checked already
  (`families.check_config`, by main)."""
  run = Run(config, workdir)
  try:
    return run.train(run.initial_state())
  finally:
    run.close()

