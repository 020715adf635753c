"""The mask engine: bits, golden vectors, statistics, sharding, arguments."""

import hashlib
import warnings

import keras
import numpy as np
import pytest

import reference
from conftest import (
    BACKEND,
    DROP_SHAPES,
    compiled,
    expect_fused_torch_kernels,
    gradient,
    skip_unless_dtype_available,
    to_np,
)
from keras_dropout_variants import _backends
from keras_dropout_variants import random as kr


def uniform_words(shape, seed, counter=0, offset=0):
    """The engine's uniform draws u = h + 2**31 as uint32 (see random.py)."""
    h = to_np(kr.random_bits(shape, seed, counter, offset))
    return h.view(np.uint32) + np.uint32(2**31)


def digest(mask):
    return hashlib.sha256(np.packbits(np.asarray(mask).ravel())).hexdigest()[:32]


# (shape, rate, seed, counter, offset) -> sha256 of the packed mask bits.
# These define the mask format: changing one is a breaking change.
GOLDEN = [
    (((1000,), 0.5, 0, 0, 0), "990430853ae877f0405714fa8187f3b4"),
    (((32, 64), 0.1, 42, 0, 0), "3bb74d831933bc3b4b442940e6e05bb7"),
    (((32, 64), 0.9, 42, 1, 0), "dcc4bf805c9b6f623da10f47f011c81c"),
    (((7, 11, 13), 0.5, 2**32 - 1, 2**32 - 1, 0), "42e6aee4e8fe38c40c120ff24edd9c11"),
    (((4096,), 0.3, 123456789, 1000, 2**32 - 100), "c06baaba2bb30102c8f14239f3a624ba"),
    (((3, 1, 5), 0.25, 7, 99, 12345), "5ada4d870ee0d175f6b417505c673e32"),
]
GOLDEN_WORDS = [
    (((6,), 0, 0, 0), [2889474424, 1938963088, 1484472727, 4152644059, 2625277083, 86327368]),
    (((4,), 42, 7, 5), [2760566027, 3079461431, 70182490, 1019757614]),
]


@pytest.mark.parametrize("args,expected", GOLDEN, ids=[str(g[0]) for g in GOLDEN])
def test_golden_masks(args, expected):
    shape, rate, seed, counter, offset = args
    mask = to_np(kr.keep_mask(shape, rate, seed, counter, offset))
    assert mask.dtype == np.bool_ and mask.shape == shape
    assert digest(mask) == expected
    # The independent NumPy implementation agrees with the frozen digest too.
    assert digest(reference.keep_mask(*args)) == expected


@pytest.mark.parametrize("args,expected", GOLDEN_WORDS)
def test_golden_words(args, expected):
    assert uniform_words(*args).tolist() == expected


@pytest.mark.parametrize(
    "shape,seed,counter,offset",
    [
        ((257,), 0, 0, 0),
        ((5, 6, 7), 1, 2, 3),
        ((2, 3, 4, 5), 2**31, 2**31 + 5, 2**31 - 1),
        ((0, 3), 9, 9, 9),
        ((), 5, 5, 5),
    ],
)
def test_matches_numpy_reference(shape, seed, counter, offset):
    expected = reference.uniform_words(shape, seed, counter, offset)
    np.testing.assert_array_equal(uniform_words(shape, seed, counter, offset), expected)
    # Counter and offset as int32 tensors (int64 wraps to its low word).
    c = keras.ops.convert_to_tensor(np.int64(counter).astype(np.int32))
    o = keras.ops.convert_to_tensor(np.int32(np.uint32(offset).view(np.int32)))
    np.testing.assert_array_equal(uniform_words(shape, seed, c, o), expected)


@pytest.mark.parametrize("rate", [1e-9, 0.1, 1 / 3, 0.5, 0.9, 1 - 1e-9])
def test_keep_mask_matches_reference_threshold(rate):
    got = to_np(kr.keep_mask((64, 64), rate, 11, 3))
    np.testing.assert_array_equal(got, reference.keep_mask((64, 64), rate, 11, 3))


def test_keep_threshold_is_exact():
    assert kr.keep_threshold(0.5) == 2**31
    assert kr.keep_threshold(0.75) == 2**30
    assert kr.keep_threshold(1.0) == 0
    assert kr.keep_threshold(0.0) == 2**32
    assert kr.keep_threshold(0.1) == round(0.9 * 2**32)
    # A rate below 2**-33 rounds to "keep all but one word in 2**32".
    assert kr.keep_threshold(1e-12) == 2**32 - 1


