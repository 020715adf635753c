"""Pure functional dropout ops, one beside each layer.

Every op draws its masks from `keras_dropout_variants.random`, so a layer and
its op give the same bits for the same `(seed, counter)` on every backend.
"""

import math

from keras import ops

from keras_dropout_variants import _checks
from keras_dropout_variants import random as _random

__all__ = [
    "dropout",
    "drop_path",
    "drop_block",
    "drop_path_rates",
    "alpha_dropout",
    "gaussian_dropout",
    "gaussian_noise",
    "drop_connect",
    "drop_connect_gaussian",
]


def resolve_noise_shape(noise_shape, input_shape):
    """The mask shape: `noise_shape` with `None` entries taken from the input.

    `input_shape` may hold scalar tensors for dynamic dimensions (as
    `ops.shape` returns in a TensorFlow graph); those cannot be checked here.
    """
    input_shape = tuple(input_shape)
    if noise_shape is None:
        return input_shape
    noise_shape = _checks.noise_shape(noise_shape)
    static_input = tuple(d if isinstance(d, int) else None for d in input_shape)
    if len(noise_shape) != len(input_shape):
        raise ValueError(
            f"`noise_shape` {noise_shape} has rank {len(noise_shape)}, but "
            f"the input of shape {static_input} has rank {len(input_shape)}. "
            "They must have the same rank."
        )
    shape = []
    for axis, (n, d) in enumerate(zip(noise_shape, input_shape)):
        if n is None:
            shape.append(d)
        elif n == 1 or not isinstance(d, int) or n == d:
            shape.append(n)
        else:
            raise ValueError(
                f"`noise_shape` {noise_shape} does not broadcast to the input "
                f"of shape {static_input}: entry {n} on axis {axis} must be 1, "
                f"None or the input's dimension {d}."
            )
    return tuple(shape)


def dropout(x, rate, noise_shape=None, seed=None, counter=0, offset=0, first_row=0):
    """Inverted dropout of `x` with a mask from the package's engine.

    Kept elements are scaled by `1 / (1 - rate)`; dropped ones are exactly 0,
    even where `x` is NaN or inf. The mask is a pure function of
    `(seed, counter, offset)`, identical on every backend and device.

    Args:
        x: floating-point tensor (float16, bfloat16, float32 or float64; the
            dtype is kept).
        rate: float in [0, 1], the probability of dropping an element.
        noise_shape: optional tuple, the shape of the mask, broadcast along
            entries equal to 1 (as in `keras.layers.Dropout`); `None` entries
            take the input's dimension.
        seed: Python int in [0, 2**32). Required: an op called with a fresh
            random seed inside a compiled function would freeze one mask.
        counter: int in [0, 2**32) or integer scalar tensor selecting the
            mask for this seed (e.g. the training step).
        offset: int or integer scalar tensor: row-major index of the first
            mask element in a larger, global mask.
        first_row: int or integer scalar tensor: the global index of x's
            first row (axis 0) when x is a shard of a global batch. The mask
            is then those rows of the global batch's mask, i.e. `offset`
            moves by `first_row` mask rows; a mask shared along axis 0
            (`noise_shape[0] == 1`) is unchanged. See
            `keras_dropout_variants.distribute`.

    Returns:
        A tensor of the shape and dtype of `x`.

    Example:

    >>> import keras
    >>> from keras_dropout_variants.ops import dropout
    >>> x = keras.ops.ones((2, 4))
    >>> y = dropout(x, 0.5, seed=1, counter=0)
    >>> sorted(set(keras.ops.convert_to_numpy(y).ravel().tolist())) in (
    ...     [0.0, 2.0], [0.0], [2.0])
    True
    """
    _required_seed(seed, "dropout")
    x = ops.convert_to_tensor(x)
    _checks.floating(x, "x")
    # Without a noise shape the mask is x's own (None: its rank may be
    # unknown, in a TensorFlow graph).
    mask_shape = None if noise_shape is None else resolve_noise_shape(noise_shape, ops.shape(x))
    offset = _row_offset(x, noise_shape, mask_shape, offset, first_row)
    return _random.drop(x, mask_shape, rate, seed, counter, offset)


