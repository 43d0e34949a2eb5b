"""Pretrained weights files: read from the archives of the pip packages that ship them
(package_files.py; never fetched at run time) or from a given path, without torch.

One reader serves every torch file: `read_torch` loads what `torch.save` writes (the reference
CycleGAN .pth state dicts) and TorchScript archives (the FID Inception network), with zipfile,
pickle and numpy. Two .pth layouts exist. Since torch 1.6 a file is a zip of `<name>/data.pkl`
plus one raw file per storage (`<name>/data/<key>`); TorchScript archives share that layout.
Older files (like the published CycleGAN models) are a stream of pickles: magic number,
protocol, system info, the object, the storage keys, then each storage as an int64 element count
and its raw bytes. In both, the object pickle refers to storages by persistent id and rebuilds
each tensor with `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`. The
unpicklers here resolve only those names (and, for TorchScript, its module classes as plain
attribute holders) and refuse anything else, so a file cannot run code.
"""

import collections
from collections.abc import Iterator
import contextlib
import dataclasses
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import jax
import ml_dtypes
import numpy as np

from cyclegan_jax import package_files

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class PthFormatError(ValueError):
  """The file is not a torch file this reader understands."""


class ScriptObject:
  """A TorchScript module's attributes (its parameters as numpy arrays, submodules, flags)."""


Source = Path | BinaryIO  # A weights file on disk, or one open for reading (from an archive).


def find(path: str | Source | None, file: package_files.PackageFile, what: str) -> Source:
  """`path` if given (an open file is used as it is), else `file` read from its package's
  archive."""
  if isinstance(path, io.IOBase):
    return path
  if path:
    if not Path(path).is_file():
      raise FileNotFoundError(f'{what}: no file at {path}.')
    return Path(path)
  try:
    return package_files.open_member(file)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{what}: {e} Or pass the file\'s path.') from e


def identity(source: Source) -> str:
  """Where the weights come from and their size: the key of what is cached from them."""
  if isinstance(source, Path):
    return f'{source.resolve()}|{source.stat().st_size}'
  return f'{source.name}|{source.seek(0, io.SEEK_END)}'


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  key: str
  dtype: np.dtype
  offset: int = 0  # Elements into the root storage (legacy storage views).


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  storage: _StorageRef
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:
  del requires_grad, backward_hooks, metadata
  return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch.jit._pickle', 'build_intlist'): list,
    ('torch.jit._pickle', 'build_doublelist'): list,
    ('torch.jit._pickle', 'build_boollist'): list,
    ('torch.jit._pickle', 'build_tensorlist'): list,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, file: BinaryIO, path: str, script: bool):
    super().__init__(file)
    self.path, self.script = path, script
    self.dtypes: dict[str, np.dtype] = {}  # Storage key → element type, as they are met.

  def find_class(self, module: str, name: str) -> Any:
    if module == 'torch' and name in _STORAGE_DTYPES:
      return np.dtype(_STORAGE_DTYPES[name])
    if (module, name) in _GLOBALS:
      return _GLOBALS[module, name]
    if self.script and module.startswith('__torch__.'):
      return ScriptObject
    hint = (' (the file holds a pickled module: save its state_dict() instead)'
            if module.startswith('torch.nn') or '.' in module and not module.startswith('torch')
            else '')
    raise PthFormatError(f'{self.path}: unsupported object {module}.{name} in the pickle{hint}')

  def persistent_load(self, pid) -> _StorageRef:
    kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
    if kind != 'storage':
      raise PthFormatError(f'{self.path}: unsupported persistent id {kind!r}')
    dtype, key = pid[1], str(pid[2])
    if not isinstance(dtype, np.dtype):
      raise PthFormatError(f'{self.path}: unsupported storage type {dtype!r}')
    self.dtypes[key] = dtype
    view = pid[5] if len(pid) > 5 else None  # Legacy: (view_key, offset, size) or None.
    return _StorageRef(key, dtype, int(view[1]) if view else 0)


def _materialize(obj: Any, storages: dict[str, np.ndarray], path: str) -> Any:
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v, storages, path)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v, storages, path) for v in obj)
  if isinstance(obj, ScriptObject):
    obj.__dict__.update(_materialize(vars(obj), storages, path))
    return obj
  if not isinstance(obj, _TensorRef):
    return obj
  flat = storages[obj.storage.key].view(obj.storage.dtype)
  start = obj.storage.offset + obj.offset
  if obj.size and all(obj.size):
    last = start + sum((n - 1) * s for n, s in zip(obj.size, obj.stride))
    if last >= flat.size:
      raise PthFormatError(f'{path}: a tensor of size {obj.size} runs past its storage')
  itemsize = flat.dtype.itemsize
  return np.lib.stride_tricks.as_strided(
      flat[start:], obj.size, tuple(s * itemsize for s in obj.stride), writeable=False).copy()


