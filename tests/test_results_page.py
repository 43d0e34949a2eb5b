"""The run manifest (manifest.py) and the results page (results_page.py): what they record, that
every link of the page resolves inside the workdir, and what a restore on other versions says."""

import html.parser
import importlib.metadata
import json
import pathlib
import platform
import subprocess

import jax
import numpy as np
import pytest

from configs import test as test_config
from cyclegan_jax import checkpointing, manifest, parallel, results_page, visualize
from cyclegan_jax.families import cyclegan

ROOT = pathlib.Path(__file__).resolve().parents[1]


class PageParser(html.parser.HTMLParser):
  """Collects a page's links, images, scripts, headings and table cells."""

  def __init__(self):
    super().__init__()
    self.links, self.images, self.scripts, self.headings, self.cells = [], [], 0, [], []
    self._in = None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == 'img':
      self.images.append(attrs['src'])
    elif tag == 'a':
      self.links.append(attrs['href'])
    elif tag == 'script':
      self.scripts += 1
    elif tag in ('h2', 'td'):
      self._in, self._text = tag, ''

  def handle_data(self, data):
    if self._in:
      self._text += data

  def handle_endtag(self, tag):
    if tag in ('h2', 'td') and self._in == tag:
      (self.headings if tag == 'h2' else self.cells).append(self._text)
      self._in = None


def parse_page(workdir: pathlib.Path) -> PageParser:
  """Parses W/index.html and checks what holds for every page: no script, and every link is
  relative and resolves (images to files in the workdir, anchors to sections)."""
  parser = PageParser()
  text = (workdir / 'index.html').read_text()
  parser.feed(text)
  assert parser.scripts == 0
  for src in parser.images:
    assert not src.startswith(('/', 'http')) and (workdir / src).is_file(), src
  for href in parser.links:
    assert href.startswith('#') and f'id="{href[1:]}"' in text, href
  return parser


def test_manifest_records_code_libraries_devices_and_command():
  config = test_config.get_config()
  made = manifest.build(config, argv=['main.py', '--config=configs/test.py', '--workdir=/tmp/w x'])
  assert made['config'] == config.to_dict() and made['seed'] == config.seed
  assert made['libraries'] == {name: importlib.metadata.version(name)
                               for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint')}
  assert made['code']['package'] == importlib.metadata.version('cyclegan_jax')
  head = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', 'HEAD'], capture_output=True,
                        text=True)
  if head.returncode == 0:  # A checkout (CI clones one): the commit is recorded.
    assert made['code']['commit'] == head.stdout.strip()
  assert (made['platform'], made['device_count'], made['process_count']) == (
      'cpu', jax.device_count(), 1)
  assert made['command'] == "main.py --config=configs/test.py '--workdir=/tmp/w x'"
  json.dumps(made)  # JSON-ready, as orbax and manifest.json need.
  rows = dict(manifest.summary(made))
  assert rows['devices'] == f'{jax.device_count()} × cpu (cpu), 1 process(es)'
  assert rows['libraries'].startswith(f'jax {jax.__version__}, jaxlib ')
  cpu = manifest.host_cpu()
  assert made['host_cpu'] == cpu and rows['host CPU'].startswith(f'{cpu["model"]} (')


def test_host_cpu_is_the_first_processors_model_and_vector_features():
  x86 = ('processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu pni avx2 fma sse4_2 avx512f '
         'amx_tile ht\n\nprocessor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n')
  assert manifest.host_cpu(x86) == {'model': 'Some Xeon',
                                    'features': ['amx_tile', 'avx2', 'avx512f', 'fma', 'sse4_2']}
  arm = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve\nCPU part\t: 0xd40\n'
  assert manifest.host_cpu(arm) == {'model': platform.processor() or platform.machine(),
                                    'features': ['asimd', 'sve']}


def test_command_line_is_as_typed():
  assert manifest.command_line(['/x/cyclegan_jax/main.py', '--workdir=a b']) == (
      "python -m cyclegan_jax.main '--workdir=a b'")
  assert manifest.command_line(['/x/cyclegan_jax/export.py', '--out=o']) == (
      'python -m cyclegan_jax.export --out=o')
  assert manifest.command_line(['train.py', '-v']) == 'train.py -v'


