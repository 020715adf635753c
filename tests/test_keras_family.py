"""The Keras dropout family on the package's engine: SpatialDropout1D/2D/3D,
GaussianDropout, AlphaDropout, GaussianNoise, each against its
`keras.layers` namesake and its functional op."""

import math

import keras
import numpy as np
import pytest

import reference
from conftest import normal_data, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops
from keras_dropout_variants import random as kr

# name -> (constructor arguments, input shape); Keras' layer of the same name
# takes the same arguments.
FAMILY = {
    "SpatialDropout1D": ((0.4,), (6, 5, 8)),
    "SpatialDropout2D": ((0.4,), (6, 4, 4, 8)),
    "SpatialDropout3D": ((0.4,), (6, 3, 3, 3, 8)),
    "GaussianDropout": ((0.4,), (6, 8)),
    "AlphaDropout": ((0.4,), (6, 8)),
    "GaussianNoise": ((0.4,), (6, 8)),
}
NAMES = sorted(FAMILY)
SPATIAL = {  # name, data_format -> noise shape for FAMILY's input
    ("SpatialDropout1D", None): (6, 1, 8),
    ("SpatialDropout2D", "channels_last"): (6, 1, 1, 8),
    ("SpatialDropout2D", "channels_first"): (6, 4, 1, 1),
    ("SpatialDropout3D", "channels_last"): (6, 1, 1, 1, 8),
    ("SpatialDropout3D", "channels_first"): (6, 3, 1, 1, 1),
}


def make(layer_name, seed=3, **kwargs):
    args, _ = FAMILY[layer_name]
    return getattr(kdv, layer_name)(*args, seed=seed, **kwargs)


def data(name, seed=0):
    return normal_data(FAMILY[name][1], seed)


# --- Drop-in: Keras' arguments, config, checks, shapes, inference ---


@pytest.mark.parametrize("name", NAMES)
def test_config_keys_equal_keras_and_round_trip(name):
    ours, theirs = make(name, name="n"), getattr(keras.layers, name)(*FAMILY[name][0], seed=3, name="n")
    config = ours.get_config()
    assert set(config) == set(theirs.get_config())
    assert {k: config[k] for k in theirs.get_config() if k != "dtype"} == {
        k: v for k, v in theirs.get_config().items() if k != "dtype"
    }
    clone = type(ours).from_config(config)
    assert clone.get_config() == config
    x = data(name)
    np.testing.assert_array_equal(to_np(clone(x, training=True)), to_np(ours(x, training=True)))


@pytest.mark.parametrize("name", NAMES)
def test_inference_passes_the_input_through_and_shapes_are_kept(name):
    layer, x = make(name), data(name)
    np.testing.assert_array_equal(to_np(layer(x)), x)
    np.testing.assert_array_equal(to_np(layer(x, training=False)), x)
    ints = np.arange(x.size, dtype="int32").reshape(x.shape)
    assert to_np(layer(ints)).dtype == np.int32  # untouched at inference, as Keras
    with pytest.raises(TypeError, match="floating-point"):
        layer(ints, training=True)
    assert layer.compute_output_shape((None,) + x.shape[1:]) == (None,) + x.shape[1:]
    assert steps_taken(layer) == 0


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("Spatial")])
def test_spatial_layers_check_the_input_rank_as_keras(name):
    layer = make(name)
    wrong = np.ones((2, 3), "float32")
    for training in (False, True):
        with pytest.raises(ValueError, match="expected ndim="):
            layer(wrong, training=training)


@pytest.mark.parametrize("name", ["SpatialDropout2D", "SpatialDropout3D"])
def test_data_format_defaults_to_the_image_data_format(name):
    assert make(name).data_format == "channels_last"
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        assert make(name).data_format == "channels_first"
    finally:
        keras.config.set_image_data_format(previous)
    assert make(name, data_format="Channels_First").data_format == "channels_first"  # as Keras
    with pytest.raises(ValueError, match=r"`data_format` must be .*Received: data_format='nhwc'"):
        make(name, data_format="nhwc")


# --- Bits defined by the engine ---


@pytest.mark.parametrize("name, data_format", sorted(SPATIAL, key=str))
def test_spatial_output_is_ops_dropout_with_keras_noise_shape(name, data_format):
    kwargs = {} if data_format is None else {"data_format": data_format}
    layer, x = make(name, **kwargs), data(name)
    noise_shape = SPATIAL[(name, data_format)]
    for counter in range(2):
        np.testing.assert_array_equal(
            to_np(layer(x, training=True)),
            to_np(kops.dropout(x, 0.4, noise_shape=noise_shape, seed=3, counter=counter)),
        )
    # Whole maps: the mask of the NumPy reference, broadcast.
    keep = reference.keep_mask(noise_shape, 0.4, 3, 5)
    expected = np.where(np.broadcast_to(keep, x.shape), x * np.float32(1 / 0.6), 0)
    np.testing.assert_array_equal(to_np(layer(x, training=True, mask_id=5)), expected)


