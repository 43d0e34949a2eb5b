"""Digit metrics from an MNIST classifier: does G_BA(x_B) still show x_B's digit (CycleGAN), and
do unconditional samples look like clear digits of all ten kinds (DCGAN)?

The classifier is a small flax CNN the project trains on MNIST (config.digit_classifier), at the
pipeline's resolution and scaling, and caches in the data directory under a hash of its config.
The metric translates test images of domain B into domain A (MNIST) and scores the classifier's
predictions against the images' true labels; the same classifier on the untranslated images is
the baseline. Labels are used here only, never in training.
"""

from collections.abc import Callable
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from absl import logging
from flax import serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cyclegan_jax import losses
from cyclegan_jax.data import digits_data, preprocess
from cyclegan_jax.models import classifier as classifier_lib
from cyclegan_jax.progress import Progress

_VERSION = 1  # Part of the cache key: bump when the model or its training changes.
EVAL_BATCH = 250


def prepared(config, digits: digits_data.Digits, num: int = -1) -> np.ndarray:
  """The first `num` (-1: all) images as the pipeline's test view: [n, crop, crop, 3] in [-1, 1]."""
  count = len(digits.labels) if num == -1 else num
  domain = digits_data.as_domain(digits, 'digits')
  return np.stack([preprocess.transform(domain.load(i), config.data, None) for i in range(count)])


def train_classifier(classifier: ml_collections.ConfigDict, images: np.ndarray,
                     labels: np.ndarray) -> Any:
  """Params after classifier.epochs of Adam on (images, labels); the order comes from its seed."""
  model = classifier_lib.create_classifier(classifier)
  key = jax.random.key(classifier.seed)
  params = jax.jit(model.init)(key, jnp.zeros((1,) + images.shape[1:]))['params']
  batch = classifier.batch_size
  steps = classifier.epochs * (len(labels) // batch)
  tx = optax.adam(optax.cosine_decay_schedule(classifier.lr, max(steps, 1)))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(model.apply({'params': p}, x),
                                                             y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  progress = Progress('Digit classifier training', steps, 'steps')
  for epoch in range(classifier.epochs):
    order = np.random.default_rng([classifier.seed, epoch]).permutation(len(labels))
    for start in range(0, len(order) - batch + 1, batch):
      chosen = order[start:start + batch]
      params, opt_state = step(params, opt_state, images[chosen], labels[chosen])
      # Waiting for the step keeps the count honest; steps queued ahead would not be done.
      jax.block_until_ready(params)
      progress.update(progress.done + 1)
  return params


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: classifier_lib.Classifier, params: Any, images: jax.Array) -> jax.Array:
  return model.apply({'params': params}, images)


def logits(classifier: ml_collections.ConfigDict, params: Any, images: np.ndarray) -> np.ndarray:
  """[n, 10] logits, in batches of a fixed size: one compile per classifier and process, not
  one per call (the train loop scores samples every eval_every_steps)."""
  model = classifier_lib.create_classifier(classifier)
  out = []
  progress = Progress('Digit classifier', len(images), 'images')
  for start in range(0, len(images), EVAL_BATCH):
    out.append(np.asarray(_apply(model, params, images[start:start + EVAL_BATCH])))
    progress.update(start + len(out[-1]))
  return np.concatenate(out)


def accuracy(classifier: ml_collections.ConfigDict, params: Any, images: np.ndarray,
             labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(logits(classifier, params, images), -1) == labels))


def cache_path(config, which: str = 'digit_classifier') -> Path:
  """data.path/digit_classifier_<hash of config[which] and the input size>.msgpack."""
  spec = json.dumps([_VERSION, config[which].to_dict(), config.data.crop_size],
                    sort_keys=True, default=list)
  key = hashlib.sha256(spec.encode()).hexdigest()[:12]
  return Path(config.data.path).expanduser() / f'digit_classifier_{key}.msgpack'


