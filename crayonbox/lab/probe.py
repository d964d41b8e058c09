"""The probe: many images per prompt × condition scale, stored so every one can be explained and redrawn.

    summary = run_probe(ProbeConfig(model=..., prompts=["null"], n=400, condition_scales=(1, 3, 10)), "RUN")

Image i of every (prompt, scale) uses seed `seed + i` (common random numbers: prompt and scale comparisons are
paired, which the report states), and `Decoding` makes an image depend only on (prompt ids, seed, settings,
model), so any row can be redrawn with `pipe(prompt, seed=row.seed, condition_scale=…)`.

Speed: images are decoded in big batches (one `Decoding` of `batch_images` images, two cache rows each under
guidance), then their VQGAN tokens are deduplicated before the VQGAN, which dominates the cost. With
`workers` > 1 each worker process runs its own pipeline on one thread; the parent alone writes the database.
Interrupted (even by kill -9) the probe resumes where it stopped: see store.py.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from crayonbox import default_model_dir
from crayonbox.config import check_condition_scale
from crayonbox.errors import CrayonboxError
from crayonbox.lab.families import UNCONDITIONAL_IDS, PromptSpec, expand_prompts
from crayonbox.lab.store import DB_NAME, RUN_KIND, ImageRecord, RunStore, settings_key, write_png
from crayonbox.model_folder import ModelFolder
from crayonbox.outdir import check_output_folder
from crayonbox.pipeline import Pipeline
from crayonbox.procs import die_with_parent
from crayonbox.sample import ImageJob, SamplingSettings, rows_needed
from crayonbox.sampler_settings import SamplerOverrides, sampler_names
from crayonbox.text.tokenizer import EncodedPrompt, Tokenizer


@dataclass
class ProbeConfig:
    """What to probe. `None` sampler fields take the model's own defaults (its pipeline.json)."""

    model: Path | None = None  # model folder; None = crayonbox.default_model_dir()
    prompts: list[str | PromptSpec] = field(default_factory=lambda: ["null"])  # families, files, PromptSpecs
    n: int = 400  # images per prompt and condition scale (≥ 400: ±5 % intervals)
    condition_scales: tuple[float, ...] = (1.0, 3.0, 10.0)
    # The other sampler knobs, applied over the model's defaults; the scale comes from `condition_scales`.
    sampler: SamplerOverrides = field(default_factory=SamplerOverrides)
    seed: int = 0  # image i of every prompt and scale uses seed + i
    # Processes. On 2 shared cores, 2 one-thread workers beat 1 two-thread process 2.4× in CPU s/image
    # (bench/probe.py: 0.150 vs 0.364): the decode loop is many small ops that threads cannot split well.
    workers: int = 2
    threads: int | None = None  # torch threads per process (None: 1 with workers, torch's default without)
    batch_images: int = 256  # images decoded together (each takes 2 cache rows under guidance)
    device: str = "auto"  # where each worker decodes (auto: a GPU when there is one); always float32
    world_config: Path | None = None  # world config for the attire/person/… families (None: the default)
    verify: bool = False  # first check every stored row's PNG and redraw the missing ones

    def validate(self) -> ProbeConfig:
        """Check the numbers before anything is loaded or written."""
        if self.n < 1:
            raise CrayonboxError(f"-n must be at least 1 image per prompt and scale (got {self.n})")
        if not self.condition_scales:
            raise CrayonboxError("give at least one --condition-scale")
        for scale in self.condition_scales:
            check_condition_scale(scale)
        if self.sampler.get("condition_scale") is not None:
            raise CrayonboxError("the probe's condition scales are `condition_scales`, not a sampler override")
        if self.workers < 1 or self.batch_images < 1:
            raise CrayonboxError("--workers and --batch-images must be at least 1")
        if not 0 <= self.seed < 2**62:
            raise CrayonboxError(f"--seed must be in [0, 2**62) (got {self.seed})")
        return self


@dataclass
class ProbeSummary:
    """What a probe call did."""

    run: str
    planned: int  # images the run should hold for this configuration
    already_stored: int  # found on resume and skipped
    generated: int  # rows added by this call
    seconds: float
    images_per_second: float
    prompts: int
    scales: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class Task:
    """One image to make: which prompt, which settings, which index (seed = base + index)."""

    spec: int
    settings: str  # settings_key
    index: int


def _hash_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_hash(folder: Path) -> str:
    """sha256 over the model folder's safetensors files (their relative paths and bytes)."""
    folder = Path(folder)
    files = list(folder.rglob("*.safetensors"))
    if not files:
        raise CrayonboxError(f"{folder} has no .safetensors weights: not a model folder")
    return _hash_files(files, folder)


def text_hash(folder: Path) -> str:
    """sha256 over the tokenizer folder (vocabulary, merges, normaliser settings): a model with the same
    weights but another text path makes other images."""
    files = [p for p in (Path(folder) / "tokenizer").iterdir() if p.is_file()]
    return _hash_files(files, Path(folder))


