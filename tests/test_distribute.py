"""The data-parallel rule on one process: a shard's masks are its rows of
the global batch's masks (`shard_rows`, `first_row` of the ops). The
engines themselves (tf.distribute, torch.distributed, JAX distributions)
are in tests/test_distributed_engines.py."""

import keras
import numpy as np
import pytest

from conftest import compiled, normal_data, steps_taken, to_np
import keras_dropout_variants as kdv
from keras_dropout_variants import ops as kops


def dyadic(shape, seed):
    """Small multiples of 1/8: products and sums of a few are exact in
    float32, so a matmul over a shard gives the bits of the one over the
    whole batch (whatever the BLAS blocking) and only the masks can differ."""
    return (np.random.default_rng(seed).integers(-16, 17, size=shape) / 8).astype("float32")


def shard_layers():
    """(layer, input shape) for every mask layout; DropConnects share a Dense."""
    dense = keras.layers.Dense(3)
    dense.build((None, 6))
    dense.set_weights([dyadic((6, 3), 1), dyadic((3,), 2)])
    return [
        (kdv.Dropout(0.5, seed=3), (10, 6)),
        (kdv.Dropout(0.5, noise_shape=(None, 1, 6), seed=4), (10, 2, 6)),
        (kdv.Dropout(0.5, noise_shape=(1, 6), seed=5), (10, 6)),
        (kdv.SeededDropout(0.3, seed=6), (10, 6)),
        (kdv.DropConnect(dense, 0.5, seed=7, mask_per="example", drop_bias=True), (10, 6)),
        (kdv.DropConnect(dense, 0.5, seed=8, mask_per="batch", drop_bias=True), (10, 6)),
        (kdv.SpatialDropout2D(0.5, seed=9), (10, 2, 2, 3)),
        (kdv.AlphaDropout(0.3, seed=10), (10, 6)),
        (kdv.GaussianDropout(0.3, seed=11), (10, 6)),
        (kdv.GaussianNoise(0.3, seed=12, noise_shape=(None, 1, 6)), (10, 2, 6)),
        (kdv.DropPath(0.5, seed=13), (10, 2, 3)),
        (kdv.DropPath(0.5, seed=14, mode="batch"), (10, 2, 3)),
        (kdv.DropBlock2D(0.3, 2, seed=15), (10, 4, 4, 2)),
    ]


@pytest.mark.parametrize("index", range(13))
def test_shards_draw_their_rows_of_the_global_masks(index):
    layer, shape = shard_layers()[index]
    x = dyadic(shape, 9)
    whole = to_np(layer(x, training=True, mask_id=0))
    parts = []
    for start, stop in ((0, 4), (4, 4), (4, 7), (7, 10)):  # uneven, and an empty shard
        with kdv.shard_rows(start):
            parts.append(to_np(layer(x[start:stop], training=True, mask_id=0)))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_rows_masks_differ_between_shards():
    # Guards the test above against a vacuous pass: shards' masks differ
    # where rows have masks of their own, and are one where shared.
    x = np.ones((8, 64), "float32")
    for layer, shared in ((kdv.Dropout(0.5, seed=1), False), (kdv.Dropout(0.5, noise_shape=(1, 64), seed=1), True)):
        masks = []
        for start in (0, 4):
            with kdv.shard_rows(start):
                masks.append(to_np(layer(x[:4], training=True, mask_id=0)) != 0)
        assert np.array_equal(*masks) == shared


def test_counter_advances_once_per_call_inside_a_shard():
    layer = kdv.Dropout(0.5, seed=2)
    x = normal_data((4, 6))
    with kdv.shard_rows(4):
        first = to_np(layer(x, training=True))
        second = to_np(layer(x, training=True))
    assert steps_taken(layer) == 2
    whole = kdv.Dropout(0.5, seed=2)
    np.testing.assert_array_equal(first, to_np(whole(np.concatenate([x, x]), training=True))[4:])
    np.testing.assert_array_equal(second, to_np(whole(np.concatenate([x, x]), training=True))[4:])


def test_shard_rows_nests_restores_and_accepts_a_tensor():
    layer = kdv.Dropout(0.5, seed=3)
    x = normal_data((6, 8))
    whole = to_np(layer(x, training=True, mask_id=1))
    with kdv.shard_rows(0):
        with kdv.shard_rows(keras.ops.convert_to_tensor(2, "int32")):
            inner = to_np(layer(x[2:], training=True, mask_id=1))
        outer = to_np(layer(x, training=True, mask_id=1))
    with pytest.raises(RuntimeError):
        with kdv.shard_rows(3):
            raise RuntimeError("left by an error")
    after = to_np(layer(x, training=True, mask_id=1))
    np.testing.assert_array_equal(inner, whole[2:])
    np.testing.assert_array_equal(outer, whole)
    np.testing.assert_array_equal(after, whole)


def test_shard_rows_inside_a_compiled_function():
    layer = kdv.Dropout(0.5, seed=4)
    x = normal_data((8, 5))
    whole = to_np(layer(x, training=True, mask_id=0))

    def shard(v, start):  # a tensor start: one trace serves every shard
        with kdv.shard_rows(start):
            return layer(v, training=True, mask_id=0)

    fn = compiled(shard)
    got = [to_np(fn(x[s:s + 4], keras.ops.convert_to_tensor(s, "int32"))) for s in (0, 4)]
    np.testing.assert_array_equal(np.concatenate(got), whole)


@pytest.mark.parametrize("start", [-1, 2**32, 1.5, "2"])
def test_bad_start_is_refused(start):
    error = ValueError if isinstance(start, int) else TypeError
    with pytest.raises(error, match="`start`"):
        with kdv.shard_rows(start):
            pass


def test_ops_first_row_selects_rows_of_the_global_mask():
    x = normal_data((6, 3, 5))
    whole = to_np(kops.dropout(x, 0.5, seed=1, counter=2))
    part = to_np(kops.dropout(x[2:], 0.5, seed=1, counter=2, first_row=2))
    np.testing.assert_array_equal(part, whole[2:])
    # A mask shared by the batch is every shard's.
    shared = to_np(kops.dropout(x, 0.5, noise_shape=(1, 3, 5), seed=1))
    part = to_np(kops.dropout(x[2:], 0.5, noise_shape=(1, 3, 5), seed=1, first_row=2))
    np.testing.assert_array_equal(part, shared[2:])
    x, kernel = dyadic((6, 5), 2), dyadic((5, 4), 3)
    whole = to_np(kops.drop_connect(x, kernel, 0.5, seed=1, mask_per="example"))
    part = to_np(kops.drop_connect(x[3:], kernel, 0.5, seed=1, mask_per="example", first_row=3))
    np.testing.assert_array_equal(part, whole[3:])
    with pytest.raises(ValueError, match="`first_row`"):
        kops.dropout(x, 0.5, seed=1, first_row=-1)
