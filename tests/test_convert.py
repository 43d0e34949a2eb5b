"""convert.py and torch_pickle.py against torch: reference-architecture state dicts, saved by
torch.save, converted without torch, give the same outputs as the torch models.

The torch models are cyclegan_jax/benchmarks/torch_reference.py's layer-for-layer re-statements
of the reference networks.py, so their state_dict keys are those of the published files.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cyclegan_jax import convert, parallel, train
from cyclegan_jax.families import cyclegan
from cyclegan_jax.models import discriminators, generators, weights

torch = pytest.importorskip('torch')
from cyclegan_jax.benchmarks.torch_reference import (  # noqa: E402
    TorchNLayerDiscriminator, TorchResnetGenerator, TorchUnetGenerator, tnn)

TOL = 1e-4
STATS_NORM = functools.partial(tnn.InstanceNorm2d, affine=False, track_running_stats=True)


@pytest.fixture(autouse=True)
def _deterministic():
  torch.manual_seed(0)
  with jax.default_matmul_precision('highest'):
    yield


def save(model, path, **kwargs):
  torch.save(model.state_dict(), path, **kwargs)
  return str(path)


def run_torch(model, x):
  with torch.no_grad():
    return model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)


def assert_reader_matches_torch(path):
  ours, theirs = weights.read_torch(path), torch.load(path)
  assert list(ours) == list(theirs)
  for key, tensor in theirs.items():
    expected = tensor.numpy()
    assert ours[key].dtype == expected.dtype and ours[key].shape == expected.shape, key
    assert ours[key].tobytes() == expected.tobytes(), key  # Bit-identical.


def tiny_resnet(norm_layer=None):
  kwargs = {'norm_layer': norm_layer} if norm_layer else {}
  return TorchResnetGenerator(3, 3, 8, 2, **kwargs)


@pytest.mark.slow  # Full-size networks on a 256² image, in torch and in JAX.
@pytest.mark.parametrize('name', ['resnet_9blocks', 'resnet_6blocks', 'unet_256', 'basic'])
def test_reference_model_matches_torch_at_256(name, tmp_path):
  """Full-size reference networks with torch's default init (larger activations than the
  reference's N(0, 0.02)), one 256² image each."""
  if name == 'basic':
    model = TorchNLayerDiscriminator(3, 64, 3)
    params = convert.discriminator_params_from_pth(save(model, tmp_path / 'D.pth'), name)
    module = discriminators.create_discriminator(convert.reference_model_config('resnet_9blocks'))
  else:
    model = (TorchUnetGenerator(3, 3, 8, 64) if name == 'unet_256'
             else TorchResnetGenerator(3, 3, 64, int(name[len('resnet_')])))
    params = convert.generator_params_from_pth(save(model, tmp_path / 'G.pth'), name)
    module = generators.create_generator(convert.reference_model_config(name))
  assert_reader_matches_torch(tmp_path / ('D.pth' if name == 'basic' else 'G.pth'))
  x = np.random.default_rng(0).standard_normal((1, 256, 256, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(lambda p, x: module.apply({'params': p}, x, train=False))(params, x))
  theirs = run_torch(model, x)
  err = float(np.max(np.abs(ours - theirs)))
  print(f'{name}: max-abs {err:.2e}, output std {theirs.std():.3f}, shape {ours.shape}')
  assert ours.shape == theirs.shape == ((1, 30, 30, 1) if name == 'basic' else (1, 256, 256, 3))
  assert theirs.std() > 0.05  # Not a saturated or vanishing output, where any error hides.
  assert err <= TOL


def test_old_style_file_with_running_stats_and_module_prefix(tmp_path):
  """Legacy (pre-zip) format, DataParallel's prefix and InstanceNorm running statistics."""
  model = tiny_resnet(STATS_NORM)
  state = {f'module.{k}': v for k, v in model.state_dict().items()}
  assert any(k.endswith('.running_mean') for k in state)
  assert any(k.endswith('.num_batches_tracked') for k in state)
  old = tmp_path / 'old.pth'
  torch.save(state, old, _use_new_zipfile_serialization=False)
  assert_reader_matches_torch(old)
  clean = tiny_resnet()
  clean.load_state_dict(model.state_dict(), strict=False)  # The same weights, no statistics.
  expected = convert.generator_params_from_pth(save(clean, tmp_path / 'new.pth'),
                                               'resnet_2blocks')
  got = convert.generator_params_from_pth(str(old), 'resnet_2blocks')
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)
  x = np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)
  module = generators.create_generator(convert.reference_model_config('resnet_2blocks', ngf=8))
  ours = module.apply({'params': got}, x, train=False)
  assert float(np.max(np.abs(ours - run_torch(clean, x)))) <= TOL


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path):
  state = tiny_resnet().state_dict()
  state['model.10.conv_block.1.weight'] = torch.zeros(32, 16, 3, 3)
  torch.save(state, tmp_path / 'bad.pth')
  with pytest.raises(convert.PthMismatchError,
                     match=r'model\.10\.conv_block\.1\.weight: the file has shape '
                           r'\(32, 16, 3, 3\), generator resnet_2blocks \(ngf 8\) in .*bad\.pth '
                           r'expects \(32, 32, 3, 3\)'):
    convert.generator_params_from_pth(str(tmp_path / 'bad.pth'), 'resnet_2blocks')


