"""`--mode=ablation`: one command trains and evaluates every variant of a config, then writes a
table.

    python -m cyclegan_jax.main --mode=ablation --config=configs/methods_demo.py \
        --workdir=workdirs/methods_demo

`config.ablation.variants` maps a variant's name to the settings it changes in the base config
(nested dicts, merged key by key; e.g. {'model': {'antialias': True}}); everything else, seed
and data included, is shared. Each variant trains in workdir/<variant>, in a process of its own,
so its peak memory is its own; then it is scored. A variant that already has its result
(workdir/<variant>/ablation.json) is not run again. The table goes to
workdir/<config.ablation.table>.
"""

import json
import multiprocessing
from pathlib import Path
import resource
import time
from typing import Any

import ml_collections
from absl import logging

from cyclegan_jax import evaluation, families, train

RESULT_FILE = 'ablation.json'
_DIRECTIONS = ('a_to_b', 'b_to_a')


def variant_config(config: ml_collections.ConfigDict, name: str,
                   workdir: Path) -> ml_collections.ConfigDict:
  """The base config with variant `name`'s settings; all variants share one cache of real-image
  Inception features."""
  variant = ml_collections.ConfigDict(config.to_dict())
  del variant['ablation']
  variant.update(config.ablation.variants[name].to_dict())
  variant.eval.stats_dir = config.eval.stats_dir or str(workdir / 'stats')
  return variant


def _changes(overrides: dict[str, Any], base: ml_collections.ConfigDict,
             prefix: str = '') -> list[str]:
  """The overrides that differ from `base`: {'model': {'antialias': True}} →
  ['model.antialias=True']."""
  out = []
  for key, value in overrides.items():
    if isinstance(value, dict):
      out += _changes(value, base.get(key, ml_collections.ConfigDict()), f'{prefix}{key}.')
    elif base.get(key) != value:
      out.append(f'{prefix}{key}={value}')
  return out


def variant_names(config: ml_collections.ConfigDict) -> list[str]:
  """config.ablation.order (comma-separated) if given, else the variants' names."""
  order = config.ablation.get('order')
  names = [n.strip() for n in order.split(',')] if order else list(config.ablation.variants)
  unknown = sorted(set(names) - set(config.ablation.variants))
  if unknown or not names:
    raise ValueError(f'ablation.order names {unknown or "no"} variants; the variants are '
                     f'{", ".join(config.ablation.variants) or "none"}.')
  return names


def markdown_table(config: ml_collections.ConfigDict, results: dict[str, dict[str, Any]]) -> str:
  """Per variant: what it changes (its description, or the settings that differ), FID and KID
  (± its standard deviation over subsets) of the main direction (and of the other where the
  variant has it), steps trained, s/step and peak memory; and the `reported` note, if the config
  gives one."""
  main = config.ablation.direction
  other = [d for d in _DIRECTIONS if d != main][0]
  arrow = lambda d: d.replace('_to_', '→').upper()
  has_other = any(f'fid_{other}' in r for r in results.values())
  reported = config.ablation.get('reported')
  header = ['Variant', 'Changes', f'FID {arrow(main)}', f'KID×10³ {arrow(main)}']
  if has_other:
    header += [f'FID {arrow(other)}', f'KID×10³ {arrow(other)}']
  header += ['Steps', 's/step', 'Peak memory']
  if reported:
    header.append(config.ablation.reported_title)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  spread = lambda std: '' if std is None else f' ± {1e3 * std:.2f}'
  score = lambda r, d: ([f'{r[f"fid_{d}"]:.2f}', f'{1e3 * r[f"kid_{d}"]:.2f}'
                         f'{spread(r[f"kid_{d}_std"])}'] if f'fid_{d}' in r else ['—', '—'])
  descriptions = config.ablation.get('descriptions') or {}
  for name, r in results.items():
    changes = ', '.join(f'`{c}`' for c in _changes(config.ablation.variants[name].to_dict(),
                                                   config))
    row = [name, descriptions.get(name) or changes or 'none', *score(r, main)]
    if has_other:
      row += score(r, other)
    row += [str(r['steps']), f'{r["seconds_per_step"]:.3f}', f'{r["peak_rss_mb"] / 1024:.2f} GiB']
    if reported:
      row.append(str(reported.get(name, '')))
    lines.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(lines) + '\n'


def _train_in_child(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains one variant (in a fresh process) and writes its steps, s/step and peak RSS."""
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  run = train.Run(config, workdir)
  try:
    start = run.initial_state()
    first = int(start.step[0])
    began = time.monotonic()
    state = run.train(start)
  finally:
    run.close()
  steps = int(state.step[0]) - first
  stats = {'steps': int(state.step[0]),
           'seconds_per_step': (time.monotonic() - began) / max(steps, 1),
           'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  (Path(workdir) / 'train_stats.json').write_text(json.dumps(stats) + '\n')


def _run_variant(variant: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
  process = multiprocessing.get_context('spawn').Process(target=_train_in_child,
                                                         args=(variant, str(workdir)))
  process.start()
  process.join()
  if process.exitcode != 0:
    raise RuntimeError(f'ablation variant in {workdir} failed (exit code {process.exitcode}); '
                       'its log is above.')
  stats = json.loads((workdir / 'train_stats.json').read_text())
  return {**stats, **evaluation.evaluate(variant, str(workdir))}


def run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Trains and evaluates every variant of config.ablation.variants; returns the table."""
  if 'ablation' not in config:
    raise ValueError('--mode=ablation needs a config with an `ablation` section, e.g. '
                     'configs/ablation_s3.py or configs/methods_demo.py.')
  if config.ablation.direction not in _DIRECTIONS:
    raise ValueError(f'ablation.direction={config.ablation.direction!r}: expected a_to_b or '
                     'b_to_a.')
  workdir = Path(workdir)
  variants = {name: variant_config(config, name, workdir) for name in variant_names(config)}
  for name, variant in variants.items():
    try:
      families.check_config(variant)
    except ValueError as e:
      raise ValueError(f'ablation variant {name!r}: {e}') from None
  results = {}
  for name, variant in variants.items():
    result_file = workdir / name / RESULT_FILE
    if result_file.exists():
      logging.info('ablation variant %s: done before (%s)', name, result_file)
    else:
      logging.info('ablation variant %s: training in %s', name, workdir / name)
      result_file.parent.mkdir(parents=True, exist_ok=True)
      result_file.write_text(json.dumps(_run_variant(variant, workdir / name), indent=2) + '\n')
    results[name] = json.loads(result_file.read_text())
  table = markdown_table(config, results)
  (workdir / config.ablation.table).write_text(table)
  logging.info('ablation table (%s):\n%s', workdir / config.ablation.table, table)
  return table
