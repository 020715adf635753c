import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class GaussianDropout(StochasticLayer):
    """Multiplies the input by Gaussian noise of mean 1 in training.

    A drop-in for `keras.layers.GaussianDropout`: same arguments, config
    keys and behaviour. In training the output is `x * (1 + s * z)`, `z`
    standard normal and `s = sqrt(rate / (1 - rate))`: the mean and
    variance of inverted dropout's factor, without zeros (Srivastava et al.,
    2014). At inference the input passes through.

    What differs from Keras: the noise comes from this package's engine
    (`kdv.ops.gaussian_dropout` with the layer's seed and step counter):
    drawn in float32 and applied in the compute dtype, the same on every
    backend to float rounding and on every run; the step counter is a saved
    weight (a resumed run goes on with the next draw), and `mask_id` selects
    a draw. `rate=1`, where Keras divides by zero at call time, is refused
    here at construction. `noise_shape` is an addition, keyword-only.

    Args:
        rate: Float in `[0, 1)`: the drop probability whose variance the
            noise matches. 0 leaves the input unchanged.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        noise_shape: Keyword-only, optional tuple of ints or `None`: the
            shape of the noise, broadcast along entries equal to 1, as in
            `Dropout`. E.g. `(None, 1, None)` on `(batch, steps, features)`
            multiplies every step by the same noise. Only in the config when
            set (so the config stays Keras' otherwise).
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
    >>> layer = kdv.GaussianDropout(0.2, seed=3)
    >>> y = np.asarray(layer(np.ones((1000, 100), "float32"), training=True))
    >>> bool(abs(y.mean() - 1) < 0.01 and abs(y.var() - 0.25) < 0.01)
    True
    """

    def __init__(self, rate, seed=None, *, noise_shape=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _checks.rate_below_one(rate, "GaussianDropout")
        self.noise_shape = _checks.noise_shape(noise_shape)
        self.supports_masking = True

    def _draws_masks(self):
        return self.rate > 0.0

    def _training(self, inputs, counter):
        return _ops.gaussian_dropout(
            inputs, self.rate, self.noise_shape, seed=self.seed, counter=counter,
            first_row=self._first_row(inputs, self.noise_shape),
        )

    def get_config(self):
        config = {**super().get_config(), "rate": self.rate}
        if self.noise_shape is not None:
            config["noise_shape"] = self.noise_shape
        return config
