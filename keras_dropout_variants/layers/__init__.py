from keras_dropout_variants.layers.alpha_dropout import AlphaDropout
from keras_dropout_variants.layers.drop_block import DropBlock1D, DropBlock2D, DropBlock3D
from keras_dropout_variants.layers.drop_connect import DropConnect, DropConnectDense
from keras_dropout_variants.layers.drop_path import DropPath, StochasticDepth
from keras_dropout_variants.layers.dropout import Dropout
from keras_dropout_variants.layers.gaussian_dropout import GaussianDropout
from keras_dropout_variants.layers.gaussian_noise import GaussianNoise
from keras_dropout_variants.layers.seeded_dropout import SeededDropout
from keras_dropout_variants.layers.spatial_dropout import (
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
)

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
]