def _load_zip(file: BinaryIO, path: str, script: bool) -> Any:
  with zipfile.ZipFile(file) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('data.pkl')]
    if len(pickles) != 1:
      kind = 'not a TorchScript archive' if script else 'not a torch.save zip'
      raise PthFormatError(f'{path}: {kind}: expected one data.pkl, found {len(pickles)}')
    prefix = pickles[0][:-len('data.pkl')]
    if (f'{prefix}byteorder' in archive.namelist()
        and archive.read(f'{prefix}byteorder').decode().strip() != 'little'):
      raise PthFormatError(f'{path}: big-endian files are not supported')
    with archive.open(pickles[0]) as f:
      unpickler = _Unpickler(f, path, script)
      obj = unpickler.load()
    storages = {key: np.frombuffer(archive.read(f'{prefix}data/{key}'), np.uint8)
                for key in unpickler.dtypes}
  return _materialize(obj, storages, path)


def _load_legacy(f: BinaryIO, path: str) -> Any:
  try:
    magic = pickle.load(f)
  except Exception as e:
    raise PthFormatError(f'{path}: neither a zip nor a legacy torch.save file') from e
  if magic != _LEGACY_MAGIC:
    raise PthFormatError(f'{path}: neither a zip nor a legacy torch.save file')
  pickle.load(f)  # Protocol version.
  sys_info = pickle.load(f)
  if not sys_info.get('little_endian', True):
    raise PthFormatError(f'{path}: big-endian legacy files are not supported')
  unpickler = _Unpickler(f, path, script=False)
  obj = unpickler.load()
  keys = pickle.load(f)
  storages = {}
  for key in map(str, keys):
    if key not in unpickler.dtypes:
      raise PthFormatError(f'{path}: storage {key} is listed but never referenced')
    numel = int(np.frombuffer(f.read(8), '<i8')[0])
    storages[key] = np.frombuffer(f.read(numel * unpickler.dtypes[key].itemsize), np.uint8)
  return _materialize(obj, storages, path)


@contextlib.contextmanager
def _opened(source: str | Source) -> Iterator[tuple[BinaryIO, str]]:
  """(file, name for messages) of a path, opened here, or of an open file, rewound."""
  if isinstance(source, io.IOBase):
    source.seek(0)
    yield source, str(getattr(source, 'name', 'the weights file'))
    return
  path = Path(source)
  if not path.is_file():
    raise FileNotFoundError(f'no such file: {path}')
  with open(path, 'rb') as f:
    yield f, str(path)


def read_torch(source: str | Source, script: bool = False) -> Any:
  """The object in a `torch.save` file (`script`: a TorchScript archive, whose modules come back
  as `ScriptObject`s), with every tensor as a numpy array (a copy)."""
  with _opened(source) as (f, path):
    if zipfile.is_zipfile(f):
      return _load_zip(f, path, script)
    if script:
      raise PthFormatError(f'{path}: not a TorchScript archive (not a zip)')
    f.seek(0)
    return _load_legacy(f, path)


class _ArrayUnpickler(pickle.Unpickler):
  """Plain pickles of numpy arrays in dicts: numpy's own reconstructors only."""

  def find_class(self, module: str, name: str) -> Any:
    if module.split('.')[0] == 'numpy' and name in ('_reconstruct', 'ndarray', 'dtype',
                                                    '_frombuffer', 'scalar'):
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'unexpected {module}.{name} in a weights file.')


def read_array_pickle(source: str | Source) -> dict[str, Any]:
  with _opened(source) as (f, _):
    return _ArrayUnpickler(f).load()


def check_params(expected: Any, got: Any, source: str) -> None:
  """Names every parameter that is missing, extra or of another shape."""
  shape = lambda tree: {jax.tree_util.keystr(p): tuple(np.shape(x))
                        for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  want, have = shape(expected), shape(got)
  problems = [f'{k}: missing' for k in want if k not in have]
  problems += [f'{k}: unexpected' for k in have if k not in want]
  problems += [f'{k}: {have[k]}, expected {want[k]}' for k in want
               if k in have and have[k] != want[k]]
  if problems:
    raise ValueError(f'{source} does not hold the expected network ({len(problems)} problems), '
                     'e.g.\n  ' + '\n  '.join(problems[:8]))
