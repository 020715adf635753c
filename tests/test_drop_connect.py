"""`DropConnect` / `DropConnectDense` and `ops.drop_connect`."""

import keras
import numpy as np
import pytest

import reference
from conftest import BACKEND, compiled, gradient, normal_data, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops


def fixed_dense(units=5, inputs=12, activation=None, use_bias=True, seed=1):
    dense = keras.layers.Dense(units, activation=activation, use_bias=use_bias)
    dense.build((None, inputs))
    weights = [normal_data((inputs, units), seed)]
    if use_bias:
        weights.append(normal_data((units,), seed + 1))
    dense.set_weights(weights)
    return dense


def test_training_output_uses_the_engine_mask():
    x = normal_data((8, 12))
    dense = fixed_dense()
    layer = kdv.DropConnect(dense, 0.4, seed=9)
    kernel, bias = dense.get_weights()
    for step in range(2):
        y = to_np(layer(x, training=True))
        keep = reference.keep_mask(kernel.shape, 0.4, 9, step)
        expected = x @ np.where(keep, kernel * np.float32(1 / 0.6), 0) + bias
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert steps_taken(layer) == 2


def test_drop_bias_masks_bias_after_the_kernel_stream():
    x = normal_data((8, 12))
    dense = fixed_dense()
    kernel, bias = dense.get_weights()
    y = to_np(kdv.DropConnect(dense, 0.5, seed=3, drop_bias=True)(x, training=True))
    words = reference.keep_mask((kernel.size + bias.size,), 0.5, 3, 0)
    keep_k, keep_b = words[: kernel.size].reshape(kernel.shape), words[kernel.size:]
    expected = x @ np.where(keep_k, kernel * 2, 0) + np.where(keep_b, bias * 2, 0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_per", ["batch", "example"])
def test_mask_id_selects_the_weight_masks_and_leaves_the_counter(mask_per):
    x = normal_data((8, 12))
    dense = fixed_dense(activation="relu")
    layer = kdv.DropConnect(dense, 0.5, seed=3, drop_bias=True, mask_per=mask_per)
    kernel, bias = dense.get_weights()
    expected = np.maximum(to_np(kops.drop_connect(
        x, kernel, 0.5, bias, drop_bias=True, seed=3, counter=6, mask_per=mask_per)), 0)
    for mask_id in (6, keras.ops.convert_to_tensor(6, "int32")):
        np.testing.assert_allclose(to_np(layer(x, training=True, mask_id=mask_id)), expected, rtol=1e-6, atol=1e-6)
    assert steps_taken(layer) == 0


def test_inference_and_rate_zero_equal_the_bare_dense():
    x = normal_data((8, 12))
    dense = fixed_dense(activation="relu")
    bare = to_np(dense(x))
    np.testing.assert_array_equal(to_np(kdv.DropConnect(dense, 0.5, seed=1)(x)), bare)
    np.testing.assert_array_equal(to_np(kdv.DropConnect(dense, 0.0, seed=1)(x, training=True)), bare)


@pytest.mark.parametrize("drop_bias", [False, True])
def test_rate_one_gives_activation_of_bias_without_nan(drop_bias):
    # No NaN from the 1/(1 - rate) scale. (An inf input would still make
    # inf * 0 = NaN inside the product, as in the bare Dense.)
    x = normal_data((8, 12)) * 1e30
    dense = fixed_dense(activation="sigmoid")
    bias = dense.get_weights()[1]
    y = to_np(kdv.DropConnect(dense, 1.0, seed=1, drop_bias=drop_bias)(x, training=True))
    expected = 1 / (1 + np.exp(-(np.zeros_like(bias) if drop_bias else bias)))
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), rtol=1e-6)


def kernel_gradient(rate, seed, counter, x, kernel):
    """d sum(drop_connect(x, W)) / dW."""
    return gradient(lambda w: kops.drop_connect(x, w, rate, seed=seed, counter=counter), kernel)


