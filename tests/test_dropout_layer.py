"""`keras_dropout_variants.Dropout`: a drop-in for `keras.layers.Dropout`."""

import keras
import numpy as np
import pytest

import reference
from conftest import BACKEND, normal_data, skip_unless_dtype_available, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops


# --- Behaviour ---


@pytest.mark.parametrize("training", [None, False])
def test_inference_returns_input_unchanged(training):
    x = normal_data()
    layer = kdv.Dropout(0.5, seed=1)
    np.testing.assert_array_equal(to_np(layer(x, training=training)), x)
    assert steps_taken(layer) == 0


def test_training_calls_follow_the_op_and_advance_the_counter():
    x = normal_data()
    layer = kdv.Dropout(0.3, seed=17)
    outputs = [to_np(layer(x, training=True)) for _ in range(3)]
    for step, y in enumerate(outputs):
        np.testing.assert_array_equal(y, to_np(kops.dropout(x, 0.3, seed=17, counter=step)))
    assert steps_taken(layer) == 3
    assert not np.array_equal(outputs[0], outputs[1])


def test_step_counter_wraps_to_mask_zero_after_the_last_mask():
    # The counter is an int32 holding the bits of a 32-bit word; it advances
    # with the backend's own `+ 1`, which must wrap like the engine's words.
    x = normal_data()
    layer = kdv.Dropout(0.3, seed=17)
    layer(x, training=True, mask_id=0)  # builds the layer
    layer.counter.assign(-1)  # mask 2**32 - 1
    for mask in (2**32 - 1, 0):
        np.testing.assert_array_equal(
            to_np(layer(x, training=True)), to_np(kops.dropout(x, 0.3, seed=17, counter=mask)))
    assert int(to_np(layer.counter)) == 1


def test_mask_id_applies_that_mask_and_leaves_the_counter():
    # Every layer of the package takes `mask_id`, with SeededDropout's meaning.
    x = normal_data((8, 6))
    layer = kdv.Dropout(0.5, noise_shape=(None, 1), seed=4)
    expected = to_np(kops.dropout(x, 0.5, noise_shape=(None, 1), seed=4, counter=11))
    np.testing.assert_array_equal(to_np(layer(x, training=True, mask_id=11)), expected)
    np.testing.assert_array_equal(to_np(layer(x, training=False, mask_id=11)), x)
    assert steps_taken(layer) == 0
    with pytest.raises(ValueError, match=r"`mask_id` must be .*Received: mask_id=-1"):
        layer(x, training=True, mask_id=-1)


def test_rate_zero_is_identity_in_training():
    x = normal_data()
    np.testing.assert_array_equal(to_np(kdv.Dropout(0.0, seed=1)(x, training=True)), x)


def test_rate_one_gives_zeros_without_nan():
    x = normal_data()
    x[0, 0] = np.nan
    y = to_np(kdv.Dropout(1.0, seed=1)(x, training=True))
    np.testing.assert_array_equal(y, np.zeros_like(x))


def test_noise_shape_with_none_entries():
    x = normal_data((4, 5, 6))
    y = to_np(kdv.Dropout(0.5, noise_shape=(None, 1, None), seed=3)(x, training=True))
    keep = reference.keep_mask((4, 1, 6), 0.5, 3, 0)
    np.testing.assert_array_equal(y, np.where(keep, x * 2, 0))


