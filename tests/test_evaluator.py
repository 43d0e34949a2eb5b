"""--mode=evaluate on a workdir (a tiny checkpoint, 4 demo images per domain, the real FID
Inception) and the S3 ablation's variants and table."""

import json

import jax
import numpy as np
import pytest

from configs import ablation_s3, test as test_config
from cyclegan_jax import ablation, evaluation
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.families import cyclegan
from tests.helpers import needs_inception, save_fresh_checkpoint

METRIC_KEYS = ['fid_a_to_b', 'kid_a_to_b', 'kid_a_to_b_std',
               'fid_b_to_a', 'kid_b_to_a', 'kid_b_to_a_std']


def tiny_config(**model):
  config = test_config.get_config()
  config.eval.num_images = 4
  config.eval.batch_size = 4
  config.eval.kid_subsets = 5
  config.model.update(model)
  return config


@pytest.mark.slow
@needs_inception
def test_evaluate_scores_both_directions_with_the_checkpoints_model(tmp_path):
  trained = tiny_config(activation='leaky_relu', leaky_slope=0.3)
  models, state = save_fresh_checkpoint(trained, tmp_path)

  metrics = evaluation.evaluate(tiny_config(), str(tmp_path))  # Given relu; the checkpoint wins.

  written = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
  assert written == {'step': 0, 'num_images': {'a': 4, 'b': 4}, **metrics}
  assert sorted(metrics) == sorted(METRIC_KEYS)
  assert all(np.isfinite(metrics[k]) and metrics[k] > 0 for k in ('fid_a_to_b', 'fid_b_to_a'))
  data = input_pipeline.open(trained)
  real = {d: data.eval_images(d, 4) for d in 'ab'}
  scorer = evaluation.create_scorer(trained, tmp_path / 'eval')
  for name, source, target, direction in (('g_ab', 'a', 'b', 'a_to_b'),
                                          ('g_ba', 'b', 'a', 'b_to_a')):
    fake = cyclegan.translate(models, state.params, state.batch_stats, name, real[source], 4)
    expected = scorer.score(fake, real[target], target)
    assert metrics[f'fid_{direction}'] == pytest.approx(expected['fid'], rel=1e-5)
    assert metrics[f'kid_{direction}'] == pytest.approx(expected['kid'], rel=1e-5)
  assert list((tmp_path / 'eval').glob('events.out.tfevents.*'))
  assert sorted(p.name for p in (tmp_path / 'eval' / 'stats').iterdir()) == [
      'real_a.npz', 'real_b.npz']


def test_evaluate_without_checkpoint_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint in .*checkpoints: train first'):
    evaluation.evaluate(tiny_config(), str(tmp_path))


def test_ablation_variants_differ_only_in_activation_and_semantic_loss(tmp_path):
  base = ablation_s3.get_config('demo')
  configs = {name: ablation.variant_config(base, name, tmp_path) for name in ablation.VARIANTS}
  assert {n: (c.model.activation, c.model.leaky_slope, c.loss.lambda_semantic)
          for n, c in configs.items()} == {
              'original': ('relu', 0.01, 0.0), 'leaky_relu': ('leaky_relu', 0.01, 0.0),
              'semantic': ('relu', 0.01, 1.0), 'hybrid': ('leaky_relu', 0.01, 1.0)}
  for c in configs.values():
    assert (c.seed, c.num_train_steps) == (base.seed, base.num_train_steps)
    assert c.eval.stats_dir == str(tmp_path / 'stats')  # One cache of real features for all.


def test_ablation_table_has_s3s_form():
  config = ablation_s3.get_config('demo')
  row = lambda f: {'fid_a_to_b': f, 'kid_a_to_b': 0.0123, 'kid_a_to_b_std': 0.0004,
                   'fid_b_to_a': 2 * f, 'kid_b_to_a': 0.5, 'kid_b_to_a_std': 0.01}
  table = ablation.markdown_table(config, {'original': row(100.0), 'hybrid': row(90.5)})
  assert table.splitlines() == [
      '| Variant | Activation | Semantic loss | FID A→B | KID×10³ A→B | FID B→A | KID×10³ B→A '
      '| S3 reported FID (not this run) |',
      '|---|---|---|---|---|---|---|---|',
      '| original | relu | off | 100.00 | 12.30 ± 0.40 | 200.00 | 500.00 ± 10.00 | 199.29 |',
      '| hybrid | LeakyReLU 0.01 | λ=1 | 90.50 | 12.30 ± 0.40 | 181.00 | 500.00 ± 10.00 '
      '| 189.71 |']


def test_ablation_rejects_bad_configs(tmp_path):
  with pytest.raises(ValueError, match='needs a config with an `ablation` section'):
    ablation.run(tiny_config(), str(tmp_path))
  config = ablation_s3.get_config('demo')
  config.ablation.variants = 'original,swish'
  with pytest.raises(ValueError, match=r"\['swish'\]"):
    ablation.run(config, str(tmp_path))
  with pytest.raises(ValueError, match='expected vangogh2photo or demo'):
    ablation_s3.get_config('monet')
