"""DropPath (stochastic depth), DropBlock and rate schedules."""

import math

import keras
import numpy as np
import pytest

import reference
from conftest import BACKEND, normal_data, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops
from keras_dropout_variants import random as kr

# --- DropPath ---


@pytest.mark.parametrize("shape", [(8, 5), (8, 3, 4), (8, 2, 2, 3)])
def test_drop_path_equals_dropout_with_a_per_example_noise_shape(shape):
    layer, x = kdv.DropPath(0.4, seed=5), normal_data(shape)
    noise_shape = (None,) + (1,) * (len(shape) - 1)
    for counter in range(3):
        np.testing.assert_array_equal(
            to_np(layer(x, training=True)),
            to_np(kops.dropout(x, 0.4, noise_shape, seed=5, counter=counter)),
        )
    assert steps_taken(layer) == 3


def test_drop_path_without_scaling_and_per_batch():
    x = normal_data((64, 3))
    keep = reference.keep_mask((64, 1), 0.3, 2, 0)
    got = to_np(kdv.DropPath(0.3, seed=2, scale_by_keep=False)(x, training=True))
    np.testing.assert_array_equal(got, np.where(keep, x, 0))
    layer = kdv.DropPath(0.5, seed=3, mode="batch")
    outcomes = []
    for mask_id in range(400):
        y = to_np(layer(x, training=True, mask_id=mask_id))
        assert np.array_equal(y, 2 * x) or not y.any()  # the whole batch at once
        outcomes.append(bool(y.any()))
    # 400 independent draws of p = 0.5: 5 standard deviations is 50.
    assert abs(sum(outcomes) - 200) < 5 * math.sqrt(400 * 0.25)


def test_drop_path_keeps_examples_at_one_minus_rate():
    n, rate = 20_000, 0.2
    y = to_np(kdv.DropPath(rate, seed=7)(np.ones((n, 4), "float32"), training=True))
    assert ((y == 0) | (y == np.float32(1 / 0.8))).all()
    assert (y == y[:, :1]).all()
    kept = (y[:, 0] != 0).mean()
    assert abs(kept - (1 - rate)) < 5 * math.sqrt(rate * (1 - rate) / n)  # 5 sigma binomial


def test_drop_path_edges_config_and_alias():
    x = normal_data((4, 3))
    np.testing.assert_array_equal(to_np(kdv.DropPath(0.0, seed=1)(x, training=True)), x)
    np.testing.assert_array_equal(to_np(kdv.DropPath(1.0, seed=1)(x, training=True)), np.zeros_like(x))
    np.testing.assert_array_equal(to_np(kdv.DropPath(0.5, seed=1)(x)), x)
    assert kdv.StochasticDepth is kdv.DropPath
    layer = kdv.DropPath(0.3, seed=4, scale_by_keep=False, mode="batch", name="dp")
    clone = kdv.DropPath.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match=r"`mode` must be 'row' or 'batch'. Received: mode='col'"):
        kdv.DropPath(0.1, mode="col")
    with pytest.raises(TypeError, match="`scale_by_keep` must be a bool"):
        kdv.DropPath(0.1, scale_by_keep=1)


def test_drop_path_rates_are_numpy_linspace():
    for depth, max_rate in ((1, 0.3), (2, 0.1), (12, 0.2), (50, 0.5)):
        np.testing.assert_allclose(kdv.drop_path_rates(depth, max_rate), np.linspace(0, max_rate, depth), atol=1e-15)
        assert all(type(r) is float for r in kdv.drop_path_rates(depth, max_rate))
    with pytest.raises(ValueError, match="`depth` must be a positive integer"):
        kdv.drop_path_rates(0, 0.1)
    with pytest.raises(ValueError, match="`max_rate` must be a float in"):
        kdv.drop_path_rates(3, 1.5)


# --- DropBlock ---


