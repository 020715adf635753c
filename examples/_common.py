"""What the example scripts share: options, checks, data, figures, progress.

A script imports this module from its own folder, which Python puts first on
`sys.path` when it runs `python examples/NAME.py`. Importing it imports
neither keras nor the optional packages: a script parses its options first,
so that `--help` and usage errors answer at once, then checks what it needs.
"""

import argparse
import importlib.util
import os
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
OUTPUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
# What the package's [examples] extra installs: module name -> pip name.
EXTRAS = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


class ExampleParser(argparse.ArgumentParser):
    """The options of every script that writes a figure; a script adds its own.

    `--quick`, a smoke test of a few seconds, sets the options named in
    `quick` to its values (`{"epochs": 2}`), whatever the command line says.
    """

    def __init__(self, description, name, *, epochs, train_size, batch_size, quick):
        super().__init__(
            description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        self.quick = quick
        self.add_argument("--epochs", type=int, default=epochs)
        self.add_argument(
            "--train-size",
            type=int,
            default=train_size,
            help=f"training examples (default {train_size})",
        )
        self.add_argument("--batch-size", type=int, default=batch_size)
        self.add_argument("--seed", type=int, default=0)
        smoke_test = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in quick.items())
        self.add_argument("--quick", action="store_true", help=f"smoke test: {smoke_test}")
        self.add_argument(
            "--out",
            default=os.path.join(OUTPUT_DIR, f"{name}.png"),
            help="where to write the PNG figure",
        )

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if parsed.quick:
            vars(parsed).update(self.quick)
        return parsed


