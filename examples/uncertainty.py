"""Monte-Carlo dropout uncertainty with `kdv.mc_predict`, in and out of distribution.

A network trained with dropout can be asked for a distribution rather than
one answer (Gal and Ghahramani, 2016): keep the dropout masks on at
inference, run `samples` stochastic passes and average the softmax outputs.
`kdv.mc_predict(model, x, samples, seed)` does this for the package's
layers only (BatchNormalization stays in inference mode) and returns

  mean                 the predictive distribution (averaged probabilities)
  predictive_entropy   H[mean], in nats: total uncertainty
  mutual_information   H[mean] - mean_s H[p_s] (BALD), in nats: how much
                       the samples disagree, the model's own uncertainty

Sample s of input n uses the same masks whatever the batch size and on
every backend, so the numbers below are reproducible.

The script trains an MLP 64-256-BN-256-10 with two `kdv.Dropout` layers on
scikit-learn's bundled 8x8 digits, then compares the deterministic
prediction (`model.predict`, dropout off) with `mc_predict`'s mean:

  - on the validation digits: accuracy, negative log-likelihood (NLL) and
    expected calibration error (ECE, 15 equal-width confidence bins);
  - on the validation digits under heavy Gaussian pixel noise (clipped to
    [0, 1]; the labels still hold): the same, under a shift;
  - on the validation digits under noise and rotated by 90 and by 180
    degrees: how well the predictive entropy (deterministic and MC) and the
    mutual information tell each set apart from the validation digits
    (AUROC: 0.5 is chance, 1.0 a perfect separation).

In a full run, rotated by 90 degrees every digit becomes a wide stroke
that the network calls a "4" with near certainty (the table's "top
class"): lower entropy than the validation digits, and an AUROC below 0.5.
The samples of a dropout network do not disagree on every input far from
its data; MC dropout narrows that gap, it does not close it.

The figure shows the entropy histograms in and out of distribution, a
reliability diagram of both predictions (validation and noisy digits) and
the AUROCs.

Run under any backend:

    KERAS_BACKEND=jax python examples/uncertainty.py
    KERAS_BACKEND=torch python examples/uncertainty.py --quick
"""

import time

import numpy as np

from _common import (
    EpochLog, ExampleParser, calibration, check, digits_split, fit, import_keras, pyplot,
    reliability_diagram, save_figure,
)

BINS = 15  # ECE and reliability diagram: equal-width confidence bins

parser = ExampleParser(
    __doc__,
    "uncertainty",
    epochs=40,
    train_size=1000,
    batch_size=32,
    quick={"epochs": 3, "mc_samples": 10},
)
parser.add_argument("--rate", type=float, default=0.3, help="dropout rate")
parser.add_argument("--width", type=int, default=256, help="units per hidden layer")
parser.add_argument("--mc-samples", type=int, default=50, help="Monte-Carlo samples")
parser.add_argument("--noise", type=float, default=0.5, help="stddev of the pixel noise (shift)")
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras()

import keras_dropout_variants as kdv  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402


