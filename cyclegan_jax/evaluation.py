"""`--mode=evaluate`: FID and KID of a trained workdir's images against the real test split.

What is scored is the family's choice (`Family.evaluate`). CycleGAN: both directions against
the real test images of their target domain: G_AB(test A) against test B, G_BA(test B) against
test A. DCGAN: as many samples G(z) as there are test images of domain A, against them (and, on
digits, how clear and varied the samples are to the MNIST classifier). The generators come from
the latest checkpoint, built from the *checkpoint's* model config. Results go to
workdir/eval/metrics.json and to TensorBoard.
"""

import json
from pathlib import Path

import jax
import ml_collections
from absl import logging
from clu import metric_writers

from cyclegan_jax import checkpointing
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.metrics import fid
from cyclegan_jax.models import inception, weights


def create_scorer(config: ml_collections.ConfigDict, eval_dir: Path) -> fid.Scorer:
  """The FID/KID scorer of config.eval, with the Inception weights read here, once."""
  cfg = config.eval
  weights_file = weights.find(cfg.inception_path or None, inception.PACKAGE, inception.FILE,
                              'FID Inception-v3 weights')
  weights_key = f'{weights_file.resolve()}|{weights_file.stat().st_size}'
  return fid.Scorer(inception.load_params(str(weights_file)), weights_key,
                    Path(cfg.stats_dir) if cfg.stats_dir else eval_dir / 'stats', cfg.batch_size,
                    cfg.kid_subsets, cfg.kid_subset_size, config.seed)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Scores the latest checkpoint in `workdir`; writes workdir/eval/metrics.json."""
  workdir = Path(workdir)
  eval_dir = workdir / 'eval'
  loaded = checkpointing.load(workdir, config)
  data = input_pipeline.open(loaded.config)
  num_images, metrics = loaded.family.evaluate(loaded.config, loaded.models, data, loaded.params,
                                               loaded.batch_stats,
                                               create_scorer(loaded.config, eval_dir))
  logging.info('step %d: %s', loaded.step,
               ', '.join(f'{k} {v:.4g}' for k, v in metrics.items()))
  if jax.process_index() == 0:
    eval_dir.mkdir(parents=True, exist_ok=True)
    result = {'step': loaded.step, 'num_images': num_images, **metrics}
    (eval_dir / 'metrics.json').write_text(json.dumps(result, indent=2) + '\n')
    writer = metric_writers.create_default_writer(str(eval_dir))
    writer.write_scalars(loaded.step, {f'eval/{k}': v for k, v in metrics.items()})
    writer.close()
  return metrics
