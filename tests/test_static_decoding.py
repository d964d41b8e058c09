"""Fixed-shape decode steps (the CUDA-graph path): the same logits and images as the usual step.

On a machine without CUDA this runs the static step eagerly on the CPU, the code a CUDA graph captures; the
capture and replay themselves run only where CUDA is (the last test)."""

from __future__ import annotations

import pytest
import torch

from crayonbox.model.decoder import DecodeCache
from crayonbox.pipeline import Pipeline
from crayonbox.sample import rows_needed


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


def _cache(pipe: Pipeline, rows: int) -> DecodeCache:
    states, mask = pipe.encode_text(pipe.tokenizer.encode_batch(["a red dog"] * rows))
    return pipe.bart.decoder.new_cache(states, mask)


@torch.inference_mode()
def test_static_step_gives_the_same_logits_at_mixed_positions(pipe):
    """Rows at different positions: the static step reads every slot (masked past each row's position)."""
    cfg = pipe.config
    dynamic, static = _cache(pipe, 3), _cache(pipe, 3)
    torch.manual_seed(0)
    history = torch.randint(0, cfg.image_vocab_size, (3, cfg.image_length))
    starts = [0, 3, 7]  # row r joins at step starts[r]
    for step in range(12):
        rows = [r for r in range(3) if step >= starts[r]]
        positions = torch.tensor([step - starts[r] for r in rows])
        tokens = torch.tensor([cfg.bos_token_id if p == 0 else int(history[r, p - 1])
                               for r, p in zip(rows, positions.tolist(), strict=True)])
        view = DecodeCache(*(t[:, rows] for t in (dynamic.self_k, dynamic.self_v, dynamic.cross_k, dynamic.cross_v)),
                           dynamic.cross_mask[rows])
        a = pipe.bart.decoder.step(tokens, positions, view)
        for t, v in zip((dynamic.self_k, dynamic.self_v), (view.self_k, view.self_v), strict=True):
            t[:, rows] = v  # indexing with a list copied the rows: write them back
        full_tokens = torch.full((3,), cfg.bos_token_id)
        full_positions = torch.zeros(3, dtype=torch.long)
        full_tokens[rows], full_positions[rows] = tokens, positions
        b = pipe.bart.decoder.step(full_tokens, full_positions, static, static=True)[rows]
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), step


def _decode(pipe: Pipeline, static: bool, late: bool) -> list[list[int]]:
    """Four images; with `late`, the first joins after 5 steps and the second is cancelled after 9."""
    settings = pipe.settings(condition_scale=3.0)
    jobs, _ = pipe.jobs(["a red dog", "a blue cat on a white background"], 2, 11, settings)
    decoding = pipe.new_decoding(capacity=sum(rows_needed(j) for j in jobs) + 2, static=static)
    decoding.add(jobs[1:] if late else jobs)
    for step in range(40):  # past the join and the cancel: enough to compare every row's tokens
        if late and step == 5:
            decoding.add(jobs[:1])
        if late and step == 9:
            decoding.remove([0])  # jobs[1], cancelled: its rows go, the rest move up
        decoding.step()
    return [j.tokens for j in jobs]


@pytest.mark.parametrize("late", [False, True])
def test_static_decoding_draws_the_same_images(pipe, late):
    assert _decode(pipe, static=True, late=late) == _decode(pipe, static=False, late=late)


def test_static_is_the_default_on_cuda_only(pipe):
    assert pipe.new_decoding(4).static is (pipe.device.type == "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_replays_the_static_step(tiny_model_dir):
    gpu = Pipeline.from_pretrained(tiny_model_dir, device="cuda")
    decoding = gpu.new_decoding(4, static=True)
    settings = gpu.settings(condition_scale=3.0)
    jobs, _ = gpu.jobs(["a red dog"], 2, 11, settings)
    decoding.add(jobs)
    assert decoding._graph is not None
    while decoding.jobs:
        decoding.step()
    again, _ = gpu.jobs(["a red dog"], 2, 11, settings)
    eager = gpu.new_decoding(4, static=False)
    eager.add(again)
    while eager.jobs:
        eager.step()
    assert [j.tokens for j in jobs] == [j.tokens for j in again]
