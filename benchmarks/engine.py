"""Dropout speed, side by side: a copy, the backend's own dropout, Keras'
dropout and ours, on the same inputs, in one run, one subprocess per backend.

    python benchmarks/engine.py [--backends jax torch] [--runs 30] [--json PATH]
                                [--torch-compile]

For each shape and rate, in each mode the backend has (eager; `jax.jit`;
`tf.function` with and without XLA; `torch.compile` with --torch-compile,
which needs a C++ compiler and about a minute), the forward pass of:
- `copy`: `x * 1`, the memory-bound floor no dropout can beat;
- `native`: `tf.nn.dropout`, a `jax.random.bernoulli` dropout,
  `torch.nn.functional.dropout`;
- `keras`: `keras.layers.Dropout` (eager only: its seed generator is state);
- `ours`: `keras_dropout_variants.ops.dropout`, what our `Dropout` runs, and
  `seeded`: a `SeededDropout` layer called with a `mask_id`;
and forward+backward (the gradient of `sum(f(x) * w)`) of copy, native and
ours. All of them take turns, call after call, for `--runs` rounds after a
warm-up; prints medians (ms) and the ratios ours/native and ours/copy, and
writes them to benchmarks/results/engine.json (`--json`). Absolute times
depend on the machine and its load: compare the ratios.
"""

import _common

SHAPES = ((256, 4096), (32, 64, 64, 32))
RATES = (0.1, 0.5)
FB = " fwd+bwd"
# Table columns, [header, row key, format]: ratios first, then the medians.
RATIOS = ("ours/native", "ours/copy", "ours/native" + FB, "ours/copy" + FB)
TIMES = ("copy", "native", "keras", "ours", "seeded", "copy" + FB, "native" + FB, "ours" + FB)
TABLE = (
    [[key, key, ""] for key in ("backend", "mode", "shape")] + [["rate", "rate", "g"]]
    + [[key.replace(FB, " f+b"), key, ".2f"] for key in RATIOS]
    + [[key.replace(FB, " f+b") + " ms", key, ".3f"] for key in TIMES]
)
ABOUT = """\
Time of one dropout call on a float32 tensor, forward pass and forward+backward
(`f+b`: the gradient of `sum(f(x) * w)`), in each mode the backend has:
`copy` is `x * 1`, the memory-bound floor no dropout can beat; `native` is the
backend's own dropout (`tf.nn.dropout`, a `jax.random.bernoulli` dropout,
`torch.nn.functional.dropout`); `keras` is `keras.layers.Dropout` (eager only:
its seed generator is state); `ours` is `keras_dropout_variants.ops.dropout`,
what our `Dropout` runs, and `seeded` a `SeededDropout` called with a
`mask_id`. `ours/native` below 1 means ours is faster than the backend's own
dropout; `ours/copy` is how many copies of the tensor one dropout costs. The
ratios come from medians of {runs} rounds in which every variant takes its
turn, side by side in one process, so a machine's drift or load slows both
sides of a ratio alike; the absolute milliseconds depend on the machine and
its load."""


def backend_functions(backend, torch_compile):
    """The backend's own dropout, forward+backward wrapper and modes."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def native(x, rate, c):
            key = jax.random.fold_in(jax.random.key(0), c)
            keep = jax.random.bernoulli(key, 1 - rate, x.shape)
            return jnp.where(keep, x / (1 - rate), 0)

        def fwd_bwd(f, w, wrap):  # x, c -> d/dx sum(f(x, c) * w)
            return wrap(lambda x, c: jax.grad(lambda v: jnp.sum(f(v, c) * w))(x))

        return native, fwd_bwd, {"eager": lambda f: f, "jit": jax.jit}
    if backend == "tensorflow":
        import tensorflow as tf

        def native(x, rate, c):
            return tf.nn.dropout(x, rate)

        def fwd_bwd(f, w, wrap):
            def grad(x, c):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    loss = tf.reduce_sum(f(x, c) * w)
                return tape.gradient(loss, x)

            return wrap(grad)

        modes = {
            "eager": lambda f: f,
            "tf.function": tf.function,
            "tf.function(xla)": lambda f: tf.function(f, jit_compile=True),
        }
        return native, fwd_bwd, modes
    import torch

    def native(x, rate, c):
        return torch.nn.functional.dropout(x, rate, training=True)

    def fwd_bwd(f, w, wrap):
        f = wrap(f)  # torch.compile compiles the backward with the forward

        def grad(x, c):
            v = x.detach().requires_grad_()
            (f(v, c) * w).sum().backward()
            return v.grad

        return grad

    modes = {"eager": lambda f: f}
    if torch_compile:
        modes["torch.compile"] = torch.compile
    return native, fwd_bwd, modes


def worker(backend, args):
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    native, fwd_bwd, modes = backend_functions(backend, args.torch_compile)
    sync = _common.sync_function(backend)

    def ours(x, rate, c):
        return kdv.ops.dropout(x, rate, seed=1, counter=c)

    def copy(x, rate, c):
        return x * 1

    rows = []
    for shape in SHAPES:
        data = np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")
        x, w = (keras.ops.convert_to_tensor(a) for a in data)
        c = keras.ops.convert_to_tensor(5, dtype="int32")
        for rate in RATES:
            keras_layer = keras.layers.Dropout(rate, seed=1)
            seeded_layer = kdv.SeededDropout(rate, seed=1)

            def keras_dropout(x, rate, c):
                return keras_layer(x, training=True)

            def seeded(x, rate, c):
                return seeded_layer(x, training=True, mask_id=c)

            for mode, wrap in modes.items():
                impls = {"copy": copy, "native": native, "ours": ours, "seeded": seeded}
                if mode == "eager":  # a stateful layer does not go into a jit
                    impls["keras"] = keras_dropout
                fns = {}
                for name, impl in impls.items():
                    f = lambda x, c, impl=impl, rate=rate: impl(x, rate, c)  # noqa: E731
                    fns[name] = _common.clocked(lambda f=wrap(f): f(x, c), sync)
                    if name in ("copy", "native", "ours"):
                        g = fwd_bwd(f, w, wrap)
                        fns[name + FB] = _common.clocked(lambda g=g: g(x, c), sync)
                row = {"backend": backend, "mode": mode, "shape": list(shape), "rate": rate}
                row.update(_common.interleaved(fns, args.runs))
                for suffix in ("", FB):
                    row["ours/native" + suffix] = row["ours" + suffix] / row["native" + suffix]
                    row["ours/copy" + suffix] = row["ours" + suffix] / row["copy" + suffix]
                rows.append(row)
    return {"rows": rows}


def main():
    parser = _common.parser(__doc__, "engine")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (default 30)")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    if _common.serve(args, worker):
        return
    rows, devices = _common.run_workers(__file__, [(b,) for b in args.backends])
    print(f"median ms over {args.runs} interleaved rounds; {_common.devices_line(devices)}")
    options = {"runs": args.runs, "torch_compile": args.torch_compile}
    about = ABOUT.format(runs=args.runs)
    _common.publish(args.json, "engine", options, devices, rows, TABLE, about)


if __name__ == "__main__":
    main()
