"""The torch fast paths of the engine (`_backends/torch.py`): bits against
the plain keras.ops path, torch.compile, fallbacks, devices, bounded state."""

import gc
import threading
import warnings
import weakref

import keras
import numpy as np
import pytest

import keras_dropout_variants as kdv
import reference
from conftest import BACKEND, DROP_SHAPES, expect_fused_torch_kernels, to_np, torch_tensor
from keras_dropout_variants import _backends
from keras_dropout_variants import random as kr

if BACKEND != "torch":
    pytest.skip("torch fast paths: run under KERAS_BACKEND=torch", allow_module_level=True)

import torch  # noqa: E402

from keras_dropout_variants._backends import torch as fast  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("x_shape,mask_shape", DROP_SHAPES)
def test_drop_under_torch_compile_gives_the_eager_bits(monkeypatch, x_shape, mask_shape):
    # Under torch.compile, `drop` saves the key, not the mask, and redraws the
    # mask in the backward pass: outputs and gradients must keep the bits of
    # eager mode, in one graph (fullgraph: no break around the Function).
    rng = np.random.default_rng(5)
    x = rng.normal(size=x_shape).astype("float32")
    x.flat[::7], x.flat[1::7], x.flat[2::7] = np.nan, np.inf, -0.0
    weight = torch_tensor(rng.normal(size=x.shape).astype("float32"))

    def step(v, counter):
        y = kr.drop(v, mask_shape, 0.3, seed=4, counter=counter)
        return y, (y * weight).sum()

    def run(fn):
        v = torch_tensor(x, requires_grad=True)
        y, loss = fn(v, torch_tensor(7, dtype=torch.int32))
        loss.backward()
        return [to_np(t).view(np.uint32) for t in (y, v.grad)]

    fused = expect_fused_torch_kernels(monkeypatch, x_shape, mask_shape)
    eager = run(step)
    assert fused is None or (fused and all(fused.values())), fused
    compiled = run(torch.compile(step, fullgraph=True))
    np.testing.assert_array_equal(compiled[0], eager[0])
    np.testing.assert_array_equal(compiled[1], eager[1])
    keep = np.broadcast_to(reference.keep_mask(mask_shape, 0.3, 4, 7), x.shape)
    assert (eager[1][~keep] == 0).all() and (eager[1][keep] != 0).all()


def test_eager_torch_path_is_never_traced_by_dynamo():
    # When a compiled region falls back to eager (graph break, recompile
    # limit), dynamo tries every frame it runs, the eager path's too; their
    # int views of float tensors would fail in AOTAutograd (seen in a
    # compiled fit() of five models in one process).
    rng = np.random.default_rng(6)
    x = torch_tensor(rng.normal(size=(8, 40)).astype("float32"))
    big = torch_tensor(rng.normal(size=(128, 128)).astype("float32"))  # fused kernels
    keep = reference.keep_mask((8, 40), 0.3, 4, 7)
    scale = torch_tensor(1 / 0.7)
    cases = [
        (fast._masked_scale, (x, torch_tensor(keep.astype(np.int8)).neg_(), scale)),
        (fast._masked_scale, (x, torch_tensor(keep.astype(np.int32)).neg_(), scale)),
        (fast._eager_drop, (x, (8, 40), 320, 4, 7, 0, kr.keep_threshold(0.3), 0.3)),
        (fast._eager_drop, (big, (128, 128), 128 * 128, 4, 7, 0, kr.keep_threshold(0.3), 0.3)),
    ]
    for fn, fn_args in cases:
        eager = fn(*fn_args)
        compiled = torch.compile(lambda *a: fn(*a) * 1.0)(*fn_args)  # dynamo meets fn
        np.testing.assert_array_equal(to_np(compiled).view(np.uint32), to_np(eager).view(np.uint32))


