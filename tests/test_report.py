"""Tests of `python -m ivus_tf.report`: the results.jsonl schema, Table 1 against numpy and scipy, the lambda sweep's
data, the example-contour figure from fake run folders, and one tiny inference measurement."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats as scipy_stats

from ivus_tf.core.errors import InputError, run_cli
from ivus_tf.grid.results import (
    RESULT_FIELDS,
    make_result_line,
    metrics_from_run,
    read_results,
    validate_result,
    validation_calcium_dice,
)
from ivus_tf.report import make_report
from ivus_tf.report.__main__ import main
from ivus_tf.report.stats import holm_adjust

ARCH_LIST = ("unet_res", "deeplabv3")
LAMS = (0.5, 2.0)
# (arch, scheme, lam) -> (test calcium Dice, average Hausdorff mm, validation calcium Dice) around which runs scatter.
# Validation prefers lambda 0.5, the test set lambda 2: Table 1 must take 0.5. Best Dice: deeplabv3 multi-task 0.5;
# best distance: deeplabv3 pre-training.
CENTRES = {
    ("unet_res", "calcium", None): (0.55, 0.40, 0.60), ("unet_res", "pretrain", None): (0.56, 0.38, 0.61),
    ("unet_res", "multitask", 0.5): (0.58, 0.37, 0.70), ("unet_res", "multitask", 2.0): (0.60, 0.35, 0.62),
    ("deeplabv3", "calcium", None): (0.57, 0.36, 0.60), ("deeplabv3", "pretrain", None): (0.59, 0.30, 0.61),
    ("deeplabv3", "multitask", 0.5): (0.62, 0.33, 0.72), ("deeplabv3", "multitask", 2.0): (0.65, 0.31, 0.63),
}
NULL_RUN = "unet_res-pretrain-r0-f0"  # its distance is null: left out, n=8


def run_id(arch, scheme, lam, repeat, fold, backbone="none"):
    lam_text = f"-lam{lam:g}" if lam is not None else ""
    return f"{arch}{'-' + backbone if backbone != 'none' else ''}-{scheme}{lam_text}-r{repeat}-f{fold}"


def grid_records(seed=0, repeats=3, folds=3, centres=CENTRES):
    rng = np.random.default_rng(seed)
    records = []
    for (arch, scheme, lam), (dice, distance, val) in centres.items():
        for repeat in range(repeats):
            for fold in range(folds):
                rid = run_id(arch, scheme, lam, repeat, fold)
                metrics = {"calcium": {"dice": float(rng.normal(dice, 0.01)),
                                       "average_hausdorff_mm": None if rid == NULL_RUN else
                                       float(rng.normal(distance, 0.01))}}
                if scheme == "multitask":
                    for section in ("lumen", "vessel_wall", "wall_lumen_mean"):
                        metrics[section] = {"dice": float(rng.normal(0.9 - 0.02 * lam, 0.01)),
                                            "average_hausdorff_mm": float(rng.normal(0.1 + 0.01 * lam, 0.005))}
                records.append(dict(run_id=rid, arch=arch, backbone="none", scheme=scheme, lam=lam, repeat=repeat,
                                    fold=fold, seed=repeat, metrics=metrics, run_dir=f"runs/{rid}",
                                    wall_time_s=100.0, finished_utc="2025-01-01T00:00:00+00:00",
                                    package_version="0.1.0", val_calcium_dice=float(rng.normal(val, 0.005))))
    return records


def write_results(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(make_result_line(**r) for r in records))
    return folder


def values(records, arch, scheme, lam, metric, section="calcium"):
    return np.array([r["metrics"][section][metric] for r in records
                     if (r["arch"], r["scheme"], r["lam"]) == (arch, scheme, lam)
                     and r["metrics"].get(section, {}).get(metric) is not None])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    records = grid_records()
    grid = write_results(tmp_path_factory.mktemp("grid"), records)
    result = make_report(grid, skip_inference=True, log=lambda text: None)
    return records, grid / "report", result


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------- Table 1

def test_table1_is_numpy_mean_and_sample_std_over_runs(report):
    records, out, _ = report
    rows = read_csv(out / "table1.csv")
    assert [(r["arch"], r["scheme"]) for r in rows] == [(a, s) for a in ARCH_LIST
                                                        for s in ("calcium", "pretrain", "multitask")]
    md = (out / "table1.md").read_text()
    for row in rows:
        lam = float(row["lam"]) if row["lam"] else None
        assert lam == (0.5 if row["scheme"] == "multitask" else None)  # validation's choice, not the test set's
        assert int(row["runs"]) == 9
        for metric, scale, digits in (("dice", 100, 1), ("average_hausdorff_mm", 1, 2)):
            found = values(records, row["arch"], row["scheme"], lam, metric)
            assert float(row[f"{metric}_mean"]) == pytest.approx(found.mean(), rel=1e-12)
            assert float(row[f"{metric}_std"]) == pytest.approx(found.std(ddof=1), rel=1e-12)
            assert int(row[f"{metric}_n"]) == len(found)
            assert f"{found.mean() * scale:.{digits}f} ± {found.std(ddof=1) * scale:.{digits}f}" in md
    assert sum(int(r["average_hausdorff_mm_n"]) == 8 for r in rows) == 1  # the null distance is left out
    assert "(n=8)" in md


def test_table1_bold_marks_the_best_mean_of_each_column(report):
    records, out, _ = report
    rows = read_csv(out / "table1.csv")
    best_dice = [(r["arch"], r["scheme"]) for r in rows if r["best_dice"] == "True"]
    best_distance = [(r["arch"], r["scheme"]) for r in rows if r["best_average_hausdorff_mm"] == "True"]
    assert best_dice == [("deeplabv3", "multitask")]
    assert best_distance == [("deeplabv3", "pretrain")]
    table = (out / "table1.md").read_text().split("## Welch")[0]
    bold_lines = [line for line in table.splitlines() if "**" in line]
    assert len(bold_lines) == 2 and all(line.count("**") == 2 for line in bold_lines)
    dice = values(records, "deeplabv3", "multitask", 0.5, "dice")
    assert f"**{100 * dice.mean():.1f} ± {100 * dice.std(ddof=1):.1f}**" in table
    assert "pre-training" in bold_lines[0] and "multi-task" in bold_lines[1]


def test_welch_p_values_equal_scipy(report):
    records, out, _ = report
    tests = {t["comparison"]: t for t in read_csv(out / "welch_tests.csv")}
    expected = {}
    for arch, name in (("unet_res", "U-Net Res"), ("deeplabv3", "DeepLabV3")):
        expected[f"{name}: multi-task (λ=0.5) vs calcium only"] = ((arch, "multitask", 0.5), (arch, "calcium", None))
        expected[f"{name}: pre-training vs calcium only"] = ((arch, "pretrain", None), (arch, "calcium", None))
    for scheme, label, lam in (("calcium", "calcium only", None), ("pretrain", "pre-training", None),
                               ("multitask", "multi-task (λ=0.5)", 0.5)):
        expected[f"{label}: DeepLabV3 vs U-Net Res"] = (("deeplabv3", scheme, lam), ("unet_res", scheme, lam))
    assert set(tests) == set(expected)
    for name, (a, b) in expected.items():
        for metric in ("dice", "average_hausdorff_mm"):
            va, vb = values(records, *a, metric), values(records, *b, metric)
            p = scipy_stats.ttest_ind(va, vb, equal_var=False).pvalue
            assert float(tests[name][f"{metric}_p"]) == pytest.approx(p, rel=1e-9), (name, metric)
            assert float(tests[name][f"{metric}_difference"]) == pytest.approx(va.mean() - vb.mean())
    # Holm over the table's 7 comparisons, per metric: the smallest p is multiplied by 7, the largest by 1 (then
    # raised to the running maximum), and no adjusted p is below its raw p.
    for metric in ("dice", "average_hausdorff_mm"):
        raw = sorted((float(t[f"{metric}_p"]), float(t[f"{metric}_p_holm"])) for t in tests.values())
        assert raw[0][1] == pytest.approx(min(1.0, 7 * raw[0][0]), rel=1e-9)
        assert raw[-1][1] == pytest.approx(max(raw[-1][0], raw[-2][1]), rel=1e-9)
        assert all(adjusted >= p for p, adjusted in raw)
    assert "| p Holm (Dice) |" in (out / "table1.md").read_text()


def test_holm_adjustment_hand_computed():
    # m = 4 p-values (None is not counted), sorted 0.01, 0.03, 0.04, 0.2:
    # 4 * 0.01 = 0.04; 3 * 0.03 = 0.09; 2 * 0.04 = 0.08 -> raised to 0.09; 1 * 0.2 = 0.2.
    assert holm_adjust([0.01, 0.04, None, 0.03, 0.2]) == pytest.approx([0.04, 0.09, None, 0.09, 0.2])
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, and monotone
    assert holm_adjust([None]) == [None] and holm_adjust([]) == []
    assert holm_adjust([0.03]) == [0.03]  # one test: unchanged


def test_pretrained_rows_are_named_for_what_they_loaded(tmp_path):
    """backbone "coco" (a torchvision COCO conversion) is the row "DeepLabV3 COCO", compared with DeepLabV3; the
    table's note explains only the rows it has."""
    from ivus_tf.report.table1 import write_table1

    centres = {k: v for k, v in CENTRES.items() if k[0] == "deeplabv3" and k[2] != 2.0}
    records = grid_records(centres=centres)
    coco = []
    for record in records:
        if record["scheme"] == "calcium":
            rid = run_id("deeplabv3", "calcium", None, record["repeat"], record["fold"], backbone="coco")
            dice = record["metrics"]["calcium"]["dice"] + 0.05
            coco.append({**record, "run_id": rid, "backbone": "coco", "run_dir": f"runs/{rid}",
                         "metrics": {"calcium": {**record["metrics"]["calcium"], "dice": dice}}})
    assert coco[0]["run_id"] == "deeplabv3-coco-calcium-r0-f0"
    records = read_results(write_results(tmp_path / "grid", records + coco) / "results.jsonl")
    (tmp_path / "out").mkdir()
    result = write_table1(records, tmp_path / "out")
    rows = [(row["model"], row["scheme"]) for row in result["rows"]]
    assert rows == [("DeepLabV3", "calcium"), ("DeepLabV3", "pretrain"), ("DeepLabV3", "multitask"),
                    ("DeepLabV3 COCO", "calcium")]
    tests = {t["comparison"]: t for t in result["tests"]}
    a = np.array([r["metrics"]["calcium"]["dice"] for r in coco])
    b = np.array([r["metrics"]["calcium"]["dice"] for r in records
                  if (r["backbone"], r["scheme"]) == ("none", "calcium")])
    assert tests["calcium only: DeepLabV3 COCO vs DeepLabV3"]["dice_difference"] == pytest.approx(a.mean() - b.mean())
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "| DeepLabV3 COCO | calcium only |" in md and "torchvision's COCO-trained DeepLabV3" in md
    assert "ImageNet" not in md


