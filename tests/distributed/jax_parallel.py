"""Worker: the package's masks under Keras' JAX distributions equal one device's.

Run as a script (it forces 8 host CPU devices, so it needs a fresh process):

    python tests/distributed/jax_parallel.py

Under JAX, `keras.distribution.DataParallel` and `ModelParallel` trace one
program over global arrays, so a layer sees the global batch and its masks
are the one-device masks by construction (`keras_dropout_variants.distribute`
does nothing for JAX). This checks it, for 1, 2, 4 and 8 devices:

1. Layers built under `DataParallel`, called in training on a global batch
   of 8 rows laid out as `fit` lays it out (`distribution.get_data_layout`,
   `jax.make_array_from_process_local_data`), eagerly and in a jitted
   `stateless_call` (as `fit` does): the outputs equal the outputs without a
   distribution bit for bit, and really are split over the devices.
   DropConnect's operands are small integers, so that its matmul is exact
   (`_small_integers`: XLA's CPU matmul rounds differently for different
   row counts, also for a plain `Dense`).
2. `fit` of a small model under `DataParallel`: the final weights equal the
   run without a distribution (to float tolerance: the gradients' all-reduce
   sums in another order), and the step counters equal the step count.
3. `ModelParallel` with the wrapped Dense's kernel sharded on a "model" mesh
   axis: DropConnect's training outputs (`mask_per` "batch" and "example")
   equal one device's bit for bit, and the kernel is sharded.

Prints "jax parallel: OK ..." and exits 0, or exits 1 with the failures.
`jax_multiprocess.py` runs the same checks in two processes.
Only the standard library is imported at module level: pytest's
`--doctest-modules` imports every module under tests/.
"""

import os
import sys
import time

DEVICES = 8
ROWS = 8


def _setup_environment():
    flag = f"--xla_force_host_platform_device_count={DEVICES}"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class Failures:
    def __init__(self):
        self.messages = []
        self.checks = 0

    def check(self, ok, message):
        self.checks += 1
        if not ok:
            self.messages.append(message)
            print(f"FAIL: {message}", file=sys.stderr, flush=True)


def _small_integers(rng, shape):
    """Nonzero integers in [-4, 4] as float32.

    A matmul on XLA's CPU backend rounds differently for different row
    counts (a plain `Dense`, or `x @ w` in JAX, on 8 rows sharded 2 ways
    differs from one device's in the last bit). The operands of DropConnect's
    matmul are therefore small integers: every product and sum is exact in
    float32 (and so is the `1 / (1 - 0.5)` scaling), the result does not
    depend on how the matmul is split or ordered, and a bit-exact comparison
    tests the masks alone. Dropout multiplies elementwise and needs no such
    care.
    """
    values = rng.integers(1, 5, size=shape) * rng.choice([-1, 1], size=shape)
    return values.astype("float32")


def _layer_cases():
    """(name, factory, input shape, exact) of the layers of part 1. A factory
    runs inside the distribution's scope (or none) and returns a built layer
    with fixed weights; `exact`: the input must be small integers (a
    matmul, see `_small_integers`)."""
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    # Small integers: the products and sums are exact in float32 (see
    # `_exact_operands`).
    rng = np.random.default_rng(123)
    kernel = _small_integers(rng, (4, 3))
    bias = _small_integers(rng, (3,))

    def drop_connect(mask_per):
        def make():
            layer = kdv.DropConnect(
                keras.layers.Dense(3), 0.5, seed=7, mask_per=mask_per, drop_bias=True
            )
            layer.build((None, 4))
            layer.layer.set_weights([kernel, bias])
            return layer

        return make

    return [
        ("Dropout(0.5, seed=3)", lambda: kdv.Dropout(0.5, seed=3), (ROWS, 4), False),
        (
            "Dropout(0.5, noise_shape=(None, 1, 4), seed=4)",
            lambda: kdv.Dropout(0.5, noise_shape=(None, 1, 4), seed=4),
            (ROWS, 5, 4),
            False,
        ),
        (
            "Dropout(0.5, noise_shape=(1, 4), seed=5)",
            lambda: kdv.Dropout(0.5, noise_shape=(1, 4), seed=5),
            (ROWS, 4),
            False,
        ),
        ("SeededDropout(0.3, seed=6)", lambda: kdv.SeededDropout(0.3, seed=6), (ROWS, 4),
         False),
        ("DropConnect(mask_per='example', drop_bias=True)", drop_connect("example"), (ROWS, 4),
         True),
        ("DropConnect(mask_per='batch', drop_bias=True)", drop_connect("batch"), (ROWS, 4),
         True),
    ]


