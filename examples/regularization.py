"""Dropout as a regularizer: four MLPs that overfit on purpose, on 8x8 digits.

Four Sequential MLPs with two wide hidden layers are trained with the same
seeds, data order and optimizer on a small training split of scikit-learn's
bundled digits (nothing is downloaded):

  none                  no dropout: free to memorize the training split
  kdv.Dropout           dropout on the inputs and after each hidden layer
  kdv.SeededDropout     the same layers and seeds as kdv.Dropout
  kdv.DropConnectDense  hidden layers that drop weights instead of units

To give the plain MLP something to memorize, a fraction of the training
labels (--label-noise, 0.2 by default) is replaced by a wrong class; the
validation labels are left clean. A model that learned the digits and
ignored the wrong labels scores 1 - label_noise on the training split.

Every model starts from the same initial weights. `SeededDropout` without a
`mask_id` draws its masks from its step counter exactly as `Dropout` does,
so those two rows train identically; its own feature is `mask_id=`.

The table gives the final train accuracy in inference mode (dropout off,
as for validation), validation accuracy and loss, the accuracy gap, the best
validation accuracy of any epoch and seconds per epoch. The figure shows the
per-epoch curves, training split (also in inference mode) beside validation
split.

Run under any backend:

    KERAS_BACKEND=jax python examples/regularization.py
    KERAS_BACKEND=torch python examples/regularization.py --quick  # smoke test
"""

import statistics

import numpy as np

from _common import (
    EpochLog, ExampleParser, check, digits_split, fit, import_keras, pyplot, save_figure,
)

MODELS = ("none", "kdv.Dropout", "kdv.SeededDropout", "kdv.DropConnectDense")

parser = ExampleParser(
    __doc__, "regularization", epochs=100, train_size=300, batch_size=32, quick={"epochs": 2}
)
parser.add_argument(
    "--label-noise", type=float, default=0.2, help="fraction of wrong training labels"
)
parser.add_argument("--width", type=int, default=512, help="units per hidden layer")
# Parsed before the slow imports: --help and usage errors answer at once.
args = parser.parse_args()
keras = import_keras()

import keras_dropout_variants as kdv  # noqa: E402


def load_data(train_size, label_noise, seed):
    """A small stratified training split with some wrong labels; clean validation."""
    x_train, x_val, y_train, y_val = digits_split(train_size, seed)
    rng = np.random.default_rng(seed)
    y_train = y_train.copy()
    wrong = rng.choice(len(y_train), size=round(label_noise * len(y_train)), replace=False)
    # Shift by 1..9 classes: every chosen label really becomes wrong.
    y_train[wrong] = (y_train[wrong] + rng.integers(1, 10, size=len(wrong))) % 10
    return x_train, y_train, x_val, y_val


def build_model(kind, width, seed):
    """A 64-width-width-10 MLP; `kind` picks the regularizer."""
    # Same global seed before every build: the Dense kernels get the same
    # initial values in all four models (our layers take explicit seeds and
    # draw nothing from the global generators).
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    if kind in ("kdv.Dropout", "kdv.SeededDropout"):
        drop = kdv.Dropout if kind == "kdv.Dropout" else kdv.SeededDropout
        layers.append(drop(0.2, seed=seed + 1))  # input dropout, as in Srivastava et al.
        for i in range(2):
            layers.append(keras.layers.Dense(width, activation="relu"))
            layers.append(drop(0.5, seed=seed + 2 + i))
    elif kind == "kdv.DropConnectDense":
        for i in range(2):
            layers.append(
                kdv.DropConnectDense(width, rate=0.5, activation="relu", seed=seed + 2 + i)
            )
    else:
        for i in range(2):
            layers.append(keras.layers.Dense(width, activation="relu"))
    layers.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(layers, name=kind.replace("kdv.", "").lower())
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class Curves(EpochLog, keras.callbacks.Callback):
    """Per-epoch inference-mode train accuracy and loss, epoch times, progress.

    `fit` reports the training accuracy of the batches as trained, with
    dropout on; the curves use inference-mode predictions on the whole
    training split instead, so both splits are measured the same way.
    """

    def __init__(self, name, x_train, y_train, log_every):
        super().__init__(f"[{name}]", log_every)
        self.x_train, self.y_train = x_train, y_train
        self.train_acc, self.train_loss = [], []

    def measure(self):
        # One compiled call on the whole split: on TensorFlow, `evaluate`
        # spends ~0.1 s a call setting up its data pipeline, 30x this.
        probs = keras.ops.convert_to_numpy(self.model.predict_on_batch(self.x_train))
        picked = probs[np.arange(len(self.y_train)), self.y_train]
        loss = float(-np.mean(np.log(np.maximum(picked, 1e-7))))  # Keras clips at 1e-7 too
        self.train_loss.append(loss)
        self.train_acc.append(float(np.mean(probs.argmax(axis=1) == self.y_train)))

    def describe(self, logs):
        return (
            f"loss (dropout on) {logs['loss']:.4f} - train acc {self.train_acc[-1]:.4f} - "
            f"val_loss {logs['val_loss']:.4f} - val acc {logs['val_accuracy']:.4f} - "
            f"{self.seconds[-1]:.2f}s"
        )


