"""`python -m ivus_tf.train`: train one model of Bargsten et al. (CDBME 2021) under one scheme, one fold.

    python -m ivus_tf.train --scheme {calcium,pretrain,multitask} [--arch deeplabv3|unet_res] [--config PATH.yaml]
        [--data RECORDS_DIR] [--out RUN_DIR] [--lambda L] [--repeat R --fold K] [--epochs N] [--batch-size B]
        [--width W] [--image-size S] [--seed S] [--pretrain-epochs N] [--freeze-encoder-epochs N]
        [--steps-per-epoch N] [--patience N] [--save-predictions] [--strategy none|mirrored|multiworker]
        [--set KEY=VALUE ...]

Settings come from the defaults (the paper's), then `--config` (a flat YAML of `TrainConfig` fields, see
`ivus_tf/training/config.py` and `configs/`), then the flags; `--set KEY=VALUE` sets any other field (VALUE is
read as YAML: `--set learning_rate=1e-3`, `--set aspp_rates=[6,12,18]`). Without `--data` it trains on the
embedded phantom (built into a cache folder on first use); without `--out` it writes under `runs/`. Starting an
interrupted run again resumes it; a finished run is reported, not retrained. Exit status: 0 done, 2 bad input
(one line, before anything trains), 3 training failed (a non-finite loss), 130 interrupted.

`--strategy mirrored` trains on every GPU of this machine, `--strategy multiworker` on the machines of
`TF_CONFIG` (start the same command on each); `batch_size` is the global batch (`ivus_tf.training.distribute`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, InputError, run_cli
from ivus_tf.core.vocab import ARCHS, SCHEMES
from ivus_tf.training.distribute import STRATEGIES

# flag -> TrainConfig field, for the flags that map one to one
FLAGS = {"scheme": "scheme", "arch": "arch", "data": "data", "out": "out", "lam": "lam", "repeat": "repeat",
         "fold": "fold", "epochs": "epochs", "batch_size": "batch_size", "width": "width", "image_size": "image_size",
         "seed": "seed", "pretrain_epochs": "pretrain_epochs", "freeze_encoder_epochs": "freeze_encoder_epochs",
         "steps_per_epoch": "steps_per_epoch", "patience": "patience", "save_predictions": "save_predictions",
         "strategy": "strategy"}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m ivus_tf.train", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--scheme", choices=SCHEMES, help="training scheme (default: calcium, or the config's)")
    parser.add_argument("--arch", choices=ARCHS, help="architecture (default: deeplabv3, or the config's)")
    parser.add_argument("--config", help="flat YAML of TrainConfig fields (e.g. configs/quickstart.yaml)")
    parser.add_argument("--data", help="records folder (default: the embedded phantom, cached)")
    parser.add_argument("--out", help="run folder (default: runs/<scheme>-<arch>-r<R>f<K>-<hash>)")
    parser.add_argument("--lambda", dest="lam", type=float, help="multitask loss weight of calcium (field lam)")
    parser.add_argument("--repeat", type=int, help="cross-validation repeat (0-based)")
    parser.add_argument("--fold", type=int, help="validation fold of that repeat (0-based)")
    parser.add_argument("--epochs", type=int, help="epochs (calcium / multitask phase)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--width", type=float, help="channel width multiplier (1.0: ~40 M parameters)")
    parser.add_argument("--image-size", type=int, help="frames are resized to S x S")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--pretrain-epochs", type=int, help="epochs of the wall-lumen phase of pretrain")
    parser.add_argument("--freeze-encoder-epochs", type=int, help="pretrain: fine-tune with a frozen encoder first")
    parser.add_argument("--steps-per-epoch", type=int, help="0: one pass over the training frames")
    parser.add_argument("--strategy", choices=STRATEGIES,
                        help="tf.distribute: mirrored = all GPUs here, multiworker = the machines of TF_CONFIG")
    parser.add_argument("--patience", type=int, help="early stopping patience in epochs (0: off)")
    parser.add_argument("--save-predictions", action="store_true", default=None,
                        help="write the test predictions (PNG, original resolution) to RUN_DIR/predictions")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="set any TrainConfig field (VALUE read as YAML); repeatable")
    return parser


def overrides_from_args(args) -> dict:
    """{field: value} of the flags given on the command line (flags left out change nothing)."""
    from ivus_tf.core.config import parse_yaml

    overrides = {}
    for setting in args.settings:
        key, sep, text = setting.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {setting!r}: expected KEY=VALUE")
        value = parse_yaml(text, f"--set {setting!r}")
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        overrides[key.strip()] = value
    for flag, field in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    return overrides


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from ivus_tf.training.config import load_config

    config = load_config(args.config, overrides_from_args(args))
    from ivus_tf.training.callbacks import TrainingError
    from ivus_tf.training.run import run_training

    try:
        run_training(config)
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