def drop_block_reference(shape, rate, block_size, seed, counter, channels_last=True):
    """The keep mask and per-example scale, from the NumPy engine and the
    paper's geometry (anchors where a whole block fits)."""
    spatial = shape[1:-1] if channels_last else shape[2:]
    sizes = [min(block_size, d) for d in spatial]
    anchors = [d - b + 1 for d, b in zip(spatial, sizes)]
    gamma = min(rate * math.prod(spatial) / (math.prod(sizes) * math.prod(anchors)), 1.0)
    a_shape = (shape[0], *anchors, shape[-1]) if channels_last else (shape[0], shape[1], *anchors)
    centres = ~reference.keep_mask(a_shape, gamma, seed, counter)
    if not channels_last:  # work channels-last
        centres = np.moveaxis(centres, 1, -1)
    dropped = np.zeros((shape[0], *spatial, centres.shape[-1]), bool)
    for index in zip(*np.nonzero(centres)):
        n, *pos, c = index
        block = tuple(slice(p, p + b) for p, b in zip(pos, sizes))
        dropped[(n, *block, c)] = True
    if not channels_last:
        dropped = np.moveaxis(dropped, -1, 1)
    keep = ~dropped
    kept = keep.reshape(shape[0], -1).sum(axis=1)
    scale = np.where(kept > 0, keep[0].size / np.maximum(kept, 1), 0).astype("float32")
    return keep, scale


@pytest.mark.parametrize(
    "cls, shape, block_size, channels_last",
    [
        (kdv.DropBlock2D, (3, 9, 9, 2), 3, True),
        (kdv.DropBlock2D, (3, 9, 7, 2), 4, True),    # even, H != W
        (kdv.DropBlock2D, (2, 2, 6, 5), 2, False),
        (kdv.DropBlock2D, (2, 3, 5, 2), 7, True),    # larger than the map
        (kdv.DropBlock1D, (3, 20, 4), 5, True),
        (kdv.DropBlock1D, (3, 4, 20), 6, False),
        (kdv.DropBlock3D, (2, 5, 4, 6, 2), 2, True),
    ],
)
def test_drop_block_geometry_and_scale_follow_the_paper(cls, shape, block_size, channels_last):
    layer = cls(0.3, block_size, data_format="channels_last" if channels_last else "channels_first", seed=11)
    x = normal_data(shape, 3) + 5.0  # no zero input: zeros are the mask
    for counter in range(2):
        keep, scale = drop_block_reference(shape, 0.3, block_size, 11, counter, channels_last)
        expected = np.where(keep, x * scale.reshape((-1,) + (1,) * (len(shape) - 1)), 0)
        np.testing.assert_allclose(to_np(layer(x, training=True)), expected, rtol=1e-6)


def test_drop_block_gives_no_nan_for_any_block_and_map_size():
    for size in (1, 2, 5):
        for block_size in (1, 2, 4, 9):
            for rate in (0.1, 0.999):
                x = normal_data((2, size, size, 2))
                y = to_np(kdv.DropBlock2D(rate, block_size, seed=size)(x, training=True))
                assert y.shape == x.shape and np.isfinite(y).all(), (size, block_size, rate)
    # An example with everything dropped gives zeros, not NaN.
    y = to_np(kdv.DropBlock2D(0.999, 1, seed=1)(np.ones((4, 1, 1, 1), "float32"), training=True))
    assert np.isfinite(y).all() and set(np.unique(y)) <= {0.0, 1.0}


def test_drop_block_drop_fraction_matches_the_papers_gamma():
    # 64 examples x 8 channels of 32x32 maps, block 5, rate 0.1. The exact
    # expected fraction: position p is dropped unless all n(p) anchors
    # covering it are off. Bound: changing one anchor changes at most 25
    # dropped units, so (Efron-Stein) the count's standard deviation is at
    # most 25 * sqrt(anchors * gamma * (1 - gamma)); 5 of those.
    n, side, bs, rate, channels = 64, 32, 5, 0.1, 8
    y = to_np(kdv.DropBlock2D(rate, bs, seed=3)(np.ones((n, side, side, channels), "float32"), training=True))
    valid = side - bs + 1
    gamma = rate * side * side / (bs * bs * valid * valid)
    cover = np.array([min(p, valid - 1) - max(p - bs + 1, 0) + 1 for p in range(side)])
    expected = 1 - np.mean((1 - gamma) ** np.outer(cover, cover))
    measured = (y == 0).mean()
    anchors = n * channels * valid * valid
    sigma = bs * bs * math.sqrt(anchors * gamma * (1 - gamma)) / y.size
    assert abs(measured - expected) < 5 * sigma, (measured, expected, sigma)
    assert abs(expected - rate) < 0.01  # the paper's gamma gives about `rate` here


