from keras_dropout_variants.layers.drop_connect import DropConnect, DropConnectDense
from keras_dropout_variants.layers.dropout import Dropout
from keras_dropout_variants.layers.seeded_dropout import SeededDropout

__all__ = ["DropConnect", "DropConnectDense", "Dropout", "SeededDropout"]