def build_model(width, rate, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(width, activation="relu"),
            # In mc_predict it normalizes with its moving statistics, as in
            # predict(): only the package's layers are sampled.
            keras.layers.BatchNormalization(momentum=0.9),  # few steps: quick statistics
            kdv.Dropout(rate, seed=seed + 1),
            keras.layers.Dense(width, activation="relu"),
            kdv.Dropout(rate, seed=seed + 2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class Progress(EpochLog, keras.callbacks.Callback):
    """fit() progress lines and epoch times (`EpochLog`'s defaults)."""


def shifted(x, noise, seed):
    """The digits rotated by 90 and by 180 degrees, and under Gaussian pixel noise."""
    images = x.reshape(-1, 8, 8)
    rng = np.random.default_rng(seed)
    sets = {
        f"rotated {90 * k}": np.rot90(images, k=k, axes=(1, 2)).reshape(len(x), 64) for k in (1, 2)
    }
    sets[f"noise {noise:g}"] = np.clip(x + rng.normal(0.0, noise, x.shape), 0.0, 1.0)
    return {name: v.astype("float32") for name, v in sets.items()}


def entropy(p):
    """-sum_c p_c log p_c, in nats."""
    return -np.sum(p * np.log(np.clip(p, 1e-12, None)), axis=-1)


def auroc(in_scores, out_scores):
    """AUROC of telling out-of-distribution inputs (higher score) from the others."""
    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def plot(scores, results, aurocs, title, out):
    """Entropy histograms (deterministic, MC), reliability diagram, AUROC bars."""
    fig, axes = pyplot().subplots(2, 2, figsize=(13, 9.5))
    hist_axes = {"deterministic": axes[0, 0], "MC dropout": axes[0, 1]}
    top = max(s["entropy"][name].max() for s in scores.values() for name in s["entropy"])
    edges = np.linspace(0.0, max(top, 1e-3) * 1.02, 31)
    for method, ax in hist_axes.items():
        for i, (name, s) in enumerate(scores[method]["entropy"].items()):
            ax.hist(s, bins=edges, histtype="step" if i else "stepfilled", alpha=1 if i else 0.35,
                    linewidth=1.8, color=f"C{i}", label=f"{name} (mean {s.mean():.2f})")
        ax.set_xlabel("predictive entropy (nats; max ln 10 = 2.30)")
        ax.set_ylabel("inputs (log scale)")
        ax.set_yscale("log")
        ax.set_title(f"{method}: predictive entropy")
        ax.legend(fontsize=9)

    curves = [
        (f"{method}, {name} (ECE {r['ece']:.3f})", r, f"C{i}", style)
        for i, (method, by_set) in enumerate(results.items())
        for (name, r), style in zip(by_set.items(), ("-", "--"))
    ]
    diagram = f"reliability diagram ({BINS} bins; marker size: inputs in the bin)"
    reliability_diagram(axes[1, 0], curves, diagram, "upper left")

    ax = axes[1, 1]
    shifts = list(aurocs)
    kinds = list(aurocs[shifts[0]])
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        values = [aurocs[shift][kind] for shift in shifts]
        positions = np.arange(len(shifts)) + (j - (len(kinds) - 1) / 2) * width
        bars = ax.bar(positions, values, width, color=f"C{j + 2}", label=f"by {kind}")
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.axhline(0.5, color="gray", linestyle=":", label="chance")
    ax.set_xticks(np.arange(len(shifts)), [f"validation vs {s}" for s in shifts])
    ax.set_ylim(0.0, 1.3)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("AUROC")
    ax.set_title("AUROC of telling shifted inputs from validation digits, by score")
    ax.legend(loc="upper left", ncol=2, fontsize=9)
    for ax in axes.flat:
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
    progress = Progress("[fit]", log_every=max(1, args.epochs // 5))
    fit(model, (x_train, y_train), (x_val, y_val), args, callbacks=[progress], verbose=0)

    inputs = {"validation": x_val, **shifted(x_val, args.noise, args.seed + 10)}
    deterministic, mc = {}, {}
    seconds = {"deterministic": 0.0, "MC dropout": 0.0}
    for name, x in inputs.items():
        start = time.perf_counter()
        deterministic[name] = model.predict(x, batch_size=1024, verbose=0)
        seconds["deterministic"] += time.perf_counter() - start
        start = time.perf_counter()
        # Sample s of digit n: the same masks whatever the batching and backend.
        # One batch of the whole set, cut into passes of at most max_rows
        # rows: few distinct shapes, and the mask kernel compiles per size.
        mc[name] = kdv.mc_predict(model, x, samples=args.mc_samples, batch_size=len(x), seed=args.seed)
        seconds["MC dropout"] += time.perf_counter() - start

    scores = {
        "deterministic": {"entropy": {n: entropy(p) for n, p in deterministic.items()}},
        "MC dropout": {
            "entropy": {n: m.predictive_entropy for n, m in mc.items()},
            "mutual information": {n: m.mutual_information for n, m in mc.items()},
        },
    }
    shifts = [n for n in inputs if n != "validation"]
    noisy = shifts[-1]  # the labels still hold under noise, not under rotation
    results = {
        method: {name: calibration(probs[name], y_val, BINS) for name in ("validation", noisy)}
        for method, probs in (
            ("deterministic", deterministic),
            ("MC dropout", {n: m.mean for n, m in mc.items()}),
        )
    }
    aurocs = {
        shift: {
            f"{method} {kind}": auroc(values["validation"], values[shift])
            for method, by_kind in scores.items()
            for kind, values in by_kind.items()
        }
        for shift in shifts
    }

    print(
        f"\nbackend {keras.backend.backend()}, {args.epochs} epochs, rate {args.rate}, "
        f"{args.mc_samples} MC samples; {len(x_val)} validation digits, and the same "
        f"under pixel noise of stddev {args.noise:g} (noisy)\n"
        f"lower NLL and ECE ({BINS} bins) are better; s: predicting the {len(inputs)} input sets"
    )
    header = (f"{'prediction':<14} {'val acc':>7} {'NLL':>7} {'ECE':>7} "
              f"{'noisy acc':>9} {'NLL':>7} {'ECE':>7} {'s':>6}")
    print(header)
    print("-" * len(header))
    for method, r in results.items():
        v, n = r["validation"], r[noisy]
        print(f"{method:<14} {v['accuracy']:>7.3f} {v['nll']:>7.3f} {v['ece']:>7.3f} "
              f"{n['accuracy']:>9.3f} {n['nll']:>7.3f} {n['ece']:>7.3f} {seconds[method]:>6.2f}")

    print(
        "\nmean scores in nats (H: predictive entropy, MI: mutual information) and AUROC of "
        "telling\neach set from the validation digits by them (0.5: chance, 1: separated); "
        "top class:\nthe deterministic prediction's most frequent class and its share"
    )
    names = {"deterministic entropy": "H det", "MC dropout entropy": "H MC",
             "MC dropout mutual information": "MI MC"}
    header = (f"{'inputs':<14}" + "".join(f" {v:>7}" for v in names.values()) + "  AUROC:"
              + "".join(f" {v:>7}" for v in names.values()) + f" {'top class':>10}")
    print(header)
    print("-" * len(header))
    for name in inputs:
        means = [scores["deterministic"]["entropy"][name], scores["MC dropout"]["entropy"][name],
                 scores["MC dropout"]["mutual information"][name]]
        separated = [f"{aurocs[name][k]:>7.3f}" if name in aurocs else f"{'-':>7}" for k in names]
        counts = np.bincount(deterministic[name].argmax(axis=1), minlength=10)
        top = f"{counts.argmax()} ({counts.max() / counts.sum():.0%})"
        print(f"{name:<14}" + "".join(f" {m.mean():>7.3f}" for m in means) + "       "
              + "".join(f" {a}" for a in separated) + f" {top:>10}")

    plot(
        scores,
        results,
        aurocs,
        f"MLP 64-{args.width}-BN-{args.width}-10 with kdv.Dropout({args.rate}), "
        f"{len(x_train)} training digits, {args.mc_samples} MC samples "
        f"({keras.backend.backend()} backend)",
        args.out,
    )

    # The script's own claims, robust to a short run.
    means = mc["validation"].mean
    check(np.allclose(means.sum(axis=1), 1.0, atol=1e-4), "MC mean probabilities sum to 1")
    info = np.concatenate([m.mutual_information for m in mc.values()])
    total = np.concatenate([m.predictive_entropy for m in mc.values()])
    check(np.all(info >= 0) and np.all(info <= total + 1e-6),
          "0 <= mutual information <= predictive entropy")
    few, k = x_val[:6], args.mc_samples
    weights = [w.copy() for w in model.get_weights()]
    one = kdv.mc_predict(model, few, samples=k, batch_size=1, seed=args.seed)
    whole = kdv.mc_predict(model, few, samples=k, batch_size=len(few), seed=args.seed)
    apart = kdv.mc_predict(model, few, samples=k, batch_size=len(few), seed=args.seed, max_rows=1)
    check(np.allclose(one.mean, whole.mean, atol=1e-5) and np.allclose(one.mean, apart.mean, atol=1e-5),
          "mc_predict gives the same mean with batch_size 1 and len(x), one sample per pass or all")
    check(np.allclose(one.mean, mc["validation"].mean[:len(few)], atol=1e-5),
          f"the first {len(few)} digits get the same MC mean alone as in the whole set")
    check(all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights())),
          "mc_predict leaves the weights, BatchNorm's moving statistics included, unchanged")
    again = model.predict(x_val, batch_size=1024, verbose=0)
    check(np.allclose(again, deterministic["validation"], atol=1e-6),
          "predict() after mc_predict gives the same probabilities (dropout off)")
    spread = float(mc["validation"].variance.max())
    check(spread > 0, f"the MC samples differ (largest variance of a probability {spread:.3g})")


if __name__ == "__main__":
    main()
