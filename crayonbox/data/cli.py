"""Data commands: `crayonbox world build`, `crayonbox data inspect`, and the caption pipeline's `data captions`
and `data audit` (their handlers are in crayonbox/data/captions_cli.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from crayonbox.data.captions_cli import register_data_commands


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `world` and `data` command groups."""
    world = subparsers.add_parser("world", help="build the offline emoji world (images, captions, truth)")
    world_sub = world.add_subparsers(dest="world_command", metavar="COMMAND")
    world.set_defaults(func=lambda _args: _print_help(world))
    build = world_sub.add_parser(
        "build", help="render a world into img2dataset-style shards (resumable)",
        description="Render scenes of 1–3 emoji with multilingual captions and ground truth into "
                    "{NNNNN}.tar + .parquet shards. Re-running the same command resumes an interrupted "
                    "build.")
    build.add_argument("--config", type=Path, help="world config YAML (default: the shipped default.yaml)")
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("-n", type=int, default=10_000, help="number of items (default 10000)")
    build.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                       help="worker processes (default 2)")
    build.add_argument("--seed", type=int, default=0,
                       help="world seed; item i depends only on (seed, i, config)")
    build.add_argument("--size", type=int, help="image side in px (overrides the config's size)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=_world_build)

    data = subparsers.add_parser("data", help="inspect and process image–caption shard folders")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    data.set_defaults(func=lambda _args: _print_help(data))
    inspect = data_sub.add_parser(
        "inspect", help="summarise a shard folder (counts, sizes, caption lengths, languages, sample grid)")
    inspect.add_argument("dir", type=Path, help="folder of {NNNNN}.tar shards (ours or img2dataset's)")
    inspect.add_argument("--out", type=Path,
                         help="where to write summary.json, summary.txt, grid.png (default: ./<dir>_inspect)")
    inspect.add_argument("--languages", default=None,
                         help="comma-separated candidate languages for detection "
                              "(default: the 14 of crayonbox.data.langid)")
    inspect.add_argument("--quiet", action="store_true", help="no progress bar")
    inspect.set_defaults(func=_data_inspect)

    register_data_commands(data_sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _world_build(args: argparse.Namespace) -> int:
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config

    config = load_world_config(args.config)
    if args.size is not None:
        if args.size < 16:
            from crayonbox.errors import CrayonboxError

            raise CrayonboxError(f"--size must be at least 16 px, got {args.size}")
        config.size = args.size
    manifest = build_world(config, args.out, n=args.n, workers=args.workers, seed=args.seed,
                           progress=not args.quiet)
    print(f"{args.out}: {manifest['n']} items in {manifest['shards']} shards at {config.size}px "
          f"({manifest['distinct_emoji']} distinct emoji, {manifest['distinct_concepts']} concepts)")
    return 0


def _data_inspect(args: argparse.Namespace) -> int:
    from crayonbox.data.inspect import DEFAULT_LANGUAGES, format_report, inspect_folder

    languages = tuple(x.strip() for x in args.languages.split(",") if x.strip()) if args.languages \
        else DEFAULT_LANGUAGES
    out = args.out or Path.cwd() / f"{args.dir.resolve().name}_inspect"
    report = inspect_folder(args.dir, out, languages, progress=not args.quiet)
    print(format_report(report))
    print(f"wrote {out}/summary.json, summary.txt" + (", grid.png" if report["written"]["grid"] else ""))
    return 0
