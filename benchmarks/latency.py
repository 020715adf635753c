"""Per-call latency of dropout on small tensors, where the fixed cost of a
call, not the work per element, decides: ours against Keras' and the
backend's own, side by side, one subprocess per backend.

    python benchmarks/latency.py [--backends jax torch] [--rounds 15]
                                 [--calls 50] [--json PATH]

Three tables, each written as JSON next to `--json` (`latency.json`,
`latency_fit.json`, `latency_profile.json`):
- eager, per call, at 64x64, 256x256 and a 32x128x64 sequence batch, the
  forward pass and forward+backward (the gradient of `sum(f(x) * w)`) of the
  backend's own dropout (`native`), `keras_dropout_variants.ops.dropout`
  (`op`), our `Dropout` layer (`layer`) and `keras.layers.Dropout`
  (`keras`); each sample is the mean of `--calls` calls, the samples of all
  variants interleaved round after round;
- a compiled `fit()` step (TF graph, `jax.jit`, `torch.compile`) of a small
  model, Dense-dropout-Dense on those shapes, with no dropout, Keras' and
  ours: what the dropout adds to the step;
- where an eager 64x64 call of our layer spends its time: each part timed
  alone (its call machinery, on our layer with a `call` that returns its
  input; reading and advancing the step counter; the key, the mask,
  applying it), and the rest (argument checks, dispatch) as the difference.
"""

import _common
from engine import backend_functions

SHAPES = ((64, 64), (256, 256), (32, 128, 64))
RATE = 0.5
FB = " f+b"
VARIANTS = ("native", "op", "layer", "keras")
TABLE = (
    [["backend", "backend", ""], ["shape", "shape", ""]]
    + [[k, k, ".2f"] for k in ("layer/keras", "layer/native", "op/native",
                               "layer/keras" + FB, "op/native" + FB)]
    + [[k + " us", k, ".0f"] for k in VARIANTS]
    + [[k + FB + " us", k + FB, ".0f"] for k in VARIANTS]
)
ABOUT = """\
Time of one eager call on a small float32 tensor (rate {rate}), the forward
pass and forward+backward (`f+b`: the gradient of `sum(f(x) * w)`), in
microseconds: `native` is the backend's own dropout (`tf.nn.dropout`, a
`jax.random.bernoulli` dropout, `torch.nn.functional.dropout`), `op` is
`keras_dropout_variants.ops.dropout`, `layer` our `Dropout` layer (which also
reads and advances its step counter) and `keras` is `keras.layers.Dropout`.
Each figure is the median of {rounds} samples of {calls} calls, the variants
interleaved. JAX has no eager backward pass of a layer that advances state
(`-`). Small tensors measure the fixed cost of a call, which Keras' own
`Layer.__call__` dominates for Keras' layer everywhere and for ours under JAX
and TensorFlow; under eager torch our layers skip it (see the profile
below)."""

FIT_TABLE = [["backend", "backend", ""], ["mode", "mode", ""], ["shape", "shape", ""],
             ["ours - none us", "ours_added", ".0f"], ["keras - none us", "keras_added", ".0f"],
             ["none us", "none", ".0f"], ["ours us", "ours", ".0f"], ["keras us", "keras", ".0f"]]
FIT_ABOUT = """\
One compiled `fit()` step (TF graph, `jax.jit`, `torch.compile`) of a small
model, `Dense(d)`, dropout at {rate}, `Dense(d)` with an MSE loss and SGD, on
batches of the shapes above (`d`: the last dimension): with no dropout
(`none`), with `keras.layers.Dropout` and with ours. `ours - none` is what
our dropout adds to a training step, forward and backward. Medians over
{rounds} interleaved rounds of {steps} steps each, in microseconds; small
differences are within the machine's noise."""

PROFILE_TABLE = [["backend", "backend", ""], ["part", "part", ""],
                 ["us", "us", ".1f"], ["share", "share", ".0%"]]
