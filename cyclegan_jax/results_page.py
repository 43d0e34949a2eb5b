"""W/index.html: one static page per run, to look at it in a browser without TensorBoard.

The page is a pure function of the files in the workdir (sample grids, loss curves and tables,
digit and evaluation metrics, config.json, manifest.json), so training and evaluation both
rewrite it and it always shows what is on disk. Links are relative and there is no script, so
the workdir can be copied, or served as static files (`python -m http.server -d W`).
"""

import csv
import datetime
import html
import json
from typing import Any
from urllib.parse import quote

from etils import epath

from cyclegan_jax import manifest as manifests, visualize

PAGE = 'index.html'
MANIFEST = 'manifest.json'
RECENT_LOSS_ROWS = 10  # The loss table shows the newest rows; the curves show them all.
_STYLE = '''body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}img{max-width:100%}figure{margin:1em 0}pre{background:#f6f6f6;
padding:1em;overflow:auto}nav a{margin-right:1em}'''


def _read_rows(path: epath.Path) -> list[dict[str, str]]:
  if not path.exists():
    return []
  with path.open() as f:
    return [row for row in csv.DictReader(f) if None not in row.values()]


def _number(text: Any) -> str:
  try:
    return f'{float(text):.4g}'
  except (TypeError, ValueError):
    return html.escape(str(text))


def _table(header: list[str], rows: list[list[str]], left: int = 0) -> str:
  """An HTML table; the first `left` columns are left-aligned text, the rest numbers."""
  cls = lambda i: ' class="l"' if i < left else ''
  head = ''.join(f'<th{cls(i)}>{html.escape(h)}</th>' for i, h in enumerate(header))
  body = ''.join('<tr>' + ''.join(f'<td{cls(i)}>{c}</td>' for i, c in enumerate(row)) + '</tr>'
                 for row in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def _metrics_section(workdir: epath.Path) -> str:
  """In-training digit metrics (digit_metrics.csv) and the last evaluation (eval/metrics.json),
  one row per step."""
  rows = [{'source': 'training', **r} for r in _read_rows(workdir / 'digit_metrics.csv')]
  evaluated = workdir / 'eval' / 'metrics.json'
  if evaluated.exists():
    result = json.loads(evaluated.read_text())
    rows.append({'source': 'evaluate', **{k: v for k, v in result.items()
                                           if isinstance(v, (int, float))}})
  if not rows:
    return '<p>No evaluation yet (<code>--mode=evaluate</code>, or eval_every_steps).</p>'
  keys = sorted({k for r in rows for k in r} - {'source', 'step'})
  return _table(['step', 'source'] + keys,
                [[_number(r.get('step')), r['source']] + [_number(r.get(k, '')) for k in keys]
                 for r in rows])


def _losses_section(workdir: epath.Path) -> str:
  parts = []
  if (workdir / 'loss_curves.png').exists():
    parts.append('<img src="loss_curves.png" alt="loss curves">')
  rows = _read_rows(workdir / 'loss_table.csv')[-RECENT_LOSS_ROWS:]
  if rows:
    keys = list(rows[0])
    parts.append(f'<p>The last {len(rows)} logged steps:</p>' +
                 _table(keys, [[_number(r[k]) for k in keys] for r in reversed(rows)]))
  return ''.join(parts) or '<p>No losses logged yet.</p>'


def _samples_section(workdir: epath.Path) -> str:
  grids = sorted((workdir / 'samples').glob('step_*.png'), reverse=True)
  if not grids:
    return '<p>No sample grids yet.</p>'
  return ''.join(
      f'<figure><img src="samples/{quote(p.name)}" alt="samples at step {int(p.stem[5:])}" '
      f'loading="lazy"><figcaption>step {int(p.stem[5:]):,}</figcaption></figure>'
      for p in grids)


def _run_section(workdir: epath.Path) -> str:
  path = workdir / MANIFEST
  if not path.exists():
    return '<p>No manifest.</p>'
  rows = manifests.summary(json.loads(path.read_text()))
  return _table(['', ''], [[html.escape(k), html.escape(v)] for k, v in rows], left=2)


def render(workdir: epath.PathLike) -> str:
  """The page for the files now in `workdir`."""
  workdir = epath.Path(workdir)
  config = workdir / 'config.json'
  config_text = config.read_text() if config.exists() else '(not written yet)'
  family = json.loads(config_text).get('family', '?') if config.exists() else '?'
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
  sections = [('metrics', 'Evaluation', _metrics_section(workdir)),
              ('losses', 'Losses', _losses_section(workdir)),
              ('samples', 'Samples, newest first', _samples_section(workdir)),
              ('run', 'Run', _run_section(workdir)),
              ('config', 'Config', f'<pre>{html.escape(config_text)}</pre>')]
  title = html.escape(f'{workdir.name} ({family})')
  nav = ''.join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
  body = ''.join(f'<h2 id="{key}">{name}</h2>{content}' for key, name, content in sections)
  return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
          f'<style>{_STYLE}</style></head><body><h1>{title}</h1><p>Updated {now}.</p>'
          f'<nav>{nav}</nav>{body}</body></html>\n')


def write(workdir: epath.PathLike) -> None:
  """Rewrites W/index.html atomically: a reader never sees half a page."""
  visualize.write_atomically(epath.Path(workdir) / PAGE, render(workdir))
