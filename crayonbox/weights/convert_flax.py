"""Official Flax checkpoints → our state dicts: DALL·E mini / mega (`dalle-mini/dalle-mini`, `…/dalle-mega`)
and the VQGAN (`dalle-mini/vqgan_imagenet_f16_16384`, vqgan-jax layout).

What changes on the way:
- layers trained with `nn.scan` are stacked on a leading axis (`layers/FlaxBartEncoderLayers/...`, shape
  (L, ...)); they are split into `layers.{i}`. Unscanned checkpoints (`FlaxBartEncoderLayer_{i}`) work too;
- Dense kernels are (in, out), torch Linear weights (out, in): transposed. Conv kernels are (kh, kw, in, out),
  torch (out, in, kh, kw);
- `scale` / `embedding` / `kernel` → `weight`; Flax module names → min-dalle's (`LayerNorm_0` →
  `pre_self_attn_layer_norm`, `GLU_0/Dense_0` → `glu.fc0`, …); `lm_head` moves into the decoder.
Every tensor is then checked against the config's shapes, and no source tensor may go unused.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crayonbox.config import ModelConfig, VQGANConfig
from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.vqgan import VQGAN
from crayonbox.weights.checks import check_state, expected_shapes
from crayonbox.weights.flax_msgpack import flatten

LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}

# Flax module name → ours, per level of the tree. A value is (our name, table for the level below); None
# below means the next path element is a parameter leaf.
ATTENTION = {name: (name, None) for name in ("q_proj", "k_proj", "v_proj", "out_proj")}
GLU = {
    "LayerNorm_0": ("ln0", None),
    "LayerNorm_1": ("ln1", None),
    "Dense_0": ("fc0", None),
    "Dense_1": ("fc1", None),
    "Dense_2": ("fc2", None),
}
ENCODER_LAYER = {
    "LayerNorm_0": ("pre_self_attn_layer_norm", None),
    "FlaxBartAttention_0": ("self_attn", ATTENTION),
    "LayerNorm_1": ("self_attn_layer_norm", None),
    "GLU_0": ("glu", GLU),
}
DECODER_LAYER = {
    **ENCODER_LAYER,
    "LayerNorm_2": ("pre_encoder_attn_layer_norm", None),
    "FlaxBartAttention_1": ("encoder_attn", ATTENTION),
    "LayerNorm_3": ("encoder_attn_layer_norm", None),
}
EMBEDDINGS = {
    name: (name, None) for name in ("embed_tokens", "embed_positions", "layernorm_embedding", "final_ln")
}

# config.json fields that select a DalleBart variant, with the value the released models use and crayonbox
# implements. A field that is absent is not checked (older configs lack most of them).
IMPLEMENTED_VARIANT = {
    "ln_type": "layernorm",
    "ln_positions": "normformer",
    "use_glu": True,
    "use_bias": False,
    "force_ln_scale": False,
    "head_scale": False,
    "use_head_scale": False,
    "use_cosine_attention": False,
    "sinkhorn_iters": 1,
    "use_alibi": False,
    "use_swin_position_embeddings": False,
    "use_deepnet_scaling": False,
    "scale_embedding": False,
    "use_absolute_position_embeddings": True,
    "use_final_ln_encoder": True,
    "use_final_ln_decoder": True,
    "activation_function": "gelu",
    "tie_word_embeddings": False,
}
BART_FIELDS = (
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "encoder_vocab_size",
    "image_vocab_size",
    "max_text_length",
    "image_length",
)

# vqgan-jax's VQGANConfig defaults (configuration_vqgan.py), for fields a config.json leaves out.
VQGAN_JAX_DEFAULTS: dict[str, Any] = {
    "ch": 128,
    "out_ch": 3,
    "in_channels": 3,
    "num_res_blocks": 2,
    "resolution": 256,
    "z_channels": 256,
    "ch_mult": (1, 1, 2, 2, 4),
    "attn_resolutions": (16,),
    "n_embed": 1024,
    "embed_dim": 256,
    "double_z": False,
    "resamp_with_conv": True,
    "give_pre_end": False,
}
VQGAN_JAX_GROUPNORM_EPS = 1e-6  # vqgan-jax GroupNorm(epsilon=1e-6) everywhere


def _unsupported(data: dict[str, Any], implemented: dict[str, Any], where: str) -> None:
    wrong = [
        f"{key}={data[key]!r} (crayonbox implements {value!r})"
        for key, value in implemented.items()
        if key in data and data[key] != value
    ]
    if wrong:
        raise CrayonboxError(
            f"{where} describes a model variant crayonbox does not implement: {', '.join(wrong)}"
        )


def bart_config_from_official(data: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Our ModelConfig from the fields of an official DalleBartConfig `config.json`.

    The decoder embeds image_vocab_size + 1 rows (codes + BOS; mega pads image_vocab_size to 16415). The BOS
    is `decoder_start_token_id` (16384 in both released models), and the real codes are the ids below both.
    """
    missing = [key for key in BART_FIELDS if key not in data]
    if missing:
        raise CrayonboxError(f"{where} lacks {', '.join(missing)}: is it a dalle-mini DalleBart config?")
    _unsupported(data, IMPLEMENTED_VARIANT, where)
    for a, b in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if data[a] != data[b]:
            raise CrayonboxError(
                f"{where}: {a}={data[a]} differs from {b}={data[b]}; crayonbox needs them equal"
            )
    bos = data.get("decoder_start_token_id", data["image_vocab_size"])  # DalleBartConfig's default
    cfg = ModelConfig(
        d_model=data["d_model"],
        encoder_layers=data["encoder_layers"],
        decoder_layers=data["decoder_layers"],
        heads=data["encoder_attention_heads"],
        glu_dim=data["encoder_ffn_dim"],
        text_vocab_size=data["encoder_vocab_size"],
        image_vocab_size=min(data["image_vocab_size"], bos),
        image_embed_rows=data["image_vocab_size"] + 1,
        text_length=data["max_text_length"],
        image_length=data["image_length"],
        bos_token_id=bos,
    )
    cfg.validate()
    return cfg


