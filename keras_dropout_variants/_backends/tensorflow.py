"""TensorFlow fast paths: the keep mask, and eager dropout, each as one
XLA-compiled function.

`fit()` runs plain (non-XLA) graphs by default, where each int32 op is a
separate kernel launch over the whole mask; the same keras.ops code in a
`jit_compile=True` function is fused into one kernel there, and inlines into
an outer XLA graph. Every argument goes in as a tensor, so the keep-mask
function is traced once: XLA compiles one kernel per mask size (the size is
a compile-time constant to it) without a new Python trace, and without
TensorFlow's retracing warnings when sizes vary (sequence lengths, say).
Eager `drop` also applies the mask inside its function: one call instead of
the mask's and four eager ops.
"""

import tensorflow as tf

from keras_dropout_variants import random as _random


def _keep(size, seed, counter, offset, limit):
    return _random._keep_from_key(size, *_random._stream_key(seed, counter, offset), limit)


_compiled_keep = tf.function(_keep, jit_compile=True)


# Eager int32 scalars and shape vectors of Python values, and scales of
# (rate, dtype): an eager conversion costs as much as a small kernel.
# Bounded (counters passed as ints vary), and read by every
# MirroredStrategy replica's thread: see `random._cached`.
_constants = {}


def _constant(key, make):
    return _random._cached(_constants, key, make)


def _word(w):
    """An engine word (or a size) as an int32 scalar tensor."""
    if not isinstance(w, int):
        return tf.cast(w, tf.int32)
    if not tf.executing_eagerly():  # a graph constant
        return tf.constant(_random._i32(w), tf.int32)
    return _constant(("word", w), lambda: tf.constant(_random._i32(w), tf.int32))


def keep_mask(size, seed, counter, offset, threshold):
    words = (size, seed, counter, offset, _random._limit(threshold))
    return _compiled_keep(*(_word(w) for w in words))


def _drop(x, seed, counter, offset, limit, size, shape, scale):
    """Dropout of x with the keep mask of `shape` (of `size` elements)."""
    keep = tf.reshape(_keep(size, seed, counter, offset, limit), shape)
    return _random._apply_scale(x, keep, scale)


_compiled_drop = tf.function(_drop, jit_compile=True)
# (x's dtype, rank) -> `_compiled_drop` traced for any x of those: calling
# a concrete function skips tf.function's per-call signature matching, a
# third of an eager call, and traces once per kind of x, not per shape.
_drop_functions = {}


def drop(x, shape, size, seed, counter, offset, threshold, rate):
    if not tf.executing_eagerly():
        # In a graph (a `fit()` step) TensorFlow's own ops applying the XLA
        # keep mask were faster than applying it inside the XLA function.
        return None
    kind = (x.dtype, len(shape))
    if kind not in _drop_functions:
        scalar = tf.TensorSpec([], tf.int32)
        _drop_functions[kind] = _compiled_drop.get_concrete_function(
            tf.TensorSpec([None] * len(shape), x.dtype), scalar, scalar, scalar, scalar,
            scalar, tf.TensorSpec([len(shape)], tf.int32), tf.TensorSpec([], x.dtype),
        )
    # Eager shapes are Python ints.
    shape = _constant(("shape", shape), lambda: tf.constant(shape, tf.int32))
    scale = _constant(("scale", rate, x.dtype), lambda: _random._scale(x, rate))
    words = (seed, counter, offset, _random._limit(threshold), size)
    return _drop_functions[kind](x, *(_word(w) for w in words), shape, scale)


def flat_view(x):
    """A graph tensor of unknown rank, flat, and the way back to its shape."""
    shape = tf.shape(x)
    return tf.reshape(x, [-1]), lambda flat: tf.reshape(flat, shape)


def first_row(x):
    """Inside a `tf.distribute` replica context with several replicas: the
    rows of the replicas before this one, gathered (batches may be uneven:
    the last partial batch is split as evenly as it goes)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None  # cross-replica context, or no strategy: one device
    mine = tf.shape(x, out_type=tf.int32)[:1]  # (rank may be unknown)
    sizes = context.all_gather(mine, axis=0)  # one entry per replica, in order
    before = tf.range(context.num_replicas_in_sync) < context.replica_id_in_sync_group
    return tf.reduce_sum(tf.where(before, sizes, tf.zeros_like(sizes)))
