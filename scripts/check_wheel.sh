#!/usr/bin/env bash
# Wheel check: build the wheel, install it into a clean virtual environment
# with keras and one backend (JAX, the lightest), and run the README's quick
# start (examples/quickstart.py) from outside the checkout, so that
# `import keras_dropout_variants` can only find the installed wheel.
#
# Usage: bash scripts/check_wheel.sh        (PYTHON=python3.12 to pick one)
# Needs only Python 3.10+ with venv and the package index; the versions
# installed are the ones pinned in constraints.txt. Quiet when it passes;
# a failing step prints its full log. The last line says OK or FAILED.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
START=$SECONDS

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kdv-wheel-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

STEP=""
on_error() {
    echo "wheel check: FAILED at step '$STEP' after $((SECONDS - START)) s" >&2
}
trap on_error ERR

# Runs a command with its output in a log; prints the log if it fails.
quiet() {
    local log="$WORK/step.log"
    if ! "$@" >"$log" 2>&1; then
        echo "--- output of: $*" >&2
        cat "$log" >&2
        echo "---" >&2
        return 1
    fi
}

STEP="copy the source tree"
# Build from a copy: setuptools reuses build/ and *.egg-info/ of the tree it
# builds in, so a stale build/lib could put deleted modules in the wheel.
"$PYTHON" - "$ROOT" "$WORK/src" <<'EOF'
import shutil, sys
shutil.copytree(sys.argv[1], sys.argv[2], ignore=shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
    "*.pyc", "output", "results", "*.keras"))
EOF

STEP="create a clean venv"
quiet "$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"

STEP="build the wheel"
# pip builds in an isolated environment with the build-system requirements
# of pyproject.toml; nothing is installed into the venv by this step.
quiet "$PY" -m pip wheel --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/keras_dropout_variants-*.whl)"
echo "wheel check: built $(basename "$WHEEL")"

STEP="check the wheel's contents"
"$PY" - "$WHEEL" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["keras_dropout_variants/__init__.py", "keras_dropout_variants/py.typed"]
missing = [n for n in need if n not in names]
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
    missing.append("*.dist-info/licenses/LICENSE")
stray = [n for n in names if not n.startswith("keras_dropout_variants")]
assert not missing, f"missing from the wheel: {missing}"
assert not stray, f"files outside the package in the wheel: {stray}"
EOF

STEP="install the wheel, jax and scikit-learn"
# keras comes as the wheel's dependency; constraints.txt pins every version.
quiet "$PY" -m pip install --quiet -c "$ROOT/constraints.txt" \
    "$WHEEL" jax scikit-learn

STEP="check the installed package"
mkdir "$WORK/run"
cd "$WORK/run"
export KERAS_BACKEND=jax KERAS_HOME="$WORK/keras_home"
unset PYTHONPATH
# -I: neither the current directory, the script's directory nor PYTHON*
# variables on sys.path.
"$PY" -I - "$WORK/venv" <<'EOF'
import os, sys
from importlib import metadata
import keras_dropout_variants as kdv

venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(kdv.__file__)
assert where.startswith(venv + os.sep), f"imported from {where}, not {venv}"
package = os.path.dirname(where)
assert os.path.isfile(os.path.join(package, "py.typed")), "py.typed not installed"
meta = metadata.metadata("keras-dropout-variants")
assert meta["Version"] == kdv.__version__, (meta["Version"], kdv.__version__)
assert meta["License-Expression"] == "Apache-2.0", meta["License-Expression"]
files = [str(f) for f in metadata.files("keras-dropout-variants")]
assert any(f.endswith("licenses/LICENSE") for f in files), "LICENSE not installed"
print(f"wheel check: keras_dropout_variants {kdv.__version__} from {where}")
EOF

STEP="run the quick start"
# The examples folder alone (the script imports its _common.py from there),
# away from the checkout; -E -s: no PYTHONPATH, no user site-packages, so the
# package can only come from the venv.
cp -R "$WORK/src/examples" "$WORK/run/examples"
test ! -e "$WORK/run/examples/keras_dropout_variants"
if ! "$PY" -E -s examples/quickstart.py --epochs 1 >"$WORK/quickstart.log" 2>&1; then
    cat "$WORK/quickstart.log" >&2
    false
fi
tail -n 3 "$WORK/quickstart.log" | sed 's/^/wheel check: quickstart: /'

echo "wheel check: OK ($((SECONDS - START)) s)"
