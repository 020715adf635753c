"""Keras 3 dropout layers whose masks are identical on every backend."""

from keras_dropout_variants import ops
from keras_dropout_variants import random
from keras_dropout_variants.layers import (
    DropConnect,
    DropConnectDense,
    Dropout,
    SeededDropout,
)

__version__ = "0.1.0"

__all__ = ["DropConnect", "DropConnectDense", "Dropout", "SeededDropout", "ops", "random", "__version__"]
