"""Data-parallel training that does not depend on the number of replicas.

Trains the same small MLP on scikit-learn's bundled digits (nothing is
downloaded) on 1, 2 and 4 replicas of the data-parallel engine of the
Keras backend (`KERAS_BACKEND`; `--backends` may name several):

  tensorflow  `tf.distribute.MirroredStrategy` over N logical CPU devices,
              trained by `model.fit`
  jax         `keras.distribution.DataParallel` over N host devices forced
              by XLA_FLAGS=--xla_force_host_platform_device_count=N, trained
              by `model.fit`
  torch       N `torch.distributed` processes joined in a gloo group on this
              machine, trained by a manual loop (Keras has no distribution
              API for torch): each rank's mean loss times its share of the
              global batch, `backward()`, gradients all-reduced (summed),
              an SGD step

1 replica is one device with no distribution engine at all: the reference.
Each replica count runs in a worker process of its own (TensorFlow fixes
its devices, JAX its device count, when it starts; torch needs one process
per rank).

Two models are trained each time, from the same NumPy initial weights,
seeds and data order (`shuffle=False`), with plain SGD:

  kdv.Dropout           kdv.Dropout, kdv.DropConnectDense (one weight mask
                        per example) and kdv.Dropout after a Dense layer
  keras.layers.Dropout  keras.layers.Dropout and keras.layers.Dense in the
                        same places

Under data parallelism the package's rule holds: the mask a replica applies
to its rows is exactly those rows of the mask one device draws for the
global batch. So the masks, and with them training, do not depend on the
number of replicas: the weights after training equal the one-device weights
up to float32 rounding (the gradients are summed in another order).

`keras.layers.Dropout` draws from the backend's own generator. Under
MirroredStrategy every replica draws the same mask for its own shard
(keras-team/keras#20611), and under torch.distributed every rank does too:
training changes with the replica count. What it does under JAX's
DataParallel is measured, not assumed.

The table gives, per model and replica count: whether replicas 0 and 1 drew
the same keep pattern for their shards in the first training step (for the
first dropout layer, whose mask is drawn by a copy of it called once on a
batch of ones inside the engine, as the first step calls it), whether the
replicas' first-step masks concatenated equal the 1-replica mask, the
largest difference of any weight from the 1-replica weights after
training, and the last epoch's training loss. The global batch (64 by
default) is split evenly: whole batches only, as Keras averages the
replicas' mean losses, which weighs the rows of an uneven last batch
differently from one device, with or without dropout.

    KERAS_BACKEND=tensorflow python examples/distributed.py
    python examples/distributed.py --backends jax torch --quick
"""

import argparse
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

from _common import (
    BACKENDS, EpochLog, ExampleParser, check, digits_split, import_keras, numpy_initial_weights,
    pyplot, require_extras, save_figure,
)

REPLICAS = (1, 2, 4)
FAMILIES = ("kdv.Dropout", "keras.layers.Dropout")
ENGINES = {
    "tensorflow": "tf.distribute.MirroredStrategy, N logical CPU devices, model.fit",
    "jax": "keras.distribution.DataParallel, N forced host devices, model.fit",
    "torch": "torch.distributed, N gloo processes, manual SGD loop",
}
RATE = 0.3
LEARNING_RATE = 0.1
HIDDEN = 128  # units of the first hidden layer: the first dropout's width
# kdv weights on N replicas must match the 1-replica weights to this.
TOLERANCE = 1e-4
WORKER_TIMEOUT = 900  # seconds: a rank left waiting in a collective fails


# --------------------------------------------------------------------------
# Worker: one replica count (torch: one rank) in a fresh interpreter.
# --------------------------------------------------------------------------


