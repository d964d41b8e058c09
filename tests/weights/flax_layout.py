"""Test-side writers of checkpoints in the official layouts, built from the *upstream* module structure
(DM modeling.py, vqgan-jax modeling_flax_vqgan.py) rather than from crayonbox's modules, so that a test
comparing the two can catch a converter that is merely self-consistent.

`to_bytes` mirrors `flax.serialization.to_bytes` (msgpack_serialize): arrays as ExtType 1 holding msgpack
(shape, dtype name, bytes), numpy scalars as ExtType 3, arrays over `max_chunk` bytes split into chunks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from crayonbox.config import ModelConfig, VQGANConfig

MAX_CHUNK_SIZE = 2**30  # flax.serialization.MAX_CHUNK_SIZE

# Like mega, the official image_vocab_size (23) is padded past the BOS (20): 20 real codes, 24 embedding rows.
TINY = ModelConfig(
    d_model=32,
    encoder_layers=2,
    decoder_layers=3,
    heads=4,
    glu_dim=48,
    text_vocab_size=10,
    image_vocab_size=20,
    image_embed_rows=24,
    text_length=8,
    image_length=9,
    bos_token_id=20,
)
TINY_VQGAN = VQGANConfig(
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    resolution=8,
    z_channels=8,
    embed_dim=8,
    n_embed=20,
)


def _ndarray_to_bytes(arr: np.ndarray) -> bytes:
    return msgpack.packb((arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True)


def _ext_pack(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return msgpack.ExtType(1, _ndarray_to_bytes(x))
    if isinstance(x, np.generic):
        return msgpack.ExtType(3, _ndarray_to_bytes(np.asarray(x)))
    if isinstance(x, complex):
        return msgpack.ExtType(2, msgpack.packb((x.real, x.imag)))
    return x


def _chunk_leaves(tree: Any, max_chunk: int) -> Any:
    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        if isinstance(value, np.ndarray) and value.size * value.dtype.itemsize > max_chunk:
            size = max(1, max_chunk // value.dtype.itemsize)
            flat = value.reshape(-1)
            chunks = [flat[i : i + size] for i in range(0, flat.size, size)]
            out[key] = {
                "__msgpack_chunked_array__": True,
                "shape": {str(i): n for i, n in enumerate(value.shape)},
                "chunks": {str(i): c for i, c in enumerate(chunks)},
            }
        else:
            out[key] = _chunk_leaves(value, max_chunk)
    return out


def to_bytes(tree: dict[str, Any], max_chunk: int = MAX_CHUNK_SIZE) -> bytes:
    """What flax.serialization.to_bytes(tree) returns for a nested dict of numpy arrays."""
    return msgpack.packb(_chunk_leaves(tree, max_chunk), default=_ext_pack, strict_types=True)


# ---- DalleBart, as DM modeling.py names it ----------------------------------------------------------------


class Rand:
    """Random arrays of one dtype: matrices N(0, std), LayerNorm scales 1 + N(0, 0.1), biases N(0, 0.1)."""

    def __init__(self, seed: int, dtype: str = "float32", std: float = 0.08):
        self.rng, self.dtype, self.std = np.random.default_rng(seed), np.dtype(dtype), std

    def matrix(self, *shape: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * self.std).astype(self.dtype)

    def bias(self, *shape: int) -> np.ndarray:
        return (self.rng.standard_normal(shape) * 0.1).astype(self.dtype)

    def scale(self, *shape: int) -> np.ndarray:
        return (1 + self.rng.standard_normal(shape) * 0.1).astype(self.dtype)


def _layer(cfg: ModelConfig, r: Rand, lead: tuple[int, ...], decoder: bool) -> dict[str, Any]:
    """One encoder/decoder layer's params; `lead` = (L,) for the scanned layout, () for one layer."""
    d, f = cfg.d_model, cfg.glu_dim

    def attention() -> dict[str, Any]:
        return {
            name: {"kernel": r.matrix(*lead, d, d)} for name in ("q_proj", "k_proj", "v_proj", "out_proj")
        }

    # Flax names modules in creation order: pre-LN, attention, post-LN, (cross block), GLU.
    layer = {
        "LayerNorm_0": {"bias": r.bias(*lead, d)},
        "FlaxBartAttention_0": attention(),
        "LayerNorm_1": {"scale": r.scale(*lead, d), "bias": r.bias(*lead, d)},
    }
    if decoder:
        layer |= {
            "LayerNorm_2": {"bias": r.bias(*lead, d)},
            "FlaxBartAttention_1": attention(),
            "LayerNorm_3": {"scale": r.scale(*lead, d), "bias": r.bias(*lead, d)},
        }
    layer["GLU_0"] = {
        "LayerNorm_0": {"bias": r.bias(*lead, d)},
        "Dense_0": {"kernel": r.matrix(*lead, d, f)},
        "Dense_1": {"kernel": r.matrix(*lead, d, f)},
        "LayerNorm_1": {"bias": r.bias(*lead, f)},
        "Dense_2": {"kernel": r.matrix(*lead, f, d)},
    }
    return layer


