"""`python -m ivus_tf.shift RUN_DIR|MODEL.keras|EXPORT_DIR [--preset shifted] [--cases 12] [--frames-per-case 10]
[--seed 1000] [--out DIR]`: the shift test (`ivus_tf.shift.score_on_preset`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, non_negative_float_arg, positive_int_arg, run_cli
from ivus_tf.measurements import DEFAULT_ARC_GAP_DEG

ENGINES = ("auto", "onnxruntime", "tensorflow")


def parse_args(argv: Sequence[str] | None = None):
    from ivus_tf.shift.testset import DEFAULT_SEED
    from tfrecords_builder.phantom import PRESETS

    parser = ArgumentParser(
        prog="python -m ivus_tf.shift",
        description="Score a trained model on phantom frames rendered by a scanner it never saw (preset shifted), "
                    "next to the same vessels rendered as in training and the predict-nothing and rule floors; "
                    "writes shift.json and shift.md.")
    parser.add_argument("model", help="a training run folder, a .keras file or an export folder (NAME or NAME/V)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="shifted",
                        help="phantom preset to test on (default shifted: held out, no recipe trains on it)")
    parser.add_argument("--reference-preset", choices=sorted(PRESETS),
                        help="in-distribution preset (default: the phantom the run trained on, else randomized)")
    parser.add_argument("--cases", type=positive_int_arg, default=12, help="pullbacks per test set (default 12)")
    parser.add_argument("--frames-per-case", type=positive_int_arg, default=10,
                        help="frames per pullback (default 10)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"test-set seed (default {DEFAULT_SEED}; must differ from the training phantom's)")
    parser.add_argument("--image-size", type=positive_int_arg,
                        help="fix the test frames' size in pixels (default: each preset's own sizes)")
    parser.add_argument("--batch-size", type=positive_int_arg, default=8, help="frames per model call (default 8)")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="for an export folder (default auto)")
    parser.add_argument("--postprocess", help="mask cleaning: default, none or a YAML file (default: the run's "
                                              "own setting, else default)")
    parser.add_argument("--arc-gap-deg", type=non_negative_float_arg, default=DEFAULT_ARC_GAP_DEG,
                        help=f"calcium arc gap bridging in degrees, 0 = off (default {DEFAULT_ARC_GAP_DEG:g})")
    parser.add_argument("--out", help="folder for shift.json and shift.md (default: the run folder)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ivus_tf.shift.score import score_on_preset

    score_on_preset(args.model, args.preset, args.cases, args.frames_per_case, args.seed, args.out,
                    reference_preset=args.reference_preset, image_size=args.image_size, batch_size=args.batch_size,
                    engine=args.engine, postprocess=args.postprocess, arc_gap_deg=args.arc_gap_deg,
                    log=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
