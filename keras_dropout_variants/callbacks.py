"""Keras callbacks for the package's layers."""

import keras

from keras_dropout_variants import _checks
from keras_dropout_variants.layers.base import StochasticLayer

__all__ = ["RateSchedule"]


class RateSchedule(keras.callbacks.Callback):
    """Sets the `rate` of the package's layers at the start of each epoch.

    DropBlock is meant to ramp its rate up from 0 during training (Ghiasi et
    al., 2018), and stochastic depth is often ramped too. `schedule(epoch)`,
    epochs counted from 0 as in `keras.callbacks.LearningRateScheduler`,
    returns the rate for that epoch: one float for every layer, or a
    sequence of floats, one per layer, in the order of `layers`.

    The rate takes effect inside a compiled `fit()` on every backend without
    a retrace: once a schedule drives a layer, the layer draws with a
    float32 rate variable that the compiled step reads (the first `fit()`
    with the schedule traces its step once more to read it). Masks then use
    the threshold `floor((1 - r) * 2**32)` computed in float32 from the
    variable's value `r`: the same bits on every backend, and for the same
    rate the Python-float rate's masks but for elements whose draw falls
    within about 2**8 / 2**32 of the threshold.

    Layers that can be scheduled: `Dropout`, `SeededDropout`,
    `SpatialDropout1D/2D/3D`, `DropPath` and `DropBlock1D/2D/3D`.

    Args:
        layers: a list of those layers, or a model (or layer) meaning every
            such layer inside it.
        schedule: a callable `schedule(epoch)` returning a float in
            `[0, 1]`, or a sequence of them with one per layer.
        verbose: 0, or 1 to print the rates set at each epoch.

    Example:

    >>> import keras
    >>> import keras_dropout_variants as kdv
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 8)),
    ...     kdv.DropBlock2D(0.1, block_size=3, seed=0),
    ... ])
    >>> ramp = kdv.callbacks.RateSchedule(model, lambda epoch: min(0.1, 0.02 * epoch))
    >>> # model.fit(x, y, epochs=10, callbacks=[ramp])
    """

    def __init__(self, layers, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise _checks.invalid(TypeError, "schedule", "a callable schedule(epoch)", schedule)
        self.schedule = schedule
        if verbose not in (0, 1) or isinstance(verbose, float):
            raise _checks.invalid(ValueError, "verbose", "0 or 1", verbose)
        self.verbose = int(verbose)
        self.layers = _scheduled_layers(layers)

    def set_model(self, model):
        super().set_model(model)
        newly = [layer for layer in self.layers if not layer._rate_scheduled]
        for layer in newly:
            layer._rate_scheduled = True
            layer._rate_state.state.assign(layer.rate)
        if newly and getattr(model, "train_function", None) is not None:
            # A step compiled before reads the Python rate: trace it again.
            model.train_function = None

    def on_epoch_begin(self, epoch, logs=None):
        rates = self.schedule(epoch)
        if isinstance(rates, (list, tuple)):
            if len(rates) != len(self.layers):
                raise ValueError(
                    f"`schedule({epoch})` returned {len(rates)} rates for "
                    f"{len(self.layers)} layers. Return one rate, or one per layer."
                )
        else:
            rates = [rates] * len(self.layers)
        for layer, rate in zip(self.layers, rates):
            rate = _checks.rate(rate, f"schedule({epoch})")
            layer.rate = rate  # its config and `layer.rate` follow
            layer._rate_state.state.assign(rate)
        if self.verbose:
            shown = ", ".join(f"{layer.name}={layer.rate:g}" for layer in self.layers)
            print(f"\nEpoch {epoch + 1}: RateSchedule set {shown}.")


def _scheduled_layers(target):
    """The schedulable package layers in `target` (a list, a model, a layer)."""
    if isinstance(target, (list, tuple)):
        for layer in target:
            if not isinstance(layer, StochasticLayer) or not layer._SCHEDULABLE:
                raise _checks.invalid(
                    TypeError, "layers", "a list of the package's layers with a scheduled "
                    "rate (Dropout, SeededDropout, SpatialDropout1D/2D/3D, DropPath, "
                    "DropBlock1D/2D/3D)", layer
                )
        layers = list(target)
    elif isinstance(target, keras.layers.Layer):
        layers = [layer for layer in _walk(target) if isinstance(layer, StochasticLayer) and layer._SCHEDULABLE]
        if not layers:
            raise ValueError(
                f"`layers` holds none of the package's layers whose rate can be "
                f"scheduled. Received: layers={target.name!r}"
            )
    else:
        raise _checks.invalid(TypeError, "layers", "a list of layers or a model", target)
    if not layers:
        raise _checks.invalid(ValueError, "layers", "a non-empty list", target)
    return layers


def _walk(layer):
    """`layer` and every layer inside it (nested models, wrappers), once."""
    seen, order, stack = set(), [], [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        order.append(current)
        inner = list(getattr(current, "layers", []) or [])
        if isinstance(getattr(current, "layer", None), keras.layers.Layer):
            inner.append(current.layer)
        stack.extend(reversed(inner))
    return order