def test_too_few_runs_give_n_a(tmp_path):
    centres = {k: v for k, v in CENTRES.items() if k[0] == "unet_res" and k[2] != 2.0}
    records = grid_records(centres=centres)
    records = [r for r in records if r["scheme"] != "pretrain" or (r["repeat"], r["fold"]) == (0, 1)]  # one run
    grid = write_results(tmp_path / "grid", records)
    make_report(grid, skip_inference=True, log=lambda text: None)
    md = (grid / "report" / "table1.md").read_text()
    pretrain_row = next(line for line in md.splitlines() if "| pre-training |" in line)
    assert "± n/a" in pretrain_row and pretrain_row.endswith("| 1 |")
    welch = next(line for line in md.splitlines() if line.startswith("| U-Net Res: pre-training vs calcium only"))
    assert welch.count("n/a") == 4  # p and p Holm, for Dice and distance
    tests = {t["comparison"]: t for t in read_csv(grid / "report" / "welch_tests.csv")}
    assert tests["U-Net Res: pre-training vs calcium only"]["dice_p"] == ""
    index = (grid / "report" / "index.md").read_text()
    assert "lambda_sweep.png: the multi-task runs cover fewer than 2 lambdas > 0 (found: 0.5)" in index


def test_lambda_falls_back_to_test_dice_with_a_note_and_can_be_fixed(tmp_path):
    records = grid_records()
    for r in records:
        r["val_calcium_dice"] = None
    grid = write_results(tmp_path / "grid", records)
    result = make_report(grid, skip_inference=True, skip_examples=True, log=lambda text: None)
    assert {m: c["lam"] for m, c in result["table1"]["lambdas"].items()} == {("unet_res", "none"): 2.0,
                                                                              ("deeplabv3", "none"): 2.0}
    assert "chosen on the test set, so optimistic" in (grid / "report" / "table1.md").read_text()
    result = make_report(grid, lam=0.5, skip_inference=True, skip_examples=True, log=lambda text: None)
    assert all(c["lam"] == 0.5 and c["criterion"] == "fixed" for c in result["table1"]["lambdas"].values())
    with pytest.raises(InputError, match="no multi-task runs at lambda 3"):
        make_report(grid, lam=3.0, skip_inference=True, log=lambda text: None)


