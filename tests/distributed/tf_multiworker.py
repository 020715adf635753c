"""Replica-invariant masks under `tf.distribute.MultiWorkerMirroredStrategy`:
two worker processes on localhost, one CPU replica each (run by
tests/test_distributed.py).

Usage: python tf_multiworker.py. The parent starts both workers with a
`TF_CONFIG` each, then compares what they wrote with one device's masks.
Prints one line and exits 0 when every check holds.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def data(np):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4)).astype("float32")  # 4 + 3 rows: uneven
    fx = rng.normal(size=(32, 4)).astype("float32")
    return x, fx, fx.sum(axis=1, keepdims=True)


def make(keras, kdv, np):
    """Two layers and a model, with fixed weights."""
    rng = np.random.default_rng(1)
    dropout = kdv.Dropout(0.5, seed=3)
    connect = kdv.DropConnect(keras.layers.Dense(3), 0.5, seed=7, mask_per="example", drop_bias=True)
    connect.build((None, 4))
    connect.layer.set_weights([rng.normal(size=(4, 3)).astype("float32"), np.ones(3, "float32")])
    model = keras.Sequential([
        keras.Input((4,)),
        kdv.DropConnectDense(8, rate=0.3, seed=1, mask_per="example", activation="relu"),
        kdv.Dropout(0.3, seed=2),
        keras.layers.Dense(1),
    ])
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) * (0 if w.dtype == "int32" else 0.5) for w in model.get_weights()])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return dropout, connect, model


def worker(index, ports, out):
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    import numpy as np
    import tensorflow as tf
    import keras

    import keras_dropout_variants as kdv

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, fx, fy = data(np)
    with strategy.scope():
        dropout, connect, model = make(keras, kdv, np)
    starts = [0, 4, 7]
    rows = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[starts[ctx.replica_id_in_sync_group]:starts[ctx.replica_id_in_sync_group + 1]])
    )
    step = tf.function(lambda v: strategy.run(lambda r: (dropout(r, training=True), connect(r, training=True)), (v,)))
    a, b = (strategy.experimental_local_results(t)[0].numpy() for t in step(rows))
    # Keras 3.15's fit() fails under this strategy before any layer runs
    # (trainer._maybe_symbolic_build reduces a PerReplica batch: "Attempt to
    # convert a value (PerReplica...)", with a plain Dense model too), so the
    # training check is a custom loop: the replicas' gradients of their mean
    # losses / 2 are summed by the optimizer, as fit() does.
    @tf.function
    def train_step(rows):
        def replica_step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(xb, training=True) - yb) ** 2) / 2
            grads = tape.gradient(loss, model.trainable_weights)
            model.optimizer.apply_gradients(zip(grads, model.trainable_weights))

        strategy.run(replica_step, rows)

    for batch in range(4):  # global batches of 8: rows 8b..8b+3 on worker 0
        lo = 8 * batch
        train_step(strategy.experimental_distribute_values_from_function(
            lambda ctx: tuple(tf.constant(a[lo + 4 * ctx.replica_id_in_sync_group:][:4]) for a in (fx, fy))
        ))
    np.savez(os.path.join(out, f"{index}.npz"), dropout=a, connect=b, *model.get_weights())


def main():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if len(sys.argv) > 1:
        return worker(int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3])
    import numpy as np

    ports = free_ports(2)
    with tempfile.TemporaryDirectory() as out:
        procs = [subprocess.Popen([sys.executable, __file__, str(i), json.dumps(ports), out]) for i in range(2)]
        codes = [p.wait(timeout=240) for p in procs]
        assert codes == [0, 0], f"workers exited with {codes}"
        results = [dict(np.load(os.path.join(out, f"{i}.npz"))) for i in range(2)]

    import keras

    import keras_dropout_variants as kdv

    x, fx, fy = data(np)
    dropout, connect, model = make(keras, kdv, np)
    for name, layer in (("dropout", dropout), ("connect", connect)):
        got = np.concatenate([r[name] for r in results])
        assert np.array_equal(got, keras.ops.convert_to_numpy(layer(x, training=True))), name
    model.fit(fx, fy, batch_size=8, epochs=1, shuffle=False, verbose=0)
    spread = max(
        float(np.abs(r[f"arr_{i}"] - w).max()) for r in results for i, w in enumerate(model.get_weights())
    )
    assert spread < 1e-5, spread
    print(f"tf multi-worker, 2 workers: OK (masks = rows of the one-device masks; custom training loop: max |weight difference| {spread:.1e})")


if __name__ == "__main__":
    main()