PROFILE_ABOUT = """\
Where one eager call of our `Dropout` layer on a 64x64 float32 tensor spends
its time, each part timed alone (median of {rounds} samples of {calls} calls):
`call machinery` is how a call reaches the layer's `call`, timed on our layer
with a `call` that returns its input: Keras' `Layer.__call__` under JAX and
TensorFlow (every Keras layer pays it), the checks of a direct call under
eager torch, where the package's layers skip Keras' `__call__` when it would
do nothing else (see docs/design.md, "Per-call cost"); `counter` reads the step
counter (a snapshot) and assigns it plus one; `key`, `mask` and `apply` are
the engine's steps as the backend's fast path runs them (under JAX and
TensorFlow one compiled function derives the key, draws the mask and applies
it); `rest` is the layer's total minus the parts: argument checks, dispatch
and Python glue. `share` is of the layer's total."""


def eager_rows(backend, args, sync):
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    native, fwd_bwd, _ = backend_functions(backend, False)
    rows = []
    for shape in SHAPES:
        data = np.random.default_rng(0).normal(size=(2,) + shape).astype("float32")
        x, w = (keras.ops.convert_to_tensor(a) for a in data)
        c = keras.ops.convert_to_tensor(5, dtype="int32")
        ours, theirs = kdv.Dropout(RATE, seed=1), keras.layers.Dropout(RATE, seed=1)
        impls = {
            "native": lambda x, c: native(x, RATE, c),
            "op": lambda x, c: kdv.ops.dropout(x, RATE, seed=1, counter=c),
            "layer": lambda x, c: ours(x, training=True),
            "keras": lambda x, c: theirs(x, training=True),
        }
        fns = {}
        for name, f in impls.items():
            fns[name] = _common.clocked(lambda f=f: f(x, c), sync, args.calls)
            if backend != "jax" or name in ("native", "op"):
                g = fwd_bwd(f, w, lambda f: f)
                fns[name + FB] = _common.clocked(lambda g=g: g(x, c), sync, args.calls)
        us = {k: v * 1e3 for k, v in _common.interleaved(fns, args.rounds).items()}
        row = {"backend": backend, "shape": list(shape), **us}
        for suffix in ("", FB):
            for a, b in (("layer", "keras"), ("layer", "native"), ("op", "native")):
                if a + suffix in us and b + suffix in us:
                    row[f"{a}/{b}{suffix}"] = us[a + suffix] / us[b + suffix]
        rows.append(row)
    return rows


def fit_rows(backend, args):
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    if backend == "torch":  # nine models' train steps: one compile each
        import torch

        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.accumulated_recompile_limit = 1024
    timer = _common.StepTimer()
    rows = []
    for shape in SHAPES:
        batch, features = shape[0], shape[1:]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(batch * args.steps,) + features).astype("float32")
        y = rng.normal(size=x.shape).astype("float32")
        fns = {}
        for name in ("none", "keras", "ours"):
            dropout = {"none": [], "keras": [keras.layers.Dropout(RATE, seed=1)],
                       "ours": [kdv.Dropout(RATE, seed=1)]}[name]
            model = keras.Sequential([keras.Input(features), keras.layers.Dense(features[-1])]
                                     + dropout + [keras.layers.Dense(features[-1])])
            model.compile("sgd", "mse", jit_compile=True if backend == "torch" else "auto")
            fns[name] = lambda m=model: timer.fit(m, x, y, batch_size=batch)
        us = {k: v * 1e3 for k, v in _common.interleaved(fns, args.rounds, warmup=2).items()}
        mode = {"tensorflow": "tf.function", "jax": "jax.jit", "torch": "torch.compile"}[backend]
        rows.append({"backend": backend, "mode": mode, "shape": list(shape), **us,
                     "ours_added": us["ours"] - us["none"], "keras_added": us["keras"] - us["none"]})
    return rows


# The part that is one compiled function under JAX and TensorFlow.
ONE_CALL = "key + mask + apply (one compiled call)"
# How a call reaches `call`: Keras' `Layer.__call__`, or a direct call.
CALL = "call machinery"


