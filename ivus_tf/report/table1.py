"""Table 1 of Bargsten et al. (CDBME 2021): calcium Dice and average Hausdorff distance per model and scheme.

Rows are model x training scheme (U-Net Res, DeepLabV3, and DeepLabV3 ImageNet / DeepLabV3 COCO when the grid
has them; calcium only, pre-training, multi-task at one lambda per model); columns mean +- SD over runs of the
test calcium Dice [%] and average Hausdorff distance [mm], and the number of runs. The best mean of each column is
bold (highest Dice, lowest distance). A second table gives Welch's t-test p-values, with Holm's adjustment over
the table: multi-task and pre-training against calcium only for each model, DeepLabV3 against U-Net Res (and
ImageNet / COCO starts against DeepLabV3) for each scheme. A third lists every multi-task lambda, the one used
marked. Statistics: `ivus_tf.report.stats`.

Baselines, when the runs recorded them (results.jsonl `baselines`): rows for the calcium rule (bright leading edge
+ shadow, fitted on each fold's training cases, `ivus_tf.baselines`) and for predicting nothing, one value per
repeat x fold; each model cell is tested against the rule (Welch), and a cell whose mean Dice does not beat the
rule's by `RULE_MARGIN` (5 points) is flagged with a dagger: such a network has not shown that it learned more
than "bright with a shadow behind".

Outputs: table1.md (the tables and notes), table1.csv (Table 1 with the baseline rows, full precision),
welch_tests.csv (the model comparisons, then each cell against the rule).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ivus_tf.report.stats import (
    BASELINE_LABELS,
    MODELS,
    RULE_MARGIN,
    SCHEME_LABELS,
    baseline_values,
    describe,
    holm_adjust,
    metric_values,
    model_label,
    select_lambdas,
    welch_p,
)

__all__ = ["baseline_rows", "rule_tests", "table1_rows", "welch_tests", "write_table1"]

METRICS = (("dice", "Dice [%]", 100.0, 1), ("average_hausdorff_mm", "Average Hausdorff [mm]", 1.0, 2))
BACKBONE_NOTES = {"imagenet": " DeepLabV3 ImageNet: the ResNet50 encoder starts from Keras' ImageNet weights.",
                  "coco": " DeepLabV3 COCO: encoder, ASPP and 3x3 convolution start from torchvision's COCO-trained "
                          "DeepLabV3 (the paper's \"DeepLabV3 COCO\" row; python -m ivus_tf.convert)."}


def _models(records: Sequence[Mapping]) -> list[tuple]:
    present = {(r["arch"], r["backbone"]) for r in records}
    return [m for m in MODELS if m in present] + sorted(present - set(MODELS))


def _group(records: Sequence[Mapping], model: tuple, scheme: str, lam: float | None) -> list[Mapping]:
    return [r for r in records if (r["arch"], r["backbone"]) == model and r["scheme"] == scheme
            and (scheme != "multitask" or r["lam"] == lam)]


def table1_rows(records: Sequence[Mapping], lambdas: Mapping[tuple, Mapping]) -> list[dict]:
    """One dict per (model, scheme) with runs: labels, lam, and per metric mean/std/n (fractions for Dice) and
    `best_<metric>` (the best mean of the column; exact ties all best)."""
    rows = []
    for model in _models(records):
        for scheme in SCHEME_LABELS:
            lam = lambdas[model]["lam"] if scheme == "multitask" and model in lambdas else None
            runs = _group(records, model, scheme, lam)
            if not runs:
                continue
            row = {"model": model_label(model), "arch": model[0], "backbone": model[1], "scheme": scheme,
                   "scheme_label": SCHEME_LABELS[scheme], "lam": lam, "runs": len(runs), "kind": "model"}
            for metric, *_ in METRICS:
                stats = describe(metric_values(runs, "calcium", metric))
                row.update({f"{metric}_{k}": v for k, v in stats.items()})
            rows.append(row)
    rule = describe(baseline_values(records, "rule", "dice"))["mean"]
    for row in rows:
        row["beats_rule"] = (None if math.isnan(rule) else
                             bool(not math.isnan(row["dice_mean"]) and row["dice_mean"] - rule >= RULE_MARGIN - 1e-12))
    for metric, sign in (("dice", 1), ("average_hausdorff_mm", -1)):
        means = [sign * row[f"{metric}_mean"] for row in rows if not math.isnan(row[f"{metric}_mean"])]
        for row in rows:
            row[f"best_{metric}"] = bool(means) and sign * row[f"{metric}_mean"] == max(means)
    return rows


def baseline_rows(records: Sequence[Mapping]) -> list[dict]:
    """One row per baseline the runs recorded (`BASELINE_LABELS` order): per metric mean/std/n over the
    (repeat, fold) values (`baseline_values`); `runs` is the number of folds."""
    rows = []
    for name, label in BASELINE_LABELS.items():
        values = {metric: baseline_values(records, name, metric) for metric, *_ in METRICS}
        folds = {(r["repeat"], r["fold"]) for r in records if ((r.get("baselines") or {}).get(name))}
        if not folds:
            continue
        row = {"model": "Baselines", "arch": "", "backbone": "", "scheme": name, "scheme_label": label, "lam": None,
               "runs": len(folds), "kind": "baseline", "beats_rule": None}
        for metric, *_ in METRICS:
            row.update({f"{metric}_{k}": v for k, v in describe(values[metric]).items()})
            row[f"best_{metric}"] = False
        rows.append(row)
    return rows


def _comparison(label: str, a: Sequence[Mapping], b: Sequence[Mapping]) -> dict:
    out = {"comparison": label, "runs_a": len(a), "runs_b": len(b)}
    for metric, *_ in METRICS:
        va, vb = metric_values(a, "calcium", metric), metric_values(b, "calcium", metric)
        out[f"{metric}_difference"] = (float(va.mean() - vb.mean()) if va.size and vb.size else math.nan)
        out[f"{metric}_p"] = welch_p(va, vb)
    return out


def _with_holm(tests: list[dict]) -> list[dict]:
    """Add `{metric}_p_holm`: Holm's adjustment over these tests (one family per table and metric)."""
    for metric, *_ in METRICS:
        for test, adjusted in zip(tests, holm_adjust([t[f"{metric}_p"] for t in tests])):
            test[f"{metric}_p_holm"] = adjusted
    return tests


