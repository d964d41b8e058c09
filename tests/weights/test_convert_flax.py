"""Flax → crayonbox conversion, on checkpoints the tests write in the official nested msgpack layout."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from flax_layout import (
    TINY,
    TINY_VQGAN,
    bart_tree,
    official_config,
    to_bytes,
    vqgan_tree,
    write_bart_repo,
    write_vqgan_repo,
)
from numpy_reference import conv2d_nhwc, decoder_logits, encode

from crayonbox.config import MODEL_PRESETS, ModelConfig
from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.vqgan import VQGAN
from crayonbox.model_folder import load_component, read_pipeline_json
from crayonbox.weights import cli
from crayonbox.weights.checks import expected_shapes
from crayonbox.weights.convert import convert_flax_folder
from crayonbox.weights.convert_flax import (
    bart_config_from_official,
    convert_bart_params,
    convert_vqgan_params,
    vqgan_config_from_official,
)
from crayonbox.weights.export import write_model_folder

# The released configs' fields (reference §1.1, read from the hub commit pages).
OFFICIAL_MINI = {
    "d_model": 1024,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 2730,
    "decoder_ffn_dim": 2730,
    "encoder_vocab_size": 50264,
    "image_vocab_size": 16384,
    "max_text_length": 64,
    "image_length": 256,
    "decoder_start_token_id": 16384,
    "bos_token_id": 16385,
    "eos_token_id": 16385,
    "pad_token_id": 16385,
    "ln_type": "layernorm",
    "ln_positions": "normformer",
    "force_ln_scale": False,
    "init_std": 0.02,
}
OFFICIAL_MEGA = {
    **OFFICIAL_MINI,
    "d_model": 2048,
    "encoder_layers": 24,
    "decoder_layers": 24,
    "encoder_attention_heads": 32,
    "decoder_attention_heads": 32,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "encoder_vocab_size": 50272,
    "image_vocab_size": 16415,
    "init_std": 0.01,
}


def unscan(tree: dict) -> dict:
    """DM's `DalleBart.unscan`: FlaxBartEncoderLayers (leading L axis) → FlaxBartEncoderLayer_{i}."""

    def pick(t, i):
        return {k: pick(v, i) for k, v in t.items()} if isinstance(t, dict) else t[i]

    out = {"lm_head": tree["lm_head"], "model": {}}
    for side, stem in (("encoder", "FlaxBartEncoderLayer"), ("decoder", "FlaxBartDecoderLayer")):
        part = dict(tree["model"][side])
        stacked = part["layers"][stem + "s"]
        count = stacked["LayerNorm_0"]["bias"].shape[0]
        part["layers"] = {f"{stem}_{i}": pick(stacked, i) for i in range(count)}
        out["model"][side] = part
    return out


@pytest.mark.parametrize("official, preset", [(OFFICIAL_MINI, "mini"), (OFFICIAL_MEGA, "mega")])
def test_released_configs_map_to_presets(official, preset):
    cfg = bart_config_from_official(official)
    assert cfg == MODEL_PRESETS[preset]
    assert cfg.image_vocab_size == 16384 and cfg.bos_token_id == 16384


def test_mini_parameter_count_matches_flax():
    """437,833,712 parameters in the official mini (reference §1.1): every Flax tensor has a home."""
    shapes = expected_shapes(lambda: DalleBart(bart_config_from_official(OFFICIAL_MINI)))
    assert sum(int(np.prod(s)) for s in shapes.values()) == 437_833_712


@pytest.mark.parametrize(
    "field, value",
    [
        ("use_cosine_attention", True),
        ("ln_positions", "swinv2"),
        ("use_bias", True),
        ("force_ln_scale", True),
        ("sinkhorn_iters", 3),
    ],
)
def test_unimplemented_variants_are_refused(field, value):
    with pytest.raises(CrayonboxError, match=f"{field}={value!r}"):
        bart_config_from_official({**OFFICIAL_MINI, field: value})


@pytest.fixture(scope="module")
def tiny_tree():
    return bart_tree(TINY, seed=3)


