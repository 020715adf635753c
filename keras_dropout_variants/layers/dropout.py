import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class Dropout(StochasticLayer):
    """Applies dropout to the input, with masks identical on every backend.

    A drop-in for `keras.layers.Dropout`: same arguments, config keys and
    behaviour. In training, each element is set to 0 with probability `rate`
    and the kept ones are scaled by `1 / (1 - rate)`, so the expected sum is
    unchanged; at inference (`training` None or False) the input passes
    through untouched.

    What differs from Keras: the masks come from this package's
    counter-based engine, so a given `seed` yields the same sequence of masks
    under TensorFlow, JAX and PyTorch, on CPU and GPU. The step counter that
    selects each mask is a non-trainable int32 weight of the layer
    (`layer.counter`): it advances once per training call, also inside a
    compiled `fit()`, and is saved with the model, so a reloaded model goes on
    with the next mask instead of replaying the first ones. Being a weight,
    it appears in `layer.weights` and `model.get_weights()`: a weight list
    taken from a model built with `keras.layers.Dropout` does not fit
    `set_weights` of the same model built with this layer (one more array
    per layer), but its weights file loads (`load_weights`), the counter
    starting at 0 with a warning. With `seed=None` a seed is drawn at
    construction from Python's `random` (so `keras.utils.set_random_seed`
    makes it reproducible) and is kept in the config.

    Args:
        rate: Float between 0 and 1. Fraction of the input units to drop.
        noise_shape: Optional tuple of ints or `None`: the shape of the
            binary mask, broadcast along entries equal to 1. For inputs of
            shape `(batch, timesteps, features)`, `noise_shape=(None, 1,
            None)` drops the same features at every timestep. `None` entries
            take the input's dimension at call time.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Input tensor of any rank: floating-point in training;
            at inference any dtype passes through untouched.
        training: Python boolean: whether to apply dropout (training mode)
            or return the input unchanged (inference mode).
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor:
            apply mask number `mask_id` of the seed instead of the step
            counter's, which is then neither used nor advanced (see
            `SeededDropout`).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.Dropout(0.5, seed=42)
    >>> x = np.ones((2, 4), dtype="float32")
    >>> y = layer(x, training=True)   # entries are 0 or 2
    >>> bool(np.all(keras.ops.convert_to_numpy(layer(x)) == x))
    True
    >>> int(keras.ops.convert_to_numpy(layer.counter))   # one training call
    1
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _checks.rate(rate)
        self.noise_shape = _checks.noise_shape(noise_shape)
        self.supports_masking = True

    _SCHEDULABLE = True

    def _draws_masks(self):
        return self._rate_scheduled or self.rate > 0.0

    def _mask_shape(self):
        """The `noise_shape` the masks are drawn with (spatial layers set it)."""
        return self.noise_shape

    def _training(self, inputs, counter):
        noise_shape = self._mask_shape()
        return _ops.dropout(
            inputs, self._rate_value(), noise_shape, seed=self.seed, counter=counter,
            first_row=self._first_row(inputs, noise_shape),
        )

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape}
