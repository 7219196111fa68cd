"""The lambda sweep of Bargsten et al. (CDBME 2021), Figure 4: multi-task scores against the loss weight lambda.

A 2 x 2 grid: Dice (top) and average Hausdorff distance (bottom) of calcium (left) and wall-lumen (right, the
per-frame mean of lumen and vessel wall, metrics section "wall_lumen_mean") on the test set, against lambda on a
log axis; one line per model, points at the mean over runs, error bars of two sample standard deviations (ddof=1).
The models' calcium-only means are drawn as dotted horizontal lines in the calcium panels, for reference. Models
are offset slightly along lambda so their error bars do not hide each other. Lambda 0 has no place on a log axis
and is left out (the report says so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ivus_tf.report.stats import describe, metric_values, model_label

__all__ = ["PANELS", "lambda_sweep_data", "plot_lambda_sweep"]

# (section, metric, panel title, y label, scale)
PANELS = (("calcium", "dice", "Calcium", "Dice [%]", 100.0),
          ("wall_lumen_mean", "dice", "Wall-lumen (mean of lumen and vessel wall)", "Dice [%]", 100.0),
          ("calcium", "average_hausdorff_mm", "Calcium", "Average Hausdorff distance [mm]", 1.0),
          ("wall_lumen_mean", "average_hausdorff_mm", "Wall-lumen (mean of lumen and vessel wall)",
           "Average Hausdorff distance [mm]", 1.0))
COLORS = {"U-Net Res": "tab:orange", "DeepLabV3": "tab:blue", "DeepLabV3 ImageNet": "tab:green",
          "DeepLabV3 COCO": "tab:purple"}


def lambda_sweep_data(records: Sequence[Mapping]) -> dict:
    """{"models": {label: {"lam": [...], (section, metric): {"mean": [...], "std": [...], "n": [...]}}},
    "baseline": {label: {metric: calcium-only mean}}, "left_out": [lambda <= 0 values], "lambdas": sorted}.

    Values are in the runs' units (Dice as a fraction); lambdas sorted ascending per model.
    """
    models: dict = {}
    left_out = set()
    groups: dict = {}
    for record in records:
        if record["scheme"] != "multitask":
            continue
        if not record["lam"] > 0:
            left_out.add(record["lam"])
            continue
        groups.setdefault((record["arch"], record["backbone"]), {}).setdefault(record["lam"], []).append(record)
    for model, by_lam in groups.items():
        entry = {"lam": sorted(by_lam)}
        for section, metric, *_ in PANELS:
            stats = [describe(metric_values(by_lam[lam], section, metric)) for lam in entry["lam"]]
            entry[(section, metric)] = {k: [s[k] for s in stats] for k in ("mean", "std", "n")}
        models[model_label(model)] = entry
    baseline = {}
    for record in records:
        label = model_label((record["arch"], record["backbone"]))
        if record["scheme"] == "calcium" and label in models:
            baseline.setdefault(label, [])
            baseline[label].append(record)
    baseline = {label: {metric: describe(metric_values(runs, "calcium", metric))["mean"]
                        for metric in ("dice", "average_hausdorff_mm")} for label, runs in baseline.items()}
    lambdas = sorted({lam for entry in models.values() for lam in entry["lam"]})
    return {"models": models, "baseline": baseline, "left_out": sorted(left_out), "lambdas": lambdas}


def plot_lambda_sweep(data: Mapping, path: str | Path) -> Path:
    """Draw `lambda_sweep_data` as a 2 x 2 PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(data["models"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True, constrained_layout=True)
    for ax, (section, metric, title, ylabel, scale) in zip(axes.flat, PANELS):
        for i, label in enumerate(labels):
            entry = data["models"][label]
            offset = 1.06 ** (i - (len(labels) - 1) / 2)  # dodge along the log axis
            x = [lam * offset for lam in entry["lam"]]
            mean = [m * scale for m in entry[(section, metric)]["mean"]]
            error = [0.0 if math.isnan(s) else 2 * s * scale for s in entry[(section, metric)]["std"]]
            if all(math.isnan(m) for m in mean):
                continue
            color = COLORS.get(label, f"C{i + 3}")
            ax.errorbar(x, mean, yerr=error, color=color, marker="o", markersize=5, capsize=3, linewidth=1.5,
                        label=f"{label} multi-task")
            base = data["baseline"].get(label, {}).get(metric)
            if section == "calcium" and base is not None and not math.isnan(base):
                ax.axhline(base * scale, color=color, linestyle=":", linewidth=1.2, label=f"{label} calcium only")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no runs with this head's test metrics", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
    lambdas = data["lambdas"]
    for ax in axes[1]:
        ax.set_xlabel("λ (multi-task loss weight of calcium)")
        ax.set_xticks(lambdas)
        ax.set_xticklabels([f"{lam:g}" for lam in lambdas])
        ax.minorticks_off()
    handles, names = axes[0, 0].get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: next(j for j, label in enumerate(labels) if names[i] in
                                                         (f"{label} multi-task", f"{label} calcium only")))
    fig.legend([handles[i] for i in order], [names[i] for i in order], loc="outside lower center",
               ncol=max(1, len(labels)), frameon=False)  # one column per model: multi-task, calcium only
    fig.suptitle("Multi-task training: test scores against λ (mean ± 2 SD over runs)", fontsize=12)
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