def test_converted_model_matches_numpy_forward_of_flax_arrays(tiny_tree):
    model = DalleBart(TINY).eval()
    model.load_state_dict(convert_bart_params(tiny_tree, TINY), strict=True)
    ids = np.array([[0, 5, 6, 7, 2, 1, 1, 1], [0, 8, 9, 2, 1, 1, 1, 1]])
    mask = (ids != 1).astype(np.int64)
    image_in = np.array([[20, 3, 17, 0, 9, 11, 2, 19, 5], [20, 12, 12, 4, 0, 1, 18, 7, 6]])
    want_states = encode(tiny_tree, ids, mask, TINY.heads)
    want_logits = decoder_logits(tiny_tree, image_in, want_states, mask, TINY.heads)
    with torch.no_grad():
        states = model.encoder(torch.from_numpy(ids), torch.from_numpy(mask))
        logits = model.decoder(torch.from_numpy(image_in), states, torch.from_numpy(mask))
    real = mask.astype(bool)  # padded positions' states are unused (masked as keys everywhere)
    assert np.abs(states.numpy() - want_states)[real].max() < 1e-5  # measured 8.4e-7 (max |state| 2.4)
    assert np.abs(logits.numpy() - want_logits).max() < 1e-5  # measured 4.5e-7 (max |logit| 1.3)
    assert np.abs(want_logits).max() > 0.5  # the comparison is not between two near-zero arrays


def test_unscanned_layout_gives_the_same_state(tiny_tree):
    scanned = convert_bart_params(tiny_tree, TINY)
    single = convert_bart_params(unscan(tiny_tree), TINY)
    assert scanned.keys() == single.keys()
    assert all(torch.equal(scanned[k], single[k]) for k in scanned)


def test_params_wrapper_and_float16_are_kept():
    tree = {"params": bart_tree(TINY, seed=1, dtype="float16")}
    state = convert_bart_params(tree, TINY)
    assert state["decoder.lm_head.weight"].dtype == torch.float16
    assert torch.equal(
        state["decoder.lm_head.weight"], torch.from_numpy(tree["params"]["lm_head"]["kernel"].T)
    )