def _global_batch(x, distribution):
    """The global batch `x` laid out over the devices as Keras' JAX trainer
    lays out a batch (`keras.src.backend.jax.trainer._distribute_data`):
    each process gives the rows its devices hold (all of them in one
    process)."""
    import jax

    if distribution is None:
        return jax.numpy.asarray(x)
    layout = distribution.get_data_layout(x.shape).backend_layout
    start, stop = _local_rows(layout, x.shape)
    return jax.make_array_from_process_local_data(layout, x[start:stop], x.shape)


def _local_rows(sharding, shape):
    """(start, stop): the rows of an array of `shape` that this process's
    devices hold (contiguous under Keras' data layouts)."""
    rows = [index[0] for index in sharding.addressable_devices_indices_map(shape).values()]
    return (
        min(r.indices(shape[0])[0] for r in rows),
        max(r.indices(shape[0])[1] for r in rows),
    )


def _to_numpy(value):
    """A global array as NumPy, gathered from every process if need be."""
    import numpy as np

    if value.is_fully_addressable or value.is_fully_replicated:
        return np.asarray(value)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value, tiled=True))


def _training_outputs(make, x, distribution):
    """A fresh layer's training outputs: jitted `stateless_call` (as `fit`)
    at counter 0 and then at the counter it returns; eager calls at counters
    0 and 1; and a jitted call with `mask_id=5`. Returns ({name: array},
    {name: output sharding}, {"jit"/"eager": counter after the two calls})."""
    import contextlib

    import jax

    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        layer = make()
        xg = _global_batch(x, distribution)
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]
        counter_index = _index(layer.non_trainable_variables, layer.counter)

        @jax.jit
        def step(trainable, non_trainable, x):
            return layer.stateless_call(trainable, non_trainable, x, training=True)

        @jax.jit
        def with_mask_id(trainable, non_trainable, x):
            y, _ = layer.stateless_call(trainable, non_trainable, x, training=True, mask_id=5)
            return y

        jit0, non_trainable = step(trainable, non_trainable, xg)
        jit1, non_trainable = step(trainable, non_trainable, xg)
        eager0 = layer(xg, training=True)
        eager1 = layer(xg, training=True)
        fixed = with_mask_id(trainable, [v.value for v in layer.non_trainable_variables], xg)
        outputs = {
            "jit@0": jit0, "jit@1": jit1, "eager@0": eager0, "eager@1": eager1,
            "jit mask_id=5": fixed,
        }
        counters = {
            "jit": int(_to_numpy(non_trainable[counter_index])),
            "eager": int(_to_numpy(layer.counter.value)),
        }
        return (
            {k: _to_numpy(v) for k, v in outputs.items()},
            {k: v.sharding for k, v in outputs.items()},
            counters,
        )


def _index(variables, variable):
    return [v is variable for v in variables].index(True)


def _is_row_sharded(sharding, shape, n):
    """Whether an array of `shape` with `sharding` spans `n` devices with
    its rows split `n` ways."""
    return len(sharding.device_set) == n and sharding.shard_shape(shape)[0] == shape[0] // n


def check_layers(failures, device_counts):
    import jax
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    for name, make, shape, exact in _layer_cases():
        if exact:
            x = _small_integers(rng, shape)
        else:
            x = rng.normal(size=shape).astype("float32") + 3.0  # no zeros: masks show
        reference, _, ref_counters = _training_outputs(make, x, None)
        failures.check(
            ref_counters == {"jit": 2, "eager": 2},
            f"{name}: counters without distribution {ref_counters}, expected 2 and 2",
        )
        failures.check(
            not np.array_equal(reference["eager@0"], reference["eager@1"]),
            f"{name}: masks of counters 0 and 1 are equal (vacuous test)",
        )
        for n in device_counts:
            distribution = keras.distribution.DataParallel(devices=jax.devices()[:n])
            outputs, shardings, counters = _training_outputs(make, x, distribution)
            failures.check(
                counters == {"jit": 2, "eager": 2},
                f"{name}, {n} devices: counters {counters}, expected 2 and 2",
            )
            for key, value in outputs.items():
                same = value.dtype == reference[key].dtype and np.array_equal(
                    value, reference[key]
                )
                diff = (
                    ""
                    if same
                    else f"; rows that differ: "
                    f"{sorted(set(np.nonzero(value != reference[key])[0].tolist()))}"
                )
                failures.check(
                    same,
                    f"{name}, DataParallel on {n} devices, {key}: differs from one device{diff}",
                )
                failures.check(
                    _is_row_sharded(shardings[key], value.shape, n),
                    f"{name}, {n} devices, {key}: output not split in rows over {n} "
                    f"devices: {shardings[key]}",
                )