# -------------------------------------------------------------------------------------------- lambda sweep

def test_lambda_sweep_plots_mean_and_two_sd_per_lambda(report, monkeypatch, tmp_path):
    import matplotlib.axes

    from ivus_tf.report.figures import PANELS, lambda_sweep_data, plot_lambda_sweep

    records, out, result = report
    assert (out / "lambda_sweep.png").stat().st_size > 10_000 and "lambda_sweep.png" in result["made"]
    drawn = []
    original = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, yerr=None, **kwargs):
        drawn.append((self.get_title(), self.get_ylabel() or "", kwargs["label"], list(x), list(y), list(yerr)))
        return original(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    data = lambda_sweep_data(records)
    plot_lambda_sweep(data, tmp_path / "sweep.png")
    assert data["lambdas"] == [0.5, 2.0] and set(data["models"]) == {"U-Net Res", "DeepLabV3"}
    assert len(drawn) == 4 * 2  # four panels, two models
    for i, (section, metric, *_ , scale) in enumerate(PANELS):
        for j, (arch, label) in enumerate((("unet_res", "U-Net Res"), ("deeplabv3", "DeepLabV3"))):
            _, _, legend, x, y, yerr = drawn[2 * i + j]
            assert legend == f"{label} multi-task"
            expected = [values(records, arch, "multitask", lam, metric, section) for lam in LAMS]
            np.testing.assert_allclose(y, [scale * v.mean() for v in expected])
            np.testing.assert_allclose(yerr, [2 * scale * v.std(ddof=1) for v in expected])
            np.testing.assert_allclose(np.array(x) / np.array(LAMS), x[0] / LAMS[0])  # one dodge factor per model
            assert 0.9 < x[0] / LAMS[0] < 1.1
    assert data["baseline"]["DeepLabV3"]["dice"] == pytest.approx(values(records, "deeplabv3", "calcium", None,
                                                                          "dice").mean())


# ---------------------------------------------------------------------------------------- results.jsonl

def good_record(**changes):
    record = grid_records()[0]
    record.update(changes)
    return record


@pytest.mark.parametrize("bad, message", [
    ('{"run_id": "x", ', "line 3: not valid JSON"),
    (json.dumps({k: v for k, v in good_record(run_id="x").items() if k != "fold"}), "line 3: missing field(s) fold"),
    (json.dumps(good_record(run_id="x", repeat="1")), "line 3: repeat must be an integer"),
    (json.dumps(good_record(run_id="x", metrics={"calcium": {"dice": 64.5, "average_hausdorff_mm": 0.3}})),
     "line 3: metrics.calcium.dice must be in [0, 1]"),
    (json.dumps(good_record(run_id="x", lam=1.0)), "line 3: lam must be null for scheme calcium"),
    (json.dumps(good_record(run_id="x", scheme="multitask")), "line 3: lam must be a finite number"),
    (json.dumps(good_record(run_id="x", arch="unet_res", backbone="imagenet")), "line 3: backbone 'imagenet'"),
    (json.dumps(good_record(run_id="x", arch="unet_res", backbone="coco")), "line 3: backbone 'coco'"),
    (json.dumps(good_record(run_id="x", arch="deeplabv3", backbone="voc")), "line 3: backbone 'voc' is unknown"),
    (json.dumps({**good_record(run_id="x"), "lamda": 1}), "line 3: unknown field"),
    ("[1, 2]", "line 3: expected a JSON object"),
])
def test_corrupt_line_is_an_error_with_its_line_number(tmp_path, capsys, bad, message):
    records = grid_records()[:2]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(make_result_line(**r) for r in records) + bad + "\n")
    with pytest.raises(InputError) as error:
        read_results(path)
    assert message in str(error.value)
    assert run_cli(main, [str(tmp_path), "--skip-inference"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} line 3: ") and err.count("\n") == 1
    assert not (tmp_path / "report").exists()


def test_duplicate_runs_are_errors(tmp_path):
    records = grid_records()[:3]
    path = tmp_path / "results.jsonl"
    lines = [make_result_line(**r) for r in records]
    path.write_text("".join(lines) + "\n" + lines[1])  # a blank line is fine, the repeat is not
    with pytest.raises(InputError, match=f"line 5: run_id '{records[1]['run_id']}' already on line 2"):
        read_results(path)
    path.write_text("".join(lines) + make_result_line(**{**records[0], "run_id": "renamed"}))
    with pytest.raises(InputError, match="line 4: run 'renamed' repeats the run on line 1"):
        read_results(path)
    path.write_text("\n")
    with pytest.raises(InputError, match="holds no results"):
        read_results(path)


def test_result_line_round_trip_and_helpers():
    metrics_json = {"calcium": {"summary": {"dice": {"mean": 0.61}, "average_hausdorff_mm": {"mean": float("nan")}}},
                    "wall_lumen_mean": {"summary": {"dice": {"mean": 0.9}, "average_hausdorff_mm": {"mean": 0.1}}},
                    "selection": {"multitask": {"monitor": "val_calcium_dice", "value": 0.66}}}
    metrics = metrics_from_run(metrics_json)
    assert metrics == {"calcium": {"dice": 0.61, "average_hausdorff_mm": None},
                       "wall_lumen_mean": {"dice": 0.9, "average_hausdorff_mm": 0.1}}
    assert validation_calcium_dice(metrics_json) == 0.66
    wall_only = {"selection": {"wall_lumen": {"monitor": "val_wall_lumen_dice", "value": 1}}}
    assert validation_calcium_dice(wall_only) is None
    line = make_result_line(run_id="r", arch="deeplabv3", backbone="imagenet", scheme="multitask", lam=1, repeat=0,
                            fold=2, seed=7, metrics=metrics, run_dir="runs/r", wall_time_s=12.5,
                            val_calcium_dice=0.66)
    assert line.endswith("\n") and "\n" not in line[:-1]
    record = json.loads(line)
    assert set(record) == set(RESULT_FIELDS) and record["lam"] == 1.0
    assert validate_result(record) == record
    with pytest.raises(InputError, match="result of run 'r': lam must be a finite number"):
        make_result_line(**{**record, "lam": None})


def test_cli_writes_the_report(tmp_path, capsys):
    grid = write_results(tmp_path / "grid", grid_records())
    assert run_cli(main, [str(grid), "--skip-inference", "--skip-examples", "--out", str(tmp_path / "r")]) == 0
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"index.md", "table1.md", "table1.csv",
                                                           "welch_tests.csv", "lambda_sweep.png", "results.jsonl"}
    index = (tmp_path / "r" / "index.md").read_text()
    assert "72 runs" in index and "examples.png: not asked for (--skip-examples)" in index
    with pytest.raises(SystemExit) as exit_:
        main([str(grid), "--examples", "0"])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- examples figure

