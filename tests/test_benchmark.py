"""The benchmarks' records: every key the speed issue names, with values that hang together.

No timing is asserted (times depend on the machine); only what the records must contain and
how their numbers relate. The PyTorch reference's step (torch_step) is also checked to train:
one iteration moves every network.
"""

import json
import math
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import test as test_config
from cyclegan_jax import families, parallel
from cyclegan_jax.benchmarks import scaling, scaling_worker, step

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_record_has_the_issue_keys_and_consistent_numbers():
  config = test_config.get_config()
  config.model.unroll_blocks = False  # As the default: the FLOPs of every turn of the loop.
  steps = 2
  record = step.benchmark(config, steps, config_path='configs/test.py', input_pipeline=False)

  for key in ('init_s', 'restore_s', 's_per_step_median', 's_per_step_min', 'flops_per_step',
              'achieved_flops_per_s', 'dot_peak_flops_per_s', 'peak_ratio', 'compile_s',
              'compile_warm_s', 'compile_warm_traced_s', 'peak_rss_mb', 'image_pairs_per_s',
              'jax_version', 'jaxlib_version', 'device_kind', 'allreduce_bytes_per_step',
              'allgather_bytes_per_step'):
    assert record[key] is not None, key
  assert record['conv_impl'] == 'winograd' and record['platform'] == 'cpu'
  assert record['devices'] == 8 and record['batch'] == config.batch_size
  assert record['steps'] == steps and record['input_images_per_s'] is None
  assert 0 < record['s_per_step_min'] <= record['s_per_step_median']
  assert record['init_s'] > 0 and record['restore_s'] > 0
  median = record['s_per_step_median']  # Rounded to 10 µs in the record.
  assert record['achieved_flops_per_s'] == pytest.approx(record['flops_per_step'] / median,
                                                         rel=1e-3)
  assert record['image_pairs_per_s'] == pytest.approx(config.batch_size / median, rel=1e-3)
  # The model's FLOPs are XLA's count for its own convs; the cpu impl executes a little more
  # (the zero row and column it pads, the zero taps of space-to-depth kernels).
  assert record['flops_per_step'] <= record['executed_flops_per_step']
  assert 0 < record['peak_ratio'] < 2
  memory = record['compiled_memory']
  # Compiled from shapes alone (the scaling command's memory table and device rows), the step
  # is the program that was timed.
  lowered = scaling_worker.lowered_record(config, compile_step=True)
  assert lowered['compiled_memory'] == memory
  for key in ('allreduce_bytes_per_step', 'allgather_bytes_per_step', 'batch', 'devices'):
    assert lowered[key] == record[key], key
  assert memory['total_bytes'] == (memory['argument_bytes'] + memory['output_bytes']
                                   - memory['alias_bytes'] + memory['temp_bytes']
                                   + memory['generated_code_bytes']) > 0


@pytest.mark.slow  # Three whole-step lowerings.
def test_model_flops_do_not_depend_on_remat_and_count_every_block():
  """remat only recomputes; its rolled loop's body, which XLA counts once, must not hide the
  other blocks' FLOPs (at 512² the peak_ratio once read 0.21 for this)."""
  counts = {}
  for remat, blocks in (('none', 2), ('blocks', 2), ('none', 4)):
    config = test_config.get_config()
    config.model.generator = f'resnet_{blocks}blocks'
    config.model.remat = remat
    family = families.get(config)
    state = parallel.replicate(family.create_train_state(
        config, family.create_models(config, 1), jax.random.key(0)))
    images = np.zeros((config.batch_size, 32, 32, 3), np.float32)
    batch = parallel.device_put_sharded(parallel.shard_batch({'a': images, 'b': images}))
    counts[remat, blocks] = step.step_flops(config, family, state, batch, 'xla')
  assert counts['blocks', 2] == counts['none', 2]
  assert counts['none', 4] > 1.1 * counts['none', 2]


@pytest.mark.slow
def test_torch_reference_step_updates_all_four_networks():
  torch = pytest.importorskip('torch')
  from cyclegan_jax.benchmarks import torch_step
  models, step = torch_step.make_step(32, seed=0)
  assert sorted(models) == ['D_A', 'D_B', 'G_A', 'G_B']
  before = {name: [p.detach().clone() for p in model.parameters()]
            for name, model in models.items()}

  losses = step()

  assert sorted(losses) == ['D_A', 'D_B', 'G']
  assert all(math.isfinite(loss) and loss > 0 for loss in losses.values()), losses
  for name, model in models.items():
    # Every conv kernel gets a gradient: the generators' from the G update, the
    # discriminators' from the D update.
    kernels = [(old, new) for old, new in zip(before[name], model.parameters()) if new.dim() > 1]
    assert kernels and all(not torch.equal(old, new) for old, new in kernels), name


