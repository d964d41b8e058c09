"""The decode loop: classifier-free guidance, top-k / top-p / temperature, per-image seeds, a batch that
images can join and leave at any step.

One `Decoding` serves both offline generation (all images join at step 0) and the server (requests join a
running batch). Each image owns two cache rows, conditional and unconditional (none when its condition scale is
1, where guidance is a no-op), and its own position, so it never waits for others.

Reproducibility: an image's randomness is a vector of uniforms drawn from its own seed before decoding starts,
and token t is the inverse-CDF sample at uniform u[t]. So an image depends only on (prompt, seed, settings,
model), never on batch size or its place in the batch (dalle-mini #273 was the opposite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch
from torch import LongTensor, Tensor

from crayonbox.errors import CrayonboxError
from crayonbox.model.bart import DalleBart
from crayonbox.model.decoder import DecodeCache, Decoder
from crayonbox.sampler_settings import SamplingSettings  # re-exported: the decode loop's settings type


def image_uniforms(seed: int, length: int) -> Tensor:
    """The random numbers one image consumes, one per token, from its own generator."""
    if not 0 <= seed < 2**63:
        raise CrayonboxError(f"seed must be in [0, 2**63) (got {seed})")
    return torch.rand(length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def guide(cond: Tensor, uncond: Tensor, scale: Tensor) -> Tensor:
    """Super-conditioning (DM modeling.py:1893-1898): uncond + scale · (cond − uncond), in fp32."""
    cond, uncond = cond.float(), uncond.float()
    return uncond + scale[:, None] * (cond - uncond)


def sample_from_logits(
    logits: Tensor, top_k: LongTensor, top_p: Tensor, temperature: Tensor, uniforms: Tensor
) -> LongTensor:
    """Draw one token per row with per-row settings: temperature, then top-k, then top-p (transformers'
    warper order), then inverse-CDF sampling at the row's uniform. Candidates are ranked by logit, so the draw
    is a deterministic function of (logits, settings, uniform)."""
    vocab = logits.shape[-1]
    k_eff = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    logits = logits.float() / temperature[:, None]
    values, index = logits.topk(int(k_eff.max()), dim=-1)  # sorted, most likely first
    ranks = torch.arange(values.shape[1], device=logits.device)
    values = values.masked_fill(ranks[None, :] >= k_eff[:, None], float("-inf"))
    probs = values.softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    probs = probs * (mass_before < top_p[:, None])  # always keeps the top candidate
    cdf = probs.double().cumsum(-1)
    choice = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None]).clamp(max=values.shape[1] - 1)
    return index.gather(1, choice)[:, 0]


Tag = TypeVar("Tag")


@dataclass
class ImageJob(Generic[Tag]):
    """One image to decode: its prompt's encoder states and its own seed and settings. `tag` is the caller's
    handle, typed by the caller: (prompt, image) in Pipeline, a task index in the probe, (ticket, image) in the
    server's scheduler."""

    states: Tensor  # (S, d) encoder states of the prompt
    mask: Tensor  # (S,) bool, real text tokens
    seed: int
    settings: SamplingSettings
    tag: Tag | None = None
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class BatchIndex:
    """Per-image tensors `Decoding.step` uses, derived from its rows: rebuilt only when images join or leave."""

    cond: LongTensor  # each image's conditional cache row
    uncond: LongTensor  # its unconditional row (its cond row at scale 1: guidance is then the identity)
    scale: Tensor  # condition scale (1 where there is no uncond row)
    top_k: Tensor
    top_p: Tensor
    temperature: Tensor
    uniforms: Tensor  # (images, image_length) float64: each image's sampling draws


def rows_needed(job: ImageJob) -> int:
    """Cache rows an image takes: 2 under guidance (cond + uncond), 1 at condition scale 1 (a no-op)."""
    return 1 if job.settings.condition_scale == 1 else 2


