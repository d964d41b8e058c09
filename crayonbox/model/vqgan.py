"""VQGAN (taming-transformers f16 architecture): encoder → quantizer → decoder, pixels in [0, 1].

Parameter names follow taming / vqgan-jax (`encoder.down.0.block.0.conv1`, `decoder.up.4.attn.0.q`,
`quantize.embedding.weight`), so converted official checkpoints and our own training share one layout.
Token k of a grid maps to row k // side, column k % side (row-major), as in the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import LongTensor, Tensor, nn

from crayonbox.config import VQGANConfig


def _norm(channels: int, eps: float) -> nn.GroupNorm:
    """taming's GroupNorm(32, C). Small CPU presets would get one channel per group there, which acts as an
    instance norm and loses colour: with fewer than 2 channels per group, use 8 groups instead."""
    groups = 32 if channels % 32 == 0 and channels >= 64 else min(channels, 8)
    return nn.GroupNorm(groups, channels, eps=eps)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, eps), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, eps), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        # Without autograd, work in place: at 256×256×128 each fresh activation is a 32 MiB allocation whose
        # pages the kernel must fault in and zero; in place the decode runs ~7 % faster (same pixels).
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        shortcut = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return h.add_(shortcut) if inplace else h + shortcut


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1 convs (softmax(q kᵀ / sqrt(C)))."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.norm = _norm(channels, eps)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        z = self.norm(x)
        q, k, v = (conv(z).reshape(b, 1, c, hgt * wid).transpose(2, 3) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, hgt, wid))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming pads right/bottom, then a stride-2 conv


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: resnet blocks (+ attention where configured) and an optional resample."""

    def __init__(
        self, blocks: list[ResnetBlock], attn: list[AttnBlock], resample: nn.Module | None, name: str
    ):
        super().__init__()
        self.block, self.attn = nn.ModuleList(blocks), nn.ModuleList(attn)
        if resample is not None:
            setattr(self, name, resample)
        self.resample_name = name if resample is not None else None

    def forward(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[i](h)
        return getattr(self, self.resample_name)(h) if self.resample_name else h


class Mid(nn.Module):
    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, eps)
        self.attn_1 = AttnBlock(channels, eps)
        self.block_2 = ResnetBlock(channels, channels, eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class VQEncoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        eps, mult = cfg.groupnorm_eps, (1, *cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        size, levels = cfg.resolution, []
        for i in range(len(cfg.ch_mult)):
            cin, cout = cfg.ch * mult[i], cfg.ch * mult[i + 1]
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, eps) for j in range(cfg.num_res_blocks)]
            attn = [AttnBlock(cout, eps) for _ in blocks] if size in cfg.attn_resolutions else []
            last = i == len(cfg.ch_mult) - 1
            levels.append(Level(blocks, attn, None if last else Downsample(cout), "downsample"))
            size = size if last else size // 2
        self.down = nn.ModuleList(levels)
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = Mid(top, eps)
        self.norm_out = _norm(top, eps)
        self.conv_out = nn.Conv2d(top, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class VQDecoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        eps, top = cfg.groupnorm_eps, cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = Mid(top, eps)
        size, cin, levels = cfg.tokens_side, top, [None] * len(cfg.ch_mult)
        for i in reversed(range(len(cfg.ch_mult))):  # built top-down, stored by level index like taming
            cout = cfg.ch * cfg.ch_mult[i]
            blocks = [ResnetBlock(cin if j == 0 else cout, cout, eps) for j in range(cfg.num_res_blocks + 1)]
            attn = [AttnBlock(cout, eps) for _ in blocks] if size in cfg.attn_resolutions else []
            levels[i] = Level(blocks, attn, Upsample(cout) if i > 0 else None, "upsample")
            cin, size = cout, size * 2 if i > 0 else size
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cfg.ch * cfg.ch_mult[0], eps)
        self.conv_out = nn.Conv2d(cfg.ch * cfg.ch_mult[0], cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def nearest(self, z: Tensor) -> LongTensor:
        """z (B, C, H, W) → code ids (B, H*W) of the nearest codebook vectors (squared L2)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        w = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ w.t() + w.pow(2).sum(1)[None, :]
        return dist.argmin(1).view(z.shape[0], -1)

    def lookup(self, ids: LongTensor, side: int) -> Tensor:
        """ids (B, side*side) → z_q (B, C, side, side), row-major."""
        z = self.embedding(ids).view(ids.shape[0], side, side, -1)
        return z.permute(0, 3, 1, 2).contiguous()


class VQGAN(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VQEncoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.quantize = Quantizer(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = VQDecoder(cfg)

    def encode_latent(self, pixels: Tensor) -> Tensor:
        """pixels (B, 3, H, W) in [0, 1] → pre-quantization latents (B, embed_dim, H/f, W/f)."""
        return self.quant_conv(self.encoder(pixels))

    def encode(self, pixels: Tensor) -> LongTensor:
        """pixels (B, 3, H, W) in [0, 1] → token ids (B, tokens)."""
        return self.quantize.nearest(self.encode_latent(pixels))

    def decode_latent(self, z_q: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z_q))

    def decode(self, ids: LongTensor) -> Tensor:
        """token ids (B, side*side) → pixels (B, 3, H, W), clipped to [0, 1] as the official notebook does."""
        side = int(round(ids.shape[1] ** 0.5))
        return self.decode_latent(self.quantize.lookup(ids, side)).clamp(0, 1)
