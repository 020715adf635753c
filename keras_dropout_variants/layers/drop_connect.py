import keras
from keras import ops

from keras_dropout_variants import _checks
from keras_dropout_variants import ops as _ops
from keras_dropout_variants.layers.base import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class DropConnect(StochasticLayer, keras.layers.Wrapper):
    """Drops weights of a wrapped `Dense` layer in training (DropConnect).

    Wan, Zeiler, Zhang, LeCun and Fergus (ICML 2013): in training, each weight
    of the kernel is kept with probability `1 - rate`, and the layer computes
    `activation(x @ (M * W) / (1 - rate) + b)`: inverted scaling, as in
    `Dropout`, so the default inference is the plain layer. By default one
    kernel mask is drawn per training step and shared by the batch;
    `mask_per="example"` draws one per example, as in the paper. Masks come
    from the package's engine: the same seed gives the same masks on every
    backend.

    The masked kernel is a local tensor inside `call`: the wrapped layer is
    never modified and keeps owning its variables (names, shapes,
    initializers, regularizers, constraints, LoRA). `wrapper.layer` can be
    taken out after training and used alone. Like `Dropout`, the step
    counter is a saved non-trainable weight (`wrapper.counter`).

    One Dense may be wrapped by several `DropConnect` layers, or also used
    bare in the same model: it stays one layer (one set of weights), and a
    `.keras` file restores it shared. As for any Keras layer, sharing is not
    restored when the Dense also sits inside a nested model that is
    serialized before the wrapper; Keras then cannot load the file.

    Args:
        layer: a `keras.layers.Dense`, not quantized. After
            `model.quantize`, which quantizes the wrapped Dense, training and
            `inference="gaussian"` raise a `ValueError` (they need the float
            kernel); `inference="mean"` runs the quantized Dense.
        rate: Float between 0 and 1: the probability of dropping a weight.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        drop_bias: whether the bias is dropped (and rescaled) too.
        mask_per: `"batch"` (default): one mask per step, shared by the
            batch; costs one kernel-sized mask. `"example"`: an independent
            mask per example (the first axis; shared along any middle axes).
            It costs about as much as `batch` separate Dense layers, with
            masks redrawn in the backward pass rather than stored, and works
            in chunks of at most 2**18 mask elements, so its extra memory
            stays bounded whatever the batch size (see `ops.drop_connect`).
        inference: `"mean"` (default): the plain Dense, deterministic.
            `"gaussian"`: the paper's moment matching: the pre-activation is
            taken as Gaussian with the training-time mean and variance, and
            the activation is averaged over `num_samples` antithetic pairs of
            draws (fixed draws from the engine, so still deterministic).
            Closer to the training-time expected output for non-linear
            activations; costs `2 * num_samples` activations per output.
        num_samples: positive int, pairs of Gaussian draws for
            `inference="gaussian"`.
        **kwargs: Base layer keyword arguments (`name`, ...).

    Call arguments:
        inputs: Floating-point tensor `(..., in)`.
        training: Python boolean: whether to drop weights.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor: use
            the weight masks number `mask_id` of the seed instead of the
            step counter's, which is then neither used nor advanced.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.DropConnect(keras.layers.Dense(4, activation="relu"), 0.5, seed=1)
    >>> x = np.ones((2, 3), dtype="float32")
    >>> tuple(layer(x, training=True).shape)
    (2, 4)
    >>> dense = layer.layer   # the trained Dense, usable alone
    """

    # It calls the wrapped layer and reads its float kernel: Keras'
    # `__call__` builds, autocasts and scopes them.
    _DIRECT_CALLS = False

    def __init__(
        self,
        layer,
        rate,
        seed=None,
        drop_bias=False,
        mask_per="batch",
        inference="mean",
        num_samples=16,
        **kwargs,
    ):
        if not isinstance(layer, keras.layers.Dense):
            raise _checks.invalid(ValueError, "layer", "a `keras.layers.Dense`", layer)
        _check_float_kernel(layer)
        # Compute in the wrapped layer's dtype policy, as it would alone.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, seed=seed, **kwargs)
        self.rate = _checks.rate(rate)
        self.drop_bias = _checks.boolean(drop_bias, "drop_bias")
        self.mask_per = _checks.one_of(mask_per, "mask_per", ("batch", "example"))
        self.inference = _checks.one_of(inference, "inference", ("mean", "gaussian"))
        self.num_samples = _checks.positive_int(num_samples, "num_samples")

    def _draws_masks(self):
        return self.rate > 0.0

    def _bias(self):
        return self.layer.bias if self.layer.use_bias else None

    def _inference(self, inputs):
        dense = self.layer
        if self.inference == "mean" or self.rate == 0.0:
            return dense(inputs)  # quantized or not
        _check_float_kernel(dense)
        _checks.floating(inputs)
        # Fixed draws (counter 0): inference stays deterministic.
        return _ops.drop_connect_gaussian(
            inputs, dense.kernel, self.rate, self._bias(), self.drop_bias,
            activation=dense.activation, num_samples=self.num_samples, seed=self.seed,
        )

    def _training(self, inputs, counter):
        dense = self.layer
        _check_float_kernel(dense)
        # Named as the layer's argument; `ops.drop_connect` checks it too.
        _checks.dense_operands(inputs, dense.kernel, "inputs")
        # Per-example masks depend on where the examples sit in the global
        # batch; the batch mask is every replica's.
        first_row = self._first_row(inputs) if self.mask_per == "example" else 0
        outputs = _ops.drop_connect(
            inputs, dense.kernel, self.rate, self._bias(), self.drop_bias,
            seed=self.seed, counter=counter, mask_per=self.mask_per, first_row=first_row,
        )
        outputs = dense.activation(outputs)
        if dense.activity_regularizer is not None:
            # `Dense.__call__`, bypassed here, adds it: per example, as Keras.
            loss = dense.activity_regularizer(outputs)
            batch = ops.cast(ops.shape(outputs)[0], loss.dtype)
            self.add_loss(ops.divide_no_nan(loss, batch))
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        # A Dense wrapped twice, or also used bare in the model, must come
        # back as one layer from a `.keras` file. Keras marks an object met
        # twice in a save on the config it recorded first, but the config
        # returned by `Wrapper.get_config` is copied before it lands in the
        # file, so that mark was lost and loading built two Dense layers for
        # one set of weights. Serializing again returns a config that
        # carries the mark when saving; elsewhere it is the same config.
        config["layer"] = keras.saving.serialize_keras_object(self.layer)
        return {
            **config,
            "rate": self.rate,
            "drop_bias": self.drop_bias,
            "mask_per": self.mask_per,
            "inference": self.inference,
            "num_samples": self.num_samples,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Wrapper.from_config pops "layer": leave the caller's dict intact.
        return super().from_config(dict(config), custom_objects=custom_objects)


def _check_float_kernel(dense):
    """Refuses a quantized Dense (e.g. after `model.quantize`, which quantizes
    the wrapped layer): its kernel holds integers that only its own call
    knows how to scale. Dropping them, or matching moments on them, would
    be silently wrong."""
    mode = dense.quantization_mode
    if mode is not None:
        raise ValueError(
            f"DropConnect cannot drop the weights of a quantized Dense: layer "
            f"{dense.name!r} uses quantization mode {mode!r} (`model.quantize` "
            "quantizes the Dense inside the wrapper). Training and "
            "`inference='gaussian'` need its float kernel; `inference='mean'` "
            "runs the quantized Dense as it is. To quantize for inference, "
            "quantize a model built from the trained `wrapper.layer` instead."
        )


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class DropConnectDense(DropConnect):
    """A `Dense` layer with DropConnect: `DropConnect(Dense(units, ...), rate)`.

    Usable directly in `Sequential` models. See `DropConnect`.

    Args:
        units: Positive integer, dimensionality of the output space.
        rate: Float between 0 and 1: the probability of dropping a weight.
        seed: Python integer in `[0, 2**32)`, or `None` to draw one.
        drop_bias: whether the bias is dropped (and rescaled) too.
        mask_per: `"batch"` or `"example"`, as in `DropConnect`.
        inference: `"mean"` or `"gaussian"`, as in `DropConnect`.
        num_samples: pairs of draws for `inference="gaussian"`.
        **kwargs: `keras.layers.Dense` arguments (`activation`, `use_bias`,
            initializers, regularizers, constraints, `lora_rank`, ...) and
            base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Floating-point tensor `(..., in)`.
        training: Python boolean: whether to drop weights.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor: use
            the weight masks number `mask_id` of the seed instead of the
            step counter's, which is then neither used nor advanced.

    Example:

    >>> import keras
    >>> import keras_dropout_variants as kdv
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     kdv.DropConnectDense(16, rate=0.5, activation="relu", seed=0),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.output_shape
    (None, 1)
    """

    _BASE_KEYS = ("name", "trainable", "dtype")

    def __init__(
        self,
        units,
        rate=0.5,
        seed=None,
        drop_bias=False,
        mask_per="batch",
        inference="mean",
        num_samples=16,
        **kwargs,
    ):
        base = {k: kwargs.pop(k) for k in self._BASE_KEYS if k in kwargs}
        dense_name = f"{base['name']}_dense" if "name" in base else None
        dense = keras.layers.Dense(
            units, name=dense_name, dtype=base.get("dtype"), **kwargs
        )
        super().__init__(
            dense,
            rate,
            seed=seed,
            drop_bias=drop_bias,
            mask_per=mask_per,
            inference=inference,
            num_samples=num_samples,
            **base,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("layer")
        dense_config = self.layer.get_config()
        for key in self._BASE_KEYS:
            dense_config.pop(key, None)
        return {**config, **dense_config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
