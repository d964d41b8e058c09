"""`crayonbox data captions` and `crayonbox data audit` (the run itself is crayonbox/data/caption_run.py).

    crayonbox data captions IN --out OUT [--config PIPELINE.yaml]
    crayonbox data captions --print-default-config
    crayonbox data audit DIR [--out DIR]

Handlers import what they run when they run: `crayonbox --help` registers these flags and must stay light.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from crayonbox.errors import CrayonboxError

# ---- command line ----------------------------------------------------------------------------------------


def _captions_command(args: argparse.Namespace) -> int:
    from crayonbox.data.caption_run import PROVENANCE_DIR, run_caption_pipeline
    from crayonbox.data.captions import CaptionPipeline, load_pipeline_config

    if args.print_default_config:  # every option spelled out: a starting point for --config
        import yaml

        print(yaml.safe_dump(CaptionPipeline(None).config, sort_keys=False, allow_unicode=True,
                             default_flow_style=None), end="")
        return 0
    if not args.input or not args.out:
        raise CrayonboxError("give the input folder and --out OUT (or --print-default-config)")
    config = load_pipeline_config(args.config) if args.config else None
    s = run_caption_pipeline(args.input, args.out, config, progress=not args.quiet, workers=args.workers)
    print(f"{s.items} items in {s.shards - s.shards_skipped} shards ({s.shards_skipped} already done): "
          f"{s.dropped} dropped, {s.blanked} with a blank caption, {s.problems} problems; "
          f"provenance in {Path(args.out) / PROVENANCE_DIR}")
    return 0


def _audit_command(args: argparse.Namespace) -> int:
    from crayonbox.data.audit import write_audit

    html_path, json_path = write_audit(args.dir, args.out, progress=not args.quiet)
    print(f"audit written: {html_path} and {json_path}")
    return 0


def register_data_commands(data_subparsers: argparse._SubParsersAction) -> None:
    """Add `captions` and `audit` to the `crayonbox data` subcommands."""
    p = data_subparsers.add_parser("captions", help="run the caption pipeline over shards, with provenance")
    p.add_argument("input", nargs="?", metavar="IN", help="folder of webdataset shards")
    p.add_argument("--out", metavar="OUT", help="folder for the processed shards and provenance/")
    p.add_argument("--config", metavar="PIPELINE.yaml", help="pipeline steps (default: the DALL·E mini era)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="shards processed in parallel (default 2)")
    p.add_argument("--print-default-config", action="store_true", help="print the default pipeline and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_captions_command)

    p = data_subparsers.add_parser("audit", help="report what the caption pipeline did, to whom")
    p.add_argument("dir", metavar="DIR", help="output folder of `crayonbox data captions`")
    p.add_argument("--out", metavar="DIR", help="folder for audit.html and audit.json (default: DIR/audit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_audit_command)