def _copy(tree):
    """A copy of the dict structure (arrays shared), so a test can edit the module-scoped tree."""
    return {k: _copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def test_wrong_shape_names_the_flax_key(tiny_tree):
    tree = _copy(tiny_tree)
    glu = tree["model"]["encoder"]["layers"]["FlaxBartEncoderLayers"]["GLU_0"]
    glu["Dense_2"]["kernel"] = glu["Dense_2"]["kernel"][:, :40]  # F 48 → 40
    with pytest.raises(
        CrayonboxError,
        match=r"GLU_0/Dense_2/kernel\[0\] \(→ encoder.layers.0.glu.fc2.weight\): "
        r"\(32, 40\), expected \(32, 48\)",
    ):
        convert_bart_params(tree, TINY)


def test_unknown_and_missing_keys_are_named(tiny_tree):
    tree = _copy(tiny_tree)
    tree["model"]["decoder"]["layers"]["FlaxBartDecoderLayers"]["FlaxBartAttention_0"]["head_scale"] = (
        np.ones(3)
    )
    with pytest.raises(CrayonboxError, match="FlaxBartAttention_0/head_scale"):
        convert_bart_params(tree, TINY)
    tree = _copy(tiny_tree)
    del tree["model"]["decoder"]["final_ln"]
    with pytest.raises(CrayonboxError, match="1 missing: decoder.final_ln.bias"):
        convert_bart_params(tree, TINY)


def test_scanned_layer_count_must_match_config(tiny_tree):
    cfg = ModelConfig(**{**TINY.to_dict(), "decoder_layers": 4})
    with pytest.raises(
        CrayonboxError, match="stacked over \\(3,\\) layers, but the config has 4 decoder layers"
    ):
        convert_bart_params(tiny_tree, cfg)


def test_vqgan_conversion_keys_and_conv_layout():
    tree = vqgan_tree(TINY_VQGAN, seed=5)
    state = convert_vqgan_params(tree, TINY_VQGAN)
    model = VQGAN(TINY_VQGAN).eval()
    model.load_state_dict(state, strict=True)  # encoder included
    assert torch.equal(
        state["decoder.up.1.attn.0.q.weight"],
        torch.from_numpy(tree["decoder"]["up_1"]["attn_0"]["q"]["kernel"].transpose(3, 2, 0, 1)),
    )
    assert torch.equal(
        state["encoder.mid.block_1.norm1.weight"],
        torch.from_numpy(tree["encoder"]["mid"]["block_1"]["norm1"]["scale"]),
    )
    # A 3x3 conv computed the Flax way (NHWC, kernel (kh, kw, in, out)) equals ours after conversion.
    x = np.random.default_rng(0).standard_normal((4, 4, TINY_VQGAN.z_channels))
    want = conv2d_nhwc(x, tree["decoder"]["conv_in"])
    with torch.no_grad():
        got = model.decoder.conv_in(torch.from_numpy(x.transpose(2, 0, 1))[None].float())[0]
    assert np.abs(got.numpy().transpose(1, 2, 0) - want).max() < 1e-5


def test_vqgan_decoder_only_and_partial_encoder():
    tree = vqgan_tree(TINY_VQGAN, seed=5, with_encoder=False)
    state = convert_vqgan_params(tree, TINY_VQGAN)
    assert not any(k.startswith(("encoder.", "quant_conv.")) for k in state)
    tree = vqgan_tree(TINY_VQGAN, seed=5)
    del tree["encoder"]["down_1"]["attn_0"]
    with pytest.raises(CrayonboxError, match="missing: encoder.down.1.attn.0"):
        convert_vqgan_params(tree, TINY_VQGAN)


def test_vqgan_config_defaults_follow_vqgan_jax():
    cfg = vqgan_config_from_official({"n_embed": 16384})
    assert cfg.ch_mult == (1, 1, 2, 2, 4) and cfg.attn_resolutions == (16,) and cfg.groupnorm_eps == 1e-6
    with pytest.raises(CrayonboxError, match="resamp_with_conv"):
        vqgan_config_from_official({"resamp_with_conv": False})


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("flax")
    bart = write_bart_repo(root / "dalle-mini", TINY, seed=7, dtype="float16")
    vqgan = write_vqgan_repo(root / "vqgan", TINY_VQGAN, seed=8)
    return root, bart, vqgan


def test_folder_conversion_writes_a_loadable_model_folder(repos, tmp_path):
    from crayonbox.text.tokenizer import Tokenizer

    root, bart, _ = repos
    out = write_model_folder(convert_flax_folder(root / "dalle-mini", root / "vqgan"), tmp_path / "model")
    cfg, state = load_component(out, "bart")
    assert ModelConfig(**cfg) == TINY
    assert state["encoder.embed_tokens.weight"].dtype == torch.float16  # auto keeps the source's precision
    assert torch.equal(
        state["encoder.embed_tokens.weight"],
        torch.from_numpy(bart["model"]["encoder"]["embed_tokens"]["embedding"]),
    )
    vq_cfg, vq_state = load_component(out, "vqgan")
    assert vq_cfg["n_embed"] == 20 and vq_state["quantize.embedding.weight"].dtype == torch.float32
    info = read_pipeline_json(out)
    assert info["provenance"]["converted_from"] == "flax" and info["provenance"]["normalizer"] == "official"
    assert json.loads((out / "tokenizer" / "normalizer.json").read_text())["mode"] == "official"
    assert Tokenizer.from_folder(out / "tokenizer").encode("a b").ids[:4] == [0, 8, 9, 2]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial folder left behind


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_convert_and_refusals(repos, tmp_path):
    root, _, _ = repos
    out = str(tmp_path / "m")
    argv = [
        "convert",
        "--from",
        "flax",
        str(root / "dalle-mini"),
        "--vqgan",
        str(root / "vqgan"),
        "--out",
        out,
    ]
    assert _run_cli([*argv, "--dtype", "float32"]) == 0
    assert load_component(out, "bart")[1]["decoder.lm_head.weight"].dtype == torch.float32
    with pytest.raises(CrayonboxError, match="already exists"):
        _run_cli(argv)
    assert _run_cli([*argv, "--overwrite"]) == 0
    with pytest.raises(CrayonboxError, match="missing file: .*config.json"):
        _run_cli(["convert", "--from", "flax", str(tmp_path), "--out", str(tmp_path / "x")])


def test_truncated_checkpoint_in_a_folder(repos, tmp_path):
    root, _, _ = repos
    src = tmp_path / "broken"
    src.mkdir()
    for f in (root / "dalle-mini").iterdir():
        data = f.read_bytes()
        (src / f.name).write_bytes(data[: len(data) - 100] if f.name == "flax_model.msgpack" else data)
    with pytest.raises(CrayonboxError, match="truncated"):
        convert_flax_folder(src)
    (src / "flax_model.msgpack").write_bytes(to_bytes(bart_tree(TINY, seed=0)))
    (src / "config.json").write_text(json.dumps({**official_config(TINY), "d_model": 64}))
    with pytest.raises(CrayonboxError, match="wrong shape"):
        convert_flax_folder(src)
