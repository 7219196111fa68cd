"""Shared by the bench scripts: what machine this is, and its measured float32 matmul peak.

Plain functions with no package imports at module level, so scripts run in other environments (the PyTorch
comparison venv) can use them too. Scripts run as `python bench/<name>.py` find this module beside them.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import tempfile
import threading
import time


def cpu_model() -> str:
    """The CPU's model name from lscpu (or the platform's processor string)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")
    return model or platform.processor() or "unknown CPU"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine() -> str:
    """One line: CPU model, usable cores, Python version."""
    return f"{cpu_model()}, {usable_cores()} cores usable, Python {platform.python_version()}"


def tf_matmul_peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n x n matmul in TensorFlow (graph mode): the machine's practical peak."""
    from ivus_tf.core.tf_import import import_tensorflow

    tf = import_tensorflow()
    a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# ivus_tf.core.errors.sigterm_as_interrupt does this for the package's CLIs; this module imports nothing from the
# package (it also runs in the PyTorch comparison venv), hence its own handler.
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_measured(command: list[str], cwd, env: dict) -> tuple[float, float, float, str, str]:
    """Run `command` to its end: (wall s, CPU s, peak RSS in GB of that process, stdout, stderr); SystemExit with
    its output when it fails.

    The command's output goes to temporary files, not pipes (a pipe read only at the end blocks a command that
    writes more than the pipe holds). If the bench itself is stopped meanwhile (Ctrl-C, or SIGTERM from the main
    thread's point of view), the command is stopped too and waited for: a killed bench leaves no measured command
    running on, competing for the CPU with the next measurement."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        previous = (signal.signal(signal.SIGTERM, _raise_interrupt)
                    if threading.current_thread() is threading.main_thread() else None)
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if status != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{stdout}\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024 ** 2, stdout, stderr
