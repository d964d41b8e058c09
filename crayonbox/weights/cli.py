"""`crayonbox convert` and `crayonbox download`: official weights → a crayonbox model folder."""

from __future__ import annotations

import argparse

from crayonbox.errors import CrayonboxError

DTYPE_CHOICES = ("auto", "float16", "float32")
DTYPE_HELP = "weights precision in the folder; auto (default) keeps the source's (float16 stays float16)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `convert` and `download` subcommands."""
    convert = subparsers.add_parser(
        "convert",
        help="convert official (Flax) or min-dalle weights into a crayonbox model folder",
        description="Convert DALL·E mini/mega weights into a model folder for `crayonbox generate --model`.",
    )
    convert.add_argument(
        "--from",
        dest="source",
        choices=("flax", "mindalle"),
        required=True,
        help="flax: a folder like the hub repo dalle-mini/dalle-mini (config.json, "
        "flax_model.msgpack, tokenizer files); mindalle: a folder with min-dalle's .pt files",
    )
    convert.add_argument("src", help="the folder holding the source files")
    convert.add_argument("--out", required=True, help="model folder to write")
    convert.add_argument(
        "--vqgan",
        help="VQGAN: for flax, a folder like dalle-mini/vqgan_imagenet_f16_16384; for "
        "mindalle, detoker.pt or its folder (default: found next to SRC)",
    )
    convert.add_argument(
        "--tokenizer", help="folder with tokenizer.json or vocab.json + merges.txt (default: SRC)"
    )
    convert.add_argument(
        "--variant",
        choices=("mini", "mega"),
        help="mindalle only: which model, when SRC holds both (min-dalle's hub repo does)",
    )
    convert.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help=DTYPE_HELP)
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(func=run_convert)

    download = subparsers.add_parser(
        "download",
        help="download dalle-mini or dalle-mega from the Hugging Face hub and convert it",
        description="Fetch the official weights and the VQGAN (at the commit the official notebook pins) "
        "through the Hugging Face cache, then convert them. Needs a network, or HF_HUB_OFFLINE=1 "
        "with a filled cache.",
    )
    download.add_argument("name", choices=("dalle-mini", "dalle-mega"))
    download.add_argument("--out", help="model folder to write (default: models/NAME)")
    download.add_argument("--revision", help="branch, tag or commit of the model repo (default: main)")
    download.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help=DTYPE_HELP)
    download.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    download.set_defaults(func=run_download)


def _report(out: str) -> None:
    from crayonbox.model_folder import ModelFolder

    info = ModelFolder(out).provenance
    parts = ", ".join(f"{name} {dtype}" for name, dtype in info.get("dtype", {}).items())
    print(f"wrote {out} ({parts}; normaliser: {info.get('normalizer')})")
    if "vqgan" not in info.get("dtype", {}):
        print("note: no VQGAN in this folder, so it cannot draw images yet; convert again with --vqgan")


def run_convert(args: argparse.Namespace) -> int:
    """Handler of `crayonbox convert`."""
    from crayonbox.weights.convert import convert_flax_folder, convert_mindalle_folder
    from crayonbox.weights.export import write_model_folder

    if args.source == "flax":
        if args.variant:
            raise CrayonboxError("--variant is for --from mindalle (a Flax folder holds one model)")
        converted = convert_flax_folder(args.src, args.vqgan, args.tokenizer)
    else:
        converted = convert_mindalle_folder(args.src, args.vqgan, args.tokenizer, args.variant)
    write_model_folder(converted, args.out, dtype=args.dtype, overwrite=args.overwrite)
    _report(args.out)
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Handler of `crayonbox download`."""
    from crayonbox.weights.hub import download

    out = args.out or f"models/{args.name}"
    download(args.name, out, revision=args.revision, dtype=args.dtype, overwrite=args.overwrite)
    _report(out)
    return 0
