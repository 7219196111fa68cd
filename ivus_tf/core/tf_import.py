"""Import TensorFlow without the start-up chatter.

TF 2.21 prints a oneDNN notice and CPU-feature lines on stderr at import, whatever `TF_CPP_MIN_LOG_LEVEL` says.
CLIs should print only what the user asked for, so the import runs with the stderr file descriptor pointed at
/dev/null. Python exceptions still propagate (they are printed by Python after the descriptor is restored).
"""

from __future__ import annotations

import os
import sys


def import_tensorflow():
    """Return the `tensorflow` module, importing it quietly the first time."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or a replaced stderr
        stderr_fd = None
    saved_fd = devnull_fd = None
    if stderr_fd is not None:
        sys.stderr.flush()
        saved_fd = os.dup(stderr_fd)
        devnull_fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull_fd, stderr_fd)
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "TensorFlow 2.21 is not installed: pip install 'ivus-tf[cpu]' (or '[gpu]' on a CUDA machine)"
        ) from error
    finally:
        if saved_fd is not None:
            os.dup2(saved_fd, stderr_fd)
            os.close(saved_fd)
            os.close(devnull_fd)
    return tf
