"""PyTorch fast paths: in-place and NumPy hashing, fused kernels, an opaque
snapshot.

Eager torch runs each keras.ops call as a separate pass over memory into a
fresh tensor, so the plain hash makes about 20 passes and pays the page
faults of every fresh multi-MiB CPU tensor. Three paths replace it:

- Unfused (`keep_mask`, and `drop` of small or broadcast masks): the engine's
  steps evaluated with in-place torch arithmetic (`_InPlaceWords`) in reused
  scratch chunks, or for a small mask on a CPU with NumPy (`_NumpyWords`),
  whose ufuncs cost a third of a torch op's dispatch. `drop` then ANDs the
  bits of `x * scale` with int words (-1 keep, 0 drop) instead of selecting
  with `torch.where`, whose CPU kernel branches per element and costs more
  than drawing the mask.
- Fused (eager `drop` with a mask of x's shape and at least
  `_FUSED_MIN_SIZE` elements): one kernel draws and applies the mask,
  traced from the engine's keras.ops code and compiled by Inductor once per
  device and dtype (the size is symbolic), then called directly, without
  dynamo's per-call guards (`_Kernel`). See `_FusedDrop` for its backward
  pass. Where it cannot compile (no C++ compiler, say), a warning says so
  and the unfused path runs instead.
- Under torch.compile the plain keras.ops path is traced, except `drop`,
  which runs in `_FusedDrop` so that the backward pass redraws the mask from
  the saved key instead of storing a bool mask (the partitioner's default,
  and Inductor writes bools slowly).

Every path computes the engine's integer function, so all give the same
bits; `tests/test_engine.py` and `tests/test_torch_engine.py` check it.

Global state, all bounded: scratch buffers per thread and device (at most
`3 * 4 * _CHUNK` bytes = 12 MiB each, and three NumPy arrays of
`_NUMPY_MAX_SIZE` words, freed when their thread ends), the fused kernels
compiled per device and dtype, and small caches of constants keyed by
(value, dtype, device).
"""

import functools
import math
import threading
import warnings

import keras
import numpy as np
import torch
from keras import ops

from keras_dropout_variants import random as _random

_i32 = _random._i32
_U32 = _random._U32


class _Words:
    """The engine's word arithmetic with raw torch ops: keras.ops' per-call
    overhead on the 0-d tensors of a key costs more than hashing a
    784x512 mask."""

    @staticmethod
    def add(a, b):
        if isinstance(a, int):
            a, b = b, a
        return a.add(_i32(b) if isinstance(b, int) else b)

    @staticmethod
    def xor(a, b):
        if isinstance(a, int):
            a, b = b, a
        return a.bitwise_xor(_i32(b) if isinstance(b, int) else b)

    @staticmethod
    def mul(a, c):
        return a.mul(_i32(c))

    @staticmethod
    def xorshift(a, k):
        return a.bitwise_xor(torch.bitwise_right_shift(a, k).bitwise_and_((1 << (32 - k)) - 1))


class _InPlaceWords:
    """The word arithmetic in place on int32 tensors, with `tmp` as scratch:
    each step overwrites its first argument."""

    def __init__(self, tmp):
        self.tmp = tmp

    def add(self, a, b):
        return a.add_(_i32(b) if isinstance(b, int) else b)

    def xor(self, a, b):
        return a.bitwise_xor_(_i32(b) if isinstance(b, int) else b)

    def mul(self, a, c):
        return a.mul_(_i32(c))

    def xorshift(self, a, k):
        torch.bitwise_right_shift(a, k, out=self.tmp)
        return a.bitwise_xor_(self.tmp.bitwise_and_((1 << (32 - k)) - 1))


def _key(seed, counter):
    """The engine's key. A counter on the CPU is read (no device sync) and
    the key computed in Python; one on a GPU stays there."""
    if isinstance(counter, torch.Tensor) and counter.device.type == "cpu":
        counter = int(counter) % _U32
    if isinstance(counter, int):
        return _random._key(seed, counter)
    return _random._key(seed, counter, _Words)


def _add_words(a, b):
    """`a + b` mod 2**32 for ints and int32 tensors. A Python int joins a
    tensor as a kernel argument: made into a tensor, it would be a blocking
    host-to-device copy, which waits for everything queued on a GPU."""
    if isinstance(a, int) and isinstance(b, int):
        return _random._PyWords.add(a, b)
    return _Words.add(a, b)


