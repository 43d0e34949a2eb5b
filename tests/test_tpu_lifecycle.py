"""The TPU pod scripts against a fake `gcloud` first on PATH, which logs every call and answers
`describe` with the states a test gives it: the order of the calls for a preempted Spot VM, a
suspended queued resource, a healthy slice and a running trainer; and, on this machine, the
worker-side script starting a stand-in trainer detached and stopping it."""

import os
import pathlib
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAKE_GCLOUD = r'''#!/usr/bin/env bash
# Logs its arguments; `describe` pops the next state of $FAKE_STATES (the last one stays).
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$*" in
  *" describe "*)
    read -r state rest < "$FAKE_STATES"
    if [[ -n "$rest" ]]; then echo "$rest" > "$FAKE_STATES"; fi
    if [[ "$state" == NOT_FOUND ]]; then
      echo "ERROR: (gcloud) NOT_FOUND: Resource 'vg' was not found" >&2
      exit 1
    fi
    echo "$state" ;;
  *"tpu_worker.sh running"*) printf '%b' "${FAKE_RUNNING:-}" ;;
  "storage ls "*) printf '%s\n' ${FAKE_CHECKPOINTS:-} ;;
esac
'''
LOCATION = '--zone=europe-west4-a --project=proj'
VM = 'compute tpus tpu-vm'
QR = 'compute tpus queued-resources'
SSH_ALL = f'{VM} ssh vg {LOCATION} --worker=all --command=cd ~/cyclegan_jax && '


@pytest.fixture
def gcloud(tmp_path):
  """Runs a launch script with the fake gcloud; returns (result, the gcloud calls)."""
  (tmp_path / 'bin').mkdir()
  fake = tmp_path / 'bin' / 'gcloud'
  fake.write_text(FAKE_GCLOUD)
  fake.chmod(0o755)
  log = tmp_path / 'gcloud.log'

  def run(script, *args, states='READY', **env):
    (tmp_path / 'states').write_text(states + '\n')
    log.write_text('')
    env = {**os.environ, 'PATH': f'{tmp_path / "bin"}:{os.environ["PATH"]}', 'DRY_RUN': '0',
           'TPU_NAME': 'vg', 'ZONE': 'europe-west4-a', 'PROJECT': 'proj',
           'ACCELERATOR_TYPE': 'v4-32', 'WORKDIR': 'gs://b/runs/vg',
           'TFDS_DATA_DIR': 'gs://b/tfds', 'TMPDIR': str(tmp_path), 'POLL_S': '0',
           'FAKE_LOG': str(log), 'FAKE_STATES': str(tmp_path / 'states'), **env}
    result = subprocess.run([str(ROOT / 'launch' / script), *args], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=60)
    return result, log.read_text().splitlines()

  return run


def setup_and_run(tmp_path):
  """The calls of tpu_setup.sh and then tpu_run.sh (no trainer running)."""
  return [f'{VM} scp {tmp_path}/cyclegan_jax_src.tar.gz vg:cyclegan_jax_src.tar.gz {LOCATION} '
          '--worker=all',
          'SETUP',
          SSH_ALL + 'launch/tpu_worker.sh running',
          SSH_ALL + 'launch/tpu_worker.sh start --config=configs/vangogh2photo_tpu.py '
          '--workdir=gs://b/runs/vg --jax_distributed --config.data.path=gs://b/tfds']


def without_setup_command(calls):
  return ['SETUP' if c.startswith(f'{VM} ssh vg {LOCATION} --worker=all --command=set -e; ')
          else c for c in calls]


def test_resume_recreates_a_preempted_spot_vm_then_sets_up_and_runs(gcloud, tmp_path):
  result, calls = gcloud('tpu_resume.sh', states='PREEMPTED', SPOT='1')
  assert result.returncode == 0, result.stderr
  assert without_setup_command(calls) == [
      f'{VM} describe vg {LOCATION} --format=value(state)',
      f'{VM} delete vg {LOCATION} --quiet',
      f'{VM} create vg {LOCATION} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot',
      *setup_and_run(tmp_path)]
  assert 'vg: PREEMPTED' in result.stderr


def test_resume_recreates_a_suspended_queued_resource_and_waits_until_active(gcloud, tmp_path):
  result, calls = gcloud('tpu_resume.sh', QUEUED='1', SPOT='1',
                         states='SUSPENDED WAITING_FOR_RESOURCES PROVISIONING ACTIVE')
  assert result.returncode == 0, result.stderr
  describe = f'{QR} describe vg {LOCATION} --format=value(state.state)'
  assert without_setup_command(calls) == [
      describe,
      f'{QR} delete vg {LOCATION} --force --quiet',
      f'{QR} create vg --node-id=vg {LOCATION} --accelerator-type=v4-32 '
      '--runtime-version=tpu-ubuntu2204-base --spot',
      describe, describe, describe,
      *setup_and_run(tmp_path)]
  progress = [line for line in result.stderr.splitlines() if line.startswith('queued resource')]
  assert progress == ['queued resource vg: WAITING_FOR_RESOURCES (0 of 120 min)',
                      'queued resource vg: PROVISIONING (0 of 120 min)',
                      'queued resource vg: ACTIVE (0 of 120 min)']


