"""The DALL·E mini text encoder: BART encoder with NormFormer LayerNorm placement and GLU feed-forward.

Forward pass (DM modeling.py:1126-1201):
    h = LN(embed_tokens[ids] + embed_positions[0..T-1])
    per layer:  h = h + LN(SelfAttn(LN_b(h)));  h = h + GLU(h)
    h = LN_b(h)
"""

from __future__ import annotations

import torch
from torch import LongTensor, Tensor, nn

from crayonbox.config import ModelConfig
from crayonbox.model.layers import GLU, Attention, BiasOnlyLayerNorm


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        eps = cfg.layer_norm_eps
        self.pre_self_attn_layer_norm = BiasOnlyLayerNorm(cfg.d_model, eps)
        self.self_attn = Attention(cfg.d_model, cfg.heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model, eps)
        self.glu = GLU(cfg.d_model, cfg.glu_dim, eps)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        z = self.pre_self_attn_layer_norm(h)
        h = h + self.self_attn_layer_norm(self.self_attn(z, mask))
        return h + self.glu(h)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.text_vocab_size, cfg.d_model)
        self.embed_positions = nn.Embedding(cfg.text_length, cfg.d_model)
        self.layernorm_embedding = nn.LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.final_ln = BiasOnlyLayerNorm(cfg.d_model, cfg.layer_norm_eps)

    def forward(self, text_ids: LongTensor, attention_mask: Tensor | None = None) -> Tensor:
        """text_ids (B, T) → states (B, T, d). Padding keys are masked; pad rows are computed but unused.

        Callers may pass only the first max-real-length columns: because padding is masked as keys, the states
        at real positions do not depend on how much padding follows (this is how inference skips padding).
        """
        if attention_mask is None:
            attention_mask = text_ids != self.cfg.text_pad_id
        t = text_ids.shape[1]
        positions = torch.arange(t, device=text_ids.device)
        h = self.embed_tokens(text_ids) + self.embed_positions(positions)
        h = self.layernorm_embedding(h)
        mask = attention_mask[:, None, None, :].bool()  # (B, 1, 1, T): every query sees the real keys
        for layer in self.layers:
            h = layer(h, mask)
        return self.final_ln(h)
