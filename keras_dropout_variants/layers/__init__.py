from keras_dropout_variants.layers.alpha_dropout import AlphaDropout
from keras_dropout_variants.layers.drop_connect import DropConnect, DropConnectDense
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
    "DropConnect",
    "DropConnectDense",
    "Dropout",
    "GaussianDropout",
    "GaussianNoise",
    "SeededDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
]