BOTH = ("calcium", "wall_lumen")


def write_predictions(run_dir, records_dir, quality, cases):
    from ivus_tf.data import iterate_frames

    for i, frame in enumerate(iterate_frames(records_dir, cases)):
        truth = frame["calcium_mask"] if frame["calcium_mask"] is not None else np.zeros_like(frame["image"])
        shift = (i * quality) % 5  # different overlaps: varied Dice
        prediction = np.roll(truth, shift, axis=1) * 255
        folder = run_dir / "predictions" / frame["case_id"]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{frame['frame_id']}_calcium.png"), prediction.astype(np.uint8))


def test_examples_figure_from_run_folders(tmp_path, make_records):
    from ivus_tf.baselines import RuleParams, predict_calcium
    from ivus_tf.metrics import dice
    from ivus_tf.report.examples import choose_example_runs, choose_frames
    from ivus_tf.report.stats import select_lambdas

    records_dir = make_records({"c0": [("0", BOTH), ("1", ("calcium",)), ("2", ("wall_lumen",))],
                                "c1": [("0", BOTH), ("1", ("calcium",)), ("2", ("calcium",))]})
    records = grid_records()
    grid = tmp_path / "grid"
    for rid in ("deeplabv3-calcium-r0-f1", "deeplabv3-multitask-lam0.5-r0-f1"):
        run_dir = grid / "runs" / rid
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(f"arch: deeplabv3\ndata: {records_dir}\nwidth: 0.0625\n")
        write_predictions(run_dir, records_dir, 1 if "calcium-" in rid else 2, ["c0", "c1"])
    rule = RuleParams(intensity="raw", bright_threshold=150.0, shadow_threshold=255.0, min_radius_mm=0.0,
                      smoothing_sigma_mm=0.0, shadow_near_mm=0.02, shadow_far_mm=0.1)  # frames 1.28 mm wide
    (run_dir / "metrics.json").write_text(json.dumps({"calcium": {"rule_baseline": {"params": rule.to_dict()}}}))
    write_results(grid, records)
    result = make_report(grid, skip_inference=True, log=lambda text: None)
    assert (grid / "report" / "examples.png").stat().st_size > 5_000
    assert "DeepLabV3 repeat 0 fold 1" in result["made"]["examples.png"]
    pair = choose_example_runs(records, grid / "results.jsonl", select_lambdas(records))
    assert (pair["calcium"]["run_id"], pair["multitask"]["run_id"]) == ("deeplabv3-calcium-r0-f1",
                                                                       "deeplabv3-multitask-lam0.5-r0-f1")
    frames = choose_frames(pair, grid / "results.jsonl", count=4)
    assert len(frames) == 4 and all(f["truth"].any() for f in frames)  # calcium frames only (5 carry it)
    assert all((f["case_id"], f["frame_id"]) != ("c0", "2") for f in frames)
    scores = [f["dice"]["multitask"] for f in frames]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    for f in frames:
        assert f["dice"]["multitask"] == pytest.approx(dice(f["multitask"], f["truth"]))
        assert np.array_equal(f["rule"], predict_calcium(f["image"], f["pixel_spacing_mm"], rule))
        assert f["dice"]["rule"] == pytest.approx(dice(f["rule"], f["truth"]))
    assert any(f["rule"].any() for f in frames) and "the rule baseline fitted on" in result["made"]["examples.png"]


