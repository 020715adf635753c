"""Train-step time and peak memory of an MLP with `DropConnectDense` vs `Dense`.

    python benchmarks/drop_connect.py [--backends jax torch] [--steps 40]

The same Sequential MLP (784-512-512-10) with its hidden layers as plain
`Dense`, as `DropConnectDense(rate=0.5)` with one mask per batch (the
default), or with `mask_per="example"`, trained with `fit()` in the
backend's default mode. Each (backend, variant, batch size) runs in its own
subprocess, one after the other within one run, so that its peak resident
memory (`ru_maxrss`, and on a GPU the peak the backend's allocator
reports) is its own. Prints median step times, the ratio to `Dense` at the
same batch size, and peak memory.

`mask_per="example"` is timed at batch 16 and 64 (it costs about `batch`
dense layers per step, so larger batches take long on a CPU): with chunking,
its peak memory should not grow with the batch the way a full
(batch, in + 1, out) mask would (48 more examples: 18 MiB as bool and 74 MiB
as float32 for the first layer alone).
"""

import argparse
import json
import os
import subprocess
import sys

from fit import StepTimer, device_name, gpu_device  # (benchmarks/ is on the path of a script in it)

BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = ("dense", "batch", "example")


def worker(backend, variant, batch, steps):
    os.environ["KERAS_BACKEND"] = backend
    import resource

    import keras
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import keras_dropout_variants as kdv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * (steps + 2), 784)).astype("float32")
    y = rng.integers(0, 10, size=(len(x),))

    def hidden(i):
        if variant == "dense":
            return keras.layers.Dense(512, activation="relu")
        return kdv.DropConnectDense(512, rate=0.5, activation="relu", seed=i, mask_per=variant)

    model = keras.Sequential([keras.Input((784,)), hidden(0), hidden(1), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)  # warm-up, compile
    timer = StepTimer()
    model.fit(x[2 * batch:], y[2 * batch:], batch_size=batch, epochs=1, verbose=0, callbacks=[timer.callback])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    ms = sorted(timer.times)[len(timer.times) // 2] * 1e3
    row = {"ms": ms, "peak_mib": peak, "device": device_name(backend)}
    device_peak = device_peak_bytes(backend)
    if device_peak is not None:
        row["device_peak_mib"] = device_peak / 2**20
    print(json.dumps(row), flush=True)


def device_peak_bytes(backend):
    """Peak memory allocated on the GPU in this process, or None on a CPU."""
    device = gpu_device(backend)
    if device is None:
        return None
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated(device)
    return device.memory_stats()["peak_bytes_in_use"]


def run(backend, variant, batch, steps):
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", backend, variant, str(batch), str(steps)],
        capture_output=True, text=True,
    )
    rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not rows:
        print(f"{backend} {variant}: worker failed\n{proc.stderr[-2000:]}")
        return None
    return rows[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--steps", type=int, default=40, help="timed steps (per-example: a quarter)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, variant, batch, steps = args.worker
        worker(backend, variant, int(batch), int(steps))
        return
    print(f"{'backend':<12}{'variant':<18}{'batch':>6}{'step ms':>10}{'/Dense':>8}{'peak MiB':>10}"
          f"{'GPU peak MiB':>14}")
    devices = {}
    for backend in args.backends:
        for batch in (256, 64, 16):
            dense = None
            for variant in VARIANTS:
                # One mask per batch at batch 256 (the target); per example at 64 and 16.
                if (variant == "batch") != (batch == 256) and variant != "dense":
                    continue
                steps = args.steps if variant != "example" else max(3, args.steps // 4)
                r = run(backend, variant, batch, steps)
                if r is None:
                    continue
                dense = r["ms"] if variant == "dense" else dense
                ratio = f"{r['ms'] / dense:8.2f}" if dense else f"{'-':>8}"
                name = "Dense" if variant == "dense" else f"DropConnect/{variant}"
                gpu = f"{r['device_peak_mib']:>14.0f}" if "device_peak_mib" in r else f"{'-':>14}"
                print(f"{backend:<12}{name:<18}{batch:>6}{r['ms']:>10.2f}{ratio}{r['peak_mib']:>10.0f}{gpu}",
                      flush=True)
                devices[backend] = r["device"]
    for backend, device in devices.items():
        print(f"{backend} on {device}")


if __name__ == "__main__":
    main()