# Masks are hashed in chunks of `_CHUNK` elements in reused int32 scratch
# buffers: fresh multi-MiB CPU tensors come from mmap, and their page faults
# cost more than the arithmetic. 2**20 was chosen by timing the hash of
# masks of one to two million elements with chunks of 2**16 to 2**20
# elements (larger chunks were faster: fewer Python-level calls per element)
# and keeps the scratch at 12 MiB per thread and device.
_CHUNK = 1 << 20
_scratch = threading.local()  # freed with its thread


def _scratch_buffers(device):
    """(indices 0..chunk-1, h, tmp) for this thread and `device`."""
    buffers = getattr(_scratch, "by_device", None)
    if buffers is None:
        buffers = _scratch.by_device = {}
    if device not in buffers:
        indices = torch.arange(_CHUNK, dtype=torch.int32, device=device)
        buffers[device] = (indices, torch.empty_like(indices), torch.empty_like(indices))
    return buffers[device]


class _NumpyWords:
    """The word arithmetic in place on NumPy uint32 arrays (wrapping, with
    logical shifts), with `tmp` as scratch: for small masks on a CPU, where
    a NumPy ufunc costs a third of a torch op's dispatch."""

    def __init__(self, tmp):
        self.tmp = tmp

    def add(self, a, b):
        return np.add(a, np.uint32(b) if isinstance(b, int) else b, out=a)

    def xor(self, a, b):
        return np.bitwise_xor(a, np.uint32(b) if isinstance(b, int) else b, out=a)

    def mul(self, a, c):
        return np.multiply(a, np.uint32(c), out=a)

    def xorshift(self, a, k):
        return np.bitwise_xor(a, np.right_shift(a, k, out=self.tmp), out=a)


# Masks of at most this many elements, on a CPU, with a key known in Python,
# are hashed with NumPy (`_NumpyWords`), which runs the ~15 steps of the hash
# on one thread with a fraction of torch's per-op dispatch. On a 2-core CPU
# NumPy's keep mask took 19/37/107 microseconds at 2**12/2**14/2**16
# elements, torch's in-place ops 59/79/141; the limit stays at 2**14, where
# the fused kernels take over masks of x's shape, and past which torch's
# ops run on several threads (NumPy's on one) on a CPU with more cores.
_NUMPY_MAX_SIZE = 1 << 14


def _numpy_keep(size, base, k1, limit, dtype):
    """The keep decision of elements 0..size-1 of the stream `(base, k1)`
    (Python ints) as a NumPy array: bool, or `dtype`'s -1 (keep) / 0 (drop)
    words. Its memory is fresh: the caller may hand it to torch."""
    indices, h, tmp = _numpy_scratch()
    h, tmp = h[:size], tmp[:size]
    np.add(indices[:size], np.uint32(base), out=h)
    _random._element_hash(h, k1, _NumpyWords(tmp))
    keep = np.less(h.view(np.int32), np.int32(limit))
    if dtype == np.bool_:
        return keep
    return np.negative(keep, dtype=dtype)  # True -> -1: all bits set


def _numpy_scratch():
    """(indices 0..n-1, h, tmp) as NumPy uint32 arrays of `_NUMPY_MAX_SIZE`
    elements, for this thread."""
    buffers = getattr(_scratch, "numpy", None)
    if buffers is None:
        indices = np.arange(_NUMPY_MAX_SIZE, dtype=np.uint32)
        buffers = _scratch.numpy = (indices, np.empty_like(indices), np.empty_like(indices))
    return buffers


def _stream(seed, counter, offset):
    """`(base, k1)` of the stream (see `random._stream_key`): Python ints
    where the counter and offset are, or sit on a CPU."""
    k0, k1 = _key(seed, counter)
    return _add_words(k0, offset), k1


