"""The counter-based mask engine shared by every layer of the package.

Whether element ``i`` of a mask is kept is a pure function of
``(seed, counter, offset + i)``, computed with 32-bit integer arithmetic in
``keras.ops``. Multiplication wraps modulo 2**32 on every backend, so the same
arguments give the same bits under TensorFlow, JAX and PyTorch, eager or
compiled, on CPU or GPU. No int64 is used (JAX runs with x64 off).

Algorithm (version 1; the golden vectors in ``tests/test_engine.py`` freeze it,
so any change to it is a breaking change). All values are unsigned 32-bit,
``>>`` is a logical shift and ``*`` wraps modulo 2**32.

1. ``mix(x)``: the lowbias32 finalizer (C. Wellons, hash-prospector),
   a bijection of 32-bit words::

       x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B; x ^= x >> 16

2. Key: a three-round Feistel network over the pair ``(seed, counter)``::

       b = counter ^ mix(seed + 0x9E3779B9)
       a = seed    ^ mix(b    + 0x3C6EF372)
       b = b       ^ mix(a    + 0xDAA66D2B)
       k0, k1 = a, b

   Each round is invertible, so distinct ``(seed, counter)`` pairs get
   distinct 64-bit keys, and a change of one bit of either input changes
   both halves of the key. The first round depends on the seed alone and is
   computed in Python; the other two run in the graph when ``counter`` is a
   tensor, so a step counter held in a variable never causes a retrace.

3. Element ``j = offset + i`` (``i`` is the row-major index in the mask)::

       h = mix(j + k0)
       h ^= k1
       h *= 0x31848BAB
       h ^= h >> 15
       h *= 0xAC4C1B51

   Every step is a bijection of ``h``, so over the 2**32 indices each 32-bit
   value occurs once. ``offset`` alone shifts a stream, which is what lets a
   shard of a tensor compute exactly its slice of the global mask. Two keys
   never give shifted copies: element j of key A equals element j + d of
   key B only where ``mix(x) ^ mix(x + delta)`` hits ``k1_A ^ k1_B``, which a
   full ``mix`` round makes a 2**-32 event for every lag. (A cheaper variant
   with a single multiply before ``k1`` let some lags share 2**-11 of their
   words: tests/test_engine.py checks this.)

4. The uniform draw is ``u = h + 2**31 (mod 2**32)`` and element ``j`` is kept
   iff ``u < threshold`` with ``threshold = round((1 - rate) * 2**32)``, so the
   keep probability is exact to 2**-32. In int32 this is the signed
   comparison ``h < threshold - 2**31``: one operation, no unsigned types.

``offset`` counts elements of the mask (the noise shape when a mask is
broadcast), in row-major order: rows ``r0:r1`` of a global ``(B, ...)`` mask
are computed by a shard with ``offset = r0 * prod(shape[1:])``.
"""

from fractions import Fraction
import functools
import math
import numbers
import threading
import warnings

import keras
from keras import ops

__all__ = [
    "keep_mask", "drop", "apply_keep", "normal", "random_bits", "keep_threshold", "block_offset",
]

_U32 = 1 << 32
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
# Python (host) arithmetic, used for constants and as the reference.


def _mix_py(x):
    x %= _U32
    x ^= x >> 16
    x = (x * _MIX_M1) % _U32
    x ^= x >> 15
    x = (x * _MIX_M2) % _U32
    x ^= x >> 16
    return x


def _seed_word(seed):
    """First Feistel round's mask: depends on the seed only."""
    return _mix_py(seed + _ROUND_C[0])


def _key_py(seed, counter):
    b = counter ^ _seed_word(seed)
    a = seed ^ _mix_py(b + _ROUND_C[1])
    b = b ^ _mix_py(a + _ROUND_C[2])
    return a, b


# ---------------------------------------------------------------------------
# keras.ops arithmetic on int32 tensors.


def _const(value):
    return ops.convert_to_tensor(_i32(value), dtype="int32")


def _lsr(x, k):
    # ops.right_shift is arithmetic on int32: clear the copied sign bits.
    return ops.bitwise_and(ops.right_shift(x, k), _const((1 << (32 - k)) - 1))


