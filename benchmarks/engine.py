"""Dropout speed, side by side: a copy, the backend's own dropout, Keras'
dropout and ours, on the same inputs, in one run, one subprocess per backend.

    python benchmarks/engine.py [--backends jax torch] [--runs 30] [--json PATH]

Prints a table of medians (ms) and the ratios ours/native and ours/copy; the
same figures go to a JSON file. Absolute times depend on the machine and its
load: compare the ratios, which are measured back to back.
"""

import argparse
import json
import os
import platform
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


def worker(backend, runs):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_dropout_variants import ops as kops

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

        modes = {"eager": lambda f: f, "jit": jax.jit}
    elif backend == "tensorflow":
        import tensorflow as tf

        def native(x, rate, c):
            return tf.nn.dropout(x, rate)

        modes = {
            "eager": lambda f: f,
            "tf.function": tf.function,
            "tf.function(xla)": lambda f: tf.function(f, jit_compile=True),
        }
    else:
        import torch

        def native(x, rate, c):
            return torch.nn.functional.dropout(x, rate, training=True)

        modes = {"eager": lambda f: f}
        if os.environ.get("KDV_BENCH_TORCH_COMPILE") == "1":
            modes["torch.compile"] = torch.compile

    def ours(x, rate, c):
        return kops.dropout(x, rate, seed=1, counter=c)

    def copy(x, rate, c):
        return x * 1

    for shape in SHAPES:
        x = keras.ops.convert_to_tensor(
            np.random.default_rng(0).normal(size=shape).astype("float32")
        )
        for rate in RATES:
            layer = keras.layers.Dropout(rate, seed=1)

            def keras_dropout(x, rate, c, layer=layer):
                return layer(x, training=True)

            for mode, wrap in modes.items():
                row = {"backend": backend, "mode": mode, "shape": list(shape), "rate": rate}
                impls = {"copy": copy, "native": native, "ours": ours}
                if mode == "eager":  # a stateful layer does not go into a jit
                    impls["keras"] = keras_dropout
                for name, impl in impls.items():
                    f = wrap(lambda x, c, impl=impl, rate=rate: impl(x, rate, c))
                    c = keras.ops.convert_to_tensor(5, dtype="int32")
                    row[name] = timed(lambda: f(x, c), runs, sync)
                row["ours/native"] = row["ours"] / row["native"]
                row["ours/copy"] = row["ours"] / row["copy"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", default=os.path.join("benchmarks", "results", "engine.json"))
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.runs)
        return

    rows = []
    for backend in args.backends:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", backend, "--runs", str(args.runs)],
            capture_output=True, text=True,
        )
        if proc.returncode:
            print(f"{backend}: worker failed\n{proc.stderr[-3000:]}")
            continue
        rows += [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]

    header = f"{'backend':<11}{'mode':<18}{'shape':<17}{'rate':>5}{'copy':>8}{'native':>9}{'keras':>9}{'ours':>9}{'ours/native':>13}{'ours/copy':>11}"
    print(f"median ms over {args.runs} runs; {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(header)
    for r in rows:
        keras_ms = f"{r['keras']:9.2f}" if "keras" in r else f"{'-':>9}"
        print(
            f"{r['backend']:<11}{r['mode']:<18}{'x'.join(map(str, r['shape'])):<17}{r['rate']:>5}"
            f"{r['copy']:8.2f}{r['native']:9.2f}{keras_ms}{r['ours']:9.2f}"
            f"{r['ours/native']:13.2f}{r['ours/copy']:11.2f}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"runs": args.runs, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
