import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

BACKEND = keras.backend.backend()


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def compiled(fn, jit_compile=True):
    """`fn` compiled the way this backend compiles a function of tensors."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    import torch

    return torch.compile(fn)


def pytest_report_header(config):
    return f"keras {keras.__version__}, KERAS_BACKEND={BACKEND}"


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.backend.clear_session()
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def skip_unless_dtype_available(dtype):
    """JAX without x64 has no 64-bit dtypes: it would silently use 32 bits."""
    if BACKEND == "jax" and dtype in ("float64", "int64"):
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip(f"{dtype} needs jax_enable_x64")