def _fit_model(distribution, steps):
    import contextlib

    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    rng = np.random.default_rng(1)
    weights = [
        rng.normal(size=(4, 8)).astype("float32") * 0.5,
        rng.normal(size=(8,)).astype("float32") * 0.1,
        rng.normal(size=(8, 1)).astype("float32") * 0.5,
        rng.normal(size=(1,)).astype("float32") * 0.1,
    ]
    x = rng.normal(size=(ROWS * steps, 4)).astype("float32")
    y = rng.normal(size=(ROWS * steps, 1)).astype("float32")
    batch_size = ROWS
    if distribution is not None and distribution._is_multi_process:
        # Each process feeds its own rows of every global batch, as Keras
        # expects of a multi-process run (the devices, hence the rows, of
        # process p come after those of processes 0 .. p - 1); Keras shards
        # only a tf.data.Dataset itself.
        distribution.auto_shard_dataset = False
        layout = distribution.get_data_layout((ROWS, 4)).backend_layout
        start, stop = _local_rows(layout, (ROWS, 4))
        x, y = (a.reshape(steps, ROWS, -1)[:, start:stop].reshape(-1, a.shape[1]) for a in (x, y))
        batch_size = stop - start
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        keras.utils.set_random_seed(0)
        stochastic = [
            kdv.DropConnectDense(8, rate=0.3, seed=1, mask_per="example", activation="relu"),
            kdv.Dropout(0.3, seed=2),
        ]
        model = keras.Sequential([keras.Input((4,)), *stochastic, keras.layers.Dense(1)])
        model.layers[0].layer.set_weights(weights[:2])
        model.layers[2].set_weights(weights[2:])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        trained = [_to_numpy(v.value) for v in model.trainable_variables]
        counters = [int(_to_numpy(layer.counter.value)) for layer in stochastic]
        kernel_sharding = model.layers[0].layer.kernel.value.sharding
        return trained, counters, history.history["loss"][-1], kernel_sharding


def check_fit(failures, device_counts, steps=5):
    import jax
    import keras
    import numpy as np

    reference, ref_counters, ref_loss, _ = _fit_model(None, steps)
    failures.check(
        ref_counters == [steps, steps],
        f"fit without distribution: counters {ref_counters}, expected {steps}",
    )
    worst = 0.0
    for n in device_counts:
        distribution = keras.distribution.DataParallel(devices=jax.devices()[:n])
        trained, counters, loss, kernel_sharding = _fit_model(distribution, steps)
        failures.check(
            counters == [steps, steps],
            f"fit, DataParallel on {n} devices: counters {counters}, expected {steps}",
        )
        failures.check(
            len(kernel_sharding.device_set) == n,
            f"fit, {n} devices: kernel on {len(kernel_sharding.device_set)} devices",
        )
        for i, (a, b) in enumerate(zip(trained, reference)):
            err = float(np.max(np.abs(a - b)))
            worst = max(worst, err)
            failures.check(
                np.allclose(a, b, rtol=1e-5, atol=1e-5),
                f"fit, DataParallel on {n} devices: weight {i} differs from one "
                f"device by up to {err:.3g}",
            )
        failures.check(
            abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss)),
            f"fit, {n} devices: last loss {loss} vs {ref_loss} on one device",
        )
    return worst


