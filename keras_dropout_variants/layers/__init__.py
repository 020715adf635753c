from keras_dropout_variants.layers.dropout import Dropout

__all__ = ["Dropout"]
