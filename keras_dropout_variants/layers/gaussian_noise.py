import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class GaussianNoise(StochasticLayer):
    """Adds zero-mean Gaussian noise to the input in training.

    A drop-in for `keras.layers.GaussianNoise`: same arguments, config keys
    and behaviour. In training the output is `x + stddev * z`, `z` standard
    normal; at inference the input passes through. A regularizer, and a
    model of noisy real-valued inputs.

    What differs from Keras: the noise comes from this package's engine
    (`kdv.ops.gaussian_noise` with the layer's seed and step counter):
    drawn in float32 and applied in the compute dtype, the same on every
    backend to float rounding and on every run; the step counter is a saved
    weight, and `mask_id` selects a draw. `stddev` may be any finite float
    >= 0 (Keras 3.15 refuses values above 1); a negative, NaN or infinite
    one raises a `ValueError`. `noise_shape` is an addition, keyword-only.

    Args:
        stddev: Finite float >= 0, the standard deviation of the noise.
            0 leaves the input unchanged.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        noise_shape: Keyword-only, optional tuple of ints or `None`: the
            shape of the noise, broadcast along entries equal to 1, as in
            `Dropout`. E.g. `(None, 1, None)` on `(batch, steps, features)`
            adds the same noise at every step. Only in the config when set.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Input tensor: floating-point in training; at inference any
            dtype passes through untouched.
        training: Python boolean: whether to add the noise.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor: use
            draw number `mask_id` of the seed instead of the step counter's
            (see `SeededDropout`).

    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.GaussianNoise(0.5, seed=3)
    >>> y = np.asarray(layer(np.zeros((1000, 100), "float32"), training=True))
    >>> bool(abs(y.mean()) < 0.01 and abs(y.std() - 0.5) < 0.01)
    True
    """

    def __init__(self, stddev, seed=None, *, noise_shape=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.stddev = _checks.stddev(stddev)
        self.noise_shape = _checks.noise_shape(noise_shape)
        self.supports_masking = True

    def _draws_masks(self):
        return self.stddev > 0.0

    def _training(self, inputs, counter):
        return _ops.gaussian_noise(
            inputs, self.stddev, self.noise_shape, seed=self.seed, counter=counter,
            first_row=self._first_row(inputs, self.noise_shape),
        )

    def get_config(self):
        config = {**super().get_config(), "stddev": self.stddev}
        if self.noise_shape is not None:
            config["noise_shape"] = self.noise_shape
        return config
