"""Replica-invariant masks under `torch.distributed` (gloo, 2 CPU ranks).

Usage: python torch_gloo.py. The parent starts two worker processes (this
script with `--worker RANK DIR`) that join a gloo group and write their
outputs to DIR; meanwhile it computes the one-device reference itself,
without any process group. It prints one line "torch gloo: OK ..." and
exits 0 when every check holds, else exits nonzero with the failure.

Checks: for every layer kind, the ranks' outputs concatenated in rank order
are bit-identical to one device's output for the global batch (even and
uneven splits, an empty rank), each rank's step counter advanced once, and
5 SGD steps of a small model with gradients all-reduced over the ranks give
the one-device weights.

Module level holds only imports and functions: pytest's --doctest-modules
imports this file. Keras and torch are imported inside functions, after
KERAS_BACKEND is set.
"""

import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np

WORLD = 2
SPLITS = {"A": [4, 4], "B": [4, 3], "C": [0, 5]}  # rows per rank: even, uneven, an empty rank
TRAIN_SPLITS = [[4, 4], [4, 3]]
STEPS, LR = 5, 0.05


def set_env():
    os.environ["KERAS_BACKEND"] = "torch"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # gloo finds its peers through the hostname's address, which on some
    # hosts is unreachable; both ranks are on this machine.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def dyadic(rng, shape, low, high, denominator, nonzero=False):
    """Small multiples of 1/denominator: every product and sum the layers
    make is exact in float32, so a matmul over 4 rows and one over 8 rows
    (different BLAS blocking) give the same bits and the comparison tests
    the masks alone. Nonzero inputs make `out != 0` the keep mask."""
    values = rng.randint(low, high, size=shape)
    if nonzero:
        values = np.where(values >= 0, values + 1, values)
    return (values / denominator).astype("float32")


def make_layers(keras, kdv):
    """(name, layer, input ndim) of every layer kind, built with fixed
    Dense weights: identical in every process."""
    rng = np.random.RandomState(0)

    def dense():
        d = keras.layers.Dense(3)
        d.build((None, 4))
        d.set_weights([dyadic(rng, (4, 3), -4, 5, 8), dyadic(rng, (3,), -4, 5, 8)])
        return d

    return [
        ("Dropout", kdv.Dropout(0.5, seed=3), 2),
        ("Dropout noise (None,1,4)", kdv.Dropout(0.5, noise_shape=(None, 1, 4), seed=4), 3),
        ("Dropout noise (1,4)", kdv.Dropout(0.5, noise_shape=(1, 4), seed=5), 2),
        ("SeededDropout", kdv.SeededDropout(0.3, seed=6), 2),
        ("DropConnect example", kdv.DropConnect(dense(), 0.5, seed=7, mask_per="example", drop_bias=True), 2),
        ("DropConnect batch", kdv.DropConnect(dense(), 0.5, seed=7, mask_per="batch", drop_bias=True), 2),
    ]


def global_input(case, ndim):
    g = sum(SPLITS[case])
    rng = np.random.RandomState(1 + ndim + 10 * "ABC".index(case))
    shape = (g, 4) if ndim == 2 else (g, 2, 4)
    return dyadic(rng, shape, -8, 8, 4, nonzero=True)


def run_layers(keras, kdv, case, start, stop):
    """{name: output} of fresh layers on rows start:stop of the global input,
    asserting each counter advanced once."""
    outputs = {}
    for name, layer, ndim in make_layers(keras, kdv):
        x = global_input(case, ndim)[start:stop]
        outputs[name] = keras.ops.convert_to_numpy(layer(x, training=True))
        counter = int(keras.ops.convert_to_numpy(layer.counter))
        assert counter == 1, f"case {case} {name}: counter {counter} after one call"
    return outputs


