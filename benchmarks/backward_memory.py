"""Training-step memory: stored mask vs recomputing the mask in the backward.

    python benchmarks/backward_memory.py [--backends jax torch] [--json PATH]

`ops.dropout` lets autodiff keep what `where(keep, x * scale, 0)` needs (the
bool mask). The alternative, a `keras.ops.custom_gradient` whose backward
recomputes the mask from (seed, counter), keeps only the counter in its
closure. This script measures both where a backend lets us (one subprocess
per backend), and checks that the gradients are identical:
- JAX: XLA's temporary buffer size for a jitted value_and_grad of a two-layer
  MLP step with two dropouts (`compiled.memory_analysis()`).
- torch: bytes autograd saves for backward (`saved_tensors_hooks`).
TensorFlow offers no CPU memory statistics, so it is not run by default.
Prints the figures and writes them to benchmarks/results/backward_memory.json
(`--json`).
"""

import _common

RATE, SEED = 0.5, 1
# [header, row key, format]
TABLE = [["backend", "backend", ""], ["variant", "variant", ""], ["/stored", "ratio", ".2f"],
         ["MiB", "mib", ".2f"], ["measure", "measure", ""], ["same gradient", "same_gradient", ""]]
ABOUT = """\
Memory a training step keeps for the backward pass when dropout stores its
bool mask (`stored mask`: what `ops.dropout` lets autodiff do) against a
`keras.ops.custom_gradient` whose backward redraws the mask from (seed,
counter) (`recompute`). JAX: XLA's temporary buffers for a jitted
value_and_grad of a 4096x2048 two-layer MLP step with two dropouts (`no
dropout` for scale); torch: the bytes autograd saves for the backward of one
dropout on 256x1024 float32. `/stored` is the variant's memory over the stored
mask's; `same gradient` says whether its gradients equal the stored mask's
bit for bit. These are counts of bytes, not timings: they do not depend on the
machine's load."""


def stored_dropout(x, counter):
    import keras_dropout_variants as kdv

    return kdv.ops.dropout(x, RATE, seed=SEED, counter=counter)


def recompute_dropout(x, counter):
    from keras import ops

    import keras_dropout_variants as kdv

    scale = 1.0 / (1.0 - RATE)

    def apply(v):
        keep = kdv.random.keep_mask(ops.shape(v), RATE, SEED, counter)
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
    """(variant, bytes, gradients) for a jitted MLP step under JAX."""
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

    for name, drop in [("no dropout", lambda h, c: h), ("stored mask", stored_dropout),
                       ("recompute", recompute_dropout)]:
        step = jax.jit(jax.value_and_grad(lambda p, x, c, d=drop: loss(p, x, c, d)))
        mem = step.lower(params, x, counter).compile().memory_analysis()
        yield name, mem.temp_size_in_bytes, jax.tree.leaves(step(params, x, counter))


def torch_saved_bytes():
    """(variant, bytes, gradients) for one dropout's backward under torch."""
    import torch

    x = torch.randn(256, 1024, requires_grad=True)
    w = torch.randn(256, 1024)
    counter = torch.tensor(0, dtype=torch.int32)
    for name, drop in [("stored mask", stored_dropout), ("recompute", recompute_dropout)]:
        saved = []

        def pack(t, saved=saved):
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = drop(x, counter)
        yield name, sum(saved), torch.autograd.grad((y * w).sum(), x)


MEASURES = {
    "jax": ("XLA temp buffers", jax_step_memory),
    "torch": ("saved for backward", torch_saved_bytes),
}


def worker(backend, args):
    import numpy as np

    if backend not in MEASURES:
        return {"rows": []}
    measure, measure_fn = MEASURES[backend]
    results = {name: (size, grads) for name, size, grads in measure_fn()}
    stored_size, stored_grads = results["stored mask"]
    rows = []
    for name, (size, grads) in results.items():
        row = {"backend": backend, "variant": name, "measure": measure,
               "mib": size / 2**20, "bytes": size, "ratio": size / stored_size}
        if name != "no dropout":  # its gradient differs, as it should
            same = all(np.array_equal(np.asarray(a), np.asarray(b))
                       for a, b in zip(grads, stored_grads))
            row["same_gradient"] = "yes" if same else "NO"
        rows.append(row)
    return {"rows": rows}


def main():
    parser = _common.parser(__doc__, "backward_memory", backends=tuple(MEASURES))
    args = parser.parse_args()
    if _common.serve(args, worker):
        return
    rows, devices = _common.run_workers(__file__, [(b,) for b in args.backends])
    print(_common.devices_line(devices))
    _common.publish(args.json, "backward_memory", {}, devices, rows, TABLE, ABOUT)


if __name__ == "__main__":
    main()
