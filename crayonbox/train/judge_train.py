"""Training the judge (crayonbox/model/judge.py): fit the scene net and the slot net on neutral renders, report
held-out accuracy.

Each render gives the scene net one example (count, background) and the slot net one crop per object; a few
crops of bare backgrounds teach the slot net to say "none" when a generated image leaves a slot empty. One
step = `batch_size` crops plus half as many whole images, one AdamW update of both nets. Deterministic for a
seed; a killed run resumes from its last epoch checkpoint (the renders are drawn again, identically). The loss
is the `JudgeTask` that train/loop.py's `TrainingLoop` runs (resume, schedule, checkpoints, progress bar); the
options are `JudgeTrainConfig` (train/configs.py).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from crayonbox.config import remove_stale_temporaries
from crayonbox.data.world.build import make_world
from crayonbox.data.world.render import BACKGROUND_KINDS, COLOURS
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import as_rgb_array
from crayonbox.model.judge import (
    GENDER_LABELS,
    LAYOUT,
    NONE,
    SCENE_ATTRIBUTES,
    SLOT_ATTRIBUTES,
    SLOT_HEADS,
    SLOTS,
    TONE_LABELS,
    Judge,
    JudgeConfig,
    JudgeNet,
    JudgeNetConfig,
    crop_slots,
    slot_boxes,
)
from crayonbox.model.vqgan_io import load_vqgan, round_trip
from crayonbox.outdir import claim_output_folder
from crayonbox.train.configs import JudgeTrainConfig
from crayonbox.train.judge_data import (
    EVAL_SET,
    TRAIN_SET,
    empty_crops,
    encode,
    load_world,
    neutral_config,
    render_set,
    world_sample,
)
from crayonbox.train.loop import LoopSettings, Task, TrainingLoop
from crayonbox.train.runtime import single_process

CHECKPOINT = "judge-checkpoint.pt"
JUDGE_KIND = "judge"  # the kind of output folder (crayonbox.outdir)
RESULT_NEUTRAL_OPTIONS = ("resume", "progress", "workers", "threads")  # options that do not change the judge


def vocabulary_of(world: Any) -> dict[str, list[str]]:
    """Labels per slot attribute and per scene attribute for a `World` (its pools decide categories, items
    and attire)."""
    attire = sorted({e.attire for item in world.items.values() for e in item.variants.values() if e.attire})
    return {"category": [NONE, *sorted(world.pools)], "item": [NONE, *sorted(world.items)],
            "gender": list(GENDER_LABELS), "skin_tone": list(TONE_LABELS), "attire": [NONE, *attire],
            "count": [str(n) for n in LAYOUT], "background_colour": sorted(COLOURS),
            "background_kind": list(BACKGROUND_KINDS), "background_colour2": [NONE, *sorted(COLOURS)]}


def item_categories(world: Any) -> dict[str, str]:
    """The pool category of every item label (NONE for NONE): what the category head would only repeat."""
    return {NONE: NONE} | {name: item.category for name, item in world.items.items()}


def _augment(pixels: torch.Tensor, chance: float, generator: torch.Generator) -> torch.Tensor:
    """Soften a random share of the batch like a VQGAN would: 2× down-up resampling plus a little noise."""
    pick = torch.rand(pixels.shape[0], generator=generator) < chance
    if not pick.any():
        return pixels
    soft = F.interpolate(F.avg_pool2d(pixels[pick], 2), scale_factor=2, mode="bilinear", align_corners=False)
    out = pixels.clone()
    out[pick] = (soft + 0.02 * torch.randn(soft.shape, generator=generator)).clamp(0, 1)
    return out


def _as_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2) if isinstance(images, np.ndarray) else images
    return tensor.float() / 255.0


class TrainingSet:
    """Whole images with scene targets, and uint8 slot crops with slot targets (empty crops included)."""

    def __init__(self, images: np.ndarray, labels: list[dict[str, str]], empties: np.ndarray,
                 vocab: dict[str, list[str]], net: JudgeNetConfig, seed: int, batch: int):
        self.batch = batch
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8, N×3×S×S
        self.scene_targets = encode(labels, vocab, SCENE_ATTRIBUTES)
        counts = [int(row["count"]) for row in labels]
        crops, where = crop_slots(self.images.float(), counts, net.crop_size)
        rows = [{a: labels[i][f"{slot}_{a}"] for a in SLOT_HEADS} for i, slot in where]
        # one random slot box of each bare background (boxes of every layout: empty slots come in all sizes)
        rng = np.random.default_rng([seed, 3])
        boxes = [box for n in (1, 2, 3) for box in slot_boxes(n, images.shape[1]).values()]
        empty_patches = []
        for image in torch.from_numpy(empties).permute(0, 3, 1, 2).float():
            x0, y0, x1, y1 = boxes[int(rng.integers(len(boxes)))]
            empty_patches.append(F.interpolate(image[None, :, y0:y1, x0:x1], size=(net.crop_size,) * 2,
                                               mode="bilinear", align_corners=False, antialias=True))
        if empty_patches:
            crops = torch.cat([crops, *empty_patches])
            rows += [dict.fromkeys(SLOT_HEADS, NONE) for _ in empty_patches]
        self.crops = crops.round().clamp(0, 255).to(torch.uint8)
        self.slot_targets = encode(rows, vocab, SLOT_HEADS)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.crops) // self.batch)

    def batches(self, epoch: int, seed: int, augment: float):
        """Yield (crops, slot targets, images, scene targets) for one epoch, in a seed-and-epoch order."""
        batch = self.batch
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        crop_order = torch.randperm(len(self.crops), generator=generator)
        image_order = torch.randperm(len(self.images), generator=generator)
        half = max(1, batch // 2)
        for step in range(self.steps_per_epoch):
            c = crop_order[step * batch:(step + 1) * batch]
            i = image_order[torch.arange(step * half, (step + 1) * half) % len(self.images)]
            crops = _augment(_as_float(self.crops[c]), augment, generator)
            yield (crops.contiguous(memory_format=torch.channels_last), {a: t[c] for a, t in
                                                                          self.slot_targets.items()},
                   _as_float(self.images[i]), {a: t[i] for a, t in self.scene_targets.items()})


PERSON_ATTRIBUTES = ("gender", "skin_tone")  # scored on slots that hold a person


def _slot_summary(pairs: list[tuple[dict[str, str], dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per slot attribute kind: accuracy and how many slots it was scored on (item, category and attire over
    occupied slots, gender and skin tone over slots that hold a person); for gender and skin tone also the
    confusion (true label → read label → slots), which says whether a miss is, say, the neutral figure read
    as a woman or a woman read as a man."""
    out: dict[str, dict[str, Any]] = {}
    for kind in SLOT_ATTRIBUTES:
        scored = [(p[f"{slot}_{kind}"], t[f"{slot}_{kind}"]) for p, t in pairs for slot in SLOTS
                  if t[f"{slot}_category"] != NONE and (kind not in PERSON_ATTRIBUTES
                                                        or t[f"{slot}_category"] == "person")]
        hits = [read == true for read, true in scored]
        out[kind] = {"accuracy": float(np.mean(hits)) if hits else float("nan"), "n": len(hits)}
        if kind in PERSON_ATTRIBUTES:
            confusion: defaultdict[str, Counter[str]] = defaultdict(Counter)
            for read, true in scored:
                confusion[true][read] += 1
            out[kind]["confusion"] = {true: dict(sorted(row.items())) for true, row in sorted(confusion.items())}
    return out


