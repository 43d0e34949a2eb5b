"""The pure per-device CycleGAN step: one generator update, then one discriminator update.

Written with explicit collectives over `parallel.AXIS_NAME` only (pmean of gradients, batch
statistics and metrics), so `parallel` may wrap it with pmap or shard_map unchanged. Only
the image pools differ between devices; everything else stays bit-identical.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from cyclegan_jax import image_pool, losses
from cyclegan_jax.parallel import AXIS_NAME
from cyclegan_jax.train_state import DISCRIMINATORS, GENERATORS, Models, TrainState

# semantic_loss(real_a, rec_a, real_b, rec_b) -> weighted scalar, added to the generator loss.
SemanticLoss = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


class _Networks:
  """Runs the four networks in training mode for one loss evaluation.

  It threads batch-norm statistics from call to call as successive PyTorch forwards would,
  and gives every call its own dropout key. One instance lives inside one traced function.
  """

  def __init__(self, models: Models, params: dict[str, Any], batch_stats: dict[str, Any],
               key: jax.Array):
    self.models, self.params, self.batch_stats = models, params, dict(batch_stats)
    self.key, self.calls = key, 0

  def __call__(self, name: str, x: jax.Array) -> jax.Array:
    module = self.models.generators.get(name, self.models.discriminator)
    variables = {'params': self.params[name]}
    if self.batch_stats[name]:
      variables['batch_stats'] = self.batch_stats[name]
    self.calls += 1
    y, mutated = module.apply(variables, x, train=True, mutable=['batch_stats'],
                              rngs={'dropout': jax.random.fold_in(self.key, self.calls)})
    self.batch_stats[name] = mutated.get('batch_stats', self.batch_stats[name])
    return y


def _subset(tree: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
  return {name: tree[name] for name in names}


def _optimizer_update(tx: optax.GradientTransformation, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def train_step(state: TrainState, batch: dict[str, jax.Array], *, models: Models,
               config: ml_collections.ConfigDict, semantic_loss: SemanticLoss | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One CycleGAN update on this device's share of the batch ({'a': [b,H,W,C], 'b': ...})."""
  loss = config.loss
  mode = loss.gan_mode
  real_a, real_b = batch['a'], batch['b']
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step),
                           jax.lax.axis_index(AXIS_NAME))
  g_key, d_key, pool_a_key, pool_b_key, gp_key = jax.random.split(key, 5)

  def generator_loss(g_params):
    net = _Networks(models, {**state.params, **g_params}, state.batch_stats, g_key)
    fake_b = net('g_ab', real_a)
    fake_a = net('g_ba', real_b)
    rec_a, rec_b = net('g_ba', fake_b), net('g_ab', fake_a)
    terms = {'g_adv_a': losses.generator_gan_loss(net('d_a', fake_a), mode),
             'g_adv_b': losses.generator_gan_loss(net('d_b', fake_b), mode)}
    terms['cycle_a'], terms['cycle_b'] = losses.cycle_consistency_loss(
        real_a, rec_a, real_b, rec_b, loss.lambda_a, loss.lambda_b)
    if loss.lambda_identity > 0:
      terms['idt_a'], terms['idt_b'] = losses.identity_loss(
          real_a, net('g_ba', real_a), real_b, net('g_ab', real_b),
          loss.lambda_a, loss.lambda_b, loss.lambda_identity)
    if semantic_loss is not None:
      terms['semantic'] = semantic_loss(real_a, rec_a, real_b, rec_b)
    return sum(terms.values()), (terms, fake_a, fake_b, net.batch_stats)

  g_params = _subset(state.params, GENERATORS)
  (g_total, (g_terms, fake_a, fake_b, batch_stats)), g_grads = jax.value_and_grad(
      generator_loss, has_aux=True)(g_params)
  g_grads = jax.lax.pmean(g_grads, AXIS_NAME)
  g_params, opt_state_g = _optimizer_update(models.tx_g, g_grads, state.opt_state_g, g_params)

  pool_a, pooled_a = image_pool.query(state.pools['a'], jax.lax.stop_gradient(fake_a),
                                      pool_a_key)
  pool_b, pooled_b = image_pool.query(state.pools['b'], jax.lax.stop_gradient(fake_b),
                                      pool_b_key)

  def discriminator_loss(d_params):
    net = _Networks(models, {**state.params, **d_params}, batch_stats, d_key)
    terms, total = {}, 0.0
    for domain, real, fake, gp_k in (('a', real_a, pooled_a, gp_key),
                                     ('b', real_b, pooled_b, jax.random.fold_in(gp_key, 1))):
      name = f'd_{domain}'
      pred_real, pred_fake = net(name, real), net(name, fake)
      terms[name] = losses.discriminator_loss(pred_real, pred_fake, mode)
      if mode == 'wgangp':
        terms[f'{name}_gp'] = losses.gradient_penalty(
            lambda x, name=name: net(name, x), real, fake, gp_k, loss.lambda_gp)
      terms[f'{name}_real'] = jnp.mean(pred_real)
      terms[f'{name}_fake'] = jnp.mean(pred_fake)
      total += terms[name] + terms.get(f'{name}_gp', 0.0)
    return total, (terms, net.batch_stats)

  d_params = _subset(state.params, DISCRIMINATORS)
  (d_total, (d_terms, batch_stats)), d_grads = jax.value_and_grad(
      discriminator_loss, has_aux=True)(d_params)
  d_grads = jax.lax.pmean(d_grads, AXIS_NAME)
  d_params, opt_state_d = _optimizer_update(models.tx_d, d_grads, state.opt_state_d, d_params)

  metrics = {**g_terms, **d_terms, 'g_total': g_total, 'd_total': d_total,
             'g_grad_norm': optax.tree.norm(g_grads), 'd_grad_norm': optax.tree.norm(d_grads),
             'lr_g': models.lr_g(state.step), 'lr_d': models.lr_d(state.step)}
  new_state = state.replace(
      step=state.step + 1, params={**g_params, **d_params},
      batch_stats=jax.lax.pmean(batch_stats, AXIS_NAME),
      opt_state_g=opt_state_g, opt_state_d=opt_state_d, pools={'a': pool_a, 'b': pool_b})
  return new_state, jax.lax.pmean(metrics, AXIS_NAME)
