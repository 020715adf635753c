"""Train-step time and peak memory of an MLP with `DropConnectDense` vs `Dense`.

    python benchmarks/drop_connect.py [--backends jax torch] [--steps 40]
                                      [--json PATH]

The same Sequential MLP (784-512-512-10) with its hidden layers as plain
`Dense`, as `DropConnectDense(rate=0.5)` with one mask per batch (the
default), or with `mask_per="example"`, trained with `fit()` in the
backend's default mode. Each (backend, variant, batch size) runs in its own
subprocess, one after the other within one run, so that its peak resident
memory (`ru_maxrss`, and on a GPU the peak the backend's allocator
reports) is its own. Prints median step times, the ratio to `Dense` at the
same batch size, and peak memory; writes them to
benchmarks/results/drop_connect.json (`--json`).

`mask_per="example"` is timed at batch 16 and 64 (it costs about `batch`
dense layers per step, so larger batches take long on a CPU): with chunking,
its peak memory should not grow with the batch the way a full
(batch, in + 1, out) mask would (48 more examples: 18 MiB as bool and 74 MiB
as float32 for the first layer alone).
"""

import argparse
import statistics

import _common

# (variant, batch size): one mask per batch at 256 (the target), one per
# example at 64 and 16; each against Dense at the same batch size.
CONFIGS = (
    ("dense", 256), ("batch", 256),
    ("dense", 64), ("example", 64),
    ("dense", 16), ("example", 16),
)
NAMES = {"dense": "Dense", "batch": "DropConnect/batch", "example": "DropConnect/example"}
# [header, row key, format]
TABLE = [
    ["backend", "backend", ""], ["variant", "variant", ""], ["batch", "batch", "d"],
    ["/Dense", "ratio", ".2f"], ["step ms", "ms", ".2f"],
    ["peak MiB", "peak_mib", ".0f"], ["GPU peak MiB", "device_peak_mib", ".0f"],
]
ABOUT = """\
Time of one `fit()` training step of a 784-512-512-10 MLP whose hidden layers
are plain `Dense`, `DropConnectDense(rate=0.5)` with one kernel mask per batch
(`DropConnect/batch`, the default) or with one per example
(`DropConnect/example`), in each backend's default `fit()` mode, median of
{steps} steps ({example_steps} per-example), and the peak memory of the process
(resident; on a GPU also the allocator's peak). `/Dense` is the step time over
`Dense`'s at the same batch size. Each row is a process of its own, run one
after the other, so its peak memory is its own, but its ratio also carries
the machine's drift between the two processes: the ratio of
`benchmarks/fit.py`, measured in interleaved rounds, is the one to trust for
`DropConnect/batch`. A per-example mask costs about `batch` dense layers per
step; its peak memory should stay about flat from batch 16 to 64, as the
examples go in chunks whose masks are redrawn in the backward pass."""


def steps_of(variant, steps):
    return max(3, steps // 4) if variant == "example" else steps


def worker(backend, args):
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    variant, batch = args.config[0], int(args.config[1])
    steps = steps_of(variant, args.steps)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * (steps + 2), 784)).astype("float32")
    y = rng.integers(0, 10, size=(len(x),))

    def hidden(i):
        if variant == "dense":
            return keras.layers.Dense(512, activation="relu")
        return kdv.DropConnectDense(512, rate=0.5, activation="relu", seed=i, mask_per=variant)

    model = keras.Sequential([keras.Input((784,)), hidden(0), hidden(1), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Warm-up (tracing, compilation) on two batches; the other `steps` are timed.
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
    times = _common.StepTimer().fit(model, x[2 * batch:], y[2 * batch:], batch_size=batch)
    row = {"backend": backend, "variant": NAMES[variant], "batch": batch,
           "ms": statistics.median(times) * 1e3, "peak_mib": _common.peak_rss_mib()}
    device_peak = _common.device_peak_bytes(backend)
    if device_peak is not None:
        row["device_peak_mib"] = device_peak / 2**20
    return {"rows": [row]}


def main():
    parser = _common.parser(__doc__, "drop_connect")
    parser.add_argument("--steps", type=int, default=40,
                        help="timed steps (per-example: a quarter; default 40)")
    parser.add_argument("--config", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if _common.serve(args, worker):
        return
    runs = [(b, "--config", v, str(n)) for b in args.backends for v, n in CONFIGS]
    rows, devices = _common.run_workers(__file__, runs)
    dense = {(r["backend"], r["batch"]): r["ms"] for r in rows if r["variant"] == "Dense"}
    for r in rows:
        if (r["backend"], r["batch"]) in dense:
            r["ratio"] = r["ms"] / dense[r["backend"], r["batch"]]
    print(_common.devices_line(devices))
    options = {"steps": args.steps, "example_steps": steps_of("example", args.steps)}
    about = ABOUT.format(**options)
    _common.publish(args.json, "drop_connect", options, devices, rows, TABLE, about)


if __name__ == "__main__":
    main()
