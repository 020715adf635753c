"""Runs the test suite once per Keras backend, each in its own process.

`KERAS_BACKEND` is read when keras is first imported, so every backend gets
a fresh interpreter. Prints one pytest report per backend, then a closing
line `matrix: N passed, N failed` over all of them. Exits non-zero when any
backend fails, or collects no test (pytest's exit code 5).
"""

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

BACKENDS = ("tensorflow", "jax", "torch")


def run(backend, extra_args, all_backends_leg):
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "junit.xml")
        # Tests that compare every backend in subprocesses run in one leg only.
        env = dict(os.environ, KERAS_BACKEND=backend, KDV_ALL_BACKENDS_LEG=all_backends_leg)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF start-up logs out of the report
        print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
        code = subprocess.call(
            # -rs: every skipped test says why.
            [sys.executable, "-m", "pytest", "-q", "-rs", f"--junitxml={report}", *extra_args],
            env=env,
        )
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        if os.path.exists(report):
            for suite in ET.parse(report).getroot().iter("testsuite"):
                total = int(suite.get("tests", 0))
                failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                skipped = int(suite.get("skipped", 0))
                counts["failed"] += failed
                counts["skipped"] += skipped
                counts["passed"] += total - failed - skipped
    if code == 5:
        print(f"ERROR: no test was collected under KERAS_BACKEND={backend}.")
    elif code != 0 and counts["failed"] == 0:
        counts["failed"] = 1  # pytest itself failed (e.g. a usage error).
    return code, counts


def main(argv):
    backends = [a for a in argv if a in BACKENDS] or list(BACKENDS)
    extra = [a for a in argv if a not in BACKENDS]
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    failing = []
    for backend in backends:
        code, counts = run(backend, extra, backends[0])
        for k in totals:
            totals[k] += counts[k]
        if code != 0:
            failing.append(f"{backend} (pytest exit {code})")
    print()
    for backend in failing:
        print(f"FAILED backend: {backend}")
    print(
        f"matrix: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
