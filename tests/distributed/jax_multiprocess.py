"""Worker: the package's masks in a two-process JAX run equal one device's.

Run as a script:

    python tests/distributed/jax_multiprocess.py

It starts two processes of itself on this machine, each with 2 host CPU
devices, joined by `keras.distribution.initialize` (JAX's distributed
runtime, coordinator on 127.0.0.1, CPU collectives over gloo) into one mesh
of 4 devices. Each process checks, with the checks of `jax_parallel.py`:

1. Layers under `DataParallel` over the 4 devices, fed as Keras' trainer
   feeds a multi-process run (each process gives the rows its devices hold,
   `jax.make_array_from_process_local_data`), eagerly and in a jitted
   `stateless_call`: the outputs, gathered from both processes
   (`multihost_utils.process_allgather`), equal the outputs one device
   draws for the whole batch, bit for bit, and span both processes.
2. `fit` under `DataParallel`, each process passing its rows of every
   global batch: the final weights equal a one-device run to float
   tolerance, and the step counters equal the step count.
3. `ModelParallel` on meshes (2, 2) and (1, 4), the DropConnect kernel
   sharded across the processes: outputs bit-identical to one device.

Prints "jax multiprocess: OK ..." and exits 0, or exits 1 with the
failures. Only the standard library is imported at module level: pytest's
`--doctest-modules` imports every module under tests/.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

PROCESSES = 2
LOCAL_DEVICES = 2
TIMEOUT_S = 240


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch():
    """Starts the workers, waits for them, and reports. A worker that fails
    leaves the other waiting in a collective: it is then stopped too."""
    start = time.perf_counter()
    port = _free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the workers set their own device count
    with tempfile.TemporaryDirectory() as folder:
        logs = [open(os.path.join(folder, f"worker{i}.log"), "w+") for i in range(PROCESSES)]
        workers = [
            subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", str(i), str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i, log in enumerate(logs)
        ]
        note = ""
        deadline = time.monotonic() + TIMEOUT_S
        failed_at = None
        while any(w.poll() is None for w in workers):
            now = time.monotonic()
            if failed_at is None and any(w.poll() not in (None, 0) for w in workers):
                failed_at = now
            if now > deadline or (failed_at is not None and now > failed_at + 10):
                note = "timed out" if now > deadline else "a worker failed"
                for worker in workers:  # only the processes started here
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait()
                break
            time.sleep(0.2)
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    seconds = time.perf_counter() - start
    summaries = [_last_line(out, f"worker {i}: OK") for i, out in enumerate(outputs)]
    if note or any(w.returncode != 0 for w in workers) or not all(summaries):
        reason = f" ({note}: the others were stopped)" if note else ""
        print(f"jax multiprocess: FAILED after {seconds:.1f} s{reason}", file=sys.stderr)
        for i, (worker, out) in enumerate(zip(workers, outputs)):
            print(f"--- worker {i} (exit {worker.returncode}):", file=sys.stderr)
            print(_without_noise(out)[-6000:], file=sys.stderr)
        return 1
    print(f"jax multiprocess: OK {PROCESSES} processes; {summaries[0]}; {seconds:.1f} s")
    return 0


def _last_line(text, prefix):
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip() if lines else None


def _without_noise(text):
    """The output less TensorFlow's and Gloo's informational lines."""
    noise = ("oneDNN custom operations", "absl::InitializeLog", "[Gloo] Rank")
    return "\n".join(line for line in text.splitlines() if not any(n in line for n in noise))


def worker(process_id, port):
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax

    # Gloo is the default CPU collectives since JAX 0.4.3x; older JAX needs
    # it named (without it, computations across processes fail).
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:
        pass
    import keras

    keras.distribution.initialize(
        job_addresses=f"127.0.0.1:{port}", num_processes=PROCESSES, process_id=process_id
    )
    import jax_parallel  # the checks, shared with the one-process script

    devices = PROCESSES * LOCAL_DEVICES
    if jax.process_count() != PROCESSES or jax.device_count() != devices:
        print(
            f"worker {process_id}: FAILED: {jax.process_count()} processes and "
            f"{jax.device_count()} devices, expected {PROCESSES} and {devices}"
        )
        return 1
    failures = jax_parallel.Failures()
    jax_parallel.check_layers(failures, (devices,))
    worst = jax_parallel.check_fit(failures, (devices,))
    jax_parallel.check_model_parallel(failures, [(2, 2), (1, 4)])
    if failures.messages:
        print(f"worker {process_id}: FAILED {len(failures.messages)} of {failures.checks} checks:")
        for message in failures.messages:
            print(f"  {message}")
        return 1
    print(
        f"worker {process_id}: OK {failures.checks} checks, {devices} devices "
        f"({LOCAL_DEVICES} per process): 6 layers bit-identical under DataParallel, "
        f"fit weights within {worst:.2g}, ModelParallel (2, 2) and (1, 4) "
        f"bit-identical; jax {jax.__version__}, keras {keras.__version__}",
        flush=True,
    )
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "--worker":
        return worker(int(argv[2]), int(argv[3]))
    return launch()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
