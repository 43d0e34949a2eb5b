"""What produced a run: the config, the code, the libraries, the machine and the command.

Saved with every checkpoint and shown on the results page, so a checkpoint found months later
says how it was made, and a resume on other library versions or another CPU says what changed.
"""

import datetime
import importlib.metadata
import pathlib
import platform
import shlex
import subprocess
import sys
from typing import Any

from absl import logging
import jax
import ml_collections

LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint')
# The CPU features XLA:CPU compiles vector code for: another set may round differently.
_VECTOR_FEATURES = ('avx', 'amx', 'fma', 'f16c', 'sse', 'neon', 'asimd', 'sve')
_CHECKOUT = pathlib.Path(__file__).resolve().parents[1]


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _git(*args: str) -> str | None:
  try:
    result = subprocess.run(['git', '-C', str(_CHECKOUT), *args], capture_output=True,
                            text=True, timeout=10)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return result.stdout.strip() if result.returncode == 0 else None


def code_version() -> dict[str, Any]:
  """The package version and, when the code is a git checkout, its commit and whether files
  differ from it."""
  code = {'package': _version('cyclegan_jax')}
  if (_CHECKOUT / '.git').exists():
    commit = _git('rev-parse', 'HEAD')
    if commit:
      changed = _git('status', '--porcelain', '--untracked-files=no')
      code.update(commit=commit, modified=bool(changed))
  return code


def host_cpu(cpuinfo: str | None = None) -> dict[str, Any]:
  """The host CPU's model and vector features, from Linux's /proc/cpuinfo text (read when not
  given). XLA:CPU compiles for the features it finds, so the same versions, config and seed
  may round differently, and train differently, on another CPU."""
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path('/proc/cpuinfo').read_text()
    except OSError:
      cpuinfo = ''
  fields = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())  # The first processor's.
  features = (fields.get('flags') or fields.get('Features') or '').split()
  return {'model': fields.get('model name') or platform.processor() or platform.machine(),
          'features': sorted(f for f in features if f.startswith(_VECTOR_FEATURES))}


def command_line(argv: list[str]) -> str:
  """The command as typed: `python -m` for a module run that way (argv[0] is then its path)."""
  program, *args = argv
  for module in ('main', 'export', 'translate', 'convert'):
    if pathlib.Path(program).parts[-2:] == ('cyclegan_jax', f'{module}.py'):
      return shlex.join(['python', '-m', f'cyclegan_jax.{module}', *args])
  return shlex.join(argv)


def build(config: ml_collections.ConfigDict, argv: list[str] | None = None) -> dict[str, Any]:
  """This process's manifest for a run of `config` (JSON-ready)."""
  device = jax.devices()[0]
  return {
      'config': config.to_dict(),
      'seed': config.seed,
      'code': code_version(),
      'libraries': {name: _version(name) for name in LIBRARIES},
      'python': sys.version.split()[0],
      'platform': jax.default_backend(),
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'process_count': jax.process_count(),
      'host_cpu': host_cpu(),
      'command': command_line(sys.argv if argv is None else argv),
      'written': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


def summary(manifest: dict[str, Any]) -> list[tuple[str, str]]:
  """(label, value) rows for people: everything but the config, which is shown on its own."""
  code = manifest['code']
  commit = code.get('commit')
  code_text = code.get('package') or 'unknown'
  if commit:
    code_text += f' (git {commit[:12]}{", with local changes" if code.get("modified") else ""})'
  libraries = ', '.join(f'{k} {v}' for k, v in manifest['libraries'].items() if v)
  rows = [('code', code_text), ('libraries', libraries), ('python', manifest['python']),
          ('devices', f'{manifest["device_count"]} × {manifest["device_kind"]} '
                      f'({manifest["platform"]}), {manifest["process_count"]} process(es)')]
  cpu = manifest.get('host_cpu')  # Manifests written before it was recorded have none.
  if cpu:
    rows.append(('host CPU', f'{cpu["model"]} ({" ".join(cpu["features"]) or "no features"})'))
  return rows + [('seed', str(manifest['seed'])), ('command', manifest['command']),
                 ('written', manifest['written'])]


def describe(manifest: dict[str, Any] | None) -> str:
  """Multi-line text of `summary`, for the log."""
  if manifest is None:
    return 'no manifest (the checkpoint predates them)'
  return '\n'.join(f'  {label}: {value}' for label, value in summary(manifest))


def changes(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
  """What differs between the libraries and code that wrote a checkpoint and this process's,
  and the host CPU where it computes on the CPU (none is named for a manifest older than it)."""
  if saved is None:
    return []
  found = [f'{name} {saved["libraries"].get(name)} → {version}'
           for name, version in current['libraries'].items()
           if saved['libraries'].get(name) != version]
  for key in ('package', 'commit'):
    before, now = saved['code'].get(key), current['code'].get(key)
    if before and now and before != now:
      found.append(f'cyclegan_jax {key} {before[:12]} → {now[:12]}')
  before, now = saved.get('host_cpu'), current.get('host_cpu')
  if current['platform'] == 'cpu' and before and now and before != now:
    if before['model'] != now['model']:
      found.append(f'host CPU {before["model"]} → {now["model"]}')
    for sign, difference in (('-', set(before['features']) - set(now['features'])),
                             ('+', set(now['features']) - set(before['features']))):
      if difference:
        found.append(f'CPU features {" ".join(sign + f for f in sorted(difference))}')
  return found


def warn_of_changes(saved: dict[str, Any] | None, current: dict[str, Any], what: str) -> None:
  """One warning naming what changed since `what` was written, if anything did."""
  found = changes(saved, current)
  if found:
    logging.warning('%s was written with other versions or on another CPU: %s. Results may '
                    'differ slightly from a run on the original ones.', what, '; '.join(found))