def _mix(x):
    x = ops.bitwise_xor(x, _lsr(x, 16))
    x = ops.multiply(x, _const(_MIX_M1))
    x = ops.bitwise_xor(x, _lsr(x, 15))
    x = ops.multiply(x, _const(_MIX_M2))
    return ops.bitwise_xor(x, _lsr(x, 16))


def _key(seed, counter):
    """(k0, k1): Python ints when both inputs are, else int32 tensors."""
    if isinstance(seed, int) and isinstance(counter, int):
        return _key_py(seed, counter)
    if isinstance(seed, int):
        b = ops.bitwise_xor(counter, _const(_seed_word(seed)))
    else:
        seed_word = _mix(ops.add(seed, _const(_ROUND_C[0])))
        b = ops.bitwise_xor(_as_word(counter), seed_word)
    a = ops.bitwise_xor(_as_word(seed), _mix(ops.add(b, _const(_ROUND_C[1]))))
    b = ops.bitwise_xor(b, _mix(ops.add(a, _const(_ROUND_C[2]))))
    return a, b


def _add_words(a, b):
    """a + b mod 2**32, staying in Python when both are Python ints."""
    if isinstance(a, int) and isinstance(b, int):
        return (a + b) % _U32
    a = _const(a) if isinstance(a, int) else a
    b = _const(b) if isinstance(b, int) else b
    return ops.add(a, b)


def _as_word(value):
    return _const(value) if isinstance(value, int) else value


def _element_hash(size, base, k1):
    """h for elements 0..size-1, with `base` = k0 + offset (one fused add)."""
    h = _mix(ops.add(ops.arange(size, dtype="int32"), _as_word(base)))
    h = ops.bitwise_xor(h, _as_word(k1))
    h = ops.multiply(h, _const(_ELEM_M3))
    h = ops.bitwise_xor(h, _lsr(h, 15))
    return ops.multiply(h, _const(_ELEM_M4))


# ---------------------------------------------------------------------------
# Argument checks, shared with `ops` and the layers.


def invalid_argument(error, name, expected, value):
    """The package's one wording for a bad argument: names it and its value."""
    kind = "" if error is ValueError else f" (of type {type(value).__name__})"
    return error(
        f"Invalid value received for argument `{name}`: expected {expected}. "
        f"Received: {name}={value!r}{kind}"
    )


def check_seed(seed, name="seed"):
    """Returns `seed` as a Python int in [0, 2**32), or raises."""
    expected = "a Python integer in [0, 2**32)"
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise invalid_argument(TypeError, name, expected, seed)
    if not 0 <= seed < _U32:
        raise invalid_argument(ValueError, name, expected, int(seed))
    return int(seed)


def _is_tensor_like(value):
    return isinstance(value, (keras.Variable, keras.KerasTensor)) or (
        ops.is_tensor(value) or hasattr(value, "__array__")
    )


