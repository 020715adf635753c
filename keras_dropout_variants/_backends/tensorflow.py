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


def _words(*words):
    """The engine words as one int32 vector: one eager op, where a
    conversion per word would cost one each."""
    words = [_random._i32(w) if isinstance(w, int) else tf.cast(w, tf.int32) for w in words]
    if all(isinstance(w, int) for w in words):
        return tf.constant(words, tf.int32)
    return tf.stack(words)


def keep_mask(size, seed, counter, offset, threshold):
    words = _words(seed, counter, offset, _random._limit(threshold))
    return _compiled_keep(tf.cast(size, tf.int32), *tf.unstack(words))


def _drop(x, words, size, shape, scale):
    """Dropout of x with the keep mask of `shape` (of `size` elements):
    words = (seed, counter, offset, limit). The size and shape are apart
    from the words: XLA compiles one kernel per value of an argument that
    fixes a shape, and a counter must not be one of those."""
    keep = tf.reshape(_keep(size, *tf.unstack(words)), shape)
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
        _drop_functions[kind] = _compiled_drop.get_concrete_function(
            tf.TensorSpec([None] * len(shape), x.dtype),
            tf.TensorSpec([4], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([len(shape)], tf.int32),
            tf.TensorSpec([], x.dtype),
        )
    words = _words(seed, counter, offset, _random._limit(threshold))
    size = tf.cast(size, tf.int32)  # a dynamic size is a tensor
    shape = tf.cast(tf.stack(shape), tf.int32)
    return _drop_functions[kind](x, words, size, shape, _random._scale(x, rate))


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
