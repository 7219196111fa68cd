"""`python -m ivus_tf.grid`: run a cross-validation grid of training runs into GRID_DIR/results.jsonl.

    python -m ivus_tf.grid --config configs/paper_table1.yaml --out GRID_DIR [--shard I/N] [--devices 0,1,...]
        [--strategy none|mirrored|multiworker] [--list] [--verbose]

The grid YAML (`ivus_tf.grid.config`) expands into runs (model x scheme x lambda x repeat x fold), each one call
of `run_training` into GRID_DIR/runs/<run_id>, with one line per finished run appended to GRID_DIR/results.jsonl
(`python -m ivus_tf.report GRID_DIR` makes Table 1 from it). Starting the same command again skips recorded runs
and resumes an interrupted one. `--shard I/N` runs every N-th run from I (a Slurm array or Kubernetes indexed
job: one shard per task, no coordinator); `--devices` runs one worker per GPU on this machine; `--strategy` trains
each run with tf.distribute. While a run trains the console gets its epoch and ETA about once a minute. Exit status:
0 done, 2 bad input (one line, before any run starts), 3 some run's loss became non-finite (the others ran),
130 interrupted by Ctrl-C, 143 stopped by SIGTERM (Slurm, Kubernetes): both after one "interrupted" line saying
how far the grid got; the same command resumes it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, InputError, run_cli
from ivus_tf.grid.config import STRATEGIES, parse_shard


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ivus_tf.grid", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--config", required=True, help="grid YAML (e.g. configs/paper_table1.yaml)")
    parser.add_argument("--out", required=True, metavar="GRID_DIR", help="grid folder: results.jsonl, runs/, logs/")
    parser.add_argument("--shard", default="0/1", metavar="I/N", help="run every N-th run starting at I (0-based)")
    parser.add_argument("--devices", metavar="0,1,...",
                        help="one worker per GPU on this machine ('cpu' for a worker without GPU)")
    parser.add_argument("--strategy", choices=STRATEGIES,
                        help="tf.distribute strategy for every run (default: the grid config's, else none)")
    parser.add_argument("--list", action="store_true", help="list this shard's runs and whether they are recorded")
    parser.add_argument("--verbose", action="store_true", help="show the training output, not only the grid lines")
    return parser


def _list(args, shard) -> int:
    from ivus_tf.grid.config import expand_grid, load_grid_config, shard_runs
    from ivus_tf.grid.ledger import read_ledger

    grid, base = load_grid_config(args.config)
    runs = shard_runs(expand_grid(grid, base, args.out, args.config, args.strategy), *shard)
    recorded = {r["run_id"] for r in read_ledger(args.out)}
    for run in runs:
        print(f"{run.run_id}\t{'recorded' if run.run_id in recorded else 'to run'}")
    print(f"{len(runs)} runs, {sum(r.run_id in recorded for r in runs)} recorded", file=sys.stderr)
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    shard = parse_shard(args.shard)
    if args.list:
        return _list(args, shard)
    from ivus_tf.grid.runner import prepare_grid, run_grid

    if args.devices is not None:
        from ivus_tf.grid.devices import parse_devices, run_devices

        devices = parse_devices(args.devices)
        plan = prepare_grid(args.config, args.out, shard, args.strategy)  # errors once, phantom built once
        if plan.strategy != "none":
            raise InputError(f"--devices runs one single-device run per device; strategy {plan.strategy!r} spreads "
                             "one run over devices itself: use one or the other")
        worker = ["--config", args.config, "--out", args.out, "--shard", args.shard] + (
            ["--verbose"] if args.verbose else [])
        return run_devices(devices, worker)
    summary = run_grid(args.config, args.out, shard, args.strategy, verbose=args.verbose)
    return 3 if summary["failed"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
