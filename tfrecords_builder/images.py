"""Load a manifest's image and mask files into the normalised arrays the records hold.

Images: PNG, TIFF, BMP or JPEG (recognised by their leading bytes, not the file name), 8- or 16-bit, gray, BGR or
BGRA. Colour is converted to gray with OpenCV's BT.601 weights (cv2 channel order is BGR); alpha is dropped.
16-bit values are scaled linearly to 8 bits, `round(v * 255 / 65535)`, so 0 -> 0, 65535 -> 255 and 257*k -> k.
Pixel types other than 8/16-bit unsigned (float TIFF, signed) are rejected rather than guessed at.

Masks are label maps, never scaled: any bit depth, gray, or colour with equal channels (alpha ignored).
- calcium: 0 plus at most one nonzero value (nonzero = calcium), normalised to 0/1. A second nonzero value means
  the file is not a binary mask (a label map, a resampled or lossy file) and is an error.
- wall_lumen: values already in {0 background, 1 lumen, 2 vessel wall}; anything else is an error.
JPEG masks are rejected outright: JPEG is lossy and smears label edges into values that are not labels, and a
value check alone would pass a JPEG that happens to come out clean today and fail on the next one.

Truncated files: OpenCV may hand back a partial image for a truncated file with only a library warning on
stderr, so each file is checked for its end marker first (PNG IEND chunk, JPEG EOI marker, BMP size field), then
decoded from bytes with `cv2.imdecode`. Corrupt JPEG data: libjpeg decodes a damaged entropy-coded segment into
wrong pixels (tens of grey levels off) and only prints "Corrupt JPEG data: ..." on stderr, so decoder output is
captured (file descriptor 2 points at a temporary file while OpenCV decodes) and such a warning makes the file
corrupt: `read_file` refuses it, or hands the warning to `on_corrupt` (predict warns per frame and goes on). The
rest of the decoder chatter (libpng, libtiff, OpenCV logs) is dropped so that a CLI still ends with one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN, check_task, check_wall_lumen_labels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"  # chunk type and its (fixed) CRC
JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


def sniff_format(data: bytes) -> str | None:
    """"png", "jpeg", "tiff", "bmp" from the leading bytes, or None."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if data.startswith(TIFF_SIGNATURES):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def _truncation(kind: str, data: bytes) -> str | None:
    """Why `data` looks cut short, or None. Decoders alone do not always say so."""
    if kind == "png" and PNG_IEND not in data[-4096:]:
        return "truncated PNG (no IEND chunk at the end)"
    if kind == "jpeg" and not data.rstrip(b"\x00\r\n\t ").endswith(JPEG_EOI):
        return "truncated JPEG (no end-of-image marker)"
    if kind == "bmp" and len(data) >= 6 and len(data) < int.from_bytes(data[2:6], "little"):
        return f"truncated BMP ({len(data)} bytes, its header says {int.from_bytes(data[2:6], 'little')})"
    return None


# what libjpeg says (on stderr only) when it decoded damaged data into wrong pixels
JPEG_CORRUPT_MESSAGES = ("Corrupt JPEG data", "Premature end of JPEG file")


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file (image libraries print warnings there directly); the yielded
    list receives what was printed when the block ends."""
    import tempfile

    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):
        yield lines
        return
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read(1 << 16).decode("utf-8", "replace").splitlines())


def read_file(path: str | Path, on_corrupt: Callable[[str], None] | None = None) -> tuple[np.ndarray, str]:
    """Decode `path` as stored (any depth and channel count); return (array, format). InputError if unreadable.

    A JPEG whose data libjpeg reports corrupt is refused, or, with `on_corrupt`, decoded anyway after
    `on_corrupt(message)` (message: `PATH: corrupt JPEG data (...)`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from error
    if not data:
        raise InputError(f"{path}: empty file")
    kind = sniff_format(data)
    if kind is None:
        raise InputError(f"{path}: not a PNG, TIFF, BMP or JPEG file")
    problem = _truncation(kind, data)
    if problem:
        raise InputError(f"{path}: {problem}")
    with _captured_stderr() as said:
        try:
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            array = None
    if array is None or array.size == 0:
        raise InputError(f"{path}: corrupt or unsupported {kind.upper()} file (OpenCV could not decode it)")
    corrupt = [line.strip() for line in said if line.strip().startswith(JPEG_CORRUPT_MESSAGES)]
    if kind == "jpeg" and corrupt:
        message = f"{path}: corrupt JPEG data (libjpeg: {corrupt[0][:120]}); its pixels are partly wrong"
        if on_corrupt is None:
            raise InputError(message)
        on_corrupt(message)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"{path}: unsupported image layout {array.shape}; expected gray, BGR or BGRA")
    return array, kind


def load_image(path: str | Path) -> np.ndarray:
    """The image at `path` as (H, W) uint8 gray (see the module docstring for the conversions)."""
    array, _ = read_file(path)
    return image_to_gray_uint8(array, path)


def image_to_gray_uint8(array: np.ndarray, path: str | Path) -> np.ndarray:
    """An array from `read_file` as (H, W) uint8 gray; `path` names the file in errors.

    Split from `load_image` so that callers can see whether a file was colour (`array.ndim == 3`) before it is
    converted, without decoding it twice (the predict command says once per run that it converted colour).
    """
    if array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: pixel type {array.dtype} is not supported; expected 8- or 16-bit unsigned")
    if array.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        array = cv2.cvtColor(array, code)
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(array)


def load_mask(path: str | Path, task: str, image_shape: tuple[int, int]) -> np.ndarray:
    """The `task` mask at `path` as (H, W) uint8, normalised (calcium 0/1, wall_lumen 0/1/2).

    `image_shape` is the (H, W) of the frame's image; a mask of another size is an error, never resized.
    """
    check_task(task)
    array, kind = read_file(path)
    if kind == "jpeg":
        raise InputError(
            f"{path}: {task} mask is a JPEG; JPEG is lossy and blurs labels, save masks as PNG, TIFF or BMP"
        )
    if array.dtype.kind not in "ui":
        raise InputError(f"{path}: {task} mask has pixel type {array.dtype}; expected integer labels")
    if array.ndim == 3:
        colour = array[..., :3]
        if np.any(colour != colour[..., :1]):
            raise InputError(
                f"{path}: {task} mask is a colour image whose channels differ; save it as a gray label map"
            )
        array = colour[..., 0]
    height, width = array.shape
    if (height, width) != tuple(image_shape[:2]):
        raise InputError(
            f"{path}: {task} mask is {width}x{height} (WxH) but its image is {image_shape[1]}x{image_shape[0]}"
        )
    if task == CALCIUM:
        values = np.unique(array)
        nonzero = values[values != 0]
        if len(nonzero) > 1:
            raise InputError(
                f"{path}: calcium mask is not binary: nonzero values {_listing(nonzero)}; "
                "expected 0 and one calcium value"
            )
        return (array != 0).astype(np.uint8)
    return check_wall_lumen_labels(array, f"{path}: {WALL_LUMEN} mask").astype(np.uint8)


def _listing(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} distinct)" if len(values) > limit else "")
