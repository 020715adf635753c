"""TensorFlow fast path: the keep mask as one XLA-compiled function.

`fit()` runs plain (non-XLA) graphs by default, where each int32 op is a
separate kernel launch over the whole mask; the same keras.ops code in a
`jit_compile=True` function is fused into one kernel there, and inlines into
an outer XLA graph. Every argument goes in as a scalar tensor, so the
function is traced once: XLA compiles one kernel per mask size (the size is
a compile-time constant to it) without a new Python trace, and without
TensorFlow's retracing warnings when sizes vary (sequence lengths, say).
"""

import tensorflow as tf

from keras_dropout_variants import random as _random


def _keep(size, seed, counter, offset, limit):
    return _random._keep_from_key(size, *_random._stream_key(seed, counter, offset), limit)


_compiled_keep = tf.function(_keep, jit_compile=True)


def keep_mask(size, seed, counter, offset, threshold):
    words = (size, seed, counter, offset, _random._limit(threshold))
    return _compiled_keep(*(_random._as_word(w) for w in words))


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
