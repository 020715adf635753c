"""The base class of the package's stochastic layers."""

import random as python_random
import threading
import warnings

import keras
from keras import ops

from keras_dropout_variants import _backends
from keras_dropout_variants import _checks
from keras_dropout_variants import distribute as _distribute
from keras_dropout_variants import ops as _ops
from keras_dropout_variants import random as _random


class StochasticLayer(keras.layers.Layer):
    """What every stochastic layer of the package shares.

    - `seed`: a Python int in `[0, 2**32)`, or `None` to draw one from
      Python's `random` at construction, as Keras does (so
      `keras.utils.set_random_seed(n)` makes unseeded layers reproducible);
      the drawn seed is kept in the config.
    - The step counter `self.counter`: a non-trainable int32 weight that
      selects the mask of each training call and advances once per call,
      also inside a compiled `fit()`. Being a weight, it is saved by
      `model.save` and `save_weights`, so a resumed run draws the masks the
      uninterrupted run would have drawn.
    - `call(inputs, training=False, mask_id=None)`: at inference the layer
      runs `_inference(inputs)` (by default the inputs, untouched, whatever
      their dtype). In training, floating inputs are required, and
      `_training(inputs, counter)` draws the masks of `counter`: `mask_id`
      when given (an int in `[0, 2**32)` or an integer scalar tensor; the
      step counter is then neither used nor advanced), else the step counter,
      which then advances. Inside `kdv.mc_predict`, inference draws too
      (`_monte_carlo`: one mask id per Monte-Carlo sample).
    - Data parallelism: `_first_row(inputs, noise_shape)` is the global
      index of the inputs' first row, which `_training` passes to its op.
    - Direct calls: on eager torch, a plain call (one tensor of the compute
      dtype, an explicit bool `training`) runs `call` without Keras'
      `Layer.__call__`, which would do nothing else there (see
      `_calls_directly`); a subclass whose `call` calls other layers or
      reads float variables sets `_DIRECT_CALLS = False`.
    - Rate schedules: a subclass with `_SCHEDULABLE = True` holds a float32
      rate variable that `kdv.callbacks.RateSchedule` assigns; `_rate_value()`
      is what `_training` draws with.

    A subclass implements `_training`, and may override `_inference` and
    `_draws_masks` (False when training changes nothing, e.g. at rate 0: the
    counter then stays). It creates no state after `super().__init__()`,
    which builds the layer when `build` is not overridden (Keras locks a
    built layer's state); state that depends on the input goes in `build`.
    Positional arguments and other keyword arguments go to the next base
    class (`keras.layers.Layer`, or e.g. `keras.layers.Wrapper`).
    """

    def __init__(self, *args, seed=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed = _draw_seed() if seed is None else _checks.seed(seed)
        self.counter = self.add_weight(
            name="counter", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        # Where a `RateSchedule` puts the rate (created now: a built layer's
        # state is locked). Until one does, the Python `rate` is used.
        self._rate_scheduled = False
        if self._SCHEDULABLE:
            self._rate_state = _RateState(f"{self.name}_rate")
        if hasattr(self, "_build_at_init"):
            self._build_at_init()
        elif type(self).build is keras.layers.Layer.build:  # Keras < 3.9
            self.built = True

    # Whether `RateSchedule` can drive the layer's `rate` (its op takes a
    # rate tensor).
    _SCHEDULABLE = False

    def _rate_value(self):
        """The rate to draw with: the Python `rate`, or once a `RateSchedule`
        drives the layer, the float32 variable it assigns (read at run time:
        a compiled function is not retraced when it changes)."""
        return self._rate_state.state if self._rate_scheduled else self.rate

    def __call__(self, *args, mask_id=None, **kwargs):
        if mask_id is not None:
            # Checked before Keras converts a NumPy integer into a tensor,
            # which would wrap 2**32 to 0 and -1 to 2**32 - 1 unnoticed.
            kwargs["mask_id"] = _checks.word(mask_id, "mask_id")
        if self._calls_directly(args, kwargs):
            return self._direct_call(args[0], **kwargs)
        return super().__call__(*args, **kwargs)

    # Whether `__call__` may run `call` itself where Keras' `Layer.__call__`
    # would do nothing else (`_calls_directly`): not for a layer that calls
    # other layers or reads float variables in `call`, which need Keras'
    # call machinery (autocast, build, layouts).
    _DIRECT_CALLS = True

    def _calls_directly(self, args, kwargs):
        """Whether this call skips Keras' `Layer.__call__`.

        On a backend whose eager calls it serves (torch: `_backends`), a
        call with one tensor of the layer's compute dtype and an explicit
        Python bool `training` needs none of Keras' machinery: no input
        conversion, cast, mask, build, input check, layout, regularizer or
        symbolic node. There, `__call__` costs more than the dropout itself
        (some 70 microseconds of Python on a CPU), so the layer runs `call`
        directly, with what Keras' call context would record (see
        `_direct_call`). Any other call goes through Keras.
        """
        if not (self._DIRECT_CALLS and _KERAS_CALL_CONTEXT) or len(args) != 1:
            return False
        if type(kwargs.get("training")) is not bool:
            return False
        if len(kwargs) != 1 + ("mask_id" in kwargs):
            return False
        direct = _backends.fast_path("calls_directly")
        x = args[0]
        return (
            direct is not None
            and direct(self, x)
            and self.built
            and _checks.dtype_name(x.dtype) == self.compute_dtype
            and _rank_spec_met(self.input_spec, x)
            and self.activity_regularizer is None
            and getattr(self, "_remat_mode", None) is None
            and getattr(self, "_call_context_args", _TRAINING_ONLY) == _TRAINING_ONLY
            and keras.distribution.distribution() is None
        )

    def _direct_call(self, inputs, training, **kwargs):
        """`call`, with the effects of Keras' `Layer.__call__` on such a
        call: the layer is marked called, and `training` is recorded in the
        call context, where layers called after this one inside the same
        outer call, without a `training` of their own, read it."""
        if not getattr(self, "_called", True):
            self._called = True
        context = self._get_call_context()  # entered here if none is open
        try:
            context.training = training  # Keras' `CallContext.set_value`
            return self.call(inputs, training=training, **kwargs)
        finally:
            self._maybe_reset_call_context()

    def call(self, inputs, training=False, mask_id=None):
        if not training:
            sampling = getattr(_SAMPLING, "current", None)
            if sampling is not None and self._draws_masks():
                return self._monte_carlo(inputs, sampling)
            return self._inference(inputs)
        _checks.floating(inputs)
        if not self._draws_masks():
            return self._inference(inputs)
        if mask_id is not None:
            return self._training(inputs, mask_id)
        # A snapshot: a backward pass that redraws the mask after the
        # assignment (a custom gradient, or a compiler's recomputation)
        # still sees this step's value.
        counter = _random.snapshot(self.counter)
        outputs = self._training(inputs, counter)
        # The backend tensor's own `+`: int32 on every backend, wrapping
        # like the engine's words, with the 1 passed as a scalar. keras.ops
        # would make it a tensor first: an eager op, and on a GPU under
        # torch a host-to-device copy that waits for the device.
        self.counter.assign(counter + 1)
        return outputs

    def _monte_carlo(self, inputs, sampling):
        """Inside `kdv.mc_predict`: `inputs` holds `sampling.samples` copies
        of a batch, sample-major; copy `k` draws the masks of Monte-Carlo
        sample `sampling.first_sample + k` (its mask id), for the batch's
        rows of the global input (`shard_rows`). The step counter is not
        used or advanced."""
        _checks.floating(inputs)
        copies = ops.split(inputs, sampling.samples, axis=0)
        outputs = []
        with _distribute.shard_rows(sampling.first_row):
            for k, copy in enumerate(copies):
                outputs.append(self._training(copy, sampling.mask_id(k)))
        return ops.concatenate(outputs, axis=0)

    def _first_row(self, inputs, noise_shape=None):
        """The global index of `inputs`' first row under data parallelism
        (0 on one device; see `keras_dropout_variants.distribute`), for
        masks or noise of `noise_shape`. 0 without asking where the rows
        share them (the batch axis broadcast): under TensorFlow and PyTorch
        asking may cost a small collective."""
        if not _ops._rows_have_own_masks(inputs, noise_shape):
            return 0
        return _distribute.first_row(inputs)

    def load_own_variables(self, store):
        if not len(store.keys()):
            # Saved where a layer without a step counter stood: a model
            # switching from `keras.layers.Dropout` to this package.
            warnings.warn(
                "Loaded weights that hold no step counter for a "
                "keras_dropout_variants layer (saved with keras.layers.Dropout, "
                "say): its counter starts at 0.",
                stacklevel=2,
            )
            self.counter.assign(0)
            return
        super().load_own_variables(store)

    def _draws_masks(self):
        return True

    def _inference(self, inputs):
        return inputs

    def _training(self, inputs, counter):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# The call-context arguments of a layer whose direct calls resolve them.
_TRAINING_ONLY = frozenset(("training",))
# Keras' call-context methods that `_direct_call` uses (every Keras 3 so far).
_KERAS_CALL_CONTEXT = all(
    hasattr(keras.layers.Layer, name) for name in ("_get_call_context", "_maybe_reset_call_context")
)


def _rank_spec_met(spec, x):
    """Whether `x` meets `spec` (None, or the only kind the package's layers
    set: a rank), so that Keras' input check would pass."""
    if spec is None:
        return True
    return (
        isinstance(spec, keras.layers.InputSpec)
        and spec.ndim == len(x.shape)
        and spec.shape is None and spec.dtype is None and not spec.axes
        and spec.min_ndim is None and spec.max_ndim is None
    )


# The Monte-Carlo sampling `kdv.mc_predict` is running in this thread, or
# None: while set, the layers draw masks at inference (see `_monte_carlo`).
_SAMPLING = threading.local()


class _RateState(keras.random.SeedGenerator):
    """A float32 scalar variable held the way Keras holds a random state.

    A `SeedGenerator` attribute of a layer is part of `layer.variables`, so
    a compiled `fit()` passes its value in at every step (under JAX too) and
    an assignment between steps takes effect without a retrace; and it is
    not part of `layer.weights`, so weight lists and weight files are the
    same as without it. Only that holding is used: `state` is the rate.
    """

    def __init__(self, name):  # noqa: D107 (no seed state: not calling super)
        self.name = name
        # Not autocast: under a mixed policy, Keras' `__call__` would read it
        # as float16, and the keep threshold of the rounded rate would draw
        # other masks than the float32 policy's.
        self.state = keras.Variable(0.0, dtype="float32", trainable=False, autocast=False, name=name)


def _draw_seed():
    return python_random.randint(0, _checks.U32 - 1)