def _keep(size, base, k1, limit, dtype, device=None):
    """The keep decision of elements 0..size-1 of the stream `(base, k1)`
    as a new flat tensor of `dtype`: bool, or an integer dtype, 1 (keep) / 0
    (drop), on `device` (by default the key's, or Keras' device)."""
    if device is None:
        tensors = [w for w in (base, k1) if isinstance(w, torch.Tensor)]
        device = tensors[0].device if tensors else ops.zeros(()).device  # Keras' device
    if _numpy_hashes(size, base, k1, device):
        return torch.from_numpy(_numpy_keep(size, base, k1, limit, np.bool_)).to(dtype)
    base, k1 = (w.to(device) if isinstance(w, torch.Tensor) else w for w in (base, k1))
    indices, h, tmp = _scratch_buffers(device)
    out = torch.empty(size, dtype=dtype, device=device)
    for start in range(0, size, _CHUNK):
        n = min(_CHUNK, size - start)
        hn, tn = h[:n], tmp[:n]
        if isinstance(base, int):
            torch.add(indices[:n], _i32(base + start), out=hn)
        else:
            torch.add(indices[:n], base, out=hn).add_(_i32(start))
        _random._element_hash(hn, k1, _InPlaceWords(tn))
        # Comparing into int32 and converting is faster than into bool.
        torch.lt(hn, limit, out=tn)
        out[start:start + n].copy_(tn)
    return out


def _numpy_hashes(size, base, k1, device):
    """Whether the mask is hashed with NumPy (see `_NUMPY_MAX_SIZE`)."""
    return (
        size <= _NUMPY_MAX_SIZE and device.type == "cpu"
        and isinstance(base, int) and isinstance(k1, int)
    )


def keep_mask(size, seed, counter, offset, threshold):
    if torch.compiler.is_compiling():
        return _random._flat_keep(size, seed, counter, offset, threshold)
    return _eager_keep_mask(size, seed, counter, offset, threshold)


@torch.compiler.disable  # see `_Drop`
def _eager_keep_mask(size, seed, counter, offset, threshold):
    return _keep(size, *_stream(seed, counter, offset), _random._limit(threshold), torch.bool)


# The signed integer dtype of each float dtype's width, to mask its bits.
_BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}

# The same, as NumPy dtypes.
_NUMPY_BITS = {float_dtype: np.dtype(str(bits).removeprefix("torch.")) for float_dtype, bits in _BITS.items()}

# Smallest mask that eager `drop` hands to the fused kernels: below it, the
# NumPy hash and a torch AND (the unfused path) cost less than a kernel
# call. Chosen by timing both through `drop` on flat float32 masks of 2**8
# to 2**16 elements on a 2-core CPU, with and without a backward pass: they
# cross between 2**13 and 2**14 elements.
_FUSED_MIN_SIZE = 1 << 14
# (device type, dtype) -> whether the fused kernels compiled there: one
# entry per kind of device and float dtype.
_FUSED = {}
# Device types whose fused forward pass keeps the keep words for the
# backward pass instead of redrawing the mask there (see `_FusedDrop`).
_KEEP_WORDS_ON = ("cpu",)


def _redraws(device):
    """Whether fused kernels on `device` redraw the mask in the backward pass
    (else the forward pass keeps the keep words)."""
    return device.type not in _KEEP_WORDS_ON


def drop(x, shape, size, seed, counter, offset, threshold, rate):
    if torch.compiler.is_compiling():
        base, k1 = _random._stream_key(seed, counter, offset)
        words = ops.stack([_random._as_word(w) for w in (base, k1, _random._limit(threshold))])
        return _FusedDrop.apply(x, words, _random._scale(x, rate), tuple(shape))
    if x.dtype not in _BITS:  # no integer view of its width: select
        keep = ops.reshape(keep_mask(size, seed, counter, offset, threshold), shape)
        return _random._apply_scale(x, keep, _random._scale(x, rate))
    return _eager_drop(x, shape, size, seed, counter, offset, threshold, rate)


@functools.lru_cache(maxsize=256)
def _constant_words(words, device):
    return torch.tensor(words, dtype=torch.int32, device=device)


def _stacked_words(words, device):
    """The engine words `words` (ints or 0-d int tensors) as one int32 tensor
    on `device`. A Python int becomes a fill of a tensor already there, and
    on another device than the CPU, words that are all ints are cached, so
    that no call makes a blocking host-to-device copy. On the CPU they are
    made anew: the cache, whose keys change with every step's counter,
    would hold hundreds of small tensors among the step's large ones, which
    then come from freshly faulted pages (measured: a 256x1024 drop took
    230 instead of 180 microseconds, with 60 more page faults per call)."""
    tensors = [w for w in words if isinstance(w, torch.Tensor)]
    if not tensors:
        words = tuple(_i32(w) for w in words)
        if device.type == "cpu":
            return torch.tensor(words, dtype=torch.int32)
        return _constant_words(words, device)
    like = tensors[0].to(device=device, dtype=torch.int32)
    return torch.stack([like.new_full((), _i32(w)) if isinstance(w, int) else w.to(like) for w in words])


