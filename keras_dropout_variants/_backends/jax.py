"""JAX fast path: the keep mask as one `jax.jit` function.

Eager JAX dispatches each int32 op separately; under `jax.jit` the hash is
fused into one kernel, and it inlines under an outer jit. JAX keeps one
compilation per (mask size, rate) in its own bounded jit cache.
"""

import jax

from keras_dropout_variants import random as _random

_compiled_keep = jax.jit(_random._flat_keep, static_argnums=(0, 4))


def keep_mask(size, seed, counter, offset, threshold):
    # Words go in as arrays: a new seed or counter does not recompile.
    words = (_random._as_word(w) for w in (seed, counter, offset))
    return _compiled_keep(size, *words, threshold)