def test_drop_block_rescales_per_example_independent_of_the_batch():
    x = np.ones((6, 10, 10, 3), "float32")
    layer = kdv.DropBlock2D(0.3, 3, seed=2)
    y = to_np(layer(x, training=True, mask_id=0))
    np.testing.assert_allclose(y.reshape(6, -1).mean(axis=1), 1.0, rtol=1e-5)  # mean kept per example
    with kdv.shard_rows(4):  # examples 4 and 5 alone: their outputs are unchanged
        part = to_np(layer(x[4:], training=True, mask_id=0))
    np.testing.assert_array_equal(part, y[4:])


def test_drop_block_config_checks_and_edges():
    layer = kdv.DropBlock2D(0.2, 3, data_format="channels_first", seed=1, name="db")
    config = layer.get_config()
    assert {k: config[k] for k in ("rate", "block_size", "data_format", "seed")} == {
        "rate": 0.2, "block_size": 3, "data_format": "channels_first", "seed": 1}
    assert kdv.DropBlock2D.from_config(config).get_config() == config
    x = normal_data((2, 3, 6, 6))
    np.testing.assert_array_equal(to_np(kdv.DropBlock2D(0.0, 3, seed=1)(x, training=True)), x)
    np.testing.assert_array_equal(to_np(kdv.DropBlock2D(1.0, 3, seed=1)(x, training=True)), 0 * x)
    np.testing.assert_array_equal(to_np(layer(x)), x)
    with pytest.raises(ValueError, match="`block_size` must be a positive integer. Received: block_size=0"):
        kdv.DropBlock2D(0.1, 0)
    with pytest.raises(ValueError, match="expected ndim=4"):
        layer(np.ones((2, 3), "float32"), training=True)


# --- Models: save, resume ---


