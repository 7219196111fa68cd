"""`miccai2011`: convert the MICCAI 2011 IVUS challenge layout into the canonical manifest form.

The data is Balocco et al.'s reference database (Comput. Med. Imaging Graph. 38:70-90, 2014): lumen and
media-adventitia (EEM) contours, no calcium, so every frame becomes a `wall_lumen` frame (0 background, 1 lumen,
2 inside the media but not the lumen). `case_id` is `p<PP>` of `frame_PP_FFFF_NNN` (prefixed `<X>_` under
`Data_set_<X>`), shared by a pullback's training and test frames, so splits stay case-wise. Contour vertices are
`x, y` pixels (x = column, origin at the top-left pixel centre), filled at pixel centres by the even-odd rule (as
`poly2mask`; `cv2.fillPoly` would inflate every mask by about half a pixel all round). One data set per run (A and
B differ in pixel spacing). Layout, names and rules: docs/data.md#miccai-2011-ivus-challenge-data.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ivus_tf.core.atomic import atomic_output_dir
from ivus_tf.core.commands import python
from ivus_tf.core.errors import InputError, check_pixel_spacing_mm
from ivus_tf.core.progress import progress
from tfrecords_builder.features import encode_png
from tfrecords_builder.manifest import write_manifest

IMAGE_DIR = "DCM"
DEFAULT_LABEL_DIRS = ("LABELS", "LABELS_obs1")
FRAME_NAME = re.compile(r"frame_(\d+)_(\d+)_(\d+)")
CONTOUR_NAME = re.compile(r"(lum|med)_(frame_\d+_\d+_\d+)\.txt")
DATA_SET_DIR = re.compile(r"Data_set_([A-Za-z0-9]+)")
CONTOURS = {"lum": "lumen", "med": "media"}
LUMEN_OUTSIDE_TOLERANCE = 0.01
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_sets(src: Path, label_dirs: Sequence[str] = DEFAULT_LABEL_DIRS, data_set: str | None = None
              ) -> list[tuple[Path, Path, str]]:
    """(frame folder, contour folder, data set tag) of every set folder at or below `src`."""
    if not src.is_dir():
        raise InputError(f"{src}: not a folder")
    set_dirs = sorted({p.parent for p in src.rglob(IMAGE_DIR) if p.is_dir()})
    if not set_dirs:
        raise InputError(f"{src}: no {IMAGE_DIR}/ folder found; expected the MICCAI 2011 layout "
                         f"({IMAGE_DIR}/frame_*.png beside LABELS/lum_frame_*.txt and med_frame_*.txt)")
    sets = []
    for set_dir in set_dirs:
        tags = [m.group(1) for part in set_dir.resolve().parts if (m := DATA_SET_DIR.fullmatch(part))]
        tag = tags[-1] if tags else ""
        if data_set is not None and tag != data_set:
            continue
        labels = next((set_dir / name for name in label_dirs if (set_dir / name).is_dir()), None)
        if labels is None:
            raise InputError(f"{set_dir}: no contour folder ({', '.join(label_dirs)}) beside {IMAGE_DIR}/; "
                             "name it with --labels-dir, or point --src at a set folder that has contours")
        sets.append((set_dir / IMAGE_DIR, labels, tag))
    if not sets:
        raise InputError(f"{src}: no {IMAGE_DIR}/ folder under a Data_set_{data_set} folder")
    tags = sorted({tag for _, _, tag in sets})
    if len(tags) > 1:
        shown = ", ".join(tag or "(untagged)" for tag in tags)
        raise InputError(f"{src}: holds data sets {shown}, which differ in pixel spacing; convert one at a time "
                         "with --data-set or by pointing --src at its folder")
    return sets


def list_frames(sets: Sequence[tuple[Path, Path, str]]) -> list[dict]:
    """Pair every frame with its lumen and media contour files; a frame or contour without its partner is an error."""
    frames: dict[tuple[str, str], dict] = {}
    for image_dir, label_dir, tag in sets:
        images = {p.stem: p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
        if not images:
            raise InputError(f"{image_dir}: no frame_*.png frames")
        contours = {(m.group(1), m.group(2)): p for p in label_dir.iterdir()
                    if p.is_file() and (m := CONTOUR_NAME.fullmatch(p.name))}
        for (kind, stem), path in sorted(contours.items()):
            if stem not in images:
                raise InputError(f"{path}: {CONTOURS[kind]} contour without a frame ({image_dir / (stem + '.png')} "
                                 "is missing)")
        for stem, image in sorted(images.items()):
            match = FRAME_NAME.fullmatch(stem)
            if not match:
                raise InputError(f"{image}: not named frame_PP_FFFF_NNN.png, so its pullback is unknown")
            paths = {}
            for kind, name in CONTOURS.items():
                if (kind, stem) not in contours:
                    raise InputError(f"{image}: no {name} contour ({label_dir / f'{kind}_{stem}.txt'} is missing)")
                paths[name] = contours[(kind, stem)]
            case_id = f"{tag}_p{match.group(1)}" if tag else f"p{match.group(1)}"
            key = (case_id, stem)
            if key in frames:
                raise InputError(f"{image}: frame {stem} of case {case_id} also comes from {frames[key]['image']}; "
                                 "convert those folders separately")
            frames[key] = {"case_id": case_id, "frame_id": stem, "image": image, **paths}
    return [frames[key] for key in sorted(frames)]


def read_contour(path: Path) -> np.ndarray:
    """The (N, 2) float64 vertices (x, y) of a contour file; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read contour ({error})") from error
    points = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cells = line.split(",")
        try:
            point = [float(cell) for cell in cells]
        except ValueError:
            point = []
        if len(point) != 2 or not all(math.isfinite(v) for v in point):
            raise InputError(f"{path} line {number}: expected 'x, y' (two finite numbers), got {line.strip()[:60]!r}")
        points.append(point)
    if len(points) < 3:
        raise InputError(f"{path}: {len(points)} point(s); a contour polygon needs at least 3")
    return np.asarray(points, dtype=np.float64)


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the pixels whose centres lie inside the closed polygon `points` ((N, 2) x, y).

    Scanline fill at pixel centres (row r is the line y = r): an edge crosses row r when r lies in [y_low, y_high),
    and pixel (r, c) is inside when an odd number of crossings x satisfy x <= c (even-odd rule).
    """
    height, width = shape
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(height, dtype=np.float64)[:, None]
    crosses = ((y0 <= rows) & (rows < y1)) | ((y1 <= rows) & (rows < y0))
    row_index, edge = np.nonzero(crosses)
    x = x0[edge] + (row_index - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    first_column = np.clip(np.ceil(x), 0, width).astype(np.int64)
    toggles = np.zeros((height, width + 1), np.int64)
    np.add.at(toggles, (row_index, first_column), 1)
    return (np.cumsum(toggles, axis=1)[:, :width] % 2).astype(bool)


def wall_lumen_labels(lumen_path: Path, media_path: Path, shape: tuple[int, int],
                      lumen_outside_tolerance: float = LUMEN_OUTSIDE_TOLERANCE) -> np.ndarray:
    """The wall_lumen label map (0 background, 1 lumen, 2 media minus lumen) from the two contour files."""
    masks = {}
    for name, path in (("lumen", lumen_path), ("media", media_path)):
        masks[name] = polygon_mask(read_contour(path), shape)
        if not masks[name].any():
            raise InputError(f"{path}: the {name} polygon covers no pixel centre of the {shape[1]} x {shape[0]} "
                             "frame (coordinates outside the image, or a degenerate polygon)")
    lumen, media = masks["lumen"], masks["media"]
    outside = int(np.count_nonzero(lumen & ~media))
    if outside > lumen_outside_tolerance * np.count_nonzero(lumen):
        raise InputError(
            f"{lumen_path}: {outside} of {np.count_nonzero(lumen)} lumen pixels lie outside the media contour "
            f"{media_path.name} (more than {lumen_outside_tolerance:.0%}); the contours are swapped or wrong"
        )
    labels = np.zeros(shape, np.uint8)
    labels[media] = 2
    labels[lumen] = 1
    return labels


def _read_frame(path: Path) -> tuple[bytes, tuple[int, int]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read frame ({error.strerror or error})") from error
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if array is None or array.ndim not in (2, 3):
        raise InputError(f"{path}: not a decodable image")
    if not data.startswith(PNG_SIGNATURE):  # named .png but stored otherwise: store it as PNG
        data = encode_png(array if array.ndim == 2 else cv2.cvtColor(array, cv2.COLOR_BGR2GRAY))
    return data, (int(array.shape[0]), int(array.shape[1]))


def convert_miccai2011(
    src: str | os.PathLike,
    out: str | os.PathLike,
    pixel_spacing_mm: float,
    overwrite: bool = False,
    label_dirs: Sequence[str] = DEFAULT_LABEL_DIRS,
    data_set: str | None = None,
    lumen_outside_tolerance: float = LUMEN_OUTSIDE_TOLERANCE,
) -> dict:
    """Convert the layout under `src` into `out` (manifest, frames, wall_lumen label maps); return a summary."""
    src, out = Path(src), Path(out)
    if isinstance(pixel_spacing_mm, bool) or not isinstance(pixel_spacing_mm, (int, float)):
        raise InputError(f"pixel spacing {pixel_spacing_mm!r} mm must be a finite number > 0 (0.026 for data set B)")
    check_pixel_spacing_mm(pixel_spacing_mm, "pixel spacing (--pixel-spacing-mm)")
    if Path(os.path.realpath(src)).is_relative_to(os.path.realpath(out)):
        raise InputError(f"{out}: holds the source {src}; writing there would replace the input")
    frames = list_frames(find_sets(src, label_dirs, data_set))
    rows = []
    with atomic_output_dir(out, overwrite=overwrite) as tmp_dir:
        for frame in progress(frames, desc="miccai2011", unit="frames"):
            data, shape = _read_frame(frame["image"])
            labels = wall_lumen_labels(frame["lumen"], frame["media"], shape, lumen_outside_tolerance)
            relative = f"{frame['case_id']}/{frame['frame_id']}.png"
            for folder, content in (("images", data), ("wall_lumen", encode_png(labels))):
                (tmp_dir / folder / frame["case_id"]).mkdir(parents=True, exist_ok=True)
                (tmp_dir / folder / relative).write_bytes(content)
            rows.append({"case_id": frame["case_id"], "frame_id": frame["frame_id"], "image": f"images/{relative}",
                         "calcium_mask": None, "wall_lumen_mask": f"wall_lumen/{relative}",
                         "pixel_spacing_mm": float(pixel_spacing_mm)})
        write_manifest(tmp_dir / "manifest.csv", rows)
    cases: dict[str, int] = {}
    for row in rows:
        cases[row["case_id"]] = cases.get(row["case_id"], 0) + 1
    return {"manifest": str(out / "manifest.csv"), "frames": len(rows), "cases": cases}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True, help="challenge folder (a set folder holding DCM/, or one above)")
    parser.add_argument("--out", required=True, help="folder to create: manifest.csv, images/, wall_lumen/")
    parser.add_argument("--pixel-spacing-mm", required=True, type=float, metavar="MM",
                        help="isotropic pixel spacing of the frames (0.026 for the 20 MHz 384 px data set B)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--labels-dir", action="append", metavar="NAME",
                        help="contour folder name beside DCM/, first found wins; repeatable "
                             f"(default {' then '.join(DEFAULT_LABEL_DIRS)})")
    parser.add_argument("--data-set", metavar="X", help="only folders under Data_set_X (e.g. B)")


def run(args: argparse.Namespace) -> int:
    summary = convert_miccai2011(args.src, args.out, args.pixel_spacing_mm, args.overwrite,
                                 tuple(args.labels_dir or DEFAULT_LABEL_DIRS), args.data_set)
    cases = summary["cases"]
    print(f"wrote {summary['frames']} frames of {len(cases)} cases ({', '.join(cases)}) to {args.out}")
    print(f"manifest: {summary['manifest']}; next: {python()} -m tfrecords_builder build --manifest "
          f"{summary['manifest']} --out RECORDS")
    return 0
