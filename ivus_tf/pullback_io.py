"""Input readers of the predict command: a pullback as a stream of uint8 gray frames with their pixel spacing.

`open_pullback` checks everything cheap up front (listing, headers, pixel spacing, frame sizes) and returns a
`Pullback` that decodes one frame at a time, so a pullback of thousands of frames is never held in memory. Inputs:
a folder of frames (one pullback of one frame size, natural order, no spacing: `--pixel-spacing-mm` supplies it), a
multi-frame DICOM (pydicom; spacing in mm from PixelSpacing, else the ultrasound region in cm x 10; row and column
spacing must agree within 1 %; more than 8 bits stored scaled by 255 / (2**BitsStored - 1)), or a manifest CSV
(spacing per row). `--pixel-spacing-mm` overrides any file's spacing with one warning. Colour becomes gray (BT.601).
Details: docs/predict.md#inputs-in-detail.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError, check_pixel_spacing_mm
from ivus_tf.pullback.geometry import SPACING_TOLERANCE

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
MANIFEST_SUFFIXES = (".csv",)
DICOM_PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR")


@dataclass(frozen=True)
class Frame:
    """One frame of a pullback: uint8 gray [H, W] image, ids, output name, spacing, and where it came from."""

    case_id: str
    frame_id: str
    name: str
    image: np.ndarray
    pixel_spacing_mm: float
    source: str


class Warnings:
    """Prints each kind of warning once per run, as one `warning: ...` line on stderr; keeps what it said."""

    def __init__(self, stream=None):
        self.stream = stream
        self.said: dict[str, str] = {}

    def once(self, key: str, message: str) -> None:
        if key in self.said:
            return
        message = " ".join(str(message).split())
        self.said[key] = message
        print(f"warning: {message}", file=self.stream or sys.stderr, flush=True)


@dataclass
class Pullback:
    """An opened input. Iterating yields `Frame`s, decoding one at a time; `frames` is the count."""

    kind: str
    path: Path
    frames: int
    case_ids: list[str]
    pixel_spacing_mm: float | None
    spacing_source: str
    frame_rate_hz: float | None = None
    frame_rate_source: str | None = None
    case_frames: dict = field(default_factory=dict)  # frames per case, in order
    timing: object = None  # ivus_tf.pullback.geometry.DicomTiming of a DICOM input
    dicom_header: object = field(default=None, repr=False)  # the pydicom dataset of a DICOM input
    _iterate: Callable[[], Iterator[Frame]] = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Frame]:
        return self._iterate()

    def __len__(self) -> int:
        return self.frames


def open_pullback(path: str | os.PathLike, pixel_spacing_mm: float | None = None,
                  warnings: Warnings | None = None) -> Pullback:
    """Open a folder of frames, a DICOM file or a manifest CSV (docs/predict.md#inputs-in-detail); InputError if
    unusable."""
    path = Path(path)
    warnings = warnings or Warnings()
    if pixel_spacing_mm is not None:
        pixel_spacing_mm = check_pixel_spacing_mm(pixel_spacing_mm, "--pixel-spacing-mm")
    if path.is_dir():
        return _open_folder(path, pixel_spacing_mm, warnings)
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if not path.is_file():
        raise InputError(f"{path}: input is neither a folder nor a file")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _open_manifest(path, pixel_spacing_mm, warnings)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{path}: a single image; pass the folder that holds the pullback's frames")
    return _open_dicom(path, pixel_spacing_mm, warnings)


def natural_key(name: str) -> tuple:
    """Sort key putting `frame2` before `frame10`: digit runs compare as numbers, text case-insensitively."""
    parts = [(0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", name) if part]
    return parts, name


def header_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from an image file's header without decoding it (Pillow, lazy); None if unknown."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # Pillow cannot parse it: the decoder will say what is wrong when the frame is reached
        return None
    return int(height), int(width)


def _check_one_size(files: list[Path], what: str) -> None:
    """Refuse frames of several sizes (one pullback, one size), naming the first file that differs."""
    first = first_size = None
    for file in files:
        size = header_size(file)
        if size is None:
            continue
        if first is None:
            first, first_size = file, size
        elif size != first_size:
            raise InputError(
                f"{file}: frame is {size[1]}x{size[0]} (WxH) but {first.name} is {first_size[1]}x{first_size[0]}; "
                f"{what} must hold frames of one size (one pullback)"
            )


def _decode_image(path: Path, warnings: Warnings, where: str = "") -> np.ndarray:
    from tfrecords_builder.images import image_to_gray_uint8, read_file

    def corrupt(message: str) -> None:  # one warning per damaged frame: each one's masks are suspect
        warnings.once(f"corrupt:{path}", f"{where}{message}; predicted anyway")

    try:
        array, _ = read_file(path, on_corrupt=corrupt)
        if array.ndim == 3:
            warnings.once("colour", f"{path}: colour image ({array.shape[2]} channels) converted to gray "
                                    "(BT.601 weights); said once for this run")
        return image_to_gray_uint8(array, path)
    except InputError as error:
        raise InputError(f"{where}{error}") from error


# ---------------------------------------------------------------------------------------------------- folder

def _open_folder(path: Path, spacing: float | None, warnings: Warnings) -> Pullback:
    entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
    files = sorted((entry for entry in entries if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda entry: natural_key(entry.name))
    if not files:
        hint = ""
        if any(entry.suffix.lower() in (".dcm", ".dicom") for entry in entries):
            hint = "; it holds DICOM files: pass a multi-frame DICOM file itself as --input"
        elif any(entry.suffix.lower() in MANIFEST_SUFFIXES for entry in entries):
            hint = "; it holds a CSV file: pass the manifest itself as --input"
        raise InputError(f"{path}: no frames in this folder (PNG, TIFF, BMP or JPEG files){hint}")
    stems: dict[str, Path] = {}
    for file in files:
        if file.stem in stems:
            raise InputError(f"{file}: same frame name as {stems[file.stem].name}; rename one of them")
        stems[file.stem] = file
    if spacing is None:
        raise InputError(f"{path}: a folder of frames carries no pixel spacing; pass --pixel-spacing-mm "
                         "(mm per pixel, e.g. 0.02 for a 10 mm field of view at 500 pixels)")
    _check_one_size(files, "a folder")
    case_id = path.resolve().name or "pullback"

    def iterate() -> Iterator[Frame]:
        shape = None
        for file in files:
            image = _decode_image(file, warnings)
            if shape is None:
                shape = image.shape
            elif image.shape != shape:  # a file whose header Pillow could not read
                raise InputError(f"{file}: frame is {image.shape[1]}x{image.shape[0]} (WxH) but the first frame is "
                                 f"{shape[1]}x{shape[0]}; a folder must hold frames of one size (one pullback)")
            yield Frame(case_id, file.stem, file.stem, image, spacing, str(file))

    return Pullback("folder", path, len(files), [case_id], spacing, "--pixel-spacing-mm",
                    case_frames={case_id: len(files)}, _iterate=iterate)


# -------------------------------------------------------------------------------------------------- manifest

def _open_manifest(path: Path, spacing: float | None, warnings: Warnings) -> Pullback:
    from tfrecords_builder.manifest import read_manifest

    rows = read_manifest(path, allow_unlabeled=True)
    names: dict[str, int] = {}
    by_case: dict[str, list] = {}
    for row in rows:
        name = f"{row.case_id}_{row.frame_id}"
        if name in names:
            raise InputError(f"{path} rows {names[name]} and {row.row}: both frames would be written as {name!r}; "
                             "rename a case_id or frame_id")
        names[name] = row.row
        by_case.setdefault(row.case_id, []).append(row)
    for case_rows in by_case.values():
        _check_one_size([row.image for row in case_rows], f"case {case_rows[0].case_id!r} of {path}")
    if spacing is not None and any(abs(row.pixel_spacing_mm - spacing) > 1e-12 for row in rows):
        warnings.once("spacing", f"--pixel-spacing-mm {spacing:g} overrides the manifest's pixel_spacing_mm")

    def iterate() -> Iterator[Frame]:
        for row in rows:
            image = _decode_image(row.image, warnings, where=f"{path} row {row.row}: ")
            yield Frame(row.case_id, row.frame_id, f"{row.case_id}_{row.frame_id}", image,
                        spacing if spacing is not None else row.pixel_spacing_mm, f"{path} row {row.row}")

    source = "--pixel-spacing-mm" if spacing is not None else "manifest pixel_spacing_mm"
    return Pullback("manifest", path, len(rows), list(by_case), spacing, source,
                    case_frames={case: len(case_rows) for case, case_rows in by_case.items()}, _iterate=iterate)


# ----------------------------------------------------------------------------------------------------- DICOM

def _read_dicom_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # defer_size: large values (the pixel data) stay on disk until iter_pixels reads them frame by frame
        dataset = pydicom.dcmread(path, defer_size="64 KB")
    except InvalidDicomError as error:
        raise InputError(f"{path}: not a DICOM file ({' '.join(str(error).split())[:160]})") from error
    except Exception as error:  # pydicom raises many kinds on corrupt files (EOFError, ValueError, struct.error)
        raise InputError(f"{path}: unreadable DICOM file ({type(error).__name__}: {error})") from error
    if "PixelData" not in dataset:
        raise InputError(f"{path}: DICOM file has no pixel data")
    return dataset


def _check_decoder(dataset, path: Path) -> None:
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        raise InputError(f"{path}: DICOM file has no transfer syntax in its file meta information")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise InputError(f"{path}: pixel data in transfer syntax {syntax.name} cannot be decoded by pydicom") \
            from error
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise InputError(f"{path}: pixel data is {syntax.name}; decoding it needs a pydicom plugin ({missing})")


def _check_native_length(dataset, path: Path, frames: int, pixels: int, photometric: str) -> None:
    """Refuse uncompressed pixel data shorter than NumberOfFrames frames up front, not at the frame where it ends."""
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        return
    bits, samples = int(dataset.get("BitsAllocated", 8) or 8), int(dataset.get("SamplesPerPixel", 1) or 1)
    raw = dataset.get_item("PixelData", keep_deferred=True)  # without keep_deferred pydicom reads it all
    if bits % 8 or getattr(raw, "value_tell", None) is None:
        return
    frame_bytes = pixels * (2 if photometric == "YBR_FULL_422" else samples) * bits // 8
    available = min(int(raw.length), os.path.getsize(path) - int(raw.value_tell))
    if available < frames * frame_bytes:
        raise InputError(f"{path}: truncated DICOM file: the pixel data holds {max(available, 0) // frame_bytes} of "
                         f"{frames} frames")


def _header_int(dataset, keyword: str, default: int, path: Path) -> int:
    try:
        return int(dataset.get(keyword, default) or default)
    except Exception:  # noqa: BLE001 - pydicom or int() on a malformed value
        from ivus_tf.pullback.geometry import dicom_raw

        raise InputError(f"{path}: DICOM {keyword} {dicom_raw(dataset, keyword)} is not a whole number") from None


def _open_dicom(path: Path, spacing: float | None, warnings: Warnings) -> Pullback:
    dataset = _read_dicom_header(path)
    rows, columns = _header_int(dataset, "Rows", 0, path), _header_int(dataset, "Columns", 0, path)
    frames = _header_int(dataset, "NumberOfFrames", 1, path)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    bits_stored = _header_int(dataset, "BitsStored", 8, path)
    samples = _header_int(dataset, "SamplesPerPixel", 1, path)
    if rows < 1 or columns < 1:
        raise InputError(f"{path}: DICOM file has no image size (Rows, Columns)")
    if photometric not in DICOM_PHOTOMETRIC:
        raise InputError(f"{path}: photometric interpretation {photometric!r} is not supported; "
                         f"expected one of {', '.join(DICOM_PHOTOMETRIC)}")
    needed = 1 if photometric in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR") else 3
    if samples != needed:
        raise InputError(f"{path}: PhotometricInterpretation {photometric} needs {needed} sample"
                         f"{'s' if needed > 1 else ''} per pixel, but SamplesPerPixel is {samples}; the header "
                         "contradicts itself")
    if _header_int(dataset, "PixelRepresentation", 0, path) != 0:
        raise InputError(f"{path}: signed pixel data is not supported (IVUS B-mode frames are unsigned)")
    _check_decoder(dataset, path)
    _check_native_length(dataset, path, frames, rows * columns, photometric)
    from ivus_tf.pullback.geometry import dicom_spacing

    found, source, problem = dicom_spacing(dataset, warnings, path)
    if spacing is None:
        if problem is not None:
            raise InputError(f"{path}: {problem}; pass --pixel-spacing-mm if you know the spacing")
        if found is None:
            raise InputError(f"{path}: no pixel spacing in the DICOM file (neither PixelSpacing nor an ultrasound "
                             "region in cm); pass --pixel-spacing-mm")
        spacing = found
    else:
        if problem is not None:
            warnings.once("spacing", f"{path}: {problem}; using --pixel-spacing-mm {spacing:g}")
        elif found is not None and abs(found - spacing) > SPACING_TOLERANCE * found:
            warnings.once("spacing", f"--pixel-spacing-mm {spacing:g} overrides the DICOM's {found:g} mm ({source})")
        source = "--pixel-spacing-mm"
    from ivus_tf.pullback.geometry import dicom_timing

    timing = dicom_timing(dataset, frames)
    for note in timing.notes:
        warnings.once(f"timing:{note}", f"{path}: {note}")
    case_id = path.stem or "pullback"
    digits = max(4, len(str(frames - 1)))
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")

    def iterate() -> Iterator[Frame]:
        from pydicom.pixels import iter_pixels

        if colour:
            warnings.once("colour", f"{path}: {photometric} frames converted to gray (BT.601 weights); said once "
                                    "for this run")
        pixels = iter_pixels(path)
        index = 0
        while True:
            try:
                array = next(pixels)
            except StopIteration:
                break
            except Exception as error:  # truncated or corrupt pixel data, decoder failures
                raise InputError(f"{path} frame {index}: cannot decode pixel data "
                                 f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error
            image = _dicom_to_gray_uint8(array, dataset, photometric, bits_stored)
            frame_id = f"{index:0{digits}d}"
            yield Frame(case_id, frame_id, frame_id, image, spacing, f"{path} frame {index}")
            index += 1
        if index != frames:
            raise InputError(f"{path}: NumberOfFrames says {frames} but the pixel data held {index}")

    return Pullback("dicom", path, frames, [case_id], spacing, source, timing.frame_rate_hz, timing.frame_rate_source,
                    case_frames={case_id: frames}, timing=timing, dicom_header=dataset, _iterate=iterate)


def _dicom_to_gray_uint8(array: np.ndarray, dataset, photometric: str, bits_stored: int) -> np.ndarray:
    import cv2

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, dataset)
        bits_stored = 8 * array.dtype.itemsize if array.dtype != np.uint8 else 8
    if array.ndim == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_RGB2GRAY)
    if photometric == "MONOCHROME1":
        array = (2 ** bits_stored - 1) - array.astype(np.int64)
    if bits_stored > 8 or array.dtype != np.uint8:
        top = 2 ** bits_stored - 1
        array = (np.clip(array.astype(np.int64), 0, top) * 255 + top // 2) // top
    return np.ascontiguousarray(array, dtype=np.uint8)
