"""`keras_dropout_variants.ops.dropout`: semantics, dtypes, gradients, errors."""

import keras
import numpy as np
import pytest

import reference
from conftest import compiled, gradient, skip_unless_dtype_available, to_np
from keras_dropout_variants import ops as kops

FLOATS = ["float16", "bfloat16", "float32", "float64"]


def grad_of_sum(fn, x):
    """d/dx sum(fn(x) * w) for a fixed random weighting w."""
    return gradient(fn, x, np.random.default_rng(1).normal(size=x.shape).astype(x.dtype))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_kept_values_scaled_dropped_zero(rate, rng):
    x = rng.normal(size=(64, 48)).astype("float32")
    y = to_np(kops.dropout(x, rate, seed=5, counter=2))
    keep = reference.keep_mask((64, 48), rate, 5, 2)
    scale = np.float32(1 / (1 - rate))
    np.testing.assert_array_equal(y, np.where(keep, x * scale, 0))


def test_mean_preserved_in_expectation():
    # E[y] = x: mean of y over 2**20 elements of ones, rate 0.5 -> 1 +- 5 sigma
    # (sigma of the mean of Bernoulli(0.5) * 2 is 1/sqrt(n)).
    n = 1 << 20
    y = to_np(kops.dropout(np.ones((n,), "float32"), 0.5, seed=1))
    assert abs(y.mean() - 1) < 5 / np.sqrt(n)


def test_rate_zero_is_identity(rng):
    x = rng.normal(size=(3, 4)).astype("float32")
    np.testing.assert_array_equal(to_np(kops.dropout(x, 0.0, seed=1)), x)


def test_rate_one_gives_zeros_and_zero_gradient(rng):
    x = rng.normal(size=(4, 5)).astype("float32")
    x[0, 0], x[1, 1], x[2, 2] = np.nan, np.inf, -np.inf
    y = to_np(kops.dropout(x, 1.0, seed=1))
    assert np.array_equal(y, np.zeros_like(x)) and not np.signbit(y).any()
    g = grad_of_sum(lambda v: kops.dropout(v, 1.0, seed=1), np.nan_to_num(x))
    np.testing.assert_array_equal(g, np.zeros_like(x))


@pytest.mark.parametrize("rate", [0.5, 0.999999])
def test_gradient_is_mask_times_scale(rate, rng):
    x = rng.normal(size=(16, 8)).astype("float32")
    g = grad_of_sum(lambda v: kops.dropout(v, rate, seed=3, counter=1), x)
    w = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    keep = reference.keep_mask(x.shape, rate, 3, 1)
    np.testing.assert_allclose(g, np.where(keep, w * np.float32(1 / (1 - rate)), 0), rtol=1e-6)
    assert np.isfinite(g).all()


def test_nan_and_inf_are_dropped_to_exact_zero():
    x = np.full((1000,), np.nan, "float32")
    x[::2] = np.inf
    y = to_np(kops.dropout(x, 0.5, seed=9))
    keep = reference.keep_mask(x.shape, 0.5, 9, 0)
    assert (y[~keep] == 0).all() and not np.signbit(y[~keep]).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x) & keep)


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_dtypes_are_kept(dtype):
    skip_unless_dtype_available(dtype)
    x = keras.ops.ones((8, 8), dtype=dtype)
    y = kops.dropout(x, 0.5, seed=1)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    values = set(to_np(keras.ops.cast(y, "float32")).ravel().tolist())
    assert values <= {0.0, 2.0}


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool"])
def test_integer_and_bool_inputs_raise_type_error(dtype):
    skip_unless_dtype_available(dtype)
    x = keras.ops.ones((2, 2), dtype=dtype)
    with pytest.raises(TypeError, match=f"floating.*{dtype}"):
        kops.dropout(x, 0.5, seed=1)
    with pytest.raises(TypeError, match="floating"):
        kops.dropout(x, 0.0, seed=1)


def test_noise_shape_broadcasts_mask(rng):
    x = rng.normal(size=(4, 5, 6)).astype("float32")
    y = to_np(kops.dropout(x, 0.5, noise_shape=(None, 1, 6), seed=2, counter=3))
    keep = reference.keep_mask((4, 1, 6), 0.5, 2, 3)
    np.testing.assert_array_equal(y, np.where(keep, x * np.float32(2), 0))


@pytest.mark.parametrize(
    "noise_shape,match",
    [
        ((4, 1), r"noise_shape.*rank 2.*\(4, 5, 6\).*rank 3"),
        ((4, 3, 6), r"noise_shape.*\(4, 5, 6\).*axis 1"),
        ((None, 1, 7), r"noise_shape.*\(4, 5, 6\).*axis 2"),
    ],
)
def test_bad_noise_shape_at_call(noise_shape, match):
    with pytest.raises(ValueError, match=match):
        kops.dropout(np.ones((4, 5, 6), "float32"), 0.5, noise_shape=noise_shape, seed=1)


def test_seed_is_required():
    with pytest.raises(ValueError, match="seed=None"):
        kops.dropout(np.ones((2,), "float32"), 0.5)


def test_compiled_op_with_traced_counter_matches_eager(rng):
    x = rng.normal(size=(32, 16)).astype("float32")

    def fn(x, counter):
        return kops.dropout(x, 0.5, noise_shape=(None, 16), seed=11, counter=counter)

    fast = compiled(fn)
    for c in [0, 1, 2]:
        counter = keras.ops.convert_to_tensor(c, dtype="int32")
        expected = to_np(kops.dropout(x, 0.5, seed=11, counter=c))
        np.testing.assert_array_equal(to_np(fast(keras.ops.convert_to_tensor(x), counter)), expected)