def test_unknown_and_missing_keys_are_listed(tmp_path):
  state = tiny_resnet().state_dict()
  del state['model.1.bias'], state['model.19.weight']  # model.19: the last conv here.
  state['model.2.weight'] = torch.ones(8)  # An affine norm: not the reference's instance norm.
  torch.save(state, tmp_path / 'odd.pth')
  with pytest.raises(convert.PthMismatchError) as error:
    convert.generator_params_from_pth(str(tmp_path / 'odd.pth'), 'resnet_2blocks')
  assert str(error.value).endswith("unknown keys ['model.2.weight']; missing keys "
                                   "['model.1.bias', 'model.19.weight']")
  # resnet_9blocks expects 7 more blocks: every one of their keys is named.
  with pytest.raises(convert.PthMismatchError, match=r"model\.18\.conv_block\.5\.bias"):
    convert.generator_params_from_pth(str(tmp_path / 'odd.pth'), 'resnet_9blocks')


def test_blocks_with_dropout_shift_their_second_conv(tmp_path):
  """The reference inserts nn.Dropout at conv_block.4 when use_dropout: the conv moves to .6."""
  state = tiny_resnet().state_dict()
  torch.save(state, tmp_path / 'plain.pth')
  torch.save({k.replace('conv_block.5.', 'conv_block.6.'): v for k, v in state.items()},
             tmp_path / 'dropout.pth')
  plain, dropout = (convert.generator_params_from_pth(str(tmp_path / f), 'resnet_2blocks')
                    for f in ('plain.pth', 'dropout.pth'))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(dropout)):
    np.testing.assert_array_equal(a, b)


