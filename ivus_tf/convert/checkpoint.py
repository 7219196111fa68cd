"""Reading a PyTorch checkpoint without running anything in it: `read_state_dict(path) -> {name: float32 array}`.

A `.pth` file is a pickle, and unpickling can call any function the file names (a checkpoint from the internet
can run code on load). `torch.load(..., weights_only=True)` uses PyTorch's restricted unpickler instead: it builds
tensors, containers and plain values and refuses every other global, before calling anything. Only
`argparse.Namespace` is added to what it allows (torchvision's reference training scripts store their arguments
as one under "args"; it holds plain values and runs no code).

Accepted: a state dict (a mapping of names to tensors), or a training checkpoint holding one under "model" or
"state_dict" (its other entries are ignored). Anything else is an `InputError` naming the file.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError

STATE_DICT_KEYS = ("model", "state_dict")
TORCH_INSTALL = ("install the CPU builds: pip install torch torchvision --index-url "
                 "https://download.pytorch.org/whl/cpu (docs/convert.md)")


def import_torch():
    """torch, or an `InputError` saying how to install it (it is the optional `convert` extra)."""
    try:
        import torch
    except ImportError:
        raise InputError(f"converting a PyTorch checkpoint needs torch: {TORCH_INSTALL}") from None
    return torch


def _refusal(error: Exception) -> str:
    """The informative line of torch's (multi-line) weights-only refusal."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.split(" Please use")[0][:300]  # not torch's advice to allow the global
    return (lines[0] if lines else type(error).__name__)[:300]


def _is_state_dict(value, torch) -> bool:
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def read_state_dict(path) -> dict[str, np.ndarray]:
    """{parameter or buffer name: numpy array} of the checkpoint at `path` (floating tensors as float32)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    torch = import_torch()
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise InputError(f"{path}: refused by torch.load(weights_only=True), nothing in it was run: "
                         f"{_refusal(error)}") from None
    if not _is_state_dict(data, torch) and isinstance(data, Mapping):
        nested = [data[key] for key in STATE_DICT_KEYS if key in data]
        data = nested[0] if nested else data
    if not _is_state_dict(data, torch):
        raise InputError(f"{path}: not a state dict (a mapping of names to tensors), nor a checkpoint holding one "
                         f"under {' or '.join(repr(k) for k in STATE_DICT_KEYS)}; got {type(data).__name__}")
    return {name: (tensor.detach().float() if tensor.is_floating_point() else tensor.detach()).numpy()
            for name, tensor in data.items()}
