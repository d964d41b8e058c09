"""Parity with min-dalle 0.4.11: its own modules, random weights, converted with our converter.

Shown equal in fp32: encoder states, decoder logits step by step (min-dalle's KV-cache path against
`Decoder.step`, and both against our teacher-forced `Decoder.forward`), and VQGAN pixels. The deliberate
differences each get a test that pins them: the decoder start token (16384 official / ours, 16383 min-dalle),
the VQGAN GroupNorm eps (1e-6 / 1e-5) and the attention mask (-inf / a -1e12 bias).

Tolerances are 5-20× the largest errors measured on this machine (torch 2.13 CPU), which are noted at each
assert. The default suite uses small configs (min-dalle's VQGAN has fixed shapes, so it runs on a 3×3 token
grid); `test_real_mini_shapes` (slow) runs everything at the released mini shapes.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from crayonbox.config import MODEL_PRESETS
from crayonbox.model.bart import DalleBart
from crayonbox.model.layers import Attention
from crayonbox.model.vqgan import VQGAN
from crayonbox.weights.convert_mindalle import (
    bart_config_from_mindalle,
    convert_mindalle_bart,
    convert_mindalle_vqgan,
    vqgan_config_for_detokenizer,
)

# min-dalle's nn.LayerNorms standing in for DALL·E mini's scale-less norms: their weight stays 1.
SCALELESS = ("pre_self_attn_layer_norm", "pre_encoder_attn_layer_norm", "glu.ln0", "glu.ln1", "final_ln")
MINDALLE_START_TOKEN = 2**14 - 1  # min_dalle.py: image_tokens = torch.full(..., 2 ** 14 - 1)
# Small shapes; head_dim 64 as in the released models. min-dalle hard-codes 256 image positions.
SMALL = dict(layers=2, d=128, heads=2, glu=96, text_vocab=100, text_length=16, image_vocab=64)
STEPS = 6


def build_mindalle_bart(md, shapes: dict, seed: int, randomize) -> tuple[torch.nn.Module, torch.nn.Module]:
    encoder = md.models.DalleBartEncoder(
        layer_count=shapes["layers"],
        embed_count=shapes["d"],
        attention_head_count=shapes["heads"],
        text_vocab_count=shapes["text_vocab"],
        text_token_count=shapes["text_length"],
        glu_embed_count=shapes["glu"],
        device="cpu",
    ).eval()
    decoder = md.models.DalleBartDecoder(
        image_vocab_count=shapes["image_vocab"],
        embed_count=shapes["d"],
        attention_head_count=shapes["heads"],
        glu_embed_count=shapes["glu"],
        layer_count=shapes["layers"],
        device="cpu",
    ).eval()
    randomize(encoder, seed, keep_unit=SCALELESS)
    randomize(decoder, seed + 1, keep_unit=SCALELESS)
    return encoder, decoder


def convert_bart(encoder: torch.nn.Module, decoder: torch.nn.Module) -> DalleBart:
    """Ours, converted from min-dalle's state dicts. Built on the meta device and given the converted tensors
    (assign=True): no random init to pay for, and no second copy of the weights."""
    enc, dec = encoder.state_dict(), decoder.state_dict()
    cfg = bart_config_from_mindalle(enc, dec)
    with torch.device("meta"):
        model = DalleBart(cfg).eval()
    model.load_state_dict(convert_mindalle_bart(enc, dec, cfg), strict=True, assign=True)
    return model


def text_tokens(length: int, vocab: int, seed: int) -> torch.Tensor:
    """min-dalle's encoder input: row 0 the prompt <s> … </s>, row 1 the unconditional <s></s>, <pad>=1."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.ones(2, length, dtype=torch.long)
    tokens[0, :7] = torch.cat(
        [torch.tensor([0]), torch.randint(4, vocab, (5,), generator=g), torch.tensor([2])]
    )
    tokens[1, :2] = torch.tensor([0, 2])
    return tokens