def plot(results, epochs, label_noise, title, out):
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    styles = {"kdv.SeededDropout": dict(linestyle="--", linewidth=2.5)}
    x = np.arange(1, epochs + 1)
    for name, r in results.items():
        style = {"linewidth": 1.5, **styles.get(name, {})}
        axes[0, 0].plot(x, r["train_acc"], label=name, **style)
        axes[0, 1].plot(x, r["val_acc"], label=name, **style)
        axes[1, 0].plot(x, r["train_loss"], label=name, **style)
        axes[1, 1].plot(x, r["val_loss"], label=name, **style)
    axes[0, 0].axhline(1 - label_noise, color="gray", linestyle=":", label="right labels only")
    axes[0, 0].legend(loc="lower right")
    axes[0, 0].set_title("training split (inference mode, noisy labels)")
    axes[0, 1].set_title("validation split (clean labels)")
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("cross-entropy loss")
    axes[1, 0].set_yscale("log")  # the plain MLP drives it towards 0
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def main():
    x_train, y_train, x_val, y_val = load_data(args.train_size, args.label_noise, args.seed)
    print(
        f"backend: {keras.backend.backend()}; {len(x_train)} training examples "
        f"({args.label_noise:.0%} wrong labels), {len(x_val)} validation examples"
    )
    results, initial = {}, None
    for name in MODELS:
        print(f"\n== {name} ==", flush=True)
        model = build_model(name, args.width, args.seed)
        weights = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        if initial is None:
            initial = weights
        same_start = len(weights) == len(initial) and all(
            np.array_equal(a, b) for a, b in zip(weights, initial)
        )
        curves = Curves(name, x_train, y_train, log_every=max(1, args.epochs // 10))
        history = fit(
            model, (x_train, y_train), (x_val, y_val), args, callbacks=[curves], verbose=0
        )
        results[name] = dict(
            train_acc=curves.train_acc,
            train_loss=curves.train_loss,
            val_acc=history.history["val_accuracy"],
            val_loss=history.history["val_loss"],
            # The first epoch includes tracing/compilation.
            seconds=statistics.median(curves.seconds[1:] or curves.seconds),
            same_start=same_start,
        )

    print(
        f"\nbackend {keras.backend.backend()}, {args.epochs} epochs, {len(x_train)} training "
        f"examples with {args.label_noise:.0%} wrong labels\n"
        "train acc: inference mode (dropout off) on the training split, against its labels\n"
        f"  ({1 - args.label_noise:.2f} = every wrong label ignored); gap = train acc - val acc\n"
        "s/epoch: median fit() epoch, validation included"
    )
    header = (
        f"{'model':<22} {'train acc':>9} {'val acc':>8} {'gap':>7} {'val loss':>9} "
        f"{'best val acc (epoch)':>21} {'s/epoch':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        train, val = r["train_acc"][-1], r["val_acc"][-1]
        best = int(np.argmax(r["val_acc"]))
        print(
            f"{name:<22} {train:>9.3f} {val:>8.3f} {train - val:>7.3f} "
            f"{r['val_loss'][-1]:>9.3f} {r['val_acc'][best]:>15.3f} ({best + 1:>3}) "
            f"{r['seconds']:>8.3f}"
        )

    plot(
        results,
        args.epochs,
        args.label_noise,
        f"MLP 64-{args.width}-{args.width}-10 on {len(x_train)} digits with "
        f"{args.label_noise:.0%} wrong labels ({keras.backend.backend()} backend)",
        args.out,
    )
    check(
        all(r["same_start"] for r in results.values()),
        "all models started from the same initial weights",
    )
    check(
        results["kdv.Dropout"]["val_loss"] == results["kdv.SeededDropout"]["val_loss"],
        "kdv.Dropout and kdv.SeededDropout histories identical",
    )


if __name__ == "__main__":
    main()
