"""DCGAN (issue 8): model shapes and init, a finite D loss at extreme logits, the step on n
devices equal to the step on one, the divergence guard, and through the command line: bit-exact
resume, 1 device training as 8, and a rollback."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import dcgan_dogs, dcgan_mnist, dcgan_test, default
from cyclegan_jax import divergence, families, losses
from cyclegan_jax.families import base, dcgan
from cyclegan_jax.metrics import fid
from cyclegan_jax.models import discriminators, generators, layers
from cyclegan_jax.parallel import AXIS_NAME
from tests.helpers import (complete_steps, host_tree, read_loss_csv, rel_error, restore,
                           xla_flags)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def model_config(size, ngf=8, nz=16):
  config = dcgan_test.get_config()
  config.model.ngf = config.model.ndf = ngf
  config.model.nz = nz
  config.data.crop_size = size  # model.image_size follows it (a config reference).
  return config


@pytest.mark.parametrize('size', [32, 64])
def test_generator_and_discriminator_shapes(size):
  model = model_config(size).model
  g, d = generators.create_generator(model), discriminators.create_discriminator(model)
  images, g_vars = jax.eval_shape(
      lambda: g.init_with_output(jax.random.key(0), jnp.zeros((5, 16)), train=False))
  logits, _ = jax.eval_shape(
      lambda: d.init_with_output(jax.random.key(0), jnp.zeros(images.shape), train=False))
  assert images.shape == (5, size, size, 3)
  assert logits.shape == (5, 1, 1, 1)
  # Up-sampling stages 4² → size² (4×4×8ngf at 64², 4×4×4ngf at 32²), one BN per hidden stage.
  assert len(g_vars['batch_stats']) == int(np.log2(size)) - 2
  projection = {32: 4 * 4 * 4 * 8, 64: 4 * 4 * 8 * 8}[size]  # 4×4×4ngf / 4×4×8ngf, ngf 8.
  assert g_vars['params']['Dense_0']['kernel'].shape == (16, projection)


def test_grey_output_is_the_channel_mean_of_the_colour_generator():
  model = model_config(32).model
  model.grey_output = True
  z = jax.random.normal(jax.random.key(1), (3, 16))
  images, g_vars = jax.jit(generators.create_generator(model).init_with_output)(
      jax.random.key(0), z)
  assert images.shape == (3, 32, 32, 3) and float(images.std()) > 0
  np.testing.assert_array_equal(images[..., 1:], images[..., :1].repeat(2, -1))
  model.grey_output = False  # The same parameters drive the colour G.
  colour_g = generators.create_generator(model)
  colour = jax.jit(lambda v: colour_g.apply(v, z, mutable=['batch_stats'])[0])(g_vars)
  np.testing.assert_allclose(images[..., 0], colour.mean(-1), rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(colour[..., 0] - colour[..., 1]).max()) > 1e-3


def test_reference_parameter_counts_at_64():
  """The PyTorch DCGAN example's netG / netD (nz 100, ngf = ndf = 64): 3,576,704 / 2,765,568."""
  model = model_config(64, ngf=64, nz=100).model
  g_vars = jax.eval_shape(lambda: generators.create_generator(model).init(
      jax.random.key(0), jnp.zeros((1, 100)), train=False))
  d_vars = jax.eval_shape(lambda: discriminators.create_discriminator(model).init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert layers.count_params(g_vars['params']) == 3_576_704
  assert layers.count_params(d_vars['params']) == 2_765_568


def test_init_is_normal_002_and_bn_scale_normal_1_002():
  config = model_config(64, ngf=32, nz=100)
  state = dcgan.create_train_state(config, dcgan.create_models(config, 1),
                                        jax.random.key(0))
  kernels = np.concatenate([np.ravel(x) for path, x in jax.tree_util.tree_leaves_with_path(
      state.params) if 'kernel' in jax.tree_util.keystr(path)])
  scales = np.concatenate([np.ravel(x) for path, x in jax.tree_util.tree_leaves_with_path(
      state.params) if 'scale' in jax.tree_util.keystr(path)])
  biases = [x for path, x in jax.tree_util.tree_leaves_with_path(state.params)
            if 'bias' in jax.tree_util.keystr(path)]
  assert kernels.size > 10**6 and abs(kernels.mean()) < 1e-4 and abs(kernels.std() - 0.02) < 1e-4
  assert scales.size > 500 and abs(scales.mean() - 1) < 0.003 and abs(scales.std() - 0.02) < 0.003
  assert all(np.all(np.asarray(b) == 0) for b in biases)  # Only BN biases exist; they start at 0.


@pytest.mark.parametrize('size', [12, 48, 2])
def test_sizes_that_are_not_powers_of_two_are_refused(size):
  with pytest.raises(ValueError, match=f'DCGAN image size {size} must be a power of two'):
    generators.dcgan_upsamplings(size)
  with pytest.raises(ValueError, match='power-of-two side'):
    discriminators.create_discriminator(model_config(32).model).init(
        jax.random.key(0), jnp.zeros((1, size, size, 3)))


def test_vanilla_d_loss_at_extreme_logits_is_exact_and_unclamped():
  """The seed's BCE on clamped probabilities gave exactly 100 / 0; on logits, a D sure and
  wrong at |logit| 1e4 costs 1e4 per term, a D sure and right costs 0, and both have finite,
  non-zero gradients where wrong."""
  sure, wrong = jnp.array([1e4]), jnp.array([-1e4])
  assert float(losses.gan_loss(sure, True, 'vanilla')) == 0.0
  assert float(losses.gan_loss(wrong, True, 'vanilla')) == 1e4
  assert float(losses.gan_loss(sure, False, 'vanilla')) == 1e4
  grad = jax.grad(lambda p: losses.gan_loss(p, True, 'vanilla'))(wrong)
  np.testing.assert_array_equal(grad, [-1.0])


def _step_inputs(config, devices):
  models = dcgan.create_models(config, 1)
  state = dcgan.create_train_state(config, models, jax.random.key(3))
  real = np.random.default_rng(0).uniform(-1, 1, (devices, 2, 32, 32, 3)).astype(np.float32)
  real[1:2] *= 0.2  # Shards with clearly different statistics.
  return models, state, real


def _pmapped(config, models, devices):
  return jax.pmap(lambda s, b: dcgan.train_step(s, b, models=models, config=config),
                  axis_name=AXIS_NAME, devices=jax.local_devices()[:devices])


def _one_sgd_step(config, state, real, devices):
  """One float64 step with SGD(lr 1) on `devices` devices sharing the global batch `real`:
  (−update per network, new batch statistics, metrics), from device 0."""
  models = dataclasses.replace(dcgan.create_models(config, 1), tx_g=optax.sgd(1.0),
                               tx_d=optax.sgd(1.0))
  with jax.enable_x64(True):
    f64 = lambda tree: jax.tree.map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
    params = f64(state.params)
    state = state.replace(params=params, batch_stats=f64(state.batch_stats),
                          opt_state_g=models.tx_g.init({'g': params['g']}),
                          opt_state_d=models.tx_d.init({'d': params['d']}))
    stacked = jax.tree.map(lambda x: jnp.stack([x] * devices), state)
    shards = real.astype(np.float64).reshape((devices, -1) + real.shape[1:])
    new_state, metrics = _pmapped(config, models, devices)(stacked, {'a': shards})
    grads = jax.tree.map(lambda b, a: np.asarray(b) - np.asarray(a[0]), host_tree(params),
                         host_tree(new_state.params))
    stats = jax.tree.map(lambda x: np.asarray(x[0]), host_tree(new_state.batch_stats))
    return grads, stats, {k: float(v[0]) for k, v in metrics.items()}


@pytest.mark.slow  # Two whole-step compiles per mode.
@pytest.mark.parametrize('mode', ['vanilla', 'wgangp'])
def test_the_step_on_4_devices_equals_the_step_on_one(mode):
  """Batch norm over the global batch, z and the penalty's mixes drawn for the global batch:
  4 devices × 2 images give one device's gradients, running averages and losses for the same
  8 images (float64, so only the data-parallel logic is compared). With per-device batch norm
  or per-device z they differ by far more (shards with clearly different statistics)."""
  config = model_config(32)
  config.loss.gan_mode = mode
  config.loss.r1_gamma = 1.0 if mode == 'vanilla' else 0.0
  _, state, real = _step_inputs(config, 4)  # float32, made float64 inside enable_x64.
  config.model.dtype = 'float64'
  real = real.reshape((8,) + real.shape[2:])
  (grads_1, stats_1, metrics_1), (grads_4, stats_4, metrics_4) = (
      _one_sgd_step(config, state, real, n) for n in (1, 4))
  for name in ('g', 'd'):  # The losses are float32 (losses.py): agreement is ~1e-7, not 1e-15.
    assert rel_error(grads_1[name], grads_4[name]) < 1e-5, name
    assert rel_error(stats_1[name], stats_4[name]) < 1e-6, name
  assert metrics_1.keys() == metrics_4.keys()
  for key, value in metrics_1.items():
    assert metrics_4[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
  assert ('d_gp' in metrics_1) == (mode == 'wgangp')
  assert ('d_r1' in metrics_1) == (mode == 'vanilla')


@pytest.mark.parametrize('mode', ['lsgan', 'wgangp'])
def test_step_runs_every_loss_mode(mode):
  """One step on 1 device: finite metrics, the penalty logged (and inside d_total) only for
  wgangp, and d_total the sum of its terms."""
  config = model_config(32)
  config.loss.gan_mode = mode
  models, state, real = _step_inputs(config, 1)
  _, metrics = _pmapped(config, models, 1)(jax.tree.map(lambda x: jnp.stack([x]), state),
                                          {'a': real, 'b': real})
  metrics = {k: float(v[0]) for k, v in metrics.items()}
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert ('d_gp' in metrics) == (mode == 'wgangp')
  assert metrics['d_total'] == pytest.approx(
      metrics['d_real_loss'] + metrics['d_fake_loss'] + metrics.get('d_gp', 0.0), rel=1e-6)


@pytest.mark.slow
def test_lazy_r1_is_applied_every_r1_every_steps_with_that_weight():
  """Lazy R1 (as StyleGAN2): zero on the steps between, r1_every × the penalty on its steps,
  inside d_total; the penalty at r1_every 1 equals the lazy one at r1_every 3 divided by 3."""
  config = model_config(32)
  config.loss.r1_gamma = 1.0
  models, state, real = _step_inputs(config, 1)
  batch = {'a': real, 'b': real}
  stacked = jax.tree.map(lambda x: jnp.stack([x]), state)
  every_step = float(_pmapped(config, models, 1)(stacked, batch)[1]['d_r1'][0])
  config.loss.r1_every = 3
  step = _pmapped(config, models, 1)
  penalties = []
  for _ in range(4):
    stacked, metrics = step(stacked, batch)
    metrics = {k: float(v[0]) for k, v in metrics.items()}
    penalties.append(metrics['d_r1'])
    assert metrics['d_total'] == pytest.approx(
        metrics['d_real_loss'] + metrics['d_fake_loss'] + metrics['d_r1'], rel=1e-6)
  assert every_step > 0
  assert penalties[0] == pytest.approx(3 * every_step, rel=1e-5)
  assert penalties[1] == penalties[2] == 0.0 and penalties[3] > 0


def test_r1_settings_are_checked():
  config = model_config(32)
  config.loss.r1_every = 0
  with pytest.raises(ValueError, match='r1_every=0 >= 1'):
    families.check_config(config)
  config = default.get_config()
  config.loss.r1_gamma = 1.0
  with pytest.raises(ValueError, match='r1_gamma is a DCGAN option'):
    families.check_config(config)


def test_separate_lr_and_betas_for_g_and_d():
  config = model_config(32)
  config.optim.lr, config.optim.lr_d = 1e-6, 1e-4
  config.optim.beta1_d = 0.9
  models = dcgan.create_models(config, 1, lr_scale=0.5)
  assert float(models.lr_g(0)) == np.float32(5e-7) and float(models.lr_d(0)) == np.float32(5e-5)
  # Adam's first moment after one gradient of 1: (1 - β1) — 0.5 for G (beta1), 0.1 for D.
  ones = {'w': jnp.ones(())}
  mu = lambda tx: tx.update(ones, tx.init(ones), ones)[1][0].mu['w']
  assert float(mu(models.tx_g)) == 0.5 and float(mu(models.tx_d)) == pytest.approx(0.1)


def guard_config(**overrides):
  config = dcgan_test.get_config().divergence
  config.update(overrides)
  return config


def test_guard_fires_after_patience_consecutive_logs(tmp_path):
  guard = divergence.Guard(guard_config(action='stop', patience=2), tmp_path)
  ok, d_won, g_lost = ({'d_total': 1.3, 'g_total': 0.8}, {'d_total': 1e-7, 'g_total': 5.0},
                       {'d_total': 0.5, 'g_total': 31.0})
  assert guard.check(1, d_won) is None
  assert guard.check(2, ok) is None  # A healthy log resets the count.
  assert guard.check(3, g_lost) is None
  with pytest.raises(divergence.DivergenceError,
                     match=r'divergence at step 4: D loss 1e-07 .* '
                           r'stopped \(divergence.action=stop\)'):
    guard.check(4, d_won)


def test_guard_warns_and_rollback_persists_its_lr_scale(tmp_path, caplog):
  collapsed = {'d_total': 0.0, 'g_total': 50.0}
  warn = divergence.Guard(guard_config(action='warn', patience=1), tmp_path)
  assert warn.check(7, collapsed) is None
  assert 'divergence at step 7' in caplog.text and 'training goes on' in caplog.text
  back = divergence.Guard(guard_config(action='rollback', patience=1, lr_scale=0.5,
                                       max_rollbacks=2), tmp_path)
  assert [back.check(s, collapsed) for s in (1, 2)] == ['rollback', 'rollback']
  again = divergence.Guard(back.config, tmp_path)  # A restarted run keeps the lowered lr.
  assert (again.lr_scale, again.rollbacks) == (0.25, 2)
  with pytest.raises(divergence.DivergenceError, match='2 rollbacks already'):
    again.check(3, collapsed)
  assert divergence.Guard(guard_config(action='off'), tmp_path / 'x').check(1, collapsed) is None


def test_guard_rejects_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="divergence.action='restart'; expected one of off, warn"):
    divergence.Guard(guard_config(action='restart'), tmp_path)
  with pytest.raises(ValueError, match='0 < divergence.lr_scale < 1, got 3 and 1.5'):
    divergence.Guard(guard_config(lr_scale=1.5), tmp_path)


@pytest.mark.parametrize('get_config', [dcgan_mnist.get_config, dcgan_dogs.get_config])
def test_shipped_configs_build(get_config):
  config = get_config()
  assert isinstance(config, ml_collections.ConfigDict) and config.family == 'dcgan'
  models = dcgan.create_models(config, 10)
  shapes = jax.eval_shape(lambda: dcgan.create_train_state(config, models, jax.random.key(0)))
  assert set(shapes.params) == {'g', 'd'} and shapes.pools == {}


def test_scored_samples_begin_with_the_sample_grid():
  """z_i depends on i alone and samples are drawn in grid-sized batches, so the evaluator's
  first num_sample_images samples are the grid's images."""
  config = model_config(32)
  models = dcgan.create_models(config, 10)
  state = dcgan.create_train_state(config, models, jax.random.key(0))
  grid_z = dcgan.sample_z(config)
  assert grid_z.shape == (config.num_sample_images, config.model.nz)
  np.testing.assert_array_equal(dcgan.sample_z(config, 11)[:len(grid_z)], grid_z)
  samples = dcgan.generate_samples(config, models, state.params, state.batch_stats, 11)
  assert samples.shape == (11, 32, 32, 3)
  grid = base.apply(models.generators['g'], state.params['g'], state.batch_stats['g'], grid_z,
                    True)
  np.testing.assert_array_equal(samples[:len(grid_z)], grid)
  assert not np.allclose(samples[4:8], grid)  # Later batches have z of their own.


def test_evaluate_draws_only_the_fid_sample_where_nothing_else_reads_samples(tmp_path):
  """On images (no digit scores), eval.fid_samples=3 of 10 test images: 3 samples are drawn,
  and FID/KID are those of the first 3 samples against the real sample."""
  config = model_config(32)
  config.eval.fid_samples = 3
  models = dcgan.create_models(config, 10)
  state = dcgan.create_train_state(config, models, jax.random.key(0))
  real = np.random.default_rng(0).uniform(-1, 1, (10, 32, 32, 3)).astype(np.float32)
  data = types.SimpleNamespace(eval_images=lambda domain, num: real)
  seen = []

  def features(images):
    seen.append(len(images))
    return images.reshape(len(images), -1)[:, :6].astype(np.float64)

  scorer = fid.Scorer(features, 'weights', tmp_path, kid_subsets=2, kid_subset_size=2, seed=7,
                      max_images=3)
  drawn = []
  generate = dcgan.generate_samples
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(dcgan, 'generate_samples', lambda *a: drawn.append(a[-1]) or generate(*a))
    num_images, metrics = dcgan.evaluate(config, models, data, state.params, state.batch_stats,
                                         scorer)
  assert num_images == {'a': 10} and drawn == [3] and seen == [3, 3]
  samples = generate(config, models, state.params, state.batch_stats, 3)
  expected = fid.fid_from_features(features(samples), features(fid.sample(real, 3, 7)))
  assert metrics['fid'] == pytest.approx(expected, rel=1e-6)


def _start(workdir, cache, *flags, devices=8):
  env = {**os.environ, 'XLA_FLAGS': xla_flags(devices),
         'JAX_COMPILATION_CACHE_DIR': str(cache), 'JAX_PLATFORMS': 'cpu',
         'CUDA_VISIBLE_DEVICES': '', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.Popen(
      [sys.executable, '-m', 'cyclegan_jax.main', '--config=configs/dcgan_test.py',
       f'--workdir={workdir}', *flags], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)


def _finish(proc, expect_rc=0):
  _, stderr = proc.communicate(timeout=400)
  assert proc.returncode == expect_rc, stderr[-4000:]
  return stderr


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """six (8 devices) → resumed (to 12), twelve straight, six on one device, and a collapse
  (D lr 1.0) that the guard rolls back twice and then stops. The 8-device runs after six read
  its compiled programs from the cache instead of compiling them beside it."""
  root, cache = tmp_path_factory.mktemp('dcgan_runs'), tmp_path_factory.mktemp('dcgan_cache')
  six = _start(root / 'six', cache)
  six_on_one = _start(root / 'six_on_one', cache, devices=1)
  _finish(six)
  twelve = _start(root / 'twelve', cache, '--config.num_train_steps=12')
  collapse = _start(root / 'collapse', cache, '--config.optim.lr_d=1.0',
                    '--config.num_train_steps=40', '--config.log_every_steps=1',
                    '--config.checkpoint_every_steps=4', '--config.divergence.action=rollback',
                    '--config.divergence.max_rollbacks=2')
  shutil.copytree(root / 'six', root / 'resumed')
  resumed = _start(root / 'resumed', cache, '--config.num_train_steps=12')
  _finish(six_on_one)
  return {'root': root, 'twelve': _finish(twelve), 'resumed': _finish(resumed),
          'collapse': _finish(collapse, expect_rc=1)}


@pytest.mark.slow
def test_resume_is_bit_exact(runs):
  root = runs['root']
  assert complete_steps(root / 'six') == [3, 6]
  assert 'resumed from the checkpoint of step 6' in runs['resumed']
  straight, resumed = (restore(root / name, 12, pools=False)[0] for name in ('twelve', 'resumed'))
  flat = lambda t: {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(t)}
  straight, resumed = flat(straight), flat(resumed)
  assert sorted(straight) == sorted(resumed)
  differ = [k for k in straight if not np.array_equal(straight[k], resumed[k])]
  assert not differ, differ[:5]
  assert [r['step'] for r in read_loss_csv(root / 'resumed')] == [str(s) for s in range(2, 13, 2)]
  assert sorted(p.name for p in (root / 'twelve' / 'samples').iterdir()) == [
      f'step_{s:07d}.png' for s in (3, 6, 9, 12)]
  assert (root / 'twelve' / 'loss_curves.png').stat().st_size > 0


@pytest.mark.slow
def test_one_device_trains_as_eight(runs):
  """A run is a function of (config, seed): the same 6 steps on 1 device and on 8 give the same
  losses, to float32 rounding (measured: 1e-7 relative; 7e-5 for d_real, a mean near 0)."""
  eight, one = (read_loss_csv(runs['root'] / name) for name in ('six', 'six_on_one'))
  assert [r['step'] for r in eight] == [r['step'] for r in one] == ['2', '4', '6']
  for row_8, row_1 in zip(eight, one):
    for key in ('d_total', 'g_total', 'd_real', 'd_fake', 'g_grad_norm', 'd_grad_norm'):
      assert float(row_1[key]) == pytest.approx(float(row_8[key]), rel=1e-4, abs=1e-5), (
          row_8['step'], key)


@pytest.mark.slow
def test_forced_collapse_rolls_back_with_lower_lr_then_stops(runs):
  log, workdir = runs['collapse'], runs['root'] / 'collapse'
  fired = [int(s) for s in re.findall(r'divergence at step (\d+)', log)]
  back = [int(s) for s in re.findall(r'rolled back to step (\d+)', log)]
  assert len(fired) == 3 and len(back) == 2, log[-3000:]
  # The last checkpoint (every 4 steps, written after the guard's check of that step).
  assert back == [(f - 1) // 4 * 4 for f in fired[:2]]
  assert 'rollback 1 of 2' in log and 'rollback 2 of 2' in log
  assert f'divergence at step {fired[2]}' in log and '2 rollbacks already' in log
  assert json.loads((workdir / 'divergence.json').read_text()) == {'lr_scale': 0.25,
                                                                    'rollbacks': 2}
  rows = read_loss_csv(workdir)
  steps = [int(r['step']) for r in rows]
  assert steps == list(range(1, fired[2] + 1))  # Rolled-back rows were rewritten, none twice.
  lr_d = {int(r['step']): float(r['lr_d']) for r in rows}
  assert lr_d[1] == 1.0 and lr_d[back[1] + 1] == 0.25 and lr_d[fired[2]] == 0.25
