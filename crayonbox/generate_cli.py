"""`crayonbox generate`, `tokens`, `info` and `upload`: the generator's command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from crayonbox.config import DEVICE_HELP, PRECISIONS, check_condition_scale
from crayonbox.errors import CrayonboxError
from crayonbox.hub import resolve_model, upload_model_folder
from crayonbox.outdir import check_output_file, check_output_folder, claim_output_folder
from crayonbox.sampler_settings import add_sampler_arguments, sampler_overrides

if TYPE_CHECKING:
    from PIL import Image


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser(
        "generate", help="draw images for a prompt (a 3×3 grid by default)",
        description="Draw images for a prompt. The shipped default model makes 32×32 px sketches of the ~120 "
        "emoji concepts of its world (people, attire, animals, food, objects on coloured backgrounds): "
        "`crayonbox info` lists them, and a word it never learnt gets a note. --model takes another model "
        "folder or a Hub repo (owner/name).")
    gen.add_argument("prompt")
    gen.add_argument("-n", "--num-images", type=int, default=9)
    gen.add_argument("--seed", type=int, default=None, help="image i uses seed+i (random when omitted)")
    gen.add_argument("--model", type=Path, default=None,
                     help="model folder or Hub repo id OWNER/NAME (default: the shipped model)")
    gen.add_argument("-o", "--output", type=Path, default=Path("grid.png"), help="grid PNG to write")
    gen.add_argument(
        "--save-each",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save each image as DIR/<seed>.png with a .json of its settings and token ids",
    )
    gen.add_argument(
        "--upscale",
        type=int,
        default=1,
        metavar="N",
        help="enlarge every image N× with nearest-neighbour (each pixel becomes an N×N block; no detail is "
        "added), in the grid and in --save-each; the model's native size is printed either way",
    )
    add_sampler_arguments(gen)
    gen.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): what this machine's CPU runs best, bfloat16 with AMX or AVX-512 BF16, fp16w (fp16 "
        "weights, fp32 maths) with AVX2, else float32; --verbose says which and why",
    )
    gen.add_argument("--device", default="auto", help=DEVICE_HELP)
    gen.add_argument("--verbose", action="store_true", help="print the device and precision chosen, and why")
    gen.set_defaults(func=run_generate)

    tok = sub.add_parser("tokens", help="show the normalised text and token ids a prompt becomes")
    tok.add_argument("prompt", nargs="+")
    tok.add_argument("--model", type=Path, default=None)
    tok.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tok.set_defaults(func=run_tokens)

    info = sub.add_parser("info", help="what a model can draw: size, parameters, vocabulary, concepts, card")
    info.add_argument("model", nargs="?", type=Path, default=None,
                      help="model folder or Hub repo id OWNER/NAME (default: the shipped model)")
    info.set_defaults(func=run_info)

    up = sub.add_parser("upload", help="upload a model folder to the Hugging Face hub (README.md gets the "
                        "Hub's YAML header)")
    up.add_argument("model", type=Path, help="model folder")
    up.add_argument("repo_id", help="OWNER/NAME on the Hub (created if missing)")
    up.add_argument("--private", action="store_true", help="create the repo private")
    up.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    up.add_argument("--message", default=None, help="commit message")
    up.set_defaults(func=run_upload)


def _model_dir(path: Path | None) -> Path:
    """The shipped model, a folder, or a Hub repo id's snapshot (HF_HUB_OFFLINE=1 keeps to the cache)."""
    from crayonbox import default_model_dir

    return resolve_model(str(path)) if path is not None else default_model_dir()


def _load_tokenizer(path: Path | None):
    from crayonbox.model_folder import ModelFolder

    return ModelFolder(_model_dir(path)).tokenizer


