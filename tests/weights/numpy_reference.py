"""An independent float64 numpy forward pass of DALL·E mini, straight from the *Flax* parameter tree.

It follows DM modeling.py (x @ kernel with kernels (in, out), LayerNorm with Flax's `scale`, scanned layers
indexed on their leading axis) and shares no code with crayonbox, so agreement with a converted model proves
the converter's transposes and renames.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import erf


def layer_norm(x: np.ndarray, p: dict[str, np.ndarray], eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    return y * p["scale"] + p["bias"] if "scale" in p else y + p["bias"]


def attention(
    p: dict[str, Any], x: np.ndarray, source: np.ndarray, mask: np.ndarray, heads: int
) -> np.ndarray:
    """mask (B, Tq, Tk) bool: True where a query may look."""
    b, tq, d = x.shape
    hd = d // heads

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(t.shape[0], t.shape[1], heads, hd)

    q, k, v = (split(inp @ p[f"{n}_proj"]["kernel"]) for n, inp in (("q", x), ("k", source), ("v", source)))
    scores = np.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(hd)
    scores = np.where(mask[:, None], scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, tq, d)
    return out @ p["out_proj"]["kernel"]


def glu(p: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = layer_norm(x, p["LayerNorm_0"])
    a = z @ p["Dense_0"]["kernel"]
    h = 0.5 * a * (1 + erf(a / np.sqrt(2))) * (z @ p["Dense_1"]["kernel"])  # exact-erf gelu
    return layer_norm(h, p["LayerNorm_1"]) @ p["Dense_2"]["kernel"]


def _layers(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-layer param dicts from either layout: one scanned entry (leading L axis) or `..._{i}` entries."""
    ((name, first),) = list(stack.items())[:1]
    if name.endswith("s"):  # FlaxBartEncoderLayers: index every leaf on axis 0
        count = len(next(iter(_leaves(first))))

        def pick(t: Any, i: int) -> Any:
            return {k: pick(v, i) for k, v in t.items()} if isinstance(t, dict) else t[i]

        return [pick(first, i) for i in range(count)]
    return [stack[key] for key in sorted(stack, key=lambda k: int(k.rsplit("_", 1)[1]))]


def _leaves(t: Any) -> list[np.ndarray]:
    return [x for v in t.values() for x in _leaves(v)] if isinstance(t, dict) else [t]


def _f64(tree: Any) -> Any:
    return {k: _f64(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree, np.float64)


def encode(tree: dict[str, Any], ids: np.ndarray, mask: np.ndarray, heads: int) -> np.ndarray:
    """Encoder states (B, T, d) for text ids (B, T) and a 0/1 padding mask."""
    p = _f64(tree)["model"]["encoder"]
    h = p["embed_tokens"]["embedding"][ids] + p["embed_positions"]["embedding"][: ids.shape[1]]
    h = layer_norm(h, p["layernorm_embedding"])
    keys = np.broadcast_to(mask.astype(bool)[:, None, :], (ids.shape[0], ids.shape[1], ids.shape[1]))
    for layer in _layers(p["layers"]):
        z = layer_norm(h, layer["LayerNorm_0"])
        h = h + layer_norm(attention(layer["FlaxBartAttention_0"], z, z, keys, heads), layer["LayerNorm_1"])
        h = h + glu(layer["GLU_0"], h)
    return layer_norm(h, p["final_ln"])


def decoder_logits(
    tree: dict[str, Any], image_in: np.ndarray, states: np.ndarray, text_mask: np.ndarray, heads: int
) -> np.ndarray:
    """Teacher-forced logits (B, T, image rows) for decoder inputs [BOS, x_0, …]."""
    f = _f64(tree)
    p = f["model"]["decoder"]
    b, t = image_in.shape
    h = p["embed_tokens"]["embedding"][image_in] + p["embed_positions"]["embedding"][:t]
    h = layer_norm(h, p["layernorm_embedding"])
    causal = np.broadcast_to(np.tril(np.ones((t, t), bool)), (b, t, t))
    cross = np.broadcast_to(text_mask.astype(bool)[:, None, :], (b, t, text_mask.shape[1]))
    for layer in _layers(p["layers"]):
        z = layer_norm(h, layer["LayerNorm_0"])
        h = h + layer_norm(attention(layer["FlaxBartAttention_0"], z, z, causal, heads), layer["LayerNorm_1"])
        z = layer_norm(h, layer["LayerNorm_2"])
        h = h + layer_norm(
            attention(layer["FlaxBartAttention_1"], z, states, cross, heads), layer["LayerNorm_3"]
        )
        h = h + glu(layer["GLU_0"], h)
    return layer_norm(h, p["final_ln"]) @ f["lm_head"]["kernel"]


def conv2d_nhwc(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Flax nn.Conv with a (kh, kw, in, out) kernel, stride 1, 'SAME'-style padding k//2, on (H, W, C)."""
    kernel = np.asarray(p["kernel"], np.float64)
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((x.shape[0], x.shape[1], kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += padded[i : i + x.shape[0], j : j + x.shape[1]] @ kernel[i, j]
    return out + p["bias"]
