"""TensorFlow fast path: the keep mask as one XLA-compiled function.

`fit()` runs plain (non-XLA) graphs by default, where each int32 op is a
separate kernel launch over the whole mask; the same keras.ops code in a
`jit_compile=True` function is fused into one kernel there, and inlines into
an outer XLA graph. TensorFlow keeps one trace per (mask size, rate).
"""

import tensorflow as tf

from keras_dropout_variants import random as _random

_compiled_keep = tf.function(_random._flat_keep, jit_compile=True)


def keep_mask(size, seed, counter, offset, threshold):
    # Words go in as tensors: a new seed or counter does not retrace.
    words = (_random._as_word(w) for w in (seed, counter, offset))
    return _compiled_keep(size, *words, threshold)