def gaussian_dropout(x, rate, noise_shape=None, seed=None, counter=0, first_row=0):
    """Multiplicative Gaussian noise: `x * (1 + sqrt(rate / (1 - rate)) * z)`.

    What `keras.layers.GaussianDropout` computes in training (noise of mean
    1 and variance `rate / (1 - rate)`, the variance of inverted dropout's
    factor), with `z` standard normal from the engine's `normal`: drawn in
    float32, applied in x's dtype. `z` of `(seed, counter)` is the same on
    every backend to float rounding (the inverse CDF is each backend's own).

    Args:
        x: floating-point tensor.
        rate: float in [0, 1). Rate 0 returns `x`; rate 1 raises a
            `ValueError` (the noise's standard deviation is infinite there).
        noise_shape: optional tuple: the shape of the noise, broadcast along
            entries equal to 1, as in `dropout`.
        seed: Python int in [0, 2**32). Required.
        counter: int in [0, 2**32) or integer scalar tensor selecting the
            draw.
        first_row: int or integer scalar tensor: x's first row in a global
            batch (see `dropout`).

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    x, rate = _noise_operands(x, rate, seed, "gaussian_dropout")
    if rate == 0.0:
        return x
    z = _standard_normal(x, noise_shape, seed, counter, first_row)
    factor = ops.add(ops.multiply(z, math.sqrt(rate / (1.0 - rate))), 1.0)
    return ops.multiply(x, ops.cast(factor, x.dtype))


def gaussian_noise(x, stddev, noise_shape=None, seed=None, counter=0, first_row=0):
    """Additive Gaussian noise: `x + stddev * z`.

    What `keras.layers.GaussianNoise` computes in training, with `z`
    standard normal from the engine's `normal` (drawn in float32, applied in
    x's dtype; the same on every backend to float rounding).

    Args:
        x: floating-point tensor.
        stddev: finite float >= 0, the noise's standard deviation (0: `x`).
        noise_shape: optional tuple: the shape of the noise, broadcast along
            entries equal to 1, as in `dropout`.
        seed: Python int in [0, 2**32). Required.
        counter: int in [0, 2**32) or integer scalar tensor selecting the
            draw.
        first_row: int or integer scalar tensor: x's first row in a global
            batch (see `dropout`).

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    _required_seed(seed, "gaussian_noise")
    stddev = _checks.stddev(stddev)
    x = ops.convert_to_tensor(x)
    _checks.floating(x, "x")
    if stddev == 0.0:
        return x
    z = _standard_normal(x, noise_shape, seed, counter, first_row)
    # x - (-stddev * z), the same bits as x + stddev * z: Keras' TensorFlow
    # `add` takes an operand that squeezes to a vector for a bias, and adds
    # a (6, 1) noise to a (6, 6) x along the wrong axis.
    return ops.subtract(x, ops.cast(ops.multiply(z, -stddev), x.dtype))


# SELU's -alpha * scale (Klambauer et al., 2017): the value a dropped unit
# takes before AlphaDropout's affine correction, as in Keras.
ALPHA_PRIME = -1.7580993408473766