def test_changes_name_each_library_and_commit_that_differs():
  config = test_config.get_config()
  now = manifest.build(config)
  old = json.loads(json.dumps(now))
  assert manifest.changes(old, now) == [] and manifest.changes(None, now) == []
  old['libraries']['flax'] = '0.1.0'
  old['code']['commit'] = 'abcdef0123456789'
  found = manifest.changes(old, now)
  assert f'flax 0.1.0 → {now["libraries"]["flax"]}' in found
  if now['code'].get('commit'):
    assert f'cyclegan_jax commit abcdef012345 → {now["code"]["commit"][:12]}' in found

  old = json.loads(json.dumps(now))
  now['host_cpu'] = {'model': 'New CPU', 'features': ['avx2', 'avx512f', 'fma']}
  old['host_cpu'] = {'model': 'Old CPU', 'features': ['avx', 'avx2', 'fma']}
  assert manifest.changes(old, now) == ['host CPU Old CPU → New CPU', 'CPU features -avx',
                                        'CPU features +avx512f']
  del old['host_cpu']  # Written before the CPU was recorded.
  assert manifest.changes(old, now) == []
  # An accelerator's arithmetic does not depend on its host's CPU.
  old['host_cpu'], now['platform'] = {'model': 'Old CPU', 'features': []}, 'tpu'
  assert manifest.changes(old, now) == []


def test_load_prints_the_manifest_and_warns_once_of_other_versions(tmp_path, caplog):
  config = test_config.get_config()
  models = cyclegan.create_models(config, 1)
  state = cyclegan.create_train_state(config, models, jax.random.key(0))
  old = manifest.build(config, argv=['trained', 'elsewhere'])
  old['libraries']['optax'] = '0.0.1'
  manager = checkpointing.create_manager(tmp_path, 1)
  checkpointing.save(manager, parallel.replicate(state), config, old)
  manager.wait_until_finished()
  manager.close()
  with caplog.at_level('INFO'):
    loaded = checkpointing.load(tmp_path)
  assert loaded.manifest == old
  assert 'command: trained elsewhere' in caplog.text
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert len(warnings) == 1 and f'optax 0.0.1 → {importlib.metadata.version("optax")}' in (
      warnings[0])


def fake_workdir(root: pathlib.Path) -> pathlib.Path:
  """A workdir as a run leaves it: 3 sample grids, losses, digit and evaluation metrics."""
  config = test_config.get_config()
  (root / 'samples').mkdir()
  for step in (5, 10, 15):
    visualize.write_png(root / 'samples' / f'step_{step:07d}.png',
                        np.full((8, 8, 3), step, np.uint8))
  for step in range(1, 13):
    visualize.append_csv(root / 'loss_table.csv', step, {'Loss_G': step / 4, 'Loss_D': 0.5})
    visualize.append_csv(root / 'loss_history.csv', step, {'g_total': step / 4})
  visualize.append_csv(root / 'digit_metrics.csv', 10, {'digit_accuracy_ba': 0.8125})
  (root / 'eval').mkdir()
  (root / 'eval' / 'metrics.json').write_text(json.dumps(
      {'step': 15, 'num_images': {'a': 4}, 'fid_a': 123.456, 'digit_accuracy_ba': 0.90625}))
  (root / 'config.json').write_text(config.to_json_best_effort(indent=2))
  (root / 'manifest.json').write_text(json.dumps(manifest.build(config, ['main.py', 'x'])))
  visualize.plot_loss_curves(visualize.read_csv(root / 'loss_history.csv'),
                             root / 'loss_curves.png', {'losses': ['g_total']})
  return root


def test_page_links_every_grid_newest_first_and_shows_the_logged_metrics(tmp_path):
  workdir = fake_workdir(tmp_path)
  results_page.write(workdir)
  assert not list(workdir.glob('*.partial'))
  page = parse_page(workdir)
  assert page.headings == ['Evaluation', 'Losses', 'Samples, newest first', 'Run', 'Config']
  assert page.images == ['loss_curves.png', 'samples/step_0000015.png',
                         'samples/step_0000010.png', 'samples/step_0000005.png']
  # Metrics rows: (step, source, digit_accuracy_ba, fid_a), the evaluate row last.
  cells = page.cells
  at = cells.index('training')
  assert cells[at - 1:at + 3] == ['10', 'training', '0.8125', '']
  at = cells.index('evaluate')
  assert cells[at - 1:at + 3] == ['15', 'evaluate', '0.9062', '123.5']
  assert '3' in cells and 'main.py x' in cells  # Loss table row of step 12 (Loss_G 3); manifest.


def test_page_of_a_fresh_workdir_says_what_is_missing(tmp_path):
  results_page.write(tmp_path)
  text = (tmp_path / 'index.html').read_text()
  assert 'No evaluation yet' in text and 'No sample grids yet' in text
  assert 'No losses logged yet' in text and 'No manifest' in text
  parse_page(tmp_path)


@pytest.mark.parametrize('bad', ['<script>alert(1)</script>', 'a & b'])
def test_text_from_the_workdir_is_escaped(tmp_path, bad):
  config = test_config.get_config()
  (tmp_path / 'config.json').write_text(json.dumps({'family': bad, 'note': bad}))
  (tmp_path / 'manifest.json').write_text(json.dumps(manifest.build(config, ['x', bad])))
  results_page.write(tmp_path)
  assert parse_page(tmp_path).scripts == 0
  assert bad not in (tmp_path / 'index.html').read_text()
