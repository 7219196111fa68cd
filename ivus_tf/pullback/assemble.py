"""report.json and report.html of a predicted pullback, from the `PullbackCollector`s that predict filled.

`write_report(folder, collectors, settings, meta)` writes, into the (temporary) output folder of predict:
- report.json: every number of the report, units in the key names (`_mm`, `_mm2`, `_deg`, `_percent`) or in a
  `unit` field (score items), the package version, the settings, where the geometry and pixel spacing came from,
  and one line per definition;
- report.html: the same for a reader, self-contained (`report_html`);
- report_figures/<case>_<figure>.png: the figures of the page, for slides and papers.
The per-frame table is predict's measurements.csv (with the `collect.FRAME_COLUMNS`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ivus_tf.core.atomic import json_ready, json_text
from ivus_tf.core.version import __version__
from ivus_tf.pullback.calcium_score import ScoreSettings
from ivus_tf.pullback.collect import PullbackCollector
from ivus_tf.pullback.lesions import LesionSettings, calcified_frames, find_lesions

REPORT_JSON, REPORT_HTML, FIGURES_DIR = "report.json", "report.html", "report_figures"
SCHEMA_VERSION = 1
DEFINITIONS = {
    "position_mm": "distance along the pullback from the first frame: pullback speed x frame time (geometry)",
    "length_mm": "sum of the frames' slabs (one frame interval each) from a lesion's first to last frame",
    "calcium_arc_deg": "angular extent of the calcium seen from the lumen centroid (ivus_tf.measurements)",
    "superficial_calcium_arc_deg": "angular extent of the calcium within superficial_depth_mm of the lumen border",
    "vessel_diameter_mm": "diameter of the circle with the EEM area, 2 sqrt(area / pi)",
    "lesion": "calcified frames (calcium area > calcium_min_area_mm2) merged across gaps <= lesion_gap_mm, kept when "
              ">= lesion_min_length_mm long",
    "calcium_score": "Zhang et al., Circ Cardiovasc Interv 2021;14:e010296: one point each for superficial calcium "
                     "> 270 deg over > 5 mm, a 360 deg superficial ring, a calcified nodule (not assessed here) and a "
                     "vessel diameter < 3.5 mm at the maximum calcium arc; >= 2 flags underexpansion risk",
    "frame": "0-based index of the frame in its pullback; *_frame_id is its name in measurements.csv",
}


@dataclass(frozen=True)
class ReportSettings:
    """The report's knobs (predict flags of the same names)."""

    lesion_gap_mm: float = 1.0
    lesion_min_length_mm: float = 0.5
    calcium_min_area_mm2: float = 0.0
    superficial_depth_mm: float = 0.5
    lmode_angle_deg: float = 0.0

    @classmethod
    def from_args(cls, args) -> ReportSettings:
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})

    def lesion_settings(self) -> LesionSettings:
        return LesionSettings(self.lesion_gap_mm, self.lesion_min_length_mm, self.calcium_min_area_mm2)

    def score_settings(self) -> ScoreSettings:
        return ScoreSettings(superficial_depth_mm=self.superficial_depth_mm)


def add_report_arguments(parser) -> None:
    """predict's --report flags (the `ReportSettings` fields) and --dicom-seg."""
    from ivus_tf.core.errors import finite_float_arg, non_negative_float_arg, positive_float_arg

    group = parser.add_argument_group("pullback report (docs/pullback_report.md)")
    group.add_argument("--report", action="store_true",
                       help="write report.html and report.json: lesions, IVUS calcium score, L-mode, worst frames "
                            "(needs the pullback speed and frame rate, from the DICOM or the flags)")
    defaults = ReportSettings()
    group.add_argument("--lmode-angle-deg", type=finite_float_arg, default=defaults.lmode_angle_deg, metavar="A",
                       help="angle of the L-mode cut, degrees counter-clockwise from 3 o'clock (default 0); a "
                            "second cut through the most calcium is always drawn")
    group.add_argument("--lesion-gap-mm", type=non_negative_float_arg, default=defaults.lesion_gap_mm, metavar="G",
                       help="bridge gaps between calcified frames up to G mm (default 1)")
    group.add_argument("--lesion-min-length-mm", type=non_negative_float_arg, default=defaults.lesion_min_length_mm,
                       metavar="L", help="shortest calcified segment reported as a lesion (default 0.5 mm)")
    group.add_argument("--calcium-min-area-mm2", type=non_negative_float_arg,
                       default=defaults.calcium_min_area_mm2, metavar="A",
                       help="a frame is calcified when its calcium area exceeds A mm2 (default 0: any calcium)")
    group.add_argument("--superficial-depth-mm", type=positive_float_arg, default=defaults.superficial_depth_mm,
                       metavar="D", help="calcium within D mm of the lumen border is superficial (default 0.5)")
    group.add_argument("--dicom-seg", action="store_true",
                       help="DICOM input: also write the masks as a DICOM Segmentation (segmentation.dcm)")


def report_summary_lines(summary: Mapping, out_dir: Path) -> list[str]:
    """predict's closing lines about the report and the DICOM segmentation (none without them)."""
    lines = []
    for case_id, lesions in ((summary.get("report") or {}).get("lesions") or {}).items():
        lines.append(f"{case_id}: {len(lesions)} calcified lesion{'' if len(lesions) == 1 else 's'}")
        lines += [f"  L{lesion['lesion']}: {lesion['start_mm']:.1f}-{lesion['end_mm']:.1f} mm "
                  f"({lesion['length_mm']:.1f} mm), IVUS calcium score {lesion['calcium_score']}, underexpansion "
                  f"risk {lesion['underexpansion_risk']}" for lesion in lesions]
    if summary.get("report"):
        lines.append(f"report: {Path(out_dir) / summary['report']['html']}")
    if summary.get("dicom_seg"):
        lines.append(f"DICOM segmentation: {Path(out_dir) / summary['dicom_seg']['path']} "
                     f"({summary['dicom_seg']['frames']} frames)")
    return lines


