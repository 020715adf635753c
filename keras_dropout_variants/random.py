"""The counter-based mask engine shared by every layer of the package.

Whether element ``i`` of a mask is kept is a pure function of
``(seed, counter, offset + i)``, computed in 32-bit integer arithmetic with
``keras.ops``: multiplication wraps modulo 2**32 on every backend, so the same
arguments give the same bits under TensorFlow, JAX and PyTorch, eager or
compiled, on CPU or GPU. No int64 is used (JAX runs with x64 off).

Mask format, version 1 (``MASK_FORMAT_VERSION``). All values are unsigned
32-bit words, ``>>`` is a logical shift and ``*`` wraps modulo 2**32.

1. ``mix(x)``, the lowbias32 finalizer (C. Wellons, hash-prospector), a
   bijection of 32-bit words::

       x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16

2. The key: a three-round Feistel network over ``(seed, counter)``::

       b = counter ^ mix(seed + 0x9E3779B9)
       a = seed    ^ mix(b    + 0x3C6EF372)
       b = b       ^ mix(a    + 0xDAA66D2B)
       k0, k1 = a, b

3. The word of element ``j = offset + i`` (``i``: row-major index in the mask)::

       h = mix(j + k0); h ^= k1; h *= 0x31848BAB; h ^= h >> 15; h *= 0xAC4C1B51

4. Element ``j`` is kept iff ``h + 2**31 (mod 2**32) < threshold``, with
   ``threshold = round((1 - rate) * 2**32)`` (``keep_threshold``): the keep
   probability is exact to 2**-32.

Compatibility promise: for a given ``MASK_FORMAT_VERSION``, the same
``(seed, counter, offset, shape, rate)`` gives the same mask bits in every
release of the package, on every backend and device. A change to any step
above is a new version. ``docs/design.md`` explains the design choices; the
golden vectors in ``tests/test_engine.py`` freeze the format.

The steps are written once, below, against a small word-arithmetic interface
(`_PyWords`: Python ints; `_OpsWords`: keras.ops on int32 tensors). A
backend's fast path (``keras_dropout_variants/_backends/``) may evaluate them
with its own arithmetic; each is tested bit for bit against the plain path.
This module imports no backend library and never asks which backend runs.
"""

from fractions import Fraction
import math
import numbers

import keras
from keras import ops

from keras_dropout_variants import _backends
from keras_dropout_variants import _checks

__all__ = [
    "MASK_FORMAT_VERSION",
    "apply_keep",
    "block_offset",
    "drop",
    "keep_mask",
    "keep_threshold",
    "normal",
    "random_bits",
    "snapshot",
]

MASK_FORMAT_VERSION = 1

_U32 = _checks.U32
_MIX_M1 = 0x7FEB352D
_MIX_M2 = 0x846CA68B
_ELEM_M3 = 0x31848BAB
_ELEM_M4 = 0xAC4C1B51
_ROUND_C = (0x9E3779B9, 0x3C6EF372, 0xDAA66D2B)


def _i32(value):
    """The int32 whose bit pattern is the unsigned 32-bit `value`."""
    value %= _U32
    return value - _U32 if value >= 1 << 31 else value


# ---------------------------------------------------------------------------
# Word arithmetic. `add` and `xor` take two words, `mul` a word and a Python
# constant, `xorshift(x, k)` is `x ^ (x >> k)` with a logical shift.


class _PyWords:
    """Unsigned words as Python ints: keys known when a call is traced."""

    @staticmethod
    def add(a, b):
        return (a + b) % _U32

    @staticmethod
    def xor(a, b):
        return a ^ b

    @staticmethod
    def mul(a, c):
        return a * c % _U32

    @staticmethod
    def xorshift(a, k):
        return a ^ (a >> k)


def _const(value):
    return ops.convert_to_tensor(_i32(value), dtype="int32")


def _as_word(value):
    return _const(value) if isinstance(value, int) else value


