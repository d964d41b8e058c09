"""min-dalle `.pt` files → crayonbox folder, on files written the way min-dalle ships them: float16
encoder/decoder tensors without the scale-less LayerNorm weights, a float32 `detoker.pt`, min-dalle's
folder layout (`pretrained/dalle_bart_mini/`, `pretrained/vqgan/`) and its hub repo's names."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
from flax_layout import write_tokenizer

from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import load_component, read_pipeline_json
from crayonbox.weights import cli
from crayonbox.weights.convert import convert_mindalle_folder

# min_dalle's import turns autograd off and changes the thread count process-wide: undo both.
_grad, _threads = torch.is_grad_enabled(), torch.get_num_threads()
from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer  # noqa: E402

torch.set_grad_enabled(_grad)
torch.set_num_threads(_threads)

SCALELESS = ("pre_self_attn_layer_norm", "pre_encoder_attn_layer_norm", "glu.ln0", "glu.ln1", "final_ln")


def mindalle_file_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What min-dalle-flax's load_params saved: float16, and no weight for the scale-less norms."""
    return {
        k: v.half()
        for k, v in module.state_dict().items()
        if not (k.endswith(".weight") and any(part in k for part in SCALELESS))
    }


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """min-dalle's layout: pretrained/dalle_bart_mini/{encoder,decoder}.pt + tokenizer, pretrained/vqgan."""
    torch.manual_seed(0)
    encoder = DalleBartEncoder(
        layer_count=2,
        embed_count=128,
        attention_head_count=2,
        text_vocab_count=10,
        text_token_count=16,
        glu_embed_count=96,
        device="cpu",
    )
    decoder = DalleBartDecoder(
        image_vocab_count=32,
        embed_count=128,
        attention_head_count=2,
        glu_embed_count=96,
        layer_count=2,
        device="cpu",
    )
    root = tmp_path_factory.mktemp("pretrained")
    model_dir = root / "dalle_bart_mini"
    model_dir.mkdir()
    files = {"encoder": mindalle_file_state(encoder), "decoder": mindalle_file_state(decoder)}
    for name, state in files.items():
        torch.save(state, model_dir / f"{name}.pt")
    write_tokenizer(model_dir)
    (root / "vqgan").mkdir()
    files["detoker"] = VQGanDetokenizer().state_dict()
    torch.save(files["detoker"], root / "vqgan" / "detoker.pt")
    return model_dir, files


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_mindalle_layout_converts_to_a_folder(pretrained, tmp_path):
    model_dir, files = pretrained
    out = tmp_path / "model"
    assert run_cli(["convert", "--from", "mindalle", str(model_dir), "--out", str(out)]) == 0
    cfg, state = load_component(out, "bart")
    assert (cfg["d_model"], cfg["heads"], cfg["encoder_layers"], cfg["glu_dim"]) == (128, 2, 2, 96)
    assert (cfg["text_vocab_size"], cfg["image_embed_rows"], cfg["bos_token_id"]) == (10, 33, 32)
    assert state["decoder.lm_head.weight"].dtype == torch.float16  # auto: min-dalle's files are float16
    assert torch.equal(state["decoder.layers.1.glu.fc2.weight"], files["decoder"]["layers.1.glu.fc2.weight"])
    assert "encoder.final_ln.bias" in state and not any(k.endswith("final_ln.weight") for k in state)
    vq_cfg, vq_state = load_component(out, "vqgan")
    assert vq_cfg["groupnorm_eps"] == 1e-6  # the official value, not min-dalle's 1e-5
    assert torch.equal(vq_state["quantize.embedding.weight"], files["detoker"]["embedding.weight"])
    assert not any(k.startswith("encoder.") for k in vq_state)  # detoker.pt is the decoder half only
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == [
        "merges.txt",
        "normalizer.json",
        "vocab.json",
    ]
    assert read_pipeline_json(out)["provenance"]["converted_from"] == "mindalle"
    from crayonbox.sample import SamplingSettings

    # what Pipeline.from_pretrained reads back: exactly the sampler's fields, with the official defaults
    defaults = SamplingSettings(**read_pipeline_json(out)["sampler"]).validate()
    assert (defaults.condition_scale, defaults.top_k) == (10.0, 50)


def test_present_scaleless_weights_must_be_ones(pretrained, tmp_path):
    model_dir, files = pretrained
    src = tmp_path / "src"
    shutil.copytree(model_dir, src)
    decoder = dict(files["decoder"])
    decoder["layers.0.glu.ln1.weight"] = torch.ones(96, dtype=torch.float16)
    torch.save(decoder, src / "decoder.pt")
    converted = convert_mindalle_folder(src)  # ones: the same model, dropped silently
    assert "decoder.layers.0.glu.ln1.weight" not in converted.bart_state
    decoder["layers.0.glu.ln1.weight"][3] = 1.5
    torch.save(decoder, src / "decoder.pt")
    with pytest.raises(
        CrayonboxError, match=r"layers.0.glu.ln1.weight is not all ones \(max \|w-1\| = 0.5\)"
    ):
        convert_mindalle_folder(src)


def test_hub_repo_names_need_a_variant(pretrained, tmp_path):
    """kuprel/min-dalle keeps mega's encoder.pt beside encoder_mini.pt, vocab.json beside vocab_mini.json."""
    model_dir, _ = pretrained
    src = tmp_path / "hub"
    src.mkdir()
    for name in ("encoder", "decoder"):
        shutil.copy(model_dir / f"{name}.pt", src / f"{name}_mini.pt")
        (src / f"{name}.pt").write_bytes(b"mega weights would be here")
    shutil.copy(model_dir / "vocab.json", src / "vocab_mini.json")
    shutil.copy(model_dir / "merges.txt", src / "merges_mini.txt")
    (src / "vocab.json").write_text("{}")
    with pytest.raises(CrayonboxError, match="pass --variant mini or mega"):
        convert_mindalle_folder(src)
    converted = convert_mindalle_folder(src, variant="mini")
    assert converted.tokenizer_files["vocab.json"].name == "vocab_mini.json"
    assert converted.vqgan_state is None  # no detoker.pt beside it
    with pytest.raises(CrayonboxError, match="cannot read .*encoder.pt"):
        convert_mindalle_folder(src, variant="mega")


def test_bad_files_give_clear_errors(pretrained, tmp_path):
    model_dir, files = pretrained
    src = tmp_path / "bad"
    shutil.copytree(model_dir, src)
    (src / "decoder.pt").unlink()
    with pytest.raises(CrayonboxError, match="missing file: .*decoder.pt"):
        convert_mindalle_folder(src)
    data = (model_dir / "decoder.pt").read_bytes()
    (src / "decoder.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CrayonboxError, match="truncated or not a min-dalle checkpoint") as err:
        convert_mindalle_folder(src)
    assert "\n" not in str(err.value)
    torch.save({"note": "not tensors"}, src / "decoder.pt")
    with pytest.raises(CrayonboxError, match="does not hold a state dict of tensors"):
        convert_mindalle_folder(src)
    decoder = dict(files["decoder"])
    decoder["lm_head.weight"] = decoder["lm_head.weight"][:, :64]
    torch.save(decoder, src / "decoder.pt")
    with pytest.raises(CrayonboxError, match=r"decoder.lm_head.weight: \(33, 64\), expected \(33, 128\)"):
        convert_mindalle_folder(src)
    with pytest.raises(CrayonboxError, match="missing file: .*nope.pt"):
        convert_mindalle_folder(model_dir, vqgan=tmp_path / "nope.pt")