def test_compiled_with_traced_counter_and_offset_matches_eager():
    def fn(counter, offset):
        return kr.keep_mask((16, 33), 0.5, 1234, counter, offset)

    fast = compiled(fn)
    for counter, offset in [(0, 0), (1, 7), (2**31 + 3, 2**31 + 1)]:
        c = keras.ops.convert_to_tensor(np.uint32(counter).view(np.int32))
        o = keras.ops.convert_to_tensor(np.uint32(offset).view(np.int32))
        expected = reference.keep_mask((16, 33), 0.5, 1234, counter, offset)
        np.testing.assert_array_equal(to_np(fast(c, o)), expected)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="dynamic shapes exist in TF graphs only")
def test_dynamic_batch_dimension_in_tf_graph():
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 12], tf.float32)])
    def fn(x):
        return kr.keep_mask(keras.ops.shape(x), 0.5, 3, 4)

    got = to_np(fn(tf.zeros((5, 12))))
    np.testing.assert_array_equal(got, reference.keep_mask((5, 12), 0.5, 3, 4))


# --- Statistics. Each bound is 5 sigma of the statistic's null distribution. ---

N = 1 << 20  # >= 10**6 draws


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed,counter", [(0, 0), (987654321, 12)])
def test_keep_fraction_within_5_sigma(rate, seed, counter):
    kept = to_np(kr.keep_mask((N,), rate, seed, counter)).sum()
    p = 1 - rate
    sigma = np.sqrt(N * p * (1 - p))  # binomial
    assert abs(kept - N * p) < 5 * sigma, (kept, N * p, sigma)


