"""The CUT family: G's NCE features, F's shapes, the pure step (all three trees, device-count
equality, bit-exact resume), translate and evaluate on CUT checkpoints, and the config errors.

A tiny CUT (configs/cut_test.py) on 32² inputs; full-size shapes are checked with eval_shape.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cut as cut_config, cut_test, fastcut
from cyclegan_jax import checkpointing, evaluation, families, parallel, translate
from cyclegan_jax.families import base, cut
from cyclegan_jax.models import layers
from tests.helpers import host_tree, needs_inception, save_fresh_checkpoint

GLOBAL_BATCH = 8


def batches(n, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return [{d: rng.uniform(-1, 1, (GLOBAL_BATCH, size, size, 3)).astype(np.float32) for d in 'ab'}
          for _ in range(n)]


_STEPS = {}


def pmapped(config, models, devices):
  """The step on `devices`, compiled once per models and device count."""
  key = (id(models), len(devices))
  if key not in _STEPS:
    _STEPS[key] = jax.pmap(functools.partial(cut.train_step, models=models, config=config),
                           axis_name=parallel.AXIS_NAME, devices=devices)
  return _STEPS[key]


def run(config, models, state, batch_list, devices):
  """Per step: (metrics of device 0, host copy of the state), from `state` on `devices`."""
  step = pmapped(config, models, devices)
  replicated = parallel.replicate(state, devices)
  out = []
  for batch in batch_list:
    sharded = jax.tree.map(lambda x: x.reshape((len(devices), -1) + x.shape[1:]), batch)
    replicated, metrics = step(replicated, sharded)
    # Read on the host: `x[0]` of a step's output compiles a gather over all its devices, and
    # one per leaf in flight at once deadlocked XLA:CPU (7 of 8 devices in an all-reduce).
    out.append(({k: float(v) for k, v in parallel.unreplicate(metrics).items()},
                parallel.unreplicate(replicated)))
  return out


@pytest.fixture(scope='module')
def tiny():
  config = cut_test.get_config()
  models = cut.create_models(config, steps_per_epoch=10)
  return config, models, cut.create_train_state(config, models, jax.random.key(0))


@pytest.fixture(scope='module')
def eight_devices(tiny):
  config, models, state = tiny
  return run(config, models, state, batches(3), jax.local_devices()[:8])


def test_full_size_features_are_cuts_layers_and_f_follows_them():
  """At 256² with ngf 64: the padded input, the first down conv (128 ch, full size), the second
  (256 ch, ½), residual blocks 1 and 5 (¼); F gets one 2-layer 256-unit MLP per layer."""
  config = cut_config.get_config()
  models = cut.create_models(config, 1)
  shapes = [s.shape for s in cut._feature_shapes(config, models.generators['g'])]
  assert shapes == [(1, 262, 262, 3), (1, 256, 256, 128), (1, 128, 128, 256), (1, 64, 64, 256),
                    (1, 64, 64, 256)]
  g_params = jax.eval_shape(lambda: base.init_variables(
      models.generators['g'], jax.random.key(0), (256, 256, 3))[0])
  assert layers.count_params(g_params) == 11_378_179
  d_out, d_vars = jax.eval_shape(lambda: models.discriminator.init_with_output(
      jax.random.key(0), jnp.zeros((1, 256, 256, 3)), train=False))
  assert layers.count_params(d_vars['params']) == 2_764_737  # The reference 70×70 PatchGAN's.
  assert d_out.shape == (1, 30, 30, 1)
  f_params = jax.eval_shape(lambda: models.projection.init(
      jax.random.key(0), [jnp.zeros((1, 1, s[-1])) for s in shapes]))['params']
  assert layers.count_params(f_params) == sum(c * 256 + 256 + 256 * 256 + 256
                                              for c in (3, 128, 256, 256, 256))


def test_feature_layers_are_the_sequential_entries():
  """Entry 0 is the reflect-padded input itself; the last entry's output is the image."""
  config = cut_test.get_config()
  g = cut.create_models(config, 1).generators['g']
  x = jnp.asarray(batches(1)[0]['a'][:2])
  params, _ = jax.jit(lambda k: base.init_variables(g, k, (32, 32, 3)))(jax.random.key(1))
  apply = jax.jit(g.apply, static_argnames=('train', 'feature_layers'))  # Eager is 4× slower.
  image = apply({'params': params}, x, train=False)
  entries = 4 + 8 + 2 + 8 + 3  # stem, two antialiased downs, 2 blocks, two ups, head.
  first, last = apply({'params': params}, x, train=False, feature_layers=(0, entries - 1))
  np.testing.assert_array_equal(first, jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)),
                                               mode='reflect'))
  np.testing.assert_array_equal(last, image)
  with pytest.raises(ValueError, match=r'entries 0\.\.24'):
    apply({'params': params}, x, train=False, feature_layers=(0, entries))


