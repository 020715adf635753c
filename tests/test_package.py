"""The package's shape: what is public, and which modules may know the backend."""

import ast
import pathlib
import sys

import keras

import keras_dropout_variants as kdv

PACKAGE = pathlib.Path(kdv.__file__).parent
BACKEND_LIBRARIES = {"torch", "tensorflow", "jax", "jaxlib"}


def imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def asks_for_the_backend(tree):
    """Whether the code calls `...backend.backend()` anywhere."""
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "backend"
        for node in ast.walk(tree)
    )


def test_only_backend_modules_know_the_backend():
    # The engine core, the ops and the layers import no backend library and
    # never test which backend runs; `_backends/` alone does (one table).
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("_backends/"):
            continue
        tree = ast.parse(path.read_text())
        libraries = {m.split(".")[0] for m in imported_modules(tree)} & BACKEND_LIBRARIES
        assert not libraries, (relative, libraries)
        assert not asks_for_the_backend(tree), relative
        checked += 1
    assert checked >= 8  # random, ops, _checks, layers/*: the scan saw them


def test_backend_fast_path_is_loaded_for_the_running_backend_only():
    kdv.ops.dropout(keras.ops.ones((4, 4)), 0.5, seed=1)
    loaded = {name.rsplit(".", 1)[1] for name in sys.modules if name.startswith("keras_dropout_variants._backends.")}
    assert loaded == {keras.backend.backend()}


def test_star_import_gives_the_layers_not_the_modules():
    namespace = {}
    exec("from keras_dropout_variants import *", namespace)
    public = {name for name in namespace if not name.startswith("__")}
    assert public == {
        "Dropout", "SeededDropout", "DropConnect", "DropConnectDense", "MASK_FORMAT_VERSION",
        "shard_rows", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
        "GaussianDropout", "AlphaDropout", "GaussianNoise", "DropPath", "StochasticDepth",
        "DropBlock1D", "DropBlock2D", "DropBlock3D", "drop_path_rates", "convert",
        "mc_predict", "mc_mask_id", "MCPrediction",
    }
    # The modules stay reachable as attributes.
    assert kdv.ops.dropout and kdv.random.keep_mask


def test_mask_format_version():
    assert kdv.MASK_FORMAT_VERSION == kdv.random.MASK_FORMAT_VERSION == 1