def rule_tests(records: Sequence[Mapping], rows: Sequence[Mapping]) -> list[dict]:
    """Welch's t-test of each Table 1 model cell (its runs) against the rule baseline (one value per fold);
    empty when no run recorded the rule. `beats_rule`: the cell's mean Dice is >= the rule's + RULE_MARGIN."""
    rule = {metric: baseline_values(records, "rule", metric) for metric, *_ in METRICS}
    if not rule["dice"].size:
        return []
    tests = []
    for row in rows:
        if row["kind"] != "model":
            continue
        runs = _group(records, (row["arch"], row["backbone"]), row["scheme"], row["lam"])
        out = {"comparison": f"{row['model']}, {_scheme_text(row['scheme'], row['lam'])} vs rule baseline",
               "runs_a": len(runs), "runs_b": int(rule["dice"].size)}
        for metric, *_ in METRICS:
            values = metric_values(runs, "calcium", metric)
            out[f"{metric}_difference"] = (float(values.mean() - rule[metric].mean())
                                           if values.size and rule[metric].size else math.nan)
            out[f"{metric}_p"] = welch_p(values, rule[metric])
        out["beats_rule"] = row["beats_rule"]
        tests.append(out)
    return _with_holm(tests)


def _scheme_text(scheme: str, lam: float | None) -> str:
    return SCHEME_LABELS[scheme] + (f" (λ={lam:g})" if lam is not None else "")


def welch_tests(records: Sequence[Mapping], lambdas: Mapping[tuple, Mapping]) -> list[dict]:
    """Welch's t-tests on the test calcium Dice and average Hausdorff distance (A minus B; p two-sided, and
    Holm-adjusted over these comparisons)."""
    tests = []
    models = _models(records)
    lam_of = {m: lambdas[m]["lam"] if m in lambdas else None for m in models}
    for model in models:
        base = _group(records, model, "calcium", None)
        for scheme in ("multitask", "pretrain"):
            other = _group(records, model, scheme, lam_of[model] if scheme == "multitask" else None)
            if base and other:
                text = _scheme_text(scheme, lam_of[model] if scheme == "multitask" else None)
                tests.append(_comparison(f"{model_label(model)}: {text} vs calcium only", other, base))
    pairs = [(("deeplabv3", "none"), ("unet_res", "none")), (("deeplabv3", "imagenet"), ("deeplabv3", "none")),
             (("deeplabv3", "coco"), ("deeplabv3", "none"))]
    for scheme in SCHEME_LABELS:
        for a, b in pairs:
            if a not in models or b not in models:
                continue
            runs_a = _group(records, a, scheme, lam_of[a] if scheme == "multitask" else None)
            runs_b = _group(records, b, scheme, lam_of[b] if scheme == "multitask" else None)
            if runs_a and runs_b:
                label = SCHEME_LABELS[scheme]
                if scheme == "multitask":
                    label += (f" (λ={lam_of[a]:g})" if lam_of[a] == lam_of[b] else
                              f" (λ={lam_of[a]:g} vs {lam_of[b]:g})")
                tests.append(_comparison(f"{label}: {model_label(a)} vs {model_label(b)}", runs_a, runs_b))
    return _with_holm(tests)