class Decoding:
    """Images being decoded together. `add` at any time, `step` advances every image by one token.

    The cache is preallocated for `capacity` rows and kept compact: an image that finishes gives its rows
    back by moving the last rows into the hole, so a step always runs on rows [0, active).
    """

    def __init__(
        self,
        model: DalleBart,
        uncond_states: Tensor,
        uncond_mask: Tensor,
        capacity: int,
        text_len: int | None = None,
        static: bool = False,
    ):
        """`text_len`: cross-attention slots per row. The default (the model's text_length) fits any prompt
        that may join later; a batch whose prompts are all known can pass its longest real prompt instead,
        which for blank prompts (3 ids of 64) removes most of the cross-attention cost.

        `static`: every step runs on all `capacity` rows, all image slots and all text slots (`Decoder.step`
        with static=True), so its shapes never change; on CUDA the step is then captured once in a CUDA graph
        and replayed (one launch per step instead of one per kernel). Rows without an image feed BOS at
        position 0 and their logits are dropped."""
        self.model, self.cfg = model, model.cfg
        self.capacity = capacity
        self.static = static
        self._graph: GraphedStep | None = None
        self.uncond_states, self.uncond_mask = uncond_states, uncond_mask
        self.device = uncond_states.device  # the model's: every tensor a step touches lives there
        self.jobs: list[ImageJob] = []
        self.uniforms: list[Tensor] = []
        self.cache: DecodeCache | None = None
        self.text_len = text_len or self.cfg.text_length
        self._cross_kv: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}  # per prompt, for the current add()
        self.row_owner: list[tuple[int, bool]] = []  # row → (job index, is_uncond): the one source of truth
        self._index_rows()  # the per-image tensors `step` uses, derived from it

    @property
    def active_images(self) -> int:
        return len(self.jobs)

    @property
    def rows_in_use(self) -> int:
        return len(self.row_owner)

    def _alloc(self, like: Tensor) -> None:
        self.cache = DecodeCache.empty(self.cfg, self.capacity, self.text_len, like.dtype, like.device)
        if self.static:  # a row without an image attends to one zero text slot: finite, never NaN
            self.cache.cross_mask[:, 0, 0, 0] = True
            if like.device.type == "cuda":
                self._graph = GraphedStep(self.model.decoder, self.cache)

    @torch.inference_mode()
    def _write_row(self, row: int, states: Tensor, mask: Tensor) -> None:
        assert self.cache is not None
        s = states.shape[0]
        if s > self.text_len:
            raise CrayonboxError(
                f"prompt of {s} text positions does not fit a batch sized for {self.text_len}"
            )
        key = (states.data_ptr(), states.storage_offset())  # the images of one prompt share its states tensor
        if key not in self._cross_kv:
            self._cross_kv[key] = self.model.decoder.cross_keys_values(
                states[None]
            )  # (layers, 1, heads, S, hd)
        k, v = self._cross_kv[key]
        self.cache.cross_k[:, row, :, :s] = k[:, 0]
        self.cache.cross_v[:, row, :, :s] = v[:, 0]
        self.cache.cross_mask[row] = False
        self.cache.cross_mask[row, 0, 0, :s] = mask

    def add(self, jobs: list[ImageJob]) -> None:
        """Start decoding these images at their step 0. Raises if the batch has no room (callers check
        `free_rows` first)."""
        need = sum(rows_needed(j) for j in jobs)
        if need > self.free_rows:
            raise CrayonboxError(f"decode batch full: {need} rows needed, {self.free_rows} free")
        if self.cache is None:
            self._alloc(self.uncond_states)
        for job in jobs:
            job.settings.validate()
            index = len(self.jobs)
            self.jobs.append(job)
            self.uniforms.append(image_uniforms(job.seed, self.cfg.image_length))
            row = self.rows_in_use
            self._write_row(row, job.states, job.mask)
            self.row_owner.append((index, False))
            if rows_needed(job) == 2:
                self._write_row(row + 1, self.uncond_states, self.uncond_mask)
                self.row_owner.append((index, True))
        self._cross_kv.clear()  # keyed by tensor address: never reuse across calls
        self._index_rows()

    @property
    def free_rows(self) -> int:
        return self.capacity - self.rows_in_use

    @torch.inference_mode()
    def step(self) -> list[ImageJob]:
        """Advance every image by one token; return the images that just finished (and free their rows)."""
        if not self.jobs:
            return []
        assert self.cache is not None
        cfg, r = self.cfg, self.rows_in_use
        # one list per step, then one tensor: per-element tensor writes cost ~1 µs each, 2 per row
        done = [len(job.tokens) for job in self.jobs]
        last = [job.tokens[-1] if job.tokens else cfg.bos_token_id for job in self.jobs]
        idle = self.capacity - r if self.static else 0  # rows without an image, fed BOS at position 0
        tokens = torch.tensor([last[j] for j, _ in self.row_owner] + [cfg.bos_token_id] * idle,
                              dtype=torch.long, device=self.device)
        positions = torch.tensor([done[j] for j, _ in self.row_owner] + [0] * idle,
                                 dtype=torch.long, device=self.device)
        if self._graph is not None:
            logits = self._graph(tokens, positions)
        elif self.static:
            logits = self.model.decoder.step(tokens, positions, self.cache, static=True)
        else:
            # Cross-attention only over the longest prompt in the batch now (slots past it are masked in
            # every row): a server batch is sized for any prompt that may join, most are much shorter.
            t = self._cross_len
            view = DecodeCache(
                self.cache.self_k[:, :r],
                self.cache.self_v[:, :r],
                self.cache.cross_k[:, :r, :, :t],
                self.cache.cross_v[:, :r, :, :t],
                self.cache.cross_mask[:r, :, :, :t],
            )
            logits = self.model.decoder.step(tokens, positions, view)
        logits = logits[:r, : cfg.image_vocab_size]
        n = len(self.jobs)
        b = self.batch
        guided = guide(logits[b.cond], logits[b.uncond], b.scale)
        u = b.uniforms[torch.arange(n, device=self.device), torch.tensor(done, device=self.device)]
        new = sample_from_logits(guided, b.top_k, b.top_p, b.temperature, u)
        for j, token in enumerate(new.tolist()):
            self.jobs[j].tokens.append(token)
        finished = [j for j in range(n) if len(self.jobs[j].tokens) == cfg.image_length]
        return self.remove(finished)

    def remove(self, indices: list[int]) -> list[ImageJob]:
        """Drop images (finished or cancelled) and compact the cache rows that remain."""
        if not indices:
            return []
        gone = set(indices)
        removed = [self.jobs[j] for j in indices]
        keep_rows = [row for row, (j, _) in enumerate(self.row_owner) if j not in gone]
        if self.cache is not None and keep_rows != list(range(len(keep_rows))):
            src = torch.tensor(keep_rows, device=self.device)
            dst = slice(0, len(keep_rows))
            for name in ("self_k", "self_v", "cross_k", "cross_v"):
                t = getattr(self.cache, name)
                t[:, dst] = t.index_select(1, src)
            self.cache.cross_mask[dst] = self.cache.cross_mask[src]
        new_index = {}
        jobs, uniforms = [], []
        for j, job in enumerate(self.jobs):
            if j not in gone:
                new_index[j] = len(jobs)
                jobs.append(job)
                uniforms.append(self.uniforms[j])
        self.row_owner = [(new_index[self.row_owner[row][0]], self.row_owner[row][1]) for row in keep_rows]
        self.jobs, self.uniforms = jobs, uniforms
        self._index_rows()
        return removed

    def _index_rows(self) -> None:
        """Rebuild, from `row_owner`, the per-image tensors `step` uses (each image's cache rows, settings)."""
        cond_row: list[int] = [0] * len(self.jobs)
        uncond_row: list[int | None] = [None] * len(self.jobs)
        for row, (j, is_uncond) in enumerate(self.row_owner):
            if is_uncond:
                uncond_row[j] = row
            else:
                cond_row[j] = row
        # text positions of the longest prompt in the batch (uncond rows hold the unconditional ids)
        self._cross_len = max((self.uncond_states.shape[0] if is_uncond else self.jobs[j].states.shape[0]
                               for j, is_uncond in self.row_owner), default=0)
        settings = [j.settings for j in self.jobs]
        on = {"device": self.device}  # built here once per batch change, so a step moves nothing to the device
        self.batch = BatchIndex(
            cond=torch.tensor(cond_row, dtype=torch.long, **on),
            uncond=torch.tensor([c if u is None else u for u, c in zip(uncond_row, cond_row, strict=True)],
                                dtype=torch.long, **on),
            scale=torch.tensor([s.condition_scale if u is not None else 1.0
                                for s, u in zip(settings, uncond_row, strict=True)], **on),
            top_k=torch.tensor([s.top_k for s in settings], **on),
            top_p=torch.tensor([s.top_p for s in settings], **on),
            temperature=torch.tensor([s.temperature for s in settings], **on),
            uniforms=torch.stack(self.uniforms).to(self.device) if self.uniforms
            else torch.zeros(0, self.cfg.image_length, dtype=torch.float64, **on))

    def partial_tokens(self, job: ImageJob) -> LongTensor:
        """The image's tokens so far, with undecoded positions copied from the row above (or the first token),
        so an intermediate VQGAN decode shows a picture that sharpens downward instead of noise."""
        side = self.cfg.grid
        out = torch.zeros(self.cfg.image_length, dtype=torch.long)
        done = len(job.tokens)
        if done:
            out[:done] = torch.tensor(job.tokens)
        for t in range(done, self.cfg.image_length):
            out[t] = out[t - side] if t >= side else (out[done - 1] if done else 0)
        return out


class GraphedStep:
    """`Decoder.step(static=True)` on one cache, captured in a CUDA graph: each call copies the tokens and
    positions into the graph's own input tensors and replays every kernel of the step in one launch.

    Captured after two warm-up steps on a side stream (what capture needs: allocator pools, cuBLAS workspaces,
    lazily-built kernels); the warm-up writes the K/V of position 0 in every row, which each image overwrites
    at its own first step, so the cache must be captured before any image joins (`Decoding._alloc`)."""

    def __init__(self, decoder: Decoder, cache: DecodeCache):
        rows, device = cache.self_k.shape[1], cache.self_k.device
        self.tokens = torch.full((rows,), decoder.cfg.bos_token_id, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(2):
                decoder.step(self.tokens, self.positions, cache, static=True)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.logits = decoder.step(self.tokens, self.positions, cache, static=True)

    def __call__(self, tokens: LongTensor, positions: LongTensor) -> Tensor:
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.graph.replay()
        return self.logits