def resolve_model(model: Path | str | None) -> Path:
    """The model folder to probe: the given one, or the shipped default."""
    if model is None:

        return default_model_dir()
    return ModelFolder(model).check().path  # clear errors for a missing or foreign folder


def load_tokenizer(folder: Path) -> Tokenizer:
    """The model's tokenizer, without loading any weights."""
    return ModelFolder(folder).tokenizer


def encode_spec(tokenizer: Tokenizer, spec: PromptSpec) -> EncodedPrompt:
    """The encoder input of a probe prompt; the raw-unconditional control gets the unconditional ids as is."""
    if spec.input_mode == UNCONDITIONAL_IDS:
        return tokenizer.unconditional()
    return tokenizer.encode(spec.prompt)


def sampler_settings(folder: Path, config: ProbeConfig) -> list[SamplingSettings]:
    """One SamplingSettings per condition scale: the model's defaults with the probe's overrides."""
    base = config.sampler.apply(ModelFolder(folder).defaults)
    return [base.with_overrides(condition_scale=scale)
            for scale in dict.fromkeys(float(s) for s in config.condition_scales)]


# ---------------------------------------------------------------------------- generation (any process)
class ProbeWorker:
    """A loaded pipeline plus the probe's prompts; turns Tasks into stored PNGs and ImageRecords."""

    def __init__(self, model_dir: Path, specs: list[PromptSpec], settings: list[SamplingSettings], seed: int,
                 run_dir: Path, weights_hash: str, device: str = "cpu", pipe: Any = None):
        self.pipe = pipe if pipe is not None else Pipeline.from_pretrained(model_dir, device=device)
        self.specs, self.seed, self.run_dir, self.weights_hash = specs, seed, Path(run_dir), weights_hash
        self.settings = {settings_key(**s.to_dict()): s for s in settings}
        self.encodings = [encode_spec(self.pipe.tokenizer, spec) for spec in specs]
        self.uncond = self.pipe.tokenizer.unconditional()

    def run(self, tasks: list[Task]) -> list[ImageRecord]:
        """Decode, render and store these images; returns their rows (not yet in the database)."""
        tokens = self.decode_tokens(tasks)
        # The VQGAN is deterministic and the costliest stage: render each distinct token grid once.
        unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        images = self.pipe.decode_images(unique, batch=32)
        stored = [write_png(self.run_dir, image) for image in images]
        records = []
        for task, row, grid in zip(tasks, inverse.tolist(), tokens.tolist(), strict=True):
            spec, enc, s = self.specs[task.spec], self.encodings[task.spec], self.settings[task.settings]
            sha, rel = stored[row]
            records.append(ImageRecord(
                prompt=spec.prompt, input_mode=spec.input_mode, family=spec.family, normalized=enc.normalized,
                token_ids=_real_ids(enc), uncond_ids=_real_ids(self.uncond),
                sampler=s.to_dict(), seed=self.seed + task.index, image_index=task.index, model_hash=self.weights_hash,
                sha256=sha, path=rel, image_tokens=grid))
        return records

    def decode_tokens(self, tasks: list[Task]) -> torch.Tensor:
        """VQGAN codes of the tasks' images, (len(tasks), image_length), all decoded in one batch."""
        used = sorted({t.spec for t in tasks})
        states, mask = self.pipe.encode_text([self.encodings[i] for i in used])
        row = {spec: r for r, spec in enumerate(used)}
        jobs: list[ImageJob[int]] = [ImageJob(states[row[t.spec]], mask[row[t.spec]], self.seed + t.index,
                         self.settings[t.settings], tag=i) for i, t in enumerate(tasks)]
        # Sized to these jobs: cross-attention then spans the longest real prompt, not all text_length slots.
        decoding = self.pipe.new_decoding(sum(rows_needed(j) for j in jobs), jobs=jobs)
        decoding.add(jobs)
        for _ in range(self.pipe.config.image_length):
            decoding.step()
        return torch.tensor([j.tokens for j in jobs], dtype=torch.long)


def _real_ids(encoding: EncodedPrompt) -> list[int]:
    return [i for i, m in zip(encoding.ids, encoding.attention_mask, strict=True) if m]


_WORKER: dict[str, ProbeWorker] = {}


def _init_worker(args: tuple, threads: int) -> None:
    die_with_parent()  # a kill -9 of the probe must not leave workers drawing into its run folder
    torch.set_num_threads(threads)
    _WORKER["worker"] = ProbeWorker(*args)


def _run_in_worker(tasks: list[Task]) -> list[ImageRecord]:
    return _WORKER["worker"].run(tasks)