def evaluate_judge(judge: Judge, images: np.ndarray, labels: list[dict[str, str]]) -> dict[str, Any]:
    """Accuracy per attribute, per attribute *kind* where it matters (`_slot_summary`), and that summary per
    layout ("by_count": one large object reads differently from three small ones, and a lab reads whichever
    layouts a model draws)."""
    predicted = judge.predict(list(images))
    pairs = list(zip(predicted, labels, strict=True))
    accuracy = {a: float(np.mean([p[a] == t[a] for p, t in pairs])) for a in judge.attributes}
    summary: dict[str, float] = {k: v["accuracy"] for k, v in _slot_summary(pairs).items()}
    summary |= {a: accuracy[a] for a in SCENE_ATTRIBUTES}
    counts = sorted({t["count"] for t in labels})
    by_count = {c: _slot_summary([(p, t) for p, t in pairs if t["count"] == c]) for c in counts}
    return {"n": len(labels), "summary": summary, "accuracy": accuracy, "by_count": by_count,
            "all_attributes_right": float(np.mean([p == t for p, t in pairs]))}


def _round_trip_vqgan(cfg: JudgeTrainConfig, size: int) -> Any:
    """The VQGAN whose round trips the judge learns from (None without --round-trip-vqgan); it must draw at the
    world's size."""
    if not cfg.round_trip_vqgan:
        return None
    if not 0 <= cfg.round_trip_share <= 1:
        raise CrayonboxError(f"judge: --round-trip-share must be in [0, 1], got {cfg.round_trip_share}")
    vqgan, _ = load_vqgan(Path(cfg.round_trip_vqgan))
    if vqgan.cfg.resolution != size:
        raise CrayonboxError(f"judge: the VQGAN in {cfg.round_trip_vqgan} draws {vqgan.cfg.resolution} px images "
                             f"but the world renders {size} px; give the VQGAN trained on this world")
    return vqgan.eval()


