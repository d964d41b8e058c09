"""Building blocks shared by the encoder and the decoder: NormFormer LayerNorms, the GLU, attention.

Parameter names follow min-dalle's torch port (`self_attn.q_proj`, `glu.fc0`, …) so its checkpoints load
without renaming. Norms that feed straight into a Dense have no scale in DALL·E mini (`force_ln_scale=false`);
they are `BiasOnlyLayerNorm` here, so a state dict holds exactly the parameters the official Flax one does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BiasOnlyLayerNorm(nn.Module):
    """LayerNorm with a bias but no scale (Flax `use_scale=False`): the scale would fold into the next Dense."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.bias.shape, None, self.bias.to(x.dtype), self.eps)  # autocast-safe


class GLU(nn.Module):
    """fc2( ln1( gelu(fc0(ln0 x)) * fc1(ln0 x) ) ), exact-erf gelu, no biases (DM modeling.py:491-556).

    Weight-only CPU modes replace fc0 and fc1 by one layer `fc01` holding both weights (model/packed_linear.py):
    one product instead of two, which reads the weights faster in a decode step."""

    def __init__(self, d_model: int, glu_dim: int, eps: float):
        super().__init__()
        self.ln0 = BiasOnlyLayerNorm(d_model, eps)
        self.ln1 = BiasOnlyLayerNorm(glu_dim, eps)
        self.fc0 = nn.Linear(d_model, glu_dim, bias=False)
        self.fc1 = nn.Linear(d_model, glu_dim, bias=False)
        self.fc2 = nn.Linear(glu_dim, d_model, bias=False)
        self.fc01: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        z = self.ln0(x)
        gate, value = self.fc01(z).chunk(2, -1) if self.fc01 is not None else (self.fc0(z), self.fc1(z))
        return self.fc2(self.ln1(F.gelu(gate) * value))


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections and no biases.

    Heads are contiguous blocks of `head_dim` channels. `mask` is boolean, True where a query may attend.
    Weight-only CPU modes replace a self-attention's q, k and v projections by one layer `qkv_proj` holding
    all three weights (model/packed_linear.py), as they always see the same input.
    """

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.qkv_proj: nn.Module | None = None

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, d) → (B, heads, T, head_dim)."""
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Project a key/value source once, e.g. the encoder states for every decoder step."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def queries_keys_values(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention's projections of one input: q (B,T,d) and k, v with heads split."""
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).chunk(3, -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return q, self.split_heads(k), self.split_heads(v)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """q (B,T,d) unprojected-heads input already projected; k, v (B,h,S,hd) → (B,T,d) after out_proj."""
        q = self.split_heads(q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, h, t, hd = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * hd))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Self-attention of x (the encoder's; the decoder calls the parts itself, around its KV cache)."""
        return self.attend(*self.queries_keys_values(x), mask)
