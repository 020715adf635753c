"""Keras 3 dropout layers whose masks are identical on every backend.

The layers are importable from here; the functional ops, the mask engine and
the data-parallel rule are the submodules `keras_dropout_variants.ops`,
`keras_dropout_variants.random` and `keras_dropout_variants.distribute`.
"""

from keras_dropout_variants import distribute
from keras_dropout_variants import ops
from keras_dropout_variants import random
from keras_dropout_variants.distribute import shard_rows
from keras_dropout_variants.layers import (
    AlphaDropout,
    DropConnect,
    DropConnectDense,
    Dropout,
    GaussianDropout,
    GaussianNoise,
    SeededDropout,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)
from keras_dropout_variants.random import MASK_FORMAT_VERSION

__version__ = "0.1.0"

__all__ = [
    "AlphaDropout",
    "DropConnect",
    "DropConnectDense",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "SeededDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "MASK_FORMAT_VERSION",
    "shard_rows",
]