def _through(vqgan: Any, images: np.ndarray, progress: bool = False) -> np.ndarray:
    """uint8 N×S×S×3 renders after encode → decode (the best token sequence for each, drawn back)."""
    if not len(images):
        return images
    chunk = 1024  # a multiple of round_trip's batch, so the output does not depend on it
    starts = tqdm(range(0, len(images), chunk), desc="judge round trips", unit="chunk", disable=not progress)
    with torch.no_grad():  # 24,000 renders: 1.5 (8×8 codes) to 6 (16×16) minutes on two cores
        return np.stack([as_rgb_array(im) for start in starts
                         for im in round_trip(vqgan, list(images[start:start + chunk]))])


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A judge config without the options that do not change the result (progress bars, processes)."""
    training = {k: v for k, v in config["training"].items() if k not in RESULT_NEUTRAL_OPTIONS}
    return config | {"training": training}


@dataclass
class JudgeSchedule:
    """LR multiplier: linear warmup to 1 at `warmup`, then cosine to 0 at `total`. A callable object, so the
    scheduler's state (and so the checkpoint) keeps its fields."""

    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - self.warmup) / max(1, self.total - self.warmup)))


class JudgeTask(Task):
    """One step = `batch_size` slot crops plus half as many whole images, both nets' losses summed. Epochs are
    the unit of determinism: each reseeds the dropout and draws its batches afresh, and the loop checkpoints at
    their ends, so a resumed run repeats the interrupted epoch exactly."""

    def __init__(self, cfg: JudgeTrainConfig, net: JudgeNet, data: TrainingSet, config: JudgeConfig,
                 checkpoint: Path):
        self.cfg, self.model, self.data, self.config, self.checkpoint = cfg, net, data, config, checkpoint
        self.losses: list[float] = []  # mean loss of each finished epoch
        self._batches: Iterator | None = None
        self._epoch_loss = 0.0

    def forward_backward(self, step: int, model: nn.Module) -> dict[str, Any]:
        cfg, epoch = self.cfg, step // self.data.steps_per_epoch
        if step % self.data.steps_per_epoch == 0:
            model.train()
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout draws: per epoch, so a resumed run repeats them
            self._batches, self._epoch_loss = iter(self.data.batches(epoch, cfg.seed, cfg.augment)), 0.0
        crops, slot_targets, scenes, scene_targets = next(self._batches)
        device = next(model.parameters()).device  # batches are built on the CPU, the net may be elsewhere
        crops, scenes = crops.to(device), scenes.to(device)
        slot_targets = {a: t.to(device) for a, t in slot_targets.items()}
        scene_targets = {a: t.to(device) for a, t in scene_targets.items()}
        slot_logits = model.slot(crops)
        scene_logits = model.scene(scenes.contiguous(memory_format=torch.channels_last))
        weights = {a: cfg.gender_weight if a == "gender" else 1.0 for a in SLOT_HEADS}
        loss = (sum(weights[a] * F.cross_entropy(slot_logits[a], slot_targets[a]) for a in weights)
                + sum(F.cross_entropy(scene_logits[a], scene_targets[a]) for a in SCENE_ATTRIBUTES))
        loss.backward()
        return {"loss": loss}

    def after_update(self, step: int, row: dict[str, Any]) -> None:
        self._epoch_loss += row["loss"].item()
        if (step + 1) % self.data.steps_per_epoch == 0:
            self.losses.append(self._epoch_loss / self.data.steps_per_epoch)

    def postfix(self, row: dict[str, Any], evaluation: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{row['loss']:.3f}"}

    def check_checkpoint(self, state: dict[str, Any]) -> None:
        if "step" not in state:  # written before the judge shared the training loop: no step, no RNG states
            raise CrayonboxError("the judge checkpoint in the output folder comes from an older crayonbox; delete "
                                 "it to start over")
        if _comparable(state["config"]) != _comparable(self.config.to_dict()):
            raise CrayonboxError(f"{self.checkpoint} belongs to another judge run (other world or options); "
                                 "delete it or choose another --out")

    def extra_state(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "losses": list(self.losses)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.losses = list(state["losses"])


def run_training(world_path: str | Path, out_dir: str | Path, cfg: JudgeTrainConfig) -> dict[str, Any]:
    """Render, train, evaluate and save a judge in `out_dir`; returns (and writes) metrics.json."""
    if cfg.train_images < 1 or cfg.eval_images < 1 or cfg.epochs < 1 or cfg.batch_size < 2:
        raise CrayonboxError("judge: need train_images ≥ 1, eval_images ≥ 1, epochs ≥ 1 and batch_size ≥ 2")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(world_path, Path(out_dir), cfg)
    finally:
        torch.set_num_threads(threads)


def train_judge(world_dir: str | Path, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train a judge on renders of the world in `world_dir` (a `crayonbox world build` folder, or a world
    config YAML) and save it in `out_dir`; returns metrics.json. Options are JudgeTrainConfig fields."""
    return run_training(world_dir, out_dir, JudgeTrainConfig(**options))


def _train(world_path: str | Path, out: Path, cfg: JudgeTrainConfig) -> dict[str, Any]:
    started = time.perf_counter()
    claim_output_folder(out, JUDGE_KIND, CHECKPOINT)  # before its temporaries are cleaned: they may be someone's
    remove_stale_temporaries(out)
    world_config, provenance = load_world(world_path)
    neutral = neutral_config(world_config, cfg.person_share)
    world = make_world(neutral)
    vocab = vocabulary_of(world)
    size = world_config.size
    net_cfg = JudgeNetConfig(image_size=size, crop_size=cfg.crop_size, width=cfg.width)
    config = JudgeConfig(net_cfg, vocab, item_categories(world), provenance | {"size": size}, asdict(cfg))

    images, labels = render_set(neutral, cfg.train_images, cfg.seed, TRAIN_SET, cfg.workers, cfg.progress)
    eval_images, eval_labels = render_set(neutral, cfg.eval_images, cfg.seed, EVAL_SET, 1)
    vqgan = _round_trip_vqgan(cfg, size)
    if vqgan is not None:
        pick = np.random.default_rng([cfg.seed, 5]).random(len(images)) < cfg.round_trip_share
        images[pick] = _through(vqgan, images[pick], cfg.progress)
    empties = empty_crops(neutral, round(cfg.empty_share * 2 * cfg.train_images), cfg.seed)
    data = TrainingSet(images, labels, empties, vocab, net_cfg, cfg.seed, cfg.batch_size)
    render_seconds = time.perf_counter() - started

    torch.manual_seed(cfg.seed)
    dist = single_process(cfg.threads, cfg.device)
    net = JudgeNet(net_cfg, vocab).to(dist.device, memory_format=torch.channels_last)  # faster convolutions
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = data.steps_per_epoch * cfg.epochs
    task = JudgeTask(cfg, net, data, config, out / CHECKPOINT)
    settings = LoopSettings(
        out=out, name="judge", steps=total, warmup_steps=cfg.warmup_steps, min_lr_ratio=0.0,
        batch_size=cfg.batch_size, max_minutes=0.0, eval_every=0, checkpoint_every=data.steps_per_epoch,
        metrics=[], identity={}, resume=cfg.resume, progress=cfg.progress, checkpoint=CHECKPOINT,
        lr_shape=JudgeSchedule(cfg.warmup_steps, total))
    TrainingLoop(settings, dist, task, optimizer).run()
    net.cpu()  # a judge is read (and evaluated below) on the CPU
    losses = task.losses
    train_seconds = time.perf_counter() - started - render_seconds

    judge = Judge(net, config)
    metrics: dict[str, Any] = {"held_out": evaluate_judge(judge, eval_images, eval_labels),
                               "epoch_losses": losses, "steps": total, "crops": len(data.crops),
                               "train_images": cfg.train_images}
    if vqgan is not None:  # what the judge reads in practice: the model's images are VQGAN decodes
        metrics["held_out_round_trip"] = evaluate_judge(judge, _through(vqgan, eval_images), eval_labels)
        metrics["round_trip_vqgan"] = str(Path(cfg.round_trip_vqgan).resolve())
    if "folder" in provenance and cfg.world_sample > 0:
        sample_images, sample_labels = world_sample(Path(provenance["folder"]), cfg.world_sample)
        if sample_labels:
            metrics["world_sample"] = evaluate_judge(judge, sample_images, sample_labels)
    metrics["seconds"] = {"render": render_seconds, "train": train_seconds,
                          "total": time.perf_counter() - started}
    judge.save(out, metrics)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the judge folder is the result; a later run starts afresh
    return metrics
