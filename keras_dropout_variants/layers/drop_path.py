import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class DropPath(StochasticLayer):
    """Stochastic depth: drops a residual branch per example in training.

    Put it at the end of a residual branch, `x + DropPath(rate)(branch(x))`
    (Huang et al., 2016; timm's `DropPath`, torchvision's
    `StochasticDepth`). In training, `mode="row"` drops the whole input of
    each example with probability `rate` (its mask has shape `(batch, 1,
    ..., 1)`), `mode="batch"` the whole batch's at once; kept inputs are
    scaled by `1 / (1 - rate)` when `scale_by_keep`, so inference, which
    passes the input through, needs no rescaling. Rate 1 gives zeros. With
    `scale_by_keep` and `mode="row"`, the output is `kdv.ops.dropout(x,
    rate, noise_shape=(batch, 1, ..., 1))` for the layer's seed and step
    (see `kdv.ops.drop_path`). Also available as `StochasticDepth`.

    Deeper blocks usually get larger rates: `kdv.drop_path_rates(depth,
    max_rate)` gives the linear rule. A `kdv.callbacks.RateSchedule` can
    ramp the rate during training.

    Args:
        rate: Float between 0 and 1: the probability of dropping an
            example's input.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        scale_by_keep: whether kept inputs are scaled by `1 / (1 - rate)`.
        mode: `"row"` (one decision per example) or `"batch"`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Tensor with the batch axis first: floating-point in
            training; at inference any dtype passes through untouched.
        training: Python boolean: whether to drop.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor: use
            mask number `mask_id` of the seed instead of the step counter's
            (see `SeededDropout`).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> inputs = keras.Input((16,))
    >>> branch = keras.layers.Dense(16, activation="relu")(inputs)
    >>> outputs = inputs + kdv.DropPath(0.2, seed=0)(branch)
    >>> y = np.asarray(kdv.DropPath(0.5, seed=1)(np.ones((6, 3), "float32"), training=True))
    >>> y[:, 0].tolist()   # whole rows: 0 or 1 / (1 - 0.5)
    [0.0, 2.0, 0.0, 2.0, 2.0, 0.0]
    """

    _SCHEDULABLE = True

    def __init__(self, rate, seed=None, scale_by_keep=True, mode="row", **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.rate = _checks.rate(rate)
        self.scale_by_keep = _checks.boolean(scale_by_keep, "scale_by_keep")
        self.mode = _checks.one_of(mode, "mode", ("row", "batch"))
        self.supports_masking = True

    def _draws_masks(self):
        return self._rate_scheduled or self.rate > 0.0

    def _training(self, inputs, counter):
        # Rows have masks of their own in "row" mode; "batch" shares one.
        first_row = self._first_row(inputs) if self.mode == "row" else 0
        return _ops.drop_path(
            inputs, self._rate_value(), seed=self.seed, counter=counter,
            scale_by_keep=self.scale_by_keep, mode=self.mode, first_row=first_row,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "scale_by_keep": self.scale_by_keep,
            "mode": self.mode,
        }


# The name torchvision and the stochastic-depth paper use.
StochasticDepth = DropPath