def alpha_dropout(x, rate, noise_shape=None, seed=None, counter=0, first_row=0):
    """Alpha dropout (Klambauer et al., 2017), for self-normalizing networks.

    What `keras.layers.AlphaDropout` computes in training: dropped elements
    are set to SELU's negative saturation `alpha' = -1.7580993408473766`,
    then `a * v + b` with `a = ((1 - rate) * (1 + rate * alpha'**2))**-0.5`
    and `b = -a * alpha' * rate`, which keeps mean 0 and variance 1 for
    standardized inputs. The keep decisions are the engine's keep mask, the
    same bits as `dropout` with this noise shape. A dropped element becomes
    exactly `a * alpha' + b`, even where x is NaN or inf.

    Args:
        x: floating-point tensor.
        rate: float in [0, 1). Rate 0 returns `x`; rate 1 raises a
            `ValueError` (no finite `a` exists).
        noise_shape: optional tuple, the shape of the mask, as in `dropout`.
        seed: Python int in [0, 2**32). Required.
        counter: int in [0, 2**32) or integer scalar tensor selecting the
            mask.
        first_row: int or integer scalar tensor: x's first row in a global
            batch (see `dropout`).

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    x, rate = _noise_operands(x, rate, seed, "alpha_dropout")
    if rate == 0.0:
        return x
    mask_shape, offset = _address(x, noise_shape, first_row)
    keep = _random.keep_mask(mask_shape, rate, seed, counter, offset)
    a = ((1.0 - rate) * (1.0 + rate * ALPHA_PRIME**2)) ** -0.5
    b = -a * ALPHA_PRIME * rate
    kept = ops.where(keep, x, ops.convert_to_tensor(ALPHA_PRIME, dtype=x.dtype))
    return ops.add(ops.multiply(kept, ops.convert_to_tensor(a, x.dtype)), ops.convert_to_tensor(b, x.dtype))


def drop_path(x, rate, seed=None, counter=0, scale_by_keep=True, mode="row", first_row=0):
    """Stochastic depth: drops the whole of `x` per example (or per batch).

    Meant for a residual branch, `shortcut + drop_path(branch(x), ...)`
    (Huang et al., 2016). `mode="row"` keeps each example's input with
    probability `1 - rate`: the mask has shape `(batch, 1, ..., 1)`, so with
    `scale_by_keep` this is `dropout(x, rate, noise_shape=(batch, 1, ...,
    1))`, the same bits. `mode="batch"` keeps or drops the whole batch at
    once (mask shape `(1, ..., 1)`). Kept inputs are scaled by
    `1 / (1 - rate)` when `scale_by_keep`; rate 1 gives zeros.

    Args:
        x: floating-point tensor with a batch axis first.
        rate: float in [0, 1] (or a float scalar tensor: a scheduled rate),
            the probability of dropping an example's input.
        seed: Python int in [0, 2**32). Required.
        counter: int in [0, 2**32) or integer scalar tensor selecting the
            mask.
        scale_by_keep: whether kept inputs are scaled by `1 / (1 - rate)`.
        mode: `"row"` (one decision per example) or `"batch"`.
        first_row: int or integer scalar tensor: x's first row in a global
            batch (see `dropout`; ignored by `mode="batch"`).

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    _required_seed(seed, "drop_path")
    mode = _checks.one_of(mode, "mode", ("row", "batch"))
    scale_by_keep = _checks.boolean(scale_by_keep, "scale_by_keep")
    x = ops.convert_to_tensor(x)
    _checks.floating(x, "x")
    if len(x.shape) == 0:
        raise _checks.invalid(ValueError, "x", "a tensor with a batch axis", x)
    rest = (1,) * (len(x.shape) - 1)
    noise_shape = ((None,) if mode == "row" else (1,)) + rest
    if scale_by_keep:
        return dropout(x, rate, noise_shape, seed=seed, counter=counter, first_row=first_row)
    mask_shape, offset = _address(x, noise_shape, first_row)
    keep = _random.keep_mask(mask_shape, rate, seed, counter, offset)
    return ops.where(keep, x, ops.zeros((), dtype=x.dtype))