@pytest.mark.parametrize("rate", [0.3, 1.0])
def test_dropped_weights_get_exactly_zero_gradient(rate):
    x, kernel = normal_data((16, 64)), normal_data((64, 32), 1)
    g = kernel_gradient(rate, 5, 2, x, kernel)
    keep = reference.keep_mask(kernel.shape, rate, 5, 2)
    assert (g[~keep] == 0).all() and np.isfinite(g).all()
    if rate < 1:
        expected = np.broadcast_to(x.sum(0)[:, None] / np.float32(1 - rate), g.shape)
        np.testing.assert_allclose(g[keep], expected[keep], rtol=1e-5, atol=1e-5)
        # Empirical drop fraction of 2048 weights: binomial, 5 sigma.
        n = kernel.size
        assert abs((g == 0).sum() - n * rate) < 5 * np.sqrt(n * rate * (1 - rate))


def test_training_expectation_equals_the_mean_output():
    # Linear activation: E[x (M*W)/(1-p)] = x W. The average of K steps has
    # per-entry variance p/(1-p) * sum_i x_i^2 W_ij^2 / K; bound 5 sigma.
    x = normal_data((4, 12))
    dense = fixed_dense()
    kernel, _ = dense.get_weights()
    layer = kdv.DropConnect(dense, 0.5, seed=2)
    k = 400
    mean = np.mean([to_np(layer(x, training=True)) for _ in range(k)], axis=0)
    sigma = np.sqrt((0.5 / 0.5) * (x**2) @ (kernel**2) / k)
    assert (np.abs(mean - to_np(dense(x))) < 5 * sigma).all()


def test_wrapped_dense_keeps_its_variables_and_unwraps_after_fit():
    x = normal_data((64, 12))
    dense = keras.layers.Dense(5, activation="relu", kernel_regularizer="l2", name="inner")
    wrapper = kdv.DropConnect(dense, 0.3, seed=4)
    model = keras.Sequential([keras.Input((12,)), wrapper, keras.layers.Dense(1)])
    assert [(w.name, tuple(w.shape)) for w in dense.weights] == [("kernel", (12, 5)), ("bias", (5,))]
    assert wrapper.trainable_weights == dense.trainable_weights
    model.compile("adam", "mse")
    before = dense.get_weights()[0].copy()
    model.fit(x, x[:, :1], epochs=2, batch_size=16, verbose=0)
    assert not np.allclose(dense.get_weights()[0], before)  # it trains
    assert len(model.losses) == 1  # the Dense's regularizer still counts
    assert steps_taken(wrapper) == 8
    np.testing.assert_array_equal(to_np(wrapper.layer(x)), to_np(wrapper(x)))