def run_both_decoders(
    md_decoder, ours: DalleBart, states: torch.Tensor, tokens: torch.Tensor, image_in: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed the same inputs to min-dalle's cached decoder and to `Decoder.step`, and teacher-force ours.

    Returns logits (steps, 2 rows, image rows) from min-dalle, from `step`, and from `forward`.
    """
    cfg = ours.cfg
    mask = tokens != cfg.text_pad_id
    attention_state = torch.zeros(
        cfg.decoder_layers, 4, cfg.image_length, cfg.d_model
    )  # min_dalle.py, 1 image
    cache = ours.decoder.new_cache(states, mask)
    theirs, stepped = [], []
    with torch.no_grad():
        for i, token in enumerate(image_in):
            logits, attention_state = md_decoder.forward(
                attention_mask=mask[:, None, None, :],
                encoder_state=states,
                attention_state=attention_state,
                prev_tokens=torch.tensor([[token]]),
                token_index=torch.tensor([i]),
            )
            theirs.append(logits[:, 0])
            stepped.append(ours.decoder.step(torch.tensor([token, token]), torch.tensor([i, i]), cache))
        forced = ours.decoder(torch.tensor([image_in, image_in]), states, mask)
    return torch.stack(theirs), torch.stack(stepped), forced.transpose(0, 1)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def small(mindalle, randomize):
    encoder, decoder = build_mindalle_bart(mindalle, SMALL, seed=10, randomize=randomize)
    return encoder, decoder, convert_bart(encoder, decoder)


def test_converted_config_is_read_from_shapes(small):
    _, _, ours = small
    cfg = ours.cfg
    assert (cfg.d_model, cfg.heads, cfg.encoder_layers, cfg.decoder_layers, cfg.glu_dim) == (128, 2, 2, 2, 96)
    assert (cfg.text_vocab_size, cfg.text_length, cfg.image_embed_rows, cfg.image_length) == (
        100,
        16,
        65,
        256,
    )
    assert cfg.bos_token_id == 64  # the last embedding row, as 16384 is for mini


def test_encoder_states_equal(small):
    md_encoder, _, ours = small
    tokens = text_tokens(SMALL["text_length"], SMALL["text_vocab"], seed=1)
    with torch.no_grad():
        theirs = md_encoder.forward(tokens)
        mine = ours.encoder(tokens, tokens != 1)
    assert theirs.abs().max() > 1  # a real signal, not two near-zero arrays
    assert max_abs(theirs, mine) < 2e-5  # measured 1.2e-6 (max |state| 3.7)


def test_decoder_logits_equal_step_by_step_and_teacher_forced(small):
    md_encoder, md_decoder, ours = small
    tokens = text_tokens(SMALL["text_length"], SMALL["text_vocab"], seed=2)
    with torch.no_grad():
        states = md_encoder.forward(tokens)
    g = torch.Generator().manual_seed(3)
    image_in = [
        ours.cfg.bos_token_id,
        *torch.randint(0, SMALL["image_vocab"], (STEPS - 1,), generator=g).tolist(),
    ]
    theirs, stepped, forced = run_both_decoders(md_decoder, ours, states, tokens, image_in)
    assert theirs.shape == (STEPS, 2, SMALL["image_vocab"] + 1)
    assert theirs.abs().max() > 1
    assert max_abs(theirs, stepped) < 1e-5  # measured 6.0e-7 (max |logit| 1.8)
    assert max_abs(stepped, forced) < 1e-5  # measured 7.2e-7
    assert not torch.allclose(theirs[:, 0], theirs[:, 1], atol=1e-2)  # cond and uncond rows really differ


def test_start_token_differs_on_purpose(mindalle, randomize):
    """min-dalle starts decoding from 16383, a real VQGAN code; the official models (and we) from 16384.

    Driven through min-dalle's own generate loop (stopped at its first decoder call), with a mini-shaped
    model read off meta tensors for our side.
    """
    md = mindalle.MinDalle.__new__(mindalle.MinDalle)
    encoder = mindalle.models.DalleBartEncoder(
        layer_count=1,
        embed_count=64,
        attention_head_count=1,
        text_vocab_count=10,
        text_token_count=64,
        glu_embed_count=32,
        device="cpu",
    ).eval()
    decoder = mindalle.models.DalleBartDecoder(
        image_vocab_count=16384,
        embed_count=64,
        attention_head_count=1,
        glu_embed_count=32,
        layer_count=1,
        device="cpu",
    ).eval()
    randomize(encoder, 1, keep_unit=SCALELESS)
    seen = {}

    class Stop(Exception):
        pass

    def first_step(settings, **kwargs):
        seen.update(kwargs)
        raise Stop

    decoder.sample_tokens = first_step
    md.__dict__.update(
        device="cpu",
        dtype=torch.float32,
        is_reusable=True,
        is_verbose=False,
        text_token_count=64,
        layer_count=1,
        embed_count=64,
        encoder=encoder,
        decoder=decoder,
        tokenizer=type("Stub", (), {"tokenize": lambda self, text, is_verbose=False: [0, 7, 2]})(),
    )
    with pytest.raises(Stop):
        next(md.generate_raw_image_stream("a", seed=0, grid_size=1))
    assert seen["prev_tokens"].tolist() == [[MINDALLE_START_TOKEN]] == [[16383]]
    assert seen["token_index"].tolist() == [0]

    with torch.device("meta"):
        enc, dec = build_mindalle_bart(
            mindalle,
            dict(layers=12, d=1024, heads=16, glu=2730, text_vocab=50264, text_length=64, image_vocab=16384),
            0,
            lambda *a, **k: None,
        )
    cfg = bart_config_from_mindalle(enc.state_dict(), dec.state_dict())
    assert cfg == MODEL_PRESETS["mini"] and cfg.bos_token_id == 16384 != MINDALLE_START_TOKEN


def test_attention_mask_bias_differs_only_for_fully_masked_rows(mindalle, randomize):
    """min-dalle adds (1 - mask) * -1e12 to the scores; we pass a boolean mask (-inf). Where a query sees at
    least one key, exp(-1e12) is exactly 0 in fp32 and the outputs agree; where it sees none (a text with no
    real token, which our tokenizer never produces: <s></s> are always there), min-dalle averages every value
    while torch's attention returns zeros."""
    theirs = mindalle.models.dalle_bart_encoder.EncoderSelfAttention(head_count=2, embed_count=128).eval()
    randomize(theirs, 4)
    ours = Attention(128, 2).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)[:, None, None, :]
    with torch.no_grad():
        a, b = theirs(x, mask), ours(x, mask)
        mean_of_values = theirs.out_proj(theirs.v_proj(x[1]).mean(0))
    assert max_abs(a[0], b[0]) < 2e-6  # measured 1.5e-7
    assert torch.allclose(a[1], mean_of_values.expand(5, -1), atol=1e-5)
    assert torch.equal(b[1], torch.zeros_like(b[1]))