def drop_block(x, rate, block_size, data_format="channels_last", seed=None, counter=0, first_row=0):
    """DropBlock (Ghiasi, Lin and Le, 2018): drops contiguous blocks of
    feature maps, for inputs of 1, 2 or 3 spatial dimensions.

    Per example and channel, block anchors are drawn only where a whole block
    fits in the map: an anchor at `p` drops the block `p .. p + size - 1` on
    each spatial axis, with `size = min(block_size, map size)`. Each valid
    anchor is drawn with the paper's probability
    `gamma = rate * prod(map) / (prod(size) * prod(map - size + 1))` (at most
    1), from the engine (`keep_mask` of the anchors' shape with rate
    `gamma`, negated: the same bits on every backend); expanding anchors into
    blocks is a max-pool, deterministic. Even block sizes work.

    Kept values are scaled by `mask size / kept count` **per example**, so an
    example's output does not depend on the rest of its batch (nor on how a
    batch is split over replicas); an example with nothing kept gives zeros.
    Rate 0 returns `x`, rate 1 zeros.

    Args:
        x: floating-point tensor `(batch, *spatial, channels)`
            (`"channels_last"`) or `(batch, channels, *spatial)`, with 1 to 3
            spatial axes of static size.
        rate: float in [0, 1] (or a float scalar tensor: a scheduled rate).
        block_size: positive int, the block's size on every spatial axis.
        data_format: `"channels_last"` or `"channels_first"`.
        seed: Python int in [0, 2**32). Required.
        counter: int in [0, 2**32) or integer scalar tensor selecting the
            mask.
        first_row: int or integer scalar tensor: x's first row in a global
            batch (see `dropout`).

    Returns:
        A tensor of the shape and dtype of `x`.
    """
    _required_seed(seed, "drop_block")
    block_size = _checks.positive_int(block_size, "block_size")
    data_format = _checks.one_of(data_format, "data_format", ("channels_last", "channels_first"))
    x = ops.convert_to_tensor(x)
    _checks.floating(x, "x")
    if not 3 <= len(x.shape) <= 5:
        raise _checks.invalid(
            ValueError, "x", "a tensor of rank 3 to 5: (batch, *spatial, channels) or "
            "(batch, channels, *spatial)", x
        )
    channels_last = data_format == "channels_last"
    spatial = tuple(x.shape[1:-1] if channels_last else x.shape[2:])
    if not all(isinstance(d, int) for d in spatial):
        raise _checks.invalid(ValueError, "x", "a tensor whose spatial sizes are known", x)
    tensor_rate = _random._is_rate_tensor(rate)
    if not tensor_rate:
        rate = _checks.rate(rate)
        if rate == 0.0:
            return x
        if rate == 1.0:
            return ops.zeros_like(x)
    if 0 in tuple(x.shape):
        return x
    sizes = tuple(min(block_size, d) for d in spatial)
    anchors = tuple(d - b + 1 for d, b in zip(spatial, sizes))
    factor = math.prod(spatial) / (math.prod(sizes) * math.prod(anchors))
    if tensor_rate:
        gamma = ops.minimum(ops.multiply(ops.cast(rate, "float32"), factor), 1.0)
    else:
        gamma = min(rate * factor, 1.0)
    batch, channels = ops.shape(x)[0], (x.shape[-1] if channels_last else x.shape[1])
    shape = (batch,) + anchors + (channels,) if channels_last else (batch, channels) + anchors
    offset = _row_offset(x, None, shape, 0, first_row)
    centres = ops.cast(ops.logical_not(_random.keep_mask(shape, gamma, seed, counter, offset)), "float32")
    # An anchor at p drops p .. p + size - 1: a max over the window of
    # anchors p - size + 1 .. p, on the anchor map padded by size - 1.
    pads = [(b - 1, b - 1) for b in sizes]
    pads = [(0, 0)] + pads + [(0, 0)] if channels_last else [(0, 0), (0, 0)] + pads
    dropped = ops.max_pool(ops.pad(centres, pads), sizes, strides=1, padding="valid", data_format=data_format)
    keep = ops.less(dropped, 0.5)
    axes = tuple(range(1, len(x.shape)))
    kept = ops.sum(ops.cast(keep, "float32"), axis=axes, keepdims=True)
    total = float(math.prod(x.shape[1:]))
    scale = ops.where(ops.greater(kept, 0.0), ops.divide(total, ops.maximum(kept, 1.0)), 0.0)
    out = ops.where(keep, ops.multiply(x, ops.cast(scale, x.dtype)), ops.zeros((), dtype=x.dtype))
    if tensor_rate:  # rate 1 drops everything, as a Python 1.0 does
        out = ops.where(ops.greater_equal(ops.cast(rate, "float32"), 1.0), ops.zeros((), dtype=x.dtype), out)
    return out


