"""Example test frames with calcium contours, as in Bargsten et al. (CDBME 2021), Figure 3.

Ground truth (green, dashed), the calcium-only model (blue), the multi-task model (red) and, when the runs recorded
it, the calcium rule baseline fitted on the same training cases (orange, dotted; `ivus_tf.baselines`, recomputed
from the parameters in the run's metrics.json) on a few test frames that carry calcium. The two models are runs
of the same architecture on the same repeat and fold (so the same training cases), the multi-task run at the
lambda of Table 1. Frames are chosen to span the multi-task model's
Dice on them (lowest to highest, evenly spaced in rank), so the figure shows failures as well as successes.

Sources: the runs' saved predictions, `<run_dir>/predictions/<case_id>/<frame_id>_calcium.png` (0/255, at the
frame's original resolution; written by training with `save_predictions`), and the frames and ground truth from
the records folder named by the run's config.yaml (`data`), read with `ivus_tf.data.iterate_frames`. Each panel
is cropped around the calcium and carries a 1 mm scale bar. When nothing can be drawn, `SkipFigure` says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.grid.results import resolve_run_dir
from ivus_tf.report.stats import describe, metric_values, model_label
from ivus_tf.run_folder import RunFolder, prediction_path

__all__ = ["SkipFigure", "choose_example_runs", "choose_frames", "plot_examples", "records_of_run",
           "rule_params_of_run"]

STYLES = {"truth": ("tab:green", "--", "ground truth"), "calcium": ("tab:blue", "-", "calcium only"),
          "multitask": ("tab:red", "-", "multi-task"), "rule": ("tab:orange", ":", "rule baseline")}


class SkipFigure(Exception):
    """A figure cannot be drawn from what the grid holds; the message says why (it goes into index.md)."""


def _run_folder(record: Mapping, results_path) -> RunFolder:
    return RunFolder(resolve_run_dir(record, results_path))


def _has_predictions(record: Mapping, results_path) -> bool:
    return _run_folder(record, results_path).predictions_dir.is_dir()


def choose_example_runs(records: Sequence[Mapping], results_path, lambdas: Mapping[tuple, Mapping]) -> dict:
    """{"model", "repeat", "fold", "calcium": record, "multitask": record}: a calcium-only and a multi-task run
    (Table 1's lambda) of one model on one repeat and fold, both with saved predictions. Preference: the model
    with the best mean multi-task test Dice, then the lowest repeat and fold. `SkipFigure` when there is none."""
    candidates = []
    for model, choice in lambdas.items():
        runs = [r for r in records if (r["arch"], r["backbone"]) == model]
        multitask = [r for r in runs if r["scheme"] == "multitask" and r["lam"] == choice["lam"]]
        score = describe(metric_values(multitask, "calcium", "dice"))["mean"]
        score = -1.0 if np.isnan(score) else score
        for mt in multitask:
            for ca in runs:
                if (ca["scheme"] == "calcium" and (ca["repeat"], ca["fold"]) == (mt["repeat"], mt["fold"])
                        and _has_predictions(ca, results_path) and _has_predictions(mt, results_path)):
                    pair = {"model": model, "repeat": mt["repeat"], "fold": mt["fold"], "calcium": ca,
                            "multitask": mt}
                    candidates.append((-score, mt["repeat"], mt["fold"], ca["seed"] != mt["seed"], pair))
    if not candidates:
        pairs = any(r["scheme"] == "calcium" for r in records) and any(r["scheme"] == "multitask" for r in records)
        raise SkipFigure("no repeat/fold with both a calcium-only and a multi-task run of one model that saved "
                         "predictions (train with save_predictions: true)" if pairs else
                         "the grid needs calcium-only and multi-task runs of one model")
    return min(candidates, key=lambda c: c[:4])[4]


def records_of_run(record: Mapping, results_path) -> Path:
    """The records folder of a run (`RunFolder.records_dir`); `SkipFigure` saying why when there is none."""
    folder = _run_folder(record, results_path)
    try:
        records = folder.records_dir()
    except InputError as error:
        raise SkipFigure(str(error)) from None
    if not (records / "index.json").is_file():
        raise SkipFigure(f"{folder.config_path}: its records folder {records} has no index.json")
    return records


def rule_params_of_run(record: Mapping, results_path):
    """The calcium rule's fitted `RuleParams` from the run's metrics.json (`calcium.rule_baseline.params`), or
    None when the run did not record it (an older run, or `rule_baseline: false`)."""
    from ivus_tf.baselines import RuleParams

    folder = _run_folder(record, results_path)
    try:
        params = folder.read_metrics()["calcium"]["rule_baseline"]["params"]
    except (InputError, KeyError, TypeError):
        return None
    try:
        return RuleParams.from_dict(params, f"{folder.metrics_path}: calcium.rule_baseline.params")
    except InputError as error:
        raise SkipFigure(str(error)) from None


def _read_prediction(path: Path, shape: tuple) -> np.ndarray | None:
    import cv2

    if not path.is_file():
        return None
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.shape != shape:
        raise SkipFigure(f"{path}: unreadable or not {shape[1]}x{shape[0]} like its frame in the records")
    return mask > 0


def choose_frames(pair: Mapping, results_path, count: int = 4) -> list[dict]:
    """Up to `count` test frames with calcium in the ground truth and both models' predictions, spread over the
    multi-task model's Dice; each {"case_id", "frame_id", "image", "pixel_spacing_mm", "truth", "calcium",
    "multitask" (bool masks), "dice": {"calcium", "multitask"}}, highest multi-task Dice first."""
    from ivus_tf.baselines import predict_calcium
    from ivus_tf.data.records import iterate_frames
    from ivus_tf.metrics import dice

    rule = rule_params_of_run(pair["multitask"], results_path)

    records_dir = records_of_run(pair["multitask"], results_path)
    if records_of_run(pair["calcium"], results_path).resolve() != records_dir.resolve():
        raise SkipFigure(f"runs {pair['calcium']['run_id']} and {pair['multitask']['run_id']} were trained on "
                         "different records folders")
    folders = {s: _run_folder(pair[s], results_path).predictions_dir for s in ("calcium", "multitask")}
    cases = sorted({p.name for p in folders["multitask"].iterdir() if p.is_dir()}
                   & {p.name for p in folders["calcium"].iterdir() if p.is_dir()})
    from tfrecords_builder.index import read_index

    known = read_index(records_dir)["cases"]
    cases = [c for c in cases if c in known]
    found = []
    for frame in iterate_frames(records_dir, cases):
        truth = frame["calcium_mask"]
        if truth is None or not truth.any():
            continue
        masks = {s: _read_prediction(prediction_path(folders[s], frame["case_id"], frame["frame_id"], "calcium"),
                                     truth.shape) for s in folders}
        if any(m is None for m in masks.values()):
            continue
        if rule is not None:
            masks["rule"] = predict_calcium(frame["image"], frame["pixel_spacing_mm"], rule)
        found.append({"case_id": frame["case_id"], "frame_id": frame["frame_id"], "image": frame["image"],
                      "pixel_spacing_mm": frame["pixel_spacing_mm"], "truth": truth > 0, **masks,
                      "dice": {s: float(dice(masks[s], truth)) for s in masks}})
    if not found:
        raise SkipFigure(f"no test frame with calcium has predictions of both runs ({folders['calcium']}, "
                         f"{folders['multitask']})")
    found.sort(key=lambda f: (f["dice"]["multitask"], f["case_id"], f["frame_id"]))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(found) - 1, min(count, len(found)))}, reverse=True)
    return [found[i] for i in picks]


def _crop(frame: Mapping) -> tuple[slice, slice]:
    """A square window around the union of the masks, at least 45 % of the frame's side."""
    union = frame["truth"] | frame["calcium"] | frame["multitask"] | frame.get("rule", False)
    height, width = union.shape
    rows, cols = np.nonzero(union)
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    side = int(min(min(height, width), max(1.5 * max(np.ptp(rows), np.ptp(cols)) + 10, 0.45 * min(height, width))))
    top = int(np.clip(round(cy - side / 2), 0, height - side))
    left = int(np.clip(round(cx - side / 2), 0, width - side))
    return slice(top, top + side), slice(left, left + side)