@pytest.mark.parametrize("make", [lambda: kdv.DropPath(0.3, seed=1), lambda: kdv.DropBlock2D(0.3, 2, seed=1)])
def test_save_load_and_resume(make, tmp_path):
    x = normal_data((8, 6, 6, 2))
    model = keras.Sequential([keras.Input((6, 6, 2)), make(), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(x, x.reshape(8, -1)[:, :1], batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert steps_taken(loaded.layers[0]) == 2
    np.testing.assert_array_equal(to_np(loaded.layers[0](x, training=True)), to_np(model.layers[0](x, training=True)))


# --- Rate schedules ---


def test_a_rate_tensor_draws_the_float32_threshold_on_every_backend():
    # floor(float32(1 - r) * 2**32): computed in the graph, the same bits as
    # this NumPy reference (and the cross-backend test compares backends).
    for r in (0.0, 1e-9, 0.1, 0.3, 0.5, 0.77, 0.999, 1.0):
        variable = keras.Variable(r, dtype="float32", trainable=False)
        got = to_np(kr.keep_mask((4096,), variable, 9, 2))
        t = math.floor(float(np.float32(1) - np.float32(r)) * 2**32)
        words = reference.uniform_words((4096,), 9, 2).astype(np.int64)
        np.testing.assert_array_equal(got, words < t if t < 2**32 else np.ones(4096, bool))
        x = normal_data((4096,))
        y = to_np(kops.dropout(x, variable, seed=9, counter=2))
        scale = np.float32(1) / (np.float32(1) - np.float32(r)) if r < 1 else 0
        np.testing.assert_allclose(y, np.where(got, x * scale, 0), rtol=1e-6)


class CountedDropBlock(kdv.DropBlock2D):
    """Counts Python calls of `call`: in a compiled fit(), one per trace."""

    calls = 0

    def call(self, inputs, training=False, mask_id=None):
        type(self).calls += 1
        return super().call(inputs, training=training, mask_id=mask_id)


@pytest.mark.parametrize("per_layer", [False, True])
def test_schedule_changes_the_rate_in_compiled_fit_without_retracing(per_layer):
    CountedDropBlock.calls = 0
    x = np.ones((16, 4, 4, 2), "float32")
    blocks = CountedDropBlock(0.5, 2, seed=1)
    path = kdv.DropPath(0.5, seed=2)
    model = keras.Sequential([keras.Input((4, 4, 2)), blocks, path, keras.layers.Flatten(),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="ones", trainable=False)])
    # Compiled (XLA, tf.function); torch: eager here, compiled below.
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=BACKEND != "torch")
    rates = [0.0, 1.0, 0.0, 1.0]
    schedule = (lambda e: [rates[e], 0.0]) if per_layer else (lambda e: rates[e])
    ramp = kdv.callbacks.RateSchedule(model, schedule)
    assert ramp.layers == [blocks, path]
    losses = model.fit(x, np.zeros((16, 1)), batch_size=8, epochs=4, callbacks=[ramp], verbose=0).history["loss"]
    # Rate 0: every unit kept, output 32 per example, loss 32**2; rate 1: zeros.
    np.testing.assert_allclose(losses, [1024.0, 0.0, 1024.0, 0.0], rtol=1e-6)
    assert blocks.rate == 1.0 and steps_taken(blocks) == 8
    if BACKEND != "torch":  # (eager torch traces nothing)
        traces = CountedDropBlock.calls
        assert traces <= 2, traces  # traced once (twice at most: TF may trace symbolically first)
        model.fit(x, np.zeros((16, 1)), batch_size=8, epochs=4, callbacks=[ramp], verbose=0)
        assert CountedDropBlock.calls == traces  # the second fit() reuses the step


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile: the torch leg")
def test_schedule_under_torch_compile_compiles_no_new_graph():
    # torch.compile runs call() around its graphs at every step: count the
    # graphs it compiled instead, before and after more rate changes.
    from torch._dynamo.utils import counters

    x = np.ones((16, 32), "float32")
    model = keras.Sequential([keras.Input((32,)), kdv.Dropout(0.5, seed=2),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
    rates = [0.0, 1.0, 0.0]
    ramp = kdv.callbacks.RateSchedule(model, lambda epoch: rates[epoch])
    losses = model.fit(x, np.zeros((16, 1)), batch_size=8, epochs=2, callbacks=[ramp], verbose=0).history["loss"]
    np.testing.assert_allclose(losses, [1024.0, 0.0], rtol=1e-6)
    graphs = counters["stats"]["unique_graphs"]
    losses = model.fit(x, np.zeros((16, 1)), batch_size=8, epochs=3, callbacks=[ramp], verbose=0).history["loss"]
    np.testing.assert_allclose(losses, [1024.0, 0.0, 1024.0], rtol=1e-6)
    assert counters["stats"]["unique_graphs"] == graphs


def test_schedule_masks_are_the_variable_rate_masks():
    x = normal_data((32, 10))
    layer = kdv.Dropout(0.25, seed=4)
    model = keras.Sequential([keras.Input((10,)), layer])
    kdv.callbacks.RateSchedule([layer], lambda epoch: 0.25).set_model(model)
    variable = keras.Variable(0.25, dtype="float32", trainable=False)
    np.testing.assert_array_equal(
        to_np(layer(x, training=True)), to_np(kops.dropout(x, variable, seed=4, counter=0))
    )


def test_schedule_under_a_mixed_policy_draws_the_float32_rate_masks():
    # Keras' `__call__` of a mixed-policy layer autocasts float variables it
    # reads to float16; the scheduled rate is read in float32 (0.1 in float16
    # is 0.0999755859375, another keep threshold).
    x = np.ones((64, 1024), "float32")
    kept = {}
    for policy in ("float32", "mixed_float16"):
        layer = kdv.Dropout(0.5, seed=1, dtype=policy)
        inputs = keras.Input((1024,))
        model = keras.Model(inputs, layer(inputs))
        ramp = kdv.callbacks.RateSchedule(model, lambda epoch: 0.1)
        ramp.set_model(model)  # as fit() does
        ramp.on_epoch_begin(0)
        kept[policy] = to_np(model(x, training=True)) != 0
    np.testing.assert_array_equal(kept["mixed_float16"], kept["float32"])


def test_schedule_checks_its_arguments():
    with pytest.raises(TypeError, match="`schedule` must be a callable"):
        kdv.callbacks.RateSchedule([kdv.Dropout(0.1)], 0.1)
    with pytest.raises(TypeError, match="`layers` must be a list of the package's layers"):
        kdv.callbacks.RateSchedule([kdv.GaussianNoise(0.1)], lambda e: 0.1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="holds none of the package's layers"):
        kdv.callbacks.RateSchedule(model, lambda e: 0.1)
    layer = kdv.Dropout(0.1)
    ramp = kdv.callbacks.RateSchedule([layer], lambda e: 1.5)
    with pytest.raises(ValueError, match=r"`schedule\(0\)` must be a float in \[0, 1\]"):
        ramp.on_epoch_begin(0)
    ramp = kdv.callbacks.RateSchedule([layer], lambda e: [0.1, 0.2])
    with pytest.raises(ValueError, match="returned 2 rates for 1 layers"):
        ramp.on_epoch_begin(0)