def drop_path_rates(depth, max_rate):
    """Per-block DropPath rates rising linearly from 0 to `max_rate`:
    `numpy.linspace(0, max_rate, depth)` as Python floats, the schedule of
    stochastic depth (block `i` of `depth` gets `max_rate * i / (depth - 1)`).

    >>> drop_path_rates(5, 0.2)
    [0.0, 0.05, 0.1, 0.15000000000000002, 0.2]
    """
    depth = _checks.positive_int(depth, "depth")
    max_rate = _checks.rate(max_rate, "max_rate")
    if depth == 1:
        return [0.0]
    return [max_rate * i / (depth - 1) for i in range(depth)]


def _required_seed(seed, op):
    if seed is None:
        raise ValueError(
            f"`seed` must be a Python integer in [0, 2**32): `{op}` needs an "
            "explicit seed (the layers draw one for you). Received: seed=None"
        )


def _noise_operands(x, rate, seed, op):
    """`(x, rate)` checked for an op whose scale is infinite at rate 1."""
    _required_seed(seed, op)
    rate = _checks.rate_below_one(rate, op)
    x = ops.convert_to_tensor(x)
    _checks.floating(x, "x")
    return x, rate


def _standard_normal(x, noise_shape, seed, counter, first_row):
    """float32 standard normal noise of `noise_shape` (None: x's shape) for
    x's rows of a global batch."""
    shape, offset = _address(x, noise_shape, first_row)
    return _random.normal(shape, seed, counter, offset, dtype="float32")


def _address(x, noise_shape, first_row):
    """`(shape, offset)` of the mask or noise of `noise_shape` (None: x's
    shape) for x's rows of a global batch."""
    shape = ops.shape(x) if noise_shape is None else resolve_noise_shape(noise_shape, ops.shape(x))
    return shape, _row_offset(x, noise_shape, shape, 0, first_row)


def _row_offset(x, noise_shape, mask_shape, offset, first_row):
    """`offset` moved by `first_row` rows of the mask (`mask_shape`, None for
    x's own shape), where x's rows have masks of their own."""
    if isinstance(first_row, int) and first_row == 0:
        return offset
    first_row = _checks.word(first_row, "first_row")
    if not _rows_have_own_masks(x, noise_shape):
        return offset
    shape = ops.shape(x) if mask_shape is None else mask_shape
    return _random.block_offset(first_row, _elements(shape[1:]), offset)


def _rows_have_own_masks(x, noise_shape):
    """Whether x's rows (axis 0) get masks of their own, which then depend
    on where they sit in a global batch: not for a scalar, nor for a mask
    shared along axis 0."""
    return _random._rank(x) != 0 and (noise_shape is None or tuple(noise_shape)[:1] != (1,))


def _elements(shape):
    """The number of elements of `shape`: an int, or an int32 tensor where a
    dimension is dynamic (or the shape itself a tensor, of unknown rank)."""
    if not isinstance(shape, tuple):
        return ops.prod(ops.cast(shape, "int32"))
    if all(isinstance(d, int) for d in shape):
        return math.prod(shape)
    return ops.prod(ops.stack([ops.cast(d, "int32") for d in shape]))


