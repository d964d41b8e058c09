"""min-dalle's `.pt` files → our state dicts.

min-dalle's parameter names are ours (crayonbox's layers were named after them), so the work is:
- the LayerNorms that have no scale in DALL·E mini are `nn.LayerNorm`s in min-dalle; its files leave their
  weights out and rely on torch's default of ones. Ours have no weight at all. A weight that *is* present must
  be all ones, else the file is not a converted DALL·E mini and dropping it would change the model;
- `detoker.pt` names the codebook `embedding.weight`; ours is `quantize.embedding.weight`;
- the config is read off the shapes (mini vs mega, or any size). Heads cannot be: both released models use
  64-dim heads (min-dalle hard-codes 16 heads for d=1024 and 32 for d=2048).
Files are loaded with `torch.load(weights_only=True)`: tensors only, nothing unpickled that could run code.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import Tensor

from crayonbox.config import VQGAN_PRESETS, ModelConfig, VQGANConfig
from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.vqgan import VQGAN
from crayonbox.weights.checks import check_state, expected_shapes

HEAD_DIM = 64  # both released models (d_model / heads = 1024/16 = 2048/32)
OFFICIAL_BOS = 16384  # decoder_start_token_id of both released models; min-dalle starts from 16383 instead

# Our BiasOnlyLayerNorm modules: their `.weight` in min-dalle must be ones and is dropped.
SCALELESS = re.compile(
    r"(.*\.)?(pre_self_attn_layer_norm|pre_encoder_attn_layer_norm|glu\.ln0|glu\.ln1|final_ln)"
    r"\.weight$"
)


def load_pt(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a `.pt` file, safely (weights_only), with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CrayonboxError(f"missing file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError… for a bad file
        reason = (str(e).strip().splitlines() or [""])[0]  # torch's messages run over several lines
        raise CrayonboxError(
            f"cannot read {path} as a torch state dict ({type(e).__name__}: {reason}); "
            "the file is truncated or not a min-dalle checkpoint"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CrayonboxError(f"{path} does not hold a state dict of tensors")
    return state


def _drop_unit_scales(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if SCALELESS.match(key):
            if not torch.equal(value, torch.ones_like(value)):
                raise CrayonboxError(
                    f"{source}: {key} is not all ones (max |w-1| = "
                    f"{(value.float() - 1).abs().max().item():.3g}); DALL·E mini has no scale "
                    "on this LayerNorm, so this is not a DALL·E mini checkpoint"
                )
            continue
        out[key] = value
    return out


def _layer_count(state: dict[str, Tensor]) -> int:
    indices = {int(m.group(1)) for key in state if (m := re.match(r"layers\.(\d+)\.", key))}
    return max(indices) + 1 if indices else 0


def _shape(state: dict[str, Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CrayonboxError(f"{source} has no {key}: is it a min-dalle encoder/decoder file?")
    return tuple(state[key].shape)


def bart_config_from_mindalle(
    encoder: dict[str, Tensor],
    decoder: dict[str, Tensor],
    heads: int | None = None,
    image_vocab_size: int = OFFICIAL_BOS,
) -> ModelConfig:
    """ModelConfig read off min-dalle's tensor shapes (mini: d 1024, 12 layers; mega: d 2048, 24 layers).

    `image_vocab_size` is the number of real codes (the VQGAN codebook); the BOS is the official one, 16384.
    """
    text_vocab, d_model = _shape(encoder, "embed_tokens.weight", "encoder")
    glu_dim = _shape(encoder, "layers.0.glu.fc0.weight", "encoder")[0]
    image_rows = _shape(decoder, "embed_tokens.weight", "decoder")[0]
    cfg = ModelConfig(
        d_model=d_model,
        encoder_layers=_layer_count(encoder),
        decoder_layers=_layer_count(decoder),
        heads=heads or max(1, d_model // HEAD_DIM),
        glu_dim=glu_dim,
        text_vocab_size=text_vocab,
        image_vocab_size=min(image_vocab_size, image_rows - 1),
        image_embed_rows=image_rows,
        text_length=_shape(encoder, "embed_positions.weight", "encoder")[0],
        image_length=_shape(decoder, "embed_positions.weight", "decoder")[0],
        bos_token_id=min(OFFICIAL_BOS, image_rows - 1),
    )
    cfg.validate()
    return cfg


def convert_mindalle_bart(
    encoder: dict[str, Tensor],
    decoder: dict[str, Tensor],
    cfg: ModelConfig,
    source: str = "min-dalle encoder/decoder",
) -> dict[str, Tensor]:
    """min-dalle encoder + decoder state dicts → one `DalleBart` state dict, checked against `cfg`."""
    state = {f"encoder.{k}": v for k, v in _drop_unit_scales(encoder, "encoder").items()}
    state |= {f"decoder.{k}": v for k, v in _drop_unit_scales(decoder, "decoder").items()}
    check_state(state, expected_shapes(lambda: DalleBart(cfg)), source)
    return state


def vqgan_config_for_detokenizer(detoker: dict[str, Tensor]) -> VQGANConfig:
    """min-dalle's detokenizer is always taming's f16/16384 VQGAN (the official weights, converted).

    The config keeps the official GroupNorm eps (1e-6): min-dalle's 1e-5 is its own deviation, not a
    property of the weights.
    """
    cfg = VQGAN_PRESETS["f16_16384"]
    rows = _shape(detoker, "embedding.weight", "detokenizer")
    if rows != (cfg.n_embed, cfg.embed_dim):
        raise CrayonboxError(f"detokenizer codebook is {rows}, expected ({cfg.n_embed}, {cfg.embed_dim})")
    return dataclasses.replace(cfg)


def convert_mindalle_vqgan(
    detoker: dict[str, Tensor], cfg: VQGANConfig, source: str = "detoker.pt"
) -> dict[str, Tensor]:
    """`detoker.pt` (decoder half only) → our `VQGAN` state dict without the encoder."""
    state = {("quantize.embedding.weight" if k == "embedding.weight" else k): v for k, v in detoker.items()}
    check_state(
        state, expected_shapes(lambda: VQGAN(cfg)), source, optional_groups=[("encoder.", "quant_conv.")]
    )
    return state
