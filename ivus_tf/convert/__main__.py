"""`python -m ivus_tf.convert torchvision-deeplabv3 CHECKPOINT.pth --out FILE.keras [--overwrite] [--no-check]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, run_cli


def parse_args(argv: Sequence[str] | None = None):
    parser = ArgumentParser(prog="python -m ivus_tf.convert",
                            description="Convert pre-trained weights of another framework into a Keras file.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    deeplab = commands.add_parser(
        "torchvision-deeplabv3",
        help="torchvision's deeplabv3_resnet50 state dict (.pth) -> .keras (RGB NHWC in, logits NHWC out)",
        description="Read a torchvision deeplabv3_resnet50 checkpoint (weights only: nothing in the file is run), "
                    "build the same network in Keras, check its logits against torchvision's and write it as "
                    ".keras, for build_model('deeplabv3', ..., backbone_weights=FILE.keras). See docs/convert.md.")
    deeplab.add_argument("checkpoint", help="e.g. deeplabv3_resnet50_coco-cd0a2569.pth (a state dict, or a "
                                            "checkpoint with one under 'model' or 'state_dict')")
    deeplab.add_argument("--out", required=True, help="the .keras file to write")
    deeplab.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    deeplab.add_argument("--no-check", action="store_true",
                         help="skip the comparison with torchvision's own model (the safe-mode reload check stays)")
    return parser.parse_args(argv)


def describe(info: dict) -> list[str]:
    skipped = f" ({info['skipped']} aux_classifier / num_batches_tracked entries skipped)" if info["skipped"] else ""
    lines = [f"read {info['checkpoint']}: {info['tensors']} tensors{skipped}",
             f"built torchvision's deeplabv3_resnet50 in Keras: {info['num_classes']} classes, "
             f"{info['parameters'] / 1e6:.2f} M parameters"]
    shape = "x".join(map(str, info["check_input_shape"]))
    if "max_abs_logit_difference" in info:
        lines.append(f"checked against torchvision {info['torchvision_version']}: max |logit difference| "
                     f"{info['max_abs_logit_difference']:.2e} on a random {shape} input")
    elif "torchvision_check" in info:
        lines.append(f"check against torchvision {info['torchvision_check']}")
    lines += [f"checked the written file in Keras' safe mode: max |logit difference| "
              f"{info['reload_max_abs_difference']:.1e}",
              f"wrote {info['out']} ({info['size_mb']:.1f} MB): input NHWC float RGB normalised as torchvision "
              "expects ((RGB in [0, 1] - ImageNet mean) / std), output NHWC logits at the input size"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ivus_tf.core.tf_import import import_tensorflow

    import_tensorflow()
    from ivus_tf.convert.torchvision_deeplabv3 import convert_torchvision_deeplabv3

    print(f"converting {args.checkpoint} -> {args.out}", flush=True)
    info = convert_torchvision_deeplabv3(args.checkpoint, args.out, args.overwrite, check=not args.no_check)
    for line in describe(info):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
