"""`python -m cyclegan_jax.benchmarks.scaling`: the README's scaling tables in one command.

  python -m cyclegan_jax.benchmarks.scaling --config=configs/default.py --sizes=64,128,256,512 \
      --memory_sizes=256,512,1024 --devices_per_host=1,4,16 --steps=3

Prints three markdown tables and a line (with --json: one JSON record that also holds them):
- sizes: s/step (median of --steps after two warm-up steps), the model's FLOPs, peak resident
  memory and the compiled step's bytes per device, each size timed in a process of its own
  (peak memory is per process); and this host's input pipeline at that crop size with one
  decoding thread per core (synthetic jpgs, `benchmarks.input`), in all and per core;
- compiled memory: the bytes XLA assigns the step per device at each --memory_sizes entry on
  this platform (arguments, outputs, temporaries, code); compiled, never run, so 1024² costs
  one compile, and a size in --sizes none (its timed run compiled the same program);
- devices: per size and --devices_per_host entry, the bytes a step all-reduces and all-gathers
  (the step lowered on that many forced CPU devices, batch --batch_per_device each; on a CPU
  host the timed runs already hold the 1-device rows), and the images/s that host's step
  needs from its input pipeline if each device is as fast as this host's step: devices ×
  batch per device × 2 (an A and a B image per pair) / s per step;
- what each host of a TPU v4-32 slice needs (`pod_need`), from a chip step time that is an
  assumption (a flag, or the model's FLOPs at an assumed chip rate), never a measurement.
Config overrides (--config.model.remat=...) reach every child process. The forced CPU device
counts change nothing on GPU or TPU.
"""

import json
import os
import re
import subprocess
import sys
from typing import Any

from cyclegan_jax import host_memory

# As a command, it starts again with huge pages (as training), before the imports it would repeat.
if __name__ == '__main__':
  host_memory.use_huge_pages()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cyclegan_jax import faults  # noqa: E402
from cyclegan_jax.benchmarks import step as step_benchmark  # noqa: E402
from cyclegan_jax.models import convolution  # noqa: E402

# configs/vangogh2photo_tpu.py on a v4-32: global batch 16 over 4 hosts × 4 chips at 256² crops.
POD = {'name': 'TPU v4-32', 'hosts': 4, 'chips_per_host': 4, 'batch_per_chip': 1, 'size': 256}
V4_PEAK_FLOPS_PER_S = 275e12  # One TPU v4 chip's bfloat16 peak, as Google publishes it.
ASSUMED_UTILIZATION = 0.3  # Of that peak, on this step: an assumption, not a measurement.
_MIB = 2**20


def _child_env(devices: int, cpu_only: bool) -> dict[str, str]:
  """This environment with `devices` forced CPU devices (other XLA flags kept), and with only
  JAX's CPU backend if `cpu_only`."""
  xla_flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '',
                     os.environ.get('XLA_FLAGS', ''))
  env = {**os.environ,
         'XLA_FLAGS': f'{xla_flags} --xla_force_host_platform_device_count={devices}'.strip()}
  return {**env, 'JAX_PLATFORMS': 'cpu'} if cpu_only else env