@pytest.mark.slow
def test_torch_reference_command_prints_the_record():
  torch = pytest.importorskip('torch')
  result = subprocess.run(
      [sys.executable, '-m', 'cyclegan_jax.benchmarks.torch_step', '--size=32', '--steps=1',
       '--warmup=0', '--threads=1', '--json'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  record = json.loads(result.stdout)

  assert (record['size'], record['steps'], record['warmup'], record['batch']) == (32, 1, 0, 1)
  assert 0 < record['s_per_step_min'] <= record['s_per_step_median']
  assert record['torch_version'] == torch.__version__ and record['threads'] == 1
  assert record['peak_rss_bytes'] > 100 * 2**20  # Four networks and Adam's moments at least.
  assert 'step 1/1: ' in result.stderr  # The progress line.


def _timed(size, s_per_step, flops_per_step=None):
  """A size row as `scaling.measure` keeps it: the step record plus the input rate."""
  return {'size': size, 's_per_step_median': s_per_step, 'flops_per_step': flops_per_step,
          'devices': 1, 'batch': 1, 'input_images_per_s': 300.0, 'input_workers': 2}


def test_scaling_needs_follow_from_the_step_time():
  rows = scaling.device_rows(
      [_timed(64, 0.5)],
      [{'size': 64, 'devices': d, 'batch': 2 * d, 'allreduce_bytes_per_step': 100,
        'allgather_bytes_per_step': 10 * d} for d in (4, 1)])
  # Each device feeds 2 pairs (4 images) per 0.5 s step.
  assert [(r['devices'], r['need_images_per_s']) for r in rows] == [(1, 8.0), (4, 32.0)]
  assert rows[1]['input_over_need'] == 300.0 / 32.0

  given = scaling.pod_need([_timed(256, 9.0, 2e12)], chip_s_per_step=0.1, chip_flops_per_s=1e14)
  assert given['need_images_per_s_per_host'] == pytest.approx(4 * 1 * 2 / 0.1)
  assert given['cores_needed_per_host'] == pytest.approx(80 / 150)
  derived = scaling.pod_need([_timed(256, 9.0, 2e12)], chip_s_per_step=None,
                             chip_flops_per_s=1e14)
  assert derived['chip_s_per_step'] == pytest.approx(0.02)  # 2 TFLOP at 100 TFLOP/s.
  assert 'assumed' in derived['chip_s_per_step_basis']
  unknown = scaling.pod_need([_timed(64, 0.5)], chip_s_per_step=None, chip_flops_per_s=1e14)
  assert unknown['need_images_per_s_per_host'] is None


@pytest.mark.slow
def test_scaling_command_reports_every_table():
  # n_layers_d 2: the 70×70 PatchGAN has no output at 16²; the override must reach the children.
  result = subprocess.run(
      [sys.executable, '-m', 'cyclegan_jax.benchmarks.scaling', '--config=configs/test.py',
       '--config.model.discriminator=n_layers', '--config.model.n_layers_d=2',
       '--sizes=16,32', '--memory_sizes=24,32', '--devices_per_host=1,2', '--steps=1',
       '--accelerator_s_per_step=0.1', '--json'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  record = json.loads(result.stdout)

  # Only 24² is compiled for the memory table: the timed runs compiled 32² and lowered the
  # 1-device rows, the same programs (test_record_has_the_issue_keys_...).
  assert 'compiling at [24]' in result.stderr and 'on 1 CPU devices' not in result.stderr
  assert 'lowering on 2 CPU devices' in result.stderr
  # None of the libraries' INFO chatter (JAX's search for a TPU; orbax logs every step of a
  # save and a restore) among those progress lines.
  assert 'libtpu' not in result.stderr and 'orbax' not in result.stderr
  small, large = record['sizes']
  assert (small['size'], large['size']) == (16, 32)
  assert small['discriminator'] == 'n_layers' and small['devices'] == 1
  for timed in (small, large):
    assert timed['s_per_step_median'] > 0 and timed['peak_rss_mb'] > 0
    assert timed['input_images_per_s'] > 0 and timed['input_workers'] == record['host_cores']
  assert small['compiled_memory']['temp_bytes'] < large['compiled_memory']['temp_bytes']
  compiled, timed = record['memory']
  assert (compiled['size'], timed['size']) == (24, 32)
  assert timed['compiled_memory'] == large['compiled_memory']
  assert (small['compiled_memory']['temp_bytes'] < compiled['compiled_memory']['temp_bytes']
          < large['compiled_memory']['temp_bytes'])

  rows = {(r['size'], r['devices']): r for r in record['devices']}
  assert sorted(rows) == [(16, 1), (16, 2), (32, 1), (32, 2)]
  # Gradients and metrics are all-reduced: neither the size nor the device count changes them.
  assert len({r['allreduce_bytes_per_step'] for r in rows.values()}) == 1
  for (size, devices), r in rows.items():
    # The fakes of every device (A and B, 3 channels, float32) are gathered for the pools.
    assert r['allgather_bytes_per_step'] == devices * 2 * size * size * 3 * 4
    timed = small if size == 16 else large
    assert r['need_images_per_s'] == pytest.approx(devices * 2 / timed['s_per_step_median'])
  assert record['pod']['need_images_per_s_per_host'] == pytest.approx(80)

  markdown = record['markdown']
  # A sizes row each, memory rows at 24² and 32², and a row per device count.
  assert markdown.count('| 16² |') == 3 and markdown.count('| 32² |') == 4
  assert markdown.count('| 24² |') == 1
  assert 'TPU v4-32' in markdown and '80 images/s' in markdown
