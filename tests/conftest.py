import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

BACKEND = keras.backend.backend()

if BACKEND == "jax":
    import jax

    # On recent NVIDIA GPUs, JAX computes float32 matmuls in TF32 by default
    # (relative error ~1e-3); the tests compare products at float32 tolerance.
    # Masks are exact either way.
    jax.config.update("jax_default_matmul_precision", "highest")


# Tests that start one subprocess per backend compare all backends at once:
# `scripts/matrix.py` names the one leg that runs them (KDV_ALL_BACKENDS_LEG);
# a plain pytest run runs them.
ALL_BACKENDS_LEG = os.environ.get("KDV_ALL_BACKENDS_LEG", BACKEND)


def skip_unless_all_backends_leg():
    """Skips a test that runs every backend itself, except in one matrix leg."""
    if ALL_BACKENDS_LEG != BACKEND:
        pytest.skip(f"runs every backend itself: once per matrix, in the {ALL_BACKENDS_LEG} leg")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def normal_data(shape=(8, 16), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def steps_taken(layer):
    """A layer's step counter as a Python int."""
    return int(to_np(layer.counter))


def gradient(fn, value, weight=None):
    """d/dv sum(fn(v) * weight) at the NumPy `value`, on this backend.

    Without `weight`: the gradient of `sum(fn(v))`.
    """
    if weight is not None:
        weight = keras.ops.convert_to_tensor(weight)
    loss = lambda v: keras.ops.sum(fn(v) if weight is None else fn(v) * weight)  # noqa: E731
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(loss)(value))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(value)
        with tf.GradientTape() as tape:
            total = loss(v)
        return tape.gradient(total, v).numpy()
    import torch

    v = torch_tensor(value, requires_grad=True)
    loss(v).backward()
    return to_np(v.grad)


def torch_tensor(value, **kwargs):
    """`torch.tensor(value, **kwargs)` on Keras' device (a GPU where there is
    one), where the layers and ops put their tensors."""
    import torch

    return torch.tensor(value, device=keras.ops.zeros(()).device, **kwargs)


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
    # Fresh layer names per test; without Python's garbage collection, which
    # took up to a second per test under TensorFlow.
    keras.backend.clear_session(free_memory=False)
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


# (x shape, mask shape): on eager torch, the unfused path for a small and a
# broadcast mask, the fused kernels for a large mask of x's shape.
DROP_SHAPES = [((6, 5, 40), (6, 5, 40)), ((6, 5, 40), (6, 1, 40)), ((6, 64, 48), (6, 64, 48))]


def expect_fused_torch_kernels(monkeypatch, x_shape, mask_shape):
    """On torch, for a mask that takes the fused kernels: a fresh record of
    where they compiled, to check after the calls that they ran (a failed
    compile falls back to the unfused path with the same bits). Else None."""
    if BACKEND != "torch":
        return None
    from keras_dropout_variants._backends import torch as fast

    if x_shape != mask_shape or int(np.prod(mask_shape)) < fast._FUSED_MIN_SIZE:
        return None
    monkeypatch.setattr(fast, "_FUSED", {})
    return fast._FUSED