def test_dropconnect_dense_in_sequential_fit_save_reload(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 10)).astype("float32")
    y = (x @ rng.normal(size=(10, 1))).astype("float32")
    model = keras.Sequential(
        [keras.Input((10,)), kdv.DropConnectDense(32, rate=0.3, activation="relu", seed=1),
         keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    losses = model.fit(x, y, epochs=15, batch_size=32, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    path = str(tmp_path / "dc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[0], kdv.DropConnectDense)
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_dropconnect_wrapper_config_round_trip_and_save(tmp_path):
    layer = kdv.DropConnect(keras.layers.Dense(3, activation="tanh"), 0.2, seed=5, drop_bias=True)
    model = keras.Sequential([keras.Input((4,)), layer])
    config = layer.get_config()
    assert {k: config[k] for k in ("rate", "seed", "drop_bias")} == {
        "rate": 0.2, "seed": 5, "drop_bias": True
    }
    clone = kdv.DropConnect.from_config(config)
    assert clone.get_config() == config
    path = str(tmp_path / "w.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = normal_data((2, 4))
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))


def test_dropconnect_dense_config_holds_dense_arguments():
    layer = kdv.DropConnectDense(7, rate=0.1, seed=2, activation="relu", use_bias=False, name="dcd")
    config = layer.get_config()
    assert config["units"] == 7 and config["use_bias"] is False and config["name"] == "dcd"
    assert "layer" not in config
    clone = kdv.DropConnectDense.from_config(config)
    assert clone.get_config() == config
    assert clone.layer.units == 7 and not clone.layer.use_bias


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: kdv.DropConnect(keras.layers.Flatten(), 0.5), ValueError, r"`layer`.*Flatten"),
        (lambda: kdv.DropConnect("dense", 0.5), ValueError, r"`layer`.*'dense'"),
        (lambda: kdv.DropConnect(keras.layers.Dense(2), 1.5), ValueError, r"`rate`.*1.5"),
        (lambda: kdv.DropConnect(keras.layers.Dense(2), 0.5, seed=-3), ValueError, r"`seed`.*-3"),
        (lambda: kdv.DropConnect(keras.layers.Dense(2), 0.5, drop_bias="yes"), TypeError, r"`drop_bias`.*'yes'"),
        (lambda: kdv.DropConnectDense(4, rate="0.5"), TypeError, r"`rate`.*'0.5'"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_quantized_dense_is_refused():
    dense = keras.layers.Dense(4)
    dense.build((None, 8))
    dense.quantize("int8")
    with pytest.raises(ValueError, match="quantized.*int8"):
        kdv.DropConnect(dense, 0.5)


def test_integer_inputs_raise_type_error():
    layer = kdv.DropConnect(fixed_dense(), 0.5, seed=1)
    with pytest.raises(TypeError, match="floating"):
        layer(keras.ops.ones((2, 12), "int32"), training=True)


def test_lora_kernel_is_the_one_dropped():
    x = normal_data((8, 12))
    dense = fixed_dense()
    dense.enable_lora(2)
    layer = kdv.DropConnect(dense, 0.5, seed=6)
    effective = to_np(dense.kernel)  # kernel + lora_a @ lora_b * scale
    y = to_np(layer(x, training=True))
    keep = reference.keep_mask(effective.shape, 0.5, 6, 0)
    expected = x @ np.where(keep, effective * 2, 0) + dense.get_weights()[1]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert len(layer.trainable_weights) == 3  # bias, lora_a, lora_b (kernel frozen)


def gaussian_setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 64)).astype("float32")
    kernel = (rng.normal(size=(64, 16)) * 0.2).astype("float32")
    bias = (rng.normal(size=(16,)) * 0.3).astype("float32")
    dense = keras.layers.Dense(16, activation="relu")
    dense.build((None, 64))
    dense.set_weights([kernel, bias])
    return x, dense


def test_gaussian_inference_matches_monte_carlo_and_beats_mean():
    x, dense = gaussian_setup()
    pairs, k = 256, 1000
    layer = kdv.DropConnect(dense, 0.5, seed=1, inference="gaussian", num_samples=pairs)
    draws = np.stack([to_np(layer(x, training=True)) for _ in range(k)])
    mc = draws.mean(axis=0)  # Monte-Carlo estimate of the training-time expectation
    gauss = to_np(layer(x))
    mean = to_np(dense(x))
    # Both estimates have sampling noise: of the MC mean (var / k) and of the
    # Gaussian average (at most var / (2 * pairs)). 5 sigma of their
    # difference, with var the per-entry variance of the training output.
    var = draws.var(axis=0)
    bound = 5 * np.sqrt(var / k + var / (2 * pairs))
    assert (np.abs(gauss - mc) < bound).all(), np.abs(gauss - mc).max()
    # Seen: mean abs error 0.033 for "gaussian", 0.244 for "mean".
    assert np.abs(gauss - mc).mean() < 0.5 * np.abs(mean - mc).mean()
    np.testing.assert_array_equal(to_np(layer(x)), gauss)  # deterministic


def test_gaussian_inference_with_linear_activation_equals_mean():
    x, dense = gaussian_setup()
    dense.activation = keras.activations.linear
    layer = kdv.DropConnect(dense, 0.3, seed=1, inference="gaussian", num_samples=4)
    np.testing.assert_allclose(to_np(layer(x)), to_np(dense(x)), rtol=1e-5, atol=1e-5)


def test_gaussian_inference_rate_one_is_the_constant_training_output():
    x, dense = gaussian_setup()
    bias = dense.get_weights()[1]
    for drop_bias, pre in [(False, bias), (True, np.zeros_like(bias))]:
        layer = kdv.DropConnect(dense, 1.0, seed=1, drop_bias=drop_bias, inference="gaussian")
        expected = np.broadcast_to(np.maximum(pre, 0), (8, 16))
        np.testing.assert_array_equal(to_np(layer(x)), expected)
        np.testing.assert_array_equal(to_np(layer(x, training=True)), expected)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(inference="median"), r"`inference`.*'median'"), (dict(num_samples=0), r"`num_samples`.*0"),
     (dict(num_samples=2.5), r"`num_samples`.*2.5"), (dict(num_samples=True), r"`num_samples`.*True")],
)
def test_bad_inference_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kdv.DropConnect(keras.layers.Dense(2), 0.5, **kwargs)


