import keras

from keras_dropout_variants import _checks
from keras_dropout_variants.layers.dropout import Dropout


class _SpatialDropout(Dropout):
    """Dropout of whole feature maps: one keep decision per example and
    channel, broadcast along the spatial axes (Tompson et al., 2015).

    Keras' spatial layers take no `noise_shape`: the mask shape follows from
    the input's rank and `data_format`. Their config is `rate`, `seed`,
    `name`, `dtype` (and `data_format`), as in Keras.
    """

    _RANK = None

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=self._RANK)

    def _mask_shape(self):
        # None: the input's dimension (batch and channels); 1: broadcast.
        spatial = (1,) * (self._RANK - 2)
        if getattr(self, "data_format", "channels_last") == "channels_first":
            return (None, None) + spatial
        return (None,) + spatial + (None,)

    def get_config(self):
        config = super().get_config()
        for key in ("noise_shape", "trainable"):  # not in Keras' config
            config.pop(key, None)
        return config


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class SpatialDropout1D(_SpatialDropout):
    """Spatial 1D dropout: drops whole channels of `(batch, steps, channels)`.

    A drop-in for `keras.layers.SpatialDropout1D`: same arguments, config,
    input check (rank 3) and behaviour. In training, each channel of each
    example is dropped with probability `rate` at every step at once, and
    kept channels are scaled by `1 / (1 - rate)`; at inference the input
    passes through. Where adjacent steps are strongly correlated (early
    convolutions), dropping single elements hardly regularizes; dropping
    whole channels does.

    What differs from Keras is what `Dropout` says: masks from this
    package's engine (the same bits on every backend: equal to
    `kdv.ops.dropout(x, rate, noise_shape=(batch, 1, channels), seed=seed,
    counter=step)`), a saved step counter, and `mask_id`.

    Args:
        rate: Float between 0 and 1. Fraction of the channels to drop.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        **kwargs: Base layer keyword arguments (`name`, `dtype`).

    Call arguments:
        inputs: 3D tensor `(batch, steps, channels)`, floating-point in
            training.
        training: Python boolean: whether to apply dropout.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor:
            apply mask number `mask_id` of the seed instead of the step
            counter's (see `SeededDropout`).

    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.SpatialDropout1D(0.5, seed=1)
    >>> y = np.asarray(layer(np.ones((2, 3, 4), "float32"), training=True))
    >>> bool((y == y[:, :1, :]).all())   # one decision per example and channel
    True
    """

    _RANK = 3


class _SpatialDropoutND(_SpatialDropout):
    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)
        self.data_format = _checks.data_format(data_format)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class SpatialDropout2D(_SpatialDropoutND):
    """Spatial 2D dropout: drops whole feature maps of images.

    A drop-in for `keras.layers.SpatialDropout2D`: same arguments, config,
    input check (rank 4) and behaviour. In training, each feature map
    (channel) of each example is dropped with probability `rate`, and kept
    maps are scaled by `1 / (1 - rate)`; at inference the input passes
    through. The mask is `kdv.ops.dropout`'s with noise shape
    `(batch, 1, 1, channels)` (`"channels_last"`) or `(batch, channels, 1,
    1)` (`"channels_first"`); see `SpatialDropout1D` for what else differs
    from Keras.

    Args:
        rate: Float between 0 and 1. Fraction of the feature maps to drop.
        data_format: `"channels_last"` or `"channels_first"`; `None` takes
            `keras.config.image_data_format()` (by default
            `"channels_last"`).
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        **kwargs: Base layer keyword arguments (`name`, `dtype`).

    Call arguments:
        inputs: 4D tensor, floating-point in training.
        training: Python boolean: whether to apply dropout.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor (see
            `SeededDropout`).

    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.SpatialDropout2D(0.5, seed=1)
    >>> y = np.asarray(layer(np.ones((2, 5, 5, 3), "float32"), training=True))
    >>> bool((y == y[:, :1, :1, :]).all())   # whole maps kept or dropped
    True
    """

    _RANK = 4


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class SpatialDropout3D(_SpatialDropoutND):
    """Spatial 3D dropout: drops whole feature maps of volumes.

    A drop-in for `keras.layers.SpatialDropout3D`: same arguments, config,
    input check (rank 5) and behaviour, with noise shape `(batch, 1, 1, 1,
    channels)` or `(batch, channels, 1, 1, 1)`; see `SpatialDropout2D`.

    Args:
        rate: Float between 0 and 1. Fraction of the feature maps to drop.
        data_format: `"channels_last"` or `"channels_first"`; `None` takes
            `keras.config.image_data_format()`.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        **kwargs: Base layer keyword arguments (`name`, `dtype`).

    Call arguments:
        inputs: 5D tensor, floating-point in training.
        training: Python boolean: whether to apply dropout.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor (see
            `SeededDropout`).

    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.SpatialDropout3D(0.5, data_format="channels_first", seed=1)
    >>> y = np.asarray(layer(np.ones((2, 3, 4, 4, 4), "float32"), training=True))
    >>> bool((y == y[:, :, :1, :1, :1]).all())
    True
    """

    _RANK = 5