def test_examples_skipped_without_predictions(report):
    _, _, result = report
    assert "no repeat/fold with both a calcium-only and a multi-task run" in result["skipped"]["examples.png"]
    index = (result["out"] / "index.md").read_text()
    assert "## Skipped" in index and "- examples.png: no repeat/fold" in index


# -------------------------------------------------------------------------------------------- inference

@pytest.mark.slow
def test_tiny_inference_measurement(tmp_path):
    from ivus_tf.report.inference import inference_settings, machine_description, measure_inference, write_inference

    records = [r for r in grid_records() if r["arch"] == "unet_res"]
    run_dir = tmp_path / records[0]["run_dir"]
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("arch: unet_res\nwidth: 0.0625\nimage_size: 64\nhead: linear\n")
    settings = inference_settings(records, tmp_path / "results.jsonl")
    assert settings == {"unet_res": {"width": 0.0625, "image_size": 64, "head": "linear", "aspp_rates": None,
                                     "unet_stages": "wide_bottom",  # a config from before the field: the old U-Net
                                     "source": f"config of run {records[0]['run_id']}"}}
    (run_dir / "config.yaml").write_text("arch: unet_res\nwidth: 0.0625\nimage_size: 64\nunet_stages: doubling\n")
    assert inference_settings(records, tmp_path / "results.jsonl")["unet_res"]["unet_stages"] == "doubling"
    rows = measure_inference(settings, calls=2, warmup=1, matmul_size=256, timeout_s=300, log=lambda text: None)
    assert [r.get("error") for r in rows] == [None, None] and [r["batch"] for r in rows] == [1, 12]
    for row in rows:
        assert row["median_s"] > 0 and row["frames_per_s"] == pytest.approx(row["batch"] / row["median_s"])
        assert row["peak_rss_mib"] >= row["rss_model_mib"] > 100 and row["gflop_per_frame"] > 0
    path = write_inference(rows, machine_description(), tmp_path / "inference.md")
    text = path.read_text()
    assert "TensorFlow 2." in text and machine_description()["cpu"] in text
    assert text.count("| U-Net Res | 0.0625 | 64² |") == 2 and math.isfinite(rows[1]["gflop_per_s"])


