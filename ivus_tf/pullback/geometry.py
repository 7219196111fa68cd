"""Where each frame lies along the pullback, in mm, how large its pixels are, and where those numbers came from.

A motorised pullback moves the catheter at speed v (mm/s) while frames come at rate f (Hz): frame i lies at
`z_i = v * t_i` and stands for the slab `w_i = z_{i+1} - z_i` (the last frame: v / f), so a run a..b is
`sum(w_a..w_b)` long. Flags override the DICOM tags; a tag that is unreadable or outside `FRAME_RATE_RANGE_HZ` /
`PULLBACK_SPEED_RANGE_MM_S` is ignored with a note, a flag outside them is refused. Without a speed and a frame rate
(or a gated rate) `positions_mm` is None and `require_lengths` names the missing flags. The sources, in order:
docs/pullback_report.md#pullback-geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ivus_tf.core.errors import InputError, check_pixel_spacing_mm, positive_number

SPEED_FLAG, RATE_FLAG = "--pullback-speed-mm-s", "--frame-rate-hz"
SPACING_TOLERANCE = 0.01  # row and column spacing must agree within 1 %: scan-converted IVUS pixels are square
DICOM_UNITS_CM = 3
# Physical ranges: IVUS acquires at ~7.5-100 frames/s and pulls back at 0.5-1 mm/s, high-speed OCT at up to
# ~200 frames/s and 40 mm/s; values outside these generous bounds are typos or corrupt tags.
FRAME_RATE_RANGE_HZ = (0.1, 10000.0)
PULLBACK_SPEED_RANGE_MM_S = (0.001, 100.0)


def in_range(value, what: str, bounds: tuple[float, float], unit: str) -> float:
    """`value` as a float, or `InputError` naming `what` unless it is a number within `bounds`."""
    number = positive_number(value, what)
    if not bounds[0] <= number <= bounds[1]:
        raise InputError(f"{what} {number:g} must be between {bounds[0]:g} and {bounds[1]:g} {unit}")
    return number


@dataclass(frozen=True)
class DicomTiming:
    """Timing and pullback tags of a DICOM file (all optional); `notes` are anomalies worth one warning each."""

    frame_rate_hz: float | None = None
    frame_rate_source: str | None = None
    frame_times_s: tuple | None = None  # from FrameTimeVector, frame 0 at 0 s
    pullback_speed_mm_s: float | None = None
    gated_interval_mm: float | None = None
    acquisition: str | None = None
    pullback_frame_range: tuple | None = None  # (first, last), 0-based, inclusive
    notes: tuple = ()


def _get(dataset, keyword: str):
    """The tag's value, or None when absent; pydicom raises converting malformed values, which count as absent
    after a note from the caller (`_number`)."""
    try:
        return getattr(dataset, keyword, None)
    except Exception:  # noqa: BLE001 - e.g. ValueError for text in a decimal string
        return "(unreadable)"


def _number(dataset, keyword: str, notes: list, to_value=float, bounds=None, unit: str = "") -> float | None:
    """The tag as a positive number converted by `to_value` (within `bounds` after it), or None with a note."""
    raw = _get(dataset, keyword)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = to_value(float(raw))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        notes.append(f"DICOM {keyword} {str(raw)[:40]!r} is not a number; ignored")
        return None
    if not math.isfinite(value) or value <= 0 or (bounds and not bounds[0] <= value <= bounds[1]):
        what = f"gives {value:g} {unit}, outside {bounds[0]:g}-{bounds[1]:g} {unit}" if bounds and value > 0 \
            and math.isfinite(value) else "is not a positive number"
        notes.append(f"DICOM {keyword} {str(raw)[:40]!r} {what}; ignored")
        return None
    return value


def dicom_timing(dataset, frames: int) -> DicomTiming:
    """Read the frame timing and IVUS pullback tags from a pydicom dataset: FrameTimeVector (ms increments, the
    first 0), FrameTime (ms per frame), CineRate and RecommendedDisplayFrameRate (frames/s), IVUSPullbackRate (mm/s),
    IVUSGatedRate (mm per heartbeat), IVUSPullbackStartFrameNumber / StopFrameNumber (1-based)."""
    notes: list[str] = []
    rate = source = times = None
    vector = _get(dataset, "FrameTimeVector")
    if vector not in (None, ""):
        try:
            increments = np.asarray([float(v) for v in (vector if isinstance(vector, Sequence) else [vector])])
        except (TypeError, ValueError):
            increments = None
            notes.append("DICOM FrameTimeVector holds values that are not numbers; ignored")
        if increments is not None:
            if len(increments) != frames:
                notes.append(f"DICOM FrameTimeVector has {len(increments)} values for {frames} frames; ignored")
            elif frames > 1 and (not np.all(np.isfinite(increments)) or np.any(increments[1:] <= 0)):
                notes.append("DICOM FrameTimeVector has time increments <= 0; ignored")
            elif frames > 1:
                times = tuple(float(t) for t in np.cumsum(increments) / 1000.0 - increments[0] / 1000.0)
                rate, source = 1000.0 / float(np.median(increments[1:])), "DICOM FrameTimeVector"
    for keyword, to_rate in (("FrameTime", lambda ms: 1000.0 / ms), ("CineRate", float),
                             ("RecommendedDisplayFrameRate", float)):
        value = _number(dataset, keyword, notes, to_rate, FRAME_RATE_RANGE_HZ, "frames/s")
        if rate is None and value is not None:
            rate, source = value, f"DICOM {keyword}"
            if keyword == "RecommendedDisplayFrameRate":
                notes.append("frame rate taken from DICOM RecommendedDisplayFrameRate, a display setting; pass "
                             f"{RATE_FLAG} if the acquisition rate differs")
    acquisition = str(_get(dataset, "IVUSAcquisition") or "").strip().upper() or None
    speed = _number(dataset, "IVUSPullbackRate", notes, bounds=PULLBACK_SPEED_RANGE_MM_S, unit="mm/s")
    gated = _number(dataset, "IVUSGatedRate", notes) if acquisition == "GATED_PULLBACK" else None
    frame_range = None
    start, stop = (_get(dataset, k) for k in ("IVUSPullbackStartFrameNumber", "IVUSPullbackStopFrameNumber"))
    if start not in (None, "") or stop not in (None, ""):
        try:
            first, last = int(start or 1) - 1, int(stop or frames) - 1
        except (TypeError, ValueError):
            first = last = -1
        if 0 <= first <= last < frames:
            frame_range = (first, last)
        else:
            notes.append(f"DICOM IVUSPullbackStart/StopFrameNumber ({start}, {stop}) outside 1..{frames}; ignored")
    return DicomTiming(rate, source, times, speed, gated, acquisition, frame_range, tuple(notes))


# ------------------------------------------------------------------------------------- pixel spacing

def dicom_raw(dataset, keyword: str) -> str:
    """The stored text of `keyword` (for messages about values pydicom cannot convert), at most 40 characters."""
    try:
        from pydicom.datadict import tag_for_keyword

        value = dataset.get_item(tag_for_keyword(keyword)).value
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    except Exception:  # noqa: BLE001 - only for a message
        text = "?"
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _spacing_pair(dataset, keyword: str) -> tuple[float, float] | str:
    """(row, column) mm from PixelSpacing, or what is wrong with it."""
    try:
        value = getattr(dataset, keyword)
        pair = tuple(float(v) for v in value) if not isinstance(value, (str, bytes)) else ()
    except Exception:  # pydicom raises converting a decimal string that holds text; float() on odd values
        pair = ()
    if len(pair) != 2:
        return f"DICOM {keyword} {dicom_raw(dataset, keyword)} is not two numbers (row and column spacing in mm)"
    return pair


def _region_pair(region) -> tuple[float, float] | str | None:
    """(row, column) mm of an ultrasound region measured in cm, None for a region in other units, or a problem."""
    try:
        units = (getattr(region, "PhysicalUnitsXDirection", None), getattr(region, "PhysicalUnitsYDirection", None))
        if units != (DICOM_UNITS_CM, DICOM_UNITS_CM) or "PhysicalDeltaX" not in region or \
                "PhysicalDeltaY" not in region:
            return None
        return 10.0 * abs(float(region.PhysicalDeltaY)), 10.0 * abs(float(region.PhysicalDeltaX))
    except Exception:  # noqa: BLE001 - text or several values where one number belongs
        return "DICOM SequenceOfUltrasoundRegions PhysicalDeltaX/Y are not numbers"


def dicom_spacing(dataset, warnings, path) -> tuple[float | None, str, str | None]:
    """(spacing in mm or None, where it came from, what is wrong with it or None) from PixelSpacing, else the
    first SequenceOfUltrasoundRegions item in cm. A problem (unreadable, not square, outside the physical range)
    is returned, not raised: `--pixel-spacing-mm` overrides it."""
    candidates = []
    if "PixelSpacing" in dataset:
        found = _spacing_pair(dataset, "PixelSpacing")
        if isinstance(found, str):
            return None, "PixelSpacing", found
        candidates.append(("PixelSpacing", *found))
    try:
        regions = list(getattr(dataset, "SequenceOfUltrasoundRegions", None) or [])
    except Exception:  # noqa: BLE001
        regions = []
    for region in regions:
        found = _region_pair(region)
        if isinstance(found, str):
            if not candidates:
                return None, "SequenceOfUltrasoundRegions", found
            break
        if found is not None:
            candidates.append(("SequenceOfUltrasoundRegions PhysicalDeltaX/Y (cm)", *found))
            break
    if not candidates:
        return None, "none", None
    source, rows_mm, cols_mm = candidates[0]
    for value in (rows_mm, cols_mm):
        try:
            check_pixel_spacing_mm(value)
        except InputError:
            return None, source, f"DICOM {source} gives pixel spacing {rows_mm!r} x {cols_mm!r} mm"
    if abs(rows_mm - cols_mm) > SPACING_TOLERANCE * max(rows_mm, cols_mm):
        return None, source, (f"DICOM {source} gives non-square pixels ({rows_mm:g} mm per row, {cols_mm:g} mm per "
                              "column); IVUS frames have square pixels")
    mean = (rows_mm + cols_mm) / 2.0
    if len(candidates) > 1:
        other = (candidates[1][1] + candidates[1][2]) / 2.0
        if abs(other - mean) > SPACING_TOLERANCE * mean:
            warnings.once("dicom-spacing", f"{path}: PixelSpacing ({mean:g} mm) and the ultrasound region "
                                           f"({other:g} mm) disagree; using PixelSpacing")
    return mean, source, None


@dataclass(frozen=True)
class PullbackGeometry:
    """Frame positions along one pullback; None where the inputs do not give lengths."""

    frames: int
    pullback_speed_mm_s: float | None = None
    pullback_speed_source: str | None = None
    frame_rate_hz: float | None = None
    frame_rate_source: str | None = None
    frame_interval_mm: float | None = None
    position_source: str = "no lengths: frame numbers only"
    positions_mm: np.ndarray | None = field(default=None, repr=False)
    slabs_mm: np.ndarray | None = field(default=None, repr=False)
    pullback_frame_range: tuple | None = None
    gated: bool = False

    @property
    def has_lengths(self) -> bool:
        return self.positions_mm is not None

    def position_mm(self, index: int) -> float:
        return math.nan if self.positions_mm is None else float(self.positions_mm[index])

    def run_length_mm(self, first: int, last: int) -> float:
        """Length of the frames first..last (inclusive): the sum of their slabs."""
        return math.nan if self.slabs_mm is None else float(self.slabs_mm[first:last + 1].sum())

    def to_json(self) -> dict:
        length = None if self.slabs_mm is None else float(self.slabs_mm.sum())
        return {"frames": self.frames, "pullback_speed_mm_s": self.pullback_speed_mm_s,
                "pullback_speed_source": self.pullback_speed_source, "frame_rate_hz": self.frame_rate_hz,
                "frame_rate_source": self.frame_rate_source, "frame_interval_mm": self.frame_interval_mm,
                "pullback_length_mm": length, "position_source": self.position_source, "gated": self.gated,
                "pullback_frame_range": None if self.pullback_frame_range is None
                else list(self.pullback_frame_range)}


def resolve_geometry(frames: int, pullback_speed_mm_s: float | None = None, frame_rate_hz: float | None = None,
                     timing: DicomTiming | None = None) -> PullbackGeometry:
    """Combine the flags (which win) with the DICOM timing into frame positions; frames outside the pullback frame
    range were acquired standing still (zero-length slabs at the range's ends)."""
    timing = timing or DicomTiming()
    speed = rate = speed_source = rate_source = times = None
    if pullback_speed_mm_s is not None:
        speed, speed_source = in_range(pullback_speed_mm_s, SPEED_FLAG, PULLBACK_SPEED_RANGE_MM_S, "mm/s"), SPEED_FLAG
    elif timing.pullback_speed_mm_s is not None:
        speed, speed_source = timing.pullback_speed_mm_s, "DICOM IVUSPullbackRate"
    if frame_rate_hz is not None:
        rate, rate_source = in_range(frame_rate_hz, RATE_FLAG, FRAME_RATE_RANGE_HZ, "frames/s"), RATE_FLAG
    elif timing.frame_rate_hz is not None:
        rate, rate_source, times = timing.frame_rate_hz, timing.frame_rate_source, timing.frame_times_s
    common = dict(frames=frames, pullback_speed_mm_s=speed, pullback_speed_source=speed_source,
                  frame_rate_hz=rate, frame_rate_source=rate_source, pullback_frame_range=timing.pullback_frame_range)
    if speed is not None and rate is not None:
        interval = speed / rate
        if times is not None and len(times) == frames:
            positions = speed * np.asarray(times, np.float64)
            how = f"frame times (DICOM FrameTimeVector) x {speed:g} mm/s ({speed_source})"
        else:
            positions = np.arange(frames, dtype=np.float64) * interval
            how = (f"frame index x {interval:.5g} mm per frame = {speed:g} mm/s ({speed_source}) / {rate:g} Hz "
                   f"({rate_source})")
        gated = False
    elif timing.gated_interval_mm is not None and pullback_speed_mm_s is None and frame_rate_hz is None:
        interval = timing.gated_interval_mm
        positions = np.arange(frames, dtype=np.float64) * interval
        how = f"frame index x {interval:g} mm per heartbeat (DICOM IVUSGatedRate; one frame per beat assumed)"
        gated = True
    else:
        return PullbackGeometry(**common)
    slabs = np.empty(frames, np.float64)
    slabs[:-1] = np.diff(positions)
    slabs[-1:] = interval
    if timing.pullback_frame_range is not None:
        first, last = timing.pullback_frame_range
        slabs[:first] = 0.0
        slabs[last + 1:] = 0.0
        positions = np.concatenate([[0.0], np.cumsum(slabs)[:-1]])
        how += f"; frames {first}..{last} only (DICOM IVUSPullbackStart/StopFrameNumber), the others stood still"
    return PullbackGeometry(**common, frame_interval_mm=interval, position_source=how, positions_mm=positions,
                            slabs_mm=slabs, gated=gated)


def require_lengths(geometry: PullbackGeometry, what: str, where: str) -> None:
    """InputError naming the missing flags unless `geometry` gives lengths (`what` needs them, `where` is the
    input)."""
    if geometry.has_lengths:
        return
    missing = []
    if geometry.pullback_speed_mm_s is None:
        missing.append(f"{SPEED_FLAG} (no IVUSPullbackRate in the input)")
    if geometry.frame_rate_hz is None:
        missing.append(f"{RATE_FLAG} (no FrameTime, FrameTimeVector or CineRate in the input)")
    raise InputError(f"{where}: {what} measures lengths along the pullback in mm and needs the frame spacing: pass "
                     + " and ".join(missing))