def drop_connect(
    x,
    kernel,
    rate,
    bias=None,
    drop_bias=False,
    seed=None,
    counter=0,
    mask_per="batch",
    max_mask_elements=2**18,
    first_row=0,
):
    """A dense product with dropped weights: `x @ (M * kernel) / (1 - rate)`.

    DropConnect (Wan et al., 2013): each weight is kept with probability
    `1 - rate` and kept weights are scaled by `1 / (1 - rate)`, so the
    expected output is `x @ kernel + bias`. The masked kernel is a local
    tensor: nothing is assigned, and gradients reach only the kept weights.

    Mask layout: the stream of `(seed, counter)` is cut into blocks of
    `(in + 1) * out` elements, a kernel mask followed by a bias mask (used
    with `drop_bias`). With `mask_per="batch"` the whole batch shares block 0;
    with `mask_per="example"`, example `b` (index on the first axis) uses
    block `b`, so its masks do not depend on how the batch is chunked, and
    example 0 gets the batch mask.

    Cost of `mask_per="example"`: `batch * (in + 1) * out` mask elements per
    step, drawn in the forward pass and again in the backward pass (not
    stored), and a batched product that reads one masked kernel per example:
    about the work of `batch` separate dense layers. Examples go in chunks of
    at most `max_mask_elements` mask elements (at least one example), so the
    extra memory is a few bytes times `max_mask_elements` in either pass,
    whatever the batch size (TensorFlow graphs may run up to 10 chunks at
    once: `tf.while_loop`'s parallel iterations). The default, 2**18, was
    chosen by timing the gradient of a 784x512 kernel at batch 64 with
    chunks of 2**14 to 2**24 elements: it was by far the fastest under
    `jax.jit`, plain TensorFlow graphs ran faster with larger chunks, and
    eager torch hardly changed. A step's stream
    holds 2**32 elements, so `batch * (in + 1) * out` must stay below that.

    Args:
        x: floating-point tensor `(..., in)`; for `mask_per="example"`,
            `(batch, ..., in)`, the mask shared along the middle axes.
        kernel: `(in, out)` tensor or variable.
        rate: float in [0, 1], the probability of dropping a weight.
        bias: optional `(out,)` tensor, added after the product.
        drop_bias: whether the bias is dropped (and scaled) too.
        seed: Python int in [0, 2**32). Required.
        counter: int or integer scalar tensor selecting the masks.
        mask_per: `"batch"` (one mask shared by the batch) or `"example"`.
        max_mask_elements: positive int, the most mask elements
            materialized at once by `mask_per="example"`.
        first_row: int or integer scalar tensor, for `mask_per="example"`:
            the global index of x's first example when x is a shard of a
            global batch; example `b` then uses block `first_row + b`. The
            batch mask is shared by every shard. See
            `keras_dropout_variants.distribute`.

    Returns:
        `(..., out)` tensor: the pre-activation.
    """
    mask_per = _checks.one_of(mask_per, "mask_per", ("batch", "example"))
    rate = _checks.rate(rate)
    x, kernel = _checks.dense_operands(x, kernel)
    # An empty batch has no example to draw masks for: its (empty) output
    # and zero gradients are the batch mode's.
    empty = len(x.shape) > 1 and x.shape[0] == 0
    if mask_per == "example" and 0.0 < rate < 1.0 and not empty:
        return _drop_connect_per_example(
            x, kernel, rate, bias, drop_bias, seed, counter, max_mask_elements, first_row
        )
    outputs = ops.matmul(x, dropout(kernel, rate, seed=seed, counter=counter))
    if bias is None:
        return outputs
    if drop_bias:
        offset = math.prod(kernel.shape) % 2**32  # the bias mask follows the kernel's
        bias = dropout(bias, rate, seed=seed, counter=counter, offset=offset)
    return ops.add(outputs, bias)