def check_word(value, name):
    """An int in [0, 2**32) or an integer scalar tensor (cast to int32)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return check_seed(value, name)
    if _is_tensor_like(value):
        dtype = keras.backend.standardize_dtype(value.dtype)
        if "int" not in dtype:
            raise TypeError(
                f"Invalid value received for argument `{name}`: expected an "
                f"integer scalar, got a tensor of dtype {dtype}."
            )
        if tuple(value.shape) != ():
            raise ValueError(
                f"Invalid value received for argument `{name}`: expected a "
                f"scalar, got a tensor of shape {tuple(value.shape)}."
            )
        # Casting wraps modulo 2**32: an int64 counter keeps its low word.
        return ops.cast(value, "int32")
    raise invalid_argument(TypeError, name, "an integer or an integer scalar tensor", value)


def check_rate(rate, name="rate"):
    """Returns `rate` as a Python float in [0, 1], or raises."""
    expected = "a float between 0 and 1"
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise invalid_argument(TypeError, name, expected, rate)
    if not 0.0 <= rate <= 1.0:  # False for NaN too.
        raise invalid_argument(ValueError, name, expected, float(rate))
    return float(rate)


def keep_threshold(rate):
    """round((1 - rate) * 2**32), clamped to what 32 bits can compare.

    Element j is kept iff its uniform 32-bit draw is below this value, so the
    keep probability is `keep_threshold(rate) / 2**32`.
    """
    rate = check_rate(rate)
    # Exact rational arithmetic costs tens of microseconds: once per rate. (A
    # dict, not functools.lru_cache, which dynamo warns about when it traces.)
    if rate not in _THRESHOLDS:
        if len(_THRESHOLDS) >= 1024:
            _THRESHOLDS.clear()
        threshold = round((1 - Fraction(rate)) * _U32)
        _THRESHOLDS[rate] = min(max(threshold, 0), _U32 - 1) if rate != 0.0 else _U32
    return _THRESHOLDS[rate]


_THRESHOLDS = {}


def _check_shape(shape):
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(
            "Invalid value received for argument `shape`: expected a tuple "
            f"of non-negative integers. Received: shape={shape!r}"
        )
    shape = tuple(shape)
    for dim in shape:
        if isinstance(dim, numbers.Integral) and not isinstance(dim, bool):
            if dim < 0:
                raise ValueError(
                    "Invalid value received for argument `shape`: "
                    f"negative dimension. Received: shape={shape}"
                )
        elif not _is_tensor_like(dim):  # A dynamic (traced) dim.
            raise TypeError(
                "Invalid value received for argument `shape`: expected a "
                f"tuple of non-negative integers. Received: shape={shape}"
            )
    return tuple(int(d) if isinstance(d, numbers.Integral) else d for d in shape)


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


# ---------------------------------------------------------------------------
# Public API.


def random_bits(shape, seed, counter=0, offset=0):
    """The engine's raw 32-bit words `h` for a mask of `shape`, as int32.

    The uniform draw of each element is `h + 2**31 (mod 2**32)`; see the
    module docstring. Mostly useful to build other distributions and to test
    the engine.

    Args:
        shape: tuple of non-negative ints (dynamic dims may be scalar tensors).
        seed: Python int in [0, 2**32).
        counter: int in [0, 2**32) or integer scalar tensor: the mask id.
        offset: int in [0, 2**32) or integer scalar tensor: index of the
            first element in the global row-major stream.

    Returns:
        An int32 tensor of shape `shape`.
    """
    shape = _check_shape(shape)
    seed = check_seed(seed)
    counter = check_word(counter, "counter")
    offset = check_word(offset, "offset")
    h = _element_hash(_size(shape), *_stream_key(seed, counter, offset))
    return ops.reshape(h, shape)


def block_offset(index, block_size):
    """`index * block_size` modulo 2**32: where block `index` of a stream starts.

    The stream of one `(seed, counter)` is cut into equal blocks (an example's
    weights, a replica's shard); block `index` is drawn with this `offset`.
    Either argument may be a Python int or an integer scalar tensor (a loop
    index, a dynamic batch size); the product wraps like every engine word.
    """
    if isinstance(index, int) and isinstance(block_size, int):
        return index * block_size % _U32
    index, block_size = (ops.cast(_as_word(v), "int32") for v in (index, block_size))
    return ops.multiply(index, block_size)


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
    shape, threshold, words = _mask_arguments(shape, rate, seed, counter, offset)
    if threshold >= _U32:
        return ops.ones(shape, dtype="bool")
    return ops.reshape(_dispatch(_size(shape), *words, threshold), shape)


def _mask_arguments(shape, rate, seed, counter, offset):
    """Checked `(shape, threshold, (seed, counter, offset))` of a mask."""
    threshold = keep_threshold(rate)
    words = (
        check_seed(seed),
        check_word(counter, "counter"),
        check_word(offset, "offset"),
    )
    return _check_shape(shape), threshold, words


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


def _stream_key(seed, counter, offset):
    """`(base, k1)` of `_element_hash`: base = k0 + offset."""
    k0, k1 = _key(seed, counter)
    return _add_words(k0, offset), k1


def _stream_words(seed, counter, offset, threshold):
    """`(base, k1, limit)`: what `_keep_from_key` needs."""
    return (*_stream_key(seed, counter, offset), _limit(threshold))


def _scale(x, rate):
    """1 / (1 - rate) as a 0-d tensor of x's dtype."""
    return ops.convert_to_tensor(1.0 / (1.0 - rate), dtype=x.dtype)


def _flat_keep(size, seed, counter, offset, threshold):
    """The keep decision of elements 0..size-1 (pure keras.ops)."""
    return _keep_from_key(size, *_stream_key(seed, counter, offset), _limit(threshold))


def _limit(threshold):
    """The int32 `l` with `u < threshold` iff `h < l` (step 4)."""
    return threshold - (1 << 31)


def _keep_from_key(size, base, k1, limit):
    return ops.less(_element_hash(size, base, k1), _as_word(limit))


def apply_keep(x, keep, rate):
    """`x / (1 - rate)` where `keep` (bool, broadcast) is True, exactly 0
    elsewhere, even where `x` is NaN or inf. Differentiable in `x`."""
    return _apply_scale(x, keep, _scale(x, rate))


def _apply_scale(x, keep, scale):
    return ops.where(keep, ops.multiply(x, scale), ops.zeros((), dtype=x.dtype))


def drop(x, mask_shape, rate, seed, counter=0, offset=0):
    """Dropout of the floating tensor `x` with the engine's mask of
    `mask_shape` (broadcast to `x`): `apply_keep(x, keep_mask(...), rate)`.

    Arguments as in `keep_mask`, with `0 <= rate < 1`. `ops.dropout` runs
    this, so that a backend may fuse drawing and applying the mask.
    """
    # On Keras' device, as every keras.ops result (torch may hold it elsewhere).
    x = ops.convert_to_tensor(x)
    shape, threshold, words = _mask_arguments(mask_shape, rate, seed, counter, offset)
    if threshold >= _U32:
        return apply_keep(x, ops.ones(shape, dtype="bool"), rate)
    return _dispatch_drop(x, shape, _size(shape), *words, threshold, rate)


# The engine's one dispatch point. Each path computes the same integer
# function, so all give the same bits; tests/test_engine.py compares each with
# the NumPy reference and with `_flat_keep` / `apply_keep` themselves.
# - TensorFlow: `fit()` runs plain (non-XLA) graphs by default, where each
#   int32 op is a separate kernel: the same keras.ops code in an inner
#   `jit_compile=True` function is XLA-fused even there, and inlines into an
#   outer XLA graph.
# - JAX: eager calls dispatch op by op; `jax.jit` fuses them, and inlines
#   under an outer jit.
# - torch eager: op by op, the hash makes about 20 passes over memory. For
#   `drop` with a mask as large as `x` (a Dense kernel, plain dropout) of at
#   least `_TORCH_FUSED_MIN` elements, the forward pass is instead one
#   kernel that draws and applies the mask, built by torch.compile
#   (Inductor) from the same keras.ops code once per device and dtype (the
#   size is symbolic); see `_TorchFusedDrop` for the backward pass. Where
#   it cannot compile (no C++ compiler, say), a warning says so and the
#   unfused path below runs instead.
#   Unfused (smaller or broadcast masks, `keep_mask`): keras.ops allocate a
#   fresh tensor per op, and the page faults of fresh multi-MiB CPU tensors
#   dominate; the same steps in place, in reused scratch chunks, are several
#   times faster. Applying a random bool mask costs more than drawing it
#   there (`torch.where`'s CPU kernel branches per element: 0.9 ms for a
#   784x512 mask against 0.05 ms for a multiply), so `drop` ANDs the bits of
#   `x * scale` with int words instead, and keys are derived in Python for a
#   CPU counter (keras.ops on 0-d tensors cost 0.4 ms per key).
# - torch.compile: the plain keras.ops path is traced and fused by Inductor.
#   For `drop`, the partitioner would save the bool mask for the backward
#   pass, and Inductor's CPU code stores bools slowly (17 ms per 1M elements
#   against 2.8 ms for the fused hash and select), so `drop` runs in
#   `_TorchFusedDrop` there too, traced into the caller's graph, and its
#   backward pass redraws the mask from the saved key.
_COMPILED = {}
_use_compiled_path = True


def _path():
    """Which implementation runs: "plain", "xla" (TF, JAX), "torch" (eager)
    or "torch-compiling" (being traced by torch.compile)."""
    backend = keras.backend.backend()
    if not _use_compiled_path or backend not in ("tensorflow", "jax", "torch"):
        return "plain"
    if backend == "torch":
        import torch

        return "torch-compiling" if torch.compiler.is_compiling() else "torch"
    return "xla"


def _dispatch(size, seed, counter, offset, threshold):
    """The keep mask of elements 0..size-1 (a flat bool tensor)."""
    path = _path()
    if path in ("plain", "torch-compiling"):
        return _flat_keep(size, seed, counter, offset, threshold)
    if path == "torch":
        import torch

        return _torch_keep(size, seed, counter, offset, threshold, torch.bool)
    backend = keras.backend.backend()
    if backend not in _COMPILED:
        if backend == "tensorflow":
            import tensorflow as tf

            _COMPILED[backend] = tf.function(_flat_keep, jit_compile=True)
        else:
            import jax

            _COMPILED[backend] = jax.jit(_flat_keep, static_argnums=(0, 4))
    # Words go in as tensors, so that a new seed or counter does not retrace;
    # the key is derived inside the compiled function too.
    seed, counter, offset = (_as_word(w) for w in (seed, counter, offset))
    return _COMPILED[backend](size, seed, counter, offset, threshold)


def _dispatch_drop(x, shape, size, seed, counter, offset, threshold, rate):
    """`drop` for `rate < 1`, through the same dispatch."""
    path = _path()
    if path == "torch" and str(x.dtype).split(".")[-1] in _TORCH_BITS:
        return _torch_drop(x, shape, size, seed, counter, offset, threshold, rate)
    if path == "torch-compiling":
        words = ops.stack([_as_word(w) for w in _stream_words(seed, counter, offset, threshold)])
        return _TorchFusedDrop.apply(x, words, _scale(x, rate), tuple(shape))
    keep = ops.reshape(_dispatch(size, seed, counter, offset, threshold), shape)
    return apply_keep(x, keep, rate)


def snapshot(value):
    """The current value of `value` (e.g. a step-counter variable), as a tensor
    that later assignments to the variable cannot change.

    Layers draw a mask from their counter and then advance it. On torch a
    tensor read from a variable shares its storage, and `assign` writes into
    it in place; a clone is not enough under `torch.compile`, whose
    partitioner may recompute the mask in the backward pass from the graph
    input, after the assignment, and so differentiate through the next mask.
    There the copy is an opaque custom op, whose output is saved instead.
    """
    if keras.backend.backend() != "torch":
        return ops.copy(value)
    import torch

    if not torch.compiler.is_compiling():  # eager autograd recomputes nothing
        return ops.copy(value)
    return _torch_snapshot(ops.convert_to_tensor(value))


# torch-only helpers, for the dispatch above; `torch` is imported at the end
# of this module when Keras runs on torch.


def _torch_xorshift_(h, tmp, k):
    """`h ^= h >> k` (logical) in place on the int32 tensor `h`."""
    torch.bitwise_right_shift(h, k, out=tmp)
    return h.bitwise_xor_(tmp.bitwise_and_((1 << (32 - k)) - 1))


def _torch_mix_(h, tmp):
    """`_mix` in place on the int32 tensor `h`, with `tmp` as scratch."""
    _torch_xorshift_(h, tmp, 16)
    h.mul_(_i32(_MIX_M1))
    _torch_xorshift_(h, tmp, 15)
    h.mul_(_i32(_MIX_M2))
    return _torch_xorshift_(h, tmp, 16)


def _torch_key(seed, counter):
    """`_key` with raw torch ops: keras.ops' per-call overhead on these 0-d
    tensors cost more than hashing a 784x512 mask. A counter on the CPU is
    read (no device sync) and the key computed in Python."""
    if isinstance(counter, torch.Tensor) and counter.device.type == "cpu":
        counter = int(counter) % _U32
    if isinstance(counter, int):
        return _key_py(seed, counter)
    b = counter.bitwise_xor(_i32(_seed_word(seed)))
    tmp = b.new_empty(())
    a = _torch_mix_(b.add(_i32(_ROUND_C[1])), tmp).bitwise_xor_(_i32(seed))
    b = b.bitwise_xor_(_torch_mix_(a.add(_i32(_ROUND_C[2])), tmp))
    return a, b


# Masks are hashed in chunks of at most 2**20 elements, in int32 scratch
# buffers kept per (device, thread): fresh multi-MiB CPU tensors come from
# mmap, and their page faults cost more than the arithmetic. 12 MiB each.
_TORCH_CHUNK = 1 << 20
_TORCH_SCRATCH = {}


def _torch_scratch(device):
    """(indices 0..chunk-1, h, tmp) for this device and thread."""
    key = (device, threading.get_ident())
    if key not in _TORCH_SCRATCH:
        indices = torch.arange(_TORCH_CHUNK, dtype=torch.int32, device=device)
        _TORCH_SCRATCH[key] = (indices, torch.empty_like(indices), torch.empty_like(indices))
    return _TORCH_SCRATCH[key]


def _torch_add_words(a, b):
    """`_add_words` with a Python int joining a tensor as a kernel argument:
    made into a tensor, it would be a blocking host-to-device copy, which
    waits for everything queued on a GPU."""
    if isinstance(a, int) and isinstance(b, int):
        return (a + b) % _U32
    if isinstance(a, int):
        a, b = b, a
    return a.add(_i32(b) if isinstance(b, int) else b)


def _torch_words(words, device):
    """The engine words `words` (ints or 0-d int tensors) as one int32 tensor
    on `device`. A Python int becomes a fill of a tensor already there, and
    words that are all ints are cached, so that no call makes a blocking
    host-to-device copy."""
    tensors = [w for w in words if isinstance(w, torch.Tensor)]
    if not tensors:
        return _torch_constant_words(tuple(_i32(w) for w in words), device)
    like = tensors[0].to(device=device, dtype=torch.int32)
    return torch.stack([like.new_full((), _i32(w)) if isinstance(w, int) else w.to(like) for w in words])


@functools.lru_cache(maxsize=256)
def _torch_constant_words(words, device):
    return torch.tensor(words, dtype=torch.int32, device=device)


@functools.lru_cache(maxsize=256)
def _torch_scale(rate, dtype, device):
    """1 / (1 - rate) as a 0-d tensor: made anew on every call, it would be a
    blocking host-to-device copy on a GPU."""
    return torch.tensor(1.0 / (1.0 - rate), dtype=dtype, device=device)


def _torch_keep(size, seed, counter, offset, threshold, dtype, device=None):
    """The keep decision of elements 0..size-1 (`_flat_keep`) as a new flat
    tensor of `dtype`: bool, or an integer dtype, 1 (keep) / 0 (drop), on
    `device` (by default the key's, or Keras' device)."""
    k0, k1 = _torch_key(seed, counter)
    base = _torch_add_words(k0, offset)
    if device is None:
        tensors = [w for w in (base, k1) if isinstance(w, torch.Tensor)]
        device = tensors[0].device if tensors else ops.zeros(()).device  # Keras' device
    base, k1 = (w.to(device) if isinstance(w, torch.Tensor) else w for w in (base, k1))
    k1 = _i32(k1) if isinstance(k1, int) else k1
    indices, h, tmp = _torch_scratch(device)
    out = torch.empty(size, dtype=dtype, device=device)
    for start in range(0, size, _TORCH_CHUNK):
        n = min(_TORCH_CHUNK, size - start)
        hn, tn = h[:n], tmp[:n]
        if isinstance(base, int):
            torch.add(indices[:n], _i32(base + start), out=hn)
        else:
            torch.add(indices[:n], base, out=hn).add_(_i32(start))
        _torch_mix_(hn, tn)
        hn.bitwise_xor_(k1)
        hn.mul_(_i32(_ELEM_M3))
        _torch_xorshift_(hn, tn, 15).mul_(_i32(_ELEM_M4))
        # Comparing into int32 and converting is faster than into bool.
        torch.lt(hn, _limit(threshold), out=tn)
        out[start:start + n].copy_(tn)
    return out


# The signed integer dtype of each float dtype's size, to mask its bits.
_TORCH_BITS = {"float16": "int16", "bfloat16": "int16", "float32": "int32", "float64": "int64"}


# Smallest mask that `drop` hands to the fused kernel: below it, the call
# overhead of the compiled function is a large part of the work.
_TORCH_FUSED_MIN = 1 << 14
# (device type, dtype) -> whether the fused kernels compiled there.
_TORCH_FUSED = {}
# Device types whose fused forward pass keeps the words for the backward pass
# instead of redrawing the mask there (see `_TorchFusedDrop`).
_TORCH_KEEP_WORDS_ON = ("cpu",)


def _torch_redraws(device):
    """Whether eager fused kernels on `device` redraw the mask in the
    backward pass (else the forward pass keeps the keep words)."""
    return device.type not in _TORCH_KEEP_WORDS_ON


def _torch_drop(x, shape, size, seed, counter, offset, threshold, rate):
    """`drop` on eager torch: fused kernels for a large mask of x's shape
    (see the dispatch notes), else the unfused path."""
    scale = _torch_scale(rate, x.dtype, x.device)
    fused = (x.device.type, x.dtype)
    if size >= _TORCH_FUSED_MIN and tuple(shape) == tuple(x.shape) and _TORCH_FUSED.get(fused, True):
        if _torch_redraws(x.device):
            # The kernels derive the key themselves: a key derived from a
            # counter on a GPU would take some 30 launches of 0-d ops.
            words = _torch_words((seed, counter, offset, _limit(threshold)), x.device)
        else:
            k0, k1 = _torch_key(seed, counter)
            words = _torch_words((_torch_add_words(k0, offset), k1, _limit(threshold)), x.device)
        try:
            out = _TorchFusedDrop.apply(x, words, scale, tuple(shape))
        except Exception as error:  # noqa: BLE001 - any failure to build the kernel
            if fused in _TORCH_FUSED:  # it compiled before: a real error
                raise
            _TORCH_FUSED[fused] = False
            warnings.warn(
                f"keras_dropout_variants could not compile its fused dropout kernel "
                f"for {fused[1]} on {fused[0]} ({type(error).__name__}: {error}). "
                "Eager torch uses the slower unfused path there.",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            _TORCH_FUSED[fused] = True
            return out
    return _torch_unfused_drop(x, shape, size, seed, counter, offset, threshold, scale)


def _torch_unfused_drop(x, shape, size, seed, counter, offset, threshold, scale):
    """The bits of `x * scale` ANDed with int words (-1 keep, 0 drop), so a
    dropped element is +0.0 whatever `x` held. The words are kept as int8
    (one byte each, like a bool mask) for the backward pass, which masks the
    upstream gradient the same way."""
    words = _torch_keep(size, seed, counter, offset, threshold, torch.int8, x.device)
    words = words.neg_().reshape(shape)
    return _TorchDrop.apply(x, words, scale)


if keras.backend.backend() == "torch":
    # Defined at import: defining a custom op inside a compiled region would
    # break dynamo's graph.
    import torch

    @torch.compiler.disable  # see `_torch_keep` below
    def _torch_masked_scale(v, words, scale):
        """`v * scale` ANDed with the integer `words` (-1 or 0) converted to
        v's width. Mixed-width in-place ops would convert full-size `words`
        into a fresh full-size tensor, so those are converted chunk by chunk
        in a scratch buffer, and the output is written chunk by chunk."""
        bits = getattr(torch, _TORCH_BITS[str(v.dtype).split(".")[-1]])
        if words.shape != v.shape or words.element_size() == v.element_size():
            out = torch.mul(v, scale)
            out.view(bits).bitwise_and_(words.to(bits))
            return out
        out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        flat_v, flat_out, flat_words = v.reshape(-1), out.view(-1).view(bits), words.reshape(-1)
        wide = _torch_scratch(v.device)[1].view(bits)
        step = min(len(wide), _TORCH_CHUNK)
        for start in range(0, len(flat_v), step):
            stop = min(start + step, len(flat_v))
            w = wide[: stop - start].copy_(flat_words[start:stop])
            torch.mul(flat_v[start:stop], scale, out=out.view(-1)[start:stop])
            flat_out[start:stop].bitwise_and_(w)
        return out

    class _TorchDrop(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, words, scale):
            ctx.save_for_backward(words, scale)
            return _torch_masked_scale(x, words, scale)

        @staticmethod
        def backward(ctx, upstream):
            words, scale = ctx.saved_tensors
            return _torch_masked_scale(upstream, words, scale), None, None

    # Never traced: the dispatch keeps the eager path out of torch.compile
    # graphs, but when a compiled region falls back to eager (a graph break,
    # the recompile limit), dynamo tries each frame it then runs, the
    # backward of `_TorchDrop` too, and their in-place int views of float
    # tensors fail in AOTAutograd.
    _torch_keep = torch.compiler.disable(_torch_keep)
    _torch_drop = torch.compiler.disable(_torch_drop)

    def _redrawn(v, words, scale, shape):
        """`_apply_scale(v, keep, scale)` with the keep mask of `shape` drawn
        from `words` = (base, k1, limit), an int32 tensor."""
        keep = _keep_from_key(math.prod(shape), words[0], words[1], words[2])
        return _apply_scale(v, ops.reshape(keep, shape), scale)

    def _drawn_and_words(v, words, scale):
        """`_redrawn` on a flat tensor, and its keep words (-1 keep, 0 drop)
        as int32: Inductor's CPU code writes narrower ints slowly."""
        keep = _keep_from_key(v.shape[0], words[0], words[1], words[2])
        return _apply_scale(v, keep, scale), ops.negative(ops.cast(keep, "int32"))

    def _redrawn_from_counter(v, words, scale):
        """`_redrawn` on a flat tensor, with words = (seed, counter, offset,
        limit): the key is derived inside the kernel."""
        k0, k1 = _key(words[0], words[1])
        keep = _keep_from_key(v.shape[0], ops.add(k0, words[2]), k1, words[3])
        return _apply_scale(v, keep, scale)

    # Eager torch's fused kernels, on flat tensors, compiled once per device
    # and dtype (`dynamic`: one kernel for every size).
    _torch_fused_redraw = torch.compile(_redrawn_from_counter, dynamic=True, fullgraph=True)
    _torch_fused_forward = torch.compile(_drawn_and_words, dynamic=True, fullgraph=True)

    class _TorchFusedDrop(torch.autograd.Function):
        """`drop` whose passes each draw and apply the mask in one kernel.

        Under torch.compile it is traced into the caller's graph, saves the
        key words and redraws the mask in the backward pass. In eager mode
        the kernels are compiled on their own. On a CPU, where the hash is
        compute-bound (a backward pass that redraws the mask took 0.55 ms
        per 1M elements, one that ANDs saved words 0.17-0.18 ms), the forward
        kernel also writes the keep words, 4 bytes per element until the
        backward pass ANDs them in; on other devices the backward pass
        redraws the mask.

        `words`: (base, k1, limit) under torch.compile and for the CPU's
        kernels; (seed, counter, offset, limit) for the eager redrawing
        kernel, which derives the key itself (see `_torch_drop`).
        """

        @staticmethod
        def forward(ctx, x, words, scale, shape):
            ctx.shape = shape
            ctx.redraw = _torch_redraws(x.device) or torch.compiler.is_compiling()
            if torch.compiler.is_compiling():
                # An opaque copy: the backward's mask is then not the
                # forward's (common subexpression), which the partitioner
                # would save.
                ctx.save_for_backward(_torch_snapshot(words), scale)
                return _redrawn(x, words, scale, shape)
            flat = x.detach().reshape(-1)
            if ctx.redraw:
                ctx.save_for_backward(words, scale)
                return _torch_fused_redraw(flat, words, scale).view(shape)
            out, keep = _torch_fused_forward(flat, words, scale)
            ctx.save_for_backward(keep.view(shape), scale)
            return out.view(shape)

        @staticmethod
        def backward(ctx, upstream):
            saved, scale = ctx.saved_tensors
            if not ctx.redraw:
                grad = _torch_masked_scale(upstream, saved, scale)
            elif torch.compiler.is_compiling():
                grad = _redrawn(upstream, saved, scale, ctx.shape)
            else:
                grad = _torch_fused_redraw(upstream.detach().reshape(-1), saved, scale)
                grad = grad.view(ctx.shape)
            return grad, None, None, None

    @torch.library.custom_op("keras_dropout_variants::snapshot", mutates_args=())
    def _torch_snapshot(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @_torch_snapshot.register_fake
    def _(x):
        return torch.empty_like(x)