def test_resume_on_a_healthy_slice_only_starts_the_run(gcloud):
  result, calls = gcloud('tpu_resume.sh', states='READY')
  assert result.returncode == 0, result.stderr
  assert calls == [f'{VM} describe vg {LOCATION} --format=value(state)',
                   SSH_ALL + 'launch/tpu_worker.sh running',
                   SSH_ALL + 'launch/tpu_worker.sh start --config=configs/vangogh2photo_tpu.py '
                   '--workdir=gs://b/runs/vg --jax_distributed --config.data.path=gs://b/tfds']


def test_resume_recreate_replaces_even_a_healthy_slice(gcloud, tmp_path):
  result, calls = gcloud('tpu_resume.sh', '--recreate', states='READY')
  assert result.returncode == 0, result.stderr
  assert without_setup_command(calls) == [
      f'{VM} describe vg {LOCATION} --format=value(state)',
      f'{VM} delete vg {LOCATION} --quiet',
      f'{VM} create vg {LOCATION} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base',
      *setup_and_run(tmp_path)]


def test_a_queued_resource_that_stays_queued_times_out_and_stays(gcloud):
  result, calls = gcloud('tpu_create.sh', QUEUED='1', WAIT_TIMEOUT_S='0',
                         states='WAITING_FOR_RESOURCES')
  assert result.returncode == 1
  assert [c.split(' vg ')[0] for c in calls] == [f'{QR} create', f'{QR} describe']
  assert result.stderr.splitlines()[-1].startswith(
      'error: queued resource vg is still WAITING_FOR_RESOURCES after 0s. It stays in the queue')


def test_run_refuses_while_a_trainer_runs_anywhere(gcloud):
  result, calls = gcloud('tpu_run.sh', FAKE_RUNNING='t1v-w-2: trainer running (pid 42)\n')
  assert result.returncode == 1
  assert calls == [SSH_ALL + 'launch/tpu_worker.sh running']  # Nothing started.
  assert result.stderr.splitlines() == [
      'error: a trainer is already running (a second would find the TPU in use):',
      't1v-w-2: trainer running (pid 42)',
      'Stop it with launch/tpu_stop.sh (it saves a checkpoint), or rerun with --replace.']


def test_status_shows_state_latest_checkpoint_and_each_worker(gcloud):
  checkpoints = ' '.join(f'gs://b/runs/vg/checkpoints/{s}/commit_success.txt'
                         for s in (500, 1000, 1500))
  result, calls = gcloud('tpu_status.sh', FAKE_CHECKPOINTS=checkpoints)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == ['TPU VM vg (europe-west4-a): READY',
                                        'latest checkpoint in gs://b/runs/vg: step 1500']
  assert calls == [f'{VM} describe vg {LOCATION} --format=value(state)',
                   'storage ls gs://b/runs/vg/checkpoints/*/commit_success.txt',
                   SSH_ALL + 'launch/tpu_worker.sh status']
  result, calls = gcloud('tpu_status.sh', states='NOT_FOUND')
  assert result.stdout.splitlines() == ['TPU VM vg (europe-west4-a): NOT_FOUND',
                                        'latest checkpoint in gs://b/runs/vg: none yet',
                                        'no workers to ask while it is NOT_FOUND']


def test_dry_run_reads_state_but_changes_nothing(gcloud):
  """The whole life of a run under DRY_RUN=1: only describe and ls reach gcloud."""
  for script, states in [('tpu_create.sh', 'READY'), ('tpu_setup.sh', 'READY'),
                         ('tpu_run.sh', 'READY'), ('tpu_status.sh', 'READY'),
                         ('tpu_stop.sh', 'READY'), ('tpu_resume.sh', 'PREEMPTED'),
                         ('tpu_delete.sh', 'READY')]:
    result, calls = gcloud(script, states=states, DRY_RUN='1')
    assert result.returncode == 0, (script, result.stderr)
    assert all(' describe ' in c or c.startswith('storage ls ') for c in calls), (script, calls)
    assert result.stdout, script


def test_worker_script_starts_a_detached_trainer_once_and_stops_it(tmp_path):
  trainer = tmp_path / 'python'  # A stand-in for the venv's python: saves on SIGTERM.
  trainer.write_text('#!/usr/bin/env bash\ntrap \'echo "saved"; exit 0\' TERM\n'
                     'echo "training $*"\nwhile true; do sleep 0.05; done\n')
  trainer.chmod(0o755)
  env = {**os.environ, 'PYTHON': str(trainer), 'LOG': str(tmp_path / 'train.log')}

  def worker(*args):
    return subprocess.run([str(ROOT / 'launch' / 'tpu_worker.sh'), *args], capture_output=True,
                          text=True, env=env, timeout=30).stdout

  started = worker('start', '--workdir=gs://b/w')
  try:
    assert 'trainer started (pid ' in started and str(tmp_path / 'train.log') in started
    assert 'already running' in worker('start', '--workdir=gs://b/w')  # No second trainer.
    assert ': trainer running (pid ' in worker('running')
    time.sleep(0.2)
    assert 'last log line: training -m cyclegan_jax.main --workdir=gs://b/w' in worker('status')
    assert worker('stop').splitlines()[-1].endswith(': trainer stopped')
    assert worker('running') == ''
    assert (tmp_path / 'train.log').read_text().splitlines() == [
        'training -m cyclegan_jax.main --workdir=gs://b/w', 'saved']
  finally:
    pid = int(started.split('(pid ')[1].split(')')[0])
    try:
      os.kill(pid, 9)
    except ProcessLookupError:
      pass
