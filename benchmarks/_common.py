"""Plumbing the benchmarks share; not a benchmark itself.

Each benchmark is a script that, run plainly, starts itself once per Keras
backend (`python SCRIPT ... --worker BACKEND`, with `KERAS_BACKEND` set:
a backend is chosen when Keras is first imported, and a process of its own
keeps one backend's threads and memory out of another's figures). The
worker prints one `RESULT` line of JSON; the parent gathers those, prints
a table and writes the JSON that `report.py` renders into
docs/performance.md.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
RESULT_TAG = "RESULT "
# The worker runs of this process that failed, for the JSON: a table with
# rows missing must say why.
failed_runs = []
# Taken when a benchmark starts, before its own work adds to it: how busy
# other processes kept the machine.
LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
# Versions in the report header, by distribution name; TF is often installed
# as tensorflow-cpu, whose distribution name differs.
PACKAGES = {
    "keras": ("keras",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "jax": ("jax",),
    "torch": ("torch",),
    "numpy": ("numpy",),
    "keras_dropout_variants": ("keras_dropout_variants", "keras-dropout-variants"),
}


# --- command line -----------------------------------------------------------


def parser(doc, name, backends=BACKENDS):
    """An argument parser with the options every benchmark has: the backends
    to run, where the JSON goes, and the hidden `--worker BACKEND`."""
    # The docstring, as written, says what the benchmark measures and how to run it.
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=list(backends), choices=BACKENDS)
    p.add_argument(
        "--json",
        default=os.path.join(RESULTS, name + ".json"),
        help=f"where the results go (default: benchmarks/results/{name}.json)",
    )
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    return p


# --- worker side -------------------------------------------------------------


def serve(args, worker):
    """In a worker process (`--worker BACKEND`), run `worker(backend, args)`
    and hand its result (a JSON-able dict) to the parent, with the device;
    return whether this was a worker."""
    backend = args.worker
    if not backend:
        return False
    # Before the worker imports Keras, which picks its backend then; the
    # repository goes first on the path so the package runs from this checkout.
    os.environ["KERAS_BACKEND"] = backend
    sys.path.insert(0, REPO)
    result = dict(worker(backend, args), device=device_name(backend))
    print(RESULT_TAG + json.dumps(result), flush=True)
    return True


def gpu_device(backend):
    """The GPU Keras computes on under `backend` (a torch or JAX device), or
    None on a CPU (TF: always None; this project's TF is tensorflow-cpu)."""
    import keras

    x = keras.ops.zeros(())
    if backend == "torch" and x.device.type == "cuda":
        return x.device
    if backend == "jax":
        device = next(iter(x.devices()))
        if device.platform != "cpu":
            return device
    return None


def device_name(backend):
    """The device Keras computes on under `backend`, in words."""
    device = gpu_device(backend)
    if device is None:
        return f"{platform.machine()} CPU, {os.cpu_count()} cores"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(device)
    return device.device_kind


def sync_function(backend):
    """A function that waits until the computation of its argument is done.

    JAX dispatches asynchronously even on a CPU, and CUDA kernels run
    asynchronously: without the wait a timer would measure the launch.
    """
    if backend == "jax":
        import jax

        return jax.block_until_ready  # arrays, or tuples of them
    if backend == "torch" and gpu_device(backend) is not None:
        import torch

        return lambda y: torch.cuda.synchronize()
    return lambda y: y  # TF and torch on a CPU run synchronously


def device_peak_bytes(backend):
    """Peak memory allocated on the GPU in this process, or None on a CPU."""
    device = gpu_device(backend)
    if device is None:
        return None
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated(device)
    return device.memory_stats()["peak_bytes_in_use"]


def peak_rss_mib():
    """Peak resident memory of this process so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- timing ------------------------------------------------------------------


def clocked(fn, sync, calls=1):
    """`fn` as a function that returns its own wall time (a list of one
    sample, in seconds: the mean over `calls` calls in a row, for calls
    too short to time one by one), waiting for the device before it stops
    the clock."""

    def run():
        start = time.perf_counter()
        for _ in range(calls):
            y = fn()
        sync(y)
        return [(time.perf_counter() - start) / calls]

    return run


def interleaved(fns, rounds, warmup=3):
    """Median milliseconds of each of `fns` (name -> function returning a list
    of samples in seconds, as `clocked` or `StepTimer.fit` do).

    Each function first runs `warmup` times untimed (tracing, compilation,
    caches), then all run in turn, round after round: a machine whose speed
    drifts (other load, clock changes) slows every function alike, so their
    ratios hold even when the absolute times move.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name] += fn()
    return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


