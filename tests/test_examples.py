"""The example scripts run end to end (`--quick`) under the current backend.

Each script runs in its own interpreter, as a user would start it, and must
exit 0 (its own checks exit 1 when they fail), write a valid PNG where
`--out` says and print its result table. Where an optional package or the
Keras backend is missing, it must say what to do, before any work.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import BACKEND, skip_unless_all_backends_leg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INSTALLED = [b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b)]

# Each script's table: the first cell of every row it must print.
ROWS = {
    "regularization.py": ["none", "kdv.Dropout", "kdv.SeededDropout", "kdv.DropConnectDense"],
    "spatial_noise_shape.py": ["none", "element-wise", "channel-wise"],
    "dropconnect_inference.py": [
        'inference="mean"',
        'inference="gaussian"',
        "MC average",
    ],
    # One row per backend, each started in its own subprocess by the script.
    "reproducibility.py": INSTALLED,
    "keras_family.py": ["none", "Dropout", "SpatialDropout2D", "GaussianDropout", "AlphaDropout", "GaussianNoise"],
    "structured_dropout.py": ["none", "Dropout", "SpatialDropout2D", "DropBlock2D", "DropPath"],
    "uncertainty.py": ["deterministic", "MC dropout"],
    # 1, 2 and 4 replicas of the current backend's data-parallel engine.
    "distributed.py": ["kdv.Dropout", "keras.layers.Dropout"],
}
SCRIPTS = sorted([*ROWS, "quickstart.py"])
# Arguments that get a script to import keras: reproducibility.py and
# distributed.py do so in their workers only.
KERAS_ARGS = {
    "reproducibility.py": ["--worker", "--result", "unused.json", "--workdir", "."],
    "distributed.py": ["--worker", "--result", "unused.pkl"],
}


def run_example(name, *args, hide=(), cwd=ROOT, env=None):
    """`python examples/NAME ARGS` in a fresh interpreter, its output captured.

    `hide`: modules that cannot be imported there, as if not installed (the
    script is then run by `runpy`, with its folder first on sys.path as
    `python` would put it). `env`: variables to set in the environment, or
    to unset where None.
    """
    env = {**os.environ, "KERAS_BACKEND": BACKEND, **(env or {})}
    env = {k: v for k, v in env.items() if v is not None}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    script = os.path.join(EXAMPLES, name)
    command = [sys.executable, script]
    if hide:
        command[1:] = [
            "-c",
            "import runpy, sys; "
            f"sys.modules.update(dict.fromkeys({list(hide)!r})); "  # None: ModuleNotFoundError
            f"sys.path.insert(0, {EXAMPLES!r}); sys.argv[0] = {script!r}; "
            f"runpy.run_path({script!r}, run_name='__main__')",
        ]
    return subprocess.run(
        [*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROWS))
def test_example_quick_run(name, tmp_path):
    if name == "reproducibility.py":
        # It starts one subprocess per installed backend itself, whatever
        # KERAS_BACKEND is: once per matrix run is enough.
        skip_unless_all_backends_leg()
    out = tmp_path / "x.png"
    # From another folder: the script finds _common.py beside itself.
    result = run_example(name, "--quick", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with open(out, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert out.stat().st_size > 1000
    assert f"figure: {out}" in result.stdout
    assert re.search(r"[Ee]poch \d+/\d+", result.stdout)  # fit() progress
    for row in ROWS[name]:
        assert re.search(rf"^{re.escape(row)}.*\d\.\d", result.stdout, re.M), (row, result.stdout)


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_help_before_keras(name):
    # Keras made unimportable: the options are parsed before keras' slow import.
    result = run_example(name, "--help", hide=["keras"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage:")
    for option in ("--quick", "--out") if name in ROWS else ("--epochs",):
        assert option in result.stdout


def assert_clean_exit(result):
    """A non-zero exit with a message, not a traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr


# Every script needs scikit-learn; those with a figure, matplotlib too.
@pytest.mark.parametrize(
    "name, module", [(n, "sklearn") for n in SCRIPTS] + [(n, "matplotlib") for n in ROWS]
)
def test_example_names_missing_extra(name, module):
    # Keras hidden too: the check comes before keras is imported.
    result = run_example(name, hide=[module, "keras"])
    assert_clean_exit(result)
    pip_name = {"sklearn": "scikit-learn"}.get(module, module)
    assert f"needs {pip_name}" in result.stderr, result.stderr
    assert 'pip install "keras-dropout-variants[examples]"' in result.stderr
    assert 'pip install ".[examples]"' in result.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_hints_missing_backend(name):
    result = run_example(name, *KERAS_ARGS.get(name, []), hide=[BACKEND])
    assert_clean_exit(result)
    assert f"Keras could not import {BACKEND}" in result.stderr
    assert f"KERAS_BACKEND={BACKEND}" in result.stderr  # the backend it tried
    assert "Set KERAS_BACKEND=jax|torch|tensorflow" in result.stderr


def test_example_hints_missing_default_backend(tmp_path):
    # No KERAS_BACKEND and no keras.json: Keras tries its default, TensorFlow.
    result = run_example(
        "quickstart.py",
        hide=["tensorflow"],
        env={"KERAS_BACKEND": None, "KERAS_HOME": str(tmp_path)},
    )
    assert_clean_exit(result)
    assert "Keras could not import tensorflow, its default backend" in result.stderr
    assert "KERAS_BACKEND is not set" in result.stderr
