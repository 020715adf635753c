"""Keras 3 dropout layers whose masks are identical on every backend.

The layers are importable from here; the functional ops, the mask engine and
the data-parallel rule are the submodules `keras_dropout_variants.ops`,
`keras_dropout_variants.random` and `keras_dropout_variants.distribute`.
"""

from keras_dropout_variants import callbacks
from keras_dropout_variants.conversion import convert
from keras_dropout_variants import distribute
from keras_dropout_variants import ops
from keras_dropout_variants import random
from keras_dropout_variants.distribute import shard_rows
from keras_dropout_variants.mc import MCPrediction, mc_mask_id, mc_predict
from keras_dropout_variants.ops import drop_path_rates
from keras_dropout_variants.layers import (
    AlphaDropout,
    DropBlock1D,
    DropBlock2D,
    DropBlock3D,
    DropConnect,
    DropConnectDense,
    DropPath,
    Dropout,
    GaussianDropout,
    GaussianNoise,
    SeededDropout,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
    StochasticDepth,
)
from keras_dropout_variants.random import MASK_FORMAT_VERSION

__version__ = "0.1.0"

__all__ = [
    "AlphaDropout",
    "DropBlock1D",
    "DropBlock2D",
    "DropBlock3D",
    "DropConnect",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "SeededDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "StochasticDepth",
    "MASK_FORMAT_VERSION",
    "MCPrediction",
    "convert",
    "drop_path_rates",
    "mc_mask_id",
    "mc_predict",
    "shard_rows",
]