def assert_fused_gives_the_plain_bits(monkeypatch, run):
    """`run()` (returning uint32 views of outputs and gradients) on the
    fused kernels, checked to have run and compiled, then on the plain
    keras.ops path: the same bits."""
    fused = expect_fused_torch_kernels(monkeypatch, (2**14,), (2**14,))
    fused_bits = run()
    assert fused and all(fused.values()), fused
    monkeypatch.setattr(_backends, "enabled", False)
    for got, expected in zip(fused_bits, run()):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("keep_words", [True, False], ids=["keep-words", "redraw"])
def test_fused_torch_backward_gives_the_bits_of_apply_keep(monkeypatch, keep_words):
    # The fused kernels' backward pass ANDs the words the forward kept (on a
    # CPU) or redraws the mask (elsewhere); both are forced here on whatever
    # device Keras uses: the same bits either way, with NaN in the upstream
    # gradient too.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(128, 130)).astype("float32")
    x.flat[::7], x.flat[1::7], x.flat[2::7] = np.nan, np.inf, -0.0
    upstream = torch_tensor(rng.normal(size=x.shape).astype("float32"))
    upstream.view(-1)[3::11] = float("nan")  # dropped: still exactly 0

    def run():
        v = torch_tensor(x, requires_grad=True)
        y = kr.drop(v, x.shape, 0.3, seed=4, counter=7)
        y.backward(upstream)
        return [to_np(t).view(np.uint32) for t in (y, v.grad)]

    monkeypatch.setattr(fast, "_KEEP_WORDS_ON", (upstream.device.type,) if keep_words else ())
    assert_fused_gives_the_plain_bits(monkeypatch, run)


def test_fused_torch_kernels_fall_back_when_they_cannot_compile(monkeypatch):
    # Eager torch compiles its fused kernels on first use; where that fails
    # (no C++ compiler, say), `drop` warns once and gives the same bits by
    # the unfused path. Once they have compiled, an error is not swallowed.
    def broken(*args):
        raise RuntimeError("no compiler here")

    x = torch_tensor(np.random.default_rng(7).normal(size=(128, 130)).astype("float32"))
    expected = fast._unfused_drop(
        x, (128, 130), 128 * 130, 4, 7, 0, kr.keep_threshold(0.3), torch_tensor(1 / 0.7)
    )
    for name in ("_fused_forward", "_fused_redraw"):
        monkeypatch.setattr(fast, name, broken)
    monkeypatch.setattr(fast, "_FUSED", {})
    with pytest.warns(RuntimeWarning, match="could not compile.*no compiler here"):
        first = kr.drop(x, (128, 130), 0.3, seed=4, counter=7)
    assert list(fast._FUSED.values()) == [False]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = kr.drop(x, (128, 130), 0.3, seed=4, counter=7)
    for y in (first, second):
        np.testing.assert_array_equal(to_np(y).view(np.uint32), to_np(expected).view(np.uint32))
    monkeypatch.setattr(fast, "_FUSED", {key: True for key in fast._FUSED})
    with pytest.raises(RuntimeError, match="no compiler here"):
        kr.drop(x, (128, 130), 0.3, seed=4, counter=7)


def skip_without_cuda():
    if not torch.cuda.is_available() or keras.ops.zeros(()).device.type != "cuda":
        pytest.skip("needs Keras on a CUDA GPU")


@pytest.mark.parametrize("shape", [(6, 5, 40), (128, 130)], ids=["unfused", "fused"])
def test_torch_drop_of_a_tensor_on_another_device_computes_on_keras_device(shape):
    # `drop` may get a tensor that is not on Keras' device (a CPU tensor while
    # Keras computes on a GPU): like every keras.ops call, it computes on
    # Keras' device, with the same bits, for a counter on either device.
    skip_without_cuda()
    x = np.random.default_rng(9).normal(size=shape).astype("float32")
    expected = to_np(kr.drop(torch_tensor(x), shape, 0.3, seed=4, counter=7)).view(np.uint32)
    for counter in (torch_tensor(7, dtype=torch.int32), torch.tensor(7, dtype=torch.int32)):
        y = kr.drop(torch.tensor(x), shape, 0.3, seed=4, counter=counter)
        assert y.device.type == "cuda"
        np.testing.assert_array_equal(to_np(y).view(np.uint32), expected)


