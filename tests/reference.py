"""An independent NumPy (uint32) implementation of the engine's algorithm.

Written from the algorithm in `keras_dropout_variants.random`'s docstring, with
unsigned arithmetic and no keras: the tests check every backend against it.
"""

import numpy as np

M1, M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
M3, M4 = np.uint32(0x31848BAB), np.uint32(0xAC4C1B51)
C = (0x9E3779B9, 0x3C6EF372, 0xDAA66D2B)


@np.errstate(over="ignore")
def mix(x):
    x = np.asarray(x, dtype=np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * M1
    x = x ^ (x >> np.uint32(15))
    x = x * M2
    return x ^ (x >> np.uint32(16))


@np.errstate(over="ignore")  # uint32 arithmetic wraps on purpose
def key(seed, counter):
    u = lambda v: np.uint32(v % 2**32)  # noqa: E731
    b = u(counter) ^ mix(u(seed + C[0]))
    a = u(seed) ^ mix(b + np.uint32(C[1]))
    b = b ^ mix(a + np.uint32(C[2]))
    return a, b


def uniform_words(shape, seed, counter=0, offset=0):
    """The unsigned uniform draws u = h + 2**31 of every element."""
    with np.errstate(over="ignore"):
        k0, k1 = key(seed, counter)
        n = int(np.prod(shape, dtype=np.int64))
        j = (np.arange(n, dtype=np.uint64) + offset) % 2**32
        h = mix(j.astype(np.uint32) + k0)
        h = h ^ k1
        h = h * M3
        h = h ^ (h >> np.uint32(15))
        h = h * M4
        return (h + np.uint32(2**31)).reshape(shape)


def keep_mask(shape, rate, seed, counter=0, offset=0):
    from fractions import Fraction

    threshold = round((1 - Fraction(rate)) * 2**32)
    if rate == 0:
        return np.ones(shape, bool)
    threshold = min(threshold, 2**32 - 1)
    return uniform_words(shape, seed, counter, offset).astype(np.uint64) < threshold
