import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


class _DropBlock(StochasticLayer):
    """DropBlock of `_RANK - 2` spatial dimensions; see `DropBlock2D`."""

    _RANK = None
    _SCHEDULABLE = True

    def __init__(self, rate, block_size, data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _checks.rate(rate)
        self.block_size = _checks.positive_int(block_size, "block_size")
        self.data_format = _checks.data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=self._RANK)

    def _draws_masks(self):
        return self._rate_scheduled or self.rate > 0.0

    def _training(self, inputs, counter):
        return _ops.drop_block(
            inputs, self._rate_value(), self.block_size, self.data_format,
            seed=self.seed, counter=counter, first_row=self._first_row(inputs),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "block_size": self.block_size,
            "data_format": self.data_format,
        }


_ARGS = """
    Args:
        rate: Float between 0 and 1: about the fraction of units dropped
            (the paper's `1 - keep_prob`). 0 leaves the input unchanged, 1
            gives zeros.
        block_size: Positive int, the block's size on every spatial axis;
            clipped to the map's size where larger.
        data_format: `"channels_last"` or `"channels_first"`; `None` takes
            `keras.config.image_data_format()`.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Tensor of rank {rank} with static spatial sizes:
            floating-point in training; at inference any dtype passes
            through untouched.
        training: Python boolean: whether to drop blocks.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor: use
            mask number `mask_id` of the seed instead of the step counter's
            (see `SeededDropout`).
"""


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class DropBlock2D(_DropBlock):
    __doc__ = """Drops contiguous square blocks of feature maps in training.

    DropBlock (Ghiasi, Lin and Le, NeurIPS 2018): convolutional features are
    spatially correlated, so dropping single units (`Dropout`) barely
    regularizes; dropping `block_size x block_size` regions does. Per
    example and channel, block anchors are drawn only where a whole block
    fits, with the paper's `gamma`; each anchor zeroes its block (even sizes
    too); the kept values are scaled by `mask size / kept count` of each
    example, so an example's output does not depend on the rest of the
    batch, nor on how the batch is split over replicas; an example with
    nothing kept gives zeros, not NaN. At inference the input passes
    through. The anchors come from the package's engine (the same bits on
    every backend); see `kdv.ops.drop_block`.

    The paper ramps `rate` up from 0 during training:
    `kdv.callbacks.RateSchedule` does that inside a compiled `fit()`.
""" + _ARGS.format(rank="4, `(batch, height, width, channels)` or `(batch, channels, height, width)`") + """
    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.DropBlock2D(0.2, block_size=3, seed=1)
    >>> y = np.asarray(layer(np.ones((2, 12, 12, 4), "float32"), training=True))
    >>> y.shape
    (2, 12, 12, 4)
    """

    _RANK = 4


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class DropBlock1D(_DropBlock):
    __doc__ = """Drops contiguous segments of sequences' channels in training.

    DropBlock on one spatial axis, `(batch, steps, channels)`: segments of
    `block_size` steps, with the 1D analogue of the paper's `gamma`
    (`rate * steps / (block_size * (steps - block_size + 1))`); otherwise as
    `DropBlock2D`.
""" + _ARGS.format(rank="3, `(batch, steps, channels)` or `(batch, channels, steps)`") + """
    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> y = kdv.DropBlock1D(0.3, block_size=4, seed=1)(np.ones((2, 32, 8), "float32"), training=True)
    >>> tuple(y.shape)
    (2, 32, 8)
    """

    _RANK = 3


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class DropBlock3D(_DropBlock):
    __doc__ = """Drops contiguous cubes of volumes' feature maps in training.

    DropBlock on three spatial axes, `block_size` cubes; otherwise as
    `DropBlock2D`.
""" + _ARGS.format(rank="5, `(batch, d1, d2, d3, channels)` or `(batch, channels, d1, d2, d3)`") + """
    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> y = kdv.DropBlock3D(0.3, block_size=2, seed=1)(np.ones((1, 6, 6, 6, 2), "float32"), training=True)
    >>> tuple(y.shape)
    (1, 6, 6, 6, 2)
    """

    _RANK = 5