def test_alpha_dropout_keeps_the_engine_mask_with_keras_affine_correction():
    x = normal_data((64, 10))
    rate, alpha_p = 0.3, -1.7580993408473766
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    for noise_shape, mask_shape in ((None, (64, 10)), ((None, 1), (64, 1))):
        layer = kdv.AlphaDropout(rate, noise_shape=noise_shape, seed=11)
        keep = reference.keep_mask(mask_shape, rate, 11, 0)
        expected = np.where(np.broadcast_to(keep, x.shape), a * x + b, a * alpha_p + b)
        np.testing.assert_allclose(to_np(layer(x, training=True)), expected, rtol=1e-6, atol=1e-6)
        # The same keep decisions as Dropout with that noise shape.
        dropped = to_np(kdv.Dropout(rate, noise_shape=noise_shape, seed=11)(np.ones_like(x), training=True))
        np.testing.assert_array_equal(np.broadcast_to(keep, x.shape), dropped != 0)
    # A dropped NaN becomes the constant, as Dropout's become 0.
    nan = np.full((1000,), np.nan, "float32")
    y = to_np(kdv.AlphaDropout(rate, seed=1)(nan, training=True))
    assert np.isnan(y).sum() == reference.keep_mask((1000,), rate, 1, 0).sum()


def test_gaussian_layers_use_the_engine_normal():
    x = normal_data((32, 10))
    z = to_np(kr.normal((32, 10), 4, 0))
    s = math.sqrt(0.4 / 0.6)
    got = to_np(kdv.GaussianDropout(0.4, seed=4)(x, training=True))
    np.testing.assert_allclose(got, x * (1 + s * z), rtol=1e-6, atol=1e-6)
    got = to_np(kdv.GaussianNoise(0.4, seed=4)(x, training=True))
    np.testing.assert_allclose(got, x + 0.4 * z, rtol=1e-6, atol=1e-6)
    # The uniforms behind z are the reference's words, exactly.
    words = reference.uniform_words((32, 10), 4, 0) >> np.uint32(9)
    u = (words.astype(np.float64) + 0.5) * 2.0**-23
    from scipy.special import erfinv  # noqa: PLC0415  (scipy comes with scikit-learn)

    np.testing.assert_allclose(z, np.sqrt(2) * erfinv(2 * u - 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_counter_mask_id_and_resume(name, tmp_path):
    layer, x = make(name, seed=9), data(name)
    first, second = to_np(layer(x, training=True)), to_np(layer(x, training=True))
    assert steps_taken(layer) == 2 and not np.array_equal(first, second)
    np.testing.assert_array_equal(to_np(layer(x, training=True, mask_id=1)), second)
    assert steps_taken(layer) == 2
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True).layers[0]
    assert type(loaded) is type(layer) and steps_taken(loaded) == 2
    np.testing.assert_array_equal(to_np(loaded(x, training=True)), to_np(layer(x, training=True)))


# --- Edges ---


@pytest.mark.parametrize("name", NAMES)
def test_rate_zero_is_the_identity_in_training(name):
    layer = getattr(kdv, name)(0.0, seed=1)
    x = data(name)
    np.testing.assert_array_equal(to_np(layer(x, training=True)), x)


@pytest.mark.parametrize("cls", [kdv.GaussianDropout, kdv.AlphaDropout])
def test_rate_one_is_refused_at_construction(cls):
    with pytest.raises(ValueError, match=r"`rate` must be below 1 .*infinite at 1. Received: rate=1.0"):
        cls(1.0)
    with pytest.raises(ValueError, match="`rate` must be below 1"):
        getattr(kops, {"GaussianDropout": "gaussian_dropout", "AlphaDropout": "alpha_dropout"}[cls.__name__])(
            np.ones(3, "float32"), 1.0, seed=1
        )


@pytest.mark.parametrize("stddev, error", [(-0.1, ValueError), (float("nan"), ValueError),
                                           (float("inf"), ValueError), ("1", TypeError), (True, TypeError)])
def test_gaussian_noise_refuses_bad_stddev(stddev, error):
    with pytest.raises(error, match="`stddev` must be a finite float >= 0"):
        kdv.GaussianNoise(stddev)


def test_gaussian_noise_accepts_stddev_above_one():
    # Keras 3.15 refuses stddev > 1; a larger noise is a legitimate choice.
    y = to_np(kdv.GaussianNoise(3.0, seed=1)(np.zeros((200, 100), "float32"), training=True))
    assert abs(y.std() - 3.0) < 5 * 3.0 / math.sqrt(2 * y.size)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_float16_draws_in_float32_without_overflow(name):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = make(name)
        x = data(name) * 1000.0  # large inputs: float16 holds them, not their squares
        y = layer(x, training=True)
        assert keras.backend.standardize_dtype(y.dtype) == "float16"
        y = to_np(y).astype("float32")
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.isfinite(y).all()
    want = to_np(make(name)(x, training=True))  # the same draws in float32
    np.testing.assert_allclose(y, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


# --- Beyond Keras: noise_shape for the Gaussian layers ---


@pytest.mark.parametrize("cls", [kdv.GaussianDropout, kdv.GaussianNoise])
def test_gaussian_noise_shape_shares_the_noise_along_broadcast_axes(cls):
    x = np.ones((4, 7, 5), "float32")
    layer = cls(0.3, seed=2, noise_shape=(None, 1, None))
    y = to_np(layer(x, training=True))
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :], y.shape))  # every step the same
    assert len(np.unique(y)) > 10
    assert layer.get_config()["noise_shape"] == (None, 1, None)
    assert "noise_shape" not in cls(0.3, seed=2).get_config()  # Keras' config when unset
    assert cls.from_config(layer.get_config()).noise_shape == (None, 1, None)
    with pytest.raises(TypeError):
        cls(0.3, 2, (None, 1, None))  # keyword-only
    # A noise of one value per row, on a square input: along the rows.
    y = to_np(cls(0.3, seed=2, noise_shape=(None, 1))(np.ones((6, 6), "float32"), training=True))
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1], y.shape))


