"""`--mode=evaluate`: FID and KID of a trained workdir's images against the real test split.

CycleGAN: both directions are scored against the real test images of their target domain:
G_AB(test A) against test B, G_BA(test B) against test A. DCGAN: as many samples G(z) as there
are test images of domain A, against them (and, on digits, how clear and varied the samples
are to the MNIST classifier). The generators come from the latest checkpoint and are built
from the *checkpoint's* model config (an activation or norm mismatch would not show in
parameter shapes). Results go to workdir/eval/metrics.json and to TensorBoard.
"""

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from cyclegan_jax import checkpointing, dcgan_step, families, inference, input_pipeline, parallel
from cyclegan_jax.evaluate import digits, fid, inception, weights


@dataclasses.dataclass(frozen=True)
class Translations:
  """The test split of each domain and its translation into the other, [N, H, W, 3] in [-1, 1]."""
  real_a: np.ndarray
  real_b: np.ndarray
  fake_b: np.ndarray  # G_AB(real_a)
  fake_a: np.ndarray  # G_BA(real_b)


# A metric: (config, translations, eval dir) -> {name: value}. evaluate() runs every entry of
# METRICS; add one (e.g. digit accuracy) by appending it there.
MetricFn = Callable[[ml_collections.ConfigDict, Translations, Path], dict[str, float]]


def _real_features(feature_fn, images: np.ndarray, cache_dir: Path, domain: str,
                   weights_file: Path) -> np.ndarray:
  """Features of real test images, cached under a key made of the pixels and the weights file."""
  key = hashlib.sha256(images.tobytes() + str(images.shape).encode()).hexdigest()
  key += f'|{weights_file.resolve()}|{weights_file.stat().st_size}'
  return fid.cached_features(cache_dir / f'real_{domain}.npz', key, lambda: feature_fn(images))


def _fid_and_kid(config: ml_collections.ConfigDict, fake: np.ndarray, real: np.ndarray,
                 domain: str, eval_dir: Path) -> dict[str, float]:
  """{'fid', 'kid', 'kid_std'} of `fake` against the real test images of `domain`."""
  cfg = config.eval
  weights_file = weights.find(cfg.inception_path or None, inception.PACKAGE, inception.FILE,
                              'FID Inception-v3 weights')
  feature_fn = fid.make_feature_fn(inception.load_params(str(weights_file)), cfg.batch_size)
  cache_dir = Path(cfg.stats_dir) if cfg.stats_dir else eval_dir / 'stats'
  real_features = _real_features(feature_fn, real, cache_dir, domain, weights_file)
  fake_features = feature_fn(fake)
  kid, kid_std = fid.kernel_inception_distance(fake_features, real_features, cfg.kid_subsets,
                                               cfg.kid_subset_size, seed=config.seed)
  return {'fid': fid.fid_from_features(fake_features, real_features), 'kid': kid,
          'kid_std': kid_std}


def inception_metrics(config: ml_collections.ConfigDict, translations: Translations,
                      eval_dir: Path) -> dict[str, float]:
  """fid_a_to_b, kid_a_to_b, kid_a_to_b_std and the same for b_to_a."""
  metrics = {}
  for direction, fake, real, domain in (('a_to_b', translations.fake_b, translations.real_b, 'b'),
                                        ('b_to_a', translations.fake_a, translations.real_a, 'a')):
    scores = _fid_and_kid(config, fake, real, domain, eval_dir)
    metrics.update({f'fid_{direction}': scores['fid'], f'kid_{direction}': scores['kid'],
                    f'kid_{direction}_std': scores['kid_std']})
  return metrics


def digit_metrics(config: ml_collections.ConfigDict, translations: Translations,
                  eval_dir: Path) -> dict[str, float]:
  """Digit-classifier accuracy of the translations into MNIST (source 'digits' only)."""
  del eval_dir  # The classifier is cached in the data directory.
  if config.data.source != 'digits':
    return {}
  return digits.accuracy_of_translations(
      config, {'a': translations.real_a, 'b': translations.real_b},
      {'a': translations.fake_b, 'b': translations.fake_a})


METRICS: list[MetricFn] = [inception_metrics, digit_metrics]


def _translate(models, name: str, params, batch_stats, images: np.ndarray,
               batch_size: int) -> np.ndarray:
  apply = jax.jit(lambda x: inference.apply_generator(models, name, params, batch_stats, x))
  out = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    pad = np.zeros((batch_size - len(batch),) + batch.shape[1:], batch.dtype)
    out.append(np.asarray(apply(np.concatenate([batch, pad])))[:len(batch)])
  return np.concatenate(out)


