"""Benchmark the predict command on a phantom pullback: frames/s of the whole command, per engine, with and without
overlays, and the cost of everything but the model.

    python bench/bench_predict.py [--frames 24] [--arch unet_res] [--width 1.0] [--engines tensorflow onnxruntime]
                                  [--batch-size 12] [--oracle-frames 600] [--work DIR]

1. Renders `--frames` 500x500 phantom frames (one pullback, `tfrecords_builder.phantom`, 0.02 mm) into a folder
   and the same frames as a multi-frame DICOM.
2. Builds an untrained two-task model (speed does not depend on the weights) and exports it with
   `ivus_tf.export` (SavedModel plus model.onnx when tf2onnx is installed).
3. Runs `python -m ivus_tf.predict` as a user would, one process per row, and reports the command's wall time
   (Python start, TensorFlow import, model loading, the pullback), its frames/s, the steady streaming rate from
   summary.json, and the process's peak RSS.
4. "oracle" rows: the same command with a stand-in model that returns the phantom's ground truth instantly, over a
   pullback of `--oracle-frames` frames (the phantom frames repeated, as a DICOM): the cost of reading, measuring
   and writing alone, i.e. the ceiling with an infinitely fast model, and the peak RSS over a long pullback
   (bounded memory: compare with the short rows).
Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib  # noqa: E402  (bench/benchlib.py, beside this script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    return benchlib.machine()


def write_dicom(path: Path, frames, spacing_mm: float) -> None:
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "IVUS"
    ds.set_pixel_data(np.stack(frames), "MONOCHROME2", 8)
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.FrameTime = 1000 / 30
    ds.save_as(str(path), enforce_file_format=True)


def make_data(work: Path, frames: int, oracle_frames: int) -> None:
    import cv2
    import numpy as np

    from tfrecords_builder.phantom import PRESETS, render_case_frames

    config = PRESETS["default"]
    (work / "pullback").mkdir(parents=True)
    images, truth = [], {}
    for i, _, image, calcium, wall_lumen in render_case_frames(config, seed=0, case_index=0, frames=frames):
        cv2.imwrite(str(work / "pullback" / f"{i:04d}.png"), image)
        images.append(image)
        truth[hashlib.sha1(image.tobytes()).hexdigest()] = (calcium.astype(np.uint8), wall_lumen)
    np.savez_compressed(work / "truth.npz", **{f"{k}/calcium": v[0] for k, v in truth.items()},
                        **{f"{k}/wall_lumen": v[1] for k, v in truth.items()})
    write_dicom(work / "pullback.dcm", images, config.pixel_spacing_mm)
    write_dicom(work / "long.dcm", [images[i % len(images)] for i in range(oracle_frames)], config.pixel_spacing_mm)


class OracleModel:
    """Returns the phantom's ground truth for each frame (looked up by its bytes) at no model cost."""

    engine, tasks, info = "oracle", ("calcium", "wall_lumen"), {"oracle": True}

    def __init__(self, truth_path: Path):
        import numpy as np

        data = np.load(truth_path)
        keys = {name.split("/")[0] for name in data.files}
        self.truth = {key: (data[f"{key}/calcium"], data[f"{key}/wall_lumen"]) for key in keys}

    def predict(self, frames, batch_size: int = 8):
        import numpy as np

        pairs = [self.truth[hashlib.sha1(frame.tobytes()).hexdigest()] for frame in frames]
        return {"calcium_mask": np.stack([p[0] for p in pairs]), "wall_lumen_labels": np.stack([p[1] for p in pairs])}


def oracle_child(args) -> int:
    """Child process: run_predict with the oracle model (argv: truth input out [--no-overlays])."""
    from ivus_tf.predict import run_predict

    truth, source, out = (Path(a) for a in args[:3])
    run_predict("oracle", source, out, model=OracleModel(truth), overlays="--no-overlays" not in args,
                show_summary=False)
    return 0


def export_model(work: Path, arch: str, width: float) -> tuple[Path, bool]:
    from ivus_tf.models import build_model

    model = build_model(arch, ("calcium", "wall_lumen"), input_shape=(256, 256, 1), width=width)
    out = work / "saved_models" / f"{arch}_w{width:g}"
    try:
        from ivus_tf.export import export_onnx

        export_onnx(model, out, version=1)
        return out / "1", True
    except Exception as error:  # tf2onnx missing or failing: TensorFlow rows only
        print(f"ONNX export failed ({type(error).__name__}: {error}); TensorFlow only", file=sys.stderr)
        from ivus_tf.export import export_savedmodel

        shutil.rmtree(out, ignore_errors=True)
        return export_savedmodel(model, out, version=1), False