# --- Statistics (bounds: 5 standard errors) ---


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("Spatial")])
def test_spatial_masks_keep_or_drop_whole_channels(name):
    shape = {"SpatialDropout1D": (400, 6, 50), "SpatialDropout2D": (400, 3, 3, 50),
             "SpatialDropout3D": (400, 2, 2, 2, 50)}[name]
    y = to_np(getattr(kdv, name)(0.3, seed=5)(np.ones(shape, "float32"), training=True))
    channels = y.reshape(shape[0], -1, shape[-1])
    assert ((channels == 0) | (channels == np.float32(1 / 0.7))).all()
    assert (channels == channels[:, :1, :]).all()  # one decision per example and channel
    kept = (channels[:, 0, :] != 0).mean()
    n = shape[0] * shape[-1]
    assert abs(kept - 0.7) < 5 * math.sqrt(0.7 * 0.3 / n), kept


def test_gaussian_dropout_keeps_the_mean_with_relative_variance_rate_over_keep():
    rate, n = 0.3, 400_000
    y = to_np(kdv.GaussianDropout(rate, seed=6)(np.full((n,), 2.0, "float32"), training=True)) / 2.0
    var = rate / (1 - rate)
    assert abs(y.mean() - 1) < 5 * math.sqrt(var / n)
    # The variance's standard error for normal samples: var * sqrt(2 / n).
    assert abs(y.var() - var) < 5 * var * math.sqrt(2 / n)


def test_alpha_dropout_keeps_mean_zero_and_variance_one():
    n = 400_000
    x = np.random.default_rng(7).normal(size=(n,)).astype("float32")
    y = to_np(kdv.AlphaDropout(0.2, seed=7)(x, training=True))
    # Standard errors about 1/sqrt(n) for the mean and sqrt(2/n) (at most
    # sqrt(var of y**2 / n), below 3/sqrt(n) here) for the variance.
    assert abs(y.mean()) < 5 / math.sqrt(n)
    assert abs(y.var() - 1) < 5 * 3 / math.sqrt(n)


def test_gaussian_noise_mean_and_standard_deviation():
    n, stddev = 400_000, 0.5
    y = to_np(kdv.GaussianNoise(stddev, seed=8)(np.zeros((n,), "float32"), training=True))
    assert abs(y.mean()) < 5 * stddev / math.sqrt(n)
    assert abs(y.std() - stddev) < 5 * stddev / math.sqrt(2 * n)


# --- Models: fit, and Keras' weight files ---


def model_of(layer_cls, name):
    args, shape = FAMILY[name]
    inputs = keras.Input(shape[1:])
    h = keras.layers.Dense(8)(inputs)
    h = layer_cls(*args, seed=1)(h)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("name", NAMES)
def test_fit_in_sequential_and_functional_models_and_keras_weights_load(name, tmp_path):
    x = data(name, 1)
    y = x.reshape(len(x), -1).sum(axis=1, keepdims=True)
    # Weights saved with Keras' layer load into ours (its counter starts at 0).
    keras.utils.set_random_seed(0)
    theirs = model_of(getattr(keras.layers, name), name)
    path = str(tmp_path / "keras.weights.h5")
    theirs.save_weights(path)
    ours = model_of(getattr(kdv, name), name)
    with pytest.warns(UserWarning, match="no step counter"):
        ours.load_weights(path)
    np.testing.assert_array_equal(ours.predict(x, verbose=0), theirs.predict(x, verbose=0))
    ours.compile("sgd", "mse")
    history = ours.fit(x, y, batch_size=3, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(history).all()
    noisy = [layer for layer in ours.layers if isinstance(layer, getattr(kdv, name))][0]
    assert steps_taken(noisy) == 4
    sequential = keras.Sequential([keras.Input(x.shape[1:]), make(name), keras.layers.Flatten(), keras.layers.Dense(1)])
    sequential.compile("sgd", "mse")
    sequential.fit(x, y, batch_size=3, epochs=1, verbose=0)
    assert steps_taken(sequential.layers[0]) == 2
