"""export.py: a workdir's generator as a TensorFlow SavedModel that a fresh process, without
JAX, loads and runs as translate does, at any batch and size; DCGAN's G from latents; errors
in one line."""

import dataclasses
import importlib
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from cyclegan_jax import checkpointing, convert, export, translate, visualize
from cyclegan_jax.families import base

ROOT = pathlib.Path(__file__).resolve().parents[1]
# case → (config under configs/, direction).
CASES = {'cyclegan_AtoB': ('test', 'AtoB'), 'cyclegan_BtoA': ('test', 'BtoA'),
         'cut_AtoB': ('cut_test', 'AtoB'), 'dcgan_sample': ('dcgan_test', 'sample')}
# model.init_gain per config: the configs' own give near-grey images at init, where a
# difference between the exported model and translate would hide; these span the grey levels.
INIT_GAINS = {'test': 0.05, 'cut_test': 0.7, 'dcgan_test': 0.1}
SIZES = ((1, 8, 12), (3, 36, 20))  # (batch, height, width): multiples of 4, from 8.

# Run in a fresh process where JAX cannot be imported: loads each SavedModel and calls it, and
# its serving signature, on every input of its case.
LOAD_AND_RUN = """
import sys
sys.modules['jax'] = None  # TensorFlow imports JAX if it can; the SavedModel must not need it.
import numpy as np
import tensorflow as tf
root = sys.argv[1]
inputs, outputs = np.load(f'{root}/inputs.npz'), {}
for key in inputs:
  model = tf.saved_model.load(f'{root}/models/{key.split(".")[0]}')
  outputs[key] = model(inputs[key]).numpy()
  serving = model.signatures['serving_default']
  (name,) = serving.structured_input_signature[1]  # 'images' or 'latents'.
  outputs[key + '.serving'] = serving(**{name: tf.constant(inputs[key])})['images'].numpy()
try:
  tf.saved_model.load(f'{root}/models/cyclegan_AtoB')(np.zeros((1, 10, 12, 3), np.uint8))
except tf.errors.InvalidArgumentError as e:
  outputs['bad_size'] = np.array(e.message)
np.savez(f'{root}/outputs.npz', **outputs)
"""


def write_workdir(path: pathlib.Path, config_name: str) -> str:
  """A step-0 workdir as `convert --pth` writes one (config.json and a checkpoint)."""
  config = importlib.import_module(f'configs.{config_name}').get_config()
  config.model.init_gain = INIT_GAINS[config_name]
  convert.write_workdir(config, str(path), {})
  return str(path)


def case_inputs(case: str, nz: int) -> list[np.ndarray]:
  rng = np.random.default_rng(0)
  if case.startswith('dcgan'):
    return [rng.standard_normal((b, nz)).astype(np.float32) for b, _, _ in SIZES]
  return [rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8) for b, h, w in SIZES]


@dataclasses.dataclass
class Case:
  workdir: str
  loaded: checkpointing.Loaded
  inputs: list[np.ndarray]  # One batch per entry of SIZES.
  outputs: list[np.ndarray]  # The SavedModel's, called.
  serving: list[np.ndarray]  # Its serving_default signature's.


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict[str, tuple[str, checkpointing.Loaded]]:
  """Config name of CASES → (a step-0 workdir, its checkpoint loaded)."""
  root = tmp_path_factory.mktemp('checkpoints')
  workdirs = {name: write_workdir(root / name, name) for name in {n for n, _ in CASES.values()}}
  return {name: (workdir, checkpointing.load(workdir)) for name, workdir in workdirs.items()}


