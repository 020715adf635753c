"""Train-step time of an MLP with `DropConnectDense` vs plain `Dense`.

    python benchmarks/drop_connect.py [--backends jax torch] [--steps 40]

For each backend in its own subprocess, and within one run: the same
Sequential MLP (784-512-512-10, batch 256) with its hidden layers as plain
`Dense` or as `DropConnectDense(rate=0.5)`, trained with `fit()` in the
backend's default mode. Prints the median step time of each and the ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")


class StepTimer:
    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(cb, batch, logs=None):
                cb.start = time.perf_counter()

            def on_train_batch_end(cb, batch, logs=None):
                self.times.append(time.perf_counter() - cb.start)

        self.times = []
        self.callback = Callback()


def worker(backend, steps):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_dropout_variants as kdv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256 * steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=(256 * steps,))

    def mlp(hidden):
        return keras.Sequential(
            [keras.Input((784,)), hidden(0), hidden(1), keras.layers.Dense(10)]
        )

    variants = {
        "dense": lambda i: keras.layers.Dense(512, activation="relu"),
        "dropconnect": lambda i: kdv.DropConnectDense(512, rate=0.5, activation="relu", seed=i),
    }
    result = {"backend": backend}
    for name, hidden in variants.items():
        model = mlp(hidden)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:512], y[:512], batch_size=256, epochs=1, verbose=0)  # warm-up, compile
        timer = StepTimer()
        model.fit(x, y, batch_size=256, epochs=1, verbose=0, callbacks=[timer.callback])
        result[name] = sorted(timer.times)[len(timer.times) // 2] * 1e3
    result["ratio"] = result["dropconnect"] / result["dense"]
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps)
        return
    print(f"{'backend':<12}{'Dense ms':>10}{'DropConnectDense ms':>21}{'ratio':>8}")
    for backend in args.backends:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", backend, "--steps", str(args.steps)],
            capture_output=True, text=True,
        )
        rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode or not rows:
            print(f"{backend}: worker failed\n{proc.stderr[-2000:]}")
            continue
        r = rows[0]
        print(f"{backend:<12}{r['dense']:>10.2f}{r['dropconnect']:>21.2f}{r['ratio']:>8.2f}")


if __name__ == "__main__":
    main()