# mask_per="example": example b uses block b of the step's stream, a
# (in + 1, out) block whose last row is the bias mask.


def per_example_reference(x, kernel, bias, rate, seed, counter, drop_bias):
    """NumPy per-example DropConnect pre-activation for x of shape (B, ..., in)."""
    batch, units = x.shape[0], kernel.shape[1]
    keep = reference.keep_mask((batch,) + (kernel.shape[0] + 1, units), rate, seed, counter)
    scale = np.float32(1 / (1 - rate))
    kernels = np.where(keep[:, :-1], kernel * scale, 0)  # (B, in, out)
    rows = x.reshape(batch, -1, kernel.shape[0])
    y = np.einsum("bli,bio->blo", rows, kernels)
    if bias is not None:
        y += np.where(keep[:, -1:], bias * scale, 0) if drop_bias else bias
    return y.reshape(x.shape[:-1] + (units,)), keep


# Chunks of 1, 2 (one padded example), 3 (two padded) and all 7 examples.
CHUNKS = [1, 2 * 13 * 5, 3 * 13 * 5, 2**24]


@pytest.mark.parametrize("max_mask_elements", CHUNKS)
@pytest.mark.parametrize("drop_bias", [False, True])
def test_per_example_masks_follow_the_stream_layout(max_mask_elements, drop_bias):
    x, kernel, bias = normal_data((7, 12)), normal_data((12, 5), 1), normal_data((5,), 2)
    y = kops.drop_connect(x, kernel, 0.4, bias, drop_bias, seed=3, counter=2,
                          mask_per="example", max_mask_elements=max_mask_elements)
    expected, keep = per_example_reference(x, kernel, bias, 0.4, 3, 2, drop_bias)
    np.testing.assert_allclose(to_np(y), expected, rtol=1e-5, atol=1e-5)
    # Example 0 gets the batch mask; the others their own.
    batch = kops.drop_connect(x, kernel, 0.4, bias, drop_bias, seed=3, counter=2)
    np.testing.assert_allclose(to_np(y)[0], to_np(batch)[0], rtol=1e-6, atol=1e-6)
    assert len({keep[b].tobytes() for b in range(7)}) == 7