def with_checkpoint_model(config: ml_collections.ConfigDict,
                          saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """`config` with its model section replaced by the one the checkpoint was trained with, but
  for `conv_impl`, which says how this machine computes convs, not what the model is."""
  model = {**saved['model'], 'conv_impl': config.model.conv_impl}
  if model != config.model.to_dict():
    logging.warning('evaluating with the checkpoint\'s model config %s, not the given %s',
                    model, config.model.to_dict())
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = ml_collections.ConfigDict(model)
  return config


def restore_latest(config: ml_collections.ConfigDict, workdir: Path):
  """(step, config with the checkpoint's model, models, params, batch_stats) of the latest
  checkpoint; params and batch_stats unreplicated."""
  missing = FileNotFoundError(f'no checkpoint in {workdir / "checkpoints"}: train first.')
  if not (workdir / 'checkpoints').is_dir():  # Checked first: orbax would create the folder.
    raise missing
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints, reader=True)
  try:
    step = manager.latest_step()
    if step is None:
      raise missing
    config = with_checkpoint_model(config, checkpointing.restored_config(manager, step))
    family = families.get(config)
    models = family.create_models(config, 1)  # Steps per epoch only shape the lr schedule.
    template = family.create_train_state(config, models, jax.random.key(config.seed))
    state = checkpointing.restore(manager, template, step)
  finally:
    manager.close()
  return (step, config, models, *parallel.unreplicate((state.params, state.batch_stats)))


def translate_test_split(config: ml_collections.ConfigDict,
                         workdir: Path) -> tuple[int, ml_collections.ConfigDict, Translations]:
  """(checkpoint step, config with the checkpoint's model, translations of the test split)."""
  step, config, models, params, batch_stats = restore_latest(config, workdir)
  real_a, real_b = (input_pipeline.load_eval_images(config, d, config.eval.num_images)
                    for d in 'ab')
  translate = lambda name, x: _translate(models, name, params, batch_stats, x,
                                         config.eval.batch_size)
  return step, config, Translations(real_a, real_b, translate('g_ab', real_a),
                                    translate('g_ba', real_b))


def _score_translations(config: ml_collections.ConfigDict, workdir: Path):
  """(step, images scored per domain, metrics): every METRICS entry on the translations."""
  step, config, translations = translate_test_split(config, workdir)
  metrics: dict[str, float] = {}
  for metric_fn in METRICS:
    metrics.update(metric_fn(config, translations, workdir / 'eval'))
  return step, {'a': len(translations.real_a), 'b': len(translations.real_b)}, metrics


def _score_samples(config: ml_collections.ConfigDict, workdir: Path):
  """(step, images scored, metrics) of DCGAN samples: fid, kid, kid_std against test A; on
  digits also digit_confident and digit_score, over all samples and over the first
  num_sample_images (`_grid`: the images of the sample grid)."""
  step, config, models, params, batch_stats = restore_latest(config, workdir)
  real = input_pipeline.load_eval_images(config, 'a', config.eval.num_images)
  samples = dcgan_step.generate_samples(config, models, params, batch_stats, len(real))
  metrics = _fid_and_kid(config, samples, real, 'a', workdir / 'eval')
  if config.data.source == 'digits':
    metrics.update(digits.sample_scores(config, samples))
    grid = digits.sample_scores(config, samples[:config.num_sample_images])
    metrics.update({f'{k}_grid': v for k, v in grid.items()})
  return step, {'a': len(real)}, metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Scores the latest checkpoint in `workdir`; writes workdir/eval/metrics.json."""
  workdir = Path(workdir)
  families.get(config)  # An unknown family is refused by name.
  score = {'cyclegan': _score_translations, 'dcgan': _score_samples}[config.family]
  step, num_images, metrics = score(config, workdir)
  logging.info('step %d: %s', step, ', '.join(f'{k} {v:.4g}' for k, v in metrics.items()))
  if jax.process_index() == 0:
    eval_dir = workdir / 'eval'
    eval_dir.mkdir(parents=True, exist_ok=True)
    result = {'step': step, 'num_images': num_images, **metrics}
    (eval_dir / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
    writer = metric_writers.create_default_writer(str(eval_dir))
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    writer.close()
  return metrics