def test_eager_torch_training_step_does_not_synchronize_the_gpu():
    # A blocking host-to-device copy (a Python number made into a tensor)
    # waits for everything queued on the GPU: in a fit() step of a few ms,
    # a few of them per layer can make the step CPU-bound.
    # The layers' training calls and their gradients must queue work only.
    skip_without_cuda()
    import keras_dropout_variants as kdv

    x = torch_tensor(np.random.default_rng(10).normal(size=(64, 200)).astype("float32"))
    layers = [
        kdv.Dropout(0.3, seed=1),  # fused kernels
        kdv.Dropout(0.3, noise_shape=(64, 1), seed=2),  # unfused, broadcast
        kdv.SeededDropout(0.3, seed=3),
        kdv.DropConnectDense(300, rate=0.3, seed=4, drop_bias=True),
    ]
    for layer in layers:
        layer(x, training=True)  # builds, compiles the fused kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for layer in layers:
            layer(x.requires_grad_(), training=True).sum().backward()
            x.grad = None
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [int(to_np(layer.counter)) for layer in layers] == [2, 2, 2, 2]


@pytest.mark.parametrize("seed,counter", [(0, 0), (2**32 - 1, 2**31 + 5), (123, 2**32 - 1)])
def test_key_of_a_device_counter_matches_the_reference(seed, counter):
    # A counter on a GPU derives the key with raw torch word arithmetic
    # (`_Words`); a CPU counter is read and the key computed in Python. Both
    # evaluate the engine's one definition of the key.
    expected = [int(k) for k in reference.key(seed, counter)]
    tensor = torch_tensor(np.uint32(counter).view(np.int32))
    for key in (kr._key(seed, tensor, fast._Words), fast._key(seed, tensor), kr._key(seed, counter)):
        assert [int(to_np(k)) % 2**32 if isinstance(k, torch.Tensor) else k for k in key] == expected


def test_scratch_buffers_are_capped_and_freed_when_their_thread_ends():
    # Each thread that hashes a mask on the unfused path gets its own
    # scratch buffers (12 MiB per device, and 192 KiB of NumPy words for
    # small masks); they must not outlive the thread.
    device = keras.ops.zeros(()).device
    refs, sizes = [], []

    def work():
        for shape in ((64, 64), (160, 128)):  # the NumPy hash, then torch's
            expected = reference.keep_mask(shape, 0.5, 1, 2)
            np.testing.assert_array_equal(to_np(kr.keep_mask(shape, 0.5, 1, 2)), expected)
        buffers = fast._scratch_buffers(device)
        refs.extend(weakref.ref(t) for t in buffers)
        sizes.append(sum(t.numel() * t.element_size() for t in buffers))
        if device.type == "cpu":
            words = fast._numpy_scratch()
            refs.extend(weakref.ref(a) for a in words)
            assert sum(a.nbytes for a in words) == 3 * 4 * fast._NUMPY_MAX_SIZE

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert len(refs) == (24 if device.type == "cpu" else 12) and sizes == [12 * 2**20] * 4
    assert all(ref() is None for ref in refs)