def correlation(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return np.corrcoef(a, b)[0, 1]


def mask(seed, counter, n=N, rate=0.5):
    return to_np(kr.keep_mask((n,), rate, seed, counter))


# Under independence, Pearson's r of n pairs has standard deviation 1/sqrt(n).
BOUND = 5 / np.sqrt(N)


@pytest.mark.parametrize("lag", [1, 2, 64, 4096])
def test_neighbouring_elements_uncorrelated(lag):
    m = mask(5, 0, N + lag)
    assert abs(correlation(m[:-lag], m[lag:])) < BOUND


@pytest.mark.parametrize(
    "a,b",
    [
        ((1, 0), (1, 1)),  # consecutive counters
        ((1, 0), (2, 0)),  # adjacent seeds
        ((7, 4), (8, 3)),  # seed s at counter c+1 vs seed s+1 at counter c
        ((0, 1), (1, 0)),
    ],
)
def test_related_streams_uncorrelated(a, b):
    assert abs(correlation(mask(*a), mask(*b))) < BOUND


@pytest.mark.parametrize(
    "a,b", [((7, 4), (8, 3)), ((1, 0), (1, 1)), ((1, 0), (2, 0)), ((0, 2**32 - 1), (1, 0))]
)
def test_streams_are_not_shifted_copies(a, b):
    # If stream b were stream a shifted by d (as with hash(i*K + seed)), all
    # n words of b would reappear in a window of a around the shift. For
    # unrelated streams the shared words are Poisson with mean n*m/2**32 ~ 17
    # (bound: 5 sigma above it, 38), spread over ~2**20 lags, so no lag may
    # hold more than 2 of them (P(any lag >= 3) < 1e-9). A weaker hash, one
    # multiply before k1, put 33 words on one lag for the pair (7,4)/(8,3).
    n, window = 1 << 16, (1 << 20) + (1 << 16)
    start = 2**32 - (1 << 19)
    words_b = uniform_words((n,), *b)
    window_a = uniform_words((window,), *a, offset=start)
    shared, in_b, in_a = np.intersect1d(words_b, window_a, return_indices=True)
    mean = n * window / 2**32
    assert shared.size < mean + 5 * np.sqrt(mean), shared.size
    if shared.size:
        lags = in_a.astype(np.int64) - in_b
        assert np.unique(lags, return_counts=True)[1].max() <= 2


def test_top_byte_uniform_chi_square():
    words = uniform_words((N,), 3, 3)
    counts = np.bincount(words >> 24, minlength=256)
    expected = N / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 255 degrees of freedom: mean 255, sd sqrt(510) ~ 22.6.
    assert chi2 < 255 + 5 * np.sqrt(510), chi2


def test_engine_normal_draws_are_standard_normal():
    n = 1 << 20
    z = to_np(kr.normal((n,), 3, 1))
    # Mean: sd 1/sqrt(n); variance: sd sqrt(2/n); bounds 5 sigma.
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    np.testing.assert_array_equal(z, to_np(kr.normal((n,), 3, 1)))


# --- Shards ---


@pytest.mark.parametrize("shards", [2, 3])
def test_offset_computes_a_shard_of_the_global_mask(shards):
    shape = (12, 5, 7)
    whole = to_np(kr.keep_mask(shape, 0.5, 77, 9))
    rows = np.array_split(np.arange(shape[0]), shards)
    parts = []
    for r in rows:
        offset = int(r[0]) * 5 * 7
        parts.append(to_np(kr.keep_mask((len(r), 5, 7), 0.5, 77, 9, offset=offset)))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("index,size", [(3, 35), (5, 2**31 + 7), (2**20 + 1, 2**12)])
def test_block_offset_wraps_like_an_engine_word(index, size):
    expected = index * size % 2**32
    assert kr.block_offset(index, size) == expected
    as_tensor = keras.ops.convert_to_tensor(index, "int32")
    word = to_np(kr.block_offset(as_tensor, size)).astype(np.int64) % 2**32
    assert word == expected
    # Block `index` of a stream is the mask drawn at that offset.
    np.testing.assert_array_equal(
        to_np(kr.keep_mask((64,), 0.5, 1, 2, offset=kr.block_offset(as_tensor, size))),
        reference.keep_mask((64,), 0.5, 1, 2, offset=expected),
    )


# --- Arguments ---


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(seed=-1), ValueError, r"seed.*-1"),
        (dict(seed=2**32), ValueError, r"seed.*4294967296"),
        (dict(seed=1.5), TypeError, r"seed.*1\.5"),
        (dict(seed=True), TypeError, r"seed.*True"),
        (dict(seed=None), TypeError, r"seed.*None"),
        (dict(seed="3"), TypeError, r"seed.*'3'"),
        (dict(counter=-2), ValueError, r"counter.*-2"),
        (dict(counter=0.5), TypeError, r"counter.*0\.5"),
        (dict(offset=2**40), ValueError, r"offset"),
        (dict(rate=1.5), ValueError, r"rate.*1\.5"),
        (dict(rate=float("nan")), ValueError, r"rate.*nan"),
        (dict(rate="0.5"), TypeError, r"rate.*'0\.5'"),
        (dict(shape="ab"), TypeError, r"shape"),
        (dict(shape=(2, -1)), ValueError, r"shape"),
        (dict(shape=(2, 1.5)), TypeError, r"shape"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(shape=(2, 3), rate=0.5, seed=1, counter=0, offset=0)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        kr.keep_mask(**args)


def test_counter_tensor_must_be_integer_scalar():
    with pytest.raises(TypeError, match="counter.*float32"):
        kr.keep_mask((2,), 0.5, 1, keras.ops.convert_to_tensor(1.0))
    with pytest.raises(ValueError, match="counter.*scalar"):
        kr.keep_mask((2,), 0.5, 1, keras.ops.convert_to_tensor([1, 2]))


def test_rate_zero_keeps_everything_without_random_work():
    assert to_np(kr.keep_mask((3, 4), 0.0, 1)).all()


@pytest.mark.parametrize("counter", [0, 2**32 - 1])
def test_compiled_dispatch_path_gives_the_bits_of_the_plain_path(monkeypatch, counter):
    # keep_mask goes through the engine's dispatch point (an XLA-compiled
    # function on TF and JAX); the plain keras.ops path must agree bit for bit.
    args = ((33, 65), 0.4, 5, counter, 3)
    fast = to_np(kr.keep_mask(*args))
    fast_tensor = to_np(kr.keep_mask(*args[:3], keras.ops.convert_to_tensor(np.uint32(counter).view(np.int32)), 3))
    monkeypatch.setattr(_backends, "enabled", False)
    plain = to_np(kr.keep_mask(*args))
    np.testing.assert_array_equal(fast, plain)
    np.testing.assert_array_equal(fast_tensor, plain)
    np.testing.assert_array_equal(plain, reference.keep_mask(*args))




@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("x_shape,mask_shape", DROP_SHAPES)
def test_dispatched_drop_gives_the_bits_of_apply_keep(monkeypatch, dtype, x_shape, mask_shape):
    # `drop` goes through the dispatch point (on eager torch, fused compiled
    # kernels or a bitwise AND with int words, each with its own backward);
    # it must give the bits of `apply_keep(x, keep_mask(...))`, in the output
    # and in the gradient, for NaN, inf and signed zeros too.
    skip_unless_dtype_available(dtype)
    rng = np.random.default_rng(3)
    x = rng.normal(size=x_shape).astype("float32")
    x.flat[::7], x.flat[1::7], x.flat[2::7], x.flat[3::7] = np.nan, np.inf, -np.inf, -0.0
    weight = rng.normal(size=x.shape).astype("float32")

    def drop(v):
        return kr.drop(keras.ops.cast(v, dtype), mask_shape, 0.3, seed=4, counter=7)

    def bits(v):  # exact: every dtype here widens to float64 losslessly
        return np.asarray(to_np(v), dtype=np.float64).view(np.uint64)

    def grad():  # upstream = weight cast to `dtype`, through the cast back
        return bits(gradient(lambda v: keras.ops.cast(drop(v), "float32"), np.nan_to_num(x), weight))

    fused = expect_fused_torch_kernels(monkeypatch, x_shape, mask_shape)
    fast = bits(drop(x)), grad()
    if fused is not None:
        assert fused and all(fused.values()), fused
    monkeypatch.setattr(_backends, "enabled", False)
    plain_y = drop(x)
    plain = bits(plain_y), grad()
    np.testing.assert_array_equal(fast[0], plain[0])
    np.testing.assert_array_equal(fast[1], plain[1])
    keep = np.broadcast_to(reference.keep_mask(mask_shape, 0.3, 4, 7), x.shape)
    assert (to_np(keras.ops.cast(plain_y, "float32"))[~keep] == 0).all()
    assert not np.signbit(to_np(keras.ops.cast(plain_y, "float32"))[~keep]).any()


def test_snapshot_keeps_its_value_after_the_variable_is_assigned():
    counter = keras.Variable(3, dtype="int32", trainable=False)
    value = kr.snapshot(counter)
    counter.assign(4)
    assert int(to_np(value)) == 3 and int(to_np(counter)) == 4




def test_drop_and_apply_keep_at_rate_one_give_zeros_and_zero_gradients():
    # Every element dropped: exact +0.0 (no NaN from a 1/0 scale or NaN * 0),
    # and a zero gradient, whatever `x` holds.
    x = np.array([[1.5, -2.0, np.nan, np.inf]], "float32")
    keep = keras.ops.convert_to_tensor(np.array([[True, False, True, False]]))
    for fn in (
        lambda v: kr.drop(v, (1, 4), 1.0, seed=3, counter=1),
        lambda v: kr.apply_keep(v, keep, 1.0),
    ):
        y = to_np(fn(x))
        assert y.dtype == np.float32 and (y.view(np.uint32) == 0).all(), y
        assert (gradient(fn, np.nan_to_num(x)) == 0).all()


def test_drop_at_rate_zero_returns_its_input():
    x = keras.ops.convert_to_tensor(np.array([1.0, np.nan, -0.0], "float32"))
    assert kr.drop(x, (3,), 0.0, seed=3) is x


def test_keep_mask_and_drop_take_the_backend_fast_path(monkeypatch):
    # Bits alone cannot tell a fast path from the plain one: count the calls.
    module = _backends._module(BACKEND)
    calls = []

    def counted(name, function):
        return lambda *args: calls.append(name) or function(*args)

    for name in ("keep_mask", "drop"):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    kr.keep_mask((64, 64), 0.5, seed=1)
    kr.drop(keras.ops.ones((64, 64)), (64, 64), 0.5, seed=1)
    assert calls == ["keep_mask", "drop" if hasattr(module, "drop") else "keep_mask"]


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function traces exist under TensorFlow only")
def test_tensorflow_fast_path_is_traced_once_for_every_size_and_rate():
    # A new Python trace per mask size flooded eager training loops with
    # varying lengths with TensorFlow's retracing warnings.
    from keras_dropout_variants._backends import tensorflow as fast

    before = fast._compiled_keep.experimental_get_tracing_count()
    for n in range(5, 12):
        rate = 0.05 + 0.1 * (n % 9)
        np.testing.assert_array_equal(to_np(kr.keep_mask((n, 3), rate, 5, 2)), reference.keep_mask((n, 3), rate, 5, 2))
    assert fast._compiled_keep.experimental_get_tracing_count() <= max(before, 1)
    # Eager `drop` (mask and application in one XLA function) is traced once
    # per (dtype, rank) of x, not per shape: its concrete functions are kept.
    before = fast._compiled_drop.experimental_get_tracing_count()
    for n in range(5, 12):
        x = keras.ops.ones((n, 3))
        expected = np.where(reference.keep_mask((n, 3), 0.5, 5, 2), 2.0, 0.0)
        np.testing.assert_array_equal(to_np(kr.drop(x, (n, 3), 0.5, 5, 2)), expected)
    assert fast._compiled_drop.experimental_get_tracing_count() <= before + 1
