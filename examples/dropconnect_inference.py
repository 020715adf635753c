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

import argparse
import os
import statistics
import time

import matplotlib

matplotlib.use("Agg")  # headless: the figure goes to a file
import matplotlib.pyplot as plt  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_dropout_variants as kdv  # noqa: E402

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "output", "dropconnect_inference.png"
)
BINS = 10  # coarse: few predictions fall below 0.9 confidence


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


def calibration(probs, labels):
    """Accuracy, NLL, ECE and the per-bin reliability statistics."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    edges = np.linspace(0.0, 1.0, BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, BINS - 1)
    bins = []
    ece = 0.0
    for b in range(BINS):
        in_bin = which == b
        if in_bin.any():
            acc, conf = correct[in_bin].mean(), confidence[in_bin].mean()
            ece += in_bin.mean() * abs(acc - conf)
            bins.append((conf, acc, int(in_bin.sum())))
    return dict(accuracy=float(correct.mean()), nll=nll, ece=float(ece), bins=bins)


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
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    for i, (name, r) in enumerate(results.items()):
        conf, acc, count = np.array(r["bins"]).T
        left.plot(conf, acc, "-", color=f"C{i}", label=f"{name} (ECE {r['ece']:.3f})")
        left.scatter(conf, acc, s=10 + 120 * count / count.max(), color=f"C{i}")
        right.hist(r["confidence"], bins=np.linspace(0, 1, BINS + 1), histtype="step",
                   linewidth=1.5, color=f"C{i}", label=name)
    left.set_xlabel("confidence (mean max probability in the bin)")
    left.set_ylabel("accuracy in the bin")
    left.set_title("reliability diagram (marker size: examples in the bin)")
    left.set_xlim(0, 1.02)
    left.set_ylim(0, 1.02)
    left.legend(loc="lower right", fontsize=9)
    right.set_yscale("log")
    right.set_xlabel("confidence (max probability)")
    right.set_ylabel("validation examples")
    right.set_title("confidence histogram")
    right.legend(loc="upper left", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--rate", type=float, default=0.5, help="DropConnect rate")
    parser.add_argument("--width", type=int, default=256, help="units per hidden layer")
    parser.add_argument("--train-size", type=int, default=500, help="training examples (default 500)")
    parser.add_argument("--num-samples", type=int, default=16, help="Gaussian pairs per unit")
    parser.add_argument("--mc-samples", type=int, default=64, help="training-mode passes averaged")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 8 MC passes")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the PNG figure")
    args = parser.parse_args()
    epochs = 2 if args.quick else args.epochs
    mc_samples = 8 if args.quick else args.mc_samples

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, train_size=args.train_size, random_state=args.seed, stratify=y
    )
    print(
        f"backend: {keras.backend.backend()}; {len(x_train)} training, "
        f"{len(x_val)} validation examples"
    )

    model = build_model(args.width, args.rate, args.seed)
    keras.utils.set_random_seed(args.seed)  # the shuffled batch order
    model.fit(
        x_train, y_train,
        validation_data=(x_val, y_val),
        epochs=epochs,
        batch_size=args.batch_size,
        validation_batch_size=1024,
        verbose=2,
    )

    gaussian = with_inference(model, "gaussian", args.num_samples)

    def mc_average():
        # Each training-mode call draws the next kernel masks (and advances
        # the step counters of `model`, which is not trained further).
        total = 0.0
        for _ in range(mc_samples):
            total = total + keras.ops.convert_to_numpy(model(x_val, training=True))
        return total / mc_samples

    predictors = {
        'inference="mean"': lambda: model.predict(x_val, batch_size=1024, verbose=0),
        f'inference="gaussian" ({args.num_samples} pairs)': lambda: gaussian.predict(
            x_val, batch_size=1024, verbose=0
        ),
        f"MC average of {mc_samples} training passes": mc_average,
    }
    results = {}
    for name, predict in predictors.items():
        probs, ms = timed(predict, repeats=1 if name.startswith("MC") else 3)
        r = calibration(probs, y_val)
        r.update(ms=ms, confidence=probs.max(axis=1))
        results[name] = r

    print(
        f"\nbackend {keras.backend.backend()}, {epochs} epochs, rate {args.rate}; "
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
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
