"""`convert`: a copy of a Keras model with the package's dropout layers."""

import random as python_random

import keras

from keras_dropout_variants import _checks
from keras_dropout_variants import layers as _layers
from keras_dropout_variants import random as _random

__all__ = ["convert"]

# Keras' dropout family -> the package's twin (same arguments and config).
TWINS = {
    keras.layers.Dropout: _layers.Dropout,
    keras.layers.SpatialDropout1D: _layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D: _layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D: _layers.SpatialDropout3D,
    keras.layers.GaussianDropout: _layers.GaussianDropout,
    keras.layers.AlphaDropout: _layers.AlphaDropout,
    keras.layers.GaussianNoise: _layers.GaussianNoise,
}


def convert(model, seed=None):
    """A copy of `model` whose Keras dropout layers are the package's twins.

    Every `keras.layers` `Dropout`, `SpatialDropout1D/2D/3D`,
    `GaussianDropout`, `AlphaDropout` and `GaussianNoise` becomes
    `kdv.<Name>` with the same configuration; every other layer is cloned
    with its weights. At inference the copy predicts exactly what `model`
    does (dropout is the identity there); in training, and in
    `kdv.mc_predict`, its masks come from the package's engine.

    Seeds: with `seed`, the `i`-th converted layer (in the order of
    `model.layers`, nested models included) gets a seed derived from
    `(seed, i)` by the engine's key function, so layers differ and the same
    call gives the same seeds. Without it, a layer keeps the seed its Keras
    config holds, or draws one from Python's `random` (as the package's
    layers do: `keras.utils.set_random_seed` makes it reproducible).

    Args:
        model: a Sequential or functional `keras.Model` (subclassed models
            have no graph to rebuild: convert their layers in their code).
        seed: optional Python integer in `[0, 2**32)`.

    Returns:
        A new model, not compiled.

    Raises:
        TypeError: for a subclassed model or something that is not a model.
        ValueError: for a layer whose configuration has no twin (e.g.
            `GaussianDropout(1.0)`), naming the layer.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> import keras_dropout_variants as kdv
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...                           keras.layers.Dropout(0.5)])
    >>> twin = kdv.convert(model, seed=0)
    >>> type(twin.layers[1]).__name__
    'Dropout'
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.array_equal(twin.predict(x, verbose=0), model.predict(x, verbose=0)))
    True
    """
    if not isinstance(model, keras.Model):
        raise _checks.invalid(TypeError, "model", "a Sequential or functional keras.Model", model)
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise TypeError(
            f"`convert` needs a Sequential or functional model, whose graph it "
            f"can rebuild. Received: model={model.name!r} of class "
            f"{type(model).__name__}. In a subclassed model, use the package's "
            "layers in its code instead."
        )
    if seed is not None:
        seed = _checks.seed(seed)
    count = [0]

    def clone(layer):
        twin_class = TWINS.get(type(layer))
        if twin_class is None:
            return layer.__class__.from_config(layer.get_config())
        config = layer.get_config()
        if seed is not None:
            config["seed"] = _random._key(seed, count[0])[0]
        elif config.get("seed") is None:
            config["seed"] = python_random.randint(0, _checks.U32 - 1)
        count[0] += 1
        try:
            return twin_class(**config)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) cannot be converted: {error}"
            ) from error

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_weights(model, copy)
    return copy


def _is_functional(model):
    # A functional model holds the graph of its layers (a subclassed one
    # does not).
    return hasattr(model, "_nodes_by_depth")


def _copy_weights(source, target):
    """Weights of `source`'s layers into `target`'s, layer by layer (a
    converted layer's only weight, its step counter, starts at 0)."""
    for old, new in zip(source.layers, target.layers):
        if type(old) in TWINS:
            continue
        if isinstance(old, keras.Model):
            _copy_weights(old, new)
        else:
            new.set_weights(old.get_weights())
