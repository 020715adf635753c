"""The example scripts run end to end (`--quick`) under the current backend.

Each script runs in its own interpreter, as a user would start it, and must
exit 0, write a valid PNG where `--out` says and print its result table.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import BACKEND

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
}

# Patterns of the lines that state each script's own checks.
VERDICTS = {
    "regularization.py": [
        r"^all models started from the same initial weights: True$",
        r"^kdv\.Dropout and kdv\.SeededDropout histories identical: True$",
    ],
    "spatial_noise_shape.py": [r"channel-wise masks constant over each 8x8 map: True$"],
    "dropconnect_inference.py": [],
    "reproducibility.py": [
        r"^step counters restored by load_model: True ",
        # Masks equal across backends, each resumed run within 1e-6 of its original.
        r"^reproducible: yes$",
    ]
    + ([r"^first-step masks byte-identical across .*: True$"] if len(INSTALLED) > 1 else []),
}


def run_example(name, *args):
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("name", sorted(ROWS))
def test_example_quick_run(name, tmp_path):
    if name == "reproducibility.py" and BACKEND != INSTALLED[0]:
        # It starts one subprocess per installed backend itself, whatever
        # KERAS_BACKEND is: once per matrix run is enough.
        pytest.skip(f"runs every backend itself; checked in the {INSTALLED[0]} leg")
    out = tmp_path / "x.png"
    result = run_example(name, "--quick", "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with open(out, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    assert out.stat().st_size > 1000
    assert f"figure: {out}" in result.stdout
    assert re.search(r"[Ee]poch \d+/\d+", result.stdout)  # fit() progress
    for row in ROWS[name]:
        assert re.search(rf"^{re.escape(row)}.*\d\.\d", result.stdout, re.M), (row, result.stdout)
    for verdict in VERDICTS[name]:
        assert re.search(verdict, result.stdout, re.M), (verdict, result.stdout)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_example_help(name):
    result = run_example(name, "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage:")
    for option in ("--quick", "--out"):
        assert option in result.stdout
