"""The DALL·E mini image decoder: BART decoder over VQGAN tokens, with a preallocated KV cache.

Forward pass (DM modeling.py:1216-1299):
    h = LN(embed_tokens[img] + embed_positions[pos])          # input at position 0 is BOS
    per layer:  h = h + LN(SelfAttn(LN_b(h)))                  # causal
                h = h + LN(CrossAttn(LN_b(h), encoder states))  # text padding masked
                h = h + GLU(h)
    logits = LN_b(h) @ lm_head                                 # width image_embed_rows, untied

Two ways in: `forward` (teacher forcing, training and parity tests) and `step` (one token per row, for
sampling). `step` takes a position per row, so rows that started at different times share one batch: this is
what lets the server add a request to a running batch at any decode step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import LongTensor, Tensor, nn

from crayonbox.config import ModelConfig
from crayonbox.model.layers import GLU, Attention, BiasOnlyLayerNorm


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, eps = cfg.d_model, cfg.layer_norm_eps
        self.pre_self_attn_layer_norm = BiasOnlyLayerNorm(d, eps)
        self.self_attn = Attention(d, cfg.heads)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps)
        self.pre_encoder_attn_layer_norm = BiasOnlyLayerNorm(d, eps)
        self.encoder_attn = Attention(d, cfg.heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d, eps)
        self.glu = GLU(d, cfg.glu_dim, eps)

    def forward(self, h: Tensor, self_mask: Tensor | None, cross_k: Tensor, cross_v: Tensor, cross_mask: Tensor,
                remember: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """One layer. Self-attention attends over the K/V of `h` itself (teacher forcing), or, given
        `remember`, over what it returns after storing this step's K/V in a cache (sampling)."""
        z = self.pre_self_attn_layer_norm(h)
        q, k, v = self.self_attn.queries_keys_values(z)
        if remember is not None:
            k, v = remember(k, v)
        h = h + self.self_attn_layer_norm(self.self_attn.attend(q, k, v, self_mask))
        z = self.pre_encoder_attn_layer_norm(h)
        h = h + self.encoder_attn_layer_norm(
            self.encoder_attn.attend(self.encoder_attn.q_proj(z), cross_k, cross_v, cross_mask)
        )
        return h + self.glu(h)


@dataclass
class DecodeCache:
    """Everything a decode step needs besides weights, for `rows` sequences.

    Self-attention K/V are preallocated for all image positions in a (layers, rows, heads, T, head_dim)
    layout, so a step appends with one indexed write and attends with one matmul, no permute copies.
    Cross-attention K/V of the encoder states are computed once per prompt, not once per step (min-dalle
    recomputes them every step: 89 % of its decoder FLOPs).
    """

    self_k: Tensor
    self_v: Tensor
    cross_k: Tensor  # (layers, rows, heads, S, head_dim)
    cross_v: Tensor
    cross_mask: Tensor  # (rows, 1, 1, S) bool: real text tokens

    @staticmethod
    def empty(cfg: ModelConfig, rows: int, text_len: int, dtype: torch.dtype, device: torch.device) -> DecodeCache:
        """Zeros for `rows` sequences whose prompts are at most `text_len` positions long (mask all False)."""
        kv = (cfg.decoder_layers, rows, cfg.heads, cfg.image_length, cfg.head_dim)
        cross = (cfg.decoder_layers, rows, cfg.heads, text_len, cfg.head_dim)
        return DecodeCache(*(torch.zeros(shape, dtype=dtype, device=device) for shape in (kv, kv, cross, cross)),
                           torch.zeros(rows, 1, 1, text_len, dtype=torch.bool, device=device))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.image_embed_rows, cfg.d_model)
        self.embed_positions = nn.Embedding(cfg.image_length, cfg.d_model)
        self.layernorm_embedding = nn.LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.final_ln = BiasOnlyLayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.image_embed_rows, bias=False)

    def cross_keys_values(self, encoder_states: Tensor) -> tuple[Tensor, Tensor]:
        kv = [layer.encoder_attn.keys_values(encoder_states) for layer in self.layers]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    def forward(self, image_in: LongTensor, encoder_states: Tensor, text_mask: Tensor) -> Tensor:
        """Teacher forcing: image_in (B, T) = [BOS, x_0 … x_{T-2}] → logits (B, T, image_embed_rows)."""
        t = image_in.shape[1]
        positions = torch.arange(t, device=image_in.device)
        h = self.layernorm_embedding(self.embed_tokens(image_in) + self.embed_positions(positions))
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        cross_mask = text_mask[:, None, None, :].bool()
        cross_k, cross_v = self.cross_keys_values(encoder_states)
        for i, layer in enumerate(self.layers):
            h = layer(h, causal, cross_k[i], cross_v[i], cross_mask)
        return self.lm_head(self.final_ln(h))

    def new_cache(self, encoder_states: Tensor, text_mask: Tensor) -> DecodeCache:
        """A cache for encoder_states (rows, S, d), with the cross-attention K/V computed once."""
        rows, length = encoder_states.shape[:2]
        cache = DecodeCache.empty(self.cfg, rows, length, encoder_states.dtype, encoder_states.device)
        cache.cross_k, cache.cross_v = self.cross_keys_values(encoder_states)
        cache.cross_mask = text_mask[:, None, None, :].bool()
        return cache

    def step(self, tokens: LongTensor, positions: LongTensor, cache: DecodeCache, static: bool = False) -> Tensor:
        """Feed one token per row at its own position; returns logits (rows, image_embed_rows).

        Rows may be at different positions. Attention reads cache slots 0..max(position), masked per row to
        slots ≤ that row's position, so the cost follows the longest row, not the full 256. `static=True` reads
        all image_length slots instead and writes with one indexed write: no shape depends on the step and
        nothing waits for the host, which is what a CUDA graph needs (same logits; slower on CPUs).
        """
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        h = self.embed_tokens(tokens) + self.embed_positions(positions)
        h = self.layernorm_embedding(h)[:, None, :]  # (rows, 1, d)
        span = self.cfg.image_length if static else int(positions.max()) + 1
        same_position = not static and bool((positions == positions[0]).all())
        first = int(positions[0]) if same_position else 0
        # rows at one position attend to every slot read (0..position): no mask, SDPA's unmasked kernel
        self_mask = None if same_position else (
            torch.arange(span, device=h.device)[None, :] <= positions[:, None])[:, None, None, :]

        def remember(i: int) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
            def store(k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:  # (rows, heads, 1, hd) each
                if same_position:  # one slice write, the common offline case
                    cache.self_k[i, :, :, first : first + 1] = k_new
                    cache.self_v[i, :, :, first : first + 1] = v_new
                else:
                    cache.self_k[i, rows, :, positions] = k_new[:, :, 0]
                    cache.self_v[i, rows, :, positions] = v_new[:, :, 0]
                return cache.self_k[i, :, :, :span], cache.self_v[i, :, :, :span]

            return store

        for i, layer in enumerate(self.layers):
            h = layer(h, self_mask, cache.cross_k[i], cache.cross_v[i], cache.cross_mask, remember(i))
        return self.lm_head(self.final_ln(h))[:, 0, :]
