"""The on-disk model folder, in diffusers' convention: one subfolder per component.

    MODEL/
      pipeline.json                 format version, sampler defaults, provenance (what it was converted/trained from)
      bart/config.json              ModelConfig
      bart/model.safetensors        encoder.* and decoder.* weights
      vqgan/config.json             VQGANConfig
      vqgan/model.safetensors       encoder (optional: official checkpoints ship only the decoder half) + decoder
      tokenizer/tokenizer.json      byte-level BPE (vocab.json + merges.txt also accepted)
      tokenizer/normalizer.json     how prompts are normalised before tokenizing

Weights are only ever read with safetensors: nothing in a model folder is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from crayonbox.config import read_json, write_json
from crayonbox.errors import CrayonboxError

FORMAT = "crayonbox"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def save_component(
    folder: Path,
    name: str,
    config: dict[str, Any],
    state: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
) -> None:
    """Write `folder/name/config.json` and `folder/name/model.safetensors` (tmp file + rename: never half-written)."""
    sub = Path(folder) / name
    sub.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in state.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    tmp = sub / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(sub / WEIGHTS)
    write_json(sub / "config.json", config)


def load_component(folder: Path, name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a component's config and weights, with errors that name the missing or corrupt file."""
    return load_component_config(folder, name), load_component_weights(folder, name)


def load_component_config(folder: Path, name: str) -> dict[str, Any]:
    """Read a component's `config.json` (no weights)."""
    sub = Path(folder) / name
    if not sub.is_dir():
        raise CrayonboxError(
            f"{folder} is not a crayonbox model folder: no '{name}/' inside "
            f"(expected {name}/config.json and {name}/{WEIGHTS}; convert official weights with "
            f"`crayonbox convert`)"
        )
    return read_json(sub / "config.json")


def load_component_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """Read a component's `model.safetensors`."""
    path = Path(folder) / name / WEIGHTS
    if not path.exists():
        raise CrayonboxError(f"missing weights file: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CrayonboxError(f"corrupt weights file {path}: {e}") from None


def write_pipeline_json(
    folder: Path, sampler: dict[str, Any], provenance: dict[str, Any] | None = None
) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(
        Path(folder) / "pipeline.json",
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "sampler": sampler,
            "provenance": provenance or {},
        },
    )


def read_pipeline_json(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    if not folder.exists():
        raise CrayonboxError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise CrayonboxError(f"{folder} is a file, not a model folder: pass the folder that holds pipeline.json")
    data = read_json(folder / "pipeline.json")
    if data.get("format") != FORMAT:
        raise CrayonboxError(
            f"{folder}/pipeline.json is not a crayonbox model (format={data.get('format')!r})"
        )
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CrayonboxError(f"{folder}/pipeline.json: format_version must be a whole number (got {version!r})")
    if not isinstance(data.get("sampler", {}), dict) or not isinstance(data.get("provenance") or {}, dict):
        raise CrayonboxError(f"{folder}/pipeline.json: 'sampler' and 'provenance' must be objects")
    if version > FORMAT_VERSION:
        raise CrayonboxError(
            f"{folder} was written by a newer crayonbox (format {data['format_version']}); upgrade"
        )
    return data