# ---------------------------------------------------------------------------------------- empty-mask breakdown

def test_empty_frame_breakdown_by_hand(tmp_path):
    """Two calcium-only U-Net runs with hand-made per-frame metrics: the shares, both-present means and medians
    are computed by hand; a run without metrics.json is named and left out."""
    from ivus_tf.report.assemble import make_report

    frames = {
        "r0": [("both_present", 0.8, 0.2), ("both_present", 0.6, 0.4), ("pred_empty", 0.0, 14.5),
               ("both_empty", 1.0, 0.0)],
        "r1": [("both_present", 0.5, 0.3), ("target_empty", 0.0, 14.5)],
    }
    rule_frames = {"r0": [("both_present", 0.4, 1.0), ("pred_empty", 0.0, 14.5)],
                   "r1": [("both_present", 0.6, 0.6), ("both_present", 0.8, 0.2)]}
    grid = tmp_path / "grid"
    records = []
    for repeat, (name, rows) in enumerate(frames.items()):
        record = good_record(run_id=f"unet_res-calcium-{name}", arch="unet_res", backbone="none", scheme="calcium",
                             lam=None, repeat=repeat, fold=0, run_dir=f"runs/{name}")
        records.append(record)
        (grid / "runs" / name).mkdir(parents=True)
        rule = [{"case_id": "c", "frame_id": str(i), "empty_case": case, "dice": dice, "average_hausdorff_mm": ahd}
                for i, (case, dice, ahd) in enumerate(rule_frames[name])]
        (grid / "runs" / name / "metrics.json").write_text(json.dumps({"calcium": {"frames": [
            {"case_id": "c", "frame_id": str(i), "empty_case": case, "dice": dice, "average_hausdorff_mm": ahd}
            for i, (case, dice, ahd) in enumerate(rows)], "rule_baseline": {"frames": rule}}}))
    records.append(good_record(run_id="unet_res-calcium-r2", arch="unet_res", backbone="none", scheme="calcium",
                               lam=None, repeat=2, fold=0, run_dir="runs/r2"))  # no folder
    write_results(grid, records)
    result = make_report(grid, skip_inference=True, skip_examples=True, log=lambda text: None)
    assert "empty_frames.md" in result["made"] and "1 run(s) without metrics.json" in result["made"]["empty_frames.md"]
    text = (grid / "report" / "empty_frames.md").read_text()
    # one empty: r0 1/4, r1 1/2 -> 37.5 ± 17.7 %; Dice both: r0 0.7, r1 0.5 -> 60.0 ± 14.1 %
    # AHD both: r0 0.3, r1 0.3 -> 0.30 ± 0.00; median: r0 median(0.2, 0.4, 14.5, 0) = 0.3, r1 median(0.3, 14.5) = 7.4
    row = next(line for line in text.splitlines() if line.startswith("| U-Net Res"))
    assert row == ("| U-Net Res | calcium only | – | 37.5 ± 17.7 | 60.0 ± 14.1 | 0.30 ± 0.00 | 3.85 ± 5.02 | 2 |")
    assert "Left out (no readable metrics.json in the run folder): unet_res-calcium-r2." in text
    # rule, one value per fold (repeat 0 fold 0, repeat 1 fold 0): one empty 1/2, 0 -> 25.0 ± 35.4; Dice both 0.4,
    # 0.7 -> 55.0 ± 21.2; AHD both 1.0, 0.4 -> 0.70 ± 0.42; median: 7.75, 0.4 -> 4.08 ± 5.20
    row = next(line for line in text.splitlines() if "rule: bright edge + shadow" in line)
    assert row == "| Baselines | rule: bright edge + shadow | – | 25.0 ± 35.4 | 55.0 ± 21.2 | 0.70 ± 0.42 | " \
                  "4.08 ± 5.20 | 2 folds |"


