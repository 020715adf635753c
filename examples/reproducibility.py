"""One seeded training run, the same on TensorFlow, JAX and PyTorch, and resumable.

Trains the same MLP, with `kdv.Dropout`, `kdv.DropConnectDense` and
`kdv.SeededDropout` layers, on scikit-learn's bundled digits under every
installed Keras backend, one subprocess per backend (`KERAS_BACKEND` is
read when keras is first imported), and shows:

1. Masks: the dropout and DropConnect masks of the first training step
   are byte-identical on every backend (their SHA-256 is printed).
2. Loss curves: the per-epoch training losses agree across backends to
   float32 rounding. They are not bit-identical: each backend sums its
   matrix products in its own order; the largest difference is printed.
3. Resume: training restarted from a checkpoint of the run (saved by
   `keras.callbacks.ModelCheckpoint` after each epoch) loaded with
   `keras.saving.load_model`, follows the uninterrupted run exactly: the
   layers' step counters are saved weights, so the resumed run draws the
   masks the uninterrupted one drew.

For contrast, the same model with `keras.layers.Dropout` (and plain Dense
layers) is trained the same way: its masks come from each backend's own
generator, and its step counter is not saved, so a reloaded model replays
its first masks.

Everything that could differ is fixed: the initial weights come from NumPy
(Keras' initializers draw from each backend's own generator), the data order
is fixed (`shuffle=False`) and `keras.utils.set_random_seed` is called.

Run it with any backend installed (no KERAS_BACKEND needed):

    python examples/reproducibility.py
    python examples/reproducibility.py --backends jax torch --quick
"""

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import (
    BACKENDS, EpochLog, ExampleParser, check, digits_split, import_keras, numpy_initial_weights,
    pyplot, require_extras, save_figure,
)

# Losses resumed from a checkpoint must match the uninterrupted run to this.
RESUME_TOLERANCE = 1e-6


# --------------------------------------------------------------------------
# Worker: runs in a fresh interpreter with KERAS_BACKEND set.
# --------------------------------------------------------------------------


