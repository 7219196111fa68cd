"""Case-wise splits: a fixed test set, then R repeats of K-fold cross-validation over the remaining cases.

Frames of one pullback are strongly correlated, so every split is by case (patient/pullback), never by frame.
Splits are made once, seeded, written to JSON and reused (nnU-Net's `splits_final.json`), so every run of a grid
sees the same folds; one file serves both tasks, so pre-training on one never sees a test case of the other. Cases
are stratified by the labels they carry; the random draws are stable across Python and NumPy versions, so a file
can be regenerated exactly. The paper's test set: `n_test_cases=6, test_both_labels=True` (configs/paper.yaml).
Stratification and the file format: docs/data.md#case-wise-splits. No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ivus_tf.core.atomic import atomic_write_text
from ivus_tf.core.errors import ArgumentParser, InputError, run_cli
from ivus_tf.core.vocab import TASKS, check_task

SPLITS_VERSION = 1
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_REPEATS = 10
DEFAULT_FOLDS = 3
PARAM_KEYS = ("seed", "test_fraction", "n_test_cases", "num_repeats", "num_folds", "test_both_labels")
BOTH_LABELS = "+".join(TASKS)  # the task signature of a case carrying calcium and wall-lumen labels


def task_signature(tasks: Sequence[str]) -> str:
    """The stratum of a case: its tasks, sorted and joined by '+' (e.g. 'calcium+wall_lumen')."""
    return "+".join(sorted(set(tasks)))


def case_tasks_from_index(index: Mapping[str, Any]) -> dict[str, list[str]]:
    """`{case_id: tasks}` from an `index.json` dict (`tfrecords_builder.index.read_index`)."""
    return {case_id: list(case.get("tasks", [])) for case_id, case in index["cases"].items()}


def _check_case_tasks(case_tasks: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if not isinstance(case_tasks, Mapping) or not case_tasks:
        raise InputError("splits need a non-empty mapping of case id -> tasks")
    checked = {}
    for case_id, tasks in case_tasks.items():
        if not isinstance(case_id, str) or not case_id.strip() or case_id != case_id.strip():
            raise InputError(f"case id {case_id!r} is not a non-empty string without surrounding spaces")
        if not case_id.isprintable():
            raise InputError(f"case id {case_id!r} holds control characters")
        if isinstance(tasks, str) or not isinstance(tasks, Sequence):
            raise InputError(f"case {case_id!r}: tasks must be a list of task names, got {tasks!r}")
        for task in tasks:
            check_task(task, f"case {case_id!r}")
        if not tasks:
            raise InputError(f"case {case_id!r} carries no labelled task; only labelled cases can be split")
        checked[case_id] = sorted(set(tasks))
    return dict(sorted(checked.items()))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_params(test_fraction, n_test_cases, repeats, folds, seed, test_both_labels=False) -> dict:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not math.isfinite(test_fraction) or not 0 <= test_fraction < 1:
        raise InputError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if n_test_cases is not None:
        _check_int("n_test_cases", n_test_cases, 0)
    if not isinstance(test_both_labels, bool):
        raise InputError(f"test_both_labels must be true or false, got {test_both_labels!r}")
    return {
        "seed": _check_int("seed", seed, 0),
        "test_fraction": float(test_fraction),
        "n_test_cases": n_test_cases,
        "num_repeats": _check_int("repeats", repeats, 1),
        "num_folds": _check_int("folds", folds, 2),
        "test_both_labels": test_both_labels,
    }


def _shuffled(items: Sequence[str], seed: int, *purpose: object) -> list[str]:
    """`items` in a seeded order that depends only on (seed, purpose), on any Python version."""
    digest = hashlib.sha256(json.dumps([seed, *purpose]).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


def _test_quotas(sizes: Mapping[str, int], n_test: int) -> dict[str, int]:
    """Split `n_test` over the strata in proportion to their sizes (largest remainder; ties: larger, then name)."""
    total = sum(sizes.values())
    exact = {sig: n_test * size / total for sig, size in sizes.items()}
    quotas = {sig: math.floor(value) for sig, value in exact.items()}
    leftover = n_test - sum(quotas.values())
    order = sorted(sizes, key=lambda sig: (-(exact[sig] - quotas[sig]), -sizes[sig], sig))
    for sig in order[:leftover]:
        quotas[sig] += 1
    return quotas


def make_splits(
    case_tasks: Mapping[str, Sequence[str]],
    test_fraction: float = DEFAULT_TEST_FRACTION,
    n_test_cases: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    test_both_labels: bool = False,
) -> dict:
    """A fixed test set and `repeats` x `folds`-fold cross-validation folds over the other cases.

    `n_test_cases`, when given, overrides `test_fraction`; otherwise the test set holds
    round(test_fraction * cases) cases, at least one when `test_fraction` > 0. With `test_both_labels` every test
    case carries calcium and wall-lumen labels.
    """
    cases = _check_case_tasks(case_tasks)
    params = _check_params(test_fraction, n_test_cases, repeats, folds, seed, test_both_labels)
    n_cases, n_folds = len(cases), params["num_folds"]
    if n_test_cases is not None:
        n_test = n_test_cases
    else:
        n_test = 0 if test_fraction == 0 else max(1, math.floor(test_fraction * n_cases + 0.5))
    if n_cases - n_test < n_folds:
        raise InputError(
            f"{n_cases} case(s) are too few for a test set of {n_test} and {n_folds} folds of at least one case each "
            f"(every fold is also trained on the others); need at least {n_test + n_folds} cases, "
            "or lower the test fraction or the number of folds"
        )
    strata: dict[str, list[str]] = {}
    for case_id, tasks in cases.items():
        strata.setdefault(task_signature(tasks), []).append(case_id)
    strata = dict(sorted(strata.items()))
    if test_both_labels:
        both = len(strata.get(BOTH_LABELS, []))
        if both < n_test:
            raise InputError(f"a test set of {n_test} case(s) carrying both calcium and wall-lumen labels needs "
                             f"{n_test} such cases, but only {both} of the {n_cases} cases carry both; lower the "
                             "test set size or drop test_both_labels")
        quotas = {sig: n_test if sig == BOTH_LABELS else 0 for sig in strata}
    else:
        quotas = _test_quotas({sig: len(members) for sig, members in strata.items()}, n_test)
    test_cases, remaining = [], {}
    for sig, members in strata.items():
        order = _shuffled(members, params["seed"], "test", sig)
        test_cases += order[: quotas[sig]]
        remaining[sig] = sorted(order[quotas[sig]:])
    all_folds = []
    for repeat in range(params["num_repeats"]):
        repeat_folds: list[list[str]] = [[] for _ in range(n_folds)]
        position = 0
        for sig, members in remaining.items():
            for case_id in _shuffled(members, params["seed"], "cv", repeat, sig):
                repeat_folds[position % n_folds].append(case_id)
                position += 1
        all_folds.append([sorted(fold) for fold in repeat_folds])
    return {"version": SPLITS_VERSION, **params, "case_tasks": cases, "test_cases": sorted(test_cases),
            "folds": all_folds}


def validate_splits(splits: Any, source: str = "splits") -> dict:
    """Check the structure and the case-wise guarantees of a splits dict; InputError naming `source` if broken."""
    def fail(problem: str):
        raise InputError(f"{source}: {problem}; delete the file so it is made again")

    if not isinstance(splits, dict) or splits.get("version") != SPLITS_VERSION:
        version = splits.get("version") if isinstance(splits, dict) else None
        fail(f"not a splits file of version {SPLITS_VERSION} (version {version!r})")
    splits.setdefault("test_both_labels", False)  # written before the key existed: made without it
    missing = [k for k in (*PARAM_KEYS, "case_tasks", "test_cases", "folds") if k not in splits]
    if missing:
        fail(f"missing key(s) {', '.join(missing)}")
    def names(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value) \
            and len(set(value)) == len(value)

    if not isinstance(splits["case_tasks"], dict):
        fail("case_tasks is not a mapping")
    cases, folds = set(splits["case_tasks"]), splits["folds"]
    if not isinstance(folds, list) or len(folds) != splits["num_repeats"]:
        fail(f"expected {splits['num_repeats']} repeats of folds")
    if not names(splits["test_cases"]):
        fail("test_cases is not a list of distinct case ids")
    test = set(splits["test_cases"])
    if splits["test_both_labels"]:
        lacking = sorted(c for c in test if sorted(splits["case_tasks"].get(c, [])) != sorted(TASKS))
        if lacking:
            fail(f"test_both_labels, but test case(s) {', '.join(lacking)} do not carry both labels")
    for repeat, repeat_folds in enumerate(folds):
        if not isinstance(repeat_folds, list) or len(repeat_folds) != splits["num_folds"]:
            fail(f"repeat {repeat}: expected {splits['num_folds']} folds")
        seen: set[str] = set()
        for fold, members in enumerate(repeat_folds):
            if not names(members) or not members or seen & set(members) or test & set(members):
                fail(f"repeat {repeat} fold {fold} is empty or shares cases with another fold or the test set")
            seen |= set(members)
        if seen | test != cases:
            fail(f"repeat {repeat}: folds and test set do not cover exactly the listed cases")
    return splits


def read_splits(path: str | os.PathLike) -> dict:
    """Load and check a splits file."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable splits file ({error})") from error
    return validate_splits(splits, str(path))