def profile_parts(backend):
    """(name, function) of the parts of our layer's eager 64x64 call, as the
    backend's fast path runs them, with their arguments prepared."""
    import keras
    import numpy as np

    import keras_dropout_variants as kdv
    from keras_dropout_variants import _backends
    from keras_dropout_variants import random as engine

    x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(64, 64)).astype("float32"))
    layer = kdv.Dropout(RATE, seed=1)
    layer.build(x.shape)

    class Identity(kdv.Dropout):  # our layer's call machinery alone
        def call(self, inputs, training=False, mask_id=None):
            return inputs

    identity = Identity(RATE, seed=1)

    def counter():
        value = engine.snapshot(layer.counter)
        layer.counter.assign(value + 1)
        return value

    threshold, c = engine.keep_threshold(RATE), engine.snapshot(layer.counter)
    parts = [(CALL, lambda: identity(x, training=True)), ("counter", counter)]
    fast = _backends._module(backend)  # the backend's fast paths
    if backend == "torch":
        base, k1 = fast._stream(1, c, 0)
        limit = engine._limit(threshold)
        words = fast._numpy_keep(4096, base, k1, limit, fast._NUMPY_BITS[x.dtype])
        words = fast.torch.from_numpy(words).reshape(64, 64)
        scale = fast._scale(RATE, x.dtype, x.device)
        parts += [("key", lambda: fast._stream(1, c, 0)),
                  ("mask", lambda: fast._numpy_keep(4096, base, k1, limit, fast._NUMPY_BITS[x.dtype])),
                  ("apply", lambda: fast._mask_and_scale(x, words, scale))]
    elif backend == "jax":
        words = fast._words(1, c, 0, engine._limit(threshold))
        parts.append((ONE_CALL, lambda: fast._compiled_drop(x, *words, (64, 64), 4096, RATE)))
    else:
        fast.drop(x, (64, 64), 4096, 1, c, 0, threshold, RATE)  # traces it
        function = fast._drop_functions[(x.dtype, 2)]
        words = (1, c, 0, engine._limit(threshold), 4096)
        args = (x, *(fast._word(w) for w in words), fast.tf.constant([64, 64]),
                engine._scale(x, RATE))
        parts.append((ONE_CALL, lambda: function(*args)))
    return parts, (lambda: layer(x, training=True))


def profile_rows(backend, args, sync):
    parts, total = profile_parts(backend)
    fns = {name: _common.clocked(f, sync, args.calls) for name, f in parts + [("layer", total)]}
    us = {k: v * 1e3 for k, v in _common.interleaved(fns, args.rounds).items()}
    rows = [{"backend": backend, "part": name, "us": us[name], "share": us[name] / us["layer"]}
            for name, _ in parts]
    rest = us["layer"] - sum(us[name] for name, _ in parts)
    rows.append({"backend": backend, "part": "rest", "us": rest, "share": rest / us["layer"]})
    rows.append({"backend": backend, "part": "layer call (total)", "us": us["layer"], "share": 1.0})
    return rows


# The three tables: JSON file name suffix -> (columns, description).
TABLES = {
    "": (TABLE, ABOUT),
    "_fit": (FIT_TABLE, FIT_ABOUT),
    "_profile": (PROFILE_TABLE, PROFILE_ABOUT),
}


def worker(backend, args):
    sync = _common.sync_function(backend)
    parts = {"": eager_rows(backend, args, sync), "_fit": fit_rows(backend, args),
             "_profile": profile_rows(backend, args, sync)}
    return {"rows": [dict(row, table=suffix) for suffix, rows in parts.items() for row in rows]}


def main():
    import os

    parser = _common.parser(__doc__, "latency")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--calls", type=int, default=50, help="calls per sample (default 50)")
    parser.add_argument("--steps", type=int, default=20, help="fit() steps per round (default 20)")
    args = parser.parse_args()
    if _common.serve(args, worker):
        return
    rows, devices = _common.run_workers(__file__, [(b,) for b in args.backends])
    print(f"median us; {_common.devices_line(devices)}")
    options = {"rounds": args.rounds, "calls": args.calls, "steps": args.steps}
    root, ext = os.path.splitext(args.json)
    for suffix, (table, about) in TABLES.items():
        mine = [row for row in rows if row["table"] == suffix]
        text = about.format(rate=RATE, **options)
        _common.publish(root + suffix + ext, "latency" + suffix, options, devices, mine, table, text)


if __name__ == "__main__":
    main()
