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

A second table (`fit_profile.json` beside `--json`) splits what one of our
`Dropout` layers adds to the step into parts, timed alone at the step's
shape in the same fit() mode (see PROFILE_ABOUT).
"""

import argparse
import os

import _common
from engine import backend_functions

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


# Each backend's default fit() mode, as named by `engine.backend_functions`.
FIT_MODES = {"tensorflow": "tf.function", "jax": "jit", "torch": "eager"}
PROFILE_TABLE = [["backend", "backend", ""], ["part", "part", ""],
                 ["us", "us", ".0f"], ["share", "share", ".0%"], ["of the step", "step", ".1%"]]
PROFILE_ABOUT = """\
Where the time one of our `Dropout` layers adds to the `fit()` step above
goes, in microseconds per layer per step: `added to the step` is
(`Dropout` - `Dense`) / 2 from the interleaved rounds above. The first four
parts are timed alone, on a {batch}x{units} float32 tensor, in the same
mode (TF graph, `jax.jit`, eager torch), as the loss `sum(f(x) * w)` and
its gradient: `element-wise pass` is `f = x * 2` minus `f = x` (reading
x, writing the output, one pass over the gradient: the floor of any
element-wise layer); `drawing the mask` is `keras_dropout_variants.ops.dropout`
minus `x * 2`, forward only (the engine's hash of every element, which the
mask format fixes); `backward beyond x * 2` is the rest of the op's
forward+backward; `layer: call, counter` is our layer's forward+backward
minus the op's (the call, reading and advancing the step counter; under
JAX a stateless call, as in a compiled step). `rest: in the model` is the
layer in the model minus the layer alone: what the model around it
changes (on a CPU the step's other large tensors share the caches and the
memory bandwidth with the layer's, and evict the code of each eager call,
so the same calls cost more between them than in a loop; see
docs/design.md). `share` is of the
added time (`-` where that reads zero or less), `of the step` of the step
without dropout. Medians of {rounds} interleaved samples of {calls} calls.
The parts are differences of timings, and `added to the step` moves by a
few points of the step from run to run on a shared machine (and a compiled
step may fuse the layer into its neighbours), so a small part may read
negative. What was
tried to shrink each part, and why the rest stays, is in docs/design.md
("Per-call cost")."""


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
    rows = [] if args.jit else profile_rows(backend, args, ms)
    for name, baseline in VARIANTS:
        row = {"backend": mode, "variant": name, "ms": ms[name]}
        if baseline:
            row.update(baseline=baseline, ratio=ms[name] / ms[baseline])
        if name in DROPOUTS:
            row["overhead"] = ms[name] / ms["Dense"] - 1
        rows.append(row)
    return {"rows": rows}


def loss_and_gradient(backend, f, w, wrap):
    """(x, c) -> (sum(f(x, c) * w), its gradient in x), compiled by `wrap`
    (a mode of `engine.backend_functions`). Unlike that module's
    forward+backward, which returns the gradient alone, the loss is kept:
    under `jax.jit` the forward pass would otherwise be dead code."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return wrap(jax.value_and_grad(lambda x, c: jnp.sum(f(x, c) * w)))
    if backend == "tensorflow":
        import tensorflow as tf

        def step(x, c):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(f(x, c) * w)
            return loss, tape.gradient(loss, x)

        return wrap(step)

    def step(x, c):
        v = x.detach().requires_grad_()
        loss = (f(v, c) * w).sum()
        loss.backward()
        return loss, v.grad

    return wrap(step)


def layer_function(backend, shape):
    """(x, c) -> our `Dropout` layer's training call on x, as a training step
    makes it: under JAX statelessly, with `c` as its step counter's value
    (a compiled function cannot change a variable), elsewhere a plain call,
    which reads and advances the layer's own counter."""
    import keras_dropout_variants as kdv

    layer = kdv.Dropout(0.5, seed=1)
    layer.build(shape)
    if backend != "jax":
        return lambda x, c: layer(x, training=True)

    def call(x, c):
        state = [c if v is layer.counter else v.value for v in layer.non_trainable_variables]
        return layer.stateless_call([], state, x, training=True)[0]

    return call


def profile_rows(backend, args, ms):
    """The parts of what one `Dropout` layer adds to the step (`ms`: the
    step medians of the variants), see PROFILE_ABOUT."""
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    data = np.random.default_rng(1).normal(size=(2, args.batch, UNITS)).astype("float32")
    x, w = (keras.ops.convert_to_tensor(a) for a in data)
    # The counter is an argument, as the layer's variable is in the step: a
    # constant one would let a compiler fold the whole mask.
    c = keras.ops.convert_to_tensor(5, dtype="int32")
    impls = {
        "identity": lambda x, c: x,
        "x * 2": lambda x, c: x * 2.0,
        "op": lambda x, c: kdv.ops.dropout(x, 0.5, seed=1, counter=c),
        "layer": layer_function(backend, x.shape),
    }
    sync = _common.sync_function(backend)
    wrap = backend_functions(backend, False)[2][FIT_MODES[backend]]
    fns = {}
    for name, f in impls.items():
        step = loss_and_gradient(backend, f, w, wrap)
        fns[name + " f+b"] = _common.clocked(lambda step=step: step(x, c), sync, args.calls)
        if name in ("x * 2", "op"):
            fwd = wrap(f)
            fns[name] = _common.clocked(lambda fwd=fwd: fwd(x, c), sync, args.calls)
    us = {k: v * 1e3 for k, v in _common.interleaved(fns, args.rounds * 2).items()}
    added = (ms["Dropout"] - ms["Dense"]) / 2 * 1e3
    parts = {"element-wise pass (x * 2)": us["x * 2 f+b"] - us["identity f+b"],
             "drawing the mask": us["op"] - us["x * 2"]}
    parts["backward beyond x * 2"] = us["op f+b"] - us["x * 2 f+b"] - parts["drawing the mask"]
    parts["layer: call, counter"] = us["layer f+b"] - us["op f+b"]
    parts["rest: in the model"] = added - (us["layer f+b"] - us["identity f+b"])
    parts["added to the step"] = added
    step_us = ms["Dense"] * 1e3
    return [{"backend": backend, "part": part, "us": value, "step": value / step_us,
             "share": value / added if added > 0 else None,  # else noise: no shares
             "table": "profile"} for part, value in parts.items()]


def main():
    parser = _common.parser(__doc__, "fit")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--steps", type=int, default=10, help="steps of each model per round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--calls", type=int, default=20,
                        help="calls per sample of the profile's parts (default 20)")
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
               "calls": args.calls, "torch_compile": args.torch_compile}
    about = ABOUT.format(units=UNITS, **options)
    steps = [row for row in rows if row.get("table") != "profile"]
    _common.publish(args.json, "fit", options, devices, steps, TABLE, about)
    profile = [row for row in rows if row.get("table") == "profile"]
    root, ext = os.path.splitext(args.json)
    about = PROFILE_ABOUT.format(units=UNITS, **dict(options, rounds=args.rounds * 2))
    _common.publish(root + "_profile" + ext, "fit_profile", options, devices, profile,
                    PROFILE_TABLE, about)


if __name__ == "__main__":
    main()
