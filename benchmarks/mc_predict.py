"""`kdv.mc_predict` against the loop users write, per backend.

    python benchmarks/mc_predict.py [--backends jax torch] [--samples 30]
                                    [--rounds 5] [--json PATH]

Thirty Monte-Carlo samples of the predictions for 256 inputs, two ways,
timed side by side in interleaved rounds in one process per backend:
`loop` is `[model(x, training=True) for _ in range(samples)]`, eager (what
users write; it also switches BatchNorm to batch statistics, which
`mc_predict` does not), and `mc_predict` is `kdv.mc_predict(model, x,
samples, batch_size=256)`, which stacks as many samples per forward pass as
`max_rows` (4096 rows: 16 samples of 256) allows. Two models: an MLP
(64-256-256-10, two `kdv.Dropout(0.5)`) and a small CNN on 8x8x1 inputs
(two 3x3 convolutions of 32 and 64 channels with `kdv.SpatialDropout2D`,
then `kdv.Dropout` before the classifier). Prints the medians and
`mc/loop`; writes benchmarks/results/mc_predict.json (`--json`).
"""

import _common

MODELS = ("MLP", "CNN")
TABLE = [
    ["backend", "backend", ""], ["model", "model", ""],
    ["loop ms", "loop_ms", ".1f"], ["mc_predict ms", "mc_ms", ".1f"],
    ["mc/loop", "ratio", ".2f"],
]
ABOUT = """\
Time of {samples} Monte-Carlo samples of the predictions for 256 inputs:
`loop` is `[model(x, training=True) for _ in range({samples})]` in the
backend's eager mode, what users write by hand; `mc_predict` is
`kdv.mc_predict(model, x, samples={samples}, batch_size=256)`, which stacks
up to `max_rows=4096` rows (16 samples) into each forward pass and draws
each sample's masks with its own mask id. Models: an MLP 64-256-256-10
with two `Dropout(0.5)`, and a CNN on 8x8x1 inputs (two 3x3 convolutions of
32 and 64 channels, each followed by `SpatialDropout2D(0.2)`, then
`Dropout(0.5)` and a dense classifier). Medians of {rounds} interleaved
rounds after warm-up. `mc/loop` below 1 means `mc_predict` is faster; the
target is at most 0.5."""


def build(keras, kdv, name):
    keras.utils.set_random_seed(0)
    if name == "MLP":
        layers = [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), kdv.Dropout(0.5, seed=1),
                  keras.layers.Dense(256, activation="relu"), kdv.Dropout(0.5, seed=2),
                  keras.layers.Dense(10, activation="softmax")]
    else:
        layers = [keras.Input((8, 8, 1)),
                  keras.layers.Conv2D(32, 3, padding="same", activation="relu"), kdv.SpatialDropout2D(0.2, seed=1),
                  keras.layers.Conv2D(64, 3, padding="same", activation="relu"), kdv.SpatialDropout2D(0.2, seed=2),
                  keras.layers.Flatten(), kdv.Dropout(0.5, seed=3), keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential(layers)


def worker(backend, args):
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    sync = _common.sync_function(backend)
    rows = []
    for name in MODELS:
        model = build(keras, kdv, name)
        shape = (256, 64) if name == "MLP" else (256, 8, 8, 1)
        x = np.random.default_rng(0).random(shape, dtype=np.float32)

        def loop():
            return [model(x, training=True) for _ in range(args.samples)][-1]

        def mc():
            return kdv.mc_predict(model, x, samples=args.samples, batch_size=256).mean

        times = _common.interleaved(
            {"loop": _common.clocked(loop, sync), "mc": _common.clocked(mc, lambda y: y)},
            rounds=args.rounds, warmup=2,
        )
        rows.append({"backend": backend, "model": name, "loop_ms": times["loop"],
                     "mc_ms": times["mc"], "ratio": times["mc"] / times["loop"]})
    return {"rows": rows}


def main():
    parser = _common.parser(__doc__, "mc_predict")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if _common.serve(args, worker):
        return
    rows, devices = _common.run_workers(__file__, [(b,) for b in args.backends])
    print(_common.devices_line(devices))
    options = {"samples": args.samples, "rounds": args.rounds}
    _common.publish(args.json, "mc_predict", options, devices, rows, TABLE, ABOUT.format(**options))


if __name__ == "__main__":
    main()
