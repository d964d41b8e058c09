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
