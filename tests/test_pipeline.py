"""Pipeline: loading, determinism across batch composition, streaming, settings validation."""

from __future__ import annotations

import shutil

import pytest
import torch

from crayonbox.errors import CrayonboxError
from crayonbox.model.hardware import cpu_precision, fbgemm_available, parse_cpuinfo
from crayonbox.model.images import make_grid
from crayonbox.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


def test_image_depends_on_seed_not_on_batch(pipe):
    alone = pipe("a red dog", num_images=1, seed=1234)
    batch = pipe(["a blue cat on a white background", "a red dog"], num_images=9, seed=1230)
    # image 4 of the second prompt has seed 1230 + 4
    row = 9 + 4
    assert batch.seeds[row] == 1234 and batch.prompts[row] == "a red dog"
    assert torch.equal(batch.tokens[row], alone.tokens[0])
    assert batch.images[row].tobytes() == alone.images[0].tobytes()


def test_different_seeds_differ_and_same_seed_repeats(pipe):
    a = pipe("a red dog", num_images=3, seed=5)
    b = pipe("a red dog", num_images=3, seed=5)
    assert torch.equal(a.tokens, b.tokens)
    assert len({tuple(t.tolist()) for t in a.tokens}) == 3


def test_output_shapes_and_ids(pipe):
    out = pipe("a woman in a sari", num_images=2, seed=0)
    cfg = pipe.config
    assert out.tokens.shape == (2, cfg.image_length)
    assert int(out.tokens.max()) < cfg.image_vocab_size
    assert out.images[0].size == (pipe.vqgan_config.resolution,) * 2
    enc = out.encodings[0]
    assert len(enc.ids) == cfg.text_length and enc.ids[0] == pipe.tokenizer.bos_id
    assert out.unconditional.ids[:2] == [pipe.tokenizer.bos_id, pipe.tokenizer.eos_id]


def test_scale_one_skips_the_unconditional_branch(pipe):
    # At scale 1 guidance is a no-op (uncond + 1·(cond − uncond) = cond), so no uncond cache row is spent.
    settings = pipe.settings(condition_scale=1.0)
    jobs, _ = pipe.jobs("a cat", 3, 0, settings)
    decoding = pipe.new_decoding(capacity=3)
    decoding.add(jobs)  # would raise "decode batch full" if each image took two rows
    assert decoding.rows_in_use == 3


def test_guidance_changes_images(pipe):
    low = pipe("a cat", num_images=4, seed=9, condition_scale=1.0)
    high = pipe("a cat", num_images=4, seed=9, condition_scale=10.0)
    assert not torch.equal(low.tokens, high.tokens)


def test_stream_yields_frames_then_output(pipe):
    frames = list(pipe.stream("a dog", num_images=2, seed=3, every=4))
    steps = [f.step for f in frames[:-1]]
    assert steps == list(range(4, pipe.config.image_length, 4))
    final = frames[-1]
    assert torch.equal(final.tokens, pipe("a dog", num_images=2, seed=3).tokens)
    # a frame's known tokens agree with the final ones
    k = frames[0].step
    assert torch.equal(frames[0].tokens[:, :k], final.tokens[:, :k])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0), "top_p"),
        (dict(condition_scale=-1), "condition_scale"),
        (dict(num_images=0), "num_images"),
    ],
)
def test_bad_settings_are_named(pipe, kwargs, message):
    with pytest.raises(CrayonboxError, match=message):
        pipe("a dog", **kwargs)


def test_save_load_roundtrip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "copy")
    again = Pipeline.from_pretrained(tmp_path / "copy")
    assert torch.equal(again("a dog", seed=1).tokens, pipe("a dog", seed=1).tokens)