def normalizer_mode_from_official(data: dict[str, Any]) -> str:
    """dalle-mini's processor normalises prompts only when `normalize_text` is set (its default is False)."""
    return "official" if data.get("normalize_text", False) else "raw"


def _unwrap(tree: dict[str, Any]) -> dict[str, Any]:
    """Accept a bare parameter tree or one wrapped in {"params": ...} (a train state's layout)."""
    return tree["params"] if set(tree) == {"params"} and isinstance(tree["params"], dict) else tree


def _translate(parts: tuple[str, ...], table: dict[str, Any]) -> list[str] | None:
    """Our name pieces for a Flax path below `table`, or None if some element is not one we know."""
    out: list[str] = []
    for i, part in enumerate(parts):
        if table is None:  # a parameter leaf must come last
            return [*out, LEAVES[part]] if i == len(parts) - 1 and part in LEAVES else None
        if part not in table:
            return None
        name, table = table[part]
        out.append(name)
    return None  # the path stopped at a module, not at a parameter


def _bart_key(path: tuple[str, ...]) -> tuple[str, str | int | None] | None:
    """(our key, layer storage) for a Flax path; storage is "scan", a layer index, or None (not per layer).

    In the key, "{i}" stands for the layer index.
    """
    if path[0] == "lm_head":
        pieces = _translate(path[1:], None) if len(path) == 2 else None
        return ("decoder.lm_head." + pieces[0], None) if pieces else None
    if len(path) < 4 or path[0] != "model" or path[1] not in ("encoder", "decoder"):
        return None
    side, rest = path[1], path[2:]
    if rest[0] != "layers":
        pieces = _translate(rest, EMBEDDINGS)
        return (".".join([side, *pieces]), None) if pieces else None
    stem = "FlaxBartEncoderLayer" if side == "encoder" else "FlaxBartDecoderLayer"
    holder = rest[1]
    single = re.fullmatch(stem + r"_(\d+)", holder)
    if holder != stem + "s" and not single:
        return None
    pieces = _translate(rest[2:], ENCODER_LAYER if side == "encoder" else DECODER_LAYER)
    if not pieces:
        return None
    storage: str | int = "scan" if holder == stem + "s" else int(single.group(1))
    return ".".join([side, "layers", "{i}", *pieces]), storage


