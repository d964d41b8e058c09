"""Sampled tokens: min-dalle's own decode loop vs crayonbox's, where the samplers are meant to agree.

min-dalle samples with `torch.multinomial` on a global RNG; crayonbox with per-image inverse-CDF draws, so
their random draws differ by design. With top_k = 1 both must pick the argmax of the same guided logits, so the
whole 256-token sequence must agree, through each implementation's real loop (min-dalle's
`generate_raw_image_stream`, our `Pipeline`). Small random shapes keep it fast; min-dalle hard-codes 256 image
tokens, 2**14 codes and 64 text tokens, so those stay real.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

min_dalle = pytest.importorskip("min_dalle")

from min_dalle.min_dalle import MinDalle  # noqa: E402
from min_dalle.models import DalleBartDecoder, DalleBartEncoder  # noqa: E402
from min_dalle.text_tokenizer import TextTokenizer  # noqa: E402

from crayonbox.config import VQGAN_PRESETS  # noqa: E402
from crayonbox.model.bart import DalleBart  # noqa: E402
from crayonbox.model.vqgan import VQGAN  # noqa: E402
from crayonbox.pipeline import Pipeline  # noqa: E402
from crayonbox.sample import SamplingSettings  # noqa: E402
from crayonbox.text.tokenizer import Tokenizer  # noqa: E402
from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe  # noqa: E402
from crayonbox.weights.convert_mindalle import bart_config_from_mindalle, convert_mindalle_bart  # noqa: E402

SHAPES = dict(layer_count=2, attention_head_count=4, embed_count=64, glu_embed_count=96)
PROMPTS = ["a woman wearing a red sari", "a dog on a yellow background"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    tok_dir = tmp_path_factory.mktemp("tok")
    captions = [
        f"{a} {b}"
        for a in ("a woman", "a man", "a dog")
        for b in ("wearing a red sari", "on a yellow background", "in a kimono")
    ] * 4
    train_bpe(captions, tok_dir, BPETrainingConfig(vocab_size=300, show_progress=False))
    encoder = DalleBartEncoder(text_token_count=64, text_vocab_count=300, device="cpu", **SHAPES)
    decoder = DalleBartDecoder(image_vocab_count=16384, device="cpu", **SHAPES)
    for module in (encoder, decoder):
        for name, p in module.named_parameters():
            # large random weights give peaked logits: no near-ties for the argmax to fall on
            p.data.normal_(0, 0.3) if p.dim() >= 2 else None
            if "layer_norm" in name or "ln" in name:
                if any(s in name for s in ("pre_", "ln0", "ln1", "final_ln")) and name.endswith("weight"):
                    p.data.fill_(1.0)  # DALL·E mini has no scale on these norms
    md = MinDalle.__new__(MinDalle)  # build by hand: its constructor downloads weights
    md.is_reusable, md.is_verbose, md.device, md.dtype = True, False, "cpu", torch.float32
    md.text_token_count, md.layer_count, md.embed_count = 64, SHAPES["layer_count"], SHAPES["embed_count"]
    md.tokenizer = TextTokenizer(
        json.loads((tok_dir / "vocab.json").read_text()),
        (tok_dir / "merges.txt").read_text().split("\n")[1:-1],
    )
    md.encoder, md.decoder = encoder.eval(), decoder.eval()
    md.image_grid_from_tokens = lambda image_tokens, **_: image_tokens.clone()  # keep tokens, skip the VQGAN

    enc_sd, dec_sd = encoder.state_dict(), decoder.state_dict()
    # min-dalle starts decoding from 16383 (a real code); the official BOS is 16384. Mimic it here only.
    cfg = dataclasses.replace(bart_config_from_mindalle(enc_sd, dec_sd, heads=4), bos_token_id=16383)
    bart = DalleBart(cfg)
    bart.load_state_dict(convert_mindalle_bart(enc_sd, dec_sd, cfg), strict=False)
    pipe = Pipeline(
        bart, VQGAN(VQGAN_PRESETS["f16_16384"]), Tokenizer.from_folder(tok_dir), SamplingSettings()
    )
    return md, pipe


def mindalle_tokens(md: MinDalle, prompt: str, images: int, scale: float) -> torch.Tensor:
    *_, last = md.generate_raw_image_stream(
        prompt, seed=1, grid_size=int(images**0.5), top_k=1, supercondition_factor=scale
    )
    return last  # already without the start token


@pytest.mark.parametrize("prompt, scale", [(PROMPTS[0], 16.0), (PROMPTS[1], 1.0)])
def test_greedy_tokens_identical(models, prompt, scale):
    md, pipe = models
    assert pipe.tokenizer.encode(prompt).ids[:8] == [*md.tokenizer.tokenize(prompt), 1, 1, 1][:8]
    expected = mindalle_tokens(md, prompt, 1, scale)
    jobs, _ = pipe.jobs(prompt, 1, seed=0, settings=pipe.settings(condition_scale=scale, top_k=1))
    decoding = pipe.new_decoding(capacity=2)
    decoding.add(jobs)
    for _ in range(256):
        decoding.step()
    ours = torch.tensor(jobs[0].tokens)
    assert torch.equal(ours, expected[0]), f"first mismatch at {(ours != expected[0]).nonzero()[:1].tolist()}"


def test_greedy_grid_rows_identical(models):
    # min-dalle decodes 4 images at once; each row must equal ours, decoded in a batch of 4 as well.
    md, pipe = models
    expected = mindalle_tokens(md, PROMPTS[0], 4, 16.0)
    jobs, _ = pipe.jobs(PROMPTS[0], 4, seed=0, settings=pipe.settings(condition_scale=16.0, top_k=1))
    decoding = pipe.new_decoding(capacity=8)
    decoding.add(jobs)
    for _ in range(256):
        decoding.step()
    assert torch.equal(torch.tensor([j.tokens for j in jobs]), expected)