def test_missing_and_corrupt_folders(tiny_model_dir, tmp_path):
    with pytest.raises(CrayonboxError, match="not found"):
        Pipeline.from_pretrained(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "bart" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CrayonboxError, match="corrupt weights"):
        Pipeline.from_pretrained(broken)
    shutil.copy(tiny_model_dir / "bart" / "model.safetensors", broken / "bart" / "model.safetensors")
    shutil.rmtree(broken / "vqgan")
    with pytest.raises(CrayonboxError, match="vqgan"):
        Pipeline.from_pretrained(broken)


def test_grid_tiles_row_major(pipe):
    out = pipe("a dog", num_images=4, seed=0)
    grid = make_grid(out.images)
    w, h = out.images[0].size
    assert grid.size == (2 * w, 2 * h)
    assert grid.crop((w, 0, 2 * w, h)).tobytes() == out.images[1].tobytes()


def test_int8_mode_loads_and_mostly_agrees(tiny_model_dir, pipe):
    quant = Pipeline.from_pretrained(tiny_model_dir, dtype="int8")
    enc = pipe.tokenizer.encode("a red dog")
    ids = torch.tensor([enc.ids])
    mask = torch.tensor([enc.attention_mask], dtype=torch.bool)
    tokens = torch.randint(
        0,
        pipe.config.image_vocab_size,
        (1, pipe.config.image_length),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.inference_mode():
        agree = (
            (quant.bart(ids, mask, tokens).argmax(-1) == pipe.bart(ids, mask, tokens).argmax(-1))
            .float()
            .mean()
        )
    assert agree > 0.5  # chance is 1/64; the tiny random model has far larger weights than a trained one
    assert quant("a red dog", num_images=2, seed=1).tokens.shape == (2, pipe.config.image_length)


def test_unknown_dtype_is_named(tiny_model_dir):
    with pytest.raises(CrayonboxError, match="unknown dtype 'int4'"):
        Pipeline.from_pretrained(tiny_model_dir, dtype="int4")


def _teacher_forced_logits(p: Pipeline, prompt: str = "a red dog") -> torch.Tensor:
    enc = p.tokenizer.encode(prompt)
    ids, mask = torch.tensor([enc.ids]), torch.tensor([enc.attention_mask], dtype=torch.bool)
    tokens = torch.randint(0, p.config.image_vocab_size, (1, p.config.image_length),
                           generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return p.bart(ids, mask, tokens)


@pytest.mark.skipif(not fbgemm_available(), reason="fp16w needs fbgemm (x86)")
def test_fp16w_is_exact_for_fp16_checkpoints(pipe, tmp_path):
    """fp16w keeps fp16 weights and computes in fp32: for a folder stored in fp16 (as official checkpoints and
    ours are) it multiplies by exactly the stored weights, so logits match fp32 to rounding order."""
    pipe.save_pretrained(tmp_path / "half", dtype=torch.float16)
    exact = Pipeline.from_pretrained(tmp_path / "half", dtype="float32")
    fast = Pipeline.from_pretrained(tmp_path / "half", dtype="fp16w")
    assert fast.dtype == torch.float32  # activations stay fp32
    # the token tables stay as stored, views of the file's mapping (a prompt pages in only its rows)
    file_size = (tmp_path / "half" / "bart" / "model.safetensors").stat().st_size
    for table in (fast.bart.encoder.embed_tokens.weight, fast.bart.decoder.embed_tokens.weight):
        assert table.dtype == torch.float16 and table.untyped_storage().nbytes() == file_size
    assert exact.bart.encoder.embed_tokens.weight.dtype == torch.float32
    assert not any(t.is_meta for t in fast.bart.state_dict().values() if isinstance(t, torch.Tensor))
    a, b = _teacher_forced_logits(exact), _teacher_forced_logits(fast)
    assert (a - b).abs().max() < 1e-3 * a.abs().max()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.98
    assert torch.equal(exact("a red dog", num_images=2, seed=4).tokens, fast("a red dog", num_images=2, seed=4).tokens)


SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16\n"
ZEN3 = "model name\t: AMD EPYC 7763\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n"
ZEN4 = "model name\t: AMD EPYC 9R14\nflags\t\t: avx2 fma f16c avx512f avx512_bf16\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n"


@pytest.mark.parametrize(("cpuinfo", "fbgemm", "mode", "vqgan"), [
    (SAPPHIRE, True, "bfloat16", ""), (ZEN4, True, "fp16w", "bfloat16"), (ZEN4, False, "bfloat16", ""),
    (ZEN3, True, "fp16w", ""), (ZEN3, False, "float32", ""), (ARM, False, "float32", "")])
def test_auto_precision_follows_what_the_cpu_has(cpuinfo, fbgemm, mode, vqgan):
    choice = cpu_precision(parse_cpuinfo(cpuinfo), fbgemm)
    assert (choice.mode, choice.vqgan) == (mode, vqgan) and choice.reason


def test_auto_loads_the_machines_choice_and_says_why(tiny_model_dir, monkeypatch):
    import crayonbox.model.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_features", lambda: parse_cpuinfo(ZEN3))
    monkeypatch.setattr(hardware, "fbgemm_available", lambda: False)
    pipe = Pipeline.from_pretrained(tiny_model_dir, dtype="auto")
    assert pipe.dtype == torch.float32 and pipe.precision_choice.mode == "float32"
    assert "AMD EPYC 7763" in pipe.precision_choice.reason
    assert Pipeline.from_pretrained(tiny_model_dir).precision_choice is None  # float32 asked, nothing chosen
    monkeypatch.setattr(hardware, "cpu_features", lambda: parse_cpuinfo(SAPPHIRE))
    assert Pipeline.from_pretrained(tiny_model_dir, dtype="auto").dtype == torch.bfloat16
    if fbgemm_available():  # AVX-512 BF16 without AMX: fp16-weight transformer, bf16 VQGAN
        monkeypatch.setattr(hardware, "cpu_features", lambda: parse_cpuinfo(ZEN4))
        monkeypatch.setattr(hardware, "fbgemm_available", fbgemm_available)
        zen4 = Pipeline.from_pretrained(tiny_model_dir, dtype="auto")
        assert zen4.precision_choice.describe() == "fp16w (VQGAN bfloat16)"
        assert next(zen4.vqgan.parameters()).dtype == torch.bfloat16
        assert len(zen4("a red dog", num_images=2, seed=3).images) == 2
    monkeypatch.setattr("crayonbox.model.packed_linear.fbgemm_available", lambda: False)
    with pytest.raises(CrayonboxError, match="fp16w needs fbgemm"):
        Pipeline.from_pretrained(tiny_model_dir, dtype="fp16w")


def test_weights_reader_matches_safetensors_and_refuses_damage(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from crayonbox.model_folder import read_safetensors

    mixed = {"f16": torch.randn(3, 5).half(), "bf16": torch.randn(7).bfloat16(), "i64": torch.arange(4),
             "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5), "flag": torch.tensor([True, False])}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    for path in (tmp_path / "mixed.safetensors", tiny_model_dir / "bart" / "model.safetensors"):
        ours, theirs = read_safetensors(path), load_file(str(path))
        assert ours.keys() == theirs.keys()
        assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours)
        mapped = read_safetensors(path, mapped=list(theirs))  # views of one mapping of the file, same values
        assert all(mapped[k].dtype == theirs[k].dtype and torch.equal(mapped[k], theirs[k]) for k in theirs)
        assert {mapped[k].untyped_storage().nbytes() for k in theirs if theirs[k].numel()} == {path.stat().st_size}
    data = (tmp_path / "mixed.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-3])
    with pytest.raises(CrayonboxError, match="corrupt weights file .*cut.safetensors"):
        read_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "huge.safetensors").write_bytes((2**40).to_bytes(8, "little") + data[8:])
    with pytest.raises(CrayonboxError, match="header size"):
        read_safetensors(tmp_path / "huge.safetensors")
