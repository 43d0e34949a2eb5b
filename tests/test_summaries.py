"""summaries.EventWriter: TensorBoard reads back exactly what was written, as tf.summary's v2
ops would store it, and a training process never imports TensorFlow for it."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from cyclegan_jax import summaries


def read(logdir):
  acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={'tensors': 0})
  acc.Reload()
  return acc


def test_scalars_read_back_as_float32_tensors_of_the_scalars_plugin(tmp_path):
  writer = summaries.EventWriter(tmp_path)
  writer.write_scalars(3, {'loss': 0.25, 'rate': np.float64(1.5)})
  writer.write_scalars(7, {'loss': -2.0})

  acc = read(tmp_path)  # Before close: each write is on disk when it returns.
  assert sorted(acc.Tags()['tensors']) == ['loss', 'rate']
  loss = acc.Tensors('loss')
  assert [e.step for e in loss] == [3, 7]
  assert [tensor_util.make_ndarray(e.tensor_proto).item() for e in loss] == [0.25, -2.0]
  assert tensor_util.make_ndarray(loss[0].tensor_proto).dtype == np.float32
  assert acc.SummaryMetadata('loss').plugin_data.plugin_name == 'scalars'
  assert tensor_util.make_ndarray(acc.Tensors('rate')[0].tensor_proto).item() == 1.5
  writer.close()


def test_images_read_back_as_width_height_and_lossless_pngs(tmp_path):
  rng = np.random.default_rng(0)
  grid = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (4, 6, 1), dtype=np.uint8)
  writer = summaries.EventWriter(tmp_path)
  writer.write_images(2, {'samples': grid, 'grey': grey})
  writer.close()

  acc = read(tmp_path)
  assert acc.SummaryMetadata('samples').plugin_data.plugin_name == 'images'
  (event,) = acc.Tensors('samples')
  assert event.step == 2
  width, height, *pngs = tensor_util.make_ndarray(event.tensor_proto)
  assert (int(width), int(height)) == (7, 5)
  assert [np.asarray(Image.open(io.BytesIO(png))).tolist() for png in pngs] == grid.tolist()
  width, height, png = tensor_util.make_ndarray(acc.Tensors('grey')[0].tensor_proto)
  assert (int(width), int(height)) == (6, 4)
  assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), grey[..., 0])


def test_hparams_reach_the_hparams_plugin(tmp_path):
  writer = summaries.EventWriter(tmp_path)
  writer.write_hparams({'optim.lr': '0.0002', 'seed': '0'})
  writer.close()

  acc = read(tmp_path)
  (tag,) = acc.Tags()['tensors']
  assert acc.SummaryMetadata(tag).plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME
  start = hparams_metadata.parse_session_start_info_plugin_data(
      acc.SummaryMetadata(tag).plugin_data.content)
  assert {k: v.string_value for k, v in start.hparams.items()} == {'optim.lr': '0.0002',
                                                                    'seed': '0'}


@pytest.mark.parametrize('images, error', [
    (np.zeros((2, 5, 7, 3), np.float32), 'got float32 [2, 5, 7, 3]'),
    (np.zeros((5, 7, 2), np.uint8), 'got uint8 [5, 7, 2]'),
    (np.zeros((5, 7), np.uint8), 'got uint8 [5, 7]'),
])
def test_images_other_than_uint8_with_1_3_or_4_channels_are_refused_by_name(
    tmp_path, images, error):
  writer = summaries.EventWriter(tmp_path)
  with pytest.raises(ValueError, match=r'images must be uint8 .*' + error.replace('[', r'\[')):
    writer.write_images(0, {'x': images})


def test_a_writer_without_a_logdir_writes_nothing(tmp_path):
  writer = summaries.EventWriter(None)
  writer.write_scalars(1, {'loss': 1.0})
  writer.write_hparams({'seed': '0'})
  writer.flush()
  writer.close()
  assert not list(tmp_path.iterdir())


def test_two_writers_of_one_process_in_one_directory_keep_separate_files(tmp_path):
  first, second = summaries.EventWriter(tmp_path), summaries.EventWriter(tmp_path)
  first.write_scalars(1, {'a': 1.0})
  second.write_scalars(1, {'b': 2.0})
  first.close()
  second.close()
  assert len(list(tmp_path.glob('events.out.tfevents.*.v2'))) == 2
  assert sorted(read(tmp_path).Tags()['tensors']) == ['a', 'b']


def test_training_and_evaluation_write_events_without_importing_tensorflow(tmp_path):
  """TensorFlow costs a process about 2.4 s and 540 MB at import: the train and evaluate
  drivers and their event files must not need it."""
  code = ('import sys\n'
          'from cyclegan_jax import evaluation, main, summaries, train\n'
          f'writer = summaries.EventWriter({str(tmp_path)!r})\n'
          'writer.write_hparams({"seed": "0"})\n'
          'writer.write_scalars(1, {"loss": 1.0})\n'
          'writer.close()\n'
          'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'
  assert list(tmp_path.glob('events.out.tfevents.*'))