# ---------------------------------------------------------------------------------------------- formatting

def _value(value: float, scale: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * scale:.{digits}f}"


def _cell(row: Mapping, metric: str, scale: float, digits: int) -> str:
    text = f"{_value(row[f'{metric}_mean'], scale, digits)} ± {_value(row[f'{metric}_std'], scale, digits)}"
    if row[f"{metric}_n"] < row["runs"]:
        text += f" (n={row[f'{metric}_n']})"
    text = f"**{text}**" if row[f"best_{metric}"] else text
    return text + " †" if metric == "dice" and row.get("beats_rule") is False else text


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _signed(value: float, scale: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value * scale:+.{digits}f}"


def format_table1(rows: Sequence[Mapping]) -> list[str]:
    lines = ["| Model | Training | λ | Dice [%] | Average Hausdorff [mm] | Runs |",
             "| --- | --- | --- | --- | --- | --- |"]
    previous = None
    for row in rows:
        lam = "–" if row["lam"] is None else f"{row['lam']:g}"
        model = row["model"] if row["model"] != previous else ""
        previous = row["model"]
        runs = f"{row['runs']} folds" if row["kind"] == "baseline" else str(row["runs"])
        lines.append(f"| {model} | {row['scheme_label']} | {lam} | {_cell(row, 'dice', 100.0, 1)} | "
                     f"{_cell(row, 'average_hausdorff_mm', 1.0, 2)} | {runs} |")
    return lines


TEST_COLUMNS = "Δ Dice [pp] | p (Dice) | p Holm (Dice) | Δ Average Hausdorff [mm] | p (AHD) | p Holm (AHD)"


def _test_cells(t: Mapping) -> str:
    return (f"{_signed(t['dice_difference'], 100, 1)} | {_p(t['dice_p'])} | {_p(t['dice_p_holm'])} | "
            f"{_signed(t['average_hausdorff_mm_difference'], 1, 3)} | {_p(t['average_hausdorff_mm_p'])} | "
            f"{_p(t['average_hausdorff_mm_p_holm'])}")


def format_rule_tests(tests: Sequence[Mapping]) -> list[str]:
    lines = [f"| Model cell vs rule baseline | Runs / folds | {TEST_COLUMNS} | "
             f"Beats the rule by ≥ {100 * RULE_MARGIN:g} pp |", "|" + " --- |" * 9]
    for t in tests:
        lines.append(f"| {t['comparison'].removesuffix(' vs rule baseline')} | {t['runs_a']} / {t['runs_b']} | "
                     f"{_test_cells(t)} | {'yes' if t['beats_rule'] else '**no**'} |")
    return lines


def format_tests(tests: Sequence[Mapping]) -> list[str]:
    lines = [f"| Comparison (A vs B) | Runs A / B | {TEST_COLUMNS} |", "|" + " --- |" * 8]
    for t in tests:
        lines.append(f"| {t['comparison']} | {t['runs_a']} / {t['runs_b']} | {_test_cells(t)} |")
    return lines


