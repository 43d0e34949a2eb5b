"""The divergence guard: notices a collapsed GAN from the logged loss means and says what to do.

Collapse, as seed S4 saw it: the D loss sinks towards 0 (D wins outright) or the G loss climbs
(G's fakes are judged fake with certainty), for `patience` logs in a row. The guard only
decides; the train loop acts (warn, stop, or roll back to the last checkpoint with a lower lr).
The lr scale and the rollback count survive restarts in workdir/divergence.json.
"""

import json

from absl import logging
import ml_collections
from etils import epath

ACTIONS = ('off', 'warn', 'stop', 'rollback')


class DivergenceError(RuntimeError):
  """Training stopped because the losses showed a collapse."""


class Guard:

  def __init__(self, config: ml_collections.ConfigDict, workdir: epath.PathLike):
    if config.action not in ACTIONS:
      raise ValueError(f'divergence.action={config.action!r}; expected one of '
                       f'{", ".join(ACTIONS)}.')
    if config.patience < 1 or not 0 < config.lr_scale < 1:
      raise ValueError(f'need divergence.patience >= 1 and 0 < divergence.lr_scale < 1, got '
                       f'{config.patience} and {config.lr_scale}.')
    self.config = config
    self.path = epath.Path(workdir) / 'divergence.json'
    saved = json.loads(self.path.read_text()) if self.path.exists() else {}
    self.lr_scale: float = saved.get('lr_scale', 1.0)
    self.rollbacks: int = saved.get('rollbacks', 0)
    self.streak = 0

  def check(self, step: int, scalars: dict[str, float]) -> str | None:
    """Sees one log's means: None to go on, 'rollback' to roll back now; raises to stop."""
    c = self.config
    if c.action == 'off':
      return None
    d_loss, g_loss = scalars['d_total'], scalars['g_total']
    collapsed = d_loss < c.d_loss_below or g_loss > c.g_loss_above
    self.streak = self.streak + 1 if collapsed else 0
    if self.streak < c.patience:
      return None
    self.streak = 0
    what = (f'divergence at step {step}: D loss {d_loss:.3g} (threshold {c.d_loss_below:g}), '
            f'G loss {g_loss:.3g} (threshold {c.g_loss_above:g}) for {c.patience} logs in a row')
    if c.action == 'warn':
      logging.warning('%s; training goes on (divergence.action=warn).', what)
      return None
    if c.action == 'stop' or self.rollbacks >= c.max_rollbacks:
      reason = ('divergence.action=stop' if c.action == 'stop'
                else f'{self.rollbacks} rollbacks already (divergence.max_rollbacks)')
      raise DivergenceError(f'{what}; stopped ({reason}). The checkpoints on disk are kept.')
    self.rollbacks += 1
    self.lr_scale *= c.lr_scale
    self.path.write_text(json.dumps({'lr_scale': self.lr_scale, 'rollbacks': self.rollbacks}))
    logging.warning('%s; rolling back to the last checkpoint with lr × %g (rollback %d of %d).',
                    what, self.lr_scale, self.rollbacks, c.max_rollbacks)
    return 'rollback'
