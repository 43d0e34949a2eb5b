"""train_and_evaluate: the loop around the pmapped step, with logging, samples and checkpoints.

Nothing is lost on a crash: checkpoints are atomic, a SIGTERM/SIGINT saves the current step
before leaving, and a non-finite loss stops the run before any bad state reaches disk. A
collapse (divergence.py) is warned about, stops the run, or rolls it back, as configured.
config.family picks the models, step and sample grids (families.py); the loop is shared.
"""

import functools
import os
import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from cyclegan_jax import (checkpointing, convert, divergence, families, input_pipeline, parallel,
                          train_state, visualize)


class StopRequest:
  """Turns SIGTERM/SIGINT into a stop the loop takes between steps, after saving that step (TPU
  VMs are preempted with SIGTERM). A second signal falls through to the previous handler.

  With several processes, all must stop and save at the same step, wherever the signal lands.
  JAX's preemption service (started by jax.distributed) catches SIGTERM on any process and
  agrees on a step with the others; SIGINT is handed to it as a SIGTERM.
  """

  def __init__(self):
    self.received: str | None = None
    self.stopping = False
    self._multiprocess = jax.process_count() > 1
    self._previous = {}

  def _handle(self, signum, frame):
    if self.received is not None:
      signal.signal(signum, self._previous[signum])
      signal.raise_signal(signum)
    self.received = signal.Signals(signum).name
    if self._multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGINT,) if self._multiprocess else (signal.SIGTERM, signal.SIGINT)
      self._previous = {s: signal.signal(s, self._handle) for s in signals}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def check(self, step: int) -> bool:
    """Called once per step (by every process, with the same steps): whether to stop now."""
    if self._multiprocess:
      self.stopping = multihost_utils.reached_preemption_sync_point(step)
      if self.stopping and self.received is None:
        self.received = 'SIGTERM (a preemption notice)'
    else:
      self.stopping = self.received is not None
    return self.stopping


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


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """An epoch is max(|A|, |B|) images, as in the reference."""
  return max(max(input_pipeline.domain_sizes(config)) // config.batch_size, 1)


def _write_samples(workdir: epath.Path, writer, step: int, sampler, state) -> None:
  grid = sampler(*parallel.unreplicate((state.params, state.batch_stats)))
  (workdir / 'samples').mkdir(parents=True, exist_ok=True)
  visualize.write_png(workdir / 'samples' / f'step_{step:07d}.png', grid)
  writer.write_images(step, {'samples': grid[None]})


def _log_digit_metrics(config, workdir, writer, family, models, state, step: int,
                       is_chief: bool) -> None:
  """The family's digit metrics (evaluate/digits.py) as scalars and digit_metrics.csv."""
  params, batch_stats = parallel.unreplicate((state.params, state.batch_stats))
  metrics = family.digit_metrics(config, models, params, batch_stats)
  writer.write_scalars(step, metrics)
  if is_chief:
    visualize.append_csv(workdir / 'digit_metrics.csv', step, metrics)


def _save(manager, state, config, metrics: MetricsBuffer) -> None:
  metrics.flush()
  step = checkpointing.save(manager, state, config)
  logging.info('checkpoint for step %d is being written', step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains until `num_train_steps` (or the epoch budget), resuming from `workdir` if it holds
  a checkpoint. Returns the final (replicated) train state."""
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  parallel.per_device_batch_size(config.batch_size)  # Fail early on a batch that won't split.
  epoch_steps = steps_per_epoch(config)
  num_steps = train_state.total_train_steps(config, epoch_steps)
  family = families.get(config)
  guard = divergence.Guard(config.divergence, workdir)
  models = family.create_models(config, epoch_steps, guard.lr_scale)
  template = family.create_train_state(config, models, jax.random.key(config.seed))
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  try:
    if manager.latest_step() is not None:
      state = checkpointing.restore(manager, template)
      logging.info('resumed from the checkpoint of step %d', manager.latest_step())
    else:
      state = parallel.replicate(template.replace(
          params=convert.init_params_from_pth(config, template.params)))
      writer.write_hparams({k: str(v) for k, v in _flatten(config.to_dict()).items()})
    if is_chief:
      (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
    return _train_loop(config, workdir, family, guard, template, state, manager, writer,
                       num_steps, epoch_steps)
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f'{prefix}{k}.'))
    else:
      flat[f'{prefix}{k}'] = v
  return flat


def _start(config, workdir, family, guard, state, epoch_steps):
  """(models, pmapped step, device batches) for training on from `state`'s step, with the
  guard's current lr scale. Log rows past that step came from lost or rolled-back steps."""
  step = int(jax.device_get(state.step)[0])
  models = family.create_models(config, epoch_steps, guard.lr_scale)
  p_step = parallel.pmap_step(functools.partial(family.train_step, models=models, config=config))
  batches = parallel.prefetch_to_device(
      input_pipeline.create_train_iterator(config, start_step=step, domains=family.domains),
      config.data.prefetch)
  if jax.process_index() == 0:
    for table in ('loss_history.csv', 'loss_table.csv', 'digit_metrics.csv'):
      visualize.truncate_csv(workdir / table, step)
  return models, p_step, batches


def _roll_back(manager, template, metrics: MetricsBuffer):
  """The last checkpoint's state (the initial one if none was written), replicated."""
  manager.wait_until_finished()
  metrics.discard()
  if manager.latest_step() is None:
    return parallel.replicate(template)
  return checkpointing.restore(manager, template)


def _train_loop(config, workdir, family, guard, template, state, manager, writer, num_steps,
                epoch_steps):
  is_chief = jax.process_index() == 0
  initial_step = int(jax.device_get(state.step)[0])
  logging.info('training steps %d..%d (%d steps per epoch, global batch %d)',
               initial_step, num_steps, epoch_steps, config.batch_size)
  models, p_step, batches = _start(config, workdir, family, guard, state, epoch_steps)
  sampler = family.make_sampler(config, models)
  progress = lambda: periodic_actions.ReportProgress(  # It counts steps forwards only.
      num_train_steps=num_steps, writer=writer, every_steps=config.log_every_steps)
  report = progress()
  metrics = MetricsBuffer()
  step = initial_step
  with StopRequest() as stop:
    while step < num_steps and not stop.stopping:
      state, step_metrics = p_step(state, next(batches))
      step += 1
      stop.check(step)
      metrics.add(step, step_metrics)
      report(step)
      last = step == num_steps
      if step % config.log_every_steps == 0 or last:
        scalars = metrics.mean_and_reset()
        writer.write_scalars(step, scalars)
        if is_chief:
          visualize.append_csv(workdir / 'loss_history.csv', step, scalars)
          s0 = family.log_columns(scalars)
          logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4f}' for k, v in s0.items()))
          visualize.append_csv(workdir / 'loss_table.csv', step, s0)
        if guard.check(step, scalars) == 'rollback':
          state = _roll_back(manager, template, metrics)
          step = int(jax.device_get(state.step)[0])
          logging.warning('rolled back to step %d', step)
          models, p_step, batches = _start(config, workdir, family, guard, state, epoch_steps)
          report = progress()
          continue
      if (config.data.source == 'digits' and config.eval_every_steps
          and (step % config.eval_every_steps == 0 or last)):
        _log_digit_metrics(config, workdir, writer, family, models, state, step, is_chief)
      if is_chief and (step % config.sample_every_steps == 0 or last):
        _write_samples(workdir, writer, step, sampler, state)
      if step % config.checkpoint_every_steps == 0 or last or stop.stopping:
        _save(manager, state, config, metrics)
    if stop.stopping:
      logging.warning('%s received: saved step %d; run the same command to resume.',
                      stop.received, step)
  if is_chief and (workdir / 'loss_history.csv').exists():
    visualize.plot_loss_curves(visualize.read_csv(workdir / 'loss_history.csv'),
                               workdir / 'loss_curves.png', family.loss_groups)
  writer.flush()
  return state
