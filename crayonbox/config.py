"""Model configurations. The defaults *are* the documentation: every field says what it is.

`ModelConfig` describes the BART-style encoder–decoder (text tokens → VQGAN tokens), `VQGANConfig` the
image tokenizer (taming-transformers f16 VQGAN). Presets `mini` and `mega` are the released DALL·E mini /
mega shapes; the small presets are for our own
training on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crayonbox.errors import CrayonboxError


@dataclass
class ModelConfig:
    d_model: int = 1024  # width of every residual stream
    encoder_layers: int = 12
    decoder_layers: int = 12
    heads: int = 16  # head_dim = d_model // heads (64 in both released models)
    glu_dim: int = 2730  # GLU hidden size (encoder_ffn_dim = decoder_ffn_dim)
    text_vocab_size: int = 50264  # rows of the text embedding
    image_vocab_size: int = 16384  # VQGAN codebook size: ids 0..image_vocab_size-1 are real codes
    image_embed_rows: int = 16385  # decoder embedding rows = lm_head width (codes + BOS, padded in mega)
    text_length: int = 64  # text positions (prompts are padded / cut to this)
    image_length: int = 256  # image tokens = (image size / 16) ** 2
    bos_token_id: int = (
        16384  # decoder start token (min-dalle uses 16383, a real code; we follow the official)
    )
    text_pad_id: int = 1  # BART <pad>
    layer_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def grid(self) -> int:
        side = int(round(self.image_length**0.5))
        return side

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value, least = getattr(self, f.name), 0 if f.name in ("bos_token_id", "text_pad_id") else 1
            if f.name != "layer_norm_eps" and value < least:
                raise CrayonboxError(f"{f.name} must be at least {least} (got {value})")
        if not 0 < self.layer_norm_eps < 1:
            raise CrayonboxError(f"layer_norm_eps must be between 0 and 1 (got {self.layer_norm_eps})")
        if self.d_model % self.heads:
            raise CrayonboxError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.grid**2 != self.image_length:
            raise CrayonboxError(f"image_length {self.image_length} is not a square number of tokens")
        if self.image_embed_rows <= self.bos_token_id:
            raise CrayonboxError("image_embed_rows must leave room for the BOS token id")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VQGANConfig:
    ch: int = 128  # base channel count
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # one entry per resolution level; len-1 downsamplings
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)  # feature-map sizes that get an attention block
    resolution: int = 256  # image side in pixels
    in_channels: int = 3
    out_ch: int = 3
    z_channels: int = 256
    embed_dim: int = 256  # codebook vector size
    n_embed: int = 16384  # codebook size
    double_z: bool = False
    groupnorm_eps: float = 1e-6  # the official VQGAN (vqgan-jax) uses 1e-6; min-dalle's port uses 1e-5

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def tokens_side(self) -> int:
        return self.resolution // self.downsample

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d


# The largest guidance scale anything accepts (the server's API, `generate`, `lab probe`): beyond it the
# unconditional logits are scaled into floating-point noise, and inf turns every logit into nan.
MAX_CONDITION_SCALE = 100.0


def check_condition_scale(value: float, where: str = "--condition-scale") -> float:
    """`value` as a float, or a one-line error when it is not a finite number in [0, MAX_CONDITION_SCALE]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= MAX_CONDITION_SCALE:
        raise CrayonboxError(f"{where} must be a number from 0 to {MAX_CONDITION_SCALE:g} (got {value!r})")
    return float(value)


# Inference precisions (`Pipeline.from_pretrained(dtype=...)`, `--dtype`); fp16w and int8 are fbgemm weight-only
# modes with fp32 activations, auto picks fp16w on x86 (see pipeline.WEIGHT_ONLY).
PRECISIONS = ("float32", "bfloat16", "float16", "fp16w", "int8", "auto")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DEVICE_HELP = "where the model runs: auto (default: a GPU when there is one, else the CPU), cpu, cuda, cuda:N, mps"