def test_pickled_module_is_refused_without_running_it(tmp_path):
  torch.save(tiny_resnet(), tmp_path / 'whole.pth')
  with pytest.raises(weights.PthFormatError, match=r'TorchResnetGenerator.*state_dict'):
    weights.read_torch(tmp_path / 'whole.pth')
  (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
  with pytest.raises(weights.PthFormatError, match='neither a zip nor a legacy'):
    weights.read_torch(tmp_path / 'junk.pth')


def tiny_config():
  return importlib.import_module('configs.test').get_config()


def test_cli_writes_a_workdir_that_translates_like_torch(tmp_path, capsys):
  model = tiny_resnet()
  pth = save(model, tmp_path / 'latest_net_G.pth')
  workdir = tmp_path / 'workdir'
  convert.main([f'--pth={pth}', '--generator=resnet_2blocks', '--direction=BtoA',
                f'--out={workdir}', '--config=configs/test.py'])
  out = capsys.readouterr().out
  assert f'as g_ba (resnet_2blocks, ngf 8)' in out
  assert 'g_ab, d_a, d_b are freshly initialised' in out
  assert (workdir / 'config.json').exists()
  from cyclegan_jax import translate
  translator = translate.load_translator(str(workdir), 'BtoA')
  assert translator.step == 0 and translator.multiple == 4
  x = np.random.default_rng(2).uniform(-1, 1, (1, 36, 44, 3)).astype(np.float32)
  assert float(np.max(np.abs(translator.apply(x[0]) - run_torch(model, x)[0]))) <= TOL
  with pytest.raises(SystemExit, match='already holds checkpoints'):
    convert.main([f'--pth={pth}', f'--out={workdir}', '--config=configs/test.py'])


def test_a_run_from_pth_files_starts_and_rolls_back_to_their_weights(tmp_path):
  """Step 0 holds the reference weights, also when the divergence guard rolls back before the
  first checkpoint; until then the run holds only the state's shapes (no init is drawn)."""
  config = tiny_config()
  g_a = save(tiny_resnet(), tmp_path / 'G_A.pth')
  config.init_from_pth.g_ab = g_a
  run = train.Run(config, str(tmp_path / 'workdir'))
  try:
    assert {type(x) for x in jax.tree.leaves(run.template)} == {jax.ShapeDtypeStruct}
    expected = convert.generator_params_from_pth(g_a, 'resnet_2blocks')
    for state in (run.initial_state(), run.roll_back()):
      g_ab = parallel.unreplicate(state.params)['g_ab']
      assert jax.tree.structure(g_ab) == jax.tree.structure(expected)
      for a, b in zip(jax.tree.leaves(g_ab), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
  finally:
    run.close()


def test_init_from_pth_maps_reference_names(tmp_path):
  """G_A → g_ab and D_A → d_b (the reference's D_A judges B); unset trees stay as they were."""
  config = tiny_config()
  g_a = save(tiny_resnet(), tmp_path / 'G_A.pth')
  d_a = save(TorchNLayerDiscriminator(3, 8, 3), tmp_path / 'D_A.pth')
  config.init_from_pth.update(g_ab=g_a, d_b=d_a)
  models = cyclegan.create_models(config, steps_per_epoch=1)
  shapes = jax.eval_shape(lambda: cyclegan.create_train_state(config, models,
                                                                 jax.random.key(0)).params)
  fresh = jax.tree.map(lambda s: jnp.full(s.shape, 7.0, s.dtype), shapes)
  params = convert.init_params_from_pth(config, fresh)
  expected = {'g_ab': convert.generator_params_from_pth(g_a, 'resnet_2blocks'),
              'd_b': convert.discriminator_params_from_pth(d_a, 'basic')}
  for name in ('g_ab', 'g_ba', 'd_a', 'd_b'):
    want = expected.get(name, fresh[name])
    assert jax.tree.structure(params[name]) == jax.tree.structure(want), name
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  config.model.n_downsampling = 1
  with pytest.raises(convert.PthMismatchError, match=r'model\.n_downsampling to 2'):
    convert.init_params_from_pth(config, fresh)
  config.model.n_downsampling = 2
  config.init_from_pth.g_ba = g_a
  config.model.ngf = 16
  with pytest.raises(convert.PthMismatchError, match=r'init_from_pth\.g_ab: .*G_A\.pth does not '
                                                     'fit the configured g_ab'):
    convert.init_params_from_pth(config, jax.tree.map(
        lambda s: jnp.zeros(s.shape), jax.eval_shape(lambda: cyclegan.create_train_state(
            config, cyclegan.create_models(config, 1), jax.random.key(0)).params)))