# ---------------------------------------------------------------------------- the probe (parent process)
def plan_tasks(specs: list[PromptSpec], settings: list[SamplingSettings], n: int, seed: int,
               existing: set[tuple[str, str, str, int]]) -> tuple[list[Task], int]:
    """Every image the configuration asks for that the run does not hold yet, and the number it holds."""
    todo, have = [], 0
    for s in settings:
        key = settings_key(**s.to_dict())
        for spec_index, spec in enumerate(specs):
            for i in range(n):
                if (spec.prompt, spec.input_mode, key, seed + i) in existing:
                    have += 1
                else:
                    todo.append(Task(spec_index, key, i))
    return todo, have


def record_prompts(store: RunStore, tokenizer: Tokenizer, specs: list[PromptSpec]) -> None:
    """Store how each prompt became ids (tokens as BPE strings, the normaliser's notes) for the report."""
    uncond = tokenizer.unconditional()
    with store.transaction():
        for spec in specs:
            enc = encode_spec(tokenizer, spec)
            store.put_record(f"prompt:{spec.key}", {
                "key": spec.key, "prompt": spec.prompt, "family": spec.family, "input_mode": spec.input_mode,
                "label": spec.label, "normalized": enc.normalized, "ids": _real_ids(enc),
                "tokens": enc.tokens, "notes": enc.notes, "uncond_ids": _real_ids(uncond),
                "uncond_tokens": uncond.tokens})


def chunked(tasks: list[Task], size: int) -> list[list[Task]]:
    """Consecutive slices of at most `size` tasks."""
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def run_probe(config: ProbeConfig, out: str | Path, progress: bool = True) -> ProbeSummary:
    """Generate what `config` asks for into the run folder `out` (resuming it if it exists)."""

    config.validate()
    folder = resolve_model(config.model)
    specs = expand_prompts(config.prompts, config.world_config)
    settings = sampler_settings(folder, config)
    weights_hash, tokens_hash = model_hash(folder), text_hash(folder)
    check_output_folder(out, RUN_KIND, DB_NAME)  # someone's folder is refused before the model loads
    # Load the model before the run folder exists: a corrupt model must not leave a run bound to its hash
    # (and a worker that cannot load it would be restarted by the pool forever).

    pipe = Pipeline.from_pretrained(folder, device=config.device)
    store = RunStore.create(out)
    try:
        store.bind_model(weights_hash, tokens_hash, str(folder.resolve()))
        redraw = store.drop_rows_without_png() if config.verify else 0
        todo, have = plan_tasks(specs, settings, config.n, config.seed, store.existing_keys())
        record_prompts(store, load_tokenizer(folder), specs)
        store.put_record(f"probe:{time.strftime('%Y%m%dT%H%M%S')}:{os.getpid()}",
                         {"config": _jsonable(config), "model": str(folder.resolve()),
                          "planned": len(todo) + have, "already_stored": have, "redrawn_missing_png": redraw,
                          "common_random_numbers": True})
        start, generated = time.perf_counter(), 0
        bar = tqdm(total=len(todo) + have, initial=have, unit="img", desc="probe", disable=not progress)
        args = (folder, specs, settings, config.seed, store.folder, weights_hash, str(pipe.device))
        if config.workers == 1 or len(todo) <= config.batch_images:
            if config.threads:
                torch.set_num_threads(config.threads)
            worker = ProbeWorker(*args, pipe=pipe) if todo else None
            for tasks in chunked(todo, config.batch_images):
                generated += store.add_images(worker.run(tasks))
                bar.update(len(tasks))
        else:
            # Split so every worker gets work even for small probes, but never more than batch_images at once.
            del pipe  # each worker loads its own; the parent only writes the database
            size = max(1, min(config.batch_images, -(-len(todo) // config.workers)))
            context = mp.get_context("spawn")  # no fork: torch's thread pools do not survive it safely
            with context.Pool(config.workers, _init_worker, (args, config.threads or 1)) as pool:
                for records in pool.imap_unordered(_run_in_worker, chunked(todo, size)):
                    generated += store.add_images(records)
                    bar.update(len(records))
        bar.close()
        seconds = time.perf_counter() - start
        return ProbeSummary(run=str(store.folder), planned=len(todo) + have, already_stored=have,
                            generated=generated, seconds=seconds,
                            images_per_second=generated / seconds if seconds > 0 and generated else 0.0,
                            prompts=len(specs), scales=[s.condition_scale for s in settings])
    finally:
        store.close()


def _jsonable(config: ProbeConfig) -> dict[str, Any]:
    # The record keeps its flat shape and key order (top_k, top_p, temperature in place of `sampler`; None when
    # the model's default was used), so records of runs probed before and after read alike.
    flat: dict[str, Any] = {}
    for key, value in asdict(config).items():
        if key == "sampler":
            flat.update({name: config.sampler.get(name) for name in sampler_names() if name != "condition_scale"})
        else:
            flat[key] = value
    data = flat
    data["prompts"] = [p.key if isinstance(p, PromptSpec) else p for p in config.prompts]
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in data.items()}