@pytest.mark.parametrize(
    "noise_shape,match",
    [((4, 1), r"noise_shape.*rank"), ((4, 3, 6), r"noise_shape.*\(4, 5, 6\)")],
)
def test_noise_shape_mismatch_at_call(noise_shape, match):
    layer = kdv.Dropout(0.5, noise_shape=noise_shape, seed=1)
    with pytest.raises(ValueError, match=match):
        layer(np.ones((4, 5, 6), "float32"), training=True)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_output_dtype_follows_keras_dropout(dtype):
    skip_unless_dtype_available(dtype)
    x = keras.ops.ones((4, 4), dtype=dtype)
    for kwargs in [{}, {"dtype": dtype}, {"dtype": "mixed_float16"}]:
        ours = kdv.Dropout(0.5, seed=1, **kwargs)(x, training=True)
        theirs = keras.layers.Dropout(0.5, seed=1, **kwargs)(x, training=True)
        assert ours.dtype == theirs.dtype, kwargs
    # With its own dtype policy, every float dtype is kept.
    y = kdv.Dropout(0.5, seed=1, dtype=dtype)(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == dtype


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_integer_inputs_raise_type_error_in_training(dtype):
    with pytest.raises(TypeError, match=f"`inputs` must be floating-point.*{dtype}"):
        kdv.Dropout(0.5, seed=1)(keras.ops.ones((2, 2), dtype=dtype), training=True)


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_integer_inputs_pass_through_at_inference_like_keras(dtype):
    x = keras.ops.convert_to_tensor(np.array([[0, 1], [1, 0]]), dtype=dtype)
    for layer in (kdv.Dropout(0.5, seed=1), keras.layers.Dropout(0.5, seed=1)):
        y = layer(x, training=False)
        assert keras.backend.standardize_dtype(y.dtype) == dtype
        np.testing.assert_array_equal(to_np(y), to_np(x))


# --- Constructor validation ---


@pytest.mark.parametrize(
    "rate,error,shown",
    [
        ("0.5", TypeError, "'0.5'"),
        (None, TypeError, "None"),
        (True, TypeError, "True"),
        (float("nan"), ValueError, "nan"),
        (-0.1, ValueError, "-0.1"),
        (1.5, ValueError, "1.5"),
        ([0.5], TypeError, r"\[0.5\]"),
    ],
)
def test_bad_rate(rate, error, shown):
    with pytest.raises(error, match=rf"`rate`.*{shown}"):
        kdv.Dropout(rate)


def test_numpy_rate_accepted():
    assert kdv.Dropout(np.float32(0.25), seed=1).rate == 0.25


@pytest.mark.parametrize(
    "seed,error,shown",
    [("1", TypeError, "'1'"), (1.5, TypeError, "1.5"), (-1, ValueError, "-1"),
     (2**32, ValueError, "4294967296"), (True, TypeError, "True")],
)
def test_bad_seed(seed, error, shown):
    with pytest.raises(error, match=rf"`seed`.*{shown}"):
        kdv.Dropout(0.5, seed=seed)


@pytest.mark.parametrize(
    "noise_shape,shown",
    [("abc", "abc"), (5, "5"), ((None, 1.5), "1.5"), ((2, 0), "0"), ((-1,), "-1"),
     ((2, "3"), "'3'"), ((True,), "True")],
)
def test_bad_noise_shape_at_construction(noise_shape, shown):
    with pytest.raises(ValueError, match=rf"`noise_shape`.*{shown}"):
        kdv.Dropout(0.5, noise_shape=noise_shape)


def test_numpy_integer_noise_shape_accepted_and_serializable():
    layer = kdv.Dropout(0.5, noise_shape=[np.int64(4), None, np.int32(1)], seed=1)
    assert layer.noise_shape == (4, None, 1)
    assert all(type(d) in (int, type(None)) for d in layer.get_config()["noise_shape"])


# --- Config and seeds ---


def test_config_matches_keras_and_round_trips():
    layer = kdv.Dropout(0.3, noise_shape=(None, 1), seed=5, name="drop")
    config = layer.get_config()
    keras_config = keras.layers.Dropout(0.3, noise_shape=(None, 1), seed=5, name="drop").get_config()
    assert set(config) == set(keras_config)
    assert {k: config[k] for k in ("rate", "seed", "noise_shape")} == {
        "rate": 0.3, "seed": 5, "noise_shape": (None, 1)
    }
    clone = kdv.Dropout.from_config(config)
    assert clone.get_config() == config
    x = normal_data((6, 4))
    np.testing.assert_array_equal(to_np(clone(x, training=True)), to_np(layer(x, training=True)))


def test_seed_none_draws_a_seed_kept_in_config_and_reproducible():
    keras.utils.set_random_seed(123)
    a = kdv.Dropout(0.5)
    keras.utils.set_random_seed(123)
    b = kdv.Dropout(0.5)
    c = kdv.Dropout(0.5)
    assert isinstance(a.seed, int) and a.seed == b.seed != c.seed
    assert a.get_config()["seed"] == a.seed


def test_compute_output_shape():
    assert kdv.Dropout(0.5, seed=1).compute_output_shape((None, 3, 4)) == (None, 3, 4)


def test_counter_is_a_saved_non_trainable_weight():
    layer = kdv.Dropout(0.5, seed=1)
    assert layer.trainable_weights == []
    assert len(layer.weights) == 1 and layer.weights[0] is layer.counter
    assert keras.backend.standardize_dtype(layer.counter.dtype) == "int32"


# --- Models ---


def mlp(dropout_layer):
    return keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="relu"), dropout_layer,
         keras.layers.Dense(1)]
    )


def test_functional_and_subclassed_models():
    x = normal_data()
    inputs = keras.Input((16,))
    outputs = kdv.Dropout(0.5, seed=4)(keras.layers.Dense(8)(inputs))
    functional = keras.Model(inputs, outputs)
    assert functional.output_shape == (None, 8)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(8)
            self.drop = kdv.Dropout(0.5, seed=4)

        def call(self, x, training=False):
            return self.drop(self.dense(x), training=training)

    net = Net()
    net(x)
    for model in (functional, net):
        np.testing.assert_array_equal(to_np(model(x)), to_np(model(x)))
        y1, y2 = to_np(model(x, training=True)), to_np(model(x, training=True))
        assert not np.array_equal(y1, y2)
        assert ((y1 == 0).mean() > 0.2) and ((y1 == 0).mean() < 0.8)


