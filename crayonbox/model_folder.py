"""The on-disk model folder, in diffusers' convention: one subfolder per component.

    MODEL/
      pipeline.json                 format version, sampler defaults, provenance (what it was converted/trained from)
      bart/config.json              ModelConfig
      bart/model.safetensors        encoder.* and decoder.* weights
      vqgan/config.json             VQGANConfig
      vqgan/model.safetensors       encoder (optional: official checkpoints ship only the decoder half) + decoder
      tokenizer/tokenizer.json      byte-level BPE (vocab.json + merges.txt also accepted)
      tokenizer/normalizer.json     how prompts are normalised before tokenizing
      world.yaml                    optional, for models trained on a synthetic world: its concepts (`pool`),
                                    named by provenance.world_config
      reference/                    optional: the training images measured by the lab's instruments
                                    (`crayonbox lab reference`): labels.parquet, groups.json, manifest.json

Weights are only ever read with safetensors: nothing in a model folder is unpickled.

`ModelFolder` is the one reader of a model folder's files for the generator, the server and the lab: its
configs, tokenizer, sampler defaults and provenance (`ModelInfo`, enough to validate requests without the
weights), and its weights. The free functions below are its primitives (and what training and conversion,
which write folders, use directly).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from crayonbox.config import (
    ModelConfig,
    VQGANConfig,
    atomic_write,
    model_config_from_dict,
    read_json,
    vqgan_config_from_dict,
    write_json,
)
from crayonbox.errors import CrayonboxError
from crayonbox.sampler_settings import SamplingSettings
from crayonbox.text.tokenizer import Tokenizer
from crayonbox.text.vocabulary import WordCheck

FORMAT = "crayonbox"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
REFERENCE_DIR = "reference"  # the training reference table (`crayonbox lab reference`)
# A BPE this large is a general English vocabulary (dalle-mini's has 50264 ids), not the words of one world.
OPEN_VOCABULARY_SIZE = 30000


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
    with atomic_write(sub / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
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


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors_header(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The tensors' entries of a .safetensors header (dtype, shape, data_offsets) and where the data starts."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= 100 * 2**20:
                raise ValueError(f"header size {size}")
            header = json.loads(f.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CrayonboxError(f"corrupt weights file {path}: {e}".splitlines()[0]) from None
    return {k: v for k, v in header.items() if k != "__metadata__"}, 8 + size


def read_safetensors(path: Path, mapped: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file, read with plain reads into memory it owns, except those named in
    `mapped`: views of a private read-only mapping of the file, whose pages enter memory only when read.

    Hand-written instead of `safetensors.torch.load_file`, which maps the file: the mapped pages count in the
    process's resident memory beside the tensors, so loading dalle-mega (4.9 GB in fp16) peaked at 11.6 GiB for
    a model that ends at 6.5 GiB. Read this way the file's pages stay in the page cache, outside the process.
    Mapping pays for a lookup table used as stored (a token embedding: a prompt reads a few of its 50,272
    rows). The file must then not be rewritten in place while the tensors live (crayonbox replaces files by
    renaming, which leaves a mapping valid)."""
    entries, start = read_safetensors_header(path)
    end = path.stat().st_size
    tensors: dict[str, torch.Tensor] = {}
    whole = torch.from_file(str(path), shared=False, size=end, dtype=torch.uint8) if mapped else None
    with open(path, "rb") as f:
        for name, entry in entries.items():
            try:
                dtype = SAFETENSORS_DTYPES[entry["dtype"]]
                begin, stop = (start + int(o) for o in entry["data_offsets"])
                tensor = torch.empty([int(n) for n in entry["shape"]], dtype=dtype)
            except (KeyError, TypeError, ValueError) as e:
                raise CrayonboxError(f"corrupt weights file {path}: tensor {name!r}: {e!r}") from None
            raw = tensor.view(-1).view(torch.uint8) if tensor.numel() else tensor.view(torch.uint8)
            if stop - begin != raw.numel() or stop > end or begin < start:
                raise CrayonboxError(f"corrupt weights file {path}: tensor {name!r} has {stop - begin} bytes "
                                     f"where {entry['dtype']} {entry['shape']} needs {raw.numel()}")
            if whole is not None and name in mapped and begin % tensor.element_size() == 0:
                tensors[name] = whole[begin:stop].view(dtype).view(tensor.shape)
                continue
            f.seek(begin)
            if raw.numel() and f.readinto(memoryview(raw.numpy())) != raw.numel():
                raise CrayonboxError(f"corrupt weights file {path}: tensor {name!r} is cut short")
            tensors[name] = tensor
    return tensors


