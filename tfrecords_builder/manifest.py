"""The canonical input: `manifest.csv`, one row per frame.

Columns: `case_id,frame_id,image,calcium_mask,wall_lumen_mask,pixel_spacing_mm`.
- `image`: path relative to the manifest; PNG, TIFF, BMP or JPEG, 8- or 16-bit; RGB is converted to gray.
- `calcium_mask`: optional path; nonzero = calcium.
- `wall_lumen_mask`: optional path; label map 0 background, 1 lumen, 2 vessel wall (inside EEM minus lumen).
- `pixel_spacing_mm`: mm per pixel, isotropic, 0.001 to 1 (`ivus_tf.core.errors.PIXEL_SPACING_RANGE_MM`).
Every converter (phantom, MICCAI 2011) writes this form; the TFRecord writer reads only this form.

`read_manifest` checks everything that is cheap before any pixel is read, so a bad row fails in a second rather
than an hour into a build: the six columns are all required (mask cells may be empty); extra columns are
ignored, since people keep notes beside their data; row numbers are editor line numbers (the header is line 1).
`case_id` and `frame_id` become file names, so they must match `SAFE_ID` (letters, digits, `.`, `_`, `-`, not
starting with `.`, `_` or `-`, no `..`, at most 100 characters), and case ids may not differ only by letter case
(they would collide on macOS and Windows file systems).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ivus_tf.core.atomic import atomic_file
from ivus_tf.core.errors import InputError, check_pixel_spacing_mm
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN

MANIFEST_COLUMNS = ("case_id", "frame_id", "image", "calcium_mask", "wall_lumen_mask", "pixel_spacing_mm")
MASK_COLUMNS = {CALCIUM: "calcium_mask", WALL_LUMEN: "wall_lumen_mask"}
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_ID_LENGTH = 100


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write rows (dicts keyed by `MANIFEST_COLUMNS`; missing masks as None or "") atomically to `path`."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in MANIFEST_COLUMNS})
    return path


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row. Paths are absolute; `row` is the row's line number in the file (header = 1)."""

    case_id: str
    frame_id: str
    image: Path
    calcium_mask: Path | None
    wall_lumen_mask: Path | None
    pixel_spacing_mm: float
    row: int

    def mask(self, task: str) -> Path | None:
        """The mask path of `task` ("calcium" or "wall_lumen"), or None when the row carries no such label."""
        return getattr(self, MASK_COLUMNS[task])


def read_manifest(path: str | os.PathLike, allow_unlabeled: bool = False) -> list[ManifestRow]:
    """Read and validate `path`; return its rows in file order.

    Raises `InputError` naming the manifest and row on: an unreadable or empty file, missing columns, an unsafe
    or duplicate (case_id, frame_id), a pixel spacing that is not a finite number > 0, an empty image path, a
    referenced file that does not exist, and a row with no mask at all (unless `allow_unlabeled`).
    Image contents are not read here (see `tfrecords_builder.images`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found" if not path.exists() else f"{path}: manifest is not a file")
    base = Path(os.path.abspath(path.parent))
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            records = _read_records(path, handle)
    except OSError as error:
        raise InputError(f"{path}: cannot read manifest ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: manifest is not UTF-8 text ({error.reason} at byte {error.start})") from error
    if not records:
        raise InputError(f"{path}: empty manifest; expected a header row {','.join(MANIFEST_COLUMNS)}")
    (_, header), data = records[0], records[1:]
    columns = _column_positions(path, header)
    if not data:
        raise InputError(f"{path}: manifest has a header but no data rows")
    rows: list[ManifestRow] = []
    seen: dict[tuple[str, str], int] = {}
    case_spelling: dict[str, str] = {}
    for line, cells in data:
        if len(cells) > len(header):
            raise InputError(
                f"{path} row {line}: {len(cells)} fields but the header has {len(header)} columns "
                "(quote paths that contain commas)"
            )
        row = _parse_row(path, base, line, {name: _cell(cells, i) for name, i in columns.items()}, allow_unlabeled)
        key = (row.case_id, row.frame_id)
        if key in seen:
            raise InputError(
                f"{path} rows {seen[key]} and {line}: duplicate (case_id, frame_id) ({row.case_id!r}, {row.frame_id!r})"
            )
        seen[key] = line
        other = case_spelling.setdefault(row.case_id.lower(), row.case_id)
        if other != row.case_id:
            raise InputError(
                f"{path} row {line}: case_id {row.case_id!r} differs from case_id {other!r} only by letter case; "
                "record file names would collide on case-insensitive file systems"
            )
        rows.append(row)
    return rows


def _read_records(path: Path, handle) -> list[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-blank CSV record; the line number is where the record starts."""
    reader = csv.reader(handle, strict=True)
    records = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return records
        except csv.Error as error:
            raise InputError(f"{path} row {line}: not valid CSV ({error})") from error
        cells = [cell.strip() for cell in cells]
        if any(cells):
            records.append((line, cells))


def _column_positions(path: Path, header: list[str]) -> dict[str, int]:
    duplicated = sorted({name for name in header if name and header.count(name) > 1})
    if duplicated:
        raise InputError(f"{path}: column(s) {', '.join(duplicated)} appear more than once in the header")
    missing = [name for name in MANIFEST_COLUMNS if name not in header]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; the header must name {','.join(MANIFEST_COLUMNS)} "
            "(mask cells may be left empty)"
        )
    return {name: header.index(name) for name in MANIFEST_COLUMNS}


def _cell(cells: list[str], position: int) -> str:
    return cells[position] if position < len(cells) else ""


def _parse_row(path: Path, base: Path, line: int, cells: dict[str, str], allow_unlabeled: bool) -> ManifestRow:
    where = f"{path} row {line}"
    for name in ("case_id", "frame_id"):
        _check_id(where, name, cells[name])
    spacing = _parse_spacing(where, cells["pixel_spacing_mm"])
    if not cells["image"]:
        raise InputError(f"{where}: image path is empty")
    image = _existing_file(where, base, "image", cells["image"])
    masks = {
        column: _existing_file(where, base, column, cells[column]) if cells[column] else None
        for column in MASK_COLUMNS.values()
    }
    if not allow_unlabeled and all(mask is None for mask in masks.values()):
        raise InputError(
            f"{where}: no calcium_mask and no wall_lumen_mask; give at least one, or pass --allow-unlabeled"
        )
    return ManifestRow(cells["case_id"], cells["frame_id"], image, masks["calcium_mask"], masks["wall_lumen_mask"],
                       spacing, line)


def _check_id(where: str, name: str, value: str) -> None:
    """`case_id` and `frame_id` end up in file names: allow only a conservative, portable set of characters."""
    if not value:
        raise InputError(f"{where}: {name} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise InputError(f"{where}: {name} is {len(value)} characters long, at most {MAX_ID_LENGTH} are allowed")
    if not SAFE_ID.fullmatch(value) or ".." in value:
        raise InputError(
            f"{where}: {name} {value!r} is not a safe file name; use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, without '..'"
        )


def _parse_spacing(where: str, value: str) -> float:
    if not value:
        raise InputError(f"{where}: pixel_spacing_mm is empty; it must be a finite number > 0")
    return check_pixel_spacing_mm(value, f"{where}: pixel_spacing_mm")


def _existing_file(where: str, base: Path, column: str, value: str) -> Path:
    resolved = Path(os.path.abspath(base / os.path.expanduser(value)))
    if not resolved.is_file():
        state = "is not a file" if resolved.exists() else "not found"
        raise InputError(f"{where}: {column} {value!r} {state} (looked at {resolved})")
    return resolved