def load_classifier(config, which: str = 'digit_classifier') -> Any:
  """The cached params of the classifier config[which] describes ('digit_classifier' scores,
  'digit_teacher' serves the label-consistency loss), trained on MNIST train (then cached) if
  there are none."""
  classifier = config[which]
  path = cache_path(config, which)
  template = jax.eval_shape(classifier_lib.create_classifier(classifier).init, jax.random.key(0),
                            jnp.zeros((1, config.data.crop_size, config.data.crop_size, 3)))
  if path.is_file():
    return serialization.from_bytes(template['params'], path.read_bytes())
  train = digits_data.load_digits('mnist', 'train', config.data.path)
  params = train_classifier(classifier, prepared(config, train), train.labels)
  test = digits_data.load_digits('mnist', 'test', config.data.path)
  logging.info('%s trained: %.4f accuracy on MNIST test; cached in %s', which,
               accuracy(classifier, params, prepared(config, test), test.labels), path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_suffix('.tmp')
  partial.write_bytes(serialization.to_bytes(params))
  partial.replace(path)
  return params


def _uses_teacher(loss_config) -> bool:
  return loss_config.lambda_digit > 0 or loss_config.lambda_digit_self > 0


def make_label_consistency_loss(config) -> Callable[..., dict[str, jax.Array]] | None:
  """loss(real_a, rec_a, real_b, rec_b, fake_a, fake_b) -> weighted terms, with
  config.digit_teacher (a classifier of its own: the one that scores must stay unseen by
  training), or None when neither weight is set. Its weights are read here, once.
  - 'digit' (loss.lambda_digit): losses.label_consistency_loss on the MNIST domain's cycle;
  - 'digit_self' (loss.lambda_digit_self): losses.confident_label_loss on the translation of
    the other domain into MNIST, at loss.digit_self_threshold."""
  loss_config = config.loss
  if not _uses_teacher(loss_config):
    return None
  mnist_is_a = config.data.domain_a == 'mnist'  # check_label_consistency: one domain is.
  teacher = classifier_lib.create_classifier(config.digit_teacher)
  params = load_classifier(config, 'digit_teacher')
  logits_fn = lambda x: teacher.apply({'params': params}, x)

  def loss(real_a, rec_a, real_b, rec_b, fake_a, fake_b):
    terms = {}
    if loss_config.lambda_digit > 0:
      real, rec = (real_a, rec_a) if mnist_is_a else (real_b, rec_b)
      terms['digit'] = losses.label_consistency_loss(logits_fn, real, rec,
                                                     loss_config.lambda_digit)
    if loss_config.lambda_digit_self > 0:
      terms['digit_self'] = losses.confident_label_loss(
          logits_fn, fake_a if mnist_is_a else fake_b, loss_config.digit_self_threshold,
          loss_config.lambda_digit_self)
    return terms

  return loss


def check_label_consistency(config) -> None:
  """loss.lambda_digit and loss.lambda_digit_self need digit data with an MNIST domain and a
  config.digit_teacher that differs from the scoring config.digit_classifier."""
  if not _uses_teacher(config.loss):
    return
  data = config.data
  if data.source != 'digits' or 'mnist' not in (data.domain_a, data.domain_b):
    raise ValueError('loss.lambda_digit needs data.source=digits with an MNIST domain, got '
                     f'{data.source!r} ({data.domain_a!r}, {data.domain_b!r}).')
  if 'digit_teacher' not in config:
    raise ValueError('loss.lambda_digit needs config.digit_teacher, the classifier of the loss.')
  scorer = config.get('digit_classifier')
  if scorer is not None and config.digit_teacher.to_dict() == scorer.to_dict():
    raise ValueError('config.digit_teacher equals config.digit_classifier: the classifier that '
                     'scores must not be one that a training loss sees.')
  if not 0 <= config.loss.digit_self_threshold < 1:
    raise ValueError('loss.digit_self_threshold is a probability in [0, 1), got '
                     f'{config.loss.digit_self_threshold!r}.')


def translations_into_mnist(data) -> list[tuple[str, str]]:
  """(source, target) domains whose translation lands in MNIST, which the classifier reads."""
  if data.domain_a != 'mnist' and data.domain_b != 'mnist':
    raise ValueError(f'the digit classifier reads MNIST: one of data.domain_a/domain_b must be '
                     f"'mnist', got {data.domain_a!r} and {data.domain_b!r}.")
  return [(source, target) for source, target in (('b', 'a'), ('a', 'b'))
          if data[f'domain_{target}'] == 'mnist' and data[f'domain_{source}'] != 'mnist']


def accuracy_of_translations(config: ml_collections.ConfigDict, real: dict[str, np.ndarray],
                             translated: dict[str, np.ndarray]) -> dict[str, float]:
  """`digit_acc_b2a` (classifier accuracy on G_BA(real['b']), when domain_a is mnist) or
  `digit_acc_a2b`, and the untranslated baseline `digit_acc_b` / `digit_acc_a`.

  real[d] holds the first n test images of domain d, as `Data.eval_images` gives them;
  translated[d] their translations into the other domain. The labels are the test split's.
  """
  data = config.data
  classifier = config.digit_classifier
  classifier_params = load_classifier(config)
  results = {}
  for source, target in translations_into_mnist(data):
    labels = digits_data.load_digits(data[f'domain_{source}'], 'test', data.path,
                                     data.mnistm_seed).labels[:len(real[source])]
    results[f'digit_acc_{source}2{target}'] = accuracy(classifier, classifier_params,
                                                       translated[source], labels)
    results[f'digit_acc_{source}'] = accuracy(classifier, classifier_params, real[source], labels)
  return results


def sample_scores(config: ml_collections.ConfigDict, images: np.ndarray) -> dict[str, float]:
  """How MNIST-like unconditional samples [n, H, W, 3] in [-1, 1] are, to the classifier.

  `digit_confident`: the share it labels with probability above eval.digit_confidence (a clear
  digit). `digit_score`: exp(mean KL(p(y|x) ‖ p(y))), the Inception Score with this classifier,
  from 1 to 10; it is high only when samples are both clear and spread over the ten digits, so
  a collapse onto a few digits shows here while digit_confident stays high.
  """
  scores = np.asarray(logits(config.digit_classifier, load_classifier(config), images), np.float64)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  marginal = probs.mean(0)
  kl = np.sum(probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12)), -1)
  return {'digit_confident': float(np.mean(probs.max(-1) > config.eval.digit_confidence)),
          'digit_score': float(np.exp(kl.mean()))}
