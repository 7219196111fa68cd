"""Statistics over runs: the models and schemes of Table 1, mean +- SD per group, Welch's t-test, lambda choice.

Bargsten et al. (CDBME 2021) report each model and training scheme as mean +- standard deviation over the runs of
10 repeats of 3-fold cross-validation (each run's number is its mean over the test frames), and compare groups with
Welch's t-test (unequal variances). Here:

* the standard deviation is the sample SD (ddof=1) over runs; a group of one run has no SD (shown as n/a);
* a run whose metric is null (it could not be computed) is left out of that metric's statistics, and the count
  says so;
* p-values are `scipy.stats.ttest_ind(a, b, equal_var=False)` over the two groups' run values; fewer than two runs
  on either side (or two constant groups, where the statistic is undefined) give no p-value ("n/a").
  The runs share one test set and overlapping training data, so they are not independent samples: as in the
  paper, the p-values describe how far apart the groups are relative to their run-to-run spread, not a formal
  test of a population difference;
* each table of comparisons also gives Holm's step-down adjustment of its p-values (Holm 1979), per metric, over
  the comparisons of that table that have a p-value: the family-wise error rate of the table's k tests is then at
  most the level a reader compares the adjusted p with, without Bonferroni's full factor k on every test;
* baselines (`baselines` in results.jsonl: the calcium rule fitted on each run's training cases, predicting
  nothing) contribute ONE value per (repeat, fold), the mean over that fold's runs: every run of a fold fits the
  rule on the same training cases and scores it on the same test cases, so counting each run would count one fit
  several times and shrink its p-values;
* the multi-task row of a model uses one lambda (as the paper's table): the lambda with the highest mean
  VALIDATION calcium Dice over its runs (`val_calcium_dice`, the value each run selected its model on), so the
  test set plays no part in the choice. When a model's multi-task runs lack validation values, the lambda with
  the highest mean test calcium Dice is taken instead and the report says so (an optimistic choice). A fixed
  lambda can be asked for (`lam=`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ivus_tf.core.errors import InputError

__all__ = ["BASELINE_LABELS", "MODELS", "RULE_MARGIN", "SCHEME_LABELS", "baseline_values", "describe", "metric_values",
           "holm_adjust", "model_label", "select_lambdas", "welch_p"]

# (arch, backbone) -> label, in the paper's order.
MODELS = {("unet_res", "none"): "U-Net Res", ("deeplabv3", "none"): "DeepLabV3",
          ("deeplabv3", "imagenet"): "DeepLabV3 ImageNet", ("deeplabv3", "coco"): "DeepLabV3 COCO"}
SCHEME_LABELS = {"calcium": "calcium only", "pretrain": "pre-training", "multitask": "multi-task"}
BASELINE_LABELS = {"rule": "rule: bright edge + shadow", "predict_nothing": "predict nothing"}
RULE_MARGIN = 0.05  # a model cell must beat the rule baseline's mean Dice by this much (5 percentage points)


def model_label(model: tuple[str, str]) -> str:
    return MODELS.get(tuple(model), f"{model[0]} ({model[1]})")


def metric_values(runs: Sequence[Mapping], section: str, metric: str) -> np.ndarray:
    """float64 array of the runs' `metrics[section][metric]`, nulls and absent sections left out."""
    values = [run["metrics"].get(section, {}).get(metric) for run in runs]
    return np.array([v for v in values if v is not None], dtype=np.float64)


def baseline_values(records: Sequence[Mapping], name: str, metric: str) -> np.ndarray:
    """float64 array, one value per (repeat, fold) with a value: the mean over that fold's runs of
    `baselines[name][metric]` (see the module docstring); nulls and runs without baselines left out."""
    folds: dict[tuple, list[float]] = {}
    for run in records:
        value = ((run.get("baselines") or {}).get(name) or {}).get(metric)
        if value is not None:
            folds.setdefault((run["repeat"], run["fold"]), []).append(value)
    return np.array([float(np.mean(folds[key])) for key in sorted(folds)], dtype=np.float64)


def describe(values: Sequence[float]) -> dict:
    """{"mean", "std" (ddof=1), "n"}; mean NaN for no values, std NaN for fewer than two."""
    values = np.asarray(values, dtype=np.float64)
    n = int(values.size)
    return {"mean": float(values.mean()) if n else math.nan,
            "std": float(values.std(ddof=1)) if n >= 2 else math.nan, "n": n}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test, or None with fewer than two values on a side or an undefined test."""
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        return None
    with warnings.catch_warnings():  # nearly constant groups (a baseline fitted alike on every fold): p stays valid
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input order; None stays None and is not counted.

    With the m p-values sorted p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j))
    (monotone in i, capped at 1).
    """
    present = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted


def select_lambdas(records: Sequence[Mapping], lam: float | None = None) -> dict[tuple, dict]:
    """{(arch, backbone): {"lam", "criterion", "scores": {lam: mean}}} for every model with multi-task runs.

    criterion: "fixed" (`lam` given), "validation" (highest mean `val_calcium_dice`; needs it on every multi-task
    run of the model) or "test" (highest mean test calcium Dice: the fallback, optimistic). Ties go to the smaller
    lambda. With `lam` given, a model without runs at that lambda is an `InputError`.
    """
    by_model: dict[tuple, dict[float, list]] = {}
    for record in records:
        if record["scheme"] == "multitask":
            by_model.setdefault((record["arch"], record["backbone"]), {}).setdefault(record["lam"], []).append(record)
    chosen = {}
    for model, by_lam in by_model.items():
        if lam is not None:
            if float(lam) not in by_lam:
                raise InputError(f"{model_label(model)} has no multi-task runs at lambda {lam:g} (it has "
                                 f"{', '.join(f'{v:g}' for v in sorted(by_lam))})")
            chosen[model] = {"lam": float(lam), "criterion": "fixed", "scores": {}}
            continue
        runs = [r for group in by_lam.values() for r in group]
        validation = all(r["val_calcium_dice"] is not None for r in runs)
        scores = {}
        for value, group in by_lam.items():
            if validation:
                scores[value] = float(np.mean([r["val_calcium_dice"] for r in group]))
            else:
                found = metric_values(group, "calcium", "dice")
                scores[value] = float(found.mean()) if found.size else -math.inf
        best = max(sorted(scores), key=lambda v: scores[v])  # max keeps the first (smallest) on ties
        chosen[model] = {"lam": best, "criterion": "validation" if validation else "test", "scores": scores}
    return chosen
