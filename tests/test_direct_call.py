"""Layer calls that skip Keras' `Layer.__call__` (`StochasticLayer._calls_directly`):
taken for eager torch calls, and giving what Keras' call gives, state and
call context included; everything else goes through Keras."""

import keras
import numpy as np
import pytest

import keras_dropout_variants as kdv
from conftest import BACKEND, normal_data, steps_taken, to_np

# (layer factory, input shape): every layer of the package that may call
# directly (DropConnect wraps a Dense: never).
LAYERS = {
    "Dropout": (lambda: kdv.Dropout(0.3, seed=3), (8, 16)),
    "Dropout/noise_shape": (lambda: kdv.Dropout(0.3, noise_shape=(None, 1, 4), seed=3), (4, 5, 4)),
    "SeededDropout": (lambda: kdv.SeededDropout(0.3, seed=3), (8, 16)),
    "SpatialDropout1D": (lambda: kdv.SpatialDropout1D(0.3, seed=3), (4, 5, 6)),
    "SpatialDropout2D": (lambda: kdv.SpatialDropout2D(0.3, seed=3), (2, 4, 4, 3)),
    "GaussianDropout": (lambda: kdv.GaussianDropout(0.3, seed=3), (8, 16)),
    "GaussianNoise": (lambda: kdv.GaussianNoise(0.5, seed=3), (8, 16)),
    "AlphaDropout": (lambda: kdv.AlphaDropout(0.3, seed=3), (8, 16)),
    "DropPath": (lambda: kdv.DropPath(0.3, seed=3), (8, 16)),
    "DropBlock2D": (lambda: kdv.DropBlock2D(0.3, block_size=3, seed=3), (2, 8, 8, 3)),
}


def through_keras(layer):
    """The same layer, made to go through Keras' `Layer.__call__`."""
    layer._DIRECT_CALLS = False
    return layer


def direct(layer, x, **kwargs):
    return layer._calls_directly((keras.ops.convert_to_tensor(x),), kwargs)


def test_eager_calls_are_direct_on_torch_only():
    # Where the backend serves direct calls (torch), a plain eager training or
    # inference call takes them: this fails if a Keras release changes what
    # the checks rely on, instead of silently losing the speed.
    layer = kdv.Dropout(0.5, seed=1)
    x = normal_data()
    on_torch = BACKEND == "torch"
    assert direct(layer, x, training=True) is on_torch
    assert direct(layer, x, training=False) is on_torch
    assert direct(layer, x, training=True, mask_id=3) is on_torch
    # Not a plain call: Keras' `__call__` resolves, converts or checks.
    assert not direct(layer, x)  # training from the call context
    assert not direct(layer, x, training=None)
    assert not layer._calls_directly((x,), {"training": True})  # a NumPy array
    assert not direct(layer, x.astype("float64"), training=True)  # cast to float32
    assert not direct(kdv.SpatialDropout1D(0.5, seed=1), x, training=True)  # rank 2, spec 3
    dense = keras.layers.Dense(4)
    assert not direct(kdv.DropConnect(dense, 0.5, seed=1), x, training=True)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_direct_calls_give_what_keras_calls_give(name):
    make, shape = LAYERS[name]
    ours, keras_path = make(), through_keras(make())
    x = keras.ops.convert_to_tensor(normal_data(shape, seed=2))
    for training in (True, True, False, True):
        np.testing.assert_array_equal(
            to_np(ours(x, training=training)), to_np(keras_path(x, training=training))
        )
    np.testing.assert_array_equal(
        to_np(ours(x, training=True, mask_id=9)), to_np(keras_path(x, training=True, mask_id=9))
    )
    assert steps_taken(ours) == steps_taken(keras_path) == 3
    assert ours._called and keras_path._called


class _Probe(keras.layers.Layer):
    """Records the `training` Keras resolves for it."""

    def call(self, inputs, training=None):
        self.seen = training
        return inputs


class _Outer(keras.layers.Layer):
    """Calls `dropout` with an explicit `training`, then a layer without one."""

    def __init__(self, dropout, **kwargs):
        super().__init__(**kwargs)
        self.dropout = dropout
        self.probe = _Probe()

    def call(self, inputs, training=None):
        return self.probe(self.dropout(inputs, training=not training))


@pytest.mark.parametrize("training", [False, True])
def test_explicit_training_reaches_later_layers_as_through_keras(training):
    # Keras' `__call__` records an explicit `training` in the outer call's
    # context, where a later layer called without one reads it: a direct call
    # does the same.
    x = keras.ops.convert_to_tensor(normal_data())
    seen = {}
    for name, dropout in (("keras", keras.layers.Dropout(0.5, seed=1)), ("ours", kdv.Dropout(0.5, seed=1))):
        outer = _Outer(dropout)
        outer(x, training=training)
        seen[name] = outer.probe.seen
    assert seen["ours"] == seen["keras"] == (not training)
    # Called alone, a layer opens and closes its own context: nothing lingers.
    kdv.Dropout(0.5, seed=1)(x, training=True)
    probe = _Probe()
    probe(x)
    assert probe.seen is None


def test_masked_inputs_keep_their_mask_as_through_keras():
    x = normal_data((2, 5, 4))
    x[:, 3:] = 0.0
    masked = keras.layers.Masking(0.0)(keras.ops.convert_to_tensor(x))
    outputs = {
        name: layer(masked, training=True)
        for name, layer in (("keras", keras.layers.Dropout(0.5, seed=1)), ("ours", kdv.Dropout(0.5, seed=1)))
    }
    masks = {name: getattr(y, "_keras_mask", None) for name, y in outputs.items()}
    if BACKEND != "jax":  # a jax.Array holds no attribute: Keras keeps it elsewhere
        assert masks["keras"] is not None
    assert (masks["ours"] is None) == (masks["keras"] is None)
    if masks["ours"] is not None:
        np.testing.assert_array_equal(to_np(masks["ours"]), to_np(masks["keras"]))


def test_inputs_are_cast_to_the_compute_dtype_as_through_keras():
    x = keras.ops.convert_to_tensor(normal_data(), dtype="float32")
    ours = kdv.Dropout(0.5, seed=1, dtype="mixed_float16")
    theirs = keras.layers.Dropout(0.5, seed=1, dtype="mixed_float16")
    assert keras.backend.standardize_dtype(ours(x, training=True).dtype) == "float16"
    assert keras.backend.standardize_dtype(theirs(x, training=True).dtype) == "float16"