def _drop_connect_per_example(
    x, kernel, rate, bias, drop_bias, seed, counter, max_mask_elements, first_row
):
    """`drop_connect` with `mask_per="example"`, in chunks of examples.

    The bias rides along as row `in` of an extended kernel `[W; b]` (zeros
    without `drop_bias`) against an input column of ones, so example `b`'s
    block of the stream is exactly the dropout mask of its extended kernel.
    A custom gradient redraws each chunk's masks in the backward pass: a
    plain loop would keep every chunk's mask for it, `batch * (in + 1) * out`
    elements in all.
    """
    seed = _checks.seed(seed)
    counter = _checks.word(counter, "counter")
    first_row = _checks.word(first_row, "first_row")
    max_mask_elements = _checks.positive_int(max_mask_elements, "max_mask_elements")
    if len(x.shape) < 2:
        raise ValueError(
            "`mask_per='example'` needs inputs with a batch axis, "
            f"(batch, ..., in). Received inputs of shape {tuple(x.shape)}."
        )
    in_dim, units = kernel.shape
    block = (in_dim + 1) * units
    batch = ops.shape(x)[0]
    if isinstance(batch, int) and isinstance(first_row, int) and (first_row + batch) * block > 2**32:
        raise ValueError(
            f"`mask_per='example'` draws {batch} x {block} mask elements per "
            "step, more than the 2**32 one (seed, counter) stream holds. Use "
            "smaller batches or `mask_per='batch'`."
        )
    # Balanced chunks: n chunks of c examples, fewer than n of them padding.
    per_chunk = max(1, max_mask_elements // block)
    if isinstance(batch, int):
        n = max(1, -(-batch // per_chunk))
        c = -(-batch // n)
    else:  # A dynamic batch (TensorFlow graphs): the same sums as tensors.
        n = ops.maximum((batch + per_chunk - 1) // per_chunk, 1)
        c = (batch + n - 1) // n

    kernel = ops.cast(kernel, x.dtype)
    last_row = ops.zeros((1, units), x.dtype)
    if drop_bias and bias is not None:
        last_row = ops.reshape(ops.cast(bias, x.dtype), (1, units))
    kernel_ext = ops.concatenate([kernel, last_row], axis=0)  # (in + 1, out)
    rows = ops.reshape(x, (batch, -1, in_dim))  # (batch, L, in)
    rows = ops.concatenate([rows, ops.ones_like(rows[..., :1])], axis=-1)
    padding = n * c - batch
    if not isinstance(padding, int) or padding:  # (ops.pad retraces torch.compile)
        zeros = ops.zeros((padding,) + tuple(ops.shape(rows)[1:]), x.dtype)
        rows = ops.concatenate([rows, zeros], axis=0)
    chunks = ops.reshape(rows, (n, c, -1, in_dim + 1))

    shape = (c, in_dim + 1, units)

    first_block = _random.block_offset(first_row, block)

    def chunk_offset(i):  # Chunk i holds the blocks i*c .. i*c + c - 1 (+ first_row).
        return _random.block_offset(i, c * block, first_block)

    def chunk_mask(i):  # Keep masks of chunk i.
        return _random.keep_mask(shape, rate, seed, counter, chunk_offset(i))

    def kernels(kernel_ext, keep):  # Each example's dropped extended kernel.
        return _random.apply_keep(ops.broadcast_to(kernel_ext, shape), keep, rate)

    def dropped_kernels(kernel_ext, i):  # The same, drawn and applied by `drop`.
        kernels = ops.broadcast_to(kernel_ext, shape)
        return _random.drop(kernels, shape, rate, seed, counter, chunk_offset(i))

    def loop(body, init):
        return ops.fori_loop(0, n, body, init)

    @ops.custom_gradient
    def product(chunks, kernel_ext):
        def forward(i, out):
            y = ops.matmul(chunks[i], dropped_kernels(kernel_ext, i))
            return ops.slice_update(out, (i, 0, 0, 0), y[None])

        out = loop(forward, ops.zeros((n, c, ops.shape(chunks)[2], units), x.dtype))

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args

            def backward(i, carry):
                d_chunks, d_kernel = carry
                keep, g = chunk_mask(i), upstream[i]
                d_x = ops.matmul(g, ops.transpose(kernels(kernel_ext, keep), (0, 2, 1)))
                # Per-example kernel gradients, masked like the kernels.
                d_k = _random.apply_keep(ops.matmul(ops.transpose(chunks[i], (0, 2, 1)), g), keep, rate)
                d_chunks = ops.slice_update(d_chunks, (i, 0, 0, 0), d_x[None])
                return d_chunks, ops.add(d_kernel, ops.sum(d_k, axis=0))

            return loop(backward, (ops.zeros_like(chunks), ops.zeros_like(kernel_ext)))

        return out, grad

    outputs = ops.reshape(product(chunks, kernel_ext), (n * c, -1, units))[:batch]
    outputs = ops.reshape(outputs, tuple(ops.shape(x)[:-1]) + (units,))
    if bias is not None and not drop_bias:
        outputs = ops.add(outputs, bias)
    return outputs


def drop_connect_gaussian(
    x,
    kernel,
    rate,
    bias=None,
    drop_bias=False,
    activation=None,
    num_samples=16,
    seed=None,
    counter=0,
):
    """DropConnect inference by moment matching (Wan et al., 2013).

    In training the pre-activation of unit j is a sum of independent terms
    `x_i W_ij m_ij / (1 - rate)`; it is approximated by a Gaussian with the
    same moments: mean `x @ W + b` and variance
    `rate / (1 - rate) * (x**2) @ (W**2)` (plus `rate / (1 - rate) * b**2`
    with `drop_bias`). The output is the average of `activation` over
    `num_samples` antithetic pairs `mean +- std * z`, with `z` drawn from the
    engine's `normal` (one draw per sample and unit, shared by the batch, so
    an example's output does not depend on its batch). The pairs make the
    estimate exact, up to rounding, for a linear activation.

    Args:
        x: floating-point tensor `(..., in)`.
        kernel: `(in, out)` tensor or variable.
        rate: float in [0, 1].
        bias: optional `(out,)` tensor.
        drop_bias: whether the bias was dropped in training.
        activation: callable, or None for linear.
        num_samples: number of antithetic pairs (positive int).
        seed: Python int in [0, 2**32). Required.
        counter: int or integer scalar tensor selecting the draws.

    Returns:
        `(..., out)` tensor: the estimated expected activation.
    """
    rate = _checks.rate(rate)
    seed = _checks.seed(seed)
    num_samples = _checks.positive_int(num_samples, "num_samples")
    activation = activation or (lambda v: v)
    x, kernel = _checks.dense_operands(x, kernel)
    dtype = _checks.dtype_name(x.dtype)
    # The moments in at least float32: the variance, a sum of x**2 w**2,
    # overflows float16 long before the output does.
    compute = "float32" if dtype in ("float16", "bfloat16") else dtype
    x, kernel = ops.cast(x, compute), ops.cast(kernel, compute)
    bias = None if bias is None else ops.cast(bias, compute)
    if rate == 1.0:
        # Every weight is dropped: the training output is constant.
        pre = ops.zeros_like(ops.matmul(ops.zeros_like(x), kernel))
        if bias is not None and not drop_bias:
            pre = ops.add(pre, bias)
        return ops.cast(activation(pre), dtype)
    mean = ops.matmul(x, kernel)
    factor = rate / (1.0 - rate)
    var = ops.multiply(ops.matmul(ops.square(x), ops.square(kernel)), factor)
    if bias is not None:
        mean = ops.add(mean, bias)
        if drop_bias:
            var = ops.add(var, ops.multiply(ops.square(bias), factor))
    units = kernel.shape[-1]
    z = _random.normal((num_samples, units), seed, counter, dtype=compute)
    z = ops.reshape(z, (num_samples,) + (1,) * (len(mean.shape) - 1) + (units,))
    spread = ops.multiply(ops.sqrt(var), z)
    total = ops.add(activation(ops.add(mean, spread)), activation(ops.subtract(mean, spread)))
    return ops.cast(ops.divide(ops.mean(total, axis=0), 2.0), dtype)