def _stack(cfg: ModelConfig, r: Rand, side: str, scanned: bool) -> dict[str, Any]:
    n = cfg.encoder_layers if side == "encoder" else cfg.decoder_layers
    stem = "FlaxBartEncoderLayer" if side == "encoder" else "FlaxBartDecoderLayer"
    if scanned:
        return {stem + "s": _layer(cfg, r, (n,), side == "decoder")}
    return {f"{stem}_{i}": _layer(cfg, r, (), side == "decoder") for i in range(n)}


def bart_tree(
    cfg: ModelConfig, seed: int = 0, scanned: bool = True, dtype: str = "float32"
) -> dict[str, Any]:
    """Random DalleBart params in the hub checkpoint's nested layout (reference §2.1)."""
    r = Rand(seed, dtype)
    d = cfg.d_model

    def side(name: str, vocab: int, positions: int) -> dict[str, Any]:
        return {
            "embed_tokens": {"embedding": r.matrix(vocab, d)},
            "embed_positions": {"embedding": r.matrix(positions, d)},
            "layers": _stack(cfg, r, name, scanned),
            "layernorm_embedding": {"scale": r.scale(d), "bias": r.bias(d)},
            "final_ln": {"bias": r.bias(d)},
        }

    return {
        "model": {
            "encoder": side("encoder", cfg.text_vocab_size, cfg.text_length),
            "decoder": side("decoder", cfg.image_embed_rows, cfg.image_length),
        },
        "lm_head": {"kernel": r.matrix(d, cfg.image_embed_rows)},
    }


def official_config(cfg: ModelConfig, scanned: bool = True) -> dict[str, Any]:
    """A DalleBartConfig config.json for `cfg`, with the fields the released ones carry."""
    return {
        "model_type": "dallebart",
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "encoder_attention_heads": cfg.heads,
        "decoder_attention_heads": cfg.heads,
        "encoder_ffn_dim": cfg.glu_dim,
        "decoder_ffn_dim": cfg.glu_dim,
        "encoder_vocab_size": cfg.text_vocab_size,
        "image_vocab_size": cfg.image_embed_rows - 1,
        "max_text_length": cfg.text_length,
        "image_length": cfg.image_length,
        "decoder_start_token_id": cfg.bos_token_id,
        "bos_token_id": cfg.bos_token_id + 1,
        "eos_token_id": cfg.bos_token_id + 1,
        "pad_token_id": cfg.bos_token_id + 1,
        "min_length": cfg.image_length + 1,
        "max_length": cfg.image_length + 1,
        "init_std": 0.02,
        "activation_function": "gelu",
        "ln_type": "layernorm",
        "ln_positions": "normformer",
        "force_ln_scale": False,
        "use_bias": False,
        "use_glu": True,
        "use_scan": scanned,
        "normalize_text": True,
    }


# ---- VQGAN, as vqgan-jax names it --------------------------------------------------------------------------


