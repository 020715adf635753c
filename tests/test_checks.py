"""The one wording of argument errors, through the public entry points.

Every message reads "`name` must be <what>. Received: name=<value>": these
tests pin the exact text a user sees.
"""

import re

import keras
import numpy as np
import pytest

import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops
from keras_dropout_variants import random as kr

X = np.ones((2, 3), "float32")


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: kdv.Dropout(1.5), ValueError, "`rate` must be a float in [0, 1]. Received: rate=1.5"),
        (lambda: kdv.Dropout("0.5"), TypeError, "`rate` must be a float in [0, 1]. Received: rate='0.5'"),
        (lambda: kdv.Dropout(0.5, seed=-1), ValueError,
         "`seed` must be a Python integer in [0, 2**32). Received: seed=-1"),
        (lambda: kdv.SeededDropout(0.5, seed=None), TypeError,
         "`seed` must be a Python integer in [0, 2**32). Received: seed=None"),
        (lambda: kdv.Dropout(0.5, noise_shape=(2, 0)), ValueError,
         "`noise_shape` must be a tuple of positive integers or None. Received: noise_shape=(2, 0)"),
        (lambda: kdv.Dropout(0.5, seed=1)(X, training=True, mask_id=2**32), ValueError,
         "`mask_id` must be a Python integer in [0, 2**32). Received: mask_id=4294967296"),
        (lambda: kdv.Dropout(0.5, seed=1)(X, training=True, mask_id=keras.ops.ones((2,), "int32")), ValueError,
         "`mask_id` must be an integer scalar. Received: mask_id=a tensor of shape (2,) and dtype int32"),
        (lambda: kdv.DropConnectDense(4, mask_per="weights"), ValueError,
         "`mask_per` must be 'batch' or 'example'. Received: mask_per='weights'"),
        (lambda: kdv.DropConnectDense(4, inference="mc"), ValueError,
         "`inference` must be 'mean' or 'gaussian'. Received: inference='mc'"),
        (lambda: kdv.DropConnectDense(4, num_samples=0), ValueError,
         "`num_samples` must be a positive integer. Received: num_samples=0"),
        (lambda: kdv.DropConnectDense(4, drop_bias=1), TypeError,
         "`drop_bias` must be a bool. Received: drop_bias=1"),
        (lambda: kdv.DropConnect(keras.layers.Flatten(name="flat"), 0.5), ValueError,
         "`layer` must be a `keras.layers.Dense`. Received: layer=<Flatten name=flat, built=False>"),
        (lambda: kr.keep_mask((2, -1), 0.5, seed=1), ValueError,
         "`shape` must be a tuple of non-negative integers. Received: shape=(2, -1)"),
        (lambda: kr.keep_mask((2,), 0.5, seed=1, counter=0.5), TypeError,
         "`counter` must be an integer in [0, 2**32) or an integer scalar tensor. Received: counter=0.5"),
        (lambda: kops.dropout(X, 0.5), ValueError,
         "`seed` must be a Python integer in [0, 2**32): `dropout` needs an explicit seed "
         "(the layers draw one for you). Received: seed=None"),
        (lambda: kops.dropout(np.ones((2,), "int32"), 0.5, seed=1), TypeError,
         "`x` must be floating-point to be dropped. Received: x of dtype int32. Cast it to a "
         "float dtype first: dropping integers would silently change the values' scale."),
    ],
)
def test_error_message(call, error, message):
    # (Keras adds the call's arguments after an error raised inside `call`.)
    with pytest.raises(error, match=re.escape(message)):
        call()
