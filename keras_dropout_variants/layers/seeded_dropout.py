import keras

from keras_dropout_variants import _checks
from keras_dropout_variants.layers.dropout import Dropout


@keras.saving.register_keras_serializable(package="keras_dropout_variants")
class SeededDropout(Dropout):
    """Dropout whose masks are addressed by `(seed, mask_id)` and replayable.

    `layer(x, training=True, mask_id=k)` applies mask number `k` of the
    layer's seed: the same tensor on every call, on every backend and device,
    equal to `keras_dropout_variants.ops.dropout(x, rate, noise_shape,
    seed=seed, counter=k)`. Use it to share one mask between several forward
    passes on purpose (consistency losses, debugging) or to draw reproducible
    Monte-Carlo samples.

    Without `mask_id`, the layer uses its step counter, `layer.counter`: a
    non-trainable int32 weight, advanced once per training call (also inside
    a compiled `fit()`), saved by `model.save` and `save_weights`. A training
    run resumed from a checkpoint therefore draws exactly the masks the
    uninterrupted run would have drawn: the step-`N` mask after loading a
    model saved after `N` steps. (`keras.layers.Dropout` keeps its step in a
    `SeedGenerator` that is not saved, so a resumed run replays its first
    masks.)

    It is `Dropout` with a required seed: a mask id names a mask only
    together with a seed the user chose (every layer of the package takes
    `mask_id`). Everything else is `Dropout`'s: inverted scaling by
    `1 / (1 - rate)`, `noise_shape` broadcasting, exact zeros for dropped NaN
    or inf, dtype policy, serialization and errors.

    Args:
        rate: Float between 0 and 1. Fraction of the input units to drop.
        seed: Python integer in `[0, 2**32)`. Required: it names the masks.
        noise_shape: Optional tuple of ints or `None`, as in `Dropout`.
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: Floating-point input tensor of any rank.
        training: Python boolean: whether to apply dropout.
        mask_id: Optional int in `[0, 2**32)` or integer scalar tensor (also
            a traced one, under `jax.jit` or `tf.function`). Selects the mask;
            the step counter is then neither used nor advanced. `None` uses
            and advances the step counter.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> layer = kdv.SeededDropout(0.5, seed=7)
    >>> x = np.ones((2, 8), dtype="float32")
    >>> a = keras.ops.convert_to_numpy(layer(x, training=True, mask_id=3))
    >>> b = keras.ops.convert_to_numpy(layer(x, training=True, mask_id=3))
    >>> bool((a == b).all())
    True

    Monte-Carlo dropout with reproducible samples: sample `i` uses mask `i`.

    >>> samples = np.stack([
    ...     keras.ops.convert_to_numpy(layer(x, training=True, mask_id=i))
    ...     for i in range(16)
    ... ])
    >>> samples.shape
    (16, 2, 8)
    >>> mean = samples.mean(axis=0)   # the MC estimate, the same every run

    Resume: the counter is a weight, saved and restored with the model.

    >>> int(keras.ops.convert_to_numpy(layer.counter))  # mask_id calls: 0
    0
    >>> _ = layer(x, training=True)
    >>> int(keras.ops.convert_to_numpy(layer.counter))
    1
    """

    def __init__(self, rate, seed, noise_shape=None, **kwargs):
        super().__init__(rate, noise_shape=noise_shape, seed=_checks.seed(seed), **kwargs)