@pytest.fixture(scope='module')
def exported(tmp_path_factory, checkpoints) -> dict[str, Case]:
  """Every case exported (the first through `export.export`, the command's function; the others
  from the same loaded checkpoints), then run in one fresh process."""
  root = tmp_path_factory.mktemp('export')
  workdirs = {name: workdir for name, (workdir, _) in checkpoints.items()}
  loaded = {name: checkpoint for name, (_, checkpoint) in checkpoints.items()}
  inputs = {}
  for case, (name, direction) in CASES.items():
    out = root / 'models' / case
    if case == 'cyclegan_AtoB':
      summary = export.export(workdirs[name], direction, str(out))
      assert f'{direction} generator (step 0) to {out}: ' in summary
    else:
      export.save(export.servable(loaded[name], direction, workdirs[name]), out)
    inputs.update({f'{case}.{i}': x for i, x in
                   enumerate(case_inputs(case, loaded[name].config.model.nz))})
  np.savez(root / 'inputs.npz', **inputs)
  env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  result = subprocess.run([sys.executable, '-c', LOAD_AND_RUN, str(root)], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  outputs = dict(np.load(root / 'outputs.npz'))
  bad_size = str(outputs.pop('bad_size', 'no error'))  # The 10×12 call.
  assert 'image height and width must be multiples of 4, at least 8; got] [10] [12]' in bad_size
  keys = lambda case, suffix='': [f'{case}.{i}{suffix}' for i in range(len(SIZES))]
  return {case: Case(workdirs[name], loaded[name], [inputs[k] for k in keys(case)],
                     [outputs[k] for k in keys(case)], [outputs[k] for k in keys(case, '.serving')])
          for case, (name, _) in CASES.items()}


def assert_close(exported_images: np.ndarray, expected: np.ndarray) -> None:
  """Equal to a grey level: XLA's convs against translate's CPU forms, float rounding apart."""
  assert exported_images.dtype == np.uint8 and exported_images.shape == expected.shape
  diff = np.abs(exported_images.astype(int) - expected.astype(int))
  assert diff.max() <= 1, f'{np.count_nonzero(diff)} values differ, by up to {diff.max()}'
  assert np.ptp(exported_images) > 150  # Images that span the grey levels.


@pytest.mark.slow  # Three SavedModels exported (a jax2tf conversion each).
@pytest.mark.parametrize('case', ['cyclegan_AtoB', 'cyclegan_BtoA', 'cut_AtoB'])
def test_saved_model_translates_like_translate_at_any_batch_and_size(exported, case):
  c = exported[case]
  translator = translate.translator(c.loaded, CASES[case][1])
  for images, out, served in zip(c.inputs, c.outputs, c.serving):
    expected = np.stack([translate.translate_image(translator, image) for image in images])
    assert_close(out, expected)
    np.testing.assert_array_equal(served, out)


@pytest.mark.slow  # The SavedModels of test_saved_model_translates_like_translate_...
def test_dcgan_saved_model_draws_what_its_samples_show(exported):
  """G in train mode, as dcgan.generate_samples draws the sample grids."""
  c = exported['dcgan_sample']
  g = c.loaded.models.generators['g']
  for z, out, served in zip(c.inputs, c.outputs, c.serving):
    expected = visualize.to_uint8(base.apply(g, c.loaded.params['g'], c.loaded.batch_stats['g'],
                                             z, True))
    assert out.shape == (len(z), 32, 32, 3)
    assert_close(out, expected)
    np.testing.assert_array_equal(served, out)


def one_line_error(tmp_path, workdir, direction, out='out') -> str:
  with pytest.raises(SystemExit) as exit_info:
    export.run_command(str(workdir), direction, str(tmp_path / out))
  message = str(exit_info.value.code)
  assert message.startswith('error: ') and '\n' not in message, message
  return message


def test_bad_workdir_direction_or_folder_is_one_line(checkpoints, tmp_path):
  workdir, _ = checkpoints['cut_test']
  with pytest.raises(SystemExit) as exit_info:  # The command line's own entry point.
    export.main([f'--workdir={tmp_path / "nothing"}', f'--out={tmp_path / "out"}'])
  assert exit_info.value.code == f'error: no checkpoint in {tmp_path / "nothing" / "checkpoints"}' \
      ': train first, or make one from a reference .pth with python -m cyclegan_jax.convert'
  assert "unknown direction 'AB'" in one_line_error(tmp_path, workdir, 'AB')
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'notes.txt').write_text('mine')
  assert 'is not empty; choose a new --out' in one_line_error(tmp_path, workdir, 'AtoB', 'full')
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('case, wrong, offered', [('cut_AtoB', 'BtoA', 'AtoB'),
                                                  ('cyclegan_AtoB', 'sample', 'AtoB, BtoA'),
                                                  ('dcgan_sample', 'AtoB', 'sample')])
def test_each_family_names_what_it_exports(checkpoints, case, wrong, offered):
  workdir, loaded = checkpoints[CASES[case][0]]
  with pytest.raises(ValueError) as error:
    export.servable(loaded, wrong, workdir)
  family = case.split('_')[0]
  assert str(error.value) == (f'{workdir} holds a {family} model, which exports {offered}, '
                              f'not {wrong}.')


@pytest.mark.slow
def test_main_mode_export_writes_a_saved_model(checkpoints, tmp_path, cache):
  workdir, _ = checkpoints['test']
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': cache, 'JAX_PLATFORMS': 'cpu',
         'CUDA_VISIBLE_DEVICES': '', 'TF_CPP_MIN_LOG_LEVEL': '2', 'XLA_FLAGS': ''}
  result = subprocess.run(
      [sys.executable, '-m', 'cyclegan_jax.main', '--mode=export', f'--workdir={workdir}',
       '--direction=BtoA', f'--out={tmp_path / "model"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / 'model' / 'saved_model.pb').exists()
  for chatter in ('Assets written', 'Writing fingerprint', 'Restoring checkpoint'):
    assert chatter not in result.stderr  # TensorFlow's and orbax's INFO lines.
  assert 'maps uint8 [b, H, W, 3] → uint8 images of the same size; H and W multiples of 4, ' \
         'at least 8' in result.stderr
  assert 'Export (BtoA: load, then write): 1/2 phases (50%)' in result.stderr  # Progress lines.
  assert re.search(r'Export \(BtoA: load, then write\): 2/2 phases \(100%\), .* took \d+s',
                   result.stderr)


@pytest.mark.slow
def test_reference_pth_exports_like_torch(tmp_path):
  """A reference generator's .pth, converted and exported, against the PyTorch model itself."""
  torch = pytest.importorskip('torch')
  import tensorflow as tf
  from cyclegan_jax.benchmarks.torch_reference import TorchResnetGenerator
  torch.manual_seed(0)
  model = TorchResnetGenerator(3, 3, 8, 2).eval()
  torch.save(model.state_dict(), tmp_path / 'latest_net_G.pth')
  convert.main([f'--pth={tmp_path / "latest_net_G.pth"}', '--generator=resnet_2blocks',
                '--direction=BtoA', f'--out={tmp_path / "workdir"}', '--config=configs/test.py'])
  export.export(str(tmp_path / 'workdir'), 'BtoA', str(tmp_path / 'model'))
  images = np.random.default_rng(1).integers(0, 256, (2, 16, 28, 3), dtype=np.uint8)
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    expected = visualize.to_uint8(model(x).numpy().transpose(0, 2, 3, 1))
  assert_close(tf.saved_model.load(str(tmp_path / 'model'))(images).numpy(), expected)
