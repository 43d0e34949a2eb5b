"""--mode=evaluate on a workdir (a tiny checkpoint, 4 demo images per domain, the real FID
Inception) and the S3 ablation's variants and table."""

import json

import jax
import numpy as np
import pytest

from configs import ablation_s3, methods_demo, test as test_config
from cyclegan_jax import ablation, evaluation, families
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
def test_evaluate_scores_both_directions_with_the_checkpoints_model(tmp_path, caplog):
  trained = tiny_config(activation='leaky_relu', leaky_slope=0.3)
  models, state = save_fresh_checkpoint(trained, tmp_path)

  with caplog.at_level('INFO'):  # Given relu; the checkpoint wins.
    metrics = evaluation.evaluate(tiny_config(), str(tmp_path))

  written = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
  assert written == {'step': 0, 'num_images': {'a': 4, 'b': 4}, 'fid_images': {'a': 4, 'b': 4},
                     **metrics}
  assert sorted(metrics) == sorted(METRIC_KEYS)
  assert all(np.isfinite(metrics[k]) and metrics[k] > 0 for k in ('fid_a_to_b', 'fid_b_to_a'))
  # 4 images a set, KID subsets of up to 1,000: every subset is both whole sets, so no spread.
  assert metrics['kid_a_to_b_std'] is None and metrics['kid_b_to_a_std'] is None
  assert ('kid_a_to_b_std, kid_b_to_a_std: none; each set fits one KID subset '
          '(eval.kid_subset_size=1000)') in caplog.text
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


def test_eval_image_counts_are_checked_with_the_config():
  config = tiny_config()
  config.eval.update(num_images=1, fid_samples=0)
  with pytest.raises(ValueError, match=r'eval.num_images=1 and eval.fid_samples=0: expected -1 '
                                       r'\(all\) or 2 or more images'):
    families.check_config(config)


def test_evaluate_without_checkpoint_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint in .*checkpoints: train first'):
    evaluation.evaluate(tiny_config(), str(tmp_path))


def test_ablation_variants_differ_only_in_activation_and_semantic_loss(tmp_path):
  base = ablation_s3.get_config('demo')
  configs = {name: ablation.variant_config(base, name, tmp_path)
             for name in ablation.variant_names(base)}
  assert list(configs) == ['original', 'leaky_relu', 'semantic', 'hybrid']
  assert {n: (c.model.activation, c.model.leaky_slope, c.loss.lambda_semantic)
          for n, c in configs.items()} == {
              'original': ('relu', 0.2, 0.0), 'leaky_relu': ('leaky_relu', 0.01, 0.0),
              'semantic': ('relu', 0.2, 1.0), 'hybrid': ('leaky_relu', 0.01, 1.0)}
  for c in configs.values():
    assert (c.seed, c.num_train_steps) == (base.seed, base.num_train_steps)
    assert c.eval.stats_dir == str(tmp_path / 'stats')  # One cache of real features for all.
    assert 'ablation' not in c


def test_method_variants_are_the_four_methods(tmp_path):
  base = methods_demo.get_config()
  configs = {name: ablation.variant_config(base, name, tmp_path)
             for name in ablation.variant_names(base)}
  assert {n: (c.family, c.model.antialias, c.loss.lambda_nce, c.loss.nce_idt,
              c.loss.flip_equivariance) for n, c in configs.items()} == {
                  'cyclegan': ('cyclegan', False, 1.0, True, False),
                  'cyclegan_antialias': ('cyclegan', True, 1.0, True, False),
                  'cut': ('cut', True, 1.0, True, False),
                  'fastcut': ('cut', True, 10.0, False, True)}
  assert all(c.max_train_minutes == base.max_train_minutes for c in configs.values())


def _row(f, other=True):
  row = {'fid_a_to_b': f, 'kid_a_to_b': 0.0123, 'kid_a_to_b_std': 0.0004, 'steps': 200,
         'seconds_per_step': 0.25, 'peak_rss_mb': 2048.0}
  if other:
    row.update({'fid_b_to_a': 2 * f, 'kid_b_to_a': 0.5, 'kid_b_to_a_std': 0.01})
  return row


def test_ablation_table_names_the_changes_and_the_reported_figures():
  config = ablation_s3.get_config('demo')
  table = ablation.markdown_table(config, {'original': _row(100.0), 'hybrid': _row(90.5)})
  assert table.splitlines() == [
      '| Variant | Changes | FID A→B | KID×10³ A→B | FID B→A | KID×10³ B→A | Steps | s/step '
      '| Peak memory | S3 reported FID (not this run) |',
      '|---|---|---|---|---|---|---|---|---|---|',
      '| original | none | 100.00 | 12.30 ± 0.40 | 200.00 | 500.00 ± 10.00 | 200 | 0.250 '
      '| 2.00 GiB | 199.29 |',
      '| hybrid | `loss.lambda_semantic=1.0`, `model.activation=leaky_relu`, '
      '`model.leaky_slope=0.01` | 90.50 | 12.30 ± 0.40 | 181.00 | 500.00 ± 10.00 | 200 | 0.250 '
      '| 2.00 GiB | 189.71 |']


def test_ablation_table_shows_no_spread_where_kid_has_none():
  row = {**_row(100.0), 'kid_a_to_b_std': None}
  table = ablation.markdown_table(methods_demo.get_config(), {'cyclegan': row})
  assert '| 100.00 | 12.30 | 200.00 | 500.00 ± 10.00 |' in table.splitlines()[2]


def test_method_table_leaves_directions_a_variant_lacks_empty():
  config = methods_demo.get_config()
  table = ablation.markdown_table(config, {'cyclegan': _row(100.0), 'cut': _row(80.0, False)})
  assert table.splitlines()[3] == ('| cut | CUT (`configs/cut.py` settings) | 80.00 | 12.30 ± 0.40 '
                                   '| — | — | 200 | 0.250 | 2.00 GiB |')


def test_ablation_rejects_bad_configs(tmp_path):
  with pytest.raises(ValueError, match='needs a config with an `ablation` section'):
    ablation.run(tiny_config(), str(tmp_path))
  config = ablation_s3.get_config('demo')
  config.ablation.order = 'original,swish'
  with pytest.raises(ValueError, match=r"ablation.order names \['swish'\] variants"):
    ablation.run(config, str(tmp_path))
  config = methods_demo.get_config()
  config.batch_size = 8  # One image per forced test device.
  config.ablation.variants.cut.loss.pool_size = 50
  with pytest.raises(ValueError, match=r"variant 'cut': loss.pool_size=50 does not apply to CUT"):
    ablation.run(config, str(tmp_path))
  with pytest.raises(ValueError, match='expected vangogh2photo or demo'):
    ablation_s3.get_config('monet')
