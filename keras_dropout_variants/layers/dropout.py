import random as python_random

import keras
from keras import ops

from keras_dropout_variants import ops as kdv_ops
from keras_dropout_variants import random as kdv_random


def draw_seed():
    """A seed from Python's `random`, as Keras does for `seed=None`.

    So `keras.utils.set_random_seed(n)` makes unseeded layers reproducible.
    """
    return python_random.randint(0, 2**32 - 1)


def add_step_counter(layer):
    """The layer's step counter: a saved, non-trainable int32 weight.

    It selects each training call's mask and advances once per call; being a
    weight, it travels with `model.save` and `save_weights`.
    """
    return layer.add_weight(
        name="counter", shape=(), dtype="int32", initializer="zeros", trainable=False
    )


def with_step_counter(layer, compute):
    """`compute(counter)` with the layer's current step, then advances it.

    `counter` is a snapshot: a backward pass that redraws the mask after the
    assignment (a custom gradient, or a compiler's recomputation) still sees
    this step's value.
    """
    counter = kdv_random.snapshot(layer.counter)
    outputs = compute(counter)
    # `+ 1` would make the 1 a new tensor: on torch, a host-to-device copy
    # that waits for the GPU.
    layer.counter.assign(ops.add(counter, ops.ones_like(counter)))
    return outputs


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class Dropout(keras.layers.Layer):
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
    with the next mask instead of replaying the first ones. With `seed=None`
    a seed is drawn at construction from Python's `random` (so
    `keras.utils.set_random_seed` makes it reproducible) and is kept in the
    config.

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
        inputs: Floating-point input tensor of any rank.
        training: Python boolean: whether to apply dropout (training mode)
            or return the input unchanged (inference mode).

    Example:

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
        super().__init__(**kwargs)
        self.rate = kdv_random.check_rate(rate)
        self.noise_shape = kdv_ops.check_noise_shape(noise_shape)
        self.seed = draw_seed() if seed is None else kdv_random.check_seed(seed)
        self.supports_masking = True
        self.counter = add_step_counter(self)
        self.built = True

    def call(self, inputs, training=False):
        return self._dropout(inputs, training)

    def _dropout(self, inputs, training, mask_id=None):
        """Applies the mask `mask_id`, or the step counter's and advances it."""
        kdv_ops.check_floating(inputs)
        if not training or self.rate == 0.0:
            return inputs
        if mask_id is not None:
            return kdv_ops.dropout(
                inputs, self.rate, self.noise_shape, seed=self.seed, counter=mask_id
            )
        return with_step_counter(
            self,
            lambda counter: kdv_ops.dropout(
                inputs, self.rate, self.noise_shape, seed=self.seed, counter=counter
            ),
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}
        )
        return config