@pytest.mark.slow
def test_one_step_updates_g_d_and_f_and_their_adam_states(tiny, eight_devices):
  _, _, state = tiny
  metrics, after = eight_devices[0]
  before = host_tree(state)
  for tree in ('g', 'd', 'f'):
    for b, a in zip(jax.tree.leaves(before.params[tree]), jax.tree.leaves(after.params[tree])):
      assert not np.array_equal(a, b), f'{tree} was not updated'
  assert int(after.opt_state_g['g'][0].count) == int(after.opt_state_g['f'][0].count) == 1
  assert int(after.opt_state_d[0].count) == 1
  assert set(metrics) == {'g_gan', 'nce', 'nce_idt', 'd_real_loss', 'd_fake_loss', 'd_real',
                          'd_fake', 'g_total', 'd_total', 'g_grad_norm', 'f_grad_norm',
                          'd_grad_norm', 'lr_g', 'lr_d'}
  assert all(np.isfinite(v) for v in metrics.values())
  # G's loss is λ_GAN·GAN + ½(NCE + NCE_Y); D's is ½(real + fake).
  assert metrics['g_total'] == pytest.approx(metrics['g_gan'] +
                                             0.5 * (metrics['nce'] + metrics['nce_idt']))
  assert metrics['d_total'] == pytest.approx(0.5 * (metrics['d_real_loss'] +
                                                    metrics['d_fake_loss']))
  # At init F's outputs are alike, so PatchNCE is near log(1 + P) = log 65 for 64 patches.
  assert 3.0 < metrics['nce'] < 10.0


@pytest.mark.slow
def test_one_device_and_eight_devices_take_the_same_steps(tiny, eight_devices):
  """Patch locations and flips are drawn per step, not per device: the global batch of 8 on one
  device gives the same losses and parameters as 8 devices with one image each.

  Each step starts from the 8-device state before it. Over a float32 trajectory, rounding
  differences of ~1e-6 grow: Adam moves a weight whose gradient is below the rounding noise
  (one of G's at init here) by ±lr, and PatchNCE on the tiny features of a 0.02-gain init
  magnifies that (g_grad_norm 1.5e-3 apart after 3 steps; test_train_step.py says the same of
  CycleGAN's gradients)."""
  config, models, state = tiny
  starts = [state] + [jax.tree.map(jnp.asarray, s).replace(rng=state.rng)
                      for _, s in eight_devices[:-1]]
  for step, (start, batch, (m8, eight)) in enumerate(zip(starts, batches(3), eight_devices)):
    ((m1, one),) = run(config, models, start, [batch], jax.local_devices()[:1])
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], rtol=2e-4, atol=1e-6,
                                 err_msg=f'{key} at step {step + 1}')
    # Conv biases before an instance norm have a zero gradient in exact arithmetic, so Adam
    # moves them by ±lr on rounding noise; every other parameter must agree.
    for tree in ('g', 'd', 'f'):
      ones, eights = (jax.tree_util.tree_leaves_with_path(s.params[tree]) for s in (one, eight))
      for (path, a), (_, b) in zip(ones, eights):
        if tree == 'f' or 'bias' not in jax.tree_util.keystr(path):
          np.testing.assert_allclose(
              b, a, atol=2e-5, err_msg=f'{tree}{jax.tree_util.keystr(path)} at step {step + 1}')