def format_lambdas(records: Sequence[Mapping], lambdas: Mapping[tuple, Mapping]) -> list[str]:
    lines = ["| Model | λ | Validation calcium Dice [%] | Test Dice [%] | Test average Hausdorff [mm] | Runs | Used |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model in _models(records):
        if model not in lambdas:
            continue
        lams = sorted({r["lam"] for r in records if r["scheme"] == "multitask"
                       and (r["arch"], r["backbone"]) == model})
        for lam in lams:
            runs = _group(records, model, "multitask", lam)
            val = [r["val_calcium_dice"] for r in runs if r["val_calcium_dice"] is not None]
            val_text = (f"{100 * sum(val) / len(val):.1f}" + (f" (n={len(val)})" if len(val) < len(runs) else "")
                        if val else "n/a")
            dice, ahd = (describe(metric_values(runs, "calcium", m)) for m in ("dice", "average_hausdorff_mm"))
            lines.append(f"| {model_label(model)} | {lam:g} | {val_text} | {_value(dice['mean'], 100, 1)} ± "
                         f"{_value(dice['std'], 100, 1)} | {_value(ahd['mean'], 1, 2)} ± {_value(ahd['std'], 1, 2)} | "
                         f"{len(runs)} | {'yes' if lam == lambdas[model]['lam'] else ''} |")
    return lines


def _selection_notes(lambdas: Mapping[tuple, Mapping]) -> list[str]:
    notes = []
    for model, choice in lambdas.items():
        how = {"fixed": "fixed on the command line (--lambda)",
               "validation": "the highest mean validation calcium Dice over its runs",
               "test": "the highest mean TEST calcium Dice over its runs, because its runs carry no validation "
                       "Dice (val_calcium_dice): chosen on the test set, so optimistic"}[choice["criterion"]]
        notes.append(f"{model_label(model)}: λ = {choice['lam']:g}, {how}.")
    return notes


def write_table1(records: Sequence[Mapping], out_dir: str | Path, lam: float | None = None) -> dict:
    """Write table1.md, table1.csv and welch_tests.csv into `out_dir`; return {"rows", "baselines", "tests",
    "rule_tests", "lambdas"} ("rows": the model cells, "baselines": the baseline rows)."""
    out_dir = Path(out_dir)
    lambdas = select_lambdas(records, lam)
    rows, tests, baselines = table1_rows(records, lambdas), welch_tests(records, lambdas), baseline_rows(records)
    against_rule = rule_tests(records, rows)
    backbones = {row["backbone"] for row in rows}
    text = ["# Table 1: calcium segmentation on the test set", "",
            *format_table1(rows + baselines), "",
            "Mean ± sample standard deviation (ddof=1) over runs (repeats × folds of case-wise cross-validation); "
            "each run contributes its mean over the test frames, scored at the frames' original resolution. "
            "Bold: the best model mean of the column (highest Dice, lowest distance). λ: the multi-task weight "
            "(L = λ·L_calcium + L_wall-lumen). A run with a null metric is left out of that metric (n= says how "
            "many remain)." + "".join(note for b, note in BACKBONE_NOTES.items() if b in backbones), ""]
    if baselines:
        text += ["Baselines (no network; `ivus_tf.baselines`, docs/baselines.md), scored on the same test frames "
                 "with the same metrics: the rule marks, per A-line, the leading run of bright pixels with an "
                 "acoustic shadow behind them, its thresholds fitted on each fold's training cases only; predict "
                 "nothing is an empty mask on every frame. One value per repeat × fold (all runs of a fold share "
                 "the fit), so Runs counts folds.", ""]
        flagged = [row for row in rows if row["beats_rule"] is False]
        if flagged:
            text += [f"† does not beat the rule baseline by ≥ {100 * RULE_MARGIN:g} Dice points "
                     f"({len(flagged)} of {len(rows)} model cells): on these data such a network has not shown "
                     "that it learned more than \"bright with a shadow behind\".", ""]
        elif any(row["beats_rule"] for row in rows):
            text += [f"Every model cell beats the rule baseline by ≥ {100 * RULE_MARGIN:g} Dice points.", ""]
    if lambdas:
        text += ["Multi-task λ per model: " + " ".join(_selection_notes(lambdas)), ""]
    text += ["## Welch's t-tests", "", *format_tests(tests), "",
             "Two-sided p-values of Welch's t-test (scipy.stats.ttest_ind, equal_var=False) over the runs' test "
             "means; Δ = mean of A minus mean of B (Dice in percentage points). n/a: fewer than two runs on a side "
             "(or no spread on either). p Holm: Holm's step-down adjustment over the comparisons of this table "
             f"({sum(t['dice_p'] is not None for t in tests)} with a Dice p-value), per metric; compare it, not p, "
             "with a significance level when several comparisons are read together. The runs share one test set "
             "and overlapping training data, so they are not independent samples; as in the paper, read p as a "
             "measure of separation, not an exact error rate.", ""]
    if against_rule:
        text += ["## Against the rule baseline", "", *format_rule_tests(against_rule), "",
                 "Welch's t-test of each model cell's runs against the rule's per-fold values; Δ = model minus "
                 "rule; p Holm adjusted over this table's cells.", ""]
    if lambdas:
        text += ["## Multi-task runs by λ", "", *format_lambdas(records, lambdas), ""]
    (out_dir / "table1.md").write_text("\n".join(text), encoding="utf-8")
    _write_csv(out_dir / "table1.csv", rows + baselines,
               ["model", "arch", "backbone", "scheme", "lam", "runs", "dice_mean", "dice_std", "dice_n",
                "average_hausdorff_mm_mean", "average_hausdorff_mm_std", "average_hausdorff_mm_n", "best_dice",
                "best_average_hausdorff_mm", "kind", "beats_rule"])
    _write_csv(out_dir / "welch_tests.csv", [{"beats_rule": None, **t} for t in tests] + against_rule,
               ["comparison", "runs_a", "runs_b", "dice_difference", "dice_p", "dice_p_holm",
                "average_hausdorff_mm_difference", "average_hausdorff_mm_p", "average_hausdorff_mm_p_holm",
                "beats_rule"])
    return {"rows": rows, "baselines": baselines, "tests": tests, "rule_tests": against_rule, "lambdas": lambdas}


def _csv_value(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def _write_csv(path: Path, rows: Sequence[Mapping], columns: Sequence[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in columns])
