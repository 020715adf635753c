"""Bit-for-bit equality across backends: one subprocess per backend.

Each subprocess computes the golden masks, the raw engine words, the
outputs of `Dropout(0.5, seed=...)` over successive training calls (eager and
inside the backend's compiler) and of `SeededDropout` for several
(seed, mask_id, noise_shape), and of `DropConnect` with one mask per batch and
per example, and of the Keras family (SpatialDropout1D/2D/3D,
AlphaDropout, GaussianDropout, GaussianNoise), of DropPath and DropBlock,
and masks drawn with a rate held in a variable, and writes them to an .npz
file.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import reference
from conftest import skip_unless_all_backends_leg

pytestmark = pytest.mark.slow

BACKENDS = ("tensorflow", "jax", "torch")
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r"""
import sys
import numpy as np
import keras
sys.path.insert(0, sys.argv[2])
from conftest import compiled, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import random as kr

out = {}
for i, (shape, rate, seed, counter, offset) in enumerate([
    ((1000,), 0.5, 0, 0, 0), ((32, 64), 0.1, 42, 0, 0), ((7, 11, 13), 0.5, 2**32 - 1, 2**32 - 1, 0),
    ((4096,), 0.3, 123456789, 1000, 2**32 - 100),
]):
    out[f"mask{i}"] = to_np(kr.keep_mask(shape, rate, seed, counter, offset))
out["words"] = to_np(kr.random_bits((3, 5, 7), 99, 3, 11))

x = np.random.default_rng(0).normal(size=(16, 3, 10)).astype("float32")
layer = kdv.Dropout(0.5, seed=2024)
for step in range(4):
    out[f"layer{step}"] = to_np(layer(x, training=True))
spatial = kdv.Dropout(0.5, noise_shape=(None, 1, 10), seed=7)
for step in range(2):
    out[f"spatial{step}"] = to_np(spatial(x, training=True))

for seed, mask_id, noise_shape in [(0, 0, None), (31337, 12, (None, 1, 10)), (2**32 - 1, 2**32 - 1, (16, 3, 1))]:
    seeded = kdv.SeededDropout(0.3, seed=seed, noise_shape=noise_shape)
    out[f"seeded_{seed}_{mask_id}"] = to_np(seeded(x, training=True, mask_id=mask_id))

dense = keras.layers.Dense(6, activation="relu")
dense.build((None, 10))
rng = np.random.default_rng(1)
dense.set_weights([rng.normal(size=(10, 6)).astype("float32"), rng.normal(size=(6,)).astype("float32")])
drop_connect = kdv.DropConnect(dense, 0.5, seed=77, drop_bias=True)
h = x.reshape(48, 10)
for step in range(2):
    # Compare masks exactly; products only to float tolerance (summation order).
    out[f"dropconnect{step}"] = to_np(drop_connect(h, training=True))
    out[f"dropconnect_mask{step}"] = to_np(kr.keep_mask((66,), 0.5, 77, step))
per_example = kdv.DropConnect(dense, 0.5, seed=78, drop_bias=True, mask_per="example")
for step in range(2):
    out[f"dropconnect_example{step}"] = to_np(per_example(h, training=True))

# The Keras family: masks bit for bit, Gaussian noise to float rounding.
family = {
    "SpatialDropout1D": (kdv.SpatialDropout1D(0.4, seed=21), x),
    "SpatialDropout2D": (kdv.SpatialDropout2D(0.4, data_format="channels_first", seed=22), x.reshape(16, 3, 2, 5)),
    "SpatialDropout3D": (kdv.SpatialDropout3D(0.4, seed=23), x.reshape(16, 3, 1, 2, 5)),
    "AlphaDropout": (kdv.AlphaDropout(0.2, noise_shape=(None, 1, 10), seed=24), x),
    "GaussianDropout": (kdv.GaussianDropout(0.3, seed=25), x),
    "GaussianNoise": (kdv.GaussianNoise(0.5, seed=26), x),
}
for name, (layer, inputs) in family.items():
    for step in range(2):
        out[f"family_{name}{step}"] = to_np(layer(inputs, training=True))
out["normal"] = to_np(kr.normal((64, 64), 5, 3))

# Structured dropout, and masks drawn with a rate held in a variable.
structured = {
    "DropPath": (kdv.DropPath(0.4, seed=31), x),
    "DropBlock2D": (kdv.DropBlock2D(0.3, 2, seed=32), x.reshape(16, 6, 5, 1)),
    "DropBlock1D": (kdv.DropBlock1D(0.3, 4, data_format="channels_first", seed=33), x),
}
for name, (layer, inputs) in structured.items():
    for step in range(2):
        out[f"structured_{name}{step}"] = to_np(layer(inputs, training=True))
# Monte-Carlo samples: masks bit for bit (a model of dropout alone), and a
# classifier's samples to float rounding.
mc_model = keras.Sequential([keras.Input((3, 10)), kdv.Dropout(0.5, seed=41), kdv.SpatialDropout1D(0.3, seed=42)])
out["mc_masks"] = kdv.mc_predict(mc_model, x, samples=4, batch_size=5, return_samples=True).samples
dense_mc = keras.Sequential([keras.Input((10,)), drop_connect, kdv.Dropout(0.2, seed=43)])
out["dropconnect_mc"] = kdv.mc_predict(dense_mc, h, samples=3, batch_size=7, return_samples=True).samples
for rate in (0.1, 0.37, 0.999):
    variable = keras.Variable(rate, dtype="float32", trainable=False)
    out[f"variable_rate_{rate}"] = to_np(kr.keep_mask((5000,), variable, 8, 1))

