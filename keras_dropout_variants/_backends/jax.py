"""JAX fast paths: the keep mask, and dropout, each as one `jax.jit` function.

Eager JAX dispatches each op separately, some 30 for a mask and its
application, each costing more than hashing a small mask; under `jax.jit`
they are fused into one kernel, and they inline under an outer jit (a
compiled `fit()`). The words go in as Python ints or arrays, never as
static arguments, so a new seed or counter does not recompile; JAX keeps
one compilation per (mask size, rate, shape) in its own bounded jit cache.
"""

import jax
import keras
from keras import ops

from keras_dropout_variants import random as _random


def _words(*words):
    """Engine words as jit arguments: Python ints as their int32 values (jit
    converts them without an eager op), tensors as they are."""
    return tuple(_random._i32(w) if isinstance(w, int) else w for w in words)


def _keep(size, seed, counter, offset, limit):
    # Python ints arrive weakly typed: make every word a plain int32.
    seed, counter, offset, limit = (ops.cast(w, "int32") for w in (seed, counter, offset, limit))
    return _random._keep_from_key(size, *_random._stream_key(seed, counter, offset), limit)


_compiled_keep = jax.jit(_keep, static_argnums=(0,))


def keep_mask(size, seed, counter, offset, threshold):
    return _compiled_keep(size, *_words(seed, counter, offset, _random._limit(threshold)))


def _drop(x, seed, counter, offset, limit, shape, size, rate):
    keep = _keep(size, seed, counter, offset, limit)
    return _random._apply_scale(x, keep.reshape(shape), _random._scale(x, rate))


_compiled_drop = jax.jit(_drop, static_argnums=(5, 6, 7))


def drop(x, shape, size, seed, counter, offset, threshold, rate):
    words = _words(seed, counter, offset, _random._limit(threshold))
    return _compiled_drop(x, *words, tuple(shape), size, rate)


def snapshot(value):
    """A JAX array is immutable: assigning the variable later rebinds it and
    leaves this value as it was, so no copy (an eager op) is needed."""
    return value.value if isinstance(value, keras.Variable) else value
