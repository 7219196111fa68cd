"""Command line of the builder: one subcommand per stage, each a thin layer over a plain function.

    python -m tfrecords_builder phantom    --out DIR --cases N --frames-per-case M --seed S [--task ...]
    python -m tfrecords_builder build      --manifest PATH --out DIR [--shards-per-case K] [--overwrite]
    python -m tfrecords_builder miccai2011 --src DIR --out DIR --pixel-spacing-mm 0.026

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from ivus_tf.core.errors import ArgumentParser, run_cli

SUBCOMMANDS = {
    "phantom": ("tfrecords_builder.phantom.cli", "generate a synthetic IVUS dataset (manifest layout)"),
    "build": ("tfrecords_builder.build", "turn a manifest into TFRecords keyed by case"),
    "miccai2011": ("tfrecords_builder.miccai2011", "convert the MICCAI 2011 IVUS challenge layout to a manifest"),
}


def _main(argv: Sequence[str] | None) -> int:
    parser = ArgumentParser(prog="python -m tfrecords_builder", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    modules = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.__class__ = ArgumentParser
        module.add_arguments(sub)
        modules[name] = module
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)
