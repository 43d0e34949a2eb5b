"""Learning-rate schedules and the optimizers every family uses (Adam, as the references)."""

from typing import Any

import ml_collections
import optax

LR_POLICIES = ('linear', 'step', 'cosine', 'constant')


def check_config(optim: ml_collections.ConfigDict) -> None:
  if optim.lr_policy not in LR_POLICIES:
    raise ValueError(f'unknown lr_policy {optim.lr_policy!r}; expected one of '
                     f'{", ".join(LR_POLICIES)}')
  for name in ('n_steps', 'n_steps_decay'):
    if optim.get(name) is not None and optim[name] < 0:
      raise ValueError(f'optim.{name} must be >= 0 (or None: count in epochs), got {optim[name]}')


def phase_steps(optim: ml_collections.ConfigDict, steps_per_epoch: int) -> tuple[int, int]:
  """(steps at the initial lr, steps of decay): optim.n_steps and optim.n_steps_decay where
  set, for runs sized in steps (an epoch of MNIST at batch 8 is 7,500 steps, more than a digit
  run takes), else n_epochs and n_epochs_decay epochs."""
  constant = optim.get('n_steps')
  decay = optim.get('n_steps_decay')
  return (optim.n_epochs * steps_per_epoch if constant is None else constant,
          optim.n_epochs_decay * steps_per_epoch if decay is None else decay)


def create_schedule(optim: ml_collections.ConfigDict, lr: float,
                    steps_per_epoch: int) -> optax.Schedule:
  """The reference lr policies, counted in steps (an epoch is `steps_per_epoch` steps).

  `linear` keeps lr for n_epochs epochs, then decays linearly to 0 at the end of
  n_epochs_decay more (the reference steps once per epoch and stops at lr/(n_decay+1); we
  decay per step); n_steps and n_steps_decay, where set, give the two phases in steps.
  `step` multiplies by 0.1 every lr_decay_epochs; `cosine` anneals to 0 over both phases.
  """
  check_config(optim)
  if steps_per_epoch <= 0:
    raise ValueError(f'steps_per_epoch must be positive, got {steps_per_epoch}')
  constant_steps, decay_steps = phase_steps(optim, steps_per_epoch)
  total_steps = constant_steps + decay_steps
  if optim.lr_policy == 'linear':
    decay = optax.linear_schedule(lr, 0.0, max(decay_steps, 1))
    return optax.join_schedules([optax.constant_schedule(lr), decay], [constant_steps])
  if optim.lr_policy == 'step':
    return optax.exponential_decay(lr, optim.lr_decay_epochs * steps_per_epoch, 0.1,
                                   staircase=True)
  if optim.lr_policy == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1))
  return optax.constant_schedule(lr)


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps >= 0:
    return config.num_train_steps
  return sum(phase_steps(config.optim, steps_per_epoch))


def create_optimizers(config: ml_collections.ConfigDict, steps_per_epoch: int,
                      lr_scale: float = 1.0) -> dict[str, Any]:
  """The Models fields tx_g, tx_d, lr_g, lr_d: Adam with the generators' and the discriminators'
  own lr and betas (the D's default to the G's). `lr_scale` scales both lrs (the divergence
  guard's rollback lowers it)."""
  optim = config.optim
  lr_d = optim.lr if optim.lr_d is None else optim.lr_d
  lr_g = create_schedule(optim, optim.lr * lr_scale, steps_per_epoch)
  lr_d = create_schedule(optim, lr_d * lr_scale, steps_per_epoch)
  betas_d = (optim.beta1 if optim.beta1_d is None else optim.beta1_d,
             optim.beta2 if optim.beta2_d is None else optim.beta2_d)
  return {'tx_g': optax.adam(lr_g, b1=optim.beta1, b2=optim.beta2),
          'tx_d': optax.adam(lr_d, b1=betas_d[0], b2=betas_d[1]), 'lr_g': lr_g, 'lr_d': lr_d}