def run_generate(args: argparse.Namespace) -> int:
    from crayonbox.model.images import make_grid
    from crayonbox.pipeline import Pipeline

    if not 1 <= args.num_images <= 64:
        raise CrayonboxError(f"-n must be between 1 and 64 (got {args.num_images})")
    if args.output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise CrayonboxError(f"-o {args.output}: use a .png, .jpg or .webp file name")
    if not 1 <= args.upscale <= 32:
        raise CrayonboxError(f"--upscale must be between 1 and 32 (got {args.upscale})")
    if args.condition_scale is not None:
        check_condition_scale(args.condition_scale)
    # Every output path is checked now: finding it unwritable after the whole generation wastes the run.
    check_output_file(args.output)
    if args.save_each is not None:
        check_output_folder(args.save_each, "generate --save-each")
    pipe = Pipeline.from_pretrained(_model_dir(args.model), dtype=args.dtype, device=args.device)
    if args.verbose:
        print(f"device: {pipe.device}", file=sys.stderr)
        why = pipe.precision_choice.reason if pipe.precision_choice else "asked for (--dtype)"
        print(f"precision: {args.dtype if pipe.precision_choice is None else pipe.precision_choice.describe()} ({why})",
              file=sys.stderr)
    encoded = pipe.tokenizer.encode(args.prompt)
    for note in encoded.notes:
        print(f"note: {note}", file=sys.stderr)
    if encoded.was_cut:
        print(
            f"warning: prompt longer than {pipe.config.text_length} tokens; cut: {encoded.cut_text!r}",
            file=sys.stderr,
        )
    out = pipe(
        args.prompt,
        num_images=args.num_images,
        seed=args.seed,
        progress=True,
        **sampler_overrides(args).values,
    )
    native = out.images[0].size
    images = [upscale(image, args.upscale) for image in out.images]
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        make_grid(images).save(args.output)
    except OSError as e:  # checked above, but a disk can fill up while generating
        raise CrayonboxError(f"cannot write {args.output}: {e.strerror or e}") from None
    if args.save_each:
        claim_output_folder(args.save_each, "generate --save-each")
        for image, seed, tokens in zip(images, out.seeds, out.tokens, strict=True):
            image.save(args.save_each / f"{seed}.png")
            record = {
                "prompt": args.prompt,
                "seed": seed,
                "settings": out.settings.to_dict(),
                "normalized": encoded.normalized,
                "text_ids": encoded.ids,
                "unconditional_ids": out.unconditional.ids,
                "image_tokens": tokens.tolist(),
                "native_size": list(native),
                "upscale": args.upscale,
            }
            (args.save_each / f"{seed}.json").write_text(json.dumps(record) + "\n")
    size = f"{native[0]}×{native[1]} px each"
    if args.upscale > 1:
        size += f" (upscaled ×{args.upscale} to {images[0].size[0]}×{images[0].size[1]})"
    count = f"{len(out.images)} image{'s' if len(out.images) != 1 else ''}"
    print(
        f"wrote {args.output} ({count}, {size}, seeds {out.seeds[0]}..{out.seeds[-1]}, "
        f"condition scale {out.settings.condition_scale}, top-k {out.settings.top_k})"
    )
    return 0


def upscale(image: Image.Image, factor: int) -> Image.Image:
    """Nearest-neighbour enlargement: every pixel becomes a factor×factor block (the model's pixels, bigger)."""
    from PIL import Image

    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def run_info(args: argparse.Namespace) -> int:
    from crayonbox.info import describe, format_rows

    print(format_rows(describe(_model_dir(args.model))))
    return 0


def run_upload(args: argparse.Namespace) -> int:
    from crayonbox.model_folder import ModelFolder

    ModelFolder(args.model).info()  # a folder that would not load is refused before any upload
    url = upload_model_folder(args.model, args.repo_id, private=args.private or None, revision=args.revision,
                              commit_message=args.message)
    print(f"uploaded {args.model} to {args.repo_id}: {url}")
    return 0


def run_tokens(args: argparse.Namespace) -> int:
    tokenizer = _load_tokenizer(args.model)
    rows = []
    for prompt in args.prompt:
        e = tokenizer.encode(prompt)
        real = sum(e.attention_mask)
        rows.append(
            {
                "prompt": prompt,
                "normalized": e.normalized,
                "ids": e.ids[:real],
                "tokens": e.tokens,
                "cut": e.cut_text,
                "notes": e.notes,
            }
        )
    uncond = tokenizer.unconditional()
    if args.json:
        print(
            json.dumps(
                {"prompts": rows, "unconditional_ids": uncond.ids[: sum(uncond.attention_mask)]},
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    for row in rows:
        print(f"prompt      {row['prompt']!r}")
        print(f"normalised  {row['normalized']!r}")
        print(f"ids         {row['ids']}")
        print(f"tokens      {' '.join(row['tokens'])}")
        for note in row["notes"]:
            print(f"note        {note}")
        print()
    print(f"unconditional ids {uncond.ids[: sum(uncond.attention_mask)]}  (the raw '' with no normaliser)")
    return 0