def worker(args):
    keras = import_keras()
    import numpy as np

    import keras_dropout_variants as kdv

    backend = keras.backend.backend()
    x_train, _, y_train, _ = digits_split(args.train_size, args.seed)

    def build(ours):
        keras.utils.set_random_seed(args.seed)
        if ours:
            layers = [
                keras.layers.Dense(128, activation="relu"),
                kdv.Dropout(0.3, seed=1),
                kdv.DropConnectDense(128, rate=0.3, activation="relu", seed=2),
                kdv.SeededDropout(0.3, seed=3),
            ]
        else:
            layers = [
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dropout(0.3, seed=1),
                keras.layers.Dense(128, activation="relu"),
                keras.layers.Dropout(0.3, seed=3),
            ]
        model = keras.Sequential(
            [keras.Input((64,)), *layers, keras.layers.Dense(10, activation="softmax")]
        )
        # Initial weights from NumPy, the same on every backend: Glorot
        # uniform kernels, zero biases.
        numpy_initial_weights(model, args.seed)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
        )
        return model

    class Progress(EpochLog, keras.callbacks.Callback):
        def describe(self, logs):
            return f"loss {logs['loss']:.6f}"

    def fit(model, label, initial_epoch=0, callbacks=()):
        # Same batches, same order, on every backend.
        history = model.fit(
            x_train, y_train,
            batch_size=args.batch_size,
            initial_epoch=initial_epoch,
            epochs=args.epochs,
            shuffle=False,
            callbacks=[Progress(f"[{backend}] {label}", max(1, args.epochs // 5)), *callbacks],
            verbose=0,
        )
        return [float(v) for v in history.history["loss"]]

    def first_step_masks(model):
        """SHA-256 of each of our layers' step-0 mask (what step 1 applies)."""
        digests = {}
        for layer in model.layers:
            if isinstance(layer, kdv.SeededDropout):
                # mask_id=k is the mask the step counter draws at step k.
                ones = np.ones((args.batch_size, *layer.input.shape[1:]), "float32")
                mask = keras.ops.convert_to_numpy(layer(ones, training=True, mask_id=0)) != 0
            elif isinstance(layer, kdv.Dropout):
                shape = (args.batch_size, *layer.input.shape[1:])
                mask = keras.ops.convert_to_numpy(
                    kdv.random.keep_mask(shape, layer.rate, layer.seed, counter=0)
                )
            elif isinstance(layer, kdv.DropConnect):
                mask = keras.ops.convert_to_numpy(
                    kdv.random.keep_mask(
                        tuple(layer.layer.kernel.shape), layer.rate, layer.seed, counter=0
                    )
                )
            else:
                continue
            digests[layer.name] = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()
        return digests

    def counters(model):
        return {
            layer.name: int(keras.ops.convert_to_numpy(layer.counter))
            for layer in model.layers
            if hasattr(layer, "counter")
        }

    start = time.perf_counter()
    result = {"backend": backend, "resume_epoch": args.resume_epoch}
    for ours, key in ((True, "kdv"), (False, "keras")):
        label = "kdv" if ours else "keras.layers.Dropout"
        model = build(ours)
        if ours:
            result["masks"] = first_step_masks(model)
        # A checkpoint after every epoch, as a long run would keep.
        checkpoints = os.path.join(args.workdir, f"{backend}_{key}_{{epoch}}.keras")
        result[key] = fit(
            model, label, callbacks=[keras.callbacks.ModelCheckpoint(checkpoints)]
        )
        del model

        # Start again from the checkpoint of epoch `resume_epoch`, as after a crash.
        keras.backend.clear_session()
        # keras_dropout_variants is imported: load_model finds its layers.
        model = keras.saving.load_model(checkpoints.format(epoch=args.resume_epoch))
        if ours:
            result["counters_loaded"] = counters(model)
        # The losses of epochs resume_epoch + 1 .. epochs.
        result[key + "_resumed"] = fit(model, label + " resumed", initial_epoch=args.resume_epoch)
    result["seconds"] = time.perf_counter() - start
    with open(args.result, "w") as f:
        json.dump(result, f)


# --------------------------------------------------------------------------
# Parent: starts one worker per backend and compares their results.
# --------------------------------------------------------------------------


def max_diff(a, b):
    return max(abs(u - v) for u, v in zip(a, b))


def resume_diff(r, key):
    """Resumed epochs against the same epochs of the uninterrupted run."""
    return max_diff(r[key + "_resumed"], r[key][r["resume_epoch"]:])


def plot(results, resume_epoch, out):
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = pyplot().subplots(1, 2, figsize=(13, 7))
    reference = results[0]
    k = resume_epoch
    epochs = np.arange(1, len(reference["kdv"]) + 1)
    later = epochs[k:]  # the epochs trained again after reloading
    for i, r in enumerate(results):
        color, name = f"C{i}", r["backend"]
        # Thinner lines and markers for later backends: coinciding curves stay visible.
        left.plot(epochs, r["kdv"], color=color, linewidth=4 - 1.2 * i, alpha=0.8,
                  label=f"{name}, kdv")
        left.plot(later, r["kdv_resumed"], "o", color=color, markersize=8 - 2 * i,
                  markerfacecolor="none", label=f"{name}, kdv resumed")
        left.plot(epochs, r["keras"], ":", color=color, label=f"{name}, keras Dropout")
        left.plot(later, r["keras_resumed"], "x", color=color, markersize=5,
                  label=f"{name}, keras Dropout resumed")
        right.plot(later, np.abs(np.subtract(r["kdv_resumed"], r["kdv"][k:])), "-o",
                   color=color, markersize=3, label=f"{name}: kdv resumed vs uninterrupted")
        right.plot(later, np.abs(np.subtract(r["keras_resumed"], r["keras"][k:])), ":x",
                   color=color, label=f"{name}: keras resumed vs uninterrupted")
        if r is not reference:
            right.plot(epochs, np.abs(np.subtract(r["kdv"], reference["kdv"])), "--",
                       color=color, label=f"kdv: {name} vs {reference['backend']}")
    for ax in (left, right):
        ax.axvline(resume_epoch + 0.5, color="gray", linewidth=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    left.set_ylabel("training loss (epoch mean)")
    left.set_title(f"training loss; runs resumed from the epoch-{k} checkpoint (gray line)")
    right.set_yscale("symlog", linthresh=1e-9)  # exact zeros stay on the plot
    right.set_ylim(0, 3 * right.get_ylim()[1])  # headroom for the top markers
    right.set_ylabel("|difference in epoch loss|")
    right.set_title("differences (0 = identical)")
    for ax in (left, right):  # below the axes: the curves stay clear
        ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    fig.suptitle("Same seeds, same data order: one training run on every backend")
    fig.tight_layout()
    save_figure(fig, out)


def main():
    parser = ExampleParser(
        __doc__,
        "reproducibility",
        epochs=20,
        train_size=640,
        batch_size=64,
        quick={"epochs": 4, "train_size": 256},  # 4 epochs of 4 steps
    )
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS,
        help="backends to compare (default: every installed one)",
    )
    parser.add_argument(
        "--resume-epoch", type=int,
        help="resume from the checkpoint of this epoch (default: half way)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resume_epoch is None:
        args.resume_epoch = args.epochs // 2
    if not 0 < args.resume_epoch < args.epochs:
        parser.error("--resume-epoch must be between 0 and --epochs (exclusive)")
    if args.worker:
        return worker(args)
    require_extras()

    wanted = args.backends or BACKENDS
    backends = [b for b in wanted if importlib.util.find_spec(b) is not None]
    for b in wanted:
        if b not in backends:
            print(f"skipping {b}: not installed")
    if not backends:
        parser.error("none of the backends is installed")

    results, failed = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            print(f"\n== KERAS_BACKEND={backend} ==", flush=True)
            result = os.path.join(workdir, f"{backend}.json")
            env = dict(os.environ, KERAS_BACKEND=backend)
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF start-up logs short
            command = [
                sys.executable, os.path.abspath(__file__), "--worker",
                "--result", result, "--workdir", workdir,
                "--epochs", str(args.epochs), "--resume-epoch", str(args.resume_epoch),
                "--train-size", str(args.train_size), "--batch-size", str(args.batch_size),
                "--seed", str(args.seed),
            ]
            start = time.perf_counter()
            code = subprocess.call(command, env=env)
            if code != 0:
                print(f"worker for {backend} failed (exit {code})")
                failed.append(backend)
                continue
            with open(result) as f:
                results.append(json.load(f))
            print(f"[{backend}] done in {time.perf_counter() - start:.1f}s (incl. start-up)")
    if failed:
        sys.exit(f"the worker failed on {', '.join(failed)}: see its output above")

    ref = results[0]
    steps = -(-args.train_size // args.batch_size)
    print(
        f"\n{args.epochs} epochs of {steps} steps, "
        f"resumed from the checkpoint of epoch {args.resume_epoch}\n"
        "loss columns: max |difference| over the per-epoch training losses, against "
        f"the reference backend ({ref['backend']}) or the uninterrupted run"
    )
    header = (
        f"{'backend':<11} {'first-step masks':<17} {'final loss':>10} "
        f"{'kdv vs ref':>10} {'kdv resumed':>11} {'keras vs ref':>12} {'keras resumed':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        digest = hashlib.sha256(json.dumps(r["masks"], sort_keys=True).encode()).hexdigest()
        print(
            f"{r['backend']:<11} sha256 {digest[:10]} {r['kdv'][-1]:>10.6f} "
            f"{max_diff(r['kdv'], ref['kdv']):>10.2e} "
            f"{resume_diff(r, 'kdv'):>11.2e} "
            f"{max_diff(r['keras'], ref['keras']):>12.2e} "
            f"{resume_diff(r, 'keras'):>13.2e}"
        )

    across = max(max_diff(r["kdv"], ref["kdv"]) for r in results)
    resumed = max(resume_diff(r, "kdv") for r in results)
    if len(results) > 1:
        print(
            f"\nkdv loss curves, max |difference| across backends: {across:.2e} "
            "(float32 rounding)"
        )
    else:
        print(f"\nonly {ref['backend']} ran: no cross-backend comparison")
    print(
        f"step counters loaded with the epoch-{args.resume_epoch} checkpoint: "
        f"{ref['counters_loaded']}"
    )
    print(
        f"kdv resumed vs uninterrupted, max |difference|: {resumed:.2e} "
        f"(tolerance {RESUME_TOLERANCE:g})"
    )
    keras_across = max(max_diff(r["keras"], ref["keras"]) for r in results)
    keras_resumed = max(resume_diff(r, "keras") for r in results)
    print(
        "keras.layers.Dropout for contrast, max |difference|: "
        + (f"across backends {keras_across:.2e}, " if len(results) > 1 else "")
        + f"resumed vs uninterrupted {keras_resumed:.2e}"
    )

    plot(results, args.resume_epoch, args.out)
    if len(results) > 1:
        check(
            all(r["masks"] == ref["masks"] for r in results),
            f"first-step masks byte-identical across {', '.join(backends)}",
        )
    # After loading epoch K's checkpoint, each layer's counter is at K * steps.
    check(
        all(set(r["counters_loaded"].values()) == {args.resume_epoch * steps} for r in results),
        f"step counters restored by load_model ({args.resume_epoch} epochs of {steps} steps)",
    )
    check(
        resumed <= RESUME_TOLERANCE,
        f"kdv resumed runs follow the uninterrupted ones (within {RESUME_TOLERANCE:g})",
    )


if __name__ == "__main__":
    main()