def vqgan_tree(cfg: VQGANConfig, seed: int = 0, with_encoder: bool = True) -> dict[str, Any]:
    """Random VQModel params in vqgan-jax's layout: conv kernels (kh, kw, in, out), `up_4/block_0` names."""
    r = Rand(seed, std=0.05)

    def conv(cin: int, cout: int, k: int) -> dict[str, np.ndarray]:
        return {"kernel": r.matrix(k, k, cin, cout), "bias": r.bias(cout)}

    def norm(c: int) -> dict[str, np.ndarray]:
        return {"scale": r.scale(c), "bias": r.bias(c)}

    def resnet(cin: int, cout: int) -> dict[str, Any]:
        block = {
            "norm1": norm(cin),
            "conv1": conv(cin, cout, 3),
            "norm2": norm(cout),
            "conv2": conv(cout, cout, 3),
        }
        return block | ({"nin_shortcut": conv(cin, cout, 1)} if cin != cout else {})

    def attn(c: int) -> dict[str, Any]:
        return {"norm": norm(c), **{name: conv(c, c, 1) for name in ("q", "k", "v", "proj_out")}}

    def mid(c: int) -> dict[str, Any]:
        return {"block_1": resnet(c, c), "attn_1": attn(c), "block_2": resnet(c, c)}

    n, ch, mult = len(cfg.ch_mult), cfg.ch, cfg.ch_mult
    top = ch * mult[-1]
    decoder: dict[str, Any] = {"conv_in": conv(cfg.z_channels, top, 3), "mid": mid(top)}
    res = cfg.resolution // 2 ** (n - 1)
    for i in reversed(range(n)):  # UpsamplingBlock(block_idx=i)
        block_in, block_out = (top if i == n - 1 else ch * mult[i + 1]), ch * mult[i]
        level = {
            f"block_{j}": resnet(block_in if j == 0 else block_out, block_out)
            for j in range(cfg.num_res_blocks + 1)
        }
        if res in cfg.attn_resolutions:
            level |= {f"attn_{j}": attn(block_out) for j in range(cfg.num_res_blocks + 1)}
        if i != 0:
            level["upsample"] = {"conv": conv(block_out, block_out, 3)}
            res *= 2
        decoder[f"up_{i}"] = level
    decoder |= {"norm_out": norm(ch * mult[0]), "conv_out": conv(ch * mult[0], cfg.out_ch, 3)}
    tree: dict[str, Any] = {}
    if with_encoder:
        encoder: dict[str, Any] = {"conv_in": conv(cfg.in_channels, ch, 3)}
        res, in_mult = cfg.resolution, (1, *mult)
        for i in range(n):  # DownsamplingBlock(block_idx=i)
            block_in, block_out = ch * in_mult[i], ch * mult[i]
            level = {
                f"block_{j}": resnet(block_in if j == 0 else block_out, block_out)
                for j in range(cfg.num_res_blocks)
            }
            if res in cfg.attn_resolutions:
                level |= {f"attn_{j}": attn(block_out) for j in range(cfg.num_res_blocks)}
            if i != n - 1:
                level["downsample"] = {"conv": conv(block_out, block_out, 3)}
                res //= 2
            encoder[f"down_{i}"] = level
        z_out = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        encoder |= {"mid": mid(top), "norm_out": norm(top), "conv_out": conv(top, z_out, 3)}
        tree |= {"encoder": encoder, "quant_conv": conv(cfg.z_channels, cfg.embed_dim, 1)}
    tree |= {
        "decoder": decoder,
        "quantize": {"embedding": {"embedding": r.matrix(cfg.n_embed, cfg.embed_dim)}},
        "post_quant_conv": conv(cfg.embed_dim, cfg.z_channels, 1),
    }
    return tree


def vqgan_config_json(cfg: VQGANConfig) -> dict[str, Any]:
    """vqgan-jax's config.json fields for `cfg`."""
    return {
        "ch": cfg.ch,
        "out_ch": cfg.out_ch,
        "in_channels": cfg.in_channels,
        "num_res_blocks": cfg.num_res_blocks,
        "resolution": cfg.resolution,
        "z_channels": cfg.z_channels,
        "ch_mult": list(cfg.ch_mult),
        "attn_resolutions": list(cfg.attn_resolutions),
        "n_embed": cfg.n_embed,
        "embed_dim": cfg.embed_dim,
        "dropout": 0.0,
        "double_z": cfg.double_z,
        "resamp_with_conv": True,
        "give_pre_end": False,
    }


# ---- whole repos -------------------------------------------------------------------------------------------

# A tiny byte-level BPE: enough for Tokenizer.from_folder to load and encode "a b".
VOCAB = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "Ġ": 5, "a": 6, "b": 7, "Ġa": 8, "Ġb": 9}
MERGES = "#version: 0.2\nĠ a\nĠ b\n"


def write_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt of the tiny BPE above."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(VOCAB), encoding="utf-8")
    (folder / "merges.txt").write_text(MERGES, encoding="utf-8")


def write_bart_repo(
    folder: Path, cfg: ModelConfig, seed: int = 0, scanned: bool = True, dtype: str = "float32"
) -> dict[str, Any]:
    """A folder like the hub repo dalle-mini/dalle-mini; returns the parameter tree written."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = bart_tree(cfg, seed, scanned, dtype)
    (folder / "flax_model.msgpack").write_bytes(to_bytes(tree))
    (folder / "config.json").write_text(json.dumps(official_config(cfg, scanned)), encoding="utf-8")
    write_tokenizer(folder)
    return tree


def write_vqgan_repo(folder: Path, cfg: VQGANConfig, seed: int = 1) -> dict[str, Any]:
    """A folder like dalle-mini/vqgan_imagenet_f16_16384; returns the parameter tree written."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = vqgan_tree(cfg, seed)
    (folder / "flax_model.msgpack").write_bytes(to_bytes(tree))
    (folder / "config.json").write_text(json.dumps(vqgan_config_json(cfg)), encoding="utf-8")
    return tree