# The same outputs from inside the backend's compiler, with a traced counter.
fast = compiled(lambda x, c: kdv.ops.dropout(x, 0.5, seed=2024, counter=c))
for step in range(4):
    c = keras.ops.convert_to_tensor(step, dtype="int32")
    out[f"compiled{step}"] = to_np(fast(keras.ops.convert_to_tensor(x), c))
np.savez(sys.argv[1], **out)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    skip_unless_all_backends_leg()
    tmp = tmp_path_factory.mktemp("cross_backend")
    got = {}
    for backend in BACKENDS:
        if importlib.util.find_spec(MODULES[backend]) is None:
            continue
        path = str(tmp / f"{backend}.npz")
        env = dict(os.environ, KERAS_BACKEND=backend)
        proc = subprocess.run(
            [sys.executable, "-c", WORKER, path, HERE],
            env=env, capture_output=True, text=True, timeout=900,
        )
        assert proc.returncode == 0, f"{backend} worker failed:\n{proc.stderr[-4000:]}"
        got[backend] = dict(np.load(path))
    if len(got) < 2:
        pytest.skip(f"needs two installed backends, found {sorted(got)}")
    return got


def test_all_three_backends_compared(results):
    # The test matrix installs every backend: a missing one is a setup error.
    assert sorted(results) == sorted(BACKENDS)


def test_masks_and_outputs_identical_across_backends(results):
    names = sorted(next(iter(results.values())))
    first, *others = sorted(results)
    for name in names:
        if name.startswith(("family_Gaussian", "normal")):
            continue  # float rounding: test_gaussian_noise_agrees_within_its_bound
        if name.startswith("dropconnect") and "mask" not in name:
            # A matmul's summation order is the backend's: equal to rounding.
            for other in others:
                np.testing.assert_allclose(results[first][name], results[other][name], rtol=1e-5, atol=1e-5)
            continue
        for other in others:
            a, b = results[first][name], results[other][name]
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert a.tobytes() == b.tobytes(), f"{name}: {first} != {other}"


# The engine's normal samples agree across backends to this (absolute, on
# N(0, 1) samples): the uniforms are the same bits, and each backend's erfinv
# rounds its own way, most in the tails (measured: 1.5e-5 under JAX).
NORMAL_BOUND = 5e-5


def test_gaussian_noise_agrees_within_its_bound(results):
    x = np.random.default_rng(0).normal(size=(16, 3, 10)).astype("float32")
    first, *others = sorted(results)
    for other in others:
        a, b = results[first], results[other]
        assert np.abs(a["normal"] - b["normal"]).max() <= NORMAL_BOUND
        for step in range(2):
            # y = x * (1 + s z) and y = x + stddev z: the bound scaled.
            gd = np.abs(a[f"family_GaussianDropout{step}"] - b[f"family_GaussianDropout{step}"])
            assert (gd <= NORMAL_BOUND * np.sqrt(0.3 / 0.7) * np.abs(x) + 1e-6).all()
            gn = np.abs(a[f"family_GaussianNoise{step}"] - b[f"family_GaussianNoise{step}"])
            assert (gn <= NORMAL_BOUND * 0.5 + 1e-6).all()
        # Not equal by accident of a constant: the draws differ per step.
        assert not np.array_equal(a["family_GaussianNoise0"], a["family_GaussianNoise1"])


def test_outputs_match_the_numpy_reference(results):
    got = next(iter(results.values()))
    x = np.random.default_rng(0).normal(size=(16, 3, 10)).astype("float32")
    for step in range(4):
        keep = reference.keep_mask(x.shape, 0.5, 2024, step)
        expected = np.where(keep, x * np.float32(2), 0)
        np.testing.assert_array_equal(got[f"layer{step}"], expected)
        np.testing.assert_array_equal(got[f"compiled{step}"], expected)
    for step in range(2):
        keep = reference.keep_mask((16, 1, 10), 0.5, 7, step)
        np.testing.assert_array_equal(got[f"spatial{step}"], np.where(keep, x * np.float32(2), 0))
    words = reference.uniform_words((3, 5, 7), 99, 3, 11) - np.uint32(2**31)
    np.testing.assert_array_equal(got["words"].view(np.uint32), words)
    for seed, mask_id, mask_shape in [(0, 0, (16, 3, 10)), (31337, 12, (16, 1, 10)),
                                      (2**32 - 1, 2**32 - 1, (16, 3, 1))]:
        keep = reference.keep_mask(mask_shape, 0.3, seed, mask_id)
        expected = np.where(keep, x * np.float32(1 / 0.7), 0)
        np.testing.assert_array_equal(got[f"seeded_{seed}_{mask_id}"], expected)
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(10, 6)).astype("float32"), rng.normal(size=(6,)).astype("float32")
    for step in range(2):
        keep = reference.keep_mask((66,), 0.5, 77, step)
        np.testing.assert_array_equal(got[f"dropconnect_mask{step}"], keep)
        kernel = np.where(keep[:60].reshape(10, 6), w * 2, 0)
        bias = np.where(keep[60:], b * 2, 0)
        expected = np.maximum(x.reshape(48, 10) @ kernel + bias, 0)
        np.testing.assert_allclose(got[f"dropconnect{step}"], expected, rtol=1e-5, atol=1e-5)
    h = x.reshape(48, 10)
    for step in range(2):
        keep = reference.keep_mask((48, 11, 6), 0.5, 78, step)  # block b: example b
        kernels = np.where(keep[:, :10], w * 2, 0)
        bias = np.where(keep[:, 10], b * 2, 0)
        expected = np.maximum(np.einsum("bi,bio->bo", h, kernels) + bias, 0)
        np.testing.assert_allclose(got[f"dropconnect_example{step}"], expected, rtol=1e-5, atol=1e-5)
    # Successive training calls draw different masks.
    assert not np.array_equal(got["layer0"] == 0, got["layer1"] == 0)
