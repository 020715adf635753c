"""`fit()` step time of an MLP with our layers vs Keras' own, side by side.

    python benchmarks/fit.py [--backends jax torch] [--rounds 8] [--steps 10]
                             [--batch 256] [--torch-compile] [--json PATH]

A Sequential 784-1024-1024-10 MLP (ReLU, Adam, batch 256 unless `--batch`)
in each backend's default `fit()` mode (TF graph, `jax.jit`, torch eager),
one subprocess per backend; `--torch-compile` adds torch with
`jit_compile=True` (torch.compile), whose models compile in the warm-up.
Pairs, each measured against its baseline in the same process (and each
dropout model against the same model without dropout, `Dense`):
- `keras.layers.Dropout(0.5)` after each hidden layer vs our `Dropout(0.5)`
  (and `SeededDropout(0.5)`);
- plain `Dense` hidden layers vs `DropConnectDense(rate=0.5)` with one kernel
  mask per step (the default `mask_per="batch"`);
- and, as the floor, a layer computing `x * 2` in the dropouts' place.
The models run in interleaved rounds (`--steps` steps of each in turn) so
that a machine whose speed drifts slows every model alike; each figure is
the median step time over all rounds, from `on_train_batch_begin` to `_end`.
Prints the medians and the ratios, and writes them to
benchmarks/results/fit.json (`--json`).
"""

import argparse

import _common

# (variant, baseline it is compared with)
VARIANTS = (
    ("x * 2", None),
    ("keras.Dropout", None),
    ("Dropout", "keras.Dropout"),
    ("SeededDropout", "keras.Dropout"),
    ("Dense", None),
    ("DropConnectDense", "Dense"),
)
UNITS = 1024
# [header, row key, format]
TABLE = [["backend", "backend", ""], ["variant", "variant", ""], ["ratio", "ratio", ".2f"],
         ["vs", "baseline", ""], ["over no dropout", "overhead", "+.1%"], ["step ms", "ms", ".2f"]]
# The variants with a layer after each hidden layer, whose cost is against
# the same model without it: `Dense`. `x * 2` is the floor: what an
# element-wise layer that reads x and writes its output (and masks nothing)
# adds to the step.
DROPOUTS = ("x * 2", "keras.Dropout", "Dropout", "SeededDropout")
ABOUT = """\
Time of one `fit()` training step of a 784-{units}-{units}-10 MLP (ReLU, Adam,
batch {batch}, float32) in each backend's default `fit()` mode (TF graph,
`jax.jit`, torch eager; `torch.compile` is `jit_compile=True`). `Dropout`
and `SeededDropout` are ours, after each hidden layer, against
`keras.layers.Dropout` there (all at rate 0.5); `DropConnectDense(rate=0.5)`
(one kernel mask per step) is against plain `Dense` hidden layers. `ratio` is
the variant's step time over its baseline's (`vs`): 1.05 means 5% slower
training steps. `over no dropout` is what the dropout layers add to the step
of the same model without them (`Dense`): the floor any dropout is held to.
`x * 2` is a layer that doubles its input in training, in the dropouts'
place: what any element-wise layer (one read of x, one write, one pass over
the gradient, no mask) adds to the step on this machine.
The models of a backend run in {rounds} interleaved rounds of {steps} steps
each in one process, so that a machine whose speed drifts slows them alike;
the figures are medians over all steps. The ratios are what to compare; the
milliseconds depend on the machine and its load."""


def build(variant, seed, jit_compile="auto"):
    import keras

    import keras_dropout_variants as kdv

    class _Double(keras.layers.Layer):
        """`x * 2` in training: an element-wise layer, dropout's floor."""

        def call(self, inputs, training=False):
            return keras.ops.multiply(inputs, 2.0) if training else inputs

    def block(i):
        if variant == "DropConnectDense":
            return [kdv.DropConnectDense(UNITS, rate=0.5, activation="relu", seed=seed + i)]
        dense = keras.layers.Dense(UNITS, activation="relu")
        if variant == "Dense":
            return [dense]
        dropout = {
            "x * 2": _Double,
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


def worker(backend, args):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch * args.steps, 784)).astype("float32")
    y = rng.integers(0, 10, size=(len(x),))
    if args.jit:  # five models' layers in one process: one compile each
        import torch

        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 1024
    timer = _common.StepTimer()
    fns = {}
    for name, _ in VARIANTS:
        model = build(name, 1, True if args.jit else "auto")
        fns[name] = lambda model=model: timer.fit(model, x, y, batch_size=args.batch)
    # Two warm-up epochs each: tracing, compilation, allocations.
    ms = _common.interleaved(fns, args.rounds, warmup=2)
    mode = f"{backend}.compile" if args.jit else backend
    rows = []
    for name, baseline in VARIANTS:
        row = {"backend": mode, "variant": name, "ms": ms[name]}
        if baseline:
            row.update(baseline=baseline, ratio=ms[name] / ms[baseline])
        if name in DROPOUTS:
            row["overhead"] = ms[name] / ms["Dense"] - 1
        rows.append(row)
    return {"rows": rows}


def main():
    parser = _common.parser(__doc__, "fit")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--steps", type=int, default=10, help="steps of each model per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if _common.serve(args, worker):
        return
    runs = [(b,) for b in args.backends]
    if args.torch_compile and "torch" in args.backends:
        runs.append(("torch", "--jit"))
    rows, devices = _common.run_workers(__file__, runs)
    print(f"fit() step, 784-{UNITS}-{UNITS}-10 MLP, batch {args.batch}, median of "
          f"{args.rounds} x {args.steps} steps; {_common.devices_line(devices)}")
    options = {"rounds": args.rounds, "steps": args.steps, "batch": args.batch,
               "torch_compile": args.torch_compile}
    about = ABOUT.format(units=UNITS, **options)
    _common.publish(args.json, "fit", options, devices, rows, TABLE, about)


if __name__ == "__main__":
    main()
