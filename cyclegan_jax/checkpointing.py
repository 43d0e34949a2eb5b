"""Whole-state checkpoints with orbax: atomic, asynchronous, keep-N, portable across topologies.

A checkpoint holds the unreplicated train state (parameters, optimizer states, batch stats,
step, base rng), one copy of the global image pools (leading axis 1; an older per-device save
restores device 0's), the resolved config and the run's manifest (manifest.py), all as host
numpy arrays or JSON, so it does not depend on the devices or processes that wrote it. The input
stream is a pure function of (seed, step), so the step is also the data position. Multi-host:
every process calls `save` and `restore` (orbax coordinates; the primary process writes).

The one save/restore path: training resumes with `restore_latest_readable`; evaluation,
translation and export read a workdir with `load`, which builds the models from the stored
config. An unreadable checkpoint (disk damage, a partial copy) is moved aside as
`<step>.corrupt` and the one before it is used; a save that cannot be written (a full disk) ends
the run with one line naming it (faults.WriteError).
"""

import dataclasses
from pathlib import Path
import re
from typing import Any

from absl import logging
import flax.serialization
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cyclegan_jax import faults, families, manifest as manifests, parallel
from cyclegan_jax.families.base import Family, Models, TrainState
from cyclegan_jax.models import block_layout


class CheckpointMismatchError(ValueError):
  """The checkpoint's arrays do not fit the state the config builds."""


class NoReadableCheckpointError(RuntimeError):
  """Every checkpoint of the workdir failed to read."""


