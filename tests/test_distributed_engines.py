"""The data-parallel rule under each engine Keras runs on: replicas' masks
are their rows of the one-device masks, bit for bit, and training matches
one device (see `keras_dropout_variants.distribute`).

Every engine needs a process of its own (logical devices, forced host
devices, process groups): each check is a script in tests/distributed/,
run here in a subprocess, in the matrix leg of its backend.
"""

import os
import subprocess
import sys

import pytest

from conftest import BACKEND

HERE = os.path.join(os.path.dirname(__file__), "distributed")

# (backend, script and arguments): what each script checks is in its docstring.
ENGINES = [
    ("tensorflow", ["tf_mirrored.py", "1"]),
    ("tensorflow", ["tf_mirrored.py", "2"]),
    ("tensorflow", ["tf_mirrored.py", "4"]),
    ("tensorflow", ["tf_multiworker.py"]),
    ("jax", ["jax_parallel.py"]),
    ("jax", ["jax_multiprocess.py"]),
    ("torch", ["torch_gloo.py"]),
]


def _missing(backend):
    """Why this engine cannot run here, or None."""
    if backend == "torch":
        import torch

        if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
            return "this torch build has no torch.distributed with gloo"
    return None


# Each matrix leg runs its own backend's engines.
HERE_ENGINES = [(backend, script) for backend, script in ENGINES if backend == BACKEND]


@pytest.mark.slow
@pytest.mark.parametrize("backend, script", HERE_ENGINES, ids=[" ".join(s) for _, s in HERE_ENGINES])
def test_replicas_draw_their_rows_of_the_one_device_masks(backend, script):
    reason = _missing(backend)
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)  # the JAX scripts set their own device count
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, script[0]), *script[1:]],
        env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and ": OK" in result.stdout, output[-4000:]
