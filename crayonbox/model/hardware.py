"""What `--device auto` and `--dtype auto` mean on this machine, decided from what the hardware has (never from
one machine's experience), with the reason in words so `crayonbox generate --verbose` and the server's /healthz
can print it.

Devices: `auto` takes a GPU when there is one (CUDA, then Apple's mps), else the CPU; `cpu`, `cuda`, `cuda:N`
and `mps` ask for one, and a device this machine lacks is a one-line error.

On a CPU the decode step streams every transformer weight once per token, so it is memory-bound for one image
and compute-bound for a grid, while the VQGAN's convolutions are compute-bound; what pays depends on the
vector units (numbers from `bench/generate_vs_mindalle.py` and `bench/against.py`, docs/inference.md):

- AMX → bfloat16 throughout: the tile units make bf16 matmuls cheap at any batch (a mini grid 2.1× faster than
  fp16w on a Sapphire Rapids, one image as fast);
- AVX-512 BF16 without AMX (AMD Zen 4) → fp16w transformer, bfloat16 VQGAN: bf16 dot products there do not beat
  fbgemm's fp16-weight kernels on the decode step (mini shapes, ms per step: 20.0 vs 31.2 at one image, 60.9 vs
  63.0 at nine), but they halve the VQGAN's time (9 images: 6.3 s vs 12.5 s);
- AVX2, where fbgemm runs → fp16w: fp16 weights with fp32 maths, half the bytes, no bf16 units needed (bf16 is
  emulated and slow there);
- anything else → float32: exact, and the one fast path everywhere.

A CPU with AVX-512 FP16 also has AMX and AVX-512 BF16 (every one shipped so far), so the first rule applies; the
bench measures float16 beside it. Whether a mode keeps the images is `bench/precision_quality.py`'s question:
next-token KL divergence against fp32 on the trained default model, under its bound (docs/inference.md).
On CUDA: bfloat16 where the GPU supports it (Ampere and later), else float16.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache

import torch

from crayonbox.config import DEVICE_CHOICES
from crayonbox.errors import CrayonboxError


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and the instruction-set flags that decide kernels."""

    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    def summary(self) -> str:
        shown = [f for f in ("amx_bf16", "avx512_bf16", "avx512_fp16", "avx512f", "avx2") if f in self.flags]
        return f"{self.model} ({', '.join(shown) or 'no AVX2'})"


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from /proc/cpuinfo text."""
    first = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    first = {k.strip(): v.strip() for k, v in first.items()}
    return CpuFeatures(first.get("model name", platform.processor() or platform.machine()),
                       frozenset(first.get("flags", "").split()))


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's CPU: /proc/cpuinfo on Linux; elsewhere torch's own view of the vector units."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", …
        flags = {"avx2"} if capability in ("AVX2", "AVX512") else set()
        return CpuFeatures(platform.processor() or platform.machine(), frozenset(flags))


@dataclass(frozen=True)
class PrecisionChoice:
    mode: str  # the transformer's: a Pipeline dtype (bfloat16, float16, fp16w, float32)
    reason: str  # one line, for --verbose and /healthz
    vqgan: str = ""  # the VQGAN's dtype when it differs from what `mode` gives it ("": the same)

    def describe(self) -> str:
        return self.mode + (f" (VQGAN {self.vqgan})" if self.vqgan else "")


def cpu_precision(cpu: CpuFeatures, fbgemm: bool) -> PrecisionChoice:
    """The table in this module's docstring."""
    if cpu.amx:
        return PrecisionChoice("bfloat16", f"AMX tile units compute bf16: {cpu.summary()}")
    if cpu.native_bf16 and fbgemm:
        return PrecisionChoice("fp16w", f"AVX-512 BF16 without AMX: fp16-weight transformer, bf16 VQGAN "
                               f"({cpu.summary()})", vqgan="bfloat16")
    if cpu.native_bf16:
        return PrecisionChoice("bfloat16", f"AVX-512 BF16, no fbgemm: {cpu.summary()}")
    if cpu.avx2 and fbgemm:
        return PrecisionChoice("fp16w", f"AVX2 without bf16 units: fp16 weights, fp32 maths ({cpu.summary()})")
    return PrecisionChoice("float32", f"no AVX2 fp16 kernels or bf16 units: {cpu.summary()}")


def auto_precision(device: torch.device | str = "cpu") -> PrecisionChoice:
    """What `dtype="auto"` means on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bfloat16", f"{name} computes in bf16")
        return PrecisionChoice("float16", f"{name} has no bf16: float16")
    if device.type == "mps":
        return PrecisionChoice("float16", "Apple GPU (mps): float16")
    return cpu_precision(cpu_features(), fbgemm_available())


def fbgemm_available() -> bool:
    """fbgemm (x86 with AVX2) runs the weight-only modes (fp16w, int8); other CPUs (ARM) do not have it."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """`auto` → cuda, else mps, else cpu; anything else is checked against this machine."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise CrayonboxError(f"unknown device {spec!r}: choose {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise CrayonboxError(f"unsupported device {spec!r}: choose {DEVICE_CHOICES}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrayonboxError(f"device {spec!r} asked for, but this machine has no CUDA GPU (or torch is a CPU "
                             "build): use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CrayonboxError(f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CrayonboxError(f"device {spec!r} asked for, but Apple's mps backend is not available here")
    return device


def training_precision(spec: str, device: torch.device) -> str:
    """The autocast dtype of a training run: `auto` is bfloat16 where the hardware computes in bf16 natively
    (a CUDA GPU that supports it, a CPU with AMX or AVX-512 BF16: the small transformer trained 1.45× faster
    per sample, the VQGAN 1.6×, on a Sapphire Rapids), float32 elsewhere (bf16 is emulated, slower)."""
    if spec not in ("auto", "float32", "bfloat16"):
        raise CrayonboxError(f"--precision must be auto, float32 or bfloat16, not {spec!r}")
    if spec != "auto":
        return spec
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device.type == "cpu" and cpu_features().native_bf16 else "float32"
