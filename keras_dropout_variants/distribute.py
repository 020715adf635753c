"""Where this replica's rows sit in the global batch, for replica-invariant
masks under data parallelism.

The rule, for every layer of the package: under data parallelism the mask a
replica applies to its rows is exactly those rows of the mask one device
would draw for the global batch (the replicas' batches concatenated in
replica order). A mask shared by the batch (`noise_shape` with 1 on the
batch axis, `DropConnect` with `mask_per="batch"`) is the same on every
replica. So the masks, and with them training, do not depend on the number
of replicas.

A layer finds its shard's first row (`first_row`) in this order:

1. `shard_rows(start)`, if the caller is inside one: for engines the
   package cannot see (a custom launcher, `jax.pmap` / `shard_map`, one rank
   running a model alone).
2. The running backend's distribution engine:
   - TensorFlow: the `tf.distribute` replica context (`MirroredStrategy`,
     `MultiWorkerMirroredStrategy`, ...). The replicas' batch sizes are
     gathered (one small all-gather per layer call), so uneven batches, such
     as a last partial one, are exact too.
   - PyTorch: an initialized `torch.distributed` process group with more
     than one rank (e.g. `DistributedDataParallel`, `gloo` or `nccl`): rank
     `r` starts after the rows of ranks `0 .. r - 1`, gathered by one small
     `all_gather` per layer call. Every rank must therefore run the layer's
     training call together, as data-parallel training does; a rank that
     runs a model alone states it with `shard_rows(0)`.
   - JAX: nothing to do. `keras.distribution.DataParallel` and
     `ModelParallel` trace one program over the global arrays, so every
     mask is the global one by construction.
3. Otherwise 0: one device draws the whole batch.
"""

import contextlib
import threading

from keras_dropout_variants import _backends
from keras_dropout_variants import _checks

__all__ = ["shard_rows", "first_row"]

# Per thread: tf.distribute's MirroredStrategy runs each replica in a thread
# of its own, and a caller's override belongs to its own replica.
_override = threading.local()


@contextlib.contextmanager
def shard_rows(start):
    """States the global index of this shard's first row, for calls inside.

    Inside the block, the package's layers in training draw, for an input
    of `n` rows, rows `start .. start + n - 1` of the global batch's mask
    (and nothing is asked of any distribution engine). Blocks nest; the
    innermost wins. The value is read when a layer is called, so in a
    compiled function (`tf.function`, `jax.jit`) it is fixed at trace time
    unless it is a tensor.

    Args:
        start: int in `[0, 2**32)`, or an integer scalar tensor (e.g.
            `jax.lax.axis_index("batch") * rows_per_shard` inside
            `shard_map`).

    Example:

    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.Dropout(0.5, seed=0)
    >>> x = np.ones((4, 3), "float32")
    >>> whole = layer(x, training=True, mask_id=0)
    >>> with kdv.shard_rows(2):        # this shard holds global rows 2 and 3
    ...     part = layer(x[2:], training=True, mask_id=0)
    >>> bool(np.array_equal(np.asarray(part), np.asarray(whole)[2:]))
    True
    """
    start = _checks.word(start, "start")
    previous = getattr(_override, "start", None)
    _override.start = start
    try:
        yield start
    finally:
        _override.start = previous


def first_row(x):
    """The global index of the first row (axis 0) of this shard's `x`: from
    `shard_rows`, else the backend's distribution engine, else 0 (an int or
    an integer scalar tensor)."""
    start = getattr(_override, "start", None)
    if start is not None:
        return start
    engine = _backends.provided("first_row")
    start = engine(x) if engine is not None else None
    return 0 if start is None else start
