"""Argument checks shared by `random`, `ops` and `layers`, with one wording.

Every message has Keras' form: "`name` must be <what>. Received: name=<value>",
so a user reads which argument was wrong and what it held. Each check returns
the value normalized (a Python int or float, a tuple), so configs stay
JSON-serializable whatever NumPy scalar came in.
"""

import numbers

import keras
from keras import ops

U32 = 1 << 32  # engine words are unsigned 32-bit


def _shown(value):
    if _is_tensor(value):
        dtype = dtype_name(value.dtype)
        return f"a tensor of shape {tuple(value.shape)} and dtype {dtype}"
    return repr(value)


def invalid(error, name, expected, value):
    """The package's one wording for a bad argument: `error` naming it."""
    return error(f"`{name}` must be {expected}. Received: {name}={_shown(value)}")


def dtype_name(dtype):
    """Keras' name of a backend dtype ("float32", ...), cached per dtype:
    `keras.backend.standardize_dtype` costs more than a small dropout."""
    if dtype not in _DTYPE_NAMES:
        _DTYPE_NAMES[dtype] = keras.backend.standardize_dtype(dtype)
    return _DTYPE_NAMES[dtype]


# Backend dtype -> Keras' name: a handful of entries per backend.
_DTYPE_NAMES = {}


def is_float(name):
    """`keras.backend.is_float_dtype` of a Keras dtype name, cached."""
    if name not in _FLOAT_NAMES:
        _FLOAT_NAMES[name] = keras.backend.is_float_dtype(name)
    return _FLOAT_NAMES[name]


# Keras dtype name -> whether it is floating.
_FLOAT_NAMES = {}


def _is_int(value):
    # `type is int` first: an ABC isinstance check costs a microsecond.
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _is_tensor(value):
    return isinstance(value, (keras.Variable, keras.KerasTensor)) or (
        ops.is_tensor(value) or hasattr(value, "__array__")
    )


def rate(value, name="rate"):
    """`value` as a Python float in [0, 1]."""
    expected = "a float in [0, 1]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(TypeError, name, expected, value)
    if not 0.0 <= value <= 1.0:  # False for NaN too.
        raise invalid(ValueError, name, expected, float(value))
    return float(value)


def rate_tensor(value, name="rate"):
    """A rate held in a floating scalar tensor or variable (its value is not
    checked here: the graph cannot raise; `RateSchedule` checks what it
    assigns)."""
    if not _is_tensor(value):
        raise invalid(TypeError, name, "a float in [0, 1] or a floating scalar tensor", value)
    dtype = dtype_name(value.dtype)
    if not is_float(dtype) or tuple(value.shape) != ():
        raise invalid(TypeError, name, "a float in [0, 1] or a floating scalar tensor", value)
    return value


def rate_below_one(value, owner):
    """`rate(value)`, refusing 1 for `owner`, whose scale is infinite there."""
    value = rate(value)
    if value == 1.0:
        raise invalid(ValueError, "rate", f"below 1 for `{owner}`, whose scale is infinite at 1", value)
    return value


def data_format(value):
    """`value`, or Keras' `image_data_format()` for None, checked."""
    if value is None:
        return keras.config.image_data_format()
    return one_of(value.lower() if isinstance(value, str) else value, "data_format",
                  ("channels_last", "channels_first"))


def stddev(value, name="stddev"):
    """`value` as a finite Python float >= 0."""
    expected = "a finite float >= 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise invalid(TypeError, name, expected, value)
    if not 0.0 <= value < float("inf"):  # False for NaN too.
        raise invalid(ValueError, name, expected, float(value))
    return float(value)


def seed(value, name="seed"):
    """`value` as a Python int in [0, 2**32): a seed, or any engine word."""
    expected = "a Python integer in [0, 2**32)"
    if not _is_int(value):
        raise invalid(TypeError, name, expected, value)
    if not 0 <= value < U32:
        raise invalid(ValueError, name, expected, int(value))
    return int(value)