def _worker(args: list[str], devices: int = 1, cpu_only: bool = False) -> list[dict[str, Any]]:
  """The records `benchmarks.scaling_worker` prints (its last line) for `args`."""
  command = [sys.executable, '-m', 'cyclegan_jax.benchmarks.scaling_worker', *args]
  result = subprocess.run(command, env=_child_env(devices, cpu_only), capture_output=True,
                          text=True)
  if result.returncode:
    raise RuntimeError(f'{" ".join(command)} exited {result.returncode}:\n'
                       f'{result.stderr[-4000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def _progress(message: str) -> None:
  print(f'scaling: {message}', file=sys.stderr, flush=True)


def need_images_per_s(devices: int, batch_per_device: int, s_per_step: float) -> float:
  """Images/s a host must feed to keep `devices` devices busy, each taking `s_per_step` for its
  `batch_per_device` pairs of one A and one B image."""
  return devices * batch_per_device * 2 / s_per_step


def device_rows(size_records: list[dict[str, Any]],
                collective_records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per size and device count: the step's collective bytes, the images/s its host needs at
  this host's s/step for that size, and how much of it this host's input pipeline delivers."""
  by_size = {r['size']: r for r in size_records}
  rows = []
  for r in sorted(collective_records, key=lambda r: (r['size'], r['devices'])):
    timed = by_size[r['size']]
    need = need_images_per_s(r['devices'], r['batch'] // r['devices'],
                             timed['s_per_step_median'])
    rows.append({'size': r['size'], 'devices': r['devices'], 'host_batch': r['batch'],
                 'allreduce_bytes_per_step': r['allreduce_bytes_per_step'],
                 'allgather_bytes_per_step': r['allgather_bytes_per_step'],
                 'need_images_per_s': need,
                 'input_over_need': timed['input_images_per_s'] / need})
  return rows


def pod_need(size_records: list[dict[str, Any]], chip_s_per_step: float | None,
             chip_flops_per_s: float) -> dict[str, Any]:
  """What each host of the POD slice must feed: chips per host × batch per chip × 2 images per
  chip step. The chip's step time is `chip_s_per_step` if given, else the model's FLOPs per
  image pair at POD's size (XLA's count, from the timed run at that size) × batch per chip /
  `chip_flops_per_s`; both are assumptions about the chip. Cores: at this host's rate per core."""
  timed = {r['size']: r for r in size_records}.get(POD['size'])
  basis = 'from --accelerator_s_per_step'
  if chip_s_per_step is None and timed and timed['flops_per_step']:
    pair_flops = timed['flops_per_step'] * timed['devices'] / timed['batch']
    chip_s_per_step = POD['batch_per_chip'] * pair_flops / chip_flops_per_s
    basis = (f'{pair_flops / 1e12:.3g} TFLOP per pair (XLA\'s count for this config at '
             f'{POD["size"]}²) at an assumed {chip_flops_per_s / 1e12:.4g} TFLOP/s per chip')
  elif chip_s_per_step is None:
    basis = f'unknown: add {POD["size"]} to --sizes or pass --accelerator_s_per_step'
  need = (None if chip_s_per_step is None else
          need_images_per_s(POD['chips_per_host'], POD['batch_per_chip'], chip_s_per_step))
  per_core = timed['input_images_per_s'] / timed['input_workers'] if timed else None
  return {**POD, 'chip_s_per_step': chip_s_per_step, 'chip_s_per_step_basis': basis,
          'need_images_per_s_per_host': need, 'input_images_per_s_per_core': per_core,
          'cores_needed_per_host': need / per_core if need and per_core else None}


def _cell(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
  return '—' if value is None else f'{value / scale:.{digits}g}'


def markdown(record: dict[str, Any]) -> str:
  """The record as the README's three tables and the pod line."""
  b, cores = record['batch_per_device'], record['host_cores']
  lines = [f'{record["config"]}, batch {b} per device, {record["platform"]} '
           f'({record["device_kind"]}), {cores} cores for the input pipeline', '',
           f'| size | s/step (median of {record["steps"]}) | GFLOP/device/step | peak RSS MiB '
           f'| compiled MiB/device | input images/s ({cores} threads) | per core |',
           '|---|---|---|---|---|---|---|']
  for r in record['sizes']:
    lines.append(f'| {r["size"]}² | {r["s_per_step_median"]:.4g} | '
                 f'{_cell(r["flops_per_step"], 1e9)} | {r["peak_rss_mb"]:.0f} | '
                 f'{_cell(r["compiled_memory"]["total_bytes"], _MIB)} | '
                 f'{r["input_images_per_s"]:.4g} | {r["input_images_per_s"] / cores:.4g} |')
  lines += ['', 'Compiled step per device (MiB; compiled, not run):', '',
            '| size | arguments | outputs | aliased (donated) | temporaries | code | total |',
            '|---|---|---|---|---|---|---|']
  for r in record['memory']:
    m = r['compiled_memory']
    lines.append(f'| {r["size"]}² | ' + ' | '.join(_cell(m[f'{k}_bytes'], _MIB) for k in (
        'argument', 'output', 'alias', 'temp', 'generated_code', 'total')) + ' |')
  lines += ['', '| size | devices/host | images/host/step | all-reduce MiB/step '
            '| all-gather MiB/step | step needs images/s | input ÷ need |',
            '|---|---|---|---|---|---|---|']
  for r in record['devices']:
    lines.append(f'| {r["size"]}² | {r["devices"]} | {2 * r["host_batch"]} | '
                 f'{_cell(r["allreduce_bytes_per_step"], _MIB)} | '
                 f'{_cell(r["allgather_bytes_per_step"], _MIB)} | '
                 f'{r["need_images_per_s"]:.4g} | {r["input_over_need"]:.3g} |')
  return '\n'.join(lines + ['', _pod_line(record['pod'])])


def _pod_line(pod: dict[str, Any]) -> str:
  slice_ = (f'{pod["name"]} ({pod["hosts"]} hosts × {pod["chips_per_host"]} chips, batch '
            f'{pod["batch_per_chip"]} per chip, {pod["size"]}²)')
  if pod['need_images_per_s_per_host'] is None:
    return f'{slice_}: chip step time {pod["chip_s_per_step_basis"]}.'
  cores = ('' if pod['cores_needed_per_host'] is None else
           f'; at this host\'s {pod["input_images_per_s_per_core"]:.4g} images/s per core, '
           f'{pod["cores_needed_per_host"]:.3g} cores')
  return (f'{slice_}: each host needs {pod["need_images_per_s_per_host"]:.4g} images/s at an '
          f'assumed {pod["chip_s_per_step"]:.3g} s per chip step '
          f'({pod["chip_s_per_step_basis"]}){cores}.')


def _config_args() -> list[str]:
  """--config and its overrides as given, for the child processes."""
  config = flags.FLAGS['config']
  return [config.serialize()] + [flags.FLAGS[f'config.{path}'].serialize()
                                 for path in config_flags.get_override_values(config)]


def _lowered_part(timed: dict[str, Any]) -> dict[str, Any]:
  """What `scaling_worker.lowered_record` would give for a timed record's step (its keys)."""
  return {key: timed[key] for key in (
      'size', 'batch', 'devices', 'platform', 'conv_impl', 'allreduce_bytes_per_step',
      'allgather_bytes_per_step', 'compiled_memory')}


def measure(config, config_path: str, sizes: list[int], memory_sizes: list[int],
            devices_per_host: list[int], steps: int, batch_per_device: int, conv_impl: str,
            chip_s_per_step: float | None, chip_flops_per_s: float) -> dict[str, Any]:
  """The JSON record: every table's rows, each measured in the child process it needs. A
  compiled size or a device count that a timed run already has is taken from it: the step
  compiled from shapes alone is the program that was timed (tests/test_benchmark.py)."""
  config_args = _config_args()
  common = [*config_args, f'--batch_per_device={batch_per_device}', f'--conv_impl={conv_impl}']
  cores = len(os.sched_getaffinity(0))
  size_records = []
  for size in sizes:
    _progress(f'{size}²: timing {steps} steps, then the input pipeline')
    record, = _worker([*common, f'--sizes={size}', f'--steps={steps}'])
    size_records.append({**record, 'input_workers': cores, 'input_images_per_s':
                         step_benchmark.input_images_per_s(config, config_path, size, cores)})
  timed = {r['size']: _lowered_part(r) for r in size_records}
  by_size = dict(timed)
  to_compile = [s for s in memory_sizes if s not in timed]
  if to_compile:
    _progress(f'compiling at {to_compile}')
    by_size.update((r['size'], r) for r in _worker(
        [*common, f'--sizes={",".join(map(str, to_compile))}', '--compile']))
  memory = [by_size[s] for s in memory_sizes]
  collectives = []
  for devices in devices_per_host:
    if all(r['devices'] == devices and r['platform'] == 'cpu' for r in timed.values()):
      collectives += timed.values()  # The timed runs' own lowering: the same program.
      continue
    _progress(f'lowering on {devices} CPU devices')
    collectives += _worker([*common, f'--sizes={",".join(map(str, sizes))}'], devices,
                           cpu_only=True)
  first = size_records[0]
  record = {'config': config_path, 'config_overrides': config_args[1:],
            'platform': first['platform'], 'device_kind': first['device_kind'],
            'batch_per_device': batch_per_device, 'steps': steps, 'host_cores': cores,
            'sizes': size_records, 'memory': memory,
            'devices': device_rows(size_records, collectives),
            'pod': pod_need(size_records, chip_s_per_step, chip_flops_per_s)}
  return {**record, 'markdown': markdown(record)}


def main() -> None:
  """The command line. Its flags are defined here, not at import (the tests import this). Its
  workers inherit the huge pages that the restart above gave it."""
  config_flag = config_flags.DEFINE_config_file('config', None, 'Config file (get_config).')
  sizes = flags.DEFINE_list('sizes', ['64', '128', '256', '512'], 'Crop sizes to time.')
  memory_sizes = flags.DEFINE_list('memory_sizes', ['256', '512', '1024'],
                                   'Crop sizes to compile (not run) for the memory table.')
  devices_per_host = flags.DEFINE_list('devices_per_host', ['1', '4', '16'],
                                       'Device counts per host for the devices table.')
  steps = flags.DEFINE_integer('steps', 3, 'Timed steps per size, after 2 warm-up steps.')
  batch_per_device = flags.DEFINE_integer('batch_per_device', 1, 'Image pairs per device.')
  conv_impl = flags.DEFINE_enum('conv_impl', 'auto', list(convolution.IMPLS),
                                convolution.IMPL_HELP)
  chip_s_per_step = flags.DEFINE_float(
      'accelerator_s_per_step', None, f'A {POD["name"]} chip\'s s/step at batch '
      f'{POD["batch_per_chip"]}, {POD["size"]}² (an assumption); default: the model\'s FLOPs '
      'at --accelerator_flops_per_s.')
  chip_flops_per_s = flags.DEFINE_float(
      'accelerator_flops_per_s', ASSUMED_UTILIZATION * V4_PEAK_FLOPS_PER_S,
      f'Assumed FLOP/s of a chip on this step: default {ASSUMED_UTILIZATION:.0%} of a TPU v4 '
      f'chip\'s {V4_PEAK_FLOPS_PER_S / 1e12:.0f} TFLOP/s bfloat16 peak (not a measurement).')
  as_json = flags.DEFINE_bool('json', False, 'Print one JSON record (with the markdown).')
  flags.mark_flags_as_required(['config'])

  def run(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    faults.quiet_library_logs()
    ints = lambda values: [int(v) for v in values]
    record = measure(config_flag.value, config_flags.get_config_filename(flags.FLAGS['config']),
                     ints(sizes.value), ints(memory_sizes.value), ints(devices_per_host.value),
                     steps.value, batch_per_device.value, conv_impl.value,
                     chip_s_per_step.value, chip_flops_per_s.value)
    print(json.dumps(record) if as_json.value else record['markdown'])

  app.run(run)


if __name__ == '__main__':
  main()
