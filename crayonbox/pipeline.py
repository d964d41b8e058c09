"""The orchestrator, diffusers-style: `Pipeline.from_pretrained(folder)`, then `pipe(prompts)` → PIL images.

    pipe = Pipeline.from_pretrained("path/to/model")          # or "owner/name" on the Hub, or load_default()
    out = pipe("a dog on a yellow background", num_images=9, seed=7)
    out.images[0].save("dog.png"); out.tokens; out.encodings[0].ids

Image i of a prompt uses seed `seed + i`, so asking for one image with seed s+i redraws exactly that image.
diffusers' argument names work too (num_images_per_prompt, guidance_scale, generator, torch_dtype,
output_type, return_dict; `pipe.to(device)`): pipeline_args.py maps them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import LongTensor, Tensor
from tqdm.auto import tqdm

from crayonbox.config import PRECISIONS, ModelConfig, VQGANConfig
from crayonbox.errors import CrayonboxError
from crayonbox.hub import resolve_model, upload_folder, write_hub_card
from crayonbox.model.bart import DalleBart
from crayonbox.model.hardware import PrecisionChoice, auto_precision, resolve_device
from crayonbox.model.images import to_pil
from crayonbox.model.packed_linear import (
    TOKEN_TABLES,
    WEIGHT_ONLY,
    PackedLinear,
    quantize_linears,
    release_freed_memory,
)
from crayonbox.model.vqgan import VQGAN
from crayonbox.model_folder import ModelFolder, ModelInfo, save_component, write_pipeline_json
from crayonbox.pipeline_args import CallArgs, convert_images, parse_to, pick, resolve_call
from crayonbox.sample import Decoding, ImageJob, SamplingSettings, rows_needed
from crayonbox.text.tokenizer import EncodedPrompt, Tokenizer
from crayonbox.weights.checks import check_state

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PipelineImages = list[Image.Image] | np.ndarray | Tensor  # by output_type: "pil", "np", "pt"


@dataclass
class PipelineOutput:
    images: PipelineImages  # PIL images unless output_type asked for "np" or "pt"
    tokens: LongTensor  # (N, image_length) VQGAN codes, one row per image
    prompts: list[str]  # per image
    seeds: list[int]  # per image
    encodings: list[EncodedPrompt]  # per prompt (token ids, normalised text, notes)
    unconditional: EncodedPrompt
    settings: SamplingSettings


@dataclass
class StreamFrame:
    step: int  # tokens decoded so far (per image)
    images: list[Image.Image]
    done: bool = False
    tokens: LongTensor | None = field(default=None)


class Pipeline:
    def __init__(
        self,
        bart: DalleBart,
        vqgan: VQGAN,
        tokenizer: Tokenizer,
        defaults: SamplingSettings | None = None,
        provenance: dict | None = None,
    ):
        if bart.cfg.image_vocab_size != vqgan.cfg.n_embed:
            raise CrayonboxError(
                f"model predicts {bart.cfg.image_vocab_size} codes but the VQGAN has {vqgan.cfg.n_embed}"
            )
        if bart.cfg.grid != vqgan.cfg.tokens_side:
            raise CrayonboxError(
                f"model makes {bart.cfg.grid}×{bart.cfg.grid} token grids, the VQGAN "
                f"{vqgan.cfg.tokens_side}×{vqgan.cfg.tokens_side}"
            )
        self.bart, self.vqgan, self.tokenizer = bart.eval(), vqgan.eval(), tokenizer
        self.defaults = defaults or SamplingSettings()
        self.provenance = provenance or {}
        self.source: Path | None = None  # the folder loaded from: push_to_hub carries its card and world along
        self.precision_choice: PrecisionChoice | None = None  # why, when loaded with dtype="auto"
        self._uncond: tuple[Tensor, Tensor] | None = None

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        dtype: str | torch.dtype | None = None,
        *,
        torch_dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
    ) -> Pipeline:
        """Load a model folder (see model_folder.py), or a Hub repo `owner/name` that is not a folder here
        (through the Hugging Face cache; `revision`, `cache_dir`, `local_files_only` and HF_HUB_OFFLINE apply).
        `dtype` (or diffusers' `torch_dtype`): float32 (default, exact), bfloat16 (fast only on CPUs with
        AVX-512 BF16 or AMX; emulated and slow on AVX2), float16, fp16w / int8 (weight-only: model/packed_linear.py;
        `bench/generate_vs_mindalle.py` prints their speed and agreement with fp32), or auto (what this machine's
        hardware runs best: crayonbox/model/hardware.py).
        `device`: where the weights go (see `to`)."""
        dtype = pick("dtype", dtype, "torch_dtype", torch_dtype) or "float32"
        folder = resolve_model(folder, revision, cache_dir, local_files_only)
        model = ModelFolder(folder)
        info = model.info()  # configs, tokenizer, defaults: a bad folder fails before the weights
        if isinstance(dtype, str) and dtype not in PRECISIONS:
            raise CrayonboxError(f"unknown dtype {dtype!r}: choose one of {', '.join(PRECISIONS)}")
        device = resolve_device(device) if device is not None else None
        choice = auto_precision(device or "cpu") if dtype == "auto" else None
        dtype = choice.mode if choice else dtype
        weight_only = dtype if dtype in WEIGHT_ONLY else None
        # weight-only modes use the token tables as stored: left in the file, a prompt pages in its own rows
        bart_state = model.weights("bart", mapped=TOKEN_TABLES if weight_only else ())
        dtype = torch.float32 if weight_only else DTYPES[dtype] if isinstance(dtype, str) else dtype
        vq_state = model.weights("vqgan")
        with torch.device("meta"):  # no memory: every tensor comes from the file (assign=True below)
            bart = DalleBart(info.config)
        vqgan = VQGAN(info.vqgan_config)
        _load_state(bart, bart_state, f"{folder}/bart", allow_missing=(), assign=True)
        del bart_state  # the module holds these tensors now; converting them frees each original in turn
        _load_state(vqgan, vq_state, f"{folder}/vqgan", allow_missing=("encoder.", "quant_conv."))
        bart = quantize_linears(bart, weight_only) if weight_only else bart.to(dtype)
        # oneDNN runs the VQGAN's convolutions ~25 % faster channels-last (pixels agree to 2e-5).
        vqgan = vqgan.to(DTYPES[choice.vqgan] if choice and choice.vqgan else dtype)
        vqgan = vqgan.to(memory_format=torch.channels_last)
        release_freed_memory()  # the VQGAN's fp32 copy and the load's buffers (dalle-mega: 0.09 GiB)
        pipe = cls(bart, vqgan, info.tokenizer, info.defaults, info.provenance)
        pipe.source, pipe.precision_choice = folder, choice
        return pipe.to(device) if device is not None else pipe

    def save_pretrained(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        folder = Path(folder)
        save_component(folder, "bart", self.bart.cfg.to_dict(), self.bart.state_dict(), dtype)
        save_component(folder, "vqgan", self.vqgan.cfg.to_dict(), self.vqgan.state_dict(), dtype)
        self.tokenizer.save(folder / "tokenizer")
        write_pipeline_json(folder, self.defaults.to_dict(), self.provenance)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    revision: str | None = None, commit_message: str | None = None,
                    dtype: torch.dtype | None = None) -> str:
        """Upload this pipeline as a model folder (`save_pretrained`, plus the loaded folder's card, world and
        other top-level files, and a README.md with the Hub's YAML header) to `repo_id`; returns the commit URL."""
        with tempfile.TemporaryDirectory(prefix="crayonbox-push-") as tmp:
            folder = Path(tmp) / repo_id.rpartition("/")[2]
            self.save_pretrained(folder, dtype)
            if self.source is not None:
                for extra in sorted(self.source.iterdir()):
                    if extra.is_file() and not (folder / extra.name).exists():
                        shutil.copy2(extra, folder / extra.name)
            write_hub_card(folder, self.source)
            return upload_folder(folder, repo_id, private=private, token=token, revision=revision,
                                 commit_message=commit_message)

    @property
    def config(self) -> ModelConfig:
        return self.bart.cfg

    @property
    def vqgan_config(self) -> VQGANConfig:
        return self.vqgan.cfg

    @property
    def info(self) -> ModelInfo:
        """What the loaded model says besides its weights, as `ModelFolder.info()` reads it from a folder."""
        return ModelInfo(self.config, self.vqgan_config, self.tokenizer, self.defaults, self.provenance)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the transformer computes in (fp16w and int8 keep fp16 token embeddings, fp32 maths)."""
        return self.bart.decoder.embed_positions.weight.dtype

    @property
    def device(self) -> torch.device:
        return next(self.bart.parameters()).device

    def to(self, *args: str | torch.device | torch.dtype, device: str | torch.device | None = None,
           dtype: str | torch.dtype | None = None) -> Pipeline:
        """Move the weights (`pipe.to("cpu")`), change their dtype (`pipe.to(torch.float16)`), or both, in place,
        as diffusers does; returns the pipeline. A device this machine lacks is a CrayonboxError."""
        device, dtype = parse_to(args, device, dtype)
        quantized = any(isinstance(m, PackedLinear) for m in self.bart.modules())
        if quantized and (dtype is not None or (device is not None and device.type != "cpu")):
            raise CrayonboxError("a pipeline loaded with dtype fp16w or int8 runs on the CPU in that precision "
                                 "only: load it again with the dtype you want")
        for module in (self.bart, self.vqgan):
            module.to(device=device, dtype=dtype)
        self._uncond = None  # cached on the old device / in the old dtype
        return self

    # ---------------------------------------------------------------- text
    @torch.inference_mode()
    def encode_text(self, encodings: list[EncodedPrompt]) -> tuple[Tensor, Tensor]:
        """Encoder states for prompts, computed only over the longest real prompt (padding is masked anyway)."""
        ids = torch.tensor([e.ids for e in encodings], device=self.device)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool, device=self.device)
        span = int(mask.sum(1).max())
        return self.bart.encoder(ids[:, :span], mask[:, :span]), mask[:, :span]

    def unconditional_states(self) -> tuple[Tensor, Tensor]:
        """The uncond branch's encoder states, computed once per pipeline."""
        if self._uncond is None:
            states, mask = self.encode_text([self.tokenizer.unconditional()])
            self._uncond = (states[0], mask[0])
        return self._uncond

    def settings(self, **overrides: float | int | None) -> SamplingSettings:
        """The pipeline's defaults with the given non-None overrides, validated (ModelInfo's rule)."""
        return self.info.settings(**overrides)

    def jobs(
        self, prompts: str | list[str], num_images: int, seed: int | list[int] | None, settings: SamplingSettings
    ) -> tuple[list[ImageJob[tuple[int, int]]], list[EncodedPrompt]]:
        """One ImageJob per image: seeds seed, seed+1, … per prompt, or the given per-image seeds (prompt-major),
        as `pipeline_args.image_seeds` makes them."""
        call = resolve_call(prompts, num_images, None if isinstance(seed, list) else seed, None, {})
        seeds = seed if isinstance(seed, list) else call.seeds
        if len(seeds) != len(call.prompts) * num_images:
            raise CrayonboxError(f"{len(seeds)} seeds for {len(call.prompts) * num_images} images")
        encodings = self.tokenizer.encode_batch(call.prompts)
        states, mask = self.encode_text(encodings)
        jobs = [
            ImageJob(states[p], mask[p], int(seeds[p * num_images + i]), settings, tag=(p, i))
            for p in range(len(call.prompts))
            for i in range(num_images)
        ]
        return jobs, encodings

    def new_decoding(self, capacity: int, jobs: list[ImageJob] | None = None,
                     static: bool | None = None) -> Decoding:
        """A decode batch of `capacity` cache rows. Given the jobs it will hold (and no others later), its
        cross-attention is sized to their longest prompt instead of text_length. `static` (default: on CUDA)
        runs fixed-shape steps, captured in a CUDA graph on a GPU (see `Decoding`)."""
        states, mask = self.unconditional_states()
        text_len = max([states.shape[0], *(j.states.shape[0] for j in jobs)]) if jobs else None
        static = self.device.type == "cuda" if static is None else static
        return Decoding(self.bart, states, mask, capacity, text_len, static=static)

    # ---------------------------------------------------------------- images
    @torch.inference_mode()
    def decode_images(self, tokens: LongTensor, batch: int = 9) -> list[Image.Image]:
        """VQGAN tokens (N, image_length) → PIL images."""
        images: list[Image.Image] = []
        tokens = tokens.to(self.device)
        for start in range(0, tokens.shape[0], batch):
            images += to_pil(self.vqgan.decode(tokens[start : start + batch]))
        return images

    # ---------------------------------------------------------------- generation
    def __call__(
        self,
        prompt: str | list[str],
        num_images: int | None = None,
        seed: int | None = None,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        progress: bool = False,
        callback: Callable[[int], None] | None = None,
        **sampler: float | int | None,
    ) -> PipelineOutput | tuple[PipelineImages]:
        """Generate `num_images` (or `num_images_per_prompt`) per prompt. Returns images, their VQGAN tokens and
        the exact text ids used. `sampler`: any `SamplingSettings` field (condition_scale or guidance_scale,
        top_k, …); None or omitted keeps the model's default. `seed` or `generator` fix the images (see
        pipeline_args.py). `output_type` "pil", "np" or "pt"; `return_dict=False` returns `(images,)`."""
        call = resolve_call(prompt, num_images, seed, generator, sampler, output_type, return_dict)
        *_, out = self._stream(call, every=0, progress=progress, callback=callback)
        out.images = convert_images(out.images, call.output_type)
        return out if call.return_dict else (out.images,)

    def stream(
        self,
        prompt: str | list[str],
        num_images: int | None = None,
        seed: int | None = None,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        every: int = 32,
        progress: bool = False,
        callback: Callable[[int], None] | None = None,
        **sampler: float | int | None,
    ) -> Iterator[StreamFrame | PipelineOutput]:
        """Yield a StreamFrame of intermediate images every `every` tokens (0: none), then the PipelineOutput.
        Takes `__call__`'s arguments, less output_type and return_dict (frames are PIL images)."""
        call = resolve_call(prompt, num_images, seed, generator, sampler)
        return self._stream(call, every, progress, callback)

    def _stream(self, call: CallArgs, every: int, progress: bool,
                callback: Callable[[int], None] | None) -> Iterator[StreamFrame | PipelineOutput]:
        settings = self.settings(**call.sampler)
        jobs, encodings = self.jobs(call.prompts, call.num_images, call.seeds, settings)
        decoding = self.new_decoding(capacity=sum(rows_needed(j) for j in jobs), jobs=jobs)
        decoding.add(jobs)
        steps = self.config.image_length
        bar = _progress(steps, progress)
        for step in range(1, steps + 1):
            decoding.step()
            bar.update(1)
            if callback:
                callback(step)
            if every and step % every == 0 and step < steps:
                partial = torch.stack([decoding.partial_tokens(j) for j in jobs])
                yield StreamFrame(step, self.decode_images(partial), tokens=partial)
        bar.close()
        del decoding  # its KV cache (dalle-mega, 9 images: 1.7 GiB) is not needed by the VQGAN
        tokens = torch.tensor([j.tokens for j in jobs], dtype=torch.long)
        yield PipelineOutput(
            self.decode_images(tokens),
            tokens,
            [call.prompts[j.tag[0]] for j in jobs],
            [j.seed for j in jobs],
            encodings,
            self.tokenizer.unconditional(),
            settings,
        )


def _progress(total: int, enabled: bool):
    return tqdm(total=total, desc="decoding", unit="tok", disable=not enabled, leave=False)


def _load_state(module: torch.nn.Module, state: dict[str, Tensor], where: str,
                allow_missing: tuple[str, ...], assign: bool = False) -> None:
    """load_state_dict after `check_state` has named any missing, unexpected or mis-shaped key;
    `allow_missing` is a group of prefixes that may be absent as a whole (the VQGAN encoder, which official
    checkpoints for generation do not ship). `assign`: the module takes the state's tensors (a module built on
    the meta device, which must then be given every tensor)."""
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    check_state(state, expected, f"{where} (weights vs its config.json)",
                optional_groups=[allow_missing] if allow_missing else ())
    module.load_state_dict(state, strict=not allow_missing, assign=assign)
