"""`SeededDropout`: masks addressed by (seed, mask_id), replayed after a resume."""

import keras
import numpy as np
import pytest

import reference
from conftest import BACKEND, compiled, normal_data, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops


@pytest.mark.parametrize("mask_id", [0, 5, 2**32 - 1])
def test_mask_id_selects_a_fixed_mask(mask_id):
    x = normal_data()
    layer = kdv.SeededDropout(0.4, seed=11)
    first = to_np(layer(x, training=True, mask_id=mask_id))
    again = to_np(layer(x, training=True, mask_id=mask_id))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, to_np(kops.dropout(x, 0.4, seed=11, counter=mask_id)))
    keep = reference.keep_mask(x.shape, 0.4, 11, mask_id)
    np.testing.assert_array_equal(first, np.where(keep, x * np.float32(1 / 0.6), 0))
    assert steps_taken(layer) == 0  # an explicit mask_id leaves the step counter alone


def test_tensor_mask_id_equals_int_mask_id():
    x = normal_data()
    layer = kdv.SeededDropout(0.5, seed=2)
    for dtype in ("int32", "int64"):
        if BACKEND == "jax" and dtype == "int64":
            continue  # x64 off: no int64 tensors
        k = keras.ops.convert_to_tensor(9, dtype=dtype)
        np.testing.assert_array_equal(
            to_np(layer(x, training=True, mask_id=k)), to_np(layer(x, training=True, mask_id=9))
        )


def test_traced_mask_id_under_the_backend_compiler():
    x = normal_data()
    layer = kdv.SeededDropout(0.5, seed=2, noise_shape=(None, 16))
    fast = compiled(lambda x, k: layer(x, training=True, mask_id=k))
    for k in (0, 1, 7):
        got = to_np(fast(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(k, "int32")))
        np.testing.assert_array_equal(got, to_np(layer(x, training=True, mask_id=k)))


def test_distinct_mask_ids_and_seeds_give_distinct_masks():
    x = np.ones((64, 64), "float32")
    masks = [to_np(kdv.SeededDropout(0.5, seed=s)(x, training=True, mask_id=k)) != 0
             for s in (1, 2) for k in (0, 1, 2)]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            # 4096 fair coins agree on about half: far from all.
            agree = (masks[i] == masks[j]).mean()
            assert 0.4 < agree < 0.6, (i, j, agree)


def test_without_mask_id_uses_and_advances_the_step_counter():
    x = normal_data()
    layer = kdv.SeededDropout(0.5, seed=4)
    for step in range(3):
        np.testing.assert_array_equal(
            to_np(layer(x, training=True)), to_np(layer(x, training=True, mask_id=step))
        )
    assert steps_taken(layer) == 3
    np.testing.assert_array_equal(to_np(layer(x, mask_id=1)), x)  # inference


@pytest.mark.parametrize(
    "seed,error",
    [(None, TypeError), (True, TypeError), (1.0, TypeError), (-1, ValueError), (2**32, ValueError)],
)
def test_bad_seed(seed, error):
    with pytest.raises(error, match=rf"`seed`.*{seed}"):
        kdv.SeededDropout(0.5, seed=seed)


def test_seed_is_required():
    with pytest.raises(TypeError, match="seed"):
        kdv.SeededDropout(0.5)


@pytest.mark.parametrize(
    "mask_id,error,shown",
    [(-1, ValueError, "-1"), (1.5, TypeError, "1.5"), ("3", TypeError, "'3'"),
     (2**32, ValueError, "4294967296")],
)
def test_bad_mask_id(mask_id, error, shown):
    with pytest.raises(error, match=rf"`mask_id`.*{shown}"):
        kdv.SeededDropout(0.5, seed=1)(normal_data(), training=True, mask_id=mask_id)


def test_bad_mask_id_tensors():
    layer = kdv.SeededDropout(0.5, seed=1)
    with pytest.raises(TypeError, match="mask_id.*float32"):
        layer(normal_data(), training=True, mask_id=keras.ops.convert_to_tensor(1.0))
    with pytest.raises(ValueError, match="mask_id.*scalar"):
        layer(normal_data(), training=True, mask_id=keras.ops.convert_to_tensor([1, 2]))


def test_dropout_errors_are_shared():
    with pytest.raises(ValueError, match="`rate`.*1.5"):
        kdv.SeededDropout(1.5, seed=1)
    with pytest.raises(ValueError, match="`noise_shape`"):
        kdv.SeededDropout(0.5, seed=1, noise_shape="abc")
    with pytest.raises(TypeError, match="floating"):
        kdv.SeededDropout(0.5, seed=1)(keras.ops.ones((2,), "int32"), training=True)


def test_config_round_trip():
    layer = kdv.SeededDropout(0.25, seed=6, noise_shape=(None, 1), name="sd")
    config = layer.get_config()
    assert {k: config[k] for k in ("rate", "seed", "noise_shape")} == {
        "rate": 0.25, "seed": 6, "noise_shape": (None, 1)
    }
    assert kdv.SeededDropout.from_config(config).get_config() == config


# --- Resume ---

STEPS_PER_EPOCH = 4


def seeded_mlp():
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
         kdv.SeededDropout(0.5, seed=3), keras.layers.Dense(1)]
    )
    model.compile("adam", "mse")
    return model


def fit(model, epochs):
    x = normal_data((16 * STEPS_PER_EPOCH, 16))
    model.fit(x, x[:, :1], batch_size=16, epochs=epochs, shuffle=False, verbose=0)


@pytest.mark.parametrize("how", ["model.save", "save_weights"])
def test_resume_replays_the_uninterrupted_masks(tmp_path, how):
    n_epochs, m_epochs = 1, 2
    uninterrupted = seeded_mlp()
    interrupted = seeded_mlp()
    interrupted.set_weights(uninterrupted.get_weights())

    fit(uninterrupted, n_epochs + m_epochs)
    fit(interrupted, n_epochs)
    n = steps_taken(interrupted.layers[1])
    assert n == n_epochs * STEPS_PER_EPOCH
    if how == "model.save":
        path = str(tmp_path / "ckpt.keras")
        interrupted.save(path)
        resumed = keras.saving.load_model(path, safe_mode=True)
        replica = keras.saving.load_model(path, safe_mode=True)
    else:
        path = str(tmp_path / "ckpt.weights.h5")
        interrupted.save_weights(path)
        resumed, replica = seeded_mlp(), seeded_mlp()
        for model in (resumed, replica):
            model.optimizer.build(model.trainable_variables)  # to restore its state too
            model.load_weights(path)
    assert resumed is not interrupted and steps_taken(resumed.layers[1]) == n

    # The first M masks after loading are masks N .. N+M-1.
    h = normal_data((16, 32), seed=5)
    layer = replica.layers[1]
    for i in range(m_epochs * STEPS_PER_EPOCH):
        np.testing.assert_array_equal(
            to_np(layer(h, training=True)), to_np(kops.dropout(h, 0.5, seed=3, counter=n + i))
        )

    fit(resumed, m_epochs)
    assert steps_taken(resumed.layers[1]) == steps_taken(uninterrupted.layers[1])
    for a, b in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