def test_the_report_folder_carries_its_inputs(tmp_path):
    """results.jsonl, each run's config.yaml and metrics.json and the one splits file they name are copied; a run
    without its folder is named in index.md."""
    import yaml

    from ivus_tf.report.assemble import make_report

    grid = tmp_path / "grid"
    splits = tmp_path / "records-splits.json"
    splits.write_text('{"test": ["c"], "repeats": []}')
    records = []
    for repeat in (0, 1):
        name = f"r{repeat}"
        records.append(good_record(run_id=f"unet_res-calcium-{name}", arch="unet_res", backbone="none",
                                   scheme="calcium", lam=None, repeat=repeat, fold=0, run_dir=f"runs/{name}"))
        folder = grid / "runs" / name
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({"scheme": "calcium", "splits": str(splits)}))
        (folder / "metrics.json").write_text(json.dumps({"calcium": {"frames": [], "repeat": repeat}}))
    records.append(good_record(run_id="unet_res-calcium-r2", arch="unet_res", backbone="none", scheme="calcium",
                               lam=None, repeat=2, fold=0, run_dir="runs/r2"))  # no folder
    write_results(grid, records)
    result = make_report(grid, skip_inference=True, skip_examples=True, log=lambda text: None)
    out = grid / "report"
    assert (out / "results.jsonl").read_bytes() == (grid / "results.jsonl").read_bytes()
    assert (out / "splits.json").read_text() == splits.read_text()
    for repeat in (0, 1):
        copied = out / "runs" / f"unet_res-calcium-r{repeat}"
        assert json.loads((copied / "metrics.json").read_text())["calcium"]["repeat"] == repeat
        assert yaml.safe_load((copied / "config.yaml").read_text())["splits"] == str(splits)
    assert not (out / "runs" / "unet_res-calcium-r2").exists()
    assert "2 run(s)" in result["made"]["runs/"] and "not found for unet_res-calcium-r2" in result["made"]["runs/"]
    assert "[splits.json](splits.json)" in (out / "index.md").read_text()


# ----------------------------------------------------------------------------------------------- baselines

def rule_dice(repeat, fold):
    """The rule's test Dice of a fold: the same for every run of the fold (one fit per training set)."""
    return 0.55 + 0.01 * fold - 0.004 * repeat


def records_with_baselines():
    records = grid_records()
    for r in records:
        r["baselines"] = {"rule": {"dice": rule_dice(r["repeat"], r["fold"]),
                                   "average_hausdorff_mm": 0.5 + 0.02 * r["fold"]},
                          "predict_nothing": {"dice": 0.14, "average_hausdorff_mm": 12.5 - 0.1 * r["repeat"]}}
    return records


