"""Case-wise splits: disjointness, coverage, determinism, stratification, reuse of the file, errors, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ivus_tf.core.errors import InputError
from ivus_tf.splits import (
    fold_cases,
    load_or_create_splits,
    main,
    make_splits,
    read_splits,
    validate_splits,
)

BOTH = ["calcium", "wall_lumen"]


def mixed_cases(n_calcium=6, n_wall_lumen=6, n_both=0) -> dict:
    cases = {f"ca{i:02d}": ["calcium"] for i in range(n_calcium)}
    cases.update({f"wl{i:02d}": ["wall_lumen"] for i in range(n_wall_lumen)})
    cases.update({f"bo{i:02d}": BOTH for i in range(n_both)})
    return cases


def test_folds_are_disjoint_cover_all_cases_and_never_touch_the_test_set():
    cases = mixed_cases(7, 5, 4)
    splits = make_splits(cases, test_fraction=0.25, repeats=4, folds=3, seed=3)
    test = set(splits["test_cases"])
    assert len(test) == 4  # round(0.25 * 16)
    for repeat in range(4):
        folds = [set(f) for f in splits["folds"][repeat]]
        for a in range(3):
            for b in range(a + 1, 3):
                assert not folds[a] & folds[b]
        assert set().union(*folds) | test == set(cases)
        assert sorted(len(f) for f in folds) == [4, 4, 4]
        for fold in range(3):
            train, val, test_cases = fold_cases(splits, repeat, fold)
            assert set(test_cases) == test
            assert not set(train) & test and not set(val) & test and not set(train) & set(val)
            assert set(val) == folds[fold]
            assert set(train) | set(val) | test == set(cases)
    validate_splits(splits)


def test_same_seed_same_splits_other_seed_other_splits():
    cases = mixed_cases(10, 10, 10)
    first = make_splits(cases, seed=7)
    assert make_splits(dict(reversed(list(cases.items()))), seed=7) == first  # input order does not matter
    other = make_splits(cases, seed=8)
    assert (other["test_cases"], other["folds"]) != (first["test_cases"], first["folds"])
    assert first["folds"][0] != first["folds"][1]  # repeats differ
    assert len(first["folds"]) == 10 and all(len(r) == 3 for r in first["folds"])


def test_stratified_test_set_and_folds():
    # 9 calcium-only + 9 wall_lumen-only, 6 test cases: the test set takes 3 of each, leaving 6 + 6, so each of
    # 3 folds gets exactly 2 calcium-only and 2 wall_lumen-only cases, in every repeat.
    splits = make_splits(mixed_cases(9, 9), n_test_cases=6, repeats=5, folds=3, seed=11)
    assert sum(c.startswith("ca") for c in splits["test_cases"]) == 3
    assert sum(c.startswith("wl") for c in splits["test_cases"]) == 3
    for repeat_folds in splits["folds"]:
        for fold in repeat_folds:
            assert sum(c.startswith("ca") for c in fold) == 2
            assert sum(c.startswith("wl") for c in fold) == 2


def test_dealing_carries_on_across_groups_so_fold_sizes_stay_balanced():
    # 4 calcium-only dealt to folds 0,1,2,0; the 2 wall_lumen-only go on at folds 1,2 -> sizes 2/2/2
    # (restarting at fold 0 for each group would give 3/2/1).
    splits = make_splits(mixed_cases(4, 2), test_fraction=0, repeats=3, folds=3)
    assert splits["test_cases"] == []
    for repeat_folds in splits["folds"]:
        assert [len(f) for f in repeat_folds] == [2, 2, 2]
        assert [sum(c.startswith("ca") for c in f) for f in repeat_folds] == [2, 1, 1]


def test_test_set_is_shared_by_both_tasks():
    cases = mixed_cases(5, 5, 10)
    splits = make_splits(cases, test_fraction=0.2, repeats=2, seed=1)
    test = set(splits["test_cases"])
    assert len(test) == 4 and sum(c.startswith("bo") for c in test) == 2  # proportional: 10/20 of 4
    for repeat in range(2):
        for fold in range(3):
            ca_train, ca_val, ca_test = fold_cases(splits, repeat, fold, task="calcium")
            wl_train, wl_val, wl_test = fold_cases(splits, repeat, fold, task="wall_lumen")
            assert set(ca_test) | set(wl_test) == test
            assert set(ca_test) & set(wl_test) == {c for c in test if c.startswith("bo")}
            assert all("calcium" in cases[c] for c in ca_train + ca_val + ca_test)
            # pre-training on wall_lumen never trains on a calcium test case, and vice versa
            assert not set(wl_train + wl_val) & set(ca_test)
            assert not set(ca_train + ca_val) & set(wl_test)


def test_load_or_create_reuses_an_existing_file_unchanged(tmp_path):
    path = tmp_path / "splits.json"
    cases = mixed_cases(6, 6)
    created = load_or_create_splits(path, cases, repeats=3, seed=5)
    text, mtime = path.read_bytes(), path.stat().st_mtime_ns
    assert json.loads(text) == created and read_splits(path) == created
    assert not [p for p in tmp_path.iterdir() if p.name != "splits.json"]  # no temporary file left over
    again = load_or_create_splits(path, dict(reversed(list(cases.items()))), repeats=3, seed=5)
    assert again == created
    assert path.read_bytes() == text and path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"seed": 6}, "seed 6 asked, 5 in the file"),
        ({"repeats": 4}, "num_repeats 4 asked, 3 in the file"),
        ({"folds": 4}, "num_folds 4 asked, 3 in the file"),
        ({"case_tasks": {**mixed_cases(6, 6), "new": ["calcium"]}}, "case(s) not in the file: new"),
        ({"case_tasks": mixed_cases(5, 6)}, "case(s) in the file but not given: ca05"),
        ({"case_tasks": {**mixed_cases(6, 6), "ca00": BOTH}}, "case(s) whose tasks changed: ca00"),
    ],
)
def test_load_or_create_refuses_a_mismatching_file(tmp_path, change, expected):
    path = tmp_path / "splits.json"
    load_or_create_splits(path, mixed_cases(6, 6), repeats=3, seed=5)
    before = path.read_bytes()
    params = {"case_tasks": mixed_cases(6, 6), "repeats": 3, "seed": 5, **change}
    with pytest.raises(InputError) as error:
        load_or_create_splits(path, **params)
    assert expected in str(error.value) and "delete the file" in str(error.value) and "\n" not in str(error.value)
    assert path.read_bytes() == before


def test_a_tampered_file_is_refused(tmp_path):
    path = tmp_path / "splits.json"
    splits = load_or_create_splits(path, mixed_cases(6, 6), repeats=2)
    splits["folds"][1][0].append(splits["test_cases"][0])  # a test case leaks into training
    path.write_text(json.dumps(splits))
    with pytest.raises(InputError, match="repeat 1 fold 0"):
        read_splits(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable splits file"):
        load_or_create_splits(path, mixed_cases(6, 6), repeats=2)


def test_too_few_cases():
    with pytest.raises(InputError, match=r"4 case\(s\) are too few for a test set of 2 and 3 folds.*at least 5"):
        make_splits(mixed_cases(2, 2), n_test_cases=2, folds=3)
    with pytest.raises(InputError, match="too few"):
        make_splits({"a": ["calcium"]}, test_fraction=0, folds=2)  # training part of each fold would be empty
    assert len(make_splits(mixed_cases(3, 2), test_fraction=0.2, repeats=1)["test_cases"]) == 1  # 2 + 3 folds


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"case_tasks": {}}, "non-empty mapping"),
        ({"case_tasks": {"a": "calcium"}}, "tasks must be a list"),
        ({"case_tasks": {"a": ["plaque"]}}, "unknown task"),
        ({"case_tasks": {"a": []}}, "no labelled task"),
        ({"case_tasks": {" a": ["calcium"]}}, "surrounding spaces"),
        ({"case_tasks": {"a\nb": ["calcium"]}}, "control characters"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": float("nan")}, "test_fraction"),
        ({"folds": 1}, "folds must be an integer >= 2"),
        ({"repeats": 0}, "repeats must be an integer >= 1"),
        ({"seed": True}, "seed must be an integer"),
        ({"n_test_cases": -1}, "n_test_cases"),
    ],
)
def test_unsafe_inputs(kwargs, message):
    params = {"case_tasks": mixed_cases(6, 6), **kwargs}
    with pytest.raises(InputError, match=message):
        make_splits(**params)


def test_fold_cases_out_of_range():
    splits = make_splits(mixed_cases(6, 6), repeats=2, folds=3)
    with pytest.raises(InputError, match=r"repeat 2 out of range: the splits have repeats 0\.\.1"):
        fold_cases(splits, 2, 0)
    with pytest.raises(InputError, match=r"fold -1 out of range"):
        fold_cases(splits, 0, -1)
    with pytest.raises(InputError, match="unknown task"):
        fold_cases(splits, 0, 0, task="plaque")


def test_cli_writes_then_reuses(make_records, tmp_path, capsys):
    cases = {f"case{i}": [("0", ("calcium",))] for i in range(4)}
    cases.update({f"wall{i}": [("0", ("wall_lumen",)), ("1", ("calcium", "wall_lumen"))] for i in range(4)})
    records = make_records(cases)
    out = tmp_path / "splits.json"
    argv = ["--records", str(records), "--out", str(out), "--repeats", "2", "--folds", "3", "--n-test-cases", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "written" in printed and "cases: 8 (calcium 4, calcium+wall_lumen 4)" in printed
    splits = read_splits(out)
    assert len(splits["test_cases"]) == 2 and splits["num_repeats"] == 2
    assert main(argv) == 0 and "reused (unchanged)" in capsys.readouterr().out
    assert main([*argv[:-1], "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "n_test_cases 3 asked, 2 in the file" in err
    assert main(["--records", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no index.json" in capsys.readouterr().err


def test_the_papers_test_set_six_whole_cases_carrying_both_labels():
    """Bargsten et al.: 6 test cases that carry both label kinds. Hand-built list: 20 calcium-only, 10 wall-lumen-only
    and 8 dual-labelled cases; a proportional test set of 6 would take 3 calcium-only and 2 wall-lumen-only cases."""
    cases = mixed_cases(20, 10, 8)
    proportional = make_splits(cases, n_test_cases=6, repeats=10, folds=3)
    assert sum(c.startswith("bo") for c in proportional["test_cases"]) < 6  # what the flag changes
    splits = make_splits(cases, n_test_cases=6, repeats=10, folds=3, test_both_labels=True)
    assert len(splits["test_cases"]) == 6
    assert all(cases[c] == BOTH and c.startswith("bo") for c in splits["test_cases"])
    assert splits["test_both_labels"] is True and splits["n_test_cases"] == 6
    assert len(splits["folds"]) == 10 and all(len(r) == 3 for r in splits["folds"])
    for repeat in splits["folds"]:
        assert sorted(c for fold in repeat for c in fold) == sorted(set(cases) - set(splits["test_cases"]))
    # a fraction works too: round(0.2 * 38) = 8 cases, all 8 dual-labelled ones
    by_fraction = make_splits(cases, test_fraction=0.2, repeats=1, test_both_labels=True)
    assert sorted(by_fraction["test_cases"]) == sorted(c for c in cases if c.startswith("bo"))


def test_too_few_cases_carrying_both_labels_is_one_line():
    with pytest.raises(InputError) as error:
        make_splits(mixed_cases(20, 10, 5), n_test_cases=6, test_both_labels=True)
    message = str(error.value)
    assert message == ("a test set of 6 case(s) carrying both calcium and wall-lumen labels needs 6 such cases, but "
                       "only 5 of the 35 cases carry both; lower the test set size or drop test_both_labels")
    with pytest.raises(InputError, match="only 0 of the 12 cases carry both"):
        make_splits(mixed_cases(6, 6), n_test_cases=1, test_both_labels=True)


def test_splits_file_records_test_both_labels_and_refuses_a_mismatch(tmp_path):
    path = tmp_path / "splits.json"
    cases = mixed_cases(6, 6, 4)
    load_or_create_splits(path, cases, n_test_cases=2, repeats=2, test_both_labels=True)
    written = json.loads(path.read_text())
    assert written["test_both_labels"] is True and written["n_test_cases"] == 2
    assert all(cases[c] == BOTH for c in written["test_cases"])
    before = path.read_bytes()
    with pytest.raises(InputError, match="test_both_labels False asked, True in the file.*delete the file"):
        load_or_create_splits(path, cases, n_test_cases=2, repeats=2)
    with pytest.raises(InputError, match="n_test_cases 3 asked, 2 in the file"):
        load_or_create_splits(path, cases, n_test_cases=3, repeats=2, test_both_labels=True)
    assert path.read_bytes() == before
    # a file written before the key existed was made without it: it reads as false
    old = {k: v for k, v in written.items() if k != "test_both_labels"}
    path.write_text(json.dumps(old))
    assert read_splits(path)["test_both_labels"] is False
    with pytest.raises(InputError, match="test_both_labels True asked, False in the file"):
        load_or_create_splits(path, cases, n_test_cases=2, repeats=2, test_both_labels=True)
    # a file claiming it while a test case lacks a label is tampered with
    swap = next(c for c in cases if cases[c] != BOTH)
    path.write_text(json.dumps({**written, "test_cases": [written["test_cases"][0], swap]}))
    with pytest.raises(InputError, match=f"test case\\(s\\) {swap} do not carry both labels"):
        read_splits(path)


def test_cli_test_both_labels(make_records, tmp_path, capsys):
    cases = {f"case{i}": [("0", ("calcium",))] for i in range(4)}
    cases.update({f"both{i}": [("0", ("wall_lumen",)), ("1", ("calcium", "wall_lumen"))] for i in range(4)})
    records = make_records(cases)
    out = tmp_path / "splits.json"
    argv = ["--records", str(records), "--out", str(out), "--repeats", "1", "--n-test-cases", "3",
            "--test-both-labels"]
    assert main(argv) == 0
    assert "test: 3 case(s) carrying both labels" in capsys.readouterr().out
    assert all(c.startswith("both") for c in read_splits(out)["test_cases"])
    assert main([*argv[:-2], "5", "--test-both-labels", "--out", str(tmp_path / "other.json")]) == 2
    assert "only 4 of the 8 cases carry both" in capsys.readouterr().err


def test_module_does_not_import_tensorflow():
    code = "import sys, ivus_tf.splits; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
