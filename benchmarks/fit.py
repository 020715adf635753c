"""`fit()` step time of an MLP with our layers vs Keras' own, side by side.

    python benchmarks/fit.py [--backends jax torch] [--rounds 8] [--steps 10]
                             [--batch 256] [--torch-compile]

A Sequential 784-1024-1024-10 MLP (ReLU, Adam, batch 256 unless `--batch`)
in each backend's default `fit()` mode (TF graph, `jax.jit`, torch eager),
one subprocess per backend; `--torch-compile` adds torch with
`jit_compile=True` (torch.compile), whose models compile in the warm-up.
Pairs, each measured against its baseline in the same process:
- `keras.layers.Dropout(0.5)` after each hidden layer vs our `Dropout(0.5)`
  (and `SeededDropout(0.5)`);
- plain `Dense` hidden layers vs `DropConnectDense(rate=0.5)` with one kernel
  mask per step (the default `mask_per="batch"`).
The models run in interleaved rounds (`--steps` steps of each in turn) so
that a machine whose speed drifts slows every model alike; each figure is
the median step time over all rounds, from `on_train_batch_begin` to `_end`.
Prints the medians and the ratios; `--json` writes them too.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
# (variant, baseline it is compared with)
VARIANTS = (
    ("keras.Dropout", None),
    ("Dropout", "keras.Dropout"),
    ("SeededDropout", "keras.Dropout"),
    ("Dense", None),
    ("DropConnectDense", "Dense"),
)
UNITS = 1024


class StepTimer:
    """Wall time of each training step of `fit()`, as a Keras callback.

    A callback with its own `on_train_batch_end` turns off Keras' asynchronous
    dispatch, and the step's logs are converted to Python floats before it
    runs: that waits for the device, so on a GPU a step's time is its whole
    computation, not its launch.
    """

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                timer.times.append(time.perf_counter() - self.start)

        self.times = []
        self.callback = Callback()


def gpu_device(backend):
    """The GPU Keras computes on under `backend` (a torch or JAX device, in a
    worker process), or None on a CPU."""
    import keras

    x = keras.ops.zeros(())
    if backend == "torch" and x.device.type == "cuda":
        return x.device
    if backend == "jax":
        device = next(iter(x.devices()))
        if device.platform != "cpu":
            return device
    return None


def device_name(backend):
    """The device Keras computes on under `backend` (in a worker process)."""
    device = gpu_device(backend)
    if device is None:
        return f"{platform.machine()} CPU, {os.cpu_count()} cores"
    if backend == "torch":
        import torch

        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    import jax

    return f"{device.device_kind} (jax {jax.__version__})"


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def build(variant, seed, jit_compile="auto"):
    import keras

    import keras_dropout_variants as kdv

    def block(i):
        if variant == "DropConnectDense":
            return [kdv.DropConnectDense(UNITS, rate=0.5, activation="relu", seed=seed + i)]
        dense = keras.layers.Dense(UNITS, activation="relu")
        if variant == "Dense":
            return [dense]
        dropout = {
            "keras.Dropout": lambda: keras.layers.Dropout(0.5, seed=seed + i),
            "Dropout": lambda: kdv.Dropout(0.5, seed=seed + i),
            "SeededDropout": lambda: kdv.SeededDropout(0.5, seed=seed + i),
        }[variant]()
        return [dense, dropout]

    layers = [keras.Input((784,))] + block(0) + block(1) + [keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def worker(backend, rounds, steps, batch, jit_compile):
    os.environ["KERAS_BACKEND"] = backend
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=(len(x),))
    if jit_compile:  # five models' layers in one process: one compile each
        import torch

        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 1024
    print(json.dumps({"device": device_name(backend)}), flush=True)
    models = {name: build(name, 1, True if jit_compile else "auto") for name, _ in VARIANTS}
    mode = f"{backend}.compile" if jit_compile else backend
    timers = {name: StepTimer() for name in models}
    for model in models.values():  # warm-up: tracing, compilation, allocations
        model.fit(x, y, batch_size=batch, epochs=2, verbose=0)
    for _ in range(rounds):
        for name, model in models.items():
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timers[name].callback])
    ms = {name: median(t.times) * 1e3 for name, t in timers.items()}
    for name, baseline in VARIANTS:
        row = {"backend": mode, "variant": name, "ms": ms[name]}
        if baseline:
            row.update(baseline=baseline, ratio=ms[name] / ms[baseline])
        print(json.dumps(row), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="steps of each model per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--json", default=os.path.join("benchmarks", "results", "fit.json"))
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rounds, args.steps, args.batch, args.jit)
        return

    print(
        f"fit() step, 784-{UNITS}-{UNITS}-10 MLP, batch {args.batch}, median of "
        f"{args.rounds} x {args.steps} steps; {platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"{'backend':<15}{'variant':<18}{'step ms':>9}  ratio")
    rows = []
    runs = [(b, False) for b in args.backends]
    if args.torch_compile and "torch" in args.backends:
        runs.append(("torch", True))
    for backend, jit in runs:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", backend, "--rounds", str(args.rounds),
             "--steps", str(args.steps), "--batch", str(args.batch)] + ["--jit"] * jit,
            capture_output=True, text=True,
        )
        if proc.returncode:
            print(f"{backend}: worker failed\n{proc.stderr[-3000:]}")
            continue
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "device" in r:
                print(f"{backend} on {r['device']}")
                continue
            rows.append(r)
            ratio = f"{r['ratio']:.2f} x {r['baseline']}" if "ratio" in r else ""
            print(f"{r['backend']:<15}{r['variant']:<18}{r['ms']:9.2f}  {ratio}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(
            {"rounds": args.rounds, "steps": args.steps, "batch": args.batch, "rows": rows},
            f, indent=1,
        )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