class StepTimer:
    """Wall time of each training step of `fit()`, as a Keras callback.

    A callback with its own `on_train_batch_end` turns off Keras' asynchronous
    dispatch, and the step's logs are converted to Python floats before it
    runs: that waits for the device, so on a GPU a step's time is its whole
    computation, not its launch.
    """

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                timer.times.append(time.perf_counter() - self.start)

        self.times = []
        self.callback = Callback()

    def fit(self, model, *args, **kwargs):
        """`model.fit(*args, **kwargs)` for one epoch, silently; returns the
        step times (seconds) of that call alone."""
        self.times = []
        model.fit(*args, epochs=1, verbose=0, callbacks=[self.callback], **kwargs)
        return self.times


# --- parent side ----------------------------------------------------------------


def run_worker(script, backend, *extra):
    """Run `script` as a worker for `backend` with this process's own options
    (and `extra` ones); return the dict it hands back, or None if it failed
    (its stderr's end is printed: the other backends still run)."""
    command = [sys.executable, script, *sys.argv[1:], "--worker", backend, *extra]
    env = dict(os.environ, KERAS_BACKEND=backend)
    # stderr to a file: TF and XLA log a lot there, and a full pipe would
    # block a worker that nobody reads until it ends.
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stderr.seek(0)
        errors = stderr.read()
    results = [l[len(RESULT_TAG):] for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
    if proc.returncode or not results:
        print(f"{' '.join((backend,) + extra)}: worker failed (exit {proc.returncode})\n"
              f"{errors[-3000:]}", flush=True)
        return None
    return json.loads(results[-1])


def run_workers(script, runs):
    """Run `script`'s worker for each (backend, *extra options) of `runs` in
    turn; return all their rows, and the device each backend ran on."""
    rows, devices = [], {}
    for backend, *extra in runs:
        print(" ".join([backend, *extra]) + "...", flush=True)
        result = run_worker(script, backend, *extra)
        if result:
            rows += result["rows"]
            devices[backend] = result["device"]
        else:
            failed_runs.append(" ".join([backend, *extra]))
    return rows, devices


def devices_line(devices):
    return "; ".join(f"{backend} on {device}" for backend, device in devices.items())


def version(names):
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    """What the figures depend on besides the code: date, versions, machine."""
    packages = {"python": platform.python_version()}
    packages.update({name: version(dists) for name, dists in PACKAGES.items()})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "packages": packages,
        "cpu": f"{cpu_model()} ({platform.machine()})",
        "cores": os.cpu_count(),
    }


def publish(path, benchmark, options, devices, rows, table, about):
    """Print one benchmark's table and write its results as JSON to `path`:
    its rows (the data), which columns of them make its table (`table`:
    [header, row key, format] each) and a paragraph (`about`, Markdown) that
    says what it measures, for `report.py`."""
    print_table(table, rows)
    data = {
        "benchmark": benchmark,
        "environment": environment(),
        "load_at_start": LOAD_AT_START,
        "options": options,
        "devices": devices,
        "failed": failed_runs,
        "about": about,
        "table": table,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {path}")


# --- tables --------------------------------------------------------------------


def cell(row, key, spec):
    """`row[key]` formatted with `spec`; "-" where the row has no such value."""
    value = row.get(key)
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return format(value, spec)


def format_table(table, rows, markdown=False):
    """The lines of a table: plain aligned text, or Markdown."""
    headers = [header for header, _, _ in table]
    cells = [[cell(row, key, spec) for _, key, spec in table] for row in rows]
    if markdown:
        numeric = [bool(spec) for _, _, spec in table]
        rule = ["---:" if n else "---" for n in numeric]
        return ["| " + " | ".join(line) + " |" for line in [headers, rule] + cells]
    widths = [max(len(line[i]) for line in [headers] + cells) for i in range(len(headers))]
    return ["  ".join(c.rjust(w) if spec else c.ljust(w)
                      for c, w, (_, _, spec) in zip(line, widths, table))
            for line in [headers] + cells]


def print_table(table, rows):
    for line in format_table(table, rows):
        print(line)
