"""Weight-only Linear layers for decoding on CPUs: the transformer's weights packed for fbgemm, fp32 activations.

    fp16w: fp16 weights, fp32 arithmetic. Exact for checkpoints stored in fp16 (all official ones and ours);
           3-4x faster than MKL's fp32 GEMM for the few-row matrices a decode step multiplies.
    int8:  dynamic int8 with per-channel weight scales: faster still, but changes some tokens.

One decode step of one image calls 109 of these layers (DALL·E mini shapes), each streaming its weights once,
so a step is memory-bound and per-call overhead shows: `PackedLinear` calls the fbgemm kernel directly instead
of going through torch.ao's module, which reads its packed weights through a nested module and converts the
output's dtype on every call (one mini image, fp16w, AVX-512 EPYC: 17.4 ms a step against 18.3).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import warnings

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.ao.quantization import per_channel_dynamic_qconfig

from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.hardware import fbgemm_available

WEIGHT_ONLY = ("fp16w", "int8")
TOKEN_TABLES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if hasattr(ctypes.CDLL(None), "malloc_trim") else None


class PackedLinear(nn.Module):
    """y = x Wᵀ (no bias: the DALL·E mini transformer has none) with W packed for fbgemm, in `mode`.

    Given several layers that always see the same input (`{"q_proj": q, "k_proj": k, "v_proj": v}`), W is
    their weights stacked and the caller splits y: one product streams all of them, and fbgemm reads one wide
    matrix faster than several narrow ones (`bench/fused_projections.py`)."""

    def __init__(self, linear: nn.Linear | dict[str, nn.Linear], mode: str):
        super().__init__()
        parts = linear if isinstance(linear, dict) else {"": linear}
        if any(part.bias is not None for part in parts.values()):
            raise CrayonboxError("PackedLinear holds bias-free layers only")
        if len({part.in_features for part in parts.values()}) != 1:
            raise CrayonboxError("layers packed together must take inputs of one width")
        self.mode, self.in_features = mode, next(iter(parts.values())).in_features
        self.parts = {name: part.out_features for name, part in parts.items()}
        self.out_features = sum(self.parts.values())
        weights = [part.weight.detach().float() for part in parts.values()]
        weight = weights[0] if len(weights) == 1 else torch.cat(weights)  # one layer: no second fp32 copy
        if mode == "fp16w":
            self._packed = torch.ops.quantized.linear_prepack_fp16(weight, None)
        elif mode == "int8":
            # torch.ao's own quantization of the weight (per-channel symmetric scales, weights clamped to the
            # observer's range), so int8 images are those of its dynamic int8 Linear
            stacked = nn.Linear(self.in_features, self.out_features, bias=False)
            stacked.weight.data, stacked.qconfig = weight, per_channel_dynamic_qconfig
            with warnings.catch_warnings():  # torch marks the eager quantization API as deprecated
                warnings.simplefilter("ignore")
                self._packed = DynamicLinear.from_float(stacked)._packed_params._packed_params
        else:
            raise CrayonboxError(f"unknown weight-only mode {mode!r}: choose one of {', '.join(WEIGHT_ONLY)}")

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "fp16w":
            return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)
        return torch.ops.quantized.linear_dynamic(x, self._packed, reduce_range=True)

    def weight(self) -> Tensor:
        """The weight as the kernel multiplies by it, in fp32 (int8: dequantized), parts stacked."""
        if self.mode == "fp16w":
            return torch.ops.quantized.linear_unpack_fp16(self._packed)[0].float()
        return torch.ops.quantized.linear_unpack(self._packed)[0].dequantize()

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        # a state dict holds each weight as nn.Linear names it, so `save_pretrained` of a weight-only pipeline
        # writes an ordinary model folder (fp16w: the stored fp16 weights exactly; int8: dequantized); packed
        # parts are the parent's layers of those names (`...self_attn.qkv_proj.` → `...self_attn.q_proj.weight`)
        if list(self.parts) == [""]:
            destination[prefix + "weight"] = self.weight()
            return
        parent = prefix[: prefix.rstrip(".").rfind(".") + 1]
        for name, weight in zip(self.parts, self.weight().split(list(self.parts.values())), strict=True):
            destination[f"{parent}{name}.weight"] = weight.clone()

    def extra_repr(self) -> str:
        packed = f", parts={'‖'.join(self.parts)}" if len(self.parts) > 1 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}{packed}"


# Layers that always see one input, packed as one: modules of this name (self-attention and the GLU, in the
# encoder and the decoder; not cross-attention, whose q and k, v see different inputs) → (the packed layer's
# name, the layers it replaces). model/layers.py uses the packed layer where there is one.
PACKED_TOGETHER = {"self_attn": ("qkv_proj", ("q_proj", "k_proj", "v_proj")), "glu": ("fc01", ("fc0", "fc1"))}


def quantize_linears(bart: DalleBart, mode: str, pack_together: bool = True) -> DalleBart:
    """The transformer's Linear layers as `PackedLinear` in `mode`, all other parameters in fp32. Weights 2× /
    4× smaller than fp32, which is what a memory-bound decode step needs on CPUs without bf16 units.

    Swapped one layer (or one packed group) at a time, each replaced layer's memory handed back to the system at
    once, so memory peaks at the loaded weights plus one group in fp32 (dalle-mega in fp16w: peak RSS 6.1 GiB,
    7.4 GiB without the hand-back, ~13 GiB when built in fp32 and then quantized). `pack_together`: each
    self-attention's q, k, v and each GLU's fc0, fc1 become one layer (PACKED_TOGETHER); off only to measure
    what that buys."""
    if not fbgemm_available():
        raise CrayonboxError(f"dtype {mode} needs fbgemm (x86 CPUs with AVX2); use float32 on this machine")
    # Token embeddings stored in fp16 stay fp16 (dalle-mega: 0.26 GiB): a lookup added to the fp32 position
    # embedding is promoted to fp32 exactly, so the sums are the fp32 model's to the bit.
    linears = [n for n, m in bart.named_modules() if isinstance(m, nn.Linear)]
    linear_set = set(linears)
    for name, param in bart.named_parameters():
        owner = name.rpartition(".")[0]
        if owner not in linear_set and not (name in TOKEN_TABLES and param.dtype == torch.float16):
            param.data = param.data.float()
    groups = [(module, *PACKED_TOGETHER[name.rpartition(".")[2]]) for name, module in bart.named_modules()
              if pack_together and name.rpartition(".")[2] in PACKED_TOGETHER]  # listed first: packing edits the tree
    for module, packed_name, part_names in groups:
        parts = {part: getattr(module, part) for part in part_names}
        setattr(module, packed_name, PackedLinear(parts, mode))
        for part in part_names:
            delattr(module, part)
        del parts
        release_freed_memory()
    # by name, not over a list of modules: such a list would keep every replaced fp32 layer alive
    for name in [n for n, m in bart.named_modules() if isinstance(m, nn.Linear)]:
        parent_name, _, child_name = name.rpartition(".")
        parent = bart.get_submodule(parent_name)
        setattr(parent, child_name, PackedLinear(getattr(parent, child_name), mode))
        release_freed_memory()
    return bart.eval()


def release_freed_memory() -> None:
    """Hand memory freed by Python back to the system (glibc's malloc_trim; nothing elsewhere). Freed weight
    tensors otherwise stay in the allocator's arenas and count in the process's resident memory."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