def write_splits(path: str | os.PathLike, splits: Mapping) -> Path:
    """Write `splits` as JSON atomically (temporary file in the same folder, then `os.replace`)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the splits, e.g. {path / 'splits.json'}")
    return atomic_write_text(path, _format(splits))


def _format(splits: Mapping) -> str:
    """JSON with one line per parameter, per case and per repeat, so the file reads (and diffs) well."""
    def nested(items: list[str]) -> str:
        return "{\n" + ",\n".join(items) + "\n }" if items else "{}"

    lines = []
    for key, value in splits.items():
        if key == "case_tasks":
            text = nested([f"  {json.dumps(c)}: {json.dumps(t)}" for c, t in value.items()])
        elif key == "folds":
            text = "[\n" + ",\n".join(f"  {json.dumps(r)}" for r in value) + "\n ]"
        else:
            text = json.dumps(value)
        lines.append(f" {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _differences(existing: Mapping, wanted: Mapping) -> list[str]:
    diffs = [f"{key} {wanted[key]!r} asked, {existing[key]!r} in the file"
             for key in PARAM_KEYS if existing[key] != wanted[key]]
    old, new = existing["case_tasks"], wanted["case_tasks"]

    def listing(names: set[str]) -> str:
        shown = sorted(names)
        return ", ".join(shown[:5]) + (f", ... ({len(shown)} in all)" if len(shown) > 5 else "")

    if set(new) - set(old):
        diffs.append(f"case(s) not in the file: {listing(set(new) - set(old))}")
    if set(old) - set(new):
        diffs.append(f"case(s) in the file but not given: {listing(set(old) - set(new))}")
    changed = {c for c in set(old) & set(new) if sorted(old[c]) != sorted(new[c])}
    if changed:
        diffs.append(f"case(s) whose tasks changed: {listing(changed)}")
    return diffs


def load_or_create_splits(
    path: str | os.PathLike,
    case_tasks: Mapping[str, Sequence[str]],
    test_fraction: float = DEFAULT_TEST_FRACTION,
    n_test_cases: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    test_both_labels: bool = False,
) -> dict:
    """Reuse the splits at `path` if they were made for these cases and parameters; otherwise make and write them.

    An existing file that does not match is never replaced silently: InputError says what differs.
    """
    path = Path(path)
    wanted = {"case_tasks": _check_case_tasks(case_tasks),
              **_check_params(test_fraction, n_test_cases, repeats, folds, seed, test_both_labels)}
    if path.exists():
        existing = read_splits(path)
        diffs = _differences(existing, wanted)
        if diffs:
            raise InputError(f"{path}: splits were made for a different setup ({'; '.join(diffs)}); "
                             "delete the file to make new splits, or pass another path")
        return existing
    splits = make_splits(case_tasks, test_fraction, n_test_cases, repeats, folds, seed, test_both_labels)
    write_splits(path, splits)
    return splits


def fold_cases(splits: Mapping, repeat: int, fold: int, task: str | None = None
               ) -> tuple[list[str], list[str], list[str]]:
    """(train, validation, test) case ids of `fold` in `repeat`: fold `fold` validates, the other folds train.

    With `task`, only cases carrying that task are returned (the test set stays the one shared by both tasks).
    """
    num_repeats, num_folds = splits["num_repeats"], splits["num_folds"]
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 0 <= repeat < num_repeats:
        raise InputError(f"repeat {repeat!r} out of range: the splits have repeats 0..{num_repeats - 1}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < num_folds:
        raise InputError(f"fold {fold!r} out of range: the splits have folds 0..{num_folds - 1}")
    if task is not None:
        check_task(task)
    repeat_folds = splits["folds"][repeat]
    train = sorted(c for k, members in enumerate(repeat_folds) if k != fold for c in members)
    val, test = sorted(repeat_folds[fold]), sorted(splits["test_cases"])
    if task is not None:
        carries = {c for c, tasks in splits["case_tasks"].items() if task in tasks}
        train, val, test = ([c for c in group if c in carries] for group in (train, val, test))
    return train, val, test


def summary(splits: Mapping) -> str:
    """A few lines describing `splits` for the console."""
    cases = splits["case_tasks"]
    strata: dict[str, int] = {}
    for tasks in cases.values():
        strata[task_signature(tasks)] = strata.get(task_signature(tasks), 0) + 1
    sizes = "/".join(str(len(fold)) for fold in splits["folds"][0])
    return "\n".join([
        f"cases: {len(cases)} ({', '.join(f'{sig} {n}' for sig, n in sorted(strata.items()))})",
        f"test: {len(splits['test_cases'])} case(s){' carrying both labels' if splits.get('test_both_labels') else ''}"
        f", fixed: {', '.join(splits['test_cases']) or '-'}",
        f"cross-validation: {splits['num_repeats']} repeat(s) x {splits['num_folds']} folds "
        f"(fold sizes {sizes}), seed {splits['seed']}",
    ])


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="python -m ivus_tf.splits", description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="records folder (reads its index.json)")
    parser.add_argument("--out", required=True, help="splits JSON to write, or to reuse if it exists")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, metavar="F",
                      help=f"share of cases in the fixed test set (default {DEFAULT_TEST_FRACTION})")
    size.add_argument("--n-test-cases", type=int, default=None, metavar="N", help="test set size in cases")
    parser.add_argument("--test-both-labels", action="store_true",
                        help="test cases must carry calcium and wall-lumen labels (the paper: 6 such cases)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, metavar="R",
                        help=f"cross-validation repeats (default {DEFAULT_REPEATS})")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, metavar="K",
                        help=f"folds per repeat (default {DEFAULT_FOLDS})")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default 0)")
    args = parser.parse_args(argv)
    from tfrecords_builder.index import read_index

    case_tasks = case_tasks_from_index(read_index(args.records))
    existed = Path(args.out).exists()
    splits = load_or_create_splits(args.out, case_tasks, args.test_fraction, args.n_test_cases, args.repeats,
                                   args.folds, args.seed, args.test_both_labels)
    print(f"{args.out}: {'reused (unchanged)' if existed else 'written'}")
    print(summary(splits))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