def test_table1_has_the_rule_row_one_value_per_fold_and_flags_cells_that_do_not_beat_it(tmp_path):
    records = records_with_baselines()
    grid = write_results(tmp_path / "grid", records)
    result = make_report(grid, skip_inference=True, skip_examples=True, log=lambda text: None)
    rows = read_csv(grid / "report" / "table1.csv")
    baselines = {r["scheme"]: r for r in rows if r["kind"] == "baseline"}
    folds = np.array([rule_dice(repeat, fold) for repeat in range(3) for fold in range(3)])
    rule = baselines["rule"]
    assert int(rule["runs"]) == 9 and int(rule["dice_n"]) == 9  # 9 folds, not the 72 runs that share them
    assert float(rule["dice_mean"]) == pytest.approx(folds.mean()) and float(rule["dice_std"]) == pytest.approx(
        folds.std(ddof=1))
    assert float(baselines["predict_nothing"]["average_hausdorff_mm_mean"]) == pytest.approx(12.4)
    assert float(baselines["predict_nothing"]["dice_std"]) == pytest.approx(0.0, abs=1e-12)
    # the rule's mean is 0.558: only DeepLabV3 multi-task (0.62) beats it by 5 points
    models = [r for r in rows if r["kind"] == "model"]
    assert [(r["arch"], r["scheme"]) for r in models if r["beats_rule"] == "True"] == [("deeplabv3", "multitask")]
    assert all(r["beats_rule"] == "False" for r in models if (r["arch"], r["scheme"]) != ("deeplabv3", "multitask"))
    md = (grid / "report" / "table1.md").read_text()
    table = md.split("## Welch")[0]
    assert "| Baselines | rule: bright edge + shadow | – | " + f"{100 * folds.mean():.1f} ± " in table
    assert "| 9 folds |" in table and "| predict nothing | – | 14.0 ± 0.0 |" in table
    assert table.count(" †") == 5 and "† does not beat the rule baseline by ≥ 5 Dice points (5 of 6" in table
    tests = {t["comparison"]: t for t in read_csv(grid / "report" / "welch_tests.csv")}
    test = tests["U-Net Res, calcium only vs rule baseline"]
    cnn = values(records, "unet_res", "calcium", None, "dice")
    assert float(test["dice_p"]) == pytest.approx(scipy_stats.ttest_ind(cnn, folds, equal_var=False).pvalue, rel=1e-9)
    assert float(test["dice_difference"]) == pytest.approx(cnn.mean() - folds.mean())
    assert test["beats_rule"] == "False" and "## Against the rule baseline" in md
    assert len(result["table1"]["rule_tests"]) == 6
    assert "baseline rows (rule, predict nothing)" in result["made"]["table1.md"]


def test_a_grid_without_baselines_has_no_baseline_rows_and_bad_baselines_are_refused(tmp_path, report):
    _, out, result = report
    assert not result["table1"]["baselines"] and not result["table1"]["rule_tests"]
    assert "Baselines" not in (out / "table1.md").read_text() and "†" not in (out / "table1.md").read_text()
    record = {**records_with_baselines()[0]}
    assert validate_result(json.loads(make_result_line(**record)))["baselines"] == record["baselines"]
    with pytest.raises(InputError, match="baselines.rule.dice must be in \\[0, 1\\]"):
        validate_result({**record, "baselines": {"rule": {"dice": 55.0, "average_hausdorff_mm": 0.4}}})
    with pytest.raises(InputError, match="baselines has unknown section\\(s\\) threshold"):
        validate_result({**record, "baselines": {"threshold": {"dice": 0.5, "average_hausdorff_mm": 0.4}}})


def test_baselines_from_run_reads_metrics_json():
    from ivus_tf.grid.results import baselines_from_run

    summary = {"dice": {"mean": 0.7}, "average_hausdorff_mm": {"mean": 0.5}}
    metrics_json = {"calcium": {"summary": {}, "predict_nothing_baseline": {"dice": {"mean": 0.1},
                                                                          "average_hausdorff_mm": {"mean": 14.0}},
                                "rule_baseline": {"params": {}, "summary": summary}}}
    assert baselines_from_run(metrics_json) == {"rule": {"dice": 0.7, "average_hausdorff_mm": 0.5},
                                                "predict_nothing": {"dice": 0.1, "average_hausdorff_mm": 14.0}}
    assert baselines_from_run({"calcium": {"summary": {}}}) is None


def test_committed_phantom_table1_re_derives_from_its_folder(tmp_path):
    """results/phantom_table1_small/ must carry its own basis: the report rebuilt from the folder's results.jsonl
    and run folders reproduces the committed tables (and the README's numbers come from those)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    folder = root / "results" / "phantom_table1_small"
    ran, committed = (yaml.safe_load(path.read_text()) for path in
                      (folder / "grid_config.yaml", root / "configs" / "phantom_table1_small.yaml"))
    assert ran == committed  # the folder is the result of the committed grid file, not of an earlier one
    result = make_report(folder, out=tmp_path / "again", lam=1.0, skip_inference=True, skip_examples=True,
                         log=lambda line: None)
    for name in ("table1.md", "table1.csv", "welch_tests.csv", "empty_frames.md"):
        assert (tmp_path / "again" / name).read_text() == (folder / name).read_text(), name
    runs = {record["run_id"] for record in read_results(folder / "results.jsonl")}
    assert {path.name for path in (folder / "runs").iterdir()} == runs
    assert all((folder / "runs" / run / name).is_file() for run in runs for name in ("config.yaml", "metrics.json"))
    assert (folder / "splits.json").is_file() and result["table1"]["rows"]
