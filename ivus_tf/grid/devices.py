"""`--devices 0,1,...`: one worker process per device on one machine, each training one run at a time.

TensorFlow picks its GPUs when it starts, so each device needs its own process: worker k is
`python -m ivus_tf.grid --config C --out GRID_DIR [--shard I/N]` with `CUDA_VISIBLE_DEVICES=<device k>`. The
workers share this machine's runs (its shard) by claiming them (`ivus_tf.grid.ledger.claim_run`): each takes the
next run nobody has recorded or holds, so a slow run (pre-training, DeepLabV3) does not leave a device idle while
another still has a queue. Their lines reach the console prefixed with the device. `cpu` as a device hides every
GPU (`CUDA_VISIBLE_DEVICES=""`), for CPU-only workers.

Ctrl-C reaches the workers with the terminal's process group; SIGTERM (Slurm, Kubernetes) is passed on to them.
The exit status is the largest of the workers'.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ivus_tf.core.errors import InputError
from ivus_tf.grid.runner import PARALLEL_ENV


def gpu_count() -> int:
    """NVIDIA GPUs of this machine (what CUDA_VISIBLE_DEVICES indexes), from the driver, without TensorFlow."""
    folder = Path("/proc/driver/nvidia/gpus")
    if folder.is_dir():
        return sum(1 for _ in folder.iterdir())
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def parse_devices(text: str, gpus: int | None = None) -> list[str]:
    """'0,1' -> ['0', '1']; 'cpu' entries -> '' (no GPU visible). A GPU index this machine does not have (`gpus`,
    default `gpu_count()`) is an error: CUDA would hide every GPU and the worker would train on the CPU unawares."""
    devices = [item.strip() for item in text.split(",")]
    for item in devices:
        if not (item.isdigit() or item == "cpu"):
            raise InputError(f"--devices {text!r}: expected GPU indices or 'cpu', comma-separated (e.g. 0,1)")
    wanted = [int(item) for item in devices if item.isdigit()]
    if wanted:
        gpus = gpu_count() if gpus is None else gpus
        missing = [index for index in wanted if index >= gpus]
        if missing:
            have = f"GPUs 0-{gpus - 1}" if gpus > 1 else "GPU 0" if gpus == 1 else "no NVIDIA GPU"
            raise InputError(f"--devices {text!r}: this machine has no GPU {missing[0]} (it has {have}); use 'cpu' "
                             "for a worker without GPU")
    return ["" if item == "cpu" else item for item in devices]


def _pump(stream, prefix: str, write: Callable[[str], None]) -> None:
    for line in stream:
        write(prefix + line.rstrip("\n"))


def run_devices(devices: Sequence[str], worker_args: Sequence[str], log: Callable[[str], None] = print) -> int:
    """Start one `python -m ivus_tf.grid *worker_args` per device and wait for all; the largest exit status."""
    lock = threading.Lock()

    def write(text: str) -> None:
        with lock:
            log(text)

    workers, pumps = [], []
    for device in devices:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": device, PARALLEL_ENV: str(len(devices)),
               "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "ivus_tf.grid", *worker_args]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   cwd=Path.cwd())
        workers.append(process)
        pump = threading.Thread(target=_pump, args=(process.stdout, f"[device {device or 'cpu'}] ", write),
                                daemon=True)
        pump.start()
        pumps.append(pump)

    def forward(signum, frame):
        for process in workers:
            if process.poll() is None:
                process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        codes = [process.wait() for process in workers]
    except KeyboardInterrupt:  # from a terminal the workers got it too; from `kill -INT` only this process did
        forward(signal.SIGINT, None)
        codes = [process.wait() for process in workers]
    finally:
        signal.signal(signal.SIGTERM, previous)
    for pump in pumps:
        pump.join()
    return max(codes, key=lambda code: (code != 0, abs(code)))