def train(keras, kdv, torch, sizes, rank, dist=None):
    """Weights after STEPS manual SGD steps on this rank's rows of a global
    batch of sum(sizes) rows (all rows when dist is None)."""
    g = sum(sizes)
    rng = np.random.RandomState(2)
    x = rng.normal(size=(g, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    start = sum(sizes[:rank]) if dist else 0
    n = sizes[rank] if dist else g
    x, y = torch.as_tensor(x[start:start + n]), torch.as_tensor(y[start:start + n])

    model = keras.Sequential([
        keras.Input((4,)),
        kdv.DropConnectDense(8, rate=0.3, seed=1, mask_per="example", activation="relu"),
        kdv.Dropout(0.3, seed=2),
        keras.layers.Dense(1),
    ])
    wrng = np.random.RandomState(3)
    model.set_weights([
        np.zeros(w.shape, w.dtype) if w.dtype == "int32"  # step counters
        else (wrng.normal(size=w.shape) * 0.5).astype(w.dtype)
        for w in model.get_weights()
    ])
    variables = model.trainable_weights
    for _ in range(STEPS):
        for v in variables:
            v.value.grad = None
        # This rank's mean times n / g: summed over ranks, the global mean.
        loss = torch.mean((model(x, training=True) - y) ** 2) * (n / g)
        loss.backward()
        with torch.no_grad():
            for v in variables:
                grad = v.value.grad
                if dist:
                    dist.all_reduce(grad, op=dist.ReduceOp.SUM)
                v.assign(v.value - LR * grad)
    counters = {int(keras.ops.convert_to_numpy(l.counter)) for l in model.layers if hasattr(l, "counter")}
    assert counters == {STEPS}, f"train {sizes}: counters {counters} after {STEPS} steps"
    return [keras.ops.convert_to_numpy(v) for v in variables]


def worker(rank, directory):
    set_env()
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # two ranks and the parent share 2 cores
    # A file rendezvous: no port to pick, so no race for a free one.
    dist.init_process_group(
        "gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=WORLD
    )
    try:
        import keras

        import keras_dropout_variants as kdv

        result = {}
        for case, sizes in SPLITS.items():
            start = sum(sizes[:rank])
            result[case] = run_layers(keras, kdv, case, start, start + sizes[rank])
        for sizes in TRAIN_SPLITS:
            result[f"train {sizes}"] = train(keras, kdv, torch, sizes, rank, dist)
        with open(os.path.join(directory, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(result, f)
    finally:
        dist.destroy_process_group()


def check(results, reference):
    """Asserts the ranks' results (one dict per rank) against the one-device
    reference; returns a summary."""
    for case, sizes in SPLITS.items():
        for name, want in reference[case].items():
            parts = [r[case][name] for r in results]
            assert [len(p) for p in parts] == sizes, (case, name, [p.shape for p in parts])
            got = np.concatenate(parts)
            assert np.array_equal(got, want), (
                f"case {case} {sizes} {name}: ranks' outputs != one-device output "
                f"(rows differing: {np.nonzero((got != want).reshape(len(got), -1).any(1))[0].tolist()})"
            )
        # The batch-shared mask is every rank's (implied by the above, but
        # stated): every row of both ranks keeps the same features.
        keep = np.concatenate([r[case]["Dropout noise (1,4)"] for r in results]) != 0
        assert (keep == keep[:1]).all(), f"case {case}: batch-shared Dropout mask differs across rows"
    # Per-row masks: equal-sized shards must not draw the same mask.
    a, b = (r["A"]["Dropout"] != 0 for r in results)
    assert not np.array_equal(a, b), "case A: both ranks drew the same Dropout mask"
    spread = {}
    for sizes in TRAIN_SPLITS:
        key = f"train {sizes}"
        for r, result in enumerate(results):
            for i, (got, want) in enumerate(zip(result[key], reference[key])):
                assert np.allclose(got, want, rtol=0, atol=1e-5), (
                    f"{key}: rank {r} weight {i} max |diff| {np.abs(got - want).max()}"
                )
        spread[sum(sizes)] = max(
            float(np.abs(g - w).max()) for res in results for g, w in zip(res[key], reference[key])
        )
    return spread


def main():
    began = time.time()
    set_env()
    with tempfile.TemporaryDirectory() as directory:
        workers = [
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", str(rank), directory],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for rank in range(WORLD)
        ]
        # The reference, while the workers run: no process group here, so
        # every layer draws the whole batch from row 0.
        import keras
        import torch

        import keras_dropout_variants as kdv

        torch.set_num_threads(1)
        assert not torch.distributed.is_initialized()
        reference = {case: run_layers(keras, kdv, case, 0, sum(sizes)) for case, sizes in SPLITS.items()}
        for sizes in TRAIN_SPLITS:
            reference[f"train {sizes}"] = train(keras, kdv, torch, sizes, 0)

        failures = []
        for rank, p in enumerate(workers):
            try:
                log, _ = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                for q in workers:
                    q.kill()
                log, _ = p.communicate()
                failures.append(f"rank {rank} timed out (a collective left waiting?)")
            if p.returncode:
                failures.append(f"rank {rank} exited {p.returncode}:\n{log[-4000:]}")
        if failures:
            sys.exit("torch gloo: FAILED\n" + "\n".join(failures))
        results = []
        for rank in range(WORLD):
            with open(os.path.join(directory, f"rank{rank}.pkl"), "rb") as f:
                results.append(pickle.load(f))
    try:
        spread = check(results, reference)
    except AssertionError as error:
        sys.exit(f"torch gloo: FAILED {error}")
    print(
        f"torch gloo: OK (2 ranks; {len(reference['A'])} layers bit-equal to one device "
        f"for splits {list(SPLITS.values())}; {STEPS} SGD steps, max |dw| "
        f"{ {g: f'{s:.1e}' for g, s in spread.items()} }; {time.time() - began:.0f} s)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(int(sys.argv[2]), sys.argv[3])
    else:
        main()
