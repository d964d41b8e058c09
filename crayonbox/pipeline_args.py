"""The arguments of `Pipeline.__call__`, `from_pretrained` and `to`, checked and mapped onto crayonbox's own.

One signature, two vocabularies: diffusers' names are aliases of ours, so code written for diffusers runs
unchanged, and giving both names of one setting is an error rather than a silent choice.

    num_images_per_prompt → num_images      guidance_scale → condition_scale      torch_dtype → dtype

Seeds. Image i of a prompt uses seed `seed + i`, so an image depends on its seed alone, not on its batch. A
`generator` stands in for `seed`: one `torch.Generator` gives the base seed
`int(torch.randint(2**31, (1,), generator=g))` (one draw, so the same generator state gives the same images);
a list of generators, one per image (prompt-major: all images of prompt 0, then prompt 1, ...), gives each
image its own seed by the same draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.model.hardware import resolve_device

ALIASES: dict[str, str] = {
    "num_images_per_prompt": "num_images",
    "guidance_scale": "condition_scale",
    "torch_dtype": "dtype",
}
OUTPUT_TYPES = ("pil", "np", "pt")
SEED_RANGE = 2**31
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """`value` or `alias_value`, whichever was given (None: neither)."""
    if value is not None and alias_value is not None:
        raise CrayonboxError(f"{name} and {alias} are the same setting ({alias} is its diffusers name): give one")
    return value if value is not None else alias_value


def prompt_list(prompt: object) -> list[str]:
    """A prompt or a list of prompts as a non-empty list of strings."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list | tuple) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list | tuple):
        bad = next((p for p in prompt if not isinstance(p, str)), None)
        got = f"a list holding {type(bad).__name__} {bad!r}" if prompt else "an empty list"
    else:
        got = f"{type(prompt).__name__} {prompt!r}"
    raise CrayonboxError(f"prompt must be a string or a list of strings (got {got[:80]})")


def seed_from(generator: torch.Generator) -> int:
    """The seed a generator gives an image: one draw, so its state fixes the image."""
    if not isinstance(generator, torch.Generator):
        raise CrayonboxError(f"generator must be a torch.Generator or a list of them (got {type(generator).__name__})")
    return int(torch.randint(SEED_RANGE, (1,), generator=generator, device=generator.device))


def image_seeds(prompts: int, num_images: int, seed: int | None, generator: object) -> list[int]:
    """Every image's seed, prompt-major (see the module docstring)."""
    if seed is not None and generator is not None:
        raise CrayonboxError("seed and generator both choose the seeds: give one")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise CrayonboxError(f"seed must be a whole number (got {seed!r})")
    if isinstance(generator, list | tuple):
        if len(generator) != prompts * num_images:
            raise CrayonboxError(f"got {len(generator)} generators for {prompts * num_images} images "
                                 f"({prompts} prompt(s) × {num_images}): give one generator, or one per image")
        return [seed_from(g) for g in generator]
    if generator is not None:
        seed = seed_from(generator)  # type: ignore[arg-type]
    base = random.randrange(SEED_RANGE) if seed is None else int(seed)
    return [base + i for _ in range(prompts) for i in range(num_images)]


@dataclass
class CallArgs:
    """`Pipeline.__call__`'s arguments, resolved: what to generate and how to return it."""

    prompts: list[str]
    num_images: int
    seeds: list[int]  # per image, prompt-major
    sampler: dict[str, Any]  # SamplingSettings overrides
    output_type: str = "pil"
    return_dict: bool = True


def resolve_call(
    prompt: object,
    num_images: int | None,
    seed: int | None,
    generator: object,
    sampler: dict[str, Any],
    output_type: str = "pil",
    return_dict: bool = True,
) -> CallArgs:
    """Check every argument before any work; `sampler` may hold diffusers' names (guidance_scale, ...)."""
    sampler = dict(sampler)
    num_images = pick("num_images", num_images, "num_images_per_prompt", sampler.pop("num_images_per_prompt", None))
    for alias, name in ALIASES.items():
        if alias in sampler:
            sampler[name] = pick(name, sampler.get(name), alias, sampler.pop(alias))
    prompts = prompt_list(prompt)
    num_images = 1 if num_images is None else num_images
    if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer) or num_images < 1:
        raise CrayonboxError(f"num_images must be a whole number ≥ 1 (got {num_images!r})")
    if output_type not in OUTPUT_TYPES:
        raise CrayonboxError(f"output_type must be one of {', '.join(OUTPUT_TYPES)} (got {output_type!r})")
    seeds = image_seeds(len(prompts), int(num_images), seed, generator)
    return CallArgs(prompts, int(num_images), seeds, sampler, output_type, bool(return_dict))


def convert_images(images: list[Image.Image], output_type: str) -> list[Image.Image] | np.ndarray | torch.Tensor:
    """PIL images as diffusers returns them: "np" a float32 array (N, H, W, 3), "pt" a tensor (N, 3, H, W), both
    in [0, 1]. Made from the 8-bit images, so every output type holds exactly the same pixels."""
    if output_type == "pil":
        return images
    array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    return array if output_type == "np" else torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def parse_to(args: tuple[Any, ...], device: Any = None, dtype: Any = None) -> tuple[torch.device | None,
                                                                                        torch.dtype | None]:
    """`pipe.to("cpu")`, `pipe.to(torch.float16)`, `pipe.to("cuda", torch.float16)`, `pipe.to(device=...)`."""
    for arg in args:
        if isinstance(arg, torch.dtype) or (isinstance(arg, str) and arg in TORCH_DTYPES):
            dtype = pick("dtype", dtype, "a second dtype", arg)
        else:
            device = pick("device", device, "a second device", arg)
    if isinstance(dtype, str):
        if dtype not in TORCH_DTYPES:
            raise CrayonboxError(f"unknown dtype {dtype!r}: choose one of {', '.join(TORCH_DTYPES)}")
        dtype = TORCH_DTYPES[dtype]
    return (check_device(device) if device is not None else None), dtype


def check_device(device: str | torch.device) -> torch.device:
    """A torch.device this machine has ("auto": a GPU when there is one), or one line saying why not."""
    return resolve_device(device)