def load_component_weights(folder: Path, name: str, mapped: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """Read a component's `model.safetensors` (`mapped`: see read_safetensors)."""
    path = Path(folder) / name / WEIGHTS
    if not path.exists():
        raise CrayonboxError(f"missing weights file: {path}")
    return read_safetensors(path, mapped)


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


@dataclass(frozen=True)
class ReferenceFiles:
    """A model folder's training reference table as stored: its two JSON files read, and where its labels are
    (labels.parquet is read by the lab with pyarrow, which generation and the server never need to load)."""

    folder: Path
    manifest: dict[str, Any]
    groups: dict[str, Any]
    labels_path: Path


@dataclass
class ModelInfo:
    """What a model folder says besides its weights: configs, tokenizer, sampler defaults, provenance. Enough
    to validate requests (the server's web side holds this, not the weights)."""

    config: ModelConfig
    vqgan_config: VQGANConfig
    tokenizer: Tokenizer
    defaults: SamplingSettings
    provenance: dict

    @classmethod
    def from_folder(cls, folder: str | Path) -> ModelInfo:
        return ModelFolder(folder).info()

    def settings(self, **overrides: float | int | None) -> SamplingSettings:
        """The model's defaults with the given non-None overrides, validated."""
        return self.defaults.with_overrides(**overrides)


class ModelFolder:
    """A model folder on disk, read lazily: each file is read (and checked) the first time it is asked for,
    so a caller that needs only the tokenizer does not need a valid pipeline.json or weights."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @cached_property
    def meta(self) -> dict[str, Any]:
        """pipeline.json, checked (format, version, object-valued blocks)."""
        return read_pipeline_json(self.path)

    def check(self) -> ModelFolder:
        """Fail now, with a clear error, for a missing folder or one that is not a crayonbox model."""
        _ = self.meta
        return self

    @cached_property
    def config(self) -> ModelConfig:
        return model_config_from_dict(load_component_config(self.path, "bart"), f"{self.path}/bart/config.json")

    @cached_property
    def vqgan_config(self) -> VQGANConfig:
        return vqgan_config_from_dict(load_component_config(self.path, "vqgan"), f"{self.path}/vqgan/config.json")

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = Tokenizer.from_folder(self.path / "tokenizer", text_length=self.config.text_length)
        tokenizer.words = self.word_check(tokenizer)
        return tokenizer

    def word_check(self, tokenizer: Tokenizer) -> WordCheck:
        """Closed world for a model crayonbox trained (its BPE was trained on its own captions: a word that is
        not a whole token never occurred twice in them), with the concepts of its world; else open vocabulary
        (converted official models, or a folder whose pipeline.json cannot be read)."""
        try:
            trained_by = str(self.provenance.get("trained_by", ""))
        except CrayonboxError:  # the tokenizer alone is still usable (`crayonbox tokens`)
            return WordCheck.open_vocabulary()
        if not trained_by.startswith("crayonbox train") or tokenizer.vocab_size >= OPEN_VOCABULARY_SIZE:
            return WordCheck.open_vocabulary()
        concepts = self.concepts or {}
        words = {word for names in concepts.values() for name in names for word in _words(name)}
        return WordCheck.closed_world(words)

    @cached_property
    def world_path(self) -> Path | None:
        """The world config the model was trained on, if the folder ships it (provenance.world_config)."""
        name = self.provenance.get("world_config")
        path = self.path / name if isinstance(name, str) else None
        return path if path is not None and path.is_file() else None

    @cached_property
    def world(self) -> dict[str, Any]:
        """The world config the model was trained on, parsed; {} when the folder does not ship one."""
        if self.world_path is None:
            return {}
        try:
            data = yaml.safe_load(self.world_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise CrayonboxError(f"cannot read {self.world_path}: {e}".splitlines()[0]) from None
        return data if isinstance(data, dict) else {}

    @cached_property
    def concepts(self) -> dict[str, list[str]] | None:
        """What the model was trained to draw, by category (the world's `pool`); None when not recorded."""
        pool = self.world.get("pool")
        if not isinstance(pool, dict):
            return None
        return {str(category): [str(name) for name in names or []] for category, names in pool.items()}

    @cached_property
    def defaults(self) -> SamplingSettings:
        """The `sampler` block of pipeline.json, validated (unknown names are an error)."""
        return SamplingSettings.from_dict(self.meta.get("sampler", {}), f"{self.path}/pipeline.json")

    @property
    def provenance(self) -> dict[str, Any]:
        return self.meta.get("provenance") or {}

    def reference_files(self) -> ReferenceFiles | None:
        """MODEL/reference/ (`crayonbox lab reference`), or None when the folder ships no reference table."""
        folder = self.path / REFERENCE_DIR
        if not folder.is_dir():
            return None
        labels = folder / "labels.parquet"
        if not labels.is_file():
            raise CrayonboxError(f"{folder} is incomplete (no labels.parquet): rebuild it with `crayonbox lab "
                                 f"reference {self.path} --data SHARDS --force`")
        return ReferenceFiles(folder, read_json(folder / "manifest.json"), read_json(folder / "groups.json"),
                              labels)

    def weights(self, name: str, mapped: Collection[str] = ()) -> dict[str, torch.Tensor]:
        """A component's weights (`bart`, `vqgan`); not cached: the caller owns (and frees) them. Tensors named
        in `mapped` stay in the file until read (see read_safetensors)."""
        return load_component_weights(self.path, name, mapped)

    def info(self) -> ModelInfo:
        """Everything but the weights. pipeline.json is read first, so a foreign folder fails with that error."""
        meta = self.meta
        return ModelInfo(self.config, self.vqgan_config, self.tokenizer, self.defaults, meta.get("provenance") or {})


def _words(name: str) -> list[str]:
    """The words of a concept name ("woman’s hat" → woman, hat), lower case, single letters left out."""
    return [w for w in "".join(c if c.isalpha() else " " for c in name.lower()).split() if len(w) > 1]
