"""`predict`: turn a pullback into masks, overlays and calcium measurements with an exported model.

The input is a folder of frames, a multi-frame DICOM or a manifest CSV (`ivus_tf.pullback_io`); the model one or
more exports (`ivus_tf.export`), averaged, plus mirrored passes with --tta (`ivus_tf.ensemble`). Frames stream
through (`ivus_tf.predict_stream`), so memory does not grow with the pullback; masks are cleaned
(`ivus_tf.postprocess`, default on) before they are measured, written and drawn. The output folder is built under a
temporary name and renamed at the end; an existing one is replaced only with --overwrite, and only if it is an
earlier predict output (it holds summary.json) or empty. Flags and outputs: docs/predict.md.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ivus_tf.core.atomic import atomic_output_dir, check_output_dir, json_ready, json_text
from ivus_tf.core.errors import (
    ArgumentParser,
    InputError,
    non_negative_int_arg,
    pixel_spacing_arg,
    positive_float_arg,
    positive_int_arg,
    positive_number,
    run_cli,
)
from ivus_tf.core.progress import progress
from ivus_tf.core.version import __version__
from ivus_tf.core.vocab import CALCIUM, WALL_LUMEN
from ivus_tf.ensemble import Ensemble, add_ensemble_arguments, ensemble_summary_lines, model_text, uncertainty_png
from ivus_tf.export.layout import MASK_OUTPUTS
from ivus_tf.measurements import DEFAULT_ARC_GAP_DEG, frame_measurements, pullback_summary
from ivus_tf.overlay import render_overlay
from ivus_tf.postprocess import PostprocessConfig, describe_postprocess, load_postprocess, postprocess_frame
from ivus_tf.predict_stream import DEFAULT_IO_THREADS, FrameStream, infer_batch, predict_frames  # noqa: F401
from ivus_tf.pullback.assemble import ReportSettings, add_report_arguments, report_summary_lines
from ivus_tf.pullback.batching import BatchLimit
from ivus_tf.pullback.collect import FRAME_COLUMNS, PullbackCollector
from ivus_tf.pullback.geometry import require_lengths, resolve_geometry
from ivus_tf.pullback_io import Frame, Warnings, open_pullback

ENSEMBLE_COLUMNS = ("calcium_arc_unbridged_deg", "calcium_uncertainty_mean", "wall_lumen_uncertainty_mean")
CSV_COLUMNS = ("case_id", "frame_id", "calcium_area_mm2", "calcium_arc_deg", "lumen_area_mm2", "vessel_area_mm2",
               "plaque_burden_percent", "pixel_spacing_mm", "arc_center") + FRAME_COLUMNS + ENSEMBLE_COLUMNS
CSV_DECIMALS = {"calcium_area_mm2": 4, "calcium_arc_deg": 2, "lumen_area_mm2": 4, "vessel_area_mm2": 4,
                "plaque_burden_percent": 2, "position_mm": 4, "superficial_calcium_arc_deg": 2,
                "lumen_diameter_mm": 4, "vessel_diameter_mm": 4, "calcium_arc_unbridged_deg": 2,
                "calcium_uncertainty_mean": 5, "wall_lumen_uncertainty_mean": 5}
SEG_NAME = "segmentation.dcm"
ENGINES = ("auto", "onnxruntime", "tensorflow")
SUMMARY_NAME = "summary.json"
# zlib's "filtered" strategy: overlays of speckled frames come out a third smaller than with OpenCV's default
# (about 210 instead of 320 KB at 500x500) for about the same encoding time
OVERLAY_PNG_PARAMS = (cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_FILTERED)


# ----------------------------------------------------------------------------------------------------- model

def load_model(path: str | os.PathLike, engine: str = "auto", precision: str = "fp32",
               warnings: Warnings | None = None):
    """`ivus_tf.export.load_exported(path, engine, precision)` (NAME/V, or NAME for its highest version), with a
    one-line error for anything that goes wrong, a folder that is not an export included. A reduced precision is
    refused when the export measured it beyond the Dice limit, and warned about when it never measured it
    (`ivus_tf.export.precision.check_offered`)."""
    from ivus_tf.export import load_exported
    from ivus_tf.export.precision import check_offered

    try:
        model = load_exported(path, engine=engine, precision=precision)
        warning = check_offered(model.info, precision, str(model.path))
        if warning:
            (warnings or Warnings()).once(f"precision {model.path}", warning)
        return model
    except InputError:
        raise
    except Exception as error:  # a damaged SavedModel or ONNX file: TF and ORT raise many kinds; name the folder
        raise InputError(f"{path}: cannot load the exported model "
                         f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error


def model_tasks(model, where: str) -> tuple[str, ...]:
    tasks = tuple(task for task in MASK_OUTPUTS if task in tuple(model.tasks))
    if not tasks:
        raise InputError(f"{where}: the model has neither a calcium nor a wall_lumen output (tasks {model.tasks})")
    return tasks


# ---------------------------------------------------------------------------------------------------- output

def _overlay_text(frame: Frame, values: dict) -> str:
    parts = [frame.frame_id]
    if not math.isnan(values["calcium_arc_deg"]):
        parts.append(f"Ca {values['calcium_arc_deg']:.0f} deg {values['calcium_area_mm2']:.2f} mm2")
    if not math.isnan(values["plaque_burden_percent"]):
        parts.append(f"PB {values['plaque_burden_percent']:.0f}%")
    return "  ".join(parts)


def _csv_value(column: str, value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{CSV_DECIMALS[column]}f}" if column in CSV_DECIMALS else f"{value:g}"
    return str(value)


def _write_png(path: Path, array: np.ndarray, params: Sequence[int] = ()) -> None:
    if not cv2.imwrite(str(path), array, list(params)):
        raise InputError(f"{path}: cannot write PNG")


# ---------------------------------------------------------------------------------------------------- checks

# ---------------------------------------------------------------------------------------------------- runner

def run_predict(model_path, input_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                pixel_spacing_mm: float | None = None, batch_size: int = 12,
                pullback_speed_mm_s: float | None = None, frame_rate_hz: float | None = None,
                overlays: bool = True, overwrite: bool = False, engine: str = "auto", model=None,
                warnings: Warnings | None = None, show_summary: bool = True, report: bool = False,
                report_settings: ReportSettings | None = None, dicom_seg: bool = False, tta: bool = False,
                postprocess: PostprocessConfig | str | None = "default",
                arc_gap_deg: float = DEFAULT_ARC_GAP_DEG, precision: str = "fp32",
                io_threads: int = DEFAULT_IO_THREADS) -> dict:
    """Predict every frame of `input_path` into `out_dir` (docs/predict.md#what-it-writes); return summary.json's dict.

    `model_path` is one export folder or a list of them (an ensemble); `model` an already loaded ExportedModel-like
    object (`.engine`, `.tasks`, `.info`, `.predict(frames)`) or a list of them. `postprocess`: a `PostprocessConfig`,
    a preset name or YAML file (`ivus_tf.postprocess.load_postprocess`), or None (off); the cleaned masks are what is
    written, measured and reported. `arc_gap_deg` 0 turns gap bridging off. `io_threads` 0 reads, infers and writes
    one after the other (the same outputs).
    """
    start = time.perf_counter()
    if int(batch_size) < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if int(io_threads) < 0:
        raise InputError(f"--io-threads must be >= 0, got {io_threads}")
    from ivus_tf.export.precision import check_precision

    check_precision(precision)
    speed = None if pullback_speed_mm_s is None else positive_number(pullback_speed_mm_s, "--pullback-speed-mm-s")
    rate = None if frame_rate_hz is None else positive_number(frame_rate_hz, "--frame-rate-hz")
    settings = report_settings or ReportSettings()
    warnings = warnings or Warnings()
    model_paths = [Path(p) for p in (model_path if isinstance(model_path, (list, tuple)) else [model_path])]
    model_path, out_dir = model_paths[0], Path(out_dir)
    if isinstance(postprocess, str):
        postprocess = load_postprocess(postprocess)
    if not (math.isfinite(arc_gap_deg) and 0 <= arc_gap_deg < 180):
        raise InputError(f"--arc-gap-deg must be in [0, 180), got {arc_gap_deg}")
    pullback = open_pullback(input_path, pixel_spacing_mm, warnings)
    case_frames = pullback.case_frames or {case: pullback.frames for case in pullback.case_ids[:1]}
    geometries = {case: resolve_geometry(frames, speed, rate, pullback.timing) for case, frames in case_frames.items()}
    if report:  # before anything is inferred: a report without lengths is refused, not guessed
        for geometry in geometries.values():
            require_lengths(geometry, "--report", str(pullback.path))
    if dicom_seg and pullback.kind != "dicom":
        raise InputError(f"{pullback.path}: --dicom-seg needs a DICOM input (the segmentation references the "
                         f"source DICOM frames); this input is a {pullback.kind}")
    first = next(iter(geometries.values()), None)
    if first is not None and not first.has_lengths and (first.pullback_speed_mm_s is None) != (
            first.frame_rate_hz is None):
        warnings.once("length", "calcium lengths in mm need both --pullback-speed-mm-s and --frame-rate-hz "
                                f"({'no pullback speed' if first.pullback_speed_mm_s is None else 'no frame rate'} "
                                "given or in the input); reporting frame counts only")
    check_output_dir(out_dir, overwrite, SUMMARY_NAME, "predict output", [pullback.path, *model_paths])
    if model is None:
        model = [load_model(path, engine, precision, warnings) for path in model_paths]
    if isinstance(model, (list, tuple)) or tta:
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        names = [os.path.abspath(p) for p in model_paths] if len(model_paths) == len(members) else None
        model = Ensemble(members, names, tta=tta)
    tasks = model_tasks(model, str(model_path))
    if "wall_lumen" not in tasks:
        warnings.once("tasks", f"{model_path}: calcium-only model: no lumen or vessel measurements, and arcs are "
                               "seen from the image centre (the catheter)")

    collectors = {case: PullbackCollector(case, geometry, settings.superficial_depth_mm,
                                          settings.lmode_angle_deg if report else None)
                  for case, geometry in geometries.items()}
    per_case: dict[str, list[dict]] = {}
    spacings: set[float] = set()
    stream_start, stream_cpu_start = time.perf_counter(), time.process_time()
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "masks").mkdir()
        if overlays:
            (tmp / "overlays").mkdir()
        seg_writer = None
        if dicom_seg:
            from ivus_tf.pullback.dicom_seg import DicomSegWriter

            seg_writer = DicomSegWriter(pullback.path, pullback.frames, tasks, tmp / ".segmentation-scratch")
        def work(frame: Frame, outputs: dict):  # in the writer threads: clean, measure, write the PNGs
            calcium, labels = postprocess_frame(outputs.get("calcium_mask"), outputs.get("wall_lumen_labels"),
                                                frame.pixel_spacing_mm, postprocess)
            values = _write_frame(tmp, frame, outputs, overlays, calcium, labels, arc_gap_deg)
            superficial = collectors[frame.case_id].superficial_arc_deg(frame, calcium, labels, values)
            return calcium, labels, values, superficial

        with open(tmp / "measurements.csv", "w", newline="", encoding="utf-8") as handle, FrameStream(
                pullback, int(batch_size), lambda batch: infer_batch(model, batch, tasks, str(model_path)), work,
                threads=int(io_threads), limit=BatchLimit(model, int(batch_size), warnings.once)) as stream:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for frame, (calcium, labels, values, superficial) in progress(stream, total=len(pullback),
                                                                          desc="predict", unit="frames"):
                values.update(collectors[frame.case_id].add(frame, calcium, labels, values, superficial))
                writer.writerow([_csv_value(column, values[column]) for column in CSV_COLUMNS])
                per_case.setdefault(frame.case_id, []).append(
                    {"calcium_area_mm2": values["calcium_area_mm2"], "calcium_arc_deg": values["calcium_arc_deg"]})
                spacings.add(frame.pixel_spacing_mm)
                if seg_writer is not None:
                    seg_writer.add(calcium, labels)
        if not per_case:
            raise InputError(f"{pullback.path}: no frames")
        seg_info = None
        if seg_writer is not None:
            seg_info = seg_writer.write(tmp / SEG_NAME)
            shutil.rmtree(tmp / ".segmentation-scratch")
        seconds, streaming = time.perf_counter() - start, time.perf_counter() - stream_start
        frames = sum(len(rows) for rows in per_case.values())
        meta = {"input": os.path.abspath(pullback.path), "input_name": pullback.path.name,
                "input_kind": pullback.kind, "model": _abspaths(getattr(model, "path", model_path)),
                "engine": model.engine, "precision": precision, "tasks": list(tasks),
                "pixel_spacing_source": pullback.spacing_source}
        summary = json_ready({
            "package_version": __version__, **{k: v for k, v in meta.items() if k != "input_name"},
            "engine_providers": list(getattr(model, "providers", ()) or ()),
            "model_info": getattr(model, "info", None),
            "frames": frames, "frames_per_s": frames / streaming if streaming > 0 else None,
            "seconds_predicting": streaming, "seconds_total": seconds,
            "cpu_seconds_predicting": time.process_time() - stream_cpu_start,  # all threads; robust to other jobs
            "pixel_spacing_mm": sorted(spacings),
            "frame_rate_source": first.frame_rate_source if first is not None else None,
            "batch_size": int(batch_size), "io_threads": int(io_threads), "overlays": bool(overlays),
            "ensemble": model.describe() if isinstance(model, Ensemble) else None,
            "postprocess": describe_postprocess(postprocess), "arc_gap_deg": float(arc_gap_deg),
            "geometry": {case: geometry.to_json() for case, geometry in geometries.items()},
            "pullbacks": {case_id: pullback_summary(rows, geometries[case_id].pullback_speed_mm_s,
                                                    geometries[case_id].frame_rate_hz)
                          for case_id, rows in per_case.items()},
            "dicom_seg": seg_info, "report": None,
        })
        if report:
            from ivus_tf.pullback.assemble import REPORT_HTML, write_report

            shown = {**meta, "model": model_text(meta["model"], model)}  # one line in the report's header
            written = write_report(tmp, collectors, settings, {**shown, "warnings": list(warnings.said.values())})
            summary["report"] = {"html": REPORT_HTML, "lesions": {
                entry["case_id"]: [{key: lesion[key] for key in ("lesion", "start_mm", "end_mm", "length_mm")}
                                   | {"calcium_score": lesion["calcium_score"]["score_text"],
                                      "underexpansion_risk": lesion["calcium_score"]["underexpansion_risk"]}
                                   for lesion in entry["lesions"]] for entry in written["pullbacks"]}}
        summary["warnings"] = list(warnings.said.values())
        (tmp / SUMMARY_NAME).write_text(json_text(summary, default=str), encoding="utf-8")
    if show_summary:
        print_summary(summary, out_dir)
    return summary


def _abspaths(path):
    """One path as an absolute string; an ensemble's paths as a list of them."""
    return [os.path.abspath(p) for p in path] if isinstance(path, (list, tuple)) else os.path.abspath(path)


def _write_frame(tmp: Path, frame: Frame, outputs: dict, overlays: bool, calcium: np.ndarray | None,
                 labels: np.ndarray | None, arc_gap_deg: float = DEFAULT_ARC_GAP_DEG) -> dict:
    """Write the frame's masks (`calcium`, `labels`: the cleaned ones), uncertainty maps and overlay; return its
    measurements."""
    values = frame_measurements(calcium, labels, frame.pixel_spacing_mm, arc_gap_deg=arc_gap_deg)
    values.update(case_id=frame.case_id, frame_id=frame.frame_id, pixel_spacing_mm=frame.pixel_spacing_mm)
    for task in MASK_OUTPUTS:
        values[f"{task}_uncertainty_mean"] = float(outputs.get(f"{task}_uncertainty_mean", math.nan))
        if f"{task}_uncertainty" in outputs:
            _write_png(tmp / "masks" / f"{frame.name}_{task}_uncertainty.png",
                       uncertainty_png(outputs[f"{task}_uncertainty"]))
    if calcium is not None:
        _write_png(tmp / "masks" / f"{frame.name}_calcium.png", (calcium != 0).astype(np.uint8) * 255)
    if labels is not None:
        _write_png(tmp / "masks" / f"{frame.name}_wall_lumen.png", labels.astype(np.uint8))
    if overlays:
        center = values["arc_center_rc"] if calcium is not None and np.any(calcium) else None
        overlay = render_overlay(frame.image, {CALCIUM: calcium, WALL_LUMEN: labels}, center_rc=center,
                                 text=_overlay_text(frame, values), legend=True)
        _write_png(tmp / "overlays" / f"{frame.name}.png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR),
                   OVERLAY_PNG_PARAMS)
    return values


def _format(value, unit: str = "", digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}{unit}"


def print_summary(summary: dict, out_dir: Path, stream=None) -> None:
    stream = stream or sys.stdout
    for case_id, s in summary["pullbacks"].items():
        print(f"{case_id}: {s['frames']} frames, {s['frames_with_calcium']} with calcium "
              f"({s['calcium_segments']} segment{'' if s['calcium_segments'] == 1 else 's'}), "
              f"max arc {_format(s['max_calcium_arc_deg'], ' deg')}, "
              f"arc > 180 deg in {s['frames_with_arc_over_180']}, > 270 deg in {s['frames_with_arc_over_270']}",
              file=stream)
        if s["frame_interval_mm"] is not None:
            print(f"  calcium length {_format(s['calcium_length_mm'], ' mm', 2)}, longest segment "
                  f"{_format(s['longest_calcium_segment_mm'], ' mm', 2)}, longest > 270 deg "
                  f"{_format(s['longest_arc_over_270_mm'], ' mm', 2)} (>= 5 mm: "
                  f"{'yes' if s['arc_over_270_for_5mm'] else 'no'}), {s['frame_interval_mm']:.4f} mm per frame",
                  file=stream)
    for line in report_summary_lines(summary, out_dir):
        print(line, file=stream)
    print(f"engine: {summary['engine']}" + (f" ({summary['precision']})" if summary.get("precision", "fp32") != "fp32"
                                              else ""), file=stream)
    for line in ensemble_summary_lines(summary):
        print(line, file=stream)
    print(f"wrote {out_dir}: {summary['frames']} frames in {summary['seconds_predicting']:.1f} s "
          f"({summary['frames_per_s']:.2f} frames/s; {summary['seconds_total']:.1f} s with opening the input and "
          "loading the model)", file=stream)


# ------------------------------------------------------------------------------------------------------- CLI

def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ivus_tf.predict",
                            description="Segment calcium, lumen and vessel in a pullback and measure calcium.")
    parser.add_argument("--model", required=True, action="append",
                        help="exported model folder (saved_models/NAME or NAME/VERSION); give it several times "
                             "to average the models' probabilities (an ensemble, e.g. the fold models of a run)")
    parser.add_argument("--input", required=True,
                        help="folder of frames (PNG/TIFF/BMP/JPEG), multi-frame DICOM file, or manifest CSV")
    parser.add_argument("--out", required=True, help="output folder to create")
    parser.add_argument("--pixel-spacing-mm", type=pixel_spacing_arg, metavar="S",
                        help="mm per pixel; required for a folder of frames, overrides DICOM and manifest values")
    parser.add_argument("--batch-size", type=positive_int_arg, default=12, metavar="B",
                        help="frames per model call (default 12; fewer for frames too large for memory)")
    parser.add_argument("--pullback-speed-mm-s", type=positive_float_arg, metavar="V",
                        help="pullback speed in mm/s (default: the DICOM's IVUSPullbackRate); with the frame rate: "
                             "lengths in mm")
    parser.add_argument("--frame-rate-hz", type=positive_float_arg, metavar="F",
                        help="frames per second (default: the DICOM's FrameTimeVector, FrameTime or CineRate)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (default auto: onnxruntime when model.onnx and onnxruntime exist)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                        help="inference precision (docs/precision.md): fp32 (default); bf16 (TensorFlow + oneDNN, "
                             "CPUs with AVX512-BF16/AMX); int8 (model_int8.onnx on ONNX Runtime). Refused when the "
                             "export measured a calcium Dice change over 0.5 points")
    parser.add_argument("--io-threads", type=non_negative_int_arg, default=DEFAULT_IO_THREADS, metavar="T",
                        help="threads cleaning, measuring and writing frames while the model runs on the next "
                             "batch (default %(default)s; 0: one step after the other)")
    parser.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs (faster)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing predict output folder")
    add_ensemble_arguments(parser)
    add_report_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_predict(args.model, args.input, args.out, pixel_spacing_mm=args.pixel_spacing_mm,
                batch_size=args.batch_size, pullback_speed_mm_s=args.pullback_speed_mm_s,
                frame_rate_hz=args.frame_rate_hz, overlays=not args.no_overlays, overwrite=args.overwrite,
                engine=args.engine, report=args.report, dicom_seg=args.dicom_seg,
                report_settings=ReportSettings.from_args(args), tta=args.tta,
                postprocess="none" if args.no_postprocess else args.postprocess, arc_gap_deg=args.arc_gap_deg,
                precision=args.precision, io_threads=args.io_threads)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
