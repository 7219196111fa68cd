"""`python -m ivus_tf.report GRID_DIR`: Table 1, the lambda sweep, example contours and inference timings.

A thin CLI over `ivus_tf.report.make_report`; see `ivus_tf.report.assemble` for what is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, run_cli


def parse_args(argv: Sequence[str] | None = None):
    parser = ArgumentParser(prog="python -m ivus_tf.report",
                            description="Report of a cross-validation grid (Bargsten et al. 2021, Table 1 and "
                                        "Figures 3-4) from GRID_DIR/results.jsonl into GRID_DIR/report/.")
    parser.add_argument("grid_dir", metavar="GRID_DIR", help="the grid folder (holds results.jsonl)")
    parser.add_argument("--results", help="the results file (default: GRID_DIR/results.jsonl)")
    parser.add_argument("--out", help="the report folder (default: GRID_DIR/report; replaced if it exists)")
    parser.add_argument("--lambda", dest="lam", type=float, default=None,
                        help="multi-task lambda of Table 1 (default: the best mean validation calcium Dice)")
    parser.add_argument("--examples", type=int, default=4, metavar="N",
                        help="test frames in examples.png (default 4)")
    parser.add_argument("--skip-examples", action="store_true", help="do not draw examples.png")
    parser.add_argument("--skip-inference", action="store_true",
                        help="do not measure inference time and memory (the slow part: a few minutes at full size)")
    parser.add_argument("--inference-calls", type=int, default=5, metavar="N",
                        help="timed predict_on_batch calls per measurement (default 5, after 2 warm-up calls)")
    args = parser.parse_args(argv)
    if args.examples < 1 or args.inference_calls < 1:
        parser.error("--examples and --inference-calls must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from ivus_tf.report.assemble import make_report

    args = parse_args(argv)
    make_report(args.grid_dir, results=args.results, out=args.out, lam=args.lam, skip_inference=args.skip_inference,
                skip_examples=args.skip_examples, example_frames=args.examples,
                inference_calls=args.inference_calls, log=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
