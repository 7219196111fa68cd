"""Inference time and memory per architecture on the machine the report runs on (Bargsten et al. report both).

Each measurement (architecture x batch size) runs in its own Python process, so its peak memory is its own:

1. build the model with `ivus_tf.models.build_model` at the width, input size and head of the grid's runs (read
   from a run's config.yaml; the calcium head only, which is what a deployed calcium segmenter runs);
2. `predict_on_batch` on a random batch `warmup` times (graph tracing, allocator warm-up), then `calls` timed
   calls; the median per batch is reported, with frames/s;
3. memory: the process's peak resident set size (`resource.getrusage`, Linux ru_maxrss), after building the model
   and at the end; on a GPU also TensorFlow's peak device memory (`tf.config.experimental.get_memory_info`);
4. a float32 matrix product (`tf.linalg.matmul`, n=2048, best of 3) gives the machine's measured peak GFLOP/s;
   the model's FLOPs (`ivus_tf.models.flops.count_flops`) over its time give the share of that peak it reaches.

The machine (CPU model from lscpu, logical CPUs, load average: the machine may be shared; GPU name), date and
TensorFlow / Keras versions are written with the numbers. `python -m ivus_tf.report.inference --worker JSON` is the
per-measurement process.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ivus_tf.core.errors import InputError
from ivus_tf.grid.results import resolve_run_dir
from ivus_tf.report.stats import model_label
from ivus_tf.run_folder import RunFolder
from ivus_tf.training.config import TrainConfig

__all__ = ["BATCH_SIZES", "inference_settings", "machine_description", "measure", "measure_inference",
           "write_inference"]

BATCH_SIZES = (1, 12)


def inference_settings(records: Sequence[Mapping], results_path) -> dict[str, dict]:
    """{arch: {"width", "image_size", "head", "aspp_rates", "unet_stages", "source"}} from the first readable run
    config of each architecture's runs (backbone "none" first); `TrainConfig`'s defaults (the paper's size) when
    none is."""
    settings = {}
    for record in sorted(records, key=lambda r: r["backbone"] != "none"):
        arch = record["arch"]
        if arch in settings and settings[arch]["source"] != "defaults":
            continue
        try:
            config = RunFolder(resolve_run_dir(record, results_path)).load_config()
        except InputError:
            settings.setdefault(arch, {**_settings(TrainConfig()), "source": "defaults"})
        else:
            settings[arch] = {**_settings(config), "source": f"config of run {record['run_id']}"}
    return settings


def _settings(config: TrainConfig) -> dict:
    rates = config.aspp_rates
    return {"width": config.width, "image_size": config.image_size, "head": config.head,
            "aspp_rates": None if rates is None else list(rates), "unet_stages": config.unet_stages}


def machine_description() -> dict:
    """CPU model (lscpu), logical CPUs, load average, OS, Python; the GPU, TF and Keras come from the worker."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "os": platform.platform(), "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(arch: str, batch: int, width: float, image_size: int, head: str = "linear", aspp_rates=None,
            warmup: int = 2, calls: int = 5, matmul_size: int = 2048, unet_stages: str = "doubling") -> dict:
    """One measurement in THIS process (the worker): time, peak memory, FLOPs, matmul peak (module docstring)."""
    from ivus_tf.core.tf_import import import_tensorflow

    tf = import_tensorflow()
    import keras
    import numpy as np

    from ivus_tf.models import build_model
    from ivus_tf.models.flops import count_flops

    gpus = tf.config.list_physical_devices("GPU")
    device = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU")
    rss_start = _peak_rss_mib()
    options = {"aspp_rates": tuple(aspp_rates)} if aspp_rates and arch == "deeplabv3" else {}
    if arch == "unet_res":
        options["stages"] = unet_stages
    keras.utils.set_random_seed(0)
    model = build_model(arch, ("calcium",), input_shape=(image_size, image_size, 1), width=width, head=head,
                        **options)
    flops = count_flops(model)["total"]
    rss_model = _peak_rss_mib()
    images = np.random.default_rng(0).uniform(0, 1, (batch, image_size, image_size, 1)).astype(np.float32)
    if gpus:
        tf.config.experimental.reset_memory_stats("GPU:0")
    for _ in range(warmup):
        model.predict_on_batch(images)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict_on_batch(images)
        times.append(time.perf_counter() - start)
    gpu_peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if gpus else None
    a = tf.random.uniform((matmul_size, matmul_size))
    tf.linalg.matmul(a, a).numpy()
    matmul = []
    for _ in range(3):
        start = time.perf_counter()
        tf.linalg.matmul(a, a).numpy()
        matmul.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"arch": arch, "batch": batch, "width": width, "image_size": image_size, "head": head,
            "parameters": int(model.count_params()), "gflop_per_frame": flops / 1e9,
            "median_s": median, "min_s": float(min(times)), "calls": calls, "warmup": warmup,
            "frames_per_s": batch / median, "gflop_per_s": flops * batch / median / 1e9,
            "matmul_peak_gflop_per_s": 2 * matmul_size**3 / min(matmul) / 1e9,
            "rss_start_mib": rss_start, "rss_model_mib": rss_model, "peak_rss_mib": _peak_rss_mib(),
            "gpu_peak_mib": gpu_peak, "device": device, "tensorflow": tf.__version__, "keras": keras.__version__,
            "backend": keras.backend.backend()}


