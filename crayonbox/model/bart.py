"""DalleBart: the encoder and decoder as one module, so one state dict / safetensors file holds both."""

from __future__ import annotations

import torch
from torch import LongTensor, Tensor, nn

from crayonbox.config import ModelConfig
from crayonbox.model.decoder import Decoder
from crayonbox.model.encoder import Encoder


class DalleBart(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, text_ids: LongTensor, text_mask: Tensor, image_tokens: LongTensor) -> Tensor:
        """Teacher-forced logits for image_tokens (B, T): position t predicts image_tokens[:, t]."""
        bos = image_tokens.new_full((image_tokens.shape[0], 1), self.cfg.bos_token_id)
        image_in = torch.cat([bos, image_tokens[:, :-1]], dim=1)  # shift right: BOS, x_0 … x_{T-2}
        states = self.encoder(text_ids, text_mask)
        return self.decoder(image_in, states, text_mask)

    def init_weights(self, std: float = 0.02) -> None:
        """BART-style init (normal(0, std) for matrices, LayerNorm scale 1 / bias 0), as dalle-mini's init_std."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