def _lsr(x, k):
    # ops.right_shift is arithmetic on int32: clear the copied sign bits.
    return ops.bitwise_and(ops.right_shift(x, k), _const((1 << (32 - k)) - 1))


class _OpsWords:
    """int32 tensors through keras.ops; Python ints join as constants."""

    @staticmethod
    def add(a, b):
        return ops.add(_as_word(a), _as_word(b))

    @staticmethod
    def xor(a, b):
        return ops.bitwise_xor(_as_word(a), _as_word(b))

    @staticmethod
    def mul(a, c):
        return ops.multiply(a, _const(c))

    @staticmethod
    def xorshift(a, k):
        return ops.bitwise_xor(a, _lsr(a, k))


def _mix(x, w):
    x = w.mul(w.xorshift(x, 16), _MIX_M1)
    x = w.mul(w.xorshift(x, 15), _MIX_M2)
    return w.xorshift(x, 16)


def _key(seed, counter, w=None):
    """`(k0, k1)`: Python ints when both inputs are, else words of `w`
    (default keras.ops). The first round of an int seed is folded in Python,
    so a step counter held in a variable costs two rounds in the graph and
    never causes a retrace."""
    if w is None:
        both_ints = isinstance(seed, int) and isinstance(counter, int)
        w = _PyWords if both_ints else _OpsWords
    if isinstance(seed, int):
        seed_word = _mix(_PyWords.add(seed, _ROUND_C[0]), _PyWords)
    else:
        seed_word = _mix(w.add(seed, _ROUND_C[0]), w)
    b = w.xor(counter, seed_word)
    a = w.xor(seed, _mix(w.add(b, _ROUND_C[1]), w))
    b = w.xor(b, _mix(w.add(a, _ROUND_C[2]), w))
    return a, b


def _element_hash(j, k1, w):
    """Step 3 on the words `j + k0` (see the module docstring)."""
    h = w.xor(_mix(j, w), k1)
    h = w.xorshift(w.mul(h, _ELEM_M3), 15)
    return w.mul(h, _ELEM_M4)


def _stream_key(seed, counter, offset):
    """`(base, k1)` of a stream: element i's hash input is `i + base`,
    `base = k0 + offset`."""
    k0, k1 = _key(seed, counter)
    add = _PyWords.add if isinstance(k0, int) and isinstance(offset, int) else _OpsWords.add
    return add(k0, offset), k1


def _limit(threshold):
    """The int32 `l` with `h + 2**31 < threshold` iff `h < l` (signed): step 4
    as one comparison, without unsigned types."""
    return threshold - (1 << 31)


def _hash_range(size, base, k1):
    """The words `h` of elements 0..size-1 of the stream `(base, k1)`."""
    return _element_hash(_OpsWords.add(ops.arange(size, dtype="int32"), base), k1, _OpsWords)


def _keep_from_key(size, base, k1, limit):
    """The flat keep mask of the stream `(base, k1)`: the plain path."""
    return ops.less(_hash_range(size, base, k1), _as_word(limit))


def _flat_keep(size, seed, counter, offset, threshold):
    """The keep decision of elements 0..size-1, in plain keras.ops."""
    return _keep_from_key(size, *_stream_key(seed, counter, offset), _limit(threshold))


# ---------------------------------------------------------------------------
# Arguments.


def keep_threshold(rate):
    """round((1 - rate) * 2**32), clamped to what 32 bits can compare.

    Element j is kept iff its uniform 32-bit draw is below this value, so the
    keep probability is `keep_threshold(rate) / 2**32`.
    """
    rate = _checks.rate(rate)
    # Exact rational arithmetic costs tens of microseconds: once per rate.
    return _cached(_THRESHOLDS, rate, lambda: _exact_threshold(rate))


def _exact_threshold(rate):
    threshold = round((1 - Fraction(rate)) * _U32)
    return min(max(threshold, 0), _U32 - 1) if rate != 0.0 else _U32


_THRESHOLDS = {}