def _model_parallel_outputs(mask_per, x, mesh_shape):
    """DropConnect(Dense(8)) training outputs (eager and jitted, counters 0
    and 1) under ModelParallel with the kernel sharded on "model" (or on one
    device when `mesh_shape` is None), and the kernel's sharding."""
    import contextlib

    import jax
    import keras
    import numpy as np

    import keras_dropout_variants as kdv

    rng = np.random.default_rng(7)
    kernel = _small_integers(rng, (4, 8))  # exact matmul: see `_small_integers`
    bias = _small_integers(rng, (8,))
    distribution = None
    if mesh_shape is not None:
        mesh = keras.distribution.DeviceMesh(
            mesh_shape, ("batch", "model"), devices=jax.devices()[: mesh_shape[0] * mesh_shape[1]]
        )
        layout_map = keras.distribution.LayoutMap(mesh)
        # Keys are regular expressions matched against the whole path
        # ("drop_connect_3/mp_dense/kernel").
        layout_map[".*mp_dense/kernel"] = (None, "model")
        layout_map[".*mp_dense/bias"] = ("model",)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with scope:
        layer = kdv.DropConnect(
            keras.layers.Dense(8, name="mp_dense"), 0.5, seed=11, mask_per=mask_per,
            drop_bias=True,
        )
        layer.build((None, 4))
        layer.layer.set_weights([kernel, bias])
        xg = _global_batch(x, distribution)
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        @jax.jit
        def step(trainable, non_trainable, x):
            return layer.stateless_call(trainable, non_trainable, x, training=True)

        jit0, non_trainable = step(trainable, non_trainable, xg)
        jit1, _ = step(trainable, non_trainable, xg)
        eager0 = layer(xg, training=True)
        eager1 = layer(xg, training=True)
        outputs = {"jit@0": jit0, "jit@1": jit1, "eager@0": eager0, "eager@1": eager1}
        return (
            {k: _to_numpy(v) for k, v in outputs.items()},
            layer.layer.kernel.value.sharding,
            layer.layer.kernel.path,
        )


def check_model_parallel(failures, mesh_shapes):
    import numpy as np

    x = _small_integers(np.random.default_rng(3), (ROWS, 4))
    for mask_per in ("batch", "example"):
        reference, _, _ = _model_parallel_outputs(mask_per, x, None)
        for mesh_shape in mesh_shapes:
            outputs, sharding, path = _model_parallel_outputs(mask_per, x, mesh_shape)
            model_ways = mesh_shape[1]
            failures.check(
                sharding.shard_shape((4, 8)) == (4, 8 // model_ways)
                and len(sharding.device_set) == mesh_shape[0] * mesh_shape[1],
                f"ModelParallel {mesh_shape}: kernel {path!r} not sharded "
                f"{model_ways} ways on its columns: {sharding}",
            )
            for key, value in outputs.items():
                failures.check(
                    np.array_equal(value, reference[key]),
                    f"ModelParallel {mesh_shape}, mask_per={mask_per!r}, {key}: differs "
                    f"from one device (max |diff| "
                    f"{float(np.max(np.abs(value - reference[key]))):.3g})",
                )


def main():
    _setup_environment()
    start = time.perf_counter()
    import jax
    import keras

    if keras.backend.backend() != "jax":
        print(f"jax parallel: FAILED: Keras runs on {keras.backend.backend()}", file=sys.stderr)
        return 1
    if jax.device_count() < DEVICES:
        print(
            f"jax parallel: FAILED: {jax.device_count()} JAX devices, need {DEVICES} "
            "(was jax imported before XLA_FLAGS was set?)",
            file=sys.stderr,
        )
        return 1
    device_counts = (1, 2, 4, 8)
    failures = Failures()
    check_layers(failures, device_counts)
    worst = check_fit(failures, device_counts)
    check_model_parallel(failures, [(2, 4), (1, 8)])
    seconds = time.perf_counter() - start
    if failures.messages:
        print(
            f"jax parallel: FAILED {len(failures.messages)} of {failures.checks} checks "
            f"(jax {jax.__version__}, keras {keras.__version__}):",
            file=sys.stderr,
        )
        for message in failures.messages:
            print(f"  {message}", file=sys.stderr)
        return 1
    print(
        f"jax parallel: OK {failures.checks} checks, DataParallel on "
        f"{'/'.join(map(str, device_counts))} devices (6 layers bit-identical, eager "
        f"and jitted; fit weights within {worst:.2g}), ModelParallel (2, 4) and "
        f"(1, 8) bit-identical; jax {jax.__version__}, keras {keras.__version__}, "
        f"{seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