@functools.lru_cache(maxsize=256)
def _scale(rate, dtype, device):
    """1 / (1 - rate) as a cached 0-d tensor: made anew on every call, it
    would be a blocking host-to-device copy on a GPU."""
    return torch.tensor(1.0 / (1.0 - rate), dtype=dtype, device=device)


@torch.compiler.disable  # see `_Drop`
def _eager_drop(x, shape, size, seed, counter, offset, threshold, rate):
    """`drop` on eager torch: the fused kernels for a large mask of x's
    shape, else the unfused path."""
    scale = _scale(rate, x.dtype, x.device)
    fused = (x.device.type, x.dtype)
    if size >= _FUSED_MIN_SIZE and tuple(shape) == tuple(x.shape) and _FUSED.get(fused, True):
        limit = _random._limit(threshold)
        if _redraws(x.device):
            # The kernel derives the key itself: a key derived from a counter
            # on a GPU would take some 30 launches of 0-d ops.
            words = _stacked_words((seed, counter, offset, limit), x.device)
        else:
            words = _stacked_words((*_stream(seed, counter, offset), limit), x.device)
        try:
            out = _FusedDrop.apply(x, words, scale, tuple(shape))
        except Exception as error:  # noqa: BLE001 - any failure to build the kernel
            if fused in _FUSED:  # it compiled before: a real error
                raise
            _FUSED[fused] = False
            warnings.warn(
                f"keras_dropout_variants could not compile its fused dropout kernel "
                f"for {fused[1]} on {fused[0]} ({type(error).__name__}: {error}). "
                "Eager torch uses the slower unfused path there.",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            _FUSED[fused] = True
            return out
    return _unfused_drop(x, shape, size, seed, counter, offset, threshold, scale)


def _unfused_drop(x, shape, size, seed, counter, offset, threshold, scale):
    """The bits of `x * scale` ANDed with int words (-1 keep, 0 drop), so a
    dropped element is +0.0 whatever `x` held. The words are kept as int8
    (one byte each, like a bool mask) for the backward pass, which masks the
    upstream gradient the same way. A small mask on a CPU (see
    `_NUMPY_MAX_SIZE`) comes from NumPy as words of x's width, which the
    AND takes as they are."""
    base, k1 = _stream(seed, counter, offset)
    limit = _random._limit(threshold)
    if _numpy_hashes(size, base, k1, x.device):
        words = torch.from_numpy(_numpy_keep(size, base, k1, limit, _NUMPY_BITS[x.dtype]))
    else:
        words = _keep(size, base, k1, limit, torch.int8, x.device).neg_()
    words = words.reshape(shape)
    if torch.is_grad_enabled() and x.requires_grad:
        return _Drop.apply(x, words, scale)
    return _mask_and_scale(x, words, scale)  # no graph to record: no Function


def _mask_and_scale(v, words, scale):
    """`v * scale` ANDed with the integer `words` (-1 or 0) converted to v's
    width. Mixed-width in-place ops would convert full-size `words` into a
    fresh full-size tensor, so those are converted chunk by chunk in a
    scratch buffer, and the output is written chunk by chunk."""
    bits = _BITS[v.dtype]
    if words.shape != v.shape or words.element_size() == v.element_size():
        out = torch.mul(v, scale)
        out.view(bits).bitwise_and_(words.to(bits))
        return out
    out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    flat_v, flat_out, flat_words = v.reshape(-1), out.view(-1), words.reshape(-1)
    wide = _scratch_buffers(v.device)[1].view(bits)
    for start in range(0, len(flat_v), len(wide)):
        stop = min(start + len(wide), len(flat_v))
        w = wide[: stop - start].copy_(flat_words[start:stop])
        torch.mul(flat_v[start:stop], scale, out=flat_out[start:stop])
        flat_out[start:stop].view(bits).bitwise_and_(w)
    return out


# For callers outside the eager entry points (backward passes, run by the
# autograd engine): see `_Drop`.
_masked_scale = torch.compiler.disable(_mask_and_scale)


class _Drop(torch.autograd.Function):
    """Dropout by int words, for the unfused path.

    This and the other eager functions are `torch.compiler.disable`d: when a
    compiled region falls back to eager (a graph break, the recompile
    limit), dynamo tries each frame it then runs, this backward pass too,
    and their in-place int views of float tensors fail in AOTAutograd.
    """

    @staticmethod
    def forward(ctx, x, words, scale):
        ctx.save_for_backward(words, scale)
        return _mask_and_scale(x, words, scale)  # inside `_eager_drop`

    @staticmethod
    def backward(ctx, upstream):
        words, scale = ctx.saved_tensors
        return _masked_scale(upstream, words, scale), None, None


def _redrawn(v, words, scale, shape):
    """`_apply_scale(v, keep, scale)` with the keep mask of `shape` drawn
    from `words` = (base, k1, limit), an int32 tensor."""
    keep = _random._keep_from_key(math.prod(shape), words[0], words[1], words[2])
    return _random._apply_scale(v, ops.reshape(keep, shape), scale)


def _drawn_and_words(v, words, scale):
    """`_redrawn` on a flat tensor, and its keep words (-1 keep, 0 drop) as
    int32: Inductor's CPU code writes narrower ints slowly."""
    keep = _random._keep_from_key(v.shape[0], words[0], words[1], words[2])
    return _random._apply_scale(v, keep, scale), ops.negative(ops.cast(keep, "int32"))


def _redrawn_from_counter(v, words, scale):
    """`_redrawn` on a flat tensor, with words = (seed, counter, offset,
    limit): the key is derived inside the kernel."""
    k0, k1 = _random._key(words[0], words[1])
    keep = _random._keep_from_key(v.shape[0], ops.add(k0, words[2]), k1, words[3])
    return _random._apply_scale(v, keep, scale)


class _Kernel:
    """`fn` (of a flat float tensor and int32 words) as one Inductor kernel
    per device and dtype, compiled on first use with a symbolic size (one
    kernel for every size), and called directly.

    Through `torch.compile`, every call would pass dynamo's frame: guard
    evaluation and a cache lookup, 30-120 microseconds a call on a CPU,
    more than the kernel itself at small sizes and in a training step. Here
    the function is traced once with `make_fx` and compiled with
    `torch._inductor.compile`, which the caller then calls like any
    function; it compiles for sizes of at least 2 (as dynamo's guards
    would), and `_FUSED_MIN_SIZE` is far above.
    """

    def __init__(self, fn):
        self.fn = fn
        self.compiled = {}  # (device, dtype) -> callable: one per kind of tensor
        self.through_dynamo = set()  # the kinds compiled by torch.compile

    def __call__(self, v, *args):
        kind = (v.device, v.dtype)
        if kind not in self.compiled:
            self.compiled[kind] = self._compile(kind, v, *args)
        return tuple(self.compiled[kind](v, *args))

    def _compile(self, kind, *example):
        from torch.fx.experimental.proxy_tensor import make_fx

        def traced(*inputs):  # always a tuple of outputs
            outputs = self.fn(*inputs)
            return outputs if isinstance(outputs, tuple) else (outputs,)

        try:
            graph = make_fx(traced, tracing_mode="symbolic")(*example)
            # The traced inputs, symbolic sizes and all: compiled from these,
            # the kernel takes any size.
            fakes = [node.meta["val"] for node in graph.graph.nodes if node.op == "placeholder"]
            return torch._inductor.compile(graph, fakes)
        except Exception:  # noqa: BLE001 - e.g. float64 in torch 2.13: through dynamo
            # (where that fails too, the first call raises, and `_eager_drop`
            # falls back to the unfused path)
            self.through_dynamo.add(kind)
            return torch.compile(traced, dynamic=True, fullgraph=True)


def _flat(v):
    """`v` as the flat contiguous tensor the kernels take: they are compiled
    for a stride of 1 (a strided view, or an expanded upstream gradient,
    would be refused), and without dynamo no guard recompiles for others."""
    return v.detach().contiguous().view(-1)


# Eager torch's fused kernels, on flat tensors.
_fused_redraw = _Kernel(_redrawn_from_counter)
_fused_forward = _Kernel(_drawn_and_words)


class _FusedDrop(torch.autograd.Function):
    """`drop` whose passes each draw and apply the mask in one kernel.

    Under torch.compile it is traced into the caller's graph, saves the key
    words and redraws the mask in the backward pass. In eager mode the
    kernels are compiled on their own. On a CPU, where the hash is
    compute-bound and redrawing the mask costs about three times as much as
    ANDing saved words, the forward kernel also writes the keep words (4
    bytes per element, until the backward pass ANDs them in); on other
    devices the backward pass redraws the mask.

    `words`: (base, k1, limit) under torch.compile and for the CPU's
    kernels; (seed, counter, offset, limit) for the eager redrawing kernel,
    which derives the key itself (see `_eager_drop`).
    """

    @staticmethod
    def forward(ctx, x, words, scale, shape):
        ctx.shape = shape
        ctx.redraw = _redraws(x.device) or torch.compiler.is_compiling()
        if torch.compiler.is_compiling():
            # An opaque copy: the backward's mask is then not the forward's
            # (a common subexpression), which the partitioner would save.
            ctx.save_for_backward(_opaque_copy(words), scale)
            return _redrawn(x, words, scale, shape)
        flat = _flat(x)
        if ctx.redraw:
            ctx.save_for_backward(words, scale)
            return _fused_redraw(flat, words, scale)[0].view(shape)
        out, keep = _fused_forward(flat, words, scale)
        ctx.save_for_backward(keep.view(shape), scale)
        return out.view(shape)

    @staticmethod
    def backward(ctx, upstream):
        saved, scale = ctx.saved_tensors
        if not ctx.redraw:
            grad = _masked_scale(upstream, saved, scale)
        elif torch.compiler.is_compiling():
            grad = _redrawn(upstream, saved, scale, ctx.shape)
        else:
            grad = _fused_redraw(_flat(upstream), saved, scale)[0]
            grad = grad.view(ctx.shape)
        return grad, None, None, None


# Defined at import: a custom op defined inside a compiled region would
# break dynamo's graph.
@torch.library.custom_op("keras_dropout_variants::snapshot", mutates_args=())
def _opaque_copy(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_opaque_copy.register_fake
def _(x):
    return torch.empty_like(x)


def snapshot(value):
    """A clone is not enough under torch.compile, whose partitioner may
    recompute a mask in the backward pass from the graph input, after the
    assignment, and so differentiate through the next mask: there the copy
    is an opaque custom op, whose output is saved instead."""
    if not torch.compiler.is_compiling():  # eager autograd recomputes nothing
        return torch.clone(value.value if isinstance(value, keras.Variable) else value)
    return _opaque_copy(ops.convert_to_tensor(value))


def calls_directly(module, x):
    """Whether calling the Keras layer `module`'s `call` directly is what
    `torch.nn.Module.__call__` would do with `x`: an eager tensor without a
    Keras mask, no hooks, no `Module.compile`, no dynamo or TorchScript
    tracing (`StochasticLayer._calls_directly` checks the rest)."""
    return (
        isinstance(x, torch.Tensor)
        and getattr(x, "_keras_mask", None) is None
        and not torch.compiler.is_compiling()
        and not torch._C._get_tracing_state()
        and getattr(module, "_compiled_call_impl", None) is None
        and not _has_hooks(module)
    )


def _has_hooks(module):
    """`torch.nn.Module._call_impl`'s test for hooks to run."""
    hooks = torch.nn.modules.module
    return bool(
        module._backward_hooks or module._backward_pre_hooks
        or module._forward_hooks or module._forward_pre_hooks
        or hooks._global_backward_pre_hooks or hooks._global_backward_hooks
        or hooks._global_forward_hooks or hooks._global_forward_pre_hooks
    )


def first_row(x):
    """With an initialized `torch.distributed` process group of several
    ranks: the rows of the ranks before this one, gathered from all ranks
    (one collective: every rank must make this call, as data-parallel
    training does)."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return None
    world = dist.get_world_size()
    if world == 1:
        return None
    # Collectives run on the process group's device type: CPU for gloo.
    on_cpu = "gloo" in str(dist.get_backend())
    device = torch.device("cpu") if on_cpu else torch.device("cuda", torch.cuda.current_device())
    mine = torch.tensor([x.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(sizes, mine)
    return int(torch.cat(sizes)[: dist.get_rank()].sum().item())  # one host sync
