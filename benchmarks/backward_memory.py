"""Training-step memory: stored mask vs recomputing the mask in the backward.

    KERAS_BACKEND=jax   python benchmarks/backward_memory.py
    KERAS_BACKEND=torch python benchmarks/backward_memory.py

`ops.dropout` lets autodiff keep what `where(keep, x * scale, 0)` needs (the
bool mask). The alternative, a `keras.ops.custom_gradient` whose backward
recomputes the mask from (seed, counter), keeps only the counter in its
closure. This script measures both where a backend lets us, and checks that
the gradients are identical:
- JAX: XLA's temporary buffer size for a jitted value_and_grad of a two-layer
  MLP step with two dropouts (`compiled.memory_analysis()`).
- torch: bytes autograd saves for backward (`saved_tensors_hooks`).
TensorFlow offers no CPU memory statistics.
"""

import keras
from keras import ops

from keras_dropout_variants import ops as kops
from keras_dropout_variants import random as kr

RATE, SEED = 0.5, 1


def stored_dropout(x, counter):
    return kops.dropout(x, RATE, seed=SEED, counter=counter)


def recompute_dropout(x, counter):
    scale = 1.0 / (1.0 - RATE)

    def apply(v):
        keep = kr.keep_mask(ops.shape(v), RATE, SEED, counter)
        return ops.where(keep, v * ops.cast(scale, v.dtype), ops.zeros((), v.dtype))

    @ops.custom_gradient
    def f(v):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return apply(upstream)

        return apply(v), grad

    return f(x)


def jax_step_memory():
    import jax
    import jax.numpy as jnp

    batch, width = 4096, 2048
    params = (jnp.full((width, width), 0.01), jnp.full((width, 1), 0.01))
    x = jnp.ones((batch, width))
    counter = jnp.int32(3)

    def loss(params, x, counter, drop):
        w1, w2 = params
        h = drop(jax.nn.relu(x @ w1), counter)
        h = drop(jnp.tanh(h @ w1), counter + 1)
        return (h @ w2).sum()

    grads = {}
    for name, drop in [("no dropout", lambda h, c: h), ("stored mask", stored_dropout),
                       ("recompute", recompute_dropout)]:
        step = jax.jit(jax.value_and_grad(lambda p, x, c, d=drop: loss(p, x, c, d)))
        mem = step.lower(params, x, counter).compile().memory_analysis()
        print(f"{name:<12} XLA temp buffers {mem.temp_size_in_bytes / 2**20:8.2f} MiB")
        grads[name] = step(params, x, counter)
    same = all(
        bool(jnp.array_equal(a, b))
        for a, b in zip(jax.tree.leaves(grads["stored mask"]), jax.tree.leaves(grads["recompute"]))
    )
    print(f"gradients identical: {same}")


def torch_saved_bytes():
    import torch

    x = torch.randn(256, 1024, requires_grad=True)
    w = torch.randn(256, 1024)
    counter = torch.tensor(0, dtype=torch.int32)
    grads = {}
    for name, drop in [("stored mask", stored_dropout), ("recompute", recompute_dropout)]:
        saved = []

        def pack(t, saved=saved):
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = drop(x, counter)
        (grads[name],) = torch.autograd.grad((y * w).sum(), x)
        print(f"{name:<12} saved for backward {sum(saved):>9} bytes ({x.numel()} elements)")
    print(f"gradients identical: {torch.equal(grads['stored mask'], grads['recompute'])}")


if __name__ == "__main__":
    backend = keras.backend.backend()
    print(f"backend: {backend}")
    if backend == "jax":
        jax_step_memory()
    elif backend == "torch":
        torch_saved_bytes()
    else:
        print("no CPU memory statistics on this backend")