def timed(command: list[str], out: Path) -> dict:
    """Run `command` (replacing `out`); wall and CPU time, peak RSS of that process, and its summary.json."""
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu, rss, _, _ = benchlib.run_measured(command, ROOT, {**os.environ, "PYTHONPATH": str(ROOT)})
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "rss_gb": rss, "summary": summary}


def prepare_child(args) -> int:
    """Child process: phantom data and export (argv: work frames oracle_frames arch width); prints JSON. In a child
    so that this process stays small: Linux hands a parent's peak RSS on to the children it starts."""
    work, frames, oracle_frames, arch, width = Path(args[0]), int(args[1]), int(args[2]), args[3], float(args[4])
    start = time.perf_counter()
    make_data(work, frames, oracle_frames)
    data_s = time.perf_counter() - start
    start = time.perf_counter()
    model_dir, has_onnx = export_model(work, arch, width)
    print(json.dumps({"model_dir": str(model_dir), "has_onnx": has_onnx, "data_s": data_s,
                      "export_s": time.perf_counter() - start}))
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--oracle-child":
        return oracle_child(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare-child":
        return prepare_child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--arch", default="unet_res", choices=("unet_res", "deeplabv3"))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--engines", nargs="+", default=["tensorflow", "onnxruntime"],
                        help="engines to time; 'none' for the oracle rows only")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--oracle-frames", type=int, default=600)
    parser.add_argument("--work", type=Path, help="keep the data and outputs here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_predict-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        record = work / "prepared.json"
        if not record.is_file():  # --work DIR of an earlier run with the same options: reuse its data and export
            prepared = subprocess.run([sys.executable, __file__, "--prepare-child", str(work), str(args.frames),
                                       str(args.oracle_frames), args.arch, str(args.width)], cwd=ROOT, check=True,
                                      stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            record.write_text(prepared.stdout.strip().splitlines()[-1])
        prepared = json.loads(record.read_text())
        model_dir, has_onnx = Path(prepared["model_dir"]), prepared["has_onnx"]
        print(f"data: {args.frames} phantom frames in {prepared['data_s']:.1f} s; export {prepared['export_s']:.1f} s "
              f"(onnx: {has_onnx})", file=sys.stderr)
        engines = [e for e in args.engines if e != "none" and (e != "onnxruntime" or has_onnx)]
        runs = [(engine, "pullback", overlays) for engine in engines for overlays in (True, False)]
        if engines:
            runs.append((engines[-1], "pullback.dcm", True))  # the DICOM reader, once
        for engine, source, overlays in runs:
            out = work / f"out-{engine}-{source}-{overlays}"
            command = [sys.executable, "-m", "ivus_tf.predict", "--model", str(model_dir), "--input",
                       str(work / source), "--out", str(out), "--pixel-spacing-mm", "0.02", "--engine", engine,
                       "--batch-size", str(args.batch_size)] + ([] if overlays else ["--no-overlays"])
            result = timed(command, out)
            rows.append((f"{args.arch} w{args.width:g}", engine, "folder" if source == "pullback" else "DICOM",
                         overlays, args.frames, result))
            print(f"{engine} {source} overlays={overlays}: {result['wall_s']:.1f} s", file=sys.stderr)
        oracle_runs = [("pullback.dcm", args.frames, True), ("long.dcm", args.oracle_frames, True),
                       ("long.dcm", args.oracle_frames, False)]
        for source, frames, overlays in oracle_runs:  # short and long pullback: the same peak RSS
            out = work / f"out-oracle-{source}-{overlays}"
            command = [sys.executable, __file__, "--oracle-child", str(work / "truth.npz"), str(work / source),
                       str(out)] + ([] if overlays else ["--no-overlays"])
            result = timed(command, out)
            rows.append(("oracle (ground truth, no model)", "-", "DICOM", overlays, frames, result))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nMachine: {machine()}; date {datetime.date.today()}; load average at the end {load[0]:.1f}; command: "
          f"python bench/bench_predict.py --frames {args.frames} --arch {args.arch} --width {args.width:g} "
          f"--batch-size {args.batch_size} --oracle-frames {args.oracle_frames}\n")
    print("| model | engine | input | overlays | frames | command wall (s) | command CPU (s) | command frames/s | "
          "streaming frames/s | streaming CPU s per frame | peak RSS (GB) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, engine, source, overlays, frames, r in rows:
        s = r["summary"]
        print(f"| {model} | {engine} | {source} | {'yes' if overlays else 'no'} | {frames} | {r['wall_s']:.1f} | "
              f"{r['cpu_s']:.1f} | {frames / r['wall_s']:.2f} | {s['frames_per_s']:.2f} | "
              f"{s['cpu_seconds_predicting'] / frames:.3f} | {r['rss_gb']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