@pytest.mark.parametrize("size_from_limit", [-1, 0, 1], ids=["below", "at", "above"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_numpy_hash_of_small_masks_gives_the_bits_of_the_plain_path(monkeypatch, size_from_limit, dtype):
    # Small masks on a CPU are hashed with NumPy's uint32 arithmetic (up to
    # `_NUMPY_MAX_SIZE` elements), larger ones in place with torch. Around
    # that limit, with a stream that wraps past 2**32 and the last counter,
    # `keep_mask` and a broadcast `drop` (the unfused path, whose words come
    # from NumPy in x's width) must give the plain path's bits.
    size = fast._NUMPY_MAX_SIZE + size_from_limit
    args = (0.3, 2**32 - 1, 2**32 - 1, 2**32 - size // 2)
    x = torch_tensor(np.random.default_rng(9).normal(size=(2, size)).astype("float32"))
    x = keras.ops.cast(x, dtype)

    def run():
        keep = to_np(kr.keep_mask((size,), *args))
        y = kr.drop(x, (1, size), *args)
        return keep, np.asarray(to_np(keras.ops.cast(y, "float32"))).view(np.uint32)

    fast_bits = run()
    monkeypatch.setattr(_backends, "enabled", False)
    plain = run()
    np.testing.assert_array_equal(fast_bits[0], plain[0])
    np.testing.assert_array_equal(fast_bits[1], plain[1])
    np.testing.assert_array_equal(plain[0], reference.keep_mask((size,), *args))


@pytest.mark.parametrize("size", [fast._FUSED_MIN_SIZE, 3 * 7 * 11 * 73, 2**18 + 1])
def test_fused_kernel_is_called_without_dynamo_and_gives_the_plain_bits(monkeypatch, size):
    # The fused kernels are compiled by Inductor from a make_fx trace and
    # called directly: dynamo's per-call guards cost as much as the kernel.
    # Sizes that are not multiples of any vector width, forward and backward.
    rng = np.random.default_rng(10)
    x, upstream = (rng.normal(size=size).astype("float32") for _ in range(2))
    x[::5] = np.nan

    def run():
        v = torch_tensor(x, requires_grad=True)
        y = kr.drop(v, (size,), 0.4, seed=3, counter=11)
        y.backward(torch_tensor(upstream))
        return [to_np(t).view(np.uint32) for t in (y, v.grad)]

    assert_fused_gives_the_plain_bits(monkeypatch, run)
    v = torch_tensor(x)
    kernel = fast._fused_redraw if fast._redraws(v.device) else fast._fused_forward
    assert (v.device, v.dtype) in kernel.compiled and (v.device, v.dtype) not in kernel.through_dynamo


@pytest.mark.parametrize("view", ["offset", "transposed", "strided"])
def test_fused_kernels_take_views_and_expanded_gradients(monkeypatch, view):
    # The kernels are compiled for flat contiguous tensors (no dynamo guard
    # recompiles for other strides): views of x, and an expanded upstream
    # gradient (the gradient of a sum), are made contiguous first.
    base = np.random.default_rng(11).normal(size=(301, 260)).astype("float32")

    def run():
        whole = torch_tensor(base, requires_grad=True)
        v = {"offset": whole[1:], "transposed": whole.t(), "strided": whole[:, ::2]}[view]
        y = kr.drop(v, tuple(v.shape), 0.3, seed=5, counter=9)
        y.sum().backward()
        return [to_np(t).view(np.uint32) for t in (y, whole.grad)]

    assert_fused_gives_the_plain_bits(monkeypatch, run)


@pytest.mark.parametrize("hook", ["layer", "global"])
def test_layers_with_forward_hooks_go_through_keras_and_run_them(hook):
    # A direct call (`StochasticLayer._calls_directly`) would skip
    # `torch.nn.Module.__call__`, which runs the hooks: with a hook there,
    # the layer goes through Keras' `__call__` and torch's.
    layer = kdv.Dropout(0.5, seed=1)
    x = torch_tensor(np.ones((4, 8), "float32"))
    outputs = []

    def record(module, args, output):
        if module is layer:
            outputs.append(output)

    register = layer.register_forward_hook if hook == "layer" else torch.nn.modules.module.register_module_forward_hook
    handle = register(record)
    try:
        assert not layer._calls_directly((x,), {"training": True})
        y = layer(x, training=True)
    finally:
        handle.remove()
    assert len(outputs) == 1 and outputs[0] is y
    assert layer._calls_directly((x,), {"training": True})


def test_direct_calls_are_not_taken_under_torch_compile():
    layer = kdv.Dropout(0.5, seed=1)
    x = torch_tensor(np.ones((4, 8), "float32"))
    taken = []

    def step(v):
        taken.append(layer._calls_directly((v,), {"training": True}))
        return v * 2.0

    torch.compile(step, fullgraph=True)(x)
    assert taken == [False]