def worker(args):
    backend = os.environ.get("KERAS_BACKEND", "")
    n = args.replicas
    # Every replica count on the CPU, the reference included: a GPU would
    # round the reference's matmuls differently.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if backend == "jax":
        os.environ["JAX_PLATFORMS"] = "cpu"
        if n > 1:
            # Read when JAX creates its CPU client: before keras imports jax.
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (
                f"{flags} --xla_force_host_platform_device_count={n}".strip()
            )
    if backend == "torch":
        # gloo finds its peers through the hostname's address, which on some
        # hosts is unreachable; every rank runs on this machine.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    keras = import_keras(extras=("sklearn",))
    import numpy as np

    import keras_dropout_variants as kdv

    backend = keras.backend.backend()
    engine = {"tensorflow": TensorFlowEngine, "jax": JaxEngine, "torch": TorchEngine}[backend]
    engine = engine(keras, n, args)
    x_train, _, y_train, _ = digits_split(args.train_size, args.seed)
    y_train = y_train.astype("int32")

    def build(family):
        keras.utils.set_random_seed(args.seed)
        if family == "kdv.Dropout":
            layers = [
                keras.layers.Dense(HIDDEN, activation="relu"),
                kdv.Dropout(RATE, seed=1),
                kdv.DropConnectDense(64, rate=RATE, activation="relu", seed=2,
                                     mask_per="example"),
                kdv.Dropout(RATE, seed=3),
            ]
        else:
            layers = [
                keras.layers.Dense(HIDDEN, activation="relu"),
                keras.layers.Dropout(RATE, seed=1),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dropout(RATE, seed=3),
            ]
        model = keras.Sequential(
            [keras.Input((64,)), *layers, keras.layers.Dense(10, activation="softmax")]
        )
        # Initial weights from NumPy, the same for every replica count and
        # backend: Glorot uniform kernels, zero biases.
        numpy_initial_weights(model, args.seed)
        return model

    class Progress(EpochLog, keras.callbacks.Callback):
        def describe(self, logs):
            return f"loss {logs['loss']:.6f} - {self.seconds[-1]:.2f}s"

    result = {"backend": backend, "replicas": n, "rank": args.rank, "families": {}}
    where = f"{n} replica" + "s" * (n > 1)
    for family in FAMILIES:
        label = f"[{backend}, {where}] {family}"
        with engine.scope():
            model = build(family)
            # A copy of the first dropout layer (same class, rate, seed):
            # its first call draws what the model's first step draws.
            first = model.layers[1]
            probe = type(first)(first.rate, seed=first.seed)
            masks = engine.first_masks(probe, (args.batch_size, HIDDEN))
            losses = engine.train(model, x_train, y_train, label, Progress)
        weights = [np.array(keras.ops.convert_to_numpy(v)) for v in model.trainable_weights]
        result["families"][family] = {"masks": masks, "weights": weights, "losses": losses}
    with open(args.result, "wb") as f:
        pickle.dump(result, f)
    engine.close()


class Engine:
    """One device, no distribution engine: the reference."""

    def __init__(self, keras, n, args):
        self.keras, self.n, self.args = keras, n, args

    def scope(self):
        import contextlib

        return contextlib.nullcontext()

    def first_masks(self, probe, shape):
        """Per replica (this process's only), the probe's keep mask for a
        global batch of ones of `shape`."""
        import numpy as np

        out = probe(np.ones(shape, "float32"), training=True)
        return [np.array(self.keras.ops.convert_to_numpy(out)) != 0]

    def train(self, model, x, y, label, progress):
        """The epochs' losses of `model.fit` on the global batches."""
        model.compile(
            optimizer=self.keras.optimizers.SGD(LEARNING_RATE),
            loss="sparse_categorical_crossentropy",
        )
        history = model.fit(
            x, y, batch_size=self.args.batch_size, epochs=self.args.epochs, shuffle=False,
            callbacks=[progress(label, max(1, self.args.epochs // 5))], verbose=0,
        )
        return [float(v) for v in history.history["loss"]]

    def close(self):
        pass


class TensorFlowEngine(Engine):
    """MirroredStrategy over `n` logical CPU devices."""

    def __init__(self, keras, n, args):
        super().__init__(keras, n, args)
        self.strategy = None
        if n > 1:
            import tensorflow as tf

            # Before TensorFlow's runtime starts (importing keras does not
            # start it): one process, one set of devices.
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * n
            )
            self.strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])

    def scope(self):
        return self.strategy.scope() if self.strategy else super().scope()

    def first_masks(self, probe, shape):
        if self.strategy is None:
            return super().first_masks(probe, shape)
        import numpy as np
        import tensorflow as tf

        strategy = self.strategy
        rows = (shape[0] // self.n, *shape[1:])
        ones = strategy.experimental_distribute_values_from_function(lambda ctx: tf.ones(rows))
        # As fit's train step calls the layer: in each replica's context.
        step = tf.function(lambda v: strategy.run(lambda r: probe(r, training=True), (v,)))
        parts = strategy.experimental_local_results(step(ones))
        return [p.numpy() != 0 for p in parts]


class JaxEngine(Engine):
    """keras.distribution.DataParallel over `n` forced host devices."""

    def __init__(self, keras, n, args):
        super().__init__(keras, n, args)
        self.distribution = None
        if n > 1:
            import jax

            if jax.device_count() < n:
                sys.exit(f"JAX has {jax.device_count()} devices, {n} were asked for")
            self.distribution = keras.distribution.DataParallel(devices=jax.devices()[:n])

    def scope(self):
        return self.distribution.scope() if self.distribution else super().scope()

    def first_masks(self, probe, shape):
        if self.distribution is None:
            return super().first_masks(probe, shape)
        import jax
        import numpy as np

        with self.distribution.scope():
            # The global batch laid out over the devices as fit lays it out.
            layout = self.distribution.get_data_layout(shape).backend_layout
            ones = jax.make_array_from_process_local_data(
                layout, np.ones(shape, "float32"), shape
            )
            trainable = [v.value for v in probe.trainable_variables]
            non_trainable = [v.value for v in probe.non_trainable_variables]

            # As fit's train step calls the layer: one jitted global program.
            @jax.jit
            def step(trainable, non_trainable, x):
                return probe.stateless_call(trainable, non_trainable, x, training=True)[0]

            out = step(trainable, non_trainable, ones)
        # Each device's shard, in row order: what each replica applied.
        shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start or 0)
        return [np.asarray(s.data) != 0 for s in shards]


