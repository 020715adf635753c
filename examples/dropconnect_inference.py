"""DropConnect at inference: the plain mean network vs Gaussian moment matching.

A network trained with DropConnect saw a random kernel at every step. At
inference, `kdv.DropConnect` offers two deterministic ways to stand in for
the average over those kernels:

  inference="mean"      the plain Dense with the full kernel: relu(E[x @ W]).
                        Exact for a linear layer, biased for a non-linear one
                        (relu(E[z]) <= E[relu(z)]).
  inference="gaussian"  Wan et al. (2013): the pre-activation is taken as a
                        Gaussian with its training-time mean and variance and
                        the activation is averaged over `num_samples` fixed
                        antithetic pairs of draws: an estimate of E[relu(z)].

The script trains one MLP with two `DropConnectDense` relu layers on
scikit-learn's bundled digits, then builds a copy with
`inference="gaussian"` (`keras.models.clone_model` with the layers' config
changed) and gives it the same weights. As a reference it also averages the
softmax outputs of many training-mode passes (Monte-Carlo over kernel masks,
each pass a new mask from the layers' step counters). It prints accuracy,
negative log-likelihood and expected calibration error (ECE, 10 equal-width
confidence bins) on the validation split, and draws a reliability diagram.

Run under any backend:

    KERAS_BACKEND=jax python examples/dropconnect_inference.py
    KERAS_BACKEND=torch python examples/dropconnect_inference.py --quick
"""

import statistics
import time

import numpy as np

from _common import (
    ExampleParser, calibration, digits_split, fit, import_keras, pyplot, reliability_diagram,
    save_figure,
)

BINS = 10  # coarse: few predictions fall below 0.9 confidence

parser = ExampleParser(
    __doc__,
    "dropconnect_inference",
    epochs=60,
    train_size=500,
    batch_size=32,
    quick={"epochs": 2, "mc_samples": 8},
)
parser.add_argument("--rate", type=float, default=0.5, help="DropConnect rate")
parser.add_argument("--width", type=int, default=256, help="units per hidden layer")
parser.add_argument("--num-samples", type=int, default=16, help="Gaussian pairs per unit")
parser.add_argument("--mc-samples", type=int, default=64, help="training-mode passes averaged")
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras()

import keras_dropout_variants as kdv  # noqa: E402


def build_model(width, rate, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            kdv.DropConnectDense(width, rate=rate, activation="relu", seed=seed + 1),
            kdv.DropConnectDense(width, rate=rate, activation="relu", seed=seed + 2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def with_inference(model, inference, num_samples):
    """A copy of `model` whose DropConnect layers use `inference`, same weights."""

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, kdv.DropConnect):
            config.update(inference=inference, num_samples=num_samples)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def timed(predict, repeats=3):
    """Result of `predict()` and its median wall time in ms (first call excluded)."""
    out = predict()  # traces/compiles where the backend does
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = predict()
        times.append(1000 * (time.perf_counter() - start))
    return out, statistics.median(times)


def plot(results, title, out):
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 5))
    curves = [
        (f"{name} (ECE {r['ece']:.3f})", r, f"C{i}", "-") for i, (name, r) in enumerate(results.items())
    ]
    diagram = "reliability diagram (marker size: examples in the bin)"
    reliability_diagram(left, curves, diagram, "lower right")
    for i, (name, r) in enumerate(results.items()):
        right.hist(r["confidence"], bins=np.linspace(0, 1, BINS + 1), histtype="step",
                   linewidth=1.5, color=f"C{i}", label=name)
    right.set_yscale("log")
    right.set_xlabel("confidence (max probability)")
    right.set_ylabel("validation examples")
    right.set_title("confidence histogram")
    right.legend(loc="upper left", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def main():
    x_train, x_val, y_train, y_val = digits_split(args.train_size, args.seed)
    print(
        f"backend: {keras.backend.backend()}; {len(x_train)} training, "
        f"{len(x_val)} validation examples"
    )

    model = build_model(args.width, args.rate, args.seed)
    fit(model, (x_train, y_train), (x_val, y_val), args, verbose=2)

    gaussian = with_inference(model, "gaussian", args.num_samples)

    def mc_average():
        # Each training-mode call draws the next kernel masks (and advances
        # the step counters of `model`, which is not trained further).
        total = 0.0
        for _ in range(args.mc_samples):
            total = total + keras.ops.convert_to_numpy(model(x_val, training=True))
        return total / args.mc_samples

    predictors = {
        'inference="mean"': lambda: model.predict(x_val, batch_size=1024, verbose=0),
        f'inference="gaussian" ({args.num_samples} pairs)': lambda: gaussian.predict(
            x_val, batch_size=1024, verbose=0
        ),
        f"MC average of {args.mc_samples} training passes": mc_average,
    }
    results = {}
    for name, predict in predictors.items():
        probs, ms = timed(predict, repeats=1 if name.startswith("MC") else 3)
        r = calibration(probs, y_val, BINS)
        r.update(ms=ms, confidence=probs.max(axis=1))
        results[name] = r

    print(
        f"\nbackend {keras.backend.backend()}, {args.epochs} epochs, rate {args.rate}; "
        f"validation split ({len(x_val)} examples)\n"
        "lower NLL and ECE are better; ms: one prediction of the whole split"
    )
    header = f"{'inference':<34} {'val acc':>7} {'NLL':>7} {'ECE':>7} {'ms':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<34} {r['accuracy']:>7.3f} {r['nll']:>7.3f} {r['ece']:>7.3f} {r['ms']:>8.1f}")

    plot(
        results,
        f"DropConnect MLP 64-{args.width}-{args.width}-10, rate {args.rate}, "
        f"{len(x_train)} training digits ({keras.backend.backend()} backend)",
        args.out,
    )


if __name__ == "__main__":
    main()
