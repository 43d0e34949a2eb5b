"""The benchmark's record: every key the speed issue names, with values that hang together.

No timing is asserted (times depend on the machine); only what the record must contain and
how its numbers relate.
"""

import pytest

from configs import test as test_config
from cyclegan_jax.benchmarks import step


@pytest.mark.slow
def test_record_has_the_issue_keys_and_consistent_numbers():
  config = test_config.get_config()
  steps = 2
  record = step.benchmark(config, steps, config_path='configs/test.py', input_pipeline=False)

  for key in ('s_per_step_median', 's_per_step_min', 'flops_per_step', 'achieved_flops_per_s',
              'dot_peak_flops_per_s', 'peak_ratio', 'compile_s', 'compile_warm_s',
              'peak_rss_mb', 'image_pairs_per_s', 'jax_version', 'jaxlib_version',
              'device_kind', 'allreduce_bytes_per_step', 'allgather_bytes_per_step'):
    assert record[key] is not None, key
  assert record['conv_impl'] == 'cpu' and record['platform'] == 'cpu'
  assert record['devices'] == 8 and record['batch'] == config.batch_size
  assert record['steps'] == steps and record['input_images_per_s'] is None
  assert 0 < record['s_per_step_min'] <= record['s_per_step_median']
  median = record['s_per_step_median']  # Rounded to 10 µs in the record.
  assert record['achieved_flops_per_s'] == pytest.approx(record['flops_per_step'] / median,
                                                         rel=1e-3)
  assert record['image_pairs_per_s'] == pytest.approx(config.batch_size / median, rel=1e-3)
  # The model's FLOPs are XLA's count for its own convs; the cpu impl executes a little more
  # (the zero row and column it pads, the zero taps of space-to-depth kernels).
  assert record['flops_per_step'] <= record['executed_flops_per_step']
  assert 0 < record['peak_ratio'] < 2