def require_extras(modules=tuple(EXTRAS)):
    """Exits with what to install unless the optional `modules` are installed.

    Checked before any work: a missing package is not met as a traceback
    at the end of a run.
    """
    missing = [EXTRAS[m] for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(
            f"{os.path.basename(sys.argv[0])} needs {' and '.join(missing)}, which the "
            "package's [examples] extra installs:\n"
            '    pip install "keras-dropout-variants[examples]"\n'
            "or, in a clone of the repository:\n"
            '    pip install ".[examples]"'
        )


def import_keras(extras=tuple(EXTRAS)):
    """`keras`, once the optional modules `extras` are found (`require_extras`).

    Exits with a hint where the backend Keras is set to is not installed:
    without it, Keras fails with a bare `No module named 'tensorflow'` where
    KERAS_BACKEND is not set, TensorFlow being its default backend.
    """
    require_extras(extras)
    try:
        import keras
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in BACKENDS:
            raise
        chosen = os.environ.get("KERAS_BACKEND")
        why = (
            f"the backend KERAS_BACKEND={chosen} asks for"
            if chosen
            else "its default backend (KERAS_BACKEND is not set)"
        )
        installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
        example = installed[0] if installed else "jax"
        sys.exit(
            f"Keras could not import {missing}, {why}. Set KERAS_BACKEND=jax|torch|tensorflow "
            f"to an installed backend (installed here: {', '.join(installed) or 'none'}), "
            f"e.g. KERAS_BACKEND={example} python {sys.argv[0]}"
        )
    return keras


def digits_split(train_size, seed, shape=(64,)):
    """scikit-learn's bundled 8x8 digits in [0, 1], as `train_test_split` returns them.

    A stratified split: `x_train, x_val, y_train, y_val`, each image of
    `shape`. Nothing is downloaded.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, *shape)
    return train_test_split(x, y, train_size=train_size, random_state=seed, stratify=y)


def fit(model, train, val, args, **kwargs):
    """`model.fit(*train)` for the options' epochs and batch size, validated on `val`.

    Seeded first: every model fitted with the same `args.seed` sees the
    same shuffled batches in the same order.
    """
    import keras

    keras.utils.set_random_seed(args.seed)
    return model.fit(
        *train,
        validation_data=val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_batch_size=1024,
        **kwargs,
    )


def pyplot():
    """matplotlib.pyplot drawing to files only (Agg): no display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out, **savefig_kwargs):
    """Writes `fig` to `out`, creating its folder, closes it and says where."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110, **savefig_kwargs)
    pyplot().close(fig)
    print(f"figure: {out}")


def grid_image(blocks, gap=1):
    """(rows, columns, h, w) 2-D maps as one image, in a grid separated by
    gray (0.5) lines."""
    import numpy as np

    rows, columns, h, w = blocks.shape
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), 0.5)
    for r in range(rows):
        for c in range(columns):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = blocks[r, c]
    return out


def plot_val_accuracy(ax, histories, legend_title):
    """Validation accuracy per epoch of each run: `histories` maps a name to
    its `fit()` History's `history` dict."""
    import numpy as np

    for name, history in histories.items():
        epochs = np.arange(1, len(history["val_accuracy"]) + 1)
        ax.plot(epochs, history["val_accuracy"], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(title=legend_title, loc="lower right")


def reliability_diagram(ax, curves, title, legend_loc):
    """Accuracy against confidence per bin of `calibration()` results, a
    marker's size the examples in its bin: `curves` holds (label, result,
    color, line style) tuples."""
    import numpy as np

    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    for label, result, color, style in curves:
        conf, acc, count = np.array(result["bins"]).T
        ax.plot(conf, acc, style, color=color, label=label)
        ax.scatter(conf, acc, s=10 + 120 * count / count.max(), color=color)
    ax.set_xlabel("confidence (mean max probability in the bin)")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(loc=legend_loc, fontsize=9)


def check(ok, claim):
    """Prints `claim` as checked, or exits with status 1 saying it does not hold."""
    if not ok:
        sys.exit(f"check failed: {claim}")
    print(f"checked: {claim}")


class EpochLog:
    """Times each `fit()` epoch and prints a progress line every `log_every` epochs.

    A mixin for keras callbacks, `class Log(EpochLog, keras.callbacks.Callback)`:
    this module does not import keras (see above). `seconds` lists the epoch
    times. Subclasses change `describe`, the line after `epoch I/N - `, and
    `measure`, what else to record at the end of each epoch, off the clock.
    """

    def __init__(self, prefix, log_every):
        super().__init__()
        self.prefix, self.log_every, self.seconds = prefix, log_every, []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # One fit() epoch: its training steps and its validation pass.
        self.seconds.append(time.perf_counter() - self._start)
        self.measure()
        epochs = self.params["epochs"]
        if (epoch + 1) % self.log_every == 0 or epoch + 1 == epochs:
            print(f"{self.prefix} epoch {epoch + 1}/{epochs} - {self.describe(logs)}", flush=True)

    def measure(self):
        """Nothing to record by default."""

    def describe(self, logs):
        return (
            f"loss (dropout on) {logs['loss']:.4f} - val_loss {logs['val_loss']:.4f} - "
            f"val acc {logs['val_accuracy']:.4f} - {self.seconds[-1]:.2f}s"
        )


def calibration(probs, labels, bins):
    """Accuracy, NLL, the expected calibration error over `bins` equal-width
    confidence bins, and each bin's (confidence, accuracy, count) for a
    reliability diagram, of class probabilities `probs` (N, classes)."""
    import numpy as np

    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            acc, conf = correct[in_bin].mean(), confidence[in_bin].mean()
            ece += in_bin.mean() * abs(acc - conf)
            rows.append((conf, acc, int(in_bin.sum())))
    return dict(accuracy=float(correct.mean()), nll=nll, ece=float(ece), bins=rows)


def numpy_initial_weights(model, seed):
    """Sets `model`'s trainable weights from NumPy: Glorot-uniform kernels
    (2-D weights) and zero biases. Keras' initializers draw from each
    backend's own generator; these are the same on every backend."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        shape = tuple(variable.shape)
        if len(shape) == 2:
            limit = np.sqrt(6.0 / sum(shape))
            variable.assign(rng.uniform(-limit, limit, size=shape).astype("float32"))
        else:
            variable.assign(np.zeros(shape, "float32"))
