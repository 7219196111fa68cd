"""The canonical input: `manifest.csv`, one row per frame.

Columns: `case_id,frame_id,image,calcium_mask,wall_lumen_mask,pixel_spacing_mm`.
- `image`: path relative to the manifest; PNG, TIFF, BMP or JPEG, 8- or 16-bit; RGB is converted to gray.
- `calcium_mask`: optional path; nonzero = calcium.
- `wall_lumen_mask`: optional path; label map 0 background, 1 lumen, 2 vessel wall (inside EEM minus lumen).
- `pixel_spacing_mm`: float > 0, isotropic.
Every converter (phantom, MICCAI 2011) writes this form; the TFRecord writer reads only this form.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

MANIFEST_COLUMNS = ("case_id", "frame_id", "image", "calcium_mask", "wall_lumen_mask", "pixel_spacing_mm")


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write rows (dicts keyed by `MANIFEST_COLUMNS`; missing masks as None or "") atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".manifest-", suffix=".csv.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in MANIFEST_COLUMNS})
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
