import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class AlphaDropout(StochasticLayer):
    """Alpha dropout: dropout that keeps self-normalizing activations so.

    A drop-in for `keras.layers.AlphaDropout`: same arguments, config keys
    and behaviour. For SELU networks (Klambauer et al., 2017): in training,
    each element is dropped with probability `rate` and set to SELU's
    negative saturation `alpha' = -1.7580993408473766`, then the output is
    `a * v + b` with `a = ((1 - rate) * (1 + rate * alpha'**2))**-0.5` and
    `b = -a * alpha' * rate`, so inputs of mean 0 and variance 1 keep them
    (in expectation). At inference the input passes through.

    What differs from Keras: the keep decisions are the package engine's
    (`kdv.ops.alpha_dropout`; the same bits as `Dropout` with this noise
    shape, on every backend), the step counter is a saved weight, and
    `mask_id` selects a mask. A dropped element becomes exactly
    `a * alpha' + b`, even where the input is NaN or inf. `rate=1`, where
    Keras divides by zero at call time, is refused at construction.

    Args:
        rate: Float in `[0, 1)`: the probability of dropping an element.
            0 leaves the input unchanged.
        noise_shape: Optional tuple of ints or `None`: the shape of the
            mask, broadcast along entries equal to 1, as in `Dropout`.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Input tensor: floating-point in training; at inference any
            dtype passes through untouched.
        training: Python boolean: whether to apply alpha dropout.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor: use
            mask number `mask_id` of the seed instead of the step counter's
            (see `SeededDropout`).

    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> x = np.random.default_rng(0).normal(size=(1000, 100)).astype("float32")
    >>> y = np.asarray(kdv.AlphaDropout(0.1, seed=1)(x, training=True))
    >>> bool(abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.02)
    True
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _checks.rate_below_one(rate, "AlphaDropout")
        self.noise_shape = _checks.noise_shape(noise_shape)
        self.supports_masking = True

    def _draws_masks(self):
        return self.rate > 0.0

    def _training(self, inputs, counter):
        return _ops.alpha_dropout(
            inputs, self.rate, self.noise_shape, seed=self.seed, counter=counter,
            first_row=self._first_row(inputs, self.noise_shape),
        )

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape}
