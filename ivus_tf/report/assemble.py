"""`make_report(grid_dir)`: the paper's tables and figures from a grid's results.jsonl, into GRID_DIR/report/.

    results.jsonl (validated, `ivus_tf.grid.results`)
      -> table1.md, table1.csv, welch_tests.csv    Table 1 and Welch's t-tests       (`ivus_tf.report.table1`)
      -> empty_frames.md                            Table 1 split by the empty-mask rule (`.empty_frames`)
      -> lambda_sweep.png                           Figure 4, multi-task runs vs lambda (`ivus_tf.report.figures`)
      -> examples.png                               Figure 3, contours on test frames   (`ivus_tf.report.examples`)
      -> inference.md                               time and memory on this machine     (`ivus_tf.report.inference`)
      -> results.jsonl, runs/<run_id>/, splits.json the inputs: each run's config.yaml and metrics.json, the
                                                    splits file(s), so the folder alone carries Table 1's basis
      -> index.md                                   what was made, what was skipped and why

A bad results file stops everything with a one-line `InputError`; a figure the grid cannot supply (one lambda, no
saved predictions) is skipped with its reason in index.md. The report folder is written under a temporary name
and renamed at the end, replacing an earlier report.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from ivus_tf.grid.results import RESULTS_NAME, read_results
from ivus_tf.report.stats import SCHEME_LABELS, model_label

__all__ = ["REPORT_NAME", "make_report"]

REPORT_NAME = "report"


def _empty_frames(rows, records, results_path, folder: Path, made: dict, skipped: dict) -> None:
    from ivus_tf.report.empty_frames import write_empty_frames

    result = write_empty_frames(rows, records, results_path, folder / "empty_frames.md")
    if not any(row["runs"] for row in result["rows"]):
        (folder / "empty_frames.md").unlink()
        skipped["empty_frames.md"] = "no run folder with a metrics.json next to results.jsonl (runs/<run_id>/)"
        return
    left_out = f"; {len(result['missing'])} run(s) without metrics.json left out" if result["missing"] else ""
    made["empty_frames.md"] = ("Table 1's calcium scores split by the empty-mask rule: share of frames with one "
                               "empty mask, Dice and distance where both masks have calcium, "
                               f"median distance{left_out}")


def _lambda_sweep(records, folder: Path, made: dict, skipped: dict) -> None:
    from ivus_tf.report.figures import lambda_sweep_data, plot_lambda_sweep

    data = lambda_sweep_data(records)
    if len(data["lambdas"]) < 2:
        found = ", ".join(f"{lam:g}" for lam in data["lambdas"]) or "none"
        skipped["lambda_sweep.png"] = (f"the multi-task runs cover fewer than 2 lambdas > 0 (found: {found}); "
                                       "a sweep needs at least two")
        return
    plot_lambda_sweep(data, folder / "lambda_sweep.png")
    note = ""
    if data["left_out"]:
        note = f"; λ = {', '.join(f'{lam:g}' for lam in data['left_out'])} left out (no place on a log axis)"
    made["lambda_sweep.png"] = (f"Figure 4: multi-task test Dice and average Hausdorff distance of calcium and "
                                f"wall-lumen against λ ({', '.join(f'{lam:g}' for lam in data['lambdas'])}), "
                                f"mean ± 2 SD over runs, one line per model{note}")


def _examples(records, results_path, lambdas, count: int, folder: Path, made: dict, skipped: dict) -> None:
    from ivus_tf.report.examples import SkipFigure, choose_example_runs, choose_frames, plot_examples

    try:
        if not lambdas:
            raise SkipFigure("the grid has no multi-task runs")
        pair = choose_example_runs(records, results_path, lambdas)
        frames = choose_frames(pair, results_path, count)
    except SkipFigure as reason:
        skipped["examples.png"] = str(reason)
        return
    plot_examples(frames, pair, folder / "examples.png")
    rule = ", the rule baseline fitted on the same training cases" if any("rule" in f for f in frames) else ""
    made["examples.png"] = (f"Figure 3: calcium contours on {len(frames)} test frames, {model_label(pair['model'])} "
                            f"repeat {pair['repeat']} fold {pair['fold']}: ground truth, calcium-only run "
                            f"{pair['calcium']['run_id']}, multi-task run {pair['multitask']['run_id']}{rule}")


def _inference(records, results_path, calls: int, folder: Path, made: dict, log) -> None:
    from ivus_tf.report.inference import inference_settings, machine_description, measure_inference, write_inference

    settings = inference_settings(records, results_path)
    machine = machine_description()
    rows = measure_inference(settings, calls=calls, log=log)
    write_inference(rows, machine, folder / "inference.md")
    failed = sum("error" in r for r in rows)
    made["inference.md"] = (f"inference time and memory at batch 1 and 12 per architecture on {machine['cpu']}"
                            + (f" ({failed} measurement(s) failed, see the file)" if failed else ""))


def _provenance(records, results_path: Path, folder: Path, made: dict, skipped: dict) -> None:
    import shutil

    from ivus_tf.core.errors import InputError
    from ivus_tf.grid.results import resolve_run_dir
    from ivus_tf.run_folder import RunFolder

    shutil.copyfile(results_path, folder / RESULTS_NAME)
    made[RESULTS_NAME] = "the grid's results, one line per run (the table's input)"
    copied, missing, splits = 0, [], []
    for record in records:
        run = RunFolder(resolve_run_dir(record, results_path))
        try:
            splits_path = run.splits_path()
        except InputError:
            missing.append(record["run_id"])
            continue
        if not run.metrics_path.is_file():
            missing.append(record["run_id"])
            continue
        target = folder / "runs" / record["run_id"]
        target.mkdir(parents=True, exist_ok=True)
        for path in (run.config_path, run.metrics_path):
            shutil.copyfile(path, target / path.name)
        copied += 1
        if splits_path not in splits:
            splits.append(splits_path)
    if copied:
        made["runs/"] = (f"config.yaml and metrics.json (every test frame's scores) of {copied} run(s)"
                         + (f"; not found for {', '.join(missing)}" if missing else ""))
    else:
        skipped["runs/"] = "no run folder with config.yaml and metrics.json next to results.jsonl"
    names = ["splits.json"] if len(splits) == 1 else [f"splits-{i}.json" for i in range(len(splits))]
    for name, path in zip(names, splits):
        if path.is_file():
            shutil.copyfile(path, folder / name)
            made[name] = f"the case-wise test set and cross-validation folds the runs used (from {path.name})"
        else:
            skipped[name] = f"the runs' splits file {path} is gone"


def _index(records, results_path: Path, made: dict, skipped: dict, folder: Path) -> None:
    hours = sum(r["wall_time_s"] for r in records) / 3600
    versions = sorted({r["package_version"] for r in records})
    counts = {}
    for r in records:
        key = (model_label((r["arch"], r["backbone"])), SCHEME_LABELS[r["scheme"]])
        counts[key] = counts.get(key, 0) + 1
    lines = ["# Calcium segmentation in IVUS: report", "",
             f"- Results: `{results_path}`, {len(records)} runs, {hours:.1f} h of training in total; package "
             f"version(s) {', '.join(versions)}",
             f"- Made: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             "- Runs: " + "; ".join(f"{m} {s}: {n}" for (m, s), n in counts.items()), "", "## Made", ""]
    lines += [f"- [{name}]({name}): {text}" for name, text in made.items()]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {name}: {reason}" for name, reason in skipped.items()]
    (folder / "index.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_report(grid_dir: str | Path, results: str | Path | None = None, out: str | Path | None = None,
                lam: float | None = None, skip_inference: bool = False, skip_examples: bool = False,
                example_frames: int = 4, inference_calls: int = 5,
                log: Callable[[str], None] = print) -> dict:
    """Write the report of `grid_dir` (its results.jsonl, or `results`) into `out` (default GRID_DIR/report).

    `lam` fixes the multi-task lambda of Table 1 (default: chosen on validation Dice, `ivus_tf.report.stats`).
    Returns {"out": Path, "made": {file: description}, "skipped": {file: reason}, "table1": write_table1's dict}.
    """
    from ivus_tf.core.atomic import atomic_output_dir
    from ivus_tf.report.table1 import write_table1

    grid_dir = Path(grid_dir)
    results_path = Path(results) if results is not None else grid_dir / RESULTS_NAME
    records = read_results(results_path)
    out = Path(out) if out is not None else grid_dir / REPORT_NAME
    made, skipped = {}, {}
    log(f"report: {len(records)} runs from {results_path} -> {out}")
    with atomic_output_dir(out, overwrite=True) as folder:
        table = write_table1(records, folder, lam)
        made["table1.md"] = ("Table 1: calcium Dice and average Hausdorff distance per model and training scheme "
                             "(mean ± SD over runs, best in bold), Welch's t-tests, multi-task runs by λ"
                             + ("; baseline rows (rule, predict nothing), each cell tested against the rule"
                                if table["baselines"] else ""))
        made["table1.csv"] = "Table 1 at full precision (Dice as a fraction)"
        made["welch_tests.csv"] = "the t-tests at full precision"
        _empty_frames(table["rows"], records, results_path, folder, made, skipped)
        _lambda_sweep(records, folder, made, skipped)
        if skip_examples:
            skipped["examples.png"] = "not asked for (--skip-examples)"
        else:
            _examples(records, results_path, table["lambdas"], example_frames, folder, made, skipped)
        if skip_inference:
            skipped["inference.md"] = "not asked for (--skip-inference)"
        else:
            _inference(records, results_path, inference_calls, folder, made, log)
        _provenance(records, results_path, folder, made, skipped)
        _index(records, results_path, made, skipped, folder)
    for name in made:
        log(f"  made {out / name}")
    for name, reason in skipped.items():
        log(f"  skipped {name}: {reason}")
    return {"out": out, "made": made, "skipped": skipped, "table1": table}