def fit_steps(model, jit_compile):
    model.compile("sgd", "mse", jit_compile=jit_compile)
    x = normal_data((64, 16))
    model.fit(x, x[:, :1], batch_size=16, epochs=3, verbose=0)  # 4 steps an epoch


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_advances_counter_once_per_step_without_retracing(jit_compile):
    if BACKEND == "torch" and jit_compile:
        return check_torch_compile_fit_adds_no_recompiles()
    calls = []

    class CountingDropout(kdv.Dropout):
        def call(self, inputs, training=False):
            calls.append(training)
            return super().call(inputs, training=training)

    layer = CountingDropout(0.5, seed=2)
    fit_steps(mlp(layer), jit_compile)
    assert steps_taken(layer) == 12
    # JAX and torch run eagerly without jit_compile; TF always builds a graph.
    if jit_compile or BACKEND == "tensorflow":
        # Traced a few times at most, then replayed: the counter is a tensor.
        assert len(calls) <= 3, len(calls)
    else:
        assert calls.count(True) == 12


def check_torch_compile_fit_adds_no_recompiles():
    # A Python-side call counter would itself make dynamo recompile, so count
    # dynamo's graphs instead: the model with our layer compiles exactly as
    # many graphs as the same model with an Identity in its place.
    import torch
    from torch._dynamo.utils import counters

    graphs = []
    layer = kdv.Dropout(0.5, seed=2)
    for middle in (layer, keras.layers.Identity()):
        torch._dynamo.reset()
        counters.clear()
        fit_steps(mlp(middle), jit_compile=True)
        graphs.append(counters["stats"]["unique_graphs"])
    assert steps_taken(layer) == 12
    assert graphs[0] == graphs[1], graphs


def test_save_and_load_keras_format_keeps_counter_and_continues_masks(tmp_path):
    x = normal_data((64, 16))
    model = mlp(kdv.Dropout(0.5, seed=8))
    model.compile("adam", "mse")
    model.fit(x, x[:, :1], batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[1], kdv.Dropout)
    assert steps_taken(loaded.layers[1]) == steps_taken(model.layers[1]) == 4
    np.testing.assert_array_equal(to_np(loaded.predict(x, verbose=0)), to_np(model.predict(x, verbose=0)))
    # The next training call draws mask 4 in both: the original and the reloaded.
    h = to_np(model.layers[0](x))
    np.testing.assert_array_equal(
        to_np(loaded.layers[1](h, training=True)), to_np(model.layers[1](h, training=True))
    )


def test_rate_one_in_fit_gives_finite_loss():
    x = normal_data((32, 16))
    model = mlp(kdv.Dropout(1.0, seed=1))
    model.compile("sgd", "mse")
    history = model.fit(x, x[:, :1], epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("mask_id,shown", [(np.int64(2**32), "4294967296"), (np.int64(-1), "-1")])
def test_numpy_mask_id_outside_the_words_raises(mask_id, shown):
    # Checked before Keras turns a NumPy integer into a tensor (which wraps).
    layer = kdv.SeededDropout(0.5, seed=4)
    with pytest.raises(ValueError, match=rf"`mask_id` must be .*Received: mask_id={shown}"):
        layer(normal_data(), training=True, mask_id=mask_id)
    x = normal_data()
    np.testing.assert_array_equal(
        to_np(layer(x, training=True, mask_id=np.uint32(2**32 - 1))),
        to_np(layer(x, training=True, mask_id=2**32 - 1)),
    )


def test_weights_saved_with_keras_dropout_load_with_the_counter_at_zero(tmp_path):
    # Switching a model from keras.layers.Dropout to ours keeps its weight
    # files usable: the counter they lack starts at 0, with a warning.
    def build(dropout):
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16), dropout(0.5, seed=1), keras.layers.Dense(2)]
        )

    old = build(keras.layers.Dropout)
    path = str(tmp_path / "old.weights.h5")
    old.save_weights(path)
    ours = build(kdv.Dropout)
    ours.layers[1].counter.assign(5)
    for layer in ours.layers[::2]:  # other values than the file's
        layer.set_weights([w + 1 for w in layer.get_weights()])
    with pytest.warns(UserWarning, match="no step counter"):
        ours.load_weights(path)
    assert steps_taken(ours.layers[1]) == 0
    x = normal_data((4, 8))
    np.testing.assert_array_equal(ours.predict(x, verbose=0), old.predict(x, verbose=0))
    # The other way, Keras' own error names the layer; skip_mismatch loads.
    ours_path = str(tmp_path / "ours.weights.h5")
    ours.save_weights(ours_path)
    with pytest.raises(ValueError, match="dropout"):
        old.load_weights(ours_path)
    with pytest.warns(UserWarning, match="could not be loaded"):
        old.load_weights(ours_path, skip_mismatch=True)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tensors of unknown rank exist in TF graphs only")
def test_input_of_unknown_rank_in_a_tf_graph():
    # Where keras.layers.Dropout works, ours does: the mask of an input of
    # unknown rank is the one of its flat view, the same bits.
    import tensorflow as tf

    layer = kdv.Dropout(0.5, seed=1)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def train_step(v):
        return layer(v, training=True)

    x = normal_data((2, 3, 5))
    for step in range(2):
        keep = reference.keep_mask(x.shape, 0.5, 1, step)
        np.testing.assert_array_equal(to_np(train_step(x)), np.where(keep, x * 2, 0))
    assert steps_taken(layer) == 2