@pytest.fixture(scope="module")
def detokenizer(mindalle, randomize):
    """min-dalle's VQGAN decoder (fixed f16/16384 shapes) with random norms and biases, and ours converted
    from it, with GroupNorm eps 1e-5 (min-dalle's) and 1e-6 (the official, what the converter writes)."""
    theirs = mindalle.models.VQGanDetokenizer().eval()
    randomize(theirs, 6, std=None)  # torch's default conv init keeps the 40-conv stack's activations sane
    state = theirs.state_dict()
    official = vqgan_config_for_detokenizer(state)
    models = {}
    for eps in (1e-5, official.groupnorm_eps):
        cfg = dataclasses.replace(official, groupnorm_eps=eps)
        with torch.device("meta"):  # as in convert_bart; the encoder half stays on meta, unused
            model = VQGAN(cfg).eval()
        missing, unexpected = model.load_state_dict(
            convert_mindalle_vqgan(state, cfg), strict=False, assign=True
        )
        assert not unexpected and all(k.startswith(("encoder.", "quant_conv.")) for k in missing)
        models[eps] = model
    return theirs, models


@pytest.fixture(scope="module")
def small_grid(detokenizer):
    """Raw decoder outputs (before clipping) for one 3×3-token image (48×48 px): min-dalle's (run through
    the steps of its VQGanDetokenizer.forward, which insists on 16×16 tokens), ours at eps 1e-5 and 1e-6,
    and the clipped 0..255 pixels of min-dalle and of our `decode`."""
    theirs, ours = detokenizer
    ids = torch.randint(0, 16384, (1, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = theirs.embedding(ids).view(1, 3, 3, 256).permute(0, 3, 1, 2).contiguous()
        raw = theirs.decoder(theirs.post_quant_conv(z))
        mine = {eps: model.decode_latent(model.quantize.lookup(ids, 3)) for eps, model in ours.items()}
        pixels = ours[1e-5].decode(ids) * 255
    return {"theirs": raw, "theirs_pixels": raw.clip(0.0, 1.0) * 255, "ours": mine, "ours_pixels": pixels}


def test_vqgan_pixels_equal(small_grid):
    raw, mine = small_grid["theirs"], small_grid["ours"][1e-5]
    assert raw.shape == mine.shape == (1, 3, 48, 48)
    inside = ((raw > 0) & (raw < 1)).float().mean().item()
    assert inside > 0.2  # enough pixels inside [0, 1] that the clipped comparison means something
    assert max_abs(raw, mine) < 1e-4  # measured 1.4e-5 (output std 0.29)
    assert max_abs(small_grid["theirs_pixels"], small_grid["ours_pixels"]) < 0.03  # 0..255; measured 3.2e-3


def test_groupnorm_eps_difference_is_small_but_real(small_grid):
    """Official VQGAN: GroupNorm eps 1e-6; min-dalle: 1e-5. Converted folders keep 1e-6."""
    gap = max_abs(small_grid["theirs"], small_grid["ours"][1e-6])
    assert 1e-5 < gap < 1 / 255  # measured 3.1e-4: real, but below one 8-bit pixel level


@pytest.mark.slow
def test_real_mini_shapes(mindalle, randomize, detokenizer):
    """Everything at the released mini shapes (12+12 layers, d 1024, 16 heads, GLU 2730, 50264 text rows,
    16385 image rows), and min-dalle's real detokenizer forward at 16×16 tokens → 256×256 pixels."""
    start = time.perf_counter()
    mini = dict(layers=12, d=1024, heads=16, glu=2730, text_vocab=50264, text_length=64, image_vocab=16384)
    md_encoder, md_decoder = build_mindalle_bart(mindalle, mini, seed=20, randomize=randomize)
    ours = convert_bart(md_encoder, md_decoder)
    assert ours.cfg == MODEL_PRESETS["mini"]
    tokens = text_tokens(64, 50264, seed=21)
    with torch.no_grad():
        states = md_encoder.forward(tokens)
        assert max_abs(states, ours.encoder(tokens, tokens != 1)) < 1e-4  # measured 1.4e-5 (max |state| 5.1)
    del md_encoder
    image_in = [16384, 5, 16383, 9000]
    theirs, stepped, forced = run_both_decoders(md_decoder, ours, states, tokens, image_in)
    assert max_abs(theirs, stepped) < 2e-4  # measured 2.3e-5 (max |logit| 7.4)
    assert max_abs(stepped, forced) < 2e-4  # measured 2.6e-5
    del md_decoder, ours

    md_vqgan, our_vqgan = detokenizer
    ids = torch.randint(0, 16384, (1, 256), generator=torch.Generator().manual_seed(22))
    with torch.no_grad():
        pixels = md_vqgan.forward(False, ids)  # (256, 256, 3), 0..255
        mine = our_vqgan[1e-5].decode(ids)[0].permute(1, 2, 0) * 255
    assert pixels.shape == mine.shape == (256, 256, 3)
    assert max_abs(pixels, mine) < 0.03  # 0..255; measured 5.8e-3 (2.3e-5 before ×255)
    print(f"real mini shapes: {time.perf_counter() - start:.1f} s")
