"""`crayonbox generate` and `crayonbox tokens`: the generator's command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crayonbox.config import PRECISIONS, check_condition_scale
from crayonbox.errors import CrayonboxError
from crayonbox.outdir import check_output_file, check_output_folder, claim_output_folder
from crayonbox.sampler_settings import add_sampler_arguments, sampler_overrides


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="draw images for a prompt (a 3×3 grid by default)")
    gen.add_argument("prompt")
    gen.add_argument("-n", "--num-images", type=int, default=9)
    gen.add_argument("--seed", type=int, default=None, help="image i uses seed+i (random when omitted)")
    gen.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    gen.add_argument("-o", "--output", type=Path, default=Path("grid.png"), help="grid PNG to write")
    gen.add_argument(
        "--save-each",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save each image as DIR/<seed>.png with a .json of its settings and token ids",
    )
    add_sampler_arguments(gen)
    gen.add_argument(
        "--dtype",
        choices=PRECISIONS,
        default="auto",
        help="auto: fp16w (fp16 weights, fp32 maths) on x86, else float32; int8 is faster but changes some "
        "tokens (see bench/generate_vs_mindalle.py)",
    )
    gen.set_defaults(func=run_generate)

    tok = sub.add_parser("tokens", help="show the normalised text and token ids a prompt becomes")
    tok.add_argument("prompt", nargs="+")
    tok.add_argument("--model", type=Path, default=None)
    tok.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tok.set_defaults(func=run_tokens)


def _model_dir(path: Path | None) -> Path:
    from crayonbox import default_model_dir

    return path if path is not None else default_model_dir()


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
    if args.condition_scale is not None:
        check_condition_scale(args.condition_scale)
    # Every output path is checked now: finding it unwritable after the whole generation wastes the run.
    check_output_file(args.output)
    if args.save_each is not None:
        check_output_folder(args.save_each, "generate --save-each")
    pipe = Pipeline.from_pretrained(_model_dir(args.model), dtype=args.dtype)
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
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        make_grid(out.images).save(args.output)
    except OSError as e:  # checked above, but a disk can fill up while generating
        raise CrayonboxError(f"cannot write {args.output}: {e.strerror or e}") from None
    if args.save_each:
        claim_output_folder(args.save_each, "generate --save-each")
        for image, seed, tokens in zip(out.images, out.seeds, out.tokens, strict=True):
            image.save(args.save_each / f"{seed}.png")
            record = {
                "prompt": args.prompt,
                "seed": seed,
                "settings": out.settings.to_dict(),
                "normalized": encoded.normalized,
                "text_ids": encoded.ids,
                "unconditional_ids": out.unconditional.ids,
                "image_tokens": tokens.tolist(),
            }
            (args.save_each / f"{seed}.json").write_text(json.dumps(record) + "\n")
    print(
        f"wrote {args.output} ({len(out.images)} images, seeds {out.seeds[0]}..{out.seeds[-1]}, "
        f"condition scale {out.settings.condition_scale}, top-k {out.settings.top_k})"
    )
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
