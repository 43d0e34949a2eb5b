"""`--mode=evaluate`: FID and KID of a trained workdir's images against the real test split.

What is scored is the family's choice (`Family.evaluate`). CycleGAN: both directions against
the real test images of their target domain: G_AB(test A) against test B, G_BA(test B) against
test A. DCGAN: as many samples G(z) as there are test images of domain A, against them (and, on
digits, how clear and varied the samples are to the MNIST classifier). The generators come from
the latest checkpoint, built from the *checkpoint's* model config. FID and KID see a fixed sample
of at most eval.fid_samples images per set (Inception at 299² costs 0.2-0.3 s an image on 2
CPU cores, and the digit configs have 10,000 test images per domain); the digit metrics see all.
Results go to workdir/eval/metrics.json, TensorBoard and the results page (index.html).
"""

import json
from pathlib import Path

import jax
import ml_collections
from absl import logging

from cyclegan_jax import checkpointing, package_files, results_page, summaries, visualize
from cyclegan_jax.data import input_pipeline
from cyclegan_jax.metrics import fid
from cyclegan_jax.models import inception, weights


def create_scorer(config: ml_collections.ConfigDict, eval_dir: Path) -> fid.Scorer:
  """The FID/KID scorer of config.eval, with the Inception weights read here, once."""
  cfg = config.eval
  source = weights.find(cfg.inception_path or None, package_files.FID_INCEPTION,
                        'FID Inception-v3 weights')
  features = fid.make_feature_fn(inception.load_params(source), cfg.batch_size)
  return fid.Scorer(features, weights.identity(source),
                    Path(cfg.stats_dir) if cfg.stats_dir else eval_dir / 'stats',
                    cfg.kid_subsets, cfg.kid_subset_size, config.seed, cfg.fid_samples)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float | None]:
  """Scores the latest checkpoint in `workdir`; writes workdir/eval/metrics.json (a KID std of
  None where there is no spread: fid.kernel_inception_distance)."""
  workdir = Path(workdir)
  eval_dir = workdir / 'eval'
  loaded = checkpointing.load(workdir, config)
  data = input_pipeline.open(loaded.config)
  num_images, metrics = loaded.family.evaluate(loaded.config, loaded.models, data, loaded.params,
                                               loaded.batch_stats,
                                               create_scorer(loaded.config, eval_dir))
  limit = loaded.config.eval.fid_samples
  fid_images = {d: fid.sample_size(n, limit) for d, n in num_images.items()}
  logging.info('step %d: %s', loaded.step,
               ', '.join(f'{k} {v:.4g}' for k, v in metrics.items() if v is not None))
  logging.info('FID/KID on %s%s', ', '.join(f'{fid_images[d]:,} of {n:,} images of {d}'
                                            for d, n in num_images.items()),
               f' (eval.fid_samples={limit}: a fixed, seeded sample; the other metrics on all)'
               if fid_images != num_images else '')
  no_spread = [k for k, v in metrics.items() if v is None]
  if no_spread:
    logging.info('%s: none; each set fits one KID subset (eval.kid_subset_size=%d), so KID is '
                 'the whole sets\' MMD² and has no spread over subsets; a subset size below the '
                 'sets\' gives one', ', '.join(no_spread), loaded.config.eval.kid_subset_size)
  if jax.process_index() == 0:
    eval_dir.mkdir(parents=True, exist_ok=True)
    result = {'step': loaded.step, 'num_images': num_images, 'fid_images': fid_images,
              **metrics}
    visualize.write_atomically(eval_dir / 'metrics.json', json.dumps(result, indent=2) + '\n')
    results_page.write(workdir)
    writer = summaries.EventWriter(eval_dir)
    writer.write_scalars(loaded.step, {f'eval/{k}': v for k, v in metrics.items()
                                       if v is not None})
    writer.close()
  return metrics