def _extreme(values: np.ndarray, kind: str, frame_ids: Sequence[str], positions_mm: np.ndarray) -> dict:
    finite = np.isfinite(values)
    if not finite.any():
        return {"value": None, "frame": None, "frame_id": None, "position_mm": None}
    index = int(np.argmax(np.where(finite, values, -np.inf)) if kind == "max"
                else np.argmin(np.where(finite, values, np.inf)))
    return {"value": float(values[index]), "frame": index, "frame_id": frame_ids[index],
            "position_mm": float(positions_mm[index])}


def pullback_report(collector: PullbackCollector, settings: ReportSettings) -> tuple[dict, dict[str, bytes]]:
    """(report.json entry, {figure name: PNG bytes}) of one pullback; the geometry must give lengths."""
    from ivus_tf.pullback import views

    geometry, table, frame_ids = collector.geometry, collector.table(), collector.frame_ids
    positions, slabs = geometry.positions_mm, geometry.slabs_mm
    lesions = find_lesions(table, frame_ids, positions, slabs, settings.lesion_settings(), settings.score_settings())
    calcified = calcified_frames(table["calcium_area_mm2"], settings.calcium_min_area_mm2)
    spacing = sorted(collector.pixel_spacing_mm)
    summary = {
        "frames": len(frame_ids), "calcified_frames": int(calcified.sum()),
        "calcium_length_mm": float(slabs[calcified].sum()), "lesions": len(lesions),
        "lesions_at_risk": sum(lesion["calcium_score"]["underexpansion_risk"] == "high" for lesion in lesions),
        "max_calcium_arc_deg": _extreme(table["calcium_arc_deg"], "max", frame_ids, positions),
        "max_superficial_calcium_arc_deg": _extreme(table["superficial_calcium_arc_deg"], "max", frame_ids, positions),
        "max_calcium_area_mm2": _extreme(table["calcium_area_mm2"], "max", frame_ids, positions),
        "min_lumen_area_mm2": _extreme(table["lumen_area_mm2"], "min", frame_ids, positions),
        "max_plaque_burden_percent": _extreme(table["plaque_burden_percent"], "max", frame_ids, positions),
    }
    figures = {"profiles": views.profiles_png(table, positions, slabs, lesions)}
    lmode = {"requested_angle_deg": settings.lmode_angle_deg, "max_calcium_angle_deg": None,
             "candidate_step_deg": 10.0}
    acc = collector.lmode
    if acc is not None and acc.gray:
        angles = [(settings.lmode_angle_deg, f"L-mode at {settings.lmode_angle_deg:g}\N{DEGREE SIGN} "
                                             "(requested, --lmode-angle-deg)")]
        best = acc.max_calcium_angle_deg()
        lmode["max_calcium_angle_deg"] = best
        if best is not None:
            angles.append((best, f"L-mode at {best:g}\N{DEGREE SIGN} (the cut through the most calcium)"))
        figures["lmode"] = views.lmode_png(acc, angles, spacing[0], slabs, lesions)
    kept = [(title, frame) for title, frame in (("Maximum calcium arc", collector.worst.max_arc),
                                                ("Minimum lumen area", collector.worst.min_lumen))
            if frame is not None]
    if kept:
        cut = lmode["max_calcium_angle_deg"] if lmode["max_calcium_angle_deg"] is not None \
            else settings.lmode_angle_deg
        figures["frames"] = views.frames_png(kept, cut, settings.superficial_depth_mm, positions)
    entry = {"case_id": collector.case_id, "pixel_spacing_mm": spacing, "geometry": geometry.to_json(),
             "summary": summary, "lesions": lesions, "lmode": lmode,
             "worst_frames": {name: None if frame is None else {"frame": frame.index, "frame_id": frame.frame_id}
                              for name, frame in (("max_calcium_arc", collector.worst.max_arc),
                                                  ("min_lumen_area", collector.worst.min_lumen))},
             "figures": sorted(figures)}
    return entry, figures


def write_report(folder: Path, collectors: Mapping[str, PullbackCollector], settings: ReportSettings,
                 meta: Mapping) -> dict:
    """Write report.json, report.html and the figure PNGs into `folder`; return the report dict."""
    from ivus_tf.pullback.report_html import render_html

    pullbacks, figures = [], {}
    for case_id, collector in collectors.items():
        entry, case_figures = pullback_report(collector, settings)
        pullbacks.append(entry)
        figures[case_id] = case_figures
    report = json_ready({
        "report": "ivus-tf pullback calcium report", "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **dict(meta), "settings": asdict(settings), "score_thresholds": asdict(settings.score_settings()),
        "definitions": DEFINITIONS, "pullbacks": pullbacks,
    })
    (folder / REPORT_JSON).write_text(json_text(report), encoding="utf-8")
    (folder / REPORT_HTML).write_text(render_html(report, figures), encoding="utf-8")
    (folder / FIGURES_DIR).mkdir(exist_ok=True)
    for case_id, case_figures in figures.items():
        for name, data in case_figures.items():
            (folder / FIGURES_DIR / f"{case_id}_{name}.png").write_bytes(data)
    return report