class TorchEngine(Engine):
    """Rank `args.rank` of `n` torch.distributed processes (gloo)."""

    def __init__(self, keras, n, args):
        super().__init__(keras, n, args)
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)  # up to 4 ranks share the cores
        self.torch, self.dist, self.rank = torch, None, args.rank
        if n > 1:
            # A file rendezvous: no port to pick, so no race for a free one.
            dist.init_process_group(
                "gloo", init_method=f"file://{args.workdir}/rendezvous_{n}",
                rank=args.rank, world_size=n,
            )
            self.dist = dist

    def first_masks(self, probe, shape):
        # This rank's rows only: every rank calls the layer together.
        return super().first_masks(probe, (shape[0] // self.n, *shape[1:]))

    def train(self, model, x, y, label, progress):
        keras, torch, dist = self.keras, self.torch, self.dist
        args = self.args
        batch, rows = args.batch_size, args.batch_size // self.n
        steps = len(x) // batch
        variables = model.trainable_weights
        log_every = max(1, args.epochs // 5)
        losses = []
        for epoch in range(args.epochs):
            began, total = time.perf_counter(), 0.0
            for step in range(steps):
                first = step * batch + self.rank * rows  # this rank's rows of the batch
                xb = torch.as_tensor(x[first:first + rows])
                yb = torch.as_tensor(y[first:first + rows])
                for v in variables:
                    v.value.grad = None
                predictions = model(xb, training=True)
                mean = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(yb, predictions))
                # This rank's mean times its share: summed over the ranks,
                # the mean over the global batch.
                loss = mean * (rows / batch)
                loss.backward()
                with torch.no_grad():
                    loss = loss.detach().clone()
                    if dist:
                        dist.all_reduce(loss, op=dist.ReduceOp.SUM)
                    total += float(loss)
                    for v in variables:
                        grad = v.value.grad
                        if dist:
                            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
                        v.assign(v.value - LEARNING_RATE * grad)
            losses.append(total / steps)
            if self.rank == 0 and ((epoch + 1) % log_every == 0 or epoch + 1 == args.epochs):
                print(
                    f"{label} epoch {epoch + 1}/{args.epochs} - loss {losses[-1]:.6f} - "
                    f"{time.perf_counter() - began:.2f}s",
                    flush=True,
                )
        return losses

    def close(self):
        if self.dist:
            self.dist.destroy_process_group()


# --------------------------------------------------------------------------
# Parent: starts the workers of each backend and compares their results.
# --------------------------------------------------------------------------


def configured_backend():
    """The backend Keras will use, found as Keras finds it, without
    importing keras: KERAS_BACKEND, else keras.json, else TensorFlow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def run_workers(backend, n, args, workdir):
    """The results of the worker(s) for `n` replicas (torch: one per rank),
    or None if one failed."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF start-up logs short
    ranks = n if backend == "torch" else 1
    results = [os.path.join(workdir, f"{backend}_{n}_{rank}.pkl") for rank in range(ranks)]
    processes = [
        subprocess.Popen(
            [
                sys.executable, os.path.abspath(__file__), "--worker",
                "--replicas", str(n), "--rank", str(rank),
                "--result", results[rank], "--workdir", workdir,
                "--epochs", str(args.epochs), "--train-size", str(args.train_size),
                "--batch-size", str(args.batch_size), "--seed", str(args.seed),
            ],
            env=env,
        )
        for rank in range(ranks)
    ]
    # Until all succeed, or one fails: the others may then wait forever in
    # a collective, and are stopped.
    deadline = time.monotonic() + WORKER_TIMEOUT
    failure = None
    while failure is None:
        codes = [p.poll() for p in processes]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            failure = "worker {} exited {}".format(*failed[0])
        elif all(code == 0 for code in codes):
            break
        elif time.monotonic() > deadline:
            failure = f"timed out after {WORKER_TIMEOUT} s"
        else:
            time.sleep(0.2)
    if failure:
        print(f"{backend}, {n} replicas: {failure}")
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        return None
    loaded = []
    for path in results:
        with open(path, "rb") as f:
            loaded.append(pickle.load(f))
    return merge(loaded)


def merge(ranks):
    """One result from torch's per-rank results: the ranks' masks in rank
    order, rank 0's weights and losses (every rank must hold the same)."""
    import numpy as np

    merged = ranks[0]
    for family, value in merged["families"].items():
        for other in ranks[1:]:
            theirs = other["families"][family]
            value["masks"] = value["masks"] + theirs["masks"]
            if not all(np.array_equal(a, b) for a, b in zip(value["weights"], theirs["weights"])):
                sys.exit(f"{family}: the ranks' weights differ after training")
    return merged


def compare(results):
    """{family: [row per replica count]} against the 1-replica result."""
    import numpy as np

    reference = results[1]["families"]
    table = {}
    for family in FAMILIES:
        one_device = np.concatenate(reference[family]["masks"])
        rows = []
        for n, result in sorted(results.items()):
            r = result["families"][family]
            masks = r["masks"]
            rows.append({
                "replicas": n,
                "identical": None if n == 1 else bool(np.array_equal(masks[0], masks[1])),
                "one_device": bool(np.array_equal(np.concatenate(masks), one_device)),
                "weight_diff": max(
                    float(np.max(np.abs(w - w1)))
                    for w, w1 in zip(r["weights"], reference[family]["weights"])
                ),
                "loss": r["losses"][-1],
                "masks": masks,
            })
        table[family] = rows
    return table


def print_table(backend, table):
    yes_no = {None: "-", True: "yes", False: "no"}
    print(f"\n{backend}: {ENGINES[backend]}")
    header = (
        f"{'model':<21} {'replicas':>8} {'replica masks identical':>23} "
        f"{'= one-device masks':>18} {'max |w - w(1 replica)|':>22} {'final loss':>10}"
    )
    print(header)
    print("-" * len(header))
    for family, rows in table.items():
        for row in rows:
            print(
                f"{family:<21} {row['replicas']:>8} {yes_no[row['identical']]:>23} "
                f"{yes_no[row['one_device']]:>18} {row['weight_diff']:>22.1e} "
                f"{row['loss']:>10.6f}"
            )


def plot(tables, out):
    import numpy as np

    backends = list(tables)
    plt = pyplot()
    fig = plt.figure(figsize=(15, 3.4 * len(backends) + 0.8))
    grid = fig.add_gridspec(len(backends), 5, width_ratios=[2.2, 1, 1, 1, 1])
    floor = 1e-10  # exact zeros drawn at the floor, labelled 0
    for i, backend in enumerate(backends):
        table = tables[backend]
        ax = fig.add_subplot(grid[i, 0])
        counts = [row["replicas"] for row in table[FAMILIES[0]] if row["replicas"] > 1]
        x = np.arange(len(counts))
        for j, family in enumerate(FAMILIES):
            diffs = [row["weight_diff"] for row in table[family] if row["replicas"] > 1]
            bars = ax.bar(x + (j - 0.5) * 0.38, [max(d, floor) for d in diffs], 0.38,
                          color=f"C{j}", label=family)
            for bar, d in zip(bars, diffs):
                ax.annotate(f"{d:.1e}" if d else "0", (bar.get_x() + bar.get_width() / 2,
                            bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.axhline(TOLERANCE, color="gray", linestyle="--", linewidth=1,
                   label=f"kdv tolerance {TOLERANCE:g}")
        ax.set_yscale("log")
        ax.set_ylim(floor, 1e3)  # headroom for the legend
        ax.set_xticks(x, [f"{n} replicas" for n in counts])
        ax.set_ylabel("max |w - w(1 replica)|")
        ax.set_title(f"{backend}: weights after training vs 1 replica", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", ncol=2)
        # The first-step masks of replicas 0 and 1 on 2 replicas.
        two = {f: next(r for r in table[f] if r["replicas"] == 2) for f in FAMILIES}
        rows = min(16, two[FAMILIES[0]]["masks"][0].shape[0])
        for j, family in enumerate(FAMILIES):
            masks = two[family]["masks"]
            for k in range(2):
                ax = fig.add_subplot(grid[i, 1 + 2 * j + k])
                ax.imshow(masks[k][:rows, :64], cmap="gray_r", vmin=0, vmax=1,
                          interpolation="nearest", aspect="auto")
                first = k * masks[0].shape[0]
                same = "\n(the same as replica 0)" if k and two[family]["identical"] else ""
                ax.set_title(f"{family}\nreplica {k}, global rows {first}-{first + rows - 1}"
                             f"{same}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("Data parallelism on 2 replicas: first-step keep masks (black = kept, "
                 "64 units) and weight drift with the replica count")
    fig.tight_layout()
    save_figure(fig, out)


def main():
    parser = ExampleParser(
        __doc__,
        "distributed",
        epochs=10,
        train_size=1024,
        batch_size=64,
        quick={"epochs": 2, "train_size": 256},  # 2 epochs of 4 steps
    )
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS,
        help="backends to run (default: the one Keras uses, KERAS_BACKEND)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=".", help=argparse.SUPPRESS)
    args = parser.parse_args()
    largest = max(REPLICAS)
    if args.batch_size % largest:
        parser.error(f"--batch-size must split evenly over {largest} replicas")
    if args.train_size % args.batch_size:
        parser.error("--train-size must be a multiple of --batch-size (whole batches only)")
    if args.worker:
        return worker(args)
    require_extras()

    backends = args.backends or [configured_backend()]
    unknown = [b for b in backends if b not in ENGINES]
    if unknown:
        parser.error(
            f"KERAS_BACKEND={unknown[0]}: this example runs the data-parallel engines of "
            f"{', '.join(BACKENDS)} (set KERAS_BACKEND or --backends)"
        )
    missing = [b for b in backends if importlib.util.find_spec(b) is None]
    if missing:
        parser.error(f"not installed: {', '.join(missing)}")

    steps = args.train_size // args.batch_size
    print(
        f"{args.epochs} epochs of {steps} steps, global batch {args.batch_size}, on "
        f"{', '.join(map(str, REPLICAS))} replicas", flush=True
    )
    tables, failed = {}, []
    with tempfile.TemporaryDirectory() as workdir:
        for backend in backends:
            print(f"\n== KERAS_BACKEND={backend}: {ENGINES[backend]} ==", flush=True)
            began = time.perf_counter()
            results = {}
            for n in REPLICAS:
                start = time.perf_counter()
                result = run_workers(backend, n, args, workdir)
                if result is None:
                    break
                results[n] = result
                seconds = time.perf_counter() - start
                print(
                    f"[{backend}] {n} replica{'s' * (n > 1)} done in {seconds:.1f}s "
                    "(incl. start-up)", flush=True
                )
            if len(results) < len(REPLICAS):
                failed.append(backend)
                continue
            tables[backend] = compare(results)
            print(f"[{backend}] all replica counts in {time.perf_counter() - began:.1f}s")
    if failed:
        sys.exit(f"a worker failed on {', '.join(failed)}: see its output above")

    print(
        "\nfirst-step keep masks of the first dropout layer; weights after training "
        "against the 1-replica run (one device, no distribution engine)"
    )
    for backend, table in tables.items():
        print_table(backend, table)
    print()
    plot(tables, args.out)

    for backend, table in tables.items():
        ours = table["kdv.Dropout"]
        check(
            all(row["one_device"] for row in ours),
            f"{backend}: kdv replicas' first-step masks = the one-device masks "
            f"({', '.join(map(str, REPLICAS))} replicas)",
        )
        check(
            all(not row["identical"] for row in ours if row["replicas"] > 1),
            f"{backend}: kdv replicas 0 and 1 drew different masks for their shards",
        )
        worst = max(row["weight_diff"] for row in ours)
        check(
            worst < TOLERANCE,
            f"{backend}: kdv weights on N replicas = the 1-replica weights "
            f"(max |difference| {worst:.1e} < {TOLERANCE:g})",
        )
        if backend == "tensorflow":
            check(
                all(row["identical"] for row in table["keras.layers.Dropout"]
                    if row["replicas"] > 1),
                "tensorflow: keras.layers.Dropout replicas drew identical masks for their "
                "different shards under MirroredStrategy (keras-team/keras#20611)",
            )


if __name__ == "__main__":
    main()
