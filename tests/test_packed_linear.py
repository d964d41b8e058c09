"""PackedLinear calls fbgemm directly: the same outputs as torch.ao's dynamic Linear, in both modes."""

import warnings

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig

from crayonbox.errors import CrayonboxError
from crayonbox.model.hardware import fbgemm_available
from crayonbox.model.packed_linear import PackedLinear

pytestmark = pytest.mark.skipif(not fbgemm_available(), reason="weight-only modes need fbgemm (x86)")


def _torch_ao(linear: nn.Linear, qconfig) -> nn.Module:
    linear.qconfig = qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DynamicLinear.from_float(linear)


@pytest.mark.parametrize("mode, qconfig", [("fp16w", float16_dynamic_qconfig), ("int8", per_channel_dynamic_qconfig)])
def test_packed_linear_matches_torch_ao_bit_for_bit(mode, qconfig):
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=False)
    x = torch.randn(3, 1, 96)
    packed = PackedLinear(linear, mode)
    assert torch.equal(packed(x), _torch_ao(linear, qconfig)(x))
    assert packed(x).shape == (3, 1, 40) and packed.weight().shape == (40, 96)
    if mode == "fp16w":  # fp16 weights, fp32 arithmetic: the fp32 layer with its weights rounded to fp16
        rounded = linear.weight.detach().half().float()
        assert torch.equal(packed.weight(), rounded)
        torch.testing.assert_close(packed(x), x @ rounded.T, rtol=1e-5, atol=1e-5)
    else:  # per-channel int8: each row within half a quantization step
        step = linear.weight.detach().abs().amax(1, keepdim=True) / 127
        assert ((packed.weight() - linear.weight.detach()).abs() <= step / 2 + 1e-7).all()


def test_packed_linear_refuses_what_it_cannot_hold():
    with pytest.raises(CrayonboxError, match="bias-free"):
        PackedLinear(nn.Linear(4, 4), "fp16w")
    with pytest.raises(CrayonboxError, match="unknown weight-only mode 'int4'"):
        PackedLinear(nn.Linear(4, 4, bias=False), "int4")


def test_a_weight_only_pipeline_refuses_to_change_precision_or_device(tiny_model_dir):
    from crayonbox.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(tiny_model_dir, dtype="fp16w")
    assert any(isinstance(m, PackedLinear) for m in pipe.bart.modules())
    assert pipe.to("cpu") is pipe  # where it already is: nothing to do
    with pytest.raises(CrayonboxError, match="fp16w or int8 runs on the CPU in that precision only"):
        pipe.to(torch.bfloat16)


def test_a_weight_only_pipeline_saves_an_ordinary_folder(tiny_model_dir, tmp_path):
    """fp16w's state dict names each Linear's weight as nn.Linear does: saved, the folder loads in float32
    with the fp16-rounded weights, exactly."""
    from crayonbox.pipeline import Pipeline

    Pipeline.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "half", dtype=torch.float16)
    fast = Pipeline.from_pretrained(tmp_path / "half", dtype="fp16w")
    fast.save_pretrained(tmp_path / "again")
    back = Pipeline.from_pretrained(tmp_path / "again")
    ref = Pipeline.from_pretrained(tmp_path / "half")
    for (name, a), (_, b) in zip(back.bart.state_dict().items(), ref.bart.state_dict().items(), strict=True):
        assert torch.equal(a, b.float()), name


@pytest.mark.parametrize("mode", ["fp16w", "int8"])
def test_layers_packed_together_compute_what_each_computes_alone(mode):
    """q‖k‖v as one PackedLinear: its output is the three layers' outputs side by side (int8 exactly: per-row
    scales and int32 sums do not depend on the neighbours; fp16w up to fbgemm's summation order), and its state
    dict gives each layer's weight under the parent's own names."""
    torch.manual_seed(0)
    parts = {name: nn.Linear(64, n, bias=False) for name, n in (("q_proj", 64), ("k_proj", 64), ("v_proj", 32))}
    x = torch.randn(2, 3, 64)
    packed = PackedLinear(parts, mode)
    alone = torch.cat([PackedLinear(layer, mode)(x) for layer in parts.values()], dim=-1)
    assert packed(x).shape == (2, 3, 160)
    if mode == "int8":
        assert torch.equal(packed(x), alone)
    else:
        torch.testing.assert_close(packed(x), alone, rtol=1e-6, atol=1e-6)
    holder, holder.self_attn = nn.Module(), nn.Module()
    holder.self_attn.qkv_proj = packed
    state = holder.state_dict()
    assert list(state) == ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"]
    for name, layer in parts.items():
        assert torch.equal(state[f"self_attn.{name}.weight"], PackedLinear(layer, mode).weight())
    assert "parts=q_proj‖k_proj‖v_proj" in repr(packed)
    with pytest.raises(CrayonboxError, match="inputs of one width"):
        PackedLinear({"a": nn.Linear(4, 4, bias=False), "b": nn.Linear(5, 4, bias=False)}, mode)


def test_weight_only_models_pack_self_attention_and_glu_layers_and_keep_their_outputs():
    """After quantize_linears every self-attention holds one q‖k‖v layer and every GLU one fc0‖fc1 layer (the
    cross-attention keeps its own: its q and k, v see different inputs), and teacher-forced logits are those of
    the fp32 model with fp16-rounded weights, to summation order."""
    from crayonbox.config import MODEL_PRESETS
    from crayonbox.model.bart import DalleBart
    from crayonbox.model.packed_linear import quantize_linears

    torch.manual_seed(0)
    model = DalleBart(MODEL_PRESETS["tiny"])
    model.init_weights(std=0.2)
    model = model.half().float().eval()  # fp32 with the fp16-rounded weights fp16w multiplies by
    text = torch.randint(0, model.cfg.text_vocab_size, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    image = torch.randint(0, model.cfg.image_vocab_size, (2, 7))
    with torch.inference_mode():
        reference = model(text, mask, image)
        packed = quantize_linears(model, "fp16w")
        logits = packed(text, mask, image)
    layer = packed.decoder.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, PackedLinear) and not hasattr(layer.self_attn, "q_proj")
    assert isinstance(layer.glu.fc01, PackedLinear) and not hasattr(layer.glu, "fc0")
    assert layer.encoder_attn.qkv_proj is None and isinstance(layer.encoder_attn.q_proj, PackedLinear)
    assert isinstance(packed.encoder.layers[0].self_attn.qkv_proj, PackedLinear)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