def convert_bart_params(
    tree: dict[str, Any], cfg: ModelConfig, source: str = "flax_model.msgpack"
) -> dict[str, Tensor]:
    """The official Flax parameter tree (scanned or not) → a `DalleBart` state dict, checked against `cfg`."""
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unknown: list[str] = []
    for path, value in flatten(_unwrap(tree)):
        name = "/".join(path)
        found = _bart_key(path)
        if found is None or not isinstance(value, np.ndarray):
            unknown.append(name)
            continue
        key, storage = found
        array = np.swapaxes(value, -1, -2) if path[-1] == "kernel" else value  # Dense (in, out) → (out, in)
        if storage is None:
            state[key], origin[key] = torch.from_numpy(array), name
        elif storage == "scan":
            layers = cfg.encoder_layers if path[1] == "encoder" else cfg.decoder_layers
            if array.ndim == 0 or array.shape[0] != layers:
                raise CrayonboxError(
                    f"{source}: {name} is stacked over {array.shape[:1]} layers, but the config "
                    f"has {layers} {path[1]} layers"
                )
            for i in range(layers):
                state[key.format(i=i)], origin[key.format(i=i)] = torch.from_numpy(array[i]), f"{name}[{i}]"
        else:
            state[key.format(i=storage)], origin[key.format(i=storage)] = torch.from_numpy(array), name
    if unknown:
        shown = ", ".join(unknown[:6]) + (f" (and {len(unknown) - 6} more)" if len(unknown) > 6 else "")
        raise CrayonboxError(f"{source}: {len(unknown)} parameter(s) that no DALL·E mini layer has: {shown}")
    check_state(state, expected_shapes(lambda: DalleBart(cfg)), source, origin)
    return state


def vqgan_config_from_official(data: dict[str, Any], where: str = "config.json") -> VQGANConfig:
    """Our VQGANConfig from a vqgan-jax `config.json` (absent fields take vqgan-jax's defaults)."""
    merged = {**VQGAN_JAX_DEFAULTS, **data}
    _unsupported(merged, {"resamp_with_conv": True, "give_pre_end": False}, where)
    return VQGANConfig(
        ch=merged["ch"],
        ch_mult=tuple(merged["ch_mult"]),
        num_res_blocks=merged["num_res_blocks"],
        attn_resolutions=tuple(merged["attn_resolutions"]),
        resolution=merged["resolution"],
        in_channels=merged["in_channels"],
        out_ch=merged["out_ch"],
        z_channels=merged["z_channels"],
        embed_dim=merged["embed_dim"],
        n_embed=merged["n_embed"],
        double_z=merged["double_z"],
        groupnorm_eps=VQGAN_JAX_GROUPNORM_EPS,
    )


def _vqgan_key(path: tuple[str, ...]) -> str | None:
    """vqgan-jax names → taming's: `up_4/block_0/conv1/kernel` → `up.4.block.0.conv1.weight`."""
    if path[-1] not in LEAVES:
        return None
    parts: list[str] = []
    for i, part in enumerate(path[:-1]):
        level = re.fullmatch(r"(down|up)_(\d+)", part)
        inner = re.fullmatch(r"(block|attn)_(\d+)", part)
        if level and i == 1:  # encoder/down_0, decoder/up_4
            part = f"{level.group(1)}.{level.group(2)}"
        elif inner and i == 2 and path[1] != "mid":  # block_0 inside a level; mid keeps block_1 / attn_1
            part = f"{inner.group(1)}.{inner.group(2)}"
        parts.append(part)
    return ".".join([*parts, LEAVES[path[-1]]])


def convert_vqgan_params(
    tree: dict[str, Any], cfg: VQGANConfig, source: str = "flax_model.msgpack"
) -> dict[str, Tensor]:
    """A vqgan-jax parameter tree → our `VQGAN` state dict (encoder half optional)."""
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for path, value in flatten(_unwrap(tree)):
        name = "/".join(path)
        key = _vqgan_key(path)
        if key is None or not isinstance(value, np.ndarray):
            raise CrayonboxError(f"{source}: {name} is not a parameter of a taming/vqgan-jax VQGAN")
        if path[-1] == "kernel" and value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)  # (kh, kw, in, out) → (out, in, kh, kw)
        state[key], origin[key] = torch.from_numpy(value), name
    check_state(
        state,
        expected_shapes(lambda: VQGAN(cfg)),
        source,
        origin,
        optional_groups=[("encoder.", "quant_conv.")],
    )
    return state
