"""TensorBoard event files written without TensorFlow: scalars, images and hyperparameters.

clu's metric writers import TensorFlow to write these files, which cost every training or
evaluation process about 2.4 s and 540 MB of memory at start (README, Tests), for nothing else.
TensorBoard's own protos and record framing write the same events in pure Python: tensor
summaries of the "scalars" and "images" plugins, as tf.summary's v2 ops write them, and the
hparams plugin's session summary. The file goes through epath, as checkpoints do, so a gs://
workdir works too.
"""

import itertools
import os
import socket
import time
from collections.abc import Mapping

import numpy as np
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from cyclegan_jax import visualize

_FILE_NUMBERS = itertools.count()  # Two writers of one process in one second: two files.


def _image_strings(images: np.ndarray) -> list[bytes]:
  """tf.summary.image's tensor: width and height as decimal strings, then one PNG per image."""
  given = np.asarray(images)
  images = given[None] if given.ndim == 3 else given
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.dtype != np.uint8:
    raise ValueError(f'images must be uint8 [n, height, width, 1, 3 or 4 channels] or one '
                     f'[height, width, channels]; got {given.dtype} {list(given.shape)}')
  return [str(images.shape[2]).encode(), str(images.shape[1]).encode(),
          *(visualize.png_bytes(image) for image in images)]


class EventWriter:
  """One TensorBoard event file in `logdir`; with logdir None (processes other than the
  first), every write does nothing."""

  def __init__(self, logdir: epath.PathLike | None):
    self._records = None
    if logdir is None:
      return
    logdir = epath.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.'
            f'{next(_FILE_NUMBERS)}.v2')
    self._records = record_writer.RecordWriter((logdir / name).open('wb'))
    self._write(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _write(self, event: event_pb2.Event) -> None:
    """Flushed at once, as clu's TensorFlow writer did at each logged step of a dozen scalars
    (its queue holds 10 events): TensorBoard shows a step once it is logged, a kill loses none."""
    if self._records is not None:
      self._records.write(event.SerializeToString())
      self._records.flush()

  def _write_values(self, step: int, values: list[summary_pb2.Summary.Value]) -> None:
    self._write(event_pb2.Event(wall_time=time.time(), step=step,
                                summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Each value as a float32 scalar tensor, as tf.summary.scalar stores it."""
    metadata = scalar_metadata.create_summary_metadata(display_name='', description='')
    self._write_values(step, [
        summary_pb2.Summary.Value(tag=tag, metadata=metadata,
                                  tensor=tensor_util.make_tensor_proto(np.float32(value)))
        for tag, value in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Each entry uint8 [n, height, width, channels] (or one image), every image of it kept."""
    metadata = image_metadata.create_summary_metadata(display_name=None, description=None)
    self._write_values(step, [
        summary_pb2.Summary.Value(tag=tag, metadata=metadata,
                                  tensor=tensor_util.make_tensor_proto(_image_strings(value)))
        for tag, value in images.items()])

  def write_hparams(self, hparams: Mapping[str, str | bool | int | float]) -> None:
    """The run's hyperparameters, for TensorBoard's HPARAMS tab."""
    summary = hparams_summary.hparams_pb(dict(hparams))
    self._write(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))

  def flush(self) -> None:
    if self._records is not None:
      self._records.flush()

  def close(self) -> None:
    if self._records is not None:
      self._records.close()
      self._records = None
