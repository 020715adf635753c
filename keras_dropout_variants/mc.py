"""Monte-Carlo dropout predictions (Gal and Ghahramani, 2016) that are
reproducible and do not depend on batching."""

import dataclasses
import warnings

import keras
import numpy as np

from keras_dropout_variants import _checks
from keras_dropout_variants import random as _random
from keras_dropout_variants.callbacks import _walk
from keras_dropout_variants.conversion import TWINS
from keras_dropout_variants.layers import base as _base

__all__ = ["MCPrediction", "mc_predict", "mc_mask_id"]

@dataclasses.dataclass
class MCPrediction:
    """What `mc_predict` returns: NumPy arrays over the inputs.

    Attributes:
        mean: `(N, ...)`, the predictive mean over the samples.
        variance: `(N, ...)`, the variance over the samples.
        predictive_entropy: `(N,)`, `H[mean]` in nats, when the outputs are
            class probabilities (non-negative, last axis summing to 1);
            else None.
        mutual_information: `(N,)`, BALD's `H[mean] - mean_s H[p_s]` in
            nats, for class probabilities (at least 0 by Jensen's
            inequality; float rounding below 0 is clipped to 0); else None.
        samples: `(samples, N, ...)` when `return_samples=True`, else None.
    """

    mean: np.ndarray
    variance: np.ndarray
    predictive_entropy: np.ndarray = None
    mutual_information: np.ndarray = None
    samples: np.ndarray = None


def mc_mask_id(seed, sample):
    """The mask id Monte-Carlo sample `sample` of `mc_predict(..., seed=seed)`
    uses in every layer: a word derived from `(seed, sample)` by the
    engine's key function (distinct samples get distinct ids)."""
    return _random._key(_checks.seed(seed), _checks.seed(sample, "sample"))[0]


class _Sampling:
    """Monte-Carlo samples `first_sample ..` of the batch starting at global
    row `first_row`, stacked sample-major in one forward pass."""

    def __init__(self, seed, first_sample, samples, first_row):
        self.seed, self.first_sample, self.samples, self.first_row = seed, first_sample, samples, first_row

    def mask_id(self, k):
        return mc_mask_id(self.seed, self.first_sample + k)


def mc_predict(model, x, samples=30, batch_size=32, seed=0, return_samples=False, max_rows=4096):
    """Monte-Carlo dropout predictions: `samples` stochastic forward passes.

    Only the package's layers are sampled: in each pass they draw masks
    (noise) as in training, while every other layer, BatchNormalization
    included, runs in inference mode. Keras' own dropout layers stay off
    (a warning names them; `kdv.convert` swaps them for the package's).

    Sample `s` of input `n` uses, in every layer, the mask of id
    `mc_mask_id(seed, s)` for row `n` of the global input: it depends on
    the layer's seed, `seed`, `s` and `n` only, not on `batch_size`, on
    which inputs share a batch, nor on the backend (masks bit-identical;
    outputs equal to float rounding). `DropConnect` draws one weight mask
    per sample, shared by every input (with `mask_per="batch"`). The step
    counters are not used or advanced.

    Samples are vectorized: each forward pass stacks as many samples of a
    batch as `max_rows` rows allow (at least one), which bounds the peak
    memory of a pass to that of a batch of `max_rows` rows.

    Args:
        model: a Keras model (Sequential, functional or subclassed) holding
            the package's layers.
        x: the inputs: a NumPy array (or tensor), or an iterable of batches
            (a `tf.data.Dataset`, a generator) yielding arrays or `(x, ...)`
            tuples, whose rows are numbered in the order they come.
        samples: positive int, the number of stochastic passes.
        batch_size: positive int, rows per batch for an array `x`.
        seed: int in `[0, 2**32)`: selects the samples; another seed gives
            independent ones.
        return_samples: whether to return every sample.
        max_rows: positive int, the most rows of one forward pass.

    Returns:
        An `MCPrediction`.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...     kdv.Dropout(0.5, seed=1), keras.layers.Dense(3, activation="softmax")])
    >>> x = np.ones((5, 4), "float32")
    >>> a = kdv.mc_predict(model, x, samples=8, batch_size=2)
    >>> b = kdv.mc_predict(model, x, samples=8, batch_size=5)
    >>> bool(np.allclose(a.mean, b.mean, atol=1e-6)), a.predictive_entropy.shape
    (True, (5,))
    """
    samples = _checks.positive_int(samples, "samples")
    batch_size = _checks.positive_int(batch_size, "batch_size")
    max_rows = _checks.positive_int(max_rows, "max_rows")
    seed = _checks.seed(seed)
    return_samples = _checks.boolean(return_samples, "return_samples")
    _check_layers(model)
    outputs, first_row = [], 0
    for batch in _batches(x, batch_size):
        rows = int(batch.shape[0])
        per_pass = max(1, min(samples, max_rows // max(rows, 1)))
        drawn = []
        for first_sample in range(0, samples, per_pass):
            count = min(per_pass, samples - first_sample)
            stacked = np.concatenate([batch] * count, axis=0) if count > 1 else batch
            _base._SAMPLING.current = _Sampling(seed, first_sample, count, first_row)
            try:
                y = keras.ops.convert_to_numpy(model(stacked, training=False))
            finally:
                _base._SAMPLING.current = None
            drawn.append(y.reshape((count, rows) + y.shape[1:]))
        outputs.append(np.concatenate(drawn, axis=0))
        first_row += rows
    if not outputs:
        raise _checks.invalid(ValueError, "x", "at least one input", x)
    every = np.concatenate(outputs, axis=1)  # (samples, N, ...)
    return _summary(every, return_samples)


def _summary(every, return_samples):
    every64 = every.astype(np.float64)
    mean = every64.mean(axis=0)
    result = MCPrediction(mean=mean.astype(every.dtype), variance=every64.var(axis=0).astype(every.dtype))
    if every.ndim >= 3 and (every >= 0).all() and np.allclose(every64.sum(axis=-1), 1.0, atol=1e-3):
        entropy = _entropy(mean)
        result.predictive_entropy = entropy
        result.mutual_information = np.maximum(entropy - _entropy(every64).mean(axis=0), 0.0)
    if return_samples:
        result.samples = every
    return result


def _entropy(p):
    """-sum_c p_c log p_c over the last axis, in nats (0 log 0 = 0)."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _batches(x, batch_size):
    """NumPy batches of `x`, in order."""
    if isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
        x = keras.ops.convert_to_numpy(x)
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size]
        return
    if isinstance(x, (list, dict)):
        raise _checks.invalid(TypeError, "x", "an array, or an iterable of batches", type(x).__name__)
    for batch in x:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]  # (x, y) or (x, y, weights)
        yield keras.ops.convert_to_numpy(batch)


def _check_layers(model):
    """Warns about Keras dropout layers (they stay off) and about a model
    with nothing to sample."""
    layers = _walk(model)
    keras_family = [layer.name for layer in layers if isinstance(layer, tuple(TWINS))]  # stay off
    ours = [layer for layer in layers if isinstance(layer, _base.StochasticLayer)]
    if keras_family:
        warnings.warn(
            f"mc_predict samples the package's layers only: Keras' own dropout "
            f"layers {keras_family} stay off. `kdv.convert(model)` returns a "
            "copy with the package's twins.",
            stacklevel=3,
        )
    if not ours:
        warnings.warn(
            "mc_predict found none of the package's layers in the model: every "
            "sample is the deterministic prediction.",
            stacklevel=3,
        )