def word(value, name):
    """An int in [0, 2**32), or an integer scalar tensor cast to int32.

    Casting wraps modulo 2**32: an int64 counter keeps its low word.
    """
    if _is_int(value):
        return seed(value, name)
    if not _is_tensor(value):
        raise invalid(TypeError, name, "an integer in [0, 2**32) or an integer scalar tensor", value)
    dtype = dtype_name(value.dtype)
    if "int" not in dtype:
        raise invalid(TypeError, name, "an integer scalar", value)
    if tuple(value.shape) != ():
        raise invalid(ValueError, name, "an integer scalar", value)
    if dtype == "int32" and not isinstance(value, keras.Variable):
        return value  # (a cast would cost an op and change nothing)
    return ops.cast(value, "int32")


def positive_int(value, name):
    """`value` as a positive Python int."""
    if not _is_int(value) or value < 1:
        raise invalid(ValueError, name, "a positive integer", value)
    return int(value)


def boolean(value, name):
    if not isinstance(value, bool):
        raise invalid(TypeError, name, "a bool", value)
    return value


def one_of(value, name, options):
    """`value` if it is one of the strings `options`."""
    if not isinstance(value, str) or value not in options:
        expected = " or ".join(repr(o) for o in options)
        raise invalid(ValueError, name, expected, value)
    return value


def shape(value, name="shape"):
    """A tuple of non-negative ints; dynamic (traced) dims may be scalar tensors."""
    expected = "a tuple of non-negative integers"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise invalid(TypeError, name, expected, value)
    value = tuple(value)
    for dim in value:
        if _is_int(dim):
            if dim < 0:
                raise invalid(ValueError, name, expected, value)
        elif not _is_tensor(dim):
            raise invalid(TypeError, name, expected, value)
    return tuple(int(d) if _is_int(d) else d for d in value)


def noise_shape(value):
    """`None`, or a tuple of positive Python ints and `None`s.

    As Keras 3.13+ validates `noise_shape` at construction, except that NumPy
    integers are accepted (and converted).
    """
    if value is None:
        return None
    expected = "a tuple of positive integers or None"
    if isinstance(value, (str, bytes)):
        raise invalid(ValueError, "noise_shape", expected, value)
    try:
        entries = tuple(value)
    except TypeError:
        raise invalid(ValueError, "noise_shape", expected, value) from None
    for dim in entries:
        if dim is not None and (not _is_int(dim) or dim <= 0):
            raise invalid(ValueError, "noise_shape", expected, entries)
    return tuple(None if d is None else int(d) for d in entries)


def floating(x, name="inputs"):
    """Raises `TypeError` unless the tensor `x` has a floating dtype."""
    dtype = dtype_name(x.dtype)
    if not is_float(dtype):
        raise TypeError(
            f"`{name}` must be floating-point to be dropped. Received: {name} "
            f"of dtype {dtype}. Cast it to a float dtype first: dropping "
            "integers would silently change the values' scale."
        )


def dense_operands(x, kernel, name="x"):
    """`x` and `kernel` as tensors that make a dense product `x @ kernel`:
    floating `x` of shape `(..., in)` and a matrix `kernel` of shape
    `(in, out)`. Checked here, so that a wrong width gets this message
    rather than a backend's matmul error."""
    x = ops.convert_to_tensor(x)
    floating(x, name)
    kernel = ops.convert_to_tensor(kernel)
    if len(kernel.shape) != 2:
        raise invalid(ValueError, "kernel", "a matrix of shape (in, out)", kernel)
    width, in_dim = (x.shape[-1] if len(x.shape) else None), kernel.shape[0]
    if len(x.shape) == 0 or (width is not None and in_dim is not None and width != in_dim):
        raise ValueError(
            f"`{name}` must have a last dimension of {in_dim}, the first of `kernel` "
            f"(of shape {tuple(kernel.shape)}). Received: {name} of shape {tuple(x.shape)}"
        )
    return x, kernel