def _cached(cache, key, make, limit=1024):
    """`cache[key]`, made by `make()` on a miss, in a dict of at most
    `limit` entries (emptied when full). Not functools.lru_cache, which
    dynamo warns about when it traces it; one lookup, since another thread
    may clear the dict between a membership test and a read."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= limit:
            cache.clear()
        value = cache[key] = make()
    return value


def _size(shape):
    if all(isinstance(d, int) for d in shape):
        size = math.prod(shape)
        if size > _U32:
            raise ValueError(
                f"A mask of shape {shape} has {size} elements; the engine "
                "addresses at most 2**32 elements per (seed, counter). Split "
                "the tensor and use `offset`, or another counter."
            )
        return size
    size = ops.convert_to_tensor(1, "int32")
    for d in shape:
        size = ops.multiply(size, ops.cast(d, "int32"))
    return size


def _mask_arguments(shape, rate, seed, counter, offset):
    """Checked `(shape, size, threshold, (seed, counter, offset))` of a mask."""
    threshold = keep_threshold(rate)
    words = (
        _checks.seed(seed),
        _checks.word(counter, "counter"),
        _checks.word(offset, "offset"),
    )
    shape = _checks.shape(shape)
    return shape, _size(shape), threshold, words


# ---------------------------------------------------------------------------
# Public API.


def random_bits(shape, seed, counter=0, offset=0):
    """The engine's raw 32-bit words `h` for a mask of `shape`, as int32.

    The uniform draw of each element is `h + 2**31 (mod 2**32)`; see the
    module docstring. Useful to build other distributions and to test the
    engine.

    Args:
        shape: tuple of non-negative ints (dynamic dims may be scalar tensors).
        seed: Python int in [0, 2**32).
        counter: int in [0, 2**32) or integer scalar tensor: the mask id.
        offset: int in [0, 2**32) or integer scalar tensor: index of the
            first element in the global row-major stream.

    Returns:
        An int32 tensor of shape `shape`.
    """
    shape, size, _, words = _mask_arguments(shape, 0.0, seed, counter, offset)
    return ops.reshape(_hash_range(size, *_stream_key(*words)), shape)


def block_offset(index, block_size, start=0):
    """`start + index * block_size` modulo 2**32: where block `index` of a
    stream starts.

    The stream of one `(seed, counter)` is cut into equal blocks (an example's
    weights, a row of a global batch); block `index` is drawn with this
    `offset`. Every argument may be a Python int or an integer scalar tensor
    (a loop index, a dynamic batch size, a replica's first row); the result
    wraps like every engine word.
    """
    if all(isinstance(v, int) for v in (index, block_size, start)):
        return (start + index * block_size) % _U32
    index, block_size = (ops.cast(_as_word(v), "int32") for v in (index, block_size))
    return _OpsWords.add(ops.cast(_as_word(start), "int32"), ops.multiply(index, block_size))


def keep_mask(shape, rate, seed, counter=0, offset=0):
    """Boolean mask of `shape`: True where an element is kept.

    Each element is kept with probability `1 - rate` (exact to 2**-32) and
    the result is a pure function of `(seed, counter, offset)`: the same on
    every backend and device.

    Args:
        shape: tuple of non-negative ints (dynamic dims may be scalar tensors).
        rate: float in [0, 1], the drop probability.
        seed: Python int in [0, 2**32).
        counter: int in [0, 2**32) or integer scalar tensor: the mask id
            (e.g. the training step).
        offset: int or integer scalar tensor: row-major index of this mask's
            first element within a larger mask (for shards).

    Returns:
        A bool tensor of shape `shape`.

    Example:

    >>> m = keep_mask((2, 3), rate=0.5, seed=7, counter=0)
    >>> tuple(m.shape)
    (2, 3)
    """
    if _is_rate_tensor(rate):
        return _variable_rate_keep(shape, rate, seed, counter, offset)
    shape, size, threshold, words = _mask_arguments(shape, rate, seed, counter, offset)
    if threshold >= _U32:
        return ops.ones(shape, dtype="bool")
    return ops.reshape(_dispatch_keep(size, *words, threshold), shape)


def _is_rate_tensor(rate):
    """A rate held in a tensor or variable (a schedule's), not a number."""
    return not isinstance(rate, numbers.Real)


def _rate_limit(rate):
    """The comparison limit of a rate tensor: `floor(p * 2**32) - 2**31` for
    `p = 1 - rate` in float32.

    `1 - rate` is the one rounding (IEEE, the same on every backend); the
    scaling by 2**32 and 2**-16, the floors and the split into two 16-bit
    halves are exact, so the limit is the same int32 on every backend.
    Returns `(limit, keep_all)`: p = 1 (rate 0, or below 2**-25, which
    float32 rounds away) has no int32 limit (it wraps), and keeps all.
    """
    p = ops.clip(ops.subtract(1.0, ops.cast(rate, "float32")), 0.0, 1.0)
    t = ops.multiply(p, 2.0**32)
    hi = ops.floor(ops.multiply(t, 2.0**-16))
    lo = ops.floor(ops.subtract(t, ops.multiply(hi, 65536.0)))
    hi, lo = ops.cast(hi, "int32"), ops.cast(lo, "int32")
    limit = ops.add(ops.multiply(ops.subtract(hi, _const(32768)), _const(65536)), lo)
    return limit, ops.greater_equal(p, 1.0)


def _variable_rate_keep(shape, rate, seed, counter, offset):
    """`keep_mask` for a rate tensor: the plain path (fast paths take a
    Python threshold), with the limit computed in the graph, so changing
    the rate changes no trace."""
    rate = _checks.rate_tensor(rate)
    shape, size, _, words = _mask_arguments(shape, 0.0, seed, counter, offset)
    limit, keep_all = _rate_limit(rate)
    keep = ops.logical_or(_keep_from_key(size, *_stream_key(*words), limit), keep_all)
    return ops.reshape(keep, shape)


def _dispatch_keep(size, seed, counter, offset, threshold):
    """`_flat_keep` by the backend's fast path where it has one."""
    fast = _backends.fast_path("keep_mask")
    return (fast or _flat_keep)(size, seed, counter, offset, threshold)


def apply_keep(x, keep, rate):
    """`x / (1 - rate)` where `keep` (bool, broadcast to `x`) is True, exactly
    0 elsewhere, even where `x` is NaN or inf. Differentiable in `x`.

    At `rate=1` the result is zeros (with a zero gradient), whatever `keep`.
    """
    rate = _checks.rate(rate)
    if rate == 1.0:
        # Every element dropped: select, since `x * 0` would turn NaN and inf
        # into NaN and a 1/0 scale would put NaN in the gradient.
        keep = ops.convert_to_tensor(False)
    return _apply_scale(x, keep, _scale(x, rate))


def _scale(x, rate):
    """1 / (1 - rate) as a 0-d tensor of x's dtype (1 at rate 1: unused)."""
    return ops.convert_to_tensor(1.0 / (1.0 - rate) if rate < 1.0 else 1.0, dtype=x.dtype)


def _rate_scale(x, rate):
    """1 / (1 - rate) for a rate tensor, in x's dtype; 0 at rate 1, where
    nothing is kept (a finite value: no NaN in gradients)."""
    rate = ops.cast(rate, "float32")
    safe = ops.where(ops.less(rate, 1.0), ops.subtract(1.0, rate), 1.0)
    scale = ops.where(ops.less(rate, 1.0), ops.divide(1.0, safe), 0.0)
    return ops.cast(scale, x.dtype)


def _apply_scale(x, keep, scale):
    """`x * scale` where `keep`, exactly 0 elsewhere: the plain apply step."""
    return ops.where(keep, ops.multiply(x, scale), ops.zeros((), dtype=x.dtype))


def drop(x, mask_shape, rate, seed, counter=0, offset=0):
    """Dropout of the floating tensor `x` with the engine's mask of
    `mask_shape` (broadcast to `x`): `apply_keep(x, keep_mask(...), rate)`.

    Arguments as in `keep_mask`; `mask_shape=None` is x's own shape, which
    also serves a TensorFlow graph tensor of unknown rank (its mask is the
    one of its row-major flat view: the same bits). `ops.dropout` runs this,
    so that a backend's fast path may fuse drawing and applying the mask.
    The two trivial rates are handled here, for every caller: rate 0
    returns `x` itself, rate 1 exact zeros with a zero gradient.
    """
    # On Keras' device, as every keras.ops result (torch may hold it elsewhere).
    x = ops.convert_to_tensor(x)
    if mask_shape is None:
        if _rank(x) is None:
            flat, restore = _flat_view(x)
            return restore(drop(flat, ops.shape(flat), rate, seed, counter, offset))
        mask_shape = ops.shape(x)
    if _is_rate_tensor(rate):
        keep = _variable_rate_keep(mask_shape, rate, seed, counter, offset)
        return _apply_scale(x, keep, _rate_scale(x, rate))
    shape, size, threshold, words = _mask_arguments(mask_shape, rate, seed, counter, offset)
    rate = float(rate)
    if rate == 0.0:
        return x
    if rate == 1.0:
        return apply_keep(x, None, rate)
    fast = _backends.fast_path("drop")
    dropped = fast(x, shape, size, *words, threshold, rate) if fast else None
    if dropped is not None:
        return dropped
    keep = ops.reshape(_dispatch_keep(size, *words, threshold), shape)
    return _apply_scale(x, keep, _scale(x, rate))


def _rank(x):
    """x's static rank, or None where it is unknown (TensorFlow graphs)."""
    try:
        return len(x.shape)
    except (TypeError, ValueError):
        return None


def _flat_view(x):
    """`(flat, restore)`: x of unknown rank as a 1-D tensor, and the function
    that gives a result of its size x's shape back. keras.ops has no shape
    of unknown rank: the backend that has such tensors provides it."""
    view = _backends.provided("flat_view")
    if view is None:
        raise ValueError(f"`x` must have a known rank. Received: x={x!r}")
    return view(x)


def normal(shape, seed, counter=0, offset=0, dtype="float32"):
    """Standard normal samples from the engine's words, by inverse CDF.

    The top 23 bits of each uniform word give `u = (k + 0.5) / 2**23` in
    (0, 1), exactly representable in float32; the sample is
    `sqrt(2) * erfinv(2u - 1)`. The uniforms are bit-identical on every
    backend; `erfinv` is each backend's own, so samples agree across
    backends to float rounding, and exactly from run to run.

    Args:
        shape: tuple of non-negative ints.
        seed: Python int in [0, 2**32).
        counter: int or integer scalar tensor.
        offset: int or integer scalar tensor (as in `keep_mask`).
        dtype: floating dtype of the result (computed in float32).

    Returns:
        A tensor of `shape` and `dtype`.
    """
    h = random_bits(shape, seed, counter, offset)
    top = _lsr(ops.bitwise_xor(h, _const(1 << 31)), 9)  # u32 >> 9, in [0, 2**23)
    u = (ops.cast(top, "float32") + 0.5) * (2.0**-23)
    z = ops.erfinv(2.0 * u - 1.0) * (2.0**0.5)
    return ops.cast(z, dtype)


def snapshot(value):
    """The current value of `value` (e.g. a step-counter variable), as a tensor
    that later assignments to the variable cannot change.

    Layers draw a mask from their counter and then advance it. On TensorFlow
    and torch a tensor read from a variable may share its storage, which
    `assign` then overwrites; a backend whose compiler may recompute the mask
    from the variable after the assignment provides its own opaque copy.
    """
    fast = _backends.fast_path("snapshot")
    return fast(value) if fast else ops.copy(value)


_backends.load()