def test_per_example_mask_is_shared_along_middle_axes():
    x, kernel = normal_data((3, 4, 12)), normal_data((12, 5), 1)
    y = kops.drop_connect(x, kernel, 0.5, seed=1, counter=0, mask_per="example",
                          max_mask_elements=13 * 5)
    expected, _ = per_example_reference(x, kernel, None, 0.5, 1, 0, False)
    assert tuple(y.shape) == (3, 4, 5)
    np.testing.assert_allclose(to_np(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_mask_elements", [CHUNKS[2], CHUNKS[3]])
def test_per_example_gradients_reach_only_each_examples_kept_weights(max_mask_elements):
    # For loss sum(y * g): dW = sum_b x_b^T g_b * M_b / (1-p), dx_b = g_b (M_b * W)^T / (1-p),
    # db = sum_b g_b * m_b / (1-p); masks redrawn in the backward pass.
    x, kernel, bias = normal_data((7, 12)), normal_data((12, 5), 1), normal_data((5,), 2)
    g = normal_data((7, 5), 3)
    _, keep = per_example_reference(x, kernel, bias, 0.4, 3, 2, True)
    scale = np.float32(1 / 0.6)
    kept = np.where(keep, scale, 0).astype("float32")  # (B, in + 1, out)

    def op(x, kernel, bias):
        return kops.drop_connect(x, kernel, 0.4, bias, True, seed=3, counter=2,
                                 mask_per="example", max_mask_elements=max_mask_elements)

    d_kernel = gradient(lambda w: op(x, w, bias), kernel, g)
    d_x = gradient(lambda v: op(v, kernel, bias), x, g)
    d_bias = gradient(lambda b: op(x, kernel, b), bias, g)
    np.testing.assert_allclose(d_kernel, np.einsum("bi,bo,bio->io", x, g, kept[:, :-1]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_x, np.einsum("bo,bio,io->bi", g, kept[:, :-1], kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_bias, (g * kept[:, -1]).sum(0), rtol=1e-5, atol=1e-5)
    # Through example 3 alone, exactly the weights its own mask dropped get 0.
    only_3 = np.zeros_like(g)
    only_3[3] = g[3]
    d_kernel_3 = gradient(lambda w: op(x, w, bias), kernel, only_3)
    np.testing.assert_array_equal(d_kernel_3 == 0, ~keep[3, :-1])


def test_per_example_layer_backward_uses_the_steps_own_masks():
    # The custom gradient redraws the masks after the layer advanced its
    # counter: it must still draw this step's.
    x, g = normal_data((7, 12)), normal_data((7, 5), 3)
    dense = fixed_dense()
    kernel = dense.get_weights()[0]
    layer = kdv.DropConnect(dense, 0.4, seed=3, mask_per="example")
    for step in range(2):
        d_x = gradient(lambda v: layer(v, training=True), x, g)
        _, keep = per_example_reference(x, kernel, None, 0.4, 3, step, False)
        kept = np.where(keep[:, :-1], np.float32(1 / 0.6), 0)
        np.testing.assert_allclose(d_x, np.einsum("bo,bio,io->bi", g, kept, kernel), rtol=1e-5, atol=1e-5)
    assert steps_taken(layer) == 2


@pytest.mark.slow
def test_per_example_compiled_equals_eager():
    x, kernel = normal_data((9, 12)), normal_data((12, 5), 1)

    def op(x, counter):
        return kops.drop_connect(x, kernel, 0.3, seed=4, counter=counter, mask_per="example",
                                 max_mask_elements=4 * 13 * 5)

    eager = to_np(op(x, 5))
    fast = to_np(compiled(op)(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(5, "int32")))
    np.testing.assert_allclose(fast, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="dynamic batch sizes are a TF graph feature")
def test_per_example_with_a_dynamic_batch_in_a_tf_graph():
    import tensorflow as tf

    kernel, bias = normal_data((12, 5), 1), normal_data((5,), 2)

    @tf.function(input_signature=[tf.TensorSpec((None, 12), tf.float32)])
    def op(x):
        return kops.drop_connect(x, kernel, 0.4, bias, True, seed=3, counter=2,
                                 mask_per="example", max_mask_elements=3 * 13 * 5)

    for batch in (1, 7, 10):
        x = normal_data((batch, 12))
        expected, _ = per_example_reference(x, kernel, bias, 0.4, 3, 2, True)
        np.testing.assert_allclose(op(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_per_example_layer_fits_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    x = normal_data((100, 10))
    y = x[:, :1] * 2
    layer = kdv.DropConnectDense(16, rate=0.3, activation="relu", seed=1, mask_per="example")
    model = keras.Sequential([keras.Input((10,)), layer, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    losses = model.fit(x, y, epochs=8, batch_size=32, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert steps_taken(layer) == 8 * 4
    assert layer.get_config()["mask_per"] == "example"
    path = str(tmp_path / "pe.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.layers[0].mask_per == "example"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # Training-mode outputs follow the engine: example b uses block b.
    dense = layer.layer
    kernel, bias = dense.get_weights()
    counter = steps_taken(layer)
    pre, _ = per_example_reference(x[:6], kernel, bias, 0.3, 1, counter, False)
    np.testing.assert_allclose(to_np(layer(x[:6], training=True)), np.maximum(pre, 0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: kdv.DropConnectDense(4, mask_per="weights"), ValueError, r"`mask_per`.*'weights'"),
        (lambda: kops.drop_connect(np.ones((2, 3), "float32"), np.ones((3, 4), "float32"), 0.5, seed=1,
                                   mask_per="example", max_mask_elements=0), ValueError, r"`max_mask_elements`.*0"),
        (lambda: kops.drop_connect(np.ones((3,), "float32"), np.ones((3, 4), "float32"), 0.5, seed=1,
                                   mask_per="example"), ValueError, r"batch axis.*\(3,\)"),
        # 1025 examples of (4095 + 1) * 1024 = 2**22 elements exceed a 2**32 stream.
        (lambda: kops.drop_connect(np.zeros((1025, 4095), "float32"), np.zeros((4095, 1024), "float32"),
                                   0.5, seed=1, mask_per="example"), ValueError, r"1025 x 4194304.*2\*\*32"),
    ],
)
def test_bad_per_example_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_activity_regularizer_applies_in_training_as_on_a_plain_dense():
    x = normal_data((8, 12))
    layer = kdv.DropConnectDense(5, rate=0.5, seed=2, activity_regularizer="l2")
    y = layer(x, training=True)
    expected = keras.regularizers.L2(0.01)(y) / 8  # per example, as Keras
    assert len(layer.losses) == 1
    np.testing.assert_allclose(to_np(layer.losses[0]), to_np(expected), rtol=1e-6)
    layer(x)  # inference: the wrapped Dense adds it itself
    assert len(layer.losses) == 1


def test_empty_batch_per_example_gives_the_empty_output_and_gradient():
    layer = kdv.DropConnectDense(5, rate=0.5, seed=2, mask_per="example")
    layer.build((None, 12))
    empty = np.zeros((0, 12), "float32")
    y = layer(empty, training=True)
    assert tuple(y.shape) == (0, 5)
    kernel = to_np(layer.layer.kernel)

    def f(k):
        return kops.drop_connect(empty, k, 0.5, seed=2, mask_per="example")

    grad = gradient(f, kernel)
    assert grad.shape == kernel.shape and not grad.any()


def test_gaussian_inference_computes_its_moments_in_float32():
    # Under mixed_float16 the variance sum(x**2 w**2) overflows float16
    # (here 64 * 40**2 * 2 > 65504) long before the output (2560) does.
    x = np.full((2, 64), 40.0, "float32")
    for activation in (None, "relu"):
        layer = kdv.DropConnectDense(
            1, rate=0.5, seed=1, inference="gaussian", kernel_initializer="ones",
            activation=activation, dtype="mixed_float16",
        )
        y = to_np(layer(x)).astype("float32")
        assert np.isfinite(y).all(), y
        np.testing.assert_allclose(y, 2560.0, rtol=0.05)


@pytest.mark.parametrize("mask_per", ["batch", "example"])
def test_wrong_input_width_and_integer_x_get_clear_errors(mask_per):
    layer = kdv.DropConnectDense(5, rate=0.5, seed=1, mask_per=mask_per)
    layer.build((None, 12))
    with pytest.raises(ValueError, match=r"`inputs` must have a last dimension of 12.*Received: inputs of shape \(3, 7\)"):
        layer(normal_data((3, 7)), training=True)
    kernel = normal_data((12, 5))
    with pytest.raises(ValueError, match=r"`x` must have a last dimension of 12.*Received: x of shape \(3, 7\)"):
        kops.drop_connect(normal_data((3, 7)), kernel, 0.5, seed=1, mask_per=mask_per)
    with pytest.raises(ValueError, match=r"`kernel` must be a matrix"):
        kops.drop_connect(normal_data((3, 12)), kernel[0], 0.5, seed=1, mask_per=mask_per)
    with pytest.raises(TypeError, match=r"`x` must be floating-point.*int32"):
        kops.drop_connect(np.ones((3, 12), "int32"), kernel, 0.5, seed=1, mask_per=mask_per)


@pytest.mark.filterwarnings("ignore:Layer InputLayer does not have a `quantize`:UserWarning")
def test_quantized_model_refuses_what_needs_the_float_kernel():
    # model.quantize quantizes the Dense inside the wrapper: its int8 kernel
    # must not be dropped or moment-matched without its scale (that gave
    # outputs off by 10**3). "mean" inference runs the quantized Dense.
    x = normal_data((4, 12))
    for inference in ("mean", "gaussian"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((12,)),
            kdv.DropConnectDense(6, rate=0.5, seed=1, inference=inference),
        ])
        before = model.predict(x, verbose=0)
        model.quantize("int8")
        with pytest.raises(ValueError, match="quantized Dense.*'int8'"):
            model.layers[0](x, training=True)
        if inference == "mean":
            after = model.predict(x, verbose=0)
            np.testing.assert_allclose(after, before, atol=0.05 * np.abs(before).max())
        else:
            with pytest.raises(ValueError, match="quantized Dense.*'int8'"):
                model.predict(x, verbose=0)


@pytest.mark.parametrize("sharing", ["two_wrappers", "wrapped_then_bare", "bare_then_wrapped", "sequential"])
def test_a_shared_dense_saves_and_loads_as_one_layer(tmp_path, sharing):
    # One Dense behind two wrappers, or wrapped and also called bare: the
    # file must load, with the Dense still shared (one set of weights).
    dense = keras.layers.Dense(3)
    first = kdv.DropConnect(dense, 0.5, seed=1)
    second = kdv.DropConnect(dense, 0.5, seed=2)
    if sharing == "sequential":
        dense = keras.layers.Dense(4)
        first, second = kdv.DropConnect(dense, 0.5, seed=1), kdv.DropConnect(dense, 0.5, seed=2)
        model = keras.Sequential([keras.Input((4,)), first, second])
    else:
        inputs = keras.Input((4,))
        branches = {
            "two_wrappers": lambda: [first(inputs), second(inputs)],
            "wrapped_then_bare": lambda: [first(inputs), dense(inputs)],
            "bare_then_wrapped": lambda: [dense(inputs), first(inputs)],
        }[sharing]()
        model = keras.Model(inputs, keras.layers.Add()(branches))
    path = str(tmp_path / "shared.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert len(loaded.weights) == len(model.weights)
    wrapped = [layer.layer for layer in loaded.layers if isinstance(layer, kdv.DropConnect)]
    bare = [layer for layer in loaded.layers if type(layer) is keras.layers.Dense]
    assert len({id(layer) for layer in wrapped + bare}) == 1
    x = normal_data((5, 4))
    np.testing.assert_array_equal(to_np(loaded(x)), to_np(model(x)))
    # Same seeds and counters: the same training step.
    np.testing.assert_array_equal(
        to_np(loaded(x, training=True)), to_np(model(x, training=True))
    )