def _run_worker(spec: dict, timeout_s: float) -> dict:
    command = [sys.executable, "-m", "ivus_tf.report.inference", "--worker", json.dumps(spec)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout_s:g} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "error": f"worker failed (status {done.returncode}): {tail}"}
    return json.loads(lines[-1])


def measure_inference(settings: Mapping[str, Mapping], batch_sizes: Sequence[int] = BATCH_SIZES, warmup: int = 2,
                      calls: int = 5, matmul_size: int = 2048, timeout_s: float = 1800,
                      log=print) -> list[dict]:
    """One worker process per (architecture, batch size); failures come back as {"error": ...} rows."""
    rows = []
    for arch, setting in settings.items():
        for batch in batch_sizes:
            log(f"  inference: {arch} width {setting['width']:g} {setting['image_size']}px batch {batch}")
            spec = {"arch": arch, "batch": int(batch), "width": float(setting["width"]),
                    "image_size": int(setting["image_size"]), "head": setting["head"],
                    "aspp_rates": setting.get("aspp_rates"), "warmup": warmup, "calls": calls,
                    "matmul_size": matmul_size, "unet_stages": setting.get("unet_stages", "doubling")}
            rows.append({**_run_worker(spec, timeout_s), "source": setting.get("source", "")})
    return rows


def _f(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_inference(rows: Sequence[Mapping], machine: Mapping, path: str | Path) -> Path:
    """inference.md: the machine, then one table row per measurement."""
    ok = [r for r in rows if "error" not in r]
    first = ok[0] if ok else {}
    peak = max((r["matmul_peak_gflop_per_s"] for r in ok), default=None)
    gpu = any(r.get("gpu_peak_mib") is not None for r in ok)
    lines = ["# Inference time and memory", "",
             f"- Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs; device: "
             f"{first.get('device', 'n/a')}; load average at start {', '.join(map(str, machine['load_average']))} "
             "(a shared machine slows every number)",
             f"- Date: {machine['date']}; TensorFlow {first.get('tensorflow', 'n/a')}, Keras "
             f"{first.get('keras', 'n/a')} ({first.get('backend', 'n/a')} backend); Python {machine['python']}; "
             f"{machine['os']}",
             f"- Measured float32 matmul peak: {_f(peak, 0)} GFLOP/s (best of the workers' n=2048 products)",
             "- Method: one process per row; the calcium model (calcium head only) at the grid's width and input "
             "size; `predict_on_batch` on random input, median of the timed calls after warm-up calls; "
             "peak RSS = the process's peak resident memory (Python, TensorFlow, model and activations), "
             "'model built' = the peak before the first call" + ("; GPU peak from get_memory_info" if gpu else ""),
             "",
             "| Model | Width | Input | Parameters [M] | GFLOP / frame | Batch | Median per batch [ms] | "
             "Per frame [ms] | Frames/s | GFLOP/s (% of matmul peak) | Peak RSS [MiB] (model built) |"
             + (" GPU peak [MiB] |" if gpu else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if gpu else "")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {model_label((r['arch'], 'none'))} | {r['width']:g} | {r['image_size']}² | | | "
                         f"{r['batch']} | error: {r['error']} | | | | |" + (" |" if gpu else ""))
            continue
        share = f" ({100 * r['gflop_per_s'] / peak:.0f} %)" if peak else ""
        lines.append(f"| {model_label((r['arch'], 'none'))} | {r['width']:g} | {r['image_size']}² | "
                     f"{r['parameters'] / 1e6:.3g} | {r['gflop_per_frame']:.3g} | {r['batch']} | "
                     f"{1e3 * r['median_s']:.1f} | {1e3 * r['median_s'] / r['batch']:.1f} | {r['frames_per_s']:.2f} | "
                     f"{r['gflop_per_s']:.1f}{share} | {r['peak_rss_mib']:.0f} ({r['rss_model_mib']:.0f}) |"
                     + (f" {_f(r.get('gpu_peak_mib'), 0)} |" if gpu else ""))
    sources = sorted({f"{r['arch']}: {r['source']}" for r in rows if r.get("source")})
    if sources:
        lines += ["", "Settings from: " + "; ".join(sources) + "."]
    calls = first.get("calls")
    if calls:
        lines += [f"Timed calls per row: {calls} after {first['warmup']} warm-up calls."]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _worker(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "--worker":
        print("usage: python -m ivus_tf.report.inference --worker JSON (one measurement; used by the report)",
              file=sys.stderr)
        return 2
    result = measure(**json.loads(argv[1]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