@pytest.mark.slow
def test_resume_from_a_checkpoint_is_bit_identical(tiny, eight_devices, tmp_path):
  config, models, state = tiny
  manager = checkpointing.create_manager(tmp_path, 2)
  first = run(config, models, state, batches(3)[:1], jax.local_devices()[:8])
  replicated = parallel.replicate(first[0][1].replace(rng=state.rng), jax.local_devices()[:8])
  checkpointing.save(manager, replicated, config)
  manager.wait_until_finished()
  restored = parallel.unreplicate(checkpointing.restore(manager, state))
  restored = restored.replace(rng=jax.random.wrap_key_data(restored.rng,
                                                           impl=jax.random.key_impl(state.rng)))
  manager.close()
  resumed = run(config, models, restored, batches(3)[1:], jax.local_devices()[:8])
  expected, got = jax.tree.leaves(eight_devices[-1][1]), jax.tree.leaves(resumed[-1][1])
  assert len(expected) == len(got)
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('get_config', [cut_config.get_config, fastcut.get_config])
def test_shipped_configs_pass_the_check(get_config):
  config = get_config()
  config.batch_size = jax.device_count()  # Batch 1 needs one device; the tests force 8.
  families.check_config(config)


@pytest.mark.slow
def test_fastcut_step_has_no_identity_term():
  config = cut_config.cut_settings(cut_test.get_config(), fast=True)
  assert (config.loss.lambda_nce, config.loss.flip_equivariance) == (10.0, True)
  models = cut.create_models(config, 10)
  state = cut.create_train_state(config, models, jax.random.key(0))
  metrics, _ = run(config, models, state, batches(1), jax.local_devices()[:2])[0]
  assert 'nce_idt' not in metrics
  assert metrics['g_total'] == pytest.approx(metrics['g_gan'] + metrics['nce'])


@pytest.mark.parametrize('key, value, message', [
    ('loss.pool_size', 50, r'loss\.pool_size=50 does not apply to CUT'),
    ('loss.lambda_identity', 0.5, r'loss\.lambda_identity=0\.5 does not apply to CUT'),
    ('model.generator', 'unet_256', r"model\.generator='unet_256'"),
    ('model.nce_layers', '0,4,99', r"model\.nce_layers='0,4,99'.*entries 0\.\.24"),
    ('model.nce_layers', '4,0', r"model\.nce_layers='4,0': expected increasing"),
    ('loss.gan_mode', 'wgangp', r"loss\.gan_mode='wgangp'"),
    ('loss.num_patches', 0, r'num_patches=0'),
    ('model.style_reference', True,
     r'model\.style_reference=True does not apply to CUT \(its G reads no style reference\)'),
])
def test_settings_that_do_not_apply_are_named(key, value, message):
  config = cut_test.get_config()
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    families.check_config(config)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = tmp_path_factory.mktemp('cut')
  config = cut_test.get_config()
  config.eval.update(num_images=4, batch_size=4, kid_subsets=5)
  models, state = save_fresh_checkpoint(config, path)
  return path, config, models, state


def test_translate_runs_g_and_refuses_b_to_a(workdir):
  path, config, models, state = workdir
  translator = translate.load_translator(str(path), 'AtoB')
  image = np.random.default_rng(0).integers(0, 256, (36, 44, 3), np.uint8)
  out = translate.translate_image(translator, image)
  assert out.shape == image.shape and out.dtype == np.uint8
  with pytest.raises(ValueError, match='translates AtoB'):
    translate.load_translator(str(path), 'BtoA')


@pytest.mark.slow
@needs_inception
def test_evaluate_scores_a_to_b(workdir):
  path, config, models, state = workdir
  metrics = evaluation.evaluate(config, str(path))
  assert sorted(metrics) == ['fid_a_to_b', 'kid_a_to_b', 'kid_a_to_b_std']
  written = json.loads((path / 'eval' / 'metrics.json').read_text())
  assert written['num_images'] == {'a': 4, 'b': 4} and written['fid_a_to_b'] > 0
