"""Shared fixtures: tiny synthetic frames and records folders written by the tests themselves."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


def synthetic_frame(case_id: str, frame_id: str, size=(64, 64), tasks=("calcium", "wall_lumen"), seed: int = 0,
                    pixel_spacing_mm: float = 0.02) -> dict:
    """A small frame with a disc-shaped lumen, a ring-shaped wall and a calcium arc, in the `iterate_frames` form."""
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    cy, cx = height / 2 + rng.uniform(-2, 2), width / 2 + rng.uniform(-2, 2)
    radius = np.hypot(yy - cy, xx - cx)
    wall_lumen = np.zeros(size, np.uint8)
    wall_lumen[radius < 0.35 * min(size)] = 2
    wall_lumen[radius < 0.2 * min(size)] = 1
    angle = np.arctan2(yy - cy, xx - cx)
    calcium = ((wall_lumen == 2) & (np.abs(angle - rng.uniform(-2, 2)) < 0.6) & (radius < 0.27 * min(size)))
    image = np.clip(rng.normal(60, 20, size) + 120 * calcium + 40 * (wall_lumen == 2), 0, 255).astype(np.uint8)
    return {
        "case_id": case_id,
        "frame_id": frame_id,
        "image": image,
        "calcium_mask": calcium.astype(np.uint8) if "calcium" in tasks else None,
        "wall_lumen_mask": wall_lumen if "wall_lumen" in tasks else None,
        "pixel_spacing_mm": pixel_spacing_mm,
    }


@pytest.fixture
def make_records(tmp_path):
    """`make_records({case_id: [(frame_id, tasks), ...]}, size=(64, 64))` -> a records folder under tmp_path."""
    from tfrecords_builder.writer import write_records

    counter = iter(range(10**6))

    def _make(cases: dict, size=(64, 64), name: str = "records", shards_per_case: int = 1):
        frames_by_case = {
            case_id: [synthetic_frame(case_id, str(frame_id), size, tasks, seed=next(counter))
                      for frame_id, tasks in frames]
            for case_id, frames in cases.items()
        }
        out = tmp_path / name
        write_records(frames_by_case, out, shards_per_case=shards_per_case)
        return out

    return _make


def free_ports(count: int) -> list[int]:
    """`count` TCP ports free on localhost now (for local tf.distribute worker clusters)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def jax_python() -> str | None:
    """An interpreter with jax and Keras for the JAX-backend checks: $IVUS_TF_JAX_PYTHON, or this one when it has
    jax; None skips them."""
    if os.environ.get("IVUS_TF_JAX_PYTHON"):
        return os.environ["IVUS_TF_JAX_PYTHON"]
    return sys.executable if importlib.util.find_spec("jax") else None


def run_jax_check(script: str, timeout_s: int) -> None:
    """Run `script` under KERAS_BACKEND=jax (CPU) in jax_python(); it must exit 0 and print "jax backend ok"."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([jax_python(), "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                            timeout=timeout_s)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax backend ok" in result.stdout


JAX_MISSING = ("jax is not installed (set IVUS_TF_JAX_PYTHON to a Python with jax and keras to run the JAX-backend "
               "check)")
