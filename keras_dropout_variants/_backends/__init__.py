"""Backend fast paths of the engine, chosen in one table.

`keras_dropout_variants.random` computes everything in plain `keras.ops`.
A backend may replace some of its steps with a faster implementation of the
same integer function, in its own module here, which may import its backend
library (and is imported only when Keras runs on that backend). A module
defines any of these functions, with the arguments the engine has checked:

- `keep_mask(size, seed, counter, offset, threshold)`: the flat bool keep
  mask of elements 0..size-1 (`random._flat_keep`);
- `drop(x, shape, size, seed, counter, offset, threshold, rate)`: dropout of
  `x` with the keep mask of `shape`, for `0 < rate < 1`, or None where the
  plain path (with the fast `keep_mask`) is the faster one;
- `snapshot(value)`: a copy of `value` that later assignments cannot change;
- `calls_directly(layer, x)`: whether a package layer may run its `call` on
  `x` without Keras' `Layer.__call__`, as far as the backend goes
  (`StochasticLayer._calls_directly` checks Keras' side): offered where
  eager calls pay that cost at every step (torch's `fit()`);
- `flat_view(x)`: for a tensor of unknown rank, `(flat, restore)`: x as a
  1-D tensor, and the function that reshapes a result of its size back (not
  a speed-up: only a backend with such tensors can do it, so `provided`,
  not `fast_path`, looks it up);
- `first_row(x)`: under the backend's data-parallel engine, the global
  index of the first row of this replica's `x`; None outside one (`keras_dropout_variants.distribute`; a capability, as `flat_view`).

Every fast path gives the bits of the plain path: `tests/test_engine.py`
compares them with `enabled` switched off, and `tests/test_torch_engine.py`
covers the torch-specific ones.
"""

import importlib

import keras

# Keras backend name -> module of this package with its fast paths.
_TABLE = {
    "tensorflow": "keras_dropout_variants._backends.tensorflow",
    "jax": "keras_dropout_variants._backends.jax",
    "torch": "keras_dropout_variants._backends.torch",
}

# False: every call takes the plain keras.ops path (tests compare the two).
enabled = True

_modules = {}


def _module(backend):
    if backend not in _modules:
        _modules[backend] = importlib.import_module(_TABLE[backend]) if backend in _TABLE else None
    return _modules[backend]


def provided(name):
    """The running backend's function `name`, or None: for what only a
    backend can do (`flat_view`, `first_row`), whether or not fast paths
    are `enabled`."""
    return getattr(_module(keras.backend.backend()), name, None)


def fast_path(name):
    """The running backend's function `name`, or None for the plain path."""
    return provided(name) if enabled else None


def load():
    """Imports the running backend's module now: `random` calls this once it
    is defined (the modules import it), so that no first call inside a
    function being compiled has to import one. Cheap: Keras has already
    imported the backend library."""
    _module(keras.backend.backend())
