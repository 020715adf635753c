"""Replica-invariant masks under `tf.distribute.MirroredStrategy` (run by
tests/test_distributed.py in a process of its own: logical CPU devices
must be configured before TensorFlow starts).

Usage: python tf_mirrored.py N (replicas: 1, 2 or 4; one count per process,
as TensorFlow's collectives keep their groups for the process). Prints one
line and exits 0 when every check holds; an AssertionError otherwise.
"""

import os
import sys


def layers(kdv, keras):
    """(name, layer, input rank) of every layer kind, with fixed weights."""
    dense = lambda: keras.layers.Dense(3, kernel_initializer="glorot_uniform", bias_initializer="ones")
    return [
        ("Dropout", kdv.Dropout(0.5, seed=3), 2),
        ("Dropout noise (None,1,4)", kdv.Dropout(0.5, noise_shape=(None, 1, 4), seed=4), 3),
        ("Dropout noise (1,4)", kdv.Dropout(0.5, noise_shape=(1, 4), seed=5), 2),
        ("SeededDropout", kdv.SeededDropout(0.3, seed=6), 2),
        ("DropConnect example", kdv.DropConnect(dense(), 0.5, seed=7, mask_per="example", drop_bias=True), 2),
        ("DropConnect batch", kdv.DropConnect(dense(), 0.5, seed=8, drop_bias=True), 2),
    ]


def check_masks(tf, keras, kdv, np, devices):
    """Each replica's output is its rows of the one-device output."""
    rng = np.random.default_rng(0)
    n = len(devices)
    # Rows per replica: even, uneven (a last partial batch), an empty replica.
    for sizes in {1: [[10]], 2: [[5, 5], [4, 3]], 4: [[3, 3, 2, 2], [4, 0, 3, 3]]}[n]:
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            replicated = layers(kdv, keras)
        single = layers(kdv, keras)
        for (name, layer, rank), (_, alone, _) in zip(replicated, single):
            shape = (sum(sizes), 4) if rank == 2 else (sum(sizes), 2, 4)
            x = rng.normal(size=shape).astype("float32")
            if hasattr(layer, "layer"):  # same Dense weights in both
                layer.build(x.shape)
                alone.build(x.shape)
                alone.layer.set_weights(layer.layer.get_weights())
            starts = np.cumsum([0] + sizes)
            rows = strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(x[starts[ctx.replica_id_in_sync_group]:starts[ctx.replica_id_in_sync_group + 1]])
            )
            step = tf.function(lambda v: strategy.run(lambda r: layer(r, training=True), (v,)))
            for counter in range(2):  # two steps: the counter advances once per step
                parts = strategy.experimental_local_results(step(rows))
                got = np.concatenate([p.numpy() for p in parts])
                want = alone(x, training=True).numpy()
                assert np.array_equal(got, want), (name, sizes, counter)
                assert int(layer.counter.numpy()) == counter + 1, (name, layer.counter.numpy())
            if n > 1 and name == "Dropout" and sizes[0] == sizes[1]:
                a, b = (p.numpy() for p in parts[:2])
                assert not np.array_equal(a != 0, b != 0), "two replicas drew the same mask"


def model(keras, kdv, np):
    rng = np.random.default_rng(1)
    m = keras.Sequential([
        keras.Input((4,)),
        kdv.DropConnectDense(8, rate=0.3, seed=1, mask_per="example", activation="relu"),
        kdv.Dropout(0.3, seed=2),
        keras.layers.Dense(1),
    ])
    m.set_weights([rng.normal(size=w.shape).astype(w.dtype) * (0 if w.dtype == "int32" else 0.5) for w in m.get_weights()])
    m.compile(keras.optimizers.SGD(0.05), "mse")
    return m


def check_fit(tf, keras, kdv, np, devices):
    """fit() on the replicas gives the one-device weights. Whole batches
    only: with an uneven last batch, Keras averages the replicas' mean
    losses, which weighs rows differently from one device, with or without
    dropout."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(48, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    alone = model(keras, kdv, np)
    alone.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    with tf.distribute.MirroredStrategy(devices).scope():
        m = model(keras, kdv, np)
    m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    spread = max(float(np.abs(g - w).max()) for g, w in zip(m.get_weights(), alone.get_weights()))
    assert spread < 1e-5, spread
    assert [int(m.layers[i].counter.numpy()) for i in (0, 1)] == [6, 6]  # once per step
    return spread


def main():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1]))
    import keras

    import keras_dropout_variants as kdv

    devices = [f"/cpu:{i}" for i in range(int(sys.argv[1]))]
    check_masks(tf, keras, kdv, np, devices)
    spread = check_fit(tf, keras, kdv, np, devices)
    print(f"tf mirrored, {len(devices)} replicas: OK (masks = rows of the one-device "
          f"masks; fit: max |weight difference| {spread:.1e})")


if __name__ == "__main__":
    main()