class Manager(ocp.CheckpointManager):
  """orbax's manager, whose failed saves raise one faults.WriteError naming the step. Saves are
  asynchronous, so a failure surfaces at the next save or wait; the step and bytes it belongs to
  are kept until then. It is reported once: closing after it does not raise it again."""

  def __init__(self, workdir: epath.Path, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.workdir, self._reported = workdir, False
    self._in_flight: tuple[int, int] | None = None  # (step, bytes) of the save in progress.

  def _write_error(self, error: Exception) -> faults.WriteError:
    self._reported = True
    step, size = self._in_flight or (None, None)
    return faults.write_error(f'checkpoint {step}', error, self.workdir, size)

  def save(self, step: int, *args, size_bytes: int | None = None, **kwargs) -> bool:
    self.wait_until_finished()
    self._in_flight = (step, size_bytes)
    try:
      return super().save(step, *args, **kwargs)
    except Exception as e:
      raise self._write_error(e) from e

  def wait_until_finished(self) -> None:
    try:
      super().wait_until_finished()
    except Exception as e:
      if not self._reported:
        raise self._write_error(e) from e


def create_manager(workdir: str | Path, keep: int, reader: bool = False) -> Manager:
  """`reader`: for a process that only restores, maybe beside a training that is saving; it
  creates and cleans up nothing (a cleanup would delete that training's save in progress).
  Otherwise the temporary folders of saves that a crash or a full disk cut short are removed."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                         cleanup_tmp_directories=not reader, create=not reader)
  workdir = epath.Path(workdir)
  if not workdir.is_absolute():  # orbax refuses relative paths (at its first save).
    workdir = workdir.absolute()
  return Manager(workdir, workdir / 'checkpoints', options=options)


def _to_host(replicated: TrainState) -> tuple[dict[str, Any], dict[str, Any]]:
  """(state without pools, pools with a leading axis of 1) as state dicts of numpy arrays."""
  state = parallel.unreplicate(replicated.replace(pools={}))
  pools = jax.tree.map(lambda x: x[None], parallel.unreplicate(replicated.pools))
  return flax.serialization.to_state_dict(state), flax.serialization.to_state_dict(pools)


def save(manager: ocp.CheckpointManager, replicated: TrainState,
         config: ml_collections.ConfigDict, manifest: dict[str, Any] | None = None) -> int:
  """Starts an asynchronous save of the state at its step, with `manifest` (by default this
  process's, manifest.build); refuses non-finite states."""
  state_dict, pools = _to_host(replicated)
  bad = [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(
      state_dict) if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(x).all()]
  if bad:
    raise FloatingPointError(f'refusing to checkpoint a non-finite state: {", ".join(bad[:5])}')
  step = int(state_dict['step'])
  if jax.process_count() > 1:
    same = parallel.check_same_on_all_processes((state_dict, pools), f'train states at step {step}')
    logging.info('step %d: the state is identical on all %d processes (fingerprint %08x)', step,
                 jax.process_count(), same)
  items = {'state': ocp.args.StandardSave(state_dict),
           'config': ocp.args.JsonSave(config.to_dict()),
           'manifest': ocp.args.JsonSave(manifest or manifests.build(config))}
  if pools:  # orbax refuses an empty tree.
    items['pools'] = ocp.args.StandardSave(pools)
  size = sum(np.asarray(x).nbytes for x in jax.tree.leaves((state_dict, pools)))
  manager.save(step, args=ocp.args.Composite(**items), force=True, size_bytes=size)
  return step


def _tree_name(key_path: str) -> str:
  """"['params']['g_ab']['Conv_0']" -> "params/g_ab"; "['opt_state_d'][0]" -> "opt_state_d"."""
  parts = re.findall(r"\['([^']*)'\]", key_path) or [key_path]
  return '/'.join(parts[:2]) if parts[0] in ('params', 'batch_stats') else parts[0]


def _check_fits(expected: dict[str, Any], restored: dict[str, Any]) -> None:
  """Names every leaf whose shape differs or that only one side has."""
  flat = lambda tree: {jax.tree_util.keystr(p): np.shape(x)
                       for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  want, got = flat(expected), flat(restored)
  problems = [f'{k}: checkpoint {got[k]} vs config {want[k]}'
              for k in want if k in got and got[k] != want[k]]
  problems += [f'{k}: missing from the checkpoint' for k in want if k not in got]
  problems += [f'{k}: in the checkpoint but not in the config' for k in got if k not in want]
  if problems:
    trees = sorted({_tree_name(p) for p in problems})
    raise CheckpointMismatchError(
        f'the checkpoint does not fit this config (trees: {", ".join(trees)}); '
        f'{len(problems)} arrays differ, e.g.\n  ' + '\n  '.join(problems[:8]))


def restore(manager: ocp.CheckpointManager, template: TrainState,
            step: int | None = None) -> TrainState:
  """Restores the latest (or given) step onto `template`'s structure, replicated.

  `template` is a fresh unreplicated state from the same config, or its shapes
  (`Family.state_shapes`). The saved pool (entry 0 of the saved ones) goes to every device, so a
  checkpoint moves between topologies.
  """
  step = manager.latest_step() if step is None else step
  items = {'state': ocp.args.StandardRestore()}
  if template.pools:
    items['pools'] = ocp.args.StandardRestore()
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  stored = block_layout.stack_blocks(restored['state'])  # Older ones hold blocks one by one.
  target = template.replace(pools={}, rng=jax.eval_shape(jax.random.key_data, template.rng))
  _check_fits(flax.serialization.to_state_dict(target), stored)
  state = flax.serialization.from_state_dict(target, stored)
  state = state.replace(rng=jax.random.wrap_key_data(
      np.asarray(state.rng), impl=template.rng.dtype))
  if template.pools:
    saved = jax.tree.map(lambda x: np.asarray(x)[0], restored['pools'])
    _check_fits({'pools': flax.serialization.to_state_dict(template.pools)}, {'pools': saved})
    state = state.replace(pools=flax.serialization.from_state_dict(template.pools, saved))
  return parallel.replicate(state)


def _readable_everywhere(readable: bool) -> bool:
  """Whether every process could read the checkpoint (they must all take the same one)."""
  if jax.process_count() == 1:
    return readable
  return bool(np.all(multihost_utils.process_allgather(np.array([readable]))))


def _set_aside(manager: Manager, step: int) -> epath.Path:
  """Renames checkpoint `step` to `<step>.corrupt` (never deleted: it may be recoverable)."""
  path = epath.Path(manager.directory) / str(step)
  target = path.with_name(f'{step}.corrupt')
  n = 1
  while target.exists():
    target, n = path.with_name(f'{step}.corrupt.{n}'), n + 1
  if jax.process_index() == 0:
    path.rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
  manager.reload()
  return target


def restore_latest_readable(manager: Manager, template: TrainState) -> TrainState | None:
  """The newest checkpoint that can be read, restored onto `template` (see `restore`), or None
  if there is none. Each unreadable one is logged and set aside as `<step>.corrupt`; if all
  are, the run stops with their list. A checkpoint that reads but does not fit the config is
  the user's mistake, not damage: that raises CheckpointMismatchError at once."""
  steps = sorted(manager.all_steps(), reverse=True)
  set_aside = []
  for step in steps:
    try:
      state, error = restore(manager, template, step), None
    except CheckpointMismatchError:
      raise
    except Exception as e:  # Any failure to read: truncated files, bad metadata, lost blobs.
      state, error = None, e
    if _readable_everywhere(error is None):
      return state
    why = faults.reason(error) if error else 'unreadable on another process'
    set_aside.append(f'{step} ({why})')
    logging.warning('checkpoint %d cannot be read (%s); moved it aside to %s%s', step, why,
                    _set_aside(manager, step), ', trying earlier ones' if step != steps[-1] else '')
  if set_aside:
    raise NoReadableCheckpointError(
        f'none of the checkpoints in {manager.directory} can be read: {"; ".join(set_aside)}. '
        f'They are kept as <step>.corrupt. To start fresh, use a new --workdir (or move '
        f'{manager.directory} away).')
  return None


def restored_config(manager: ocp.CheckpointManager, step: int | None = None) -> dict[str, Any]:
  step = manager.latest_step() if step is None else step
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']


def restored_manifest(manager: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The manifest saved with checkpoint `step`; None for checkpoints older than manifests."""
  if (epath.Path(manager.directory) / str(step) / 'manifest').exists():
    items = ocp.args.Composite(manifest=ocp.args.JsonRestore())
    return manager.restore(step, args=items)['manifest']
  return None


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A workdir's checkpoint, ready to run outside training (parameters unreplicated)."""
  step: int
  config: ml_collections.ConfigDict  # The given config, with the checkpoint's model section.
  family: Family
  models: Models
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  manifest: dict[str, Any] | None  # What wrote it (manifest.py); None if it predates them.


def _with_model(config: ml_collections.ConfigDict,
                saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """`config` with the family and model section the checkpoint was trained with (an activation
  or norm mismatch would not show in parameter shapes)."""
  if saved['model'] != config.model.to_dict() or saved['family'] != config.family:
    logging.warning('using the checkpoint\'s family %r and model config %s, not the given %r, %s',
                    saved['family'], saved['model'], config.family, config.model.to_dict())
  config = ml_collections.ConfigDict(config.to_dict())
  config.family = saved['family']
  config.model = ml_collections.ConfigDict(saved['model'])
  return config


def _load_step(manager: Manager, config: ml_collections.ConfigDict | None, step: int) -> Loaded:
  saved = restored_config(manager, step)
  config = ml_collections.ConfigDict(saved) if config is None else _with_model(config, saved)
  family = families.get(config)
  # Steps per epoch only shape the lr schedule; a loaded model trains no more (train.py resumes).
  models = family.create_models(config, 1, training_losses=False)
  state = restore(manager, family.state_shapes(config, models), step)
  params, batch_stats = parallel.unreplicate((state.params, state.batch_stats))
  manifest = restored_manifest(manager, step)
  logging.info('checkpoint %d, written by:\n%s', step, manifests.describe(manifest))
  manifests.warn_of_changes(manifest, manifests.build(config), f'checkpoint {step}')
  return Loaded(int(step), config, family, models, params, batch_stats, manifest)


def load(workdir: str | Path, config: ml_collections.ConfigDict | None = None,
         step: int | None = None) -> Loaded:
  """The latest (or given) checkpoint of `workdir`, with models built from the config stored
  with it (`config`, if given, supplies every other section). An unreadable latest one is
  warned about and the one before it is used; a reader moves nothing aside."""
  workdir = Path(workdir)
  missing = FileNotFoundError(
      f'no checkpoint in {workdir / "checkpoints"}: train first, or make one from a reference '
      '.pth with python -m cyclegan_jax.convert')
  if not (workdir / 'checkpoints').is_dir():  # Checked first: orbax would create the folder.
    raise missing
  manager = create_manager(workdir, keep=1, reader=True)
  steps = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
  unreadable = []
  try:
    if not steps:
      raise missing
    for candidate in steps:
      try:
        return _load_step(manager, config, candidate)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # Damage: try the one before (only when no step was asked for).
        if step is not None:
          raise
        unreadable.append(f'{candidate} ({faults.reason(e)})')
        logging.warning('checkpoint %d cannot be read (%s)%s', candidate, faults.reason(e),
                        '; using the one before' if candidate != steps[-1] else '')
  finally:
    manager.close()
  raise NoReadableCheckpointError(
      f'none of the checkpoints in {workdir / "checkpoints"} can be read: '
      f'{"; ".join(unreadable)}.')
