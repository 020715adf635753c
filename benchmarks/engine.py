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
ours. Prints medians (ms) and the ratios ours/native and ours/copy; the same
figures go to a JSON file. Absolute times depend on the machine and its
load: compare the ratios, which are measured back to back.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
SHAPES = ((256, 4096), (32, 64, 64, 32))
RATES = (0.1, 0.5)


def timed(fn, runs, sync):
    for _ in range(3):  # warm-up: compilation, caches
        sync(fn())
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        sync(fn())
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def worker(backend, runs, torch_compile=False):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_dropout_variants as kdv
    from keras_dropout_variants import ops as kops

    from fit import device_name, gpu_device  # (benchmarks/ is on the path of a script in it)

    print(json.dumps({"device": device_name(backend)}), flush=True)
    rows = []
    sync = lambda y: y  # noqa: E731  TF and torch on CPU run synchronously.
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        sync = lambda y: y.block_until_ready()  # noqa: E731

        def native(x, rate, c):
            key = jax.random.fold_in(jax.random.key(0), c)
            keep = jax.random.bernoulli(key, 1 - rate, x.shape)
            return jnp.where(keep, x / (1 - rate), 0)

        def fwd_bwd(f, w, wrap):  # x, c -> d/dx sum(f(x, c) * w)
            return wrap(lambda x, c: jax.grad(lambda v: jnp.sum(f(v, c) * w))(x))

        modes = {"eager": lambda f: f, "jit": jax.jit}
    elif backend == "tensorflow":
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
    else:
        import torch

        if gpu_device(backend) is not None:  # CUDA kernels run asynchronously
            sync = lambda y: torch.cuda.synchronize()  # noqa: E731

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

    def ours(x, rate, c):
        return kops.dropout(x, rate, seed=1, counter=c)

    def copy(x, rate, c):
        return x * 1

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
                row = {"backend": backend, "mode": mode, "shape": list(shape), "rate": rate}
                impls = {"copy": copy, "native": native, "ours": ours, "seeded": seeded}
                if mode == "eager":  # a stateful layer does not go into a jit
                    impls["keras"] = keras_dropout
                for name, impl in impls.items():
                    f = lambda x, c, impl=impl, rate=rate: impl(x, rate, c)  # noqa: E731
                    row[name] = timed(lambda f=wrap(f): f(x, c), runs, sync)
                    if name in ("copy", "native", "ours"):
                        g = fwd_bwd(f, w, wrap)
                        row[name + " fwd+bwd"] = timed(lambda: g(x, c), runs, sync)
                for suffix in ("", " fwd+bwd"):
                    ours_ms = row["ours" + suffix]
                    row["ours/native" + suffix] = ours_ms / row["native" + suffix]
                    row["ours/copy" + suffix] = ours_ms / row["copy" + suffix]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default=os.path.join("benchmarks", "results", "engine.json"))
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.runs, args.torch_compile)
        return

    rows, devices = [], []
    for backend in args.backends:
        command = [sys.executable, __file__, "--worker", backend, "--runs", str(args.runs)]
        proc = subprocess.run(
            command + ["--torch-compile"] * args.torch_compile, capture_output=True, text=True
        )
        if proc.returncode:
            print(f"{backend}: worker failed\n{proc.stderr[-3000:]}")
            continue
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                if "device" in row:
                    devices.append(f"{backend} on {row['device']}")
                else:
                    rows.append(row)

    print(f"median ms over {args.runs} runs; " + "; ".join(devices))
    print(f"{'':<51}{'forward':<47}{'forward+backward':<30}")
    print(
        f"{'backend':<11}{'mode':<18}{'shape':<13}{'rate':>5}  "
        f"{'copy':>7}{'native':>8}{'keras':>8}{'ours':>7}{'seeded':>8}{'/native':>8}{'/copy':>6}  "
        f"{'copy':>7}{'native':>8}{'ours':>7}{'/native':>8}{'/copy':>6}"
    )
    for r in rows:
        keras_ms = f"{r['keras']:8.2f}" if "keras" in r else f"{'-':>8}"
        fb = " fwd+bwd"
        print(
            f"{r['backend']:<11}{r['mode']:<18}{'x'.join(map(str, r['shape'])):<13}{r['rate']:>5}  "
            f"{r['copy']:7.2f}{r['native']:8.2f}{keras_ms}{r['ours']:7.2f}{r['seeded']:8.2f}"
            f"{r['ours/native']:8.2f}{r['ours/copy']:6.1f}  "
            f"{r['copy' + fb]:7.2f}{r['native' + fb]:8.2f}{r['ours' + fb]:7.2f}"
            f"{r['ours/native' + fb]:8.2f}{r['ours/copy' + fb]:6.1f}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"runs": args.runs, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