def plot_examples(frames: Sequence[Mapping], pair: Mapping, path: str | Path) -> Path:
    """Draw the chosen frames side by side with the three contours, a 1 mm scale bar and each model's Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    width = 3.7 if any("rule" in f for f in frames) else 3.2  # room for the rule's Dice in the titles
    fig, axes = plt.subplots(1, len(frames), figsize=(width * len(frames), width + 0.7), squeeze=False,
                             constrained_layout=True)
    for ax, frame in zip(axes[0], frames):
        rows, cols = _crop(frame)
        ax.imshow(frame["image"][rows, cols], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for source, width, order in (("rule", 1.5, 1), ("calcium", 1.3, 2), ("multitask", 1.3, 3),
                                     ("truth", 1.8, 4)):
            mask = frame[source][rows, cols] if source in frame else None
            if mask is not None and mask.any():  # the ground truth last, on top: dashed, visible where others agree
                color, style, _ = STYLES[source]
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linestyles=[style],
                           linewidths=width, zorder=order)
        side = rows.stop - rows.start
        bar = 1.0 / frame["pixel_spacing_mm"]
        if bar < 0.8 * side:
            x0, y0 = 0.06 * side, 0.93 * side
            ax.plot([x0, x0 + bar], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
            ax.text(x0 + bar / 2, y0 - 0.03 * side, "1 mm", color="white", ha="center", va="bottom", fontsize=9)
        rule = f", rule {frame['dice']['rule']:.2f}" if "rule" in frame else ""
        ax.set_title(f"{frame['case_id']} / {frame['frame_id']}\nDice: calcium only {frame['dice']['calcium']:.2f}, "
                     f"multi-task {frame['dice']['multitask']:.2f}{rule}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = [name for name in STYLES if name != "rule" or any("rule" in f for f in frames)]
    handles = [Line2D([], [], color=STYLES[n][0], linestyle=STYLES[n][1], linewidth=2, label=STYLES[n][2])
               for n in shown]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    mt = pair["multitask"]
    fig.suptitle(f"{model_label(pair['model'])}, repeat {pair['repeat']} fold {pair['fold']}: calcium contours on "
                 f"test frames (multi-task λ={mt['lam']:g})", fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