MODEL_PRESETS: dict[str, ModelConfig] = {
    "mini": ModelConfig(),
    "mega": ModelConfig(
        d_model=2048,
        encoder_layers=24,
        decoder_layers=24,
        heads=32,
        glu_dim=4096,
        text_vocab_size=50272,
        image_vocab_size=16384,
        image_embed_rows=16416,
    ),
    # Our own CPU-trainable shapes: 8×8 VQGAN grids (64 px images, f8), small vocabularies.
    "small": ModelConfig(
        d_model=256,
        encoder_layers=4,
        decoder_layers=4,
        heads=4,
        glu_dim=682,
        text_vocab_size=4096,
        image_vocab_size=512,
        image_embed_rows=513,
        text_length=64,
        image_length=64,
        bos_token_id=512,
    ),
    "tiny": ModelConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        heads=2,
        glu_dim=128,
        text_vocab_size=512,
        image_vocab_size=64,
        image_embed_rows=65,
        text_length=16,
        image_length=16,
        bos_token_id=64,
    ),
}

VQGAN_PRESETS: dict[str, VQGANConfig] = {
    "f16_16384": VQGANConfig(),
    # 64 px images → 8×8 tokens (f8), 512 codes: small enough to train on 2 CPU cores.
    "small": VQGANConfig(
        ch=64,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=64,
        z_channels=64,
        embed_dim=64,
        n_embed=512,
    ),
    # The default model's: 32 px images, f4 → the same 8×8 grid of 512 codes at 1.24 GFLOP per image (small
    # costs 22.6), which is what fits a CPU training budget (docs/training.md).
    "small32": VQGANConfig(
        ch=24,
        ch_mult=(1, 2, 4),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=32,
        z_channels=64,
        embed_dim=64,
        n_embed=512,
    ),
    "tiny": VQGANConfig(
        ch=32,
        ch_mult=(1, 1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        resolution=16,
        z_channels=16,
        embed_dim=16,
        n_embed=64,
    ),
}

# small32 with one downsampling fewer: 16×16 codes at 32 px, so a figure in a three-object scene spans ~5 codes
# a side instead of ~2.5; four times the transformer's image sequence (docs/training.md).
VQGAN_PRESETS["small32f2"] = dataclasses.replace(VQGAN_PRESETS["small32"], ch_mult=(1, 2))


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise CrayonboxError(f"{where}: unknown config field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _typed(value, type(names[key].default), f"{where}: {key}")
    return cls(**kwargs)


def _typed(value: Any, kind: type, where: str) -> Any:
    """`value` checked against the type of the field's default, so `"d_model": "big"` is an error that names
    the field instead of a TypeError deep inside the model."""
    if kind is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value):
            raise CrayonboxError(f"{where} must be a list of whole numbers (got {value!r})")
        return tuple(value)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise CrayonboxError(f"{where} must be {'a whole number' if kind is int else 'a ' + kind.__name__} "
                             f"(got {value!r})")
    return float(value) if kind is float else value


def model_config_from_dict(data: dict[str, Any], where: str = "config") -> ModelConfig:
    cfg = _from_dict(ModelConfig, data, where)
    try:
        cfg.validate()
    except CrayonboxError as e:
        raise CrayonboxError(f"{where}: {e}") from None
    return cfg


def vqgan_config_from_dict(data: dict[str, Any], where: str = "config") -> VQGANConfig:
    return _from_dict(VQGANConfig, data, where)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from a file with an error that names the file, never a bare traceback."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CrayonboxError(f"missing file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CrayonboxError(f"corrupt JSON in {path}: {e}") from None
    except OSError as e:  # a folder, a path under a file, no permission
        raise CrayonboxError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise CrayonboxError(f"corrupt JSON in {path}: expected an object {{...}}, got {type(data).__name__}")
    return data


@contextmanager
def atomic_write(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """The one way crayonbox replaces a file: write to the yielded temporary path beside `path`; when the block
    ends it is renamed over `path` (after an fsync if asked), and removed if the block raised. A reader, or a
    run killed mid-write, never sees half a file; the `.NAME.PID.tmp` a kill -9 leaves behind is what
    `remove_stale_temporaries` and the output guard recognise as ours."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # nothing left after os.replace; the partial file after an error


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the half-written `.*.tmp` files a killed run left in its own folder (call it when resuming, before
    anything writes): their writer is gone, and a rerun writes under its own process id."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON, replaced atomically (see atomic_write)."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=float) + "\n")


def write_json(path: Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


