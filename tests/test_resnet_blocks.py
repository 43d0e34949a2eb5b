"""ResnetGenerator's residual blocks as one nn.scan: the same tensors as the blocks run one by
one (batch norm included), features that stop among the blocks, the per-block layout both ways,
model.remat (same gradients, less memory) and one block body in the compiled program."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default, test as test_config
from cyclegan_jax import families
from cyclegan_jax.models import block_layout, generators

KEY = jax.random.key(0, impl='rbg')  # Threefry makes XLA:CPU compile initialisers slowly.
FIRST = 10  # The first block's Sequential entry: pad, conv7, norm, act, 2 × (conv, norm, act).


def images(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape), jnp.float32)


def tiny(ngf=4, n_blocks=3, **options):
  return generators.ResnetGenerator(ngf=ngf, n_blocks=n_blocks, **options)


def model_config(**overrides):
  config = default.get_config().model
  config.update(overrides)
  return config


def test_block_entries_are_the_blocks_run_one_by_one_with_batch_norm():
  g, x = tiny(norm='batch'), images(2, 16, 16, 3)
  variables = jax.jit(g.init)(KEY, x)
  entries = tuple(range(FIRST - 1, FIRST + 3))  # The blocks' input, then each block's output.
  features, mutated = jax.jit(lambda v, x: g.apply(v, x, feature_layers=entries,
                                                   mutable=['batch_stats']))(variables, x)
  assert len(features) == 4 and all(f.shape == (2, 4, 4, 16) for f in features)
  one_by_one, stats = block_layout.unstack_blocks(variables), block_layout.unstack_blocks(mutated)
  block = generators.ResnetBlock(features=16, norm='batch')
  run = jax.jit(lambda v, y: block.apply(v, y, mutable=['batch_stats']))
  for i in range(3):
    name = f'ResnetBlock_{i}'
    y, updated = run({'params': one_by_one['params'][name],
                      'batch_stats': one_by_one['batch_stats'][name]}, features[i])
    np.testing.assert_allclose(features[i + 1], y, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(stats['batch_stats'][name]), jax.tree.leaves(updated)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batch_norm_inside_the_scan_spans_the_devices():
  """With batch_axis (as the pmapped step sets it), 8 devices with one image each normalise as
  one device with all 8."""
  x = images(8, 16, 16, 3)
  g = tiny(norm='batch')
  variables = jax.jit(g.init)(KEY, x)
  train = lambda g: lambda v, x: g.apply(v, x, mutable=['batch_stats'])
  expected, expected_stats = jax.jit(train(g))(variables, x)
  sharded = g.clone(batch_axis='devices')
  got, got_stats = jax.pmap(train(sharded), axis_name='devices', in_axes=(None, 0))(
      variables, x.reshape(8, 1, 16, 16, 3))
  np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(got_stats), jax.tree.leaves(expected_stats)):
    np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-6)


def test_features_ending_among_the_blocks_leave_the_later_blocks_out():
  g, x = tiny(norm='batch'), images(2, 16, 16, 3)
  variables = jax.jit(g.init)(KEY, x)
  apply = jax.jit(lambda v, x, layers: g.apply(v, x, feature_layers=layers,
                                               mutable=['batch_stats']), static_argnums=2)
  (first,), mutated = apply(variables, x, (FIRST,))
  every, _ = apply(variables, x, (FIRST, FIRST + 1, FIRST + 2))
  np.testing.assert_array_equal(first, every[0])
  before = variables['batch_stats'][block_layout.BLOCKS]['block']['Norm_0']['BatchNorm_0']
  after = mutated['batch_stats'][block_layout.BLOCKS]['block']['Norm_0']['BatchNorm_0']
  assert not np.allclose(after['mean'][0], before['mean'][0])  # Block 0 ran in training mode.
  for name in ('mean', 'var'):  # Blocks 1 and 2 did not run.
    np.testing.assert_array_equal(after[name][1:], before[name][1:])


def test_stack_and_unstack_blocks_at_any_depth_in_numeric_order():
  old = {'Conv_0': {'kernel': np.ones(2)},
         **{f'ResnetBlock_{i}': {'Conv_0': {'kernel': np.full(2, i)}} for i in range(11)}}
  stacked = block_layout.stack_blocks({'params': {'g': old}, 'opt': {'0': {'mu': {'g': old}}}})
  for tree in (stacked['params']['g'], stacked['opt']['0']['mu']['g']):
    assert sorted(tree) == ['Conv_0', 'ResnetBlocks']
    np.testing.assert_array_equal(tree['ResnetBlocks']['block']['Conv_0']['kernel'],
                                  np.repeat(np.arange(11)[:, None], 2, axis=1))
  back = block_layout.unstack_blocks(stacked)
  assert jax.tree.structure(back) == jax.tree.structure({'params': {'g': old},
                                                         'opt': {'0': {'mu': {'g': old}}}})
  for i in range(11):
    np.testing.assert_array_equal(back['opt']['0']['mu']['g'][f'ResnetBlock_{i}']['Conv_0']
                                  ['kernel'], [i, i])
  assert block_layout.stack_blocks({'Conv_0': old['Conv_0']}) == {'Conv_0': old['Conv_0']}


def test_remat_keeps_the_parameters_and_the_gradients():
  """Batch norm and dropout inside the recomputed blocks: the recomputation draws the same
  dropout masks and updates the statistics once."""
  x = images(2, 16, 16, 3)
  plain, remat = (tiny(norm='batch', dropout=0.5, remat=r) for r in (False, True))
  variables = jax.jit(plain.init)(KEY, x)
  remat_variables = jax.jit(remat.init)(KEY, x)
  assert jax.tree.structure(remat_variables) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(remat_variables), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(a, b)

  def grads(g):
    def loss(params):
      y, mutated = g.apply({**variables, 'params': params}, x, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(1, impl='rbg')})
      return jnp.mean(y**2), mutated
    return jax.jit(jax.grad(loss, has_aux=True))(variables['params'])

  (expected, expected_stats), (got, got_stats) = grads(plain), grads(remat)
  assert float(jnp.max(jnp.abs(expected['ResnetBlocks']['block']['Conv_0']['Conv_0']['kernel']))
               ) > 1e-4  # The blocks get real gradients.
  for a, b in zip(jax.tree.leaves((got, got_stats)), jax.tree.leaves((expected, expected_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('unroll', [False, True])
def test_remat_compiles_a_backward_pass_with_less_temporary_memory(unroll):
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)

  def temp_bytes(remat):  # With remat the generator keeps the loop rolled, unroll or not.
    g = tiny(ngf=16, n_blocks=6, remat=remat, unroll=unroll)
    variables = jax.eval_shape(g.init, KEY, x)
    grad = jax.jit(jax.grad(lambda v, x: jnp.mean(g.apply(v, x)**2)))
    analysis = grad.lower(variables, x).compile().memory_analysis()
    if analysis is None:
      pytest.skip(f'the {jax.default_backend()} backend gives no compiled memory analysis')
    return analysis.temp_size_in_bytes

  block_map = 16 * 16 * 64 * 4  # Bytes of one block's activation: 16² pixels, 4·ngf channels.
  # Without remat each block keeps its padded input, conv outputs and activations; with it, one.
  assert temp_bytes(False) - temp_bytes(True) >= 2 * 6 * block_map


def test_rolled_the_compiled_generator_holds_one_block_body():
  x = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  counts = {}
  for n_blocks in (2, 5):
    for unroll in (False, True):
      g = tiny(n_blocks=n_blocks, unroll=unroll)
      text = jax.jit(g.apply).lower(jax.eval_shape(g.init, KEY, x), x).as_text()
      counts[n_blocks, unroll] = (text.count('stablehlo.convolution'),
                                  text.count('stablehlo.while'))
  assert counts[2, False] == counts[5, False] and counts[2, False][1] == 1
  # Unrolled: no loop left, and the same function of the same parameters.
  assert counts[2, True][1] == counts[5, True][1] == 0
  x = images(2, 16, 16, 3)
  variables = jax.jit(tiny(n_blocks=5).init)(KEY, x)
  np.testing.assert_allclose(jax.jit(tiny(n_blocks=5, unroll=False).apply)(variables, x),
                             jax.jit(tiny(n_blocks=5, unroll=True).apply)(variables, x),
                             rtol=1e-6, atol=1e-6)


def test_model_unroll_blocks_setting():
  assert not generators.create_generator(model_config()).unroll
  assert generators.create_generator(model_config(unroll_blocks=True)).unroll


def test_model_remat_setting():
  assert generators.create_generator(model_config(remat='blocks')).remat
  assert not generators.create_generator(model_config()).remat
  without_key = model_config().to_dict()  # A config saved before model.remat existed.
  del without_key['remat']
  assert not generators.create_generator(ml_collections.ConfigDict(without_key)).remat
  with pytest.raises(ValueError, match="model.remat is for ResNet generators .* not 'unet_128'"):
    generators.create_generator(model_config(generator='unet_128', remat='blocks'))
  config = test_config.get_config()
  config.model.remat = 'block'
  with pytest.raises(ValueError, match=r"model\.remat='block': expected 'none' or 'blocks'"):
    families.check_config(config)
