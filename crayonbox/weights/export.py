"""Write converted weights as a crayonbox model folder (layout in `crayonbox/model_folder.py`).

The folder is assembled under a hidden sibling (`.NAME.partial`) and renamed into place at the end, so a
conversion that is killed never leaves a half-written model folder; the next run clears the leftover.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crayonbox.config import ModelConfig, VQGANConfig
from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import save_component, write_pipeline_json
from crayonbox.sample import SamplingSettings
from crayonbox.text.normalize import NormalizerConfig

DTYPES = {"float16": torch.float16, "float32": torch.float32}
# Tokenizer files worth keeping, under the names `crayonbox.text.tokenizer.Tokenizer.from_folder` reads.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
)


@dataclass
class Converted:
    """Everything a model folder holds, in memory."""

    bart_config: ModelConfig
    bart_state: dict[str, Tensor]
    vqgan_config: VQGANConfig | None = None
    vqgan_state: dict[str, Tensor] | None = None
    tokenizer_files: dict[str, Path] = field(default_factory=dict)  # name in the folder → source file
    normalizer_mode: str = "official"
    provenance: dict[str, Any] = field(default_factory=dict)


def find_tokenizer_files(
    folder: Path, preferred: dict[str, tuple[str, ...]] | None = None
) -> dict[str, Path]:
    """The tokenizer files in `folder` (our name → path). `preferred` lists other names to try first for a
    file (min-dalle's hub repo calls the mini files `vocab_mini.json` / `merges_mini.txt`, next to mega's).

    Raises unless they make a tokenizer: `tokenizer.json`, or `vocab.json` with `merges.txt`.
    """
    found = {}
    for name in TOKENIZER_FILES:
        for candidate in (*(preferred or {}).get(name, ()), name):
            if (folder / candidate).is_file():
                found[name] = folder / candidate
                break
    if "tokenizer.json" not in found and not {"vocab.json", "merges.txt"} <= set(found):
        raise CrayonboxError(
            f"no tokenizer files in {folder}: expected tokenizer.json, or vocab.json and "
            "merges.txt (the official repos ship both); point --tokenizer at a folder holding them"
        )
    return found


def resolve_dtype(choice: str, state: dict[str, Tensor]) -> torch.dtype:
    """The torch dtype to store: "auto" keeps the source's precision (float16 if every floating tensor is
    float16, else float32)."""
    if choice == "auto":
        floats = [t.dtype for t in state.values() if t.is_floating_point()]
        return torch.float16 if floats and all(d == torch.float16 for d in floats) else torch.float32
    if choice not in DTYPES:
        raise CrayonboxError(f"unknown dtype {choice!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[choice]


def _write_tokenizer(folder: Path, files: dict[str, Path], mode: str) -> None:

    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copyfile(source, folder / name)
    NormalizerConfig(mode=mode).save(folder)


def write_model_folder(
    converted: Converted, out: str | Path, dtype: str = "auto", overwrite: bool = False
) -> Path:
    """Write `converted` to the model folder `out` (atomically: built aside, then renamed into place)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CrayonboxError(
            f"{out} already exists and is not empty; choose another --out or pass --overwrite"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left over from a killed conversion
    bart_dtype = resolve_dtype(dtype, converted.bart_state)
    save_component(partial, "bart", converted.bart_config.to_dict(), converted.bart_state, bart_dtype)
    dtypes = {"bart": str(bart_dtype).removeprefix("torch.")}
    if converted.vqgan_state is not None:
        vqgan_dtype = resolve_dtype(dtype, converted.vqgan_state)
        save_component(partial, "vqgan", converted.vqgan_config.to_dict(), converted.vqgan_state, vqgan_dtype)
        dtypes["vqgan"] = str(vqgan_dtype).removeprefix("torch.")
    if converted.tokenizer_files:
        _write_tokenizer(partial / "tokenizer", converted.tokenizer_files, converted.normalizer_mode)
    sampler = SamplingSettings().to_dict()  # the official notebook's defaults
    write_pipeline_json(
        partial, sampler, {**converted.provenance, "dtype": dtypes, "normalizer": converted.normalizer_mode}
    )
    if out.exists():  # --overwrite: move the old folder aside first, so it survives a kill until the swap
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old)
    else:
        os.replace(partial, out)
    return out
