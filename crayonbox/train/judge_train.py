"""Training the judge: render a neutralised copy of the world, fit the CNN, report held-out accuracy.

The renders come straight from the world's own sampler and renderer (crayonbox.data.world), drawn from a
config with every planted skew removed — uniform genders, tones, items, object counts and backgrounds, no
co-occurrence or pairing rules — so the judge has no prior to fall back on when a generated image is vague.
Item i of a set depends only on (seed, set, i), so training is deterministic for a seed, and a run killed at
any point resumes from its last epoch checkpoint (the renders are simply drawn again).
"""

from __future__ import annotations

import copy
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from crayonbox.errors import CrayonboxError
from crayonbox.train.judge import (
    SLOTS,
    Judge,
    JudgeConfig,
    JudgeNet,
    JudgeNetConfig,
    attribute_names,
    labels_of,
    vocabulary_of,
)

CHECKPOINT = "judge-checkpoint.pt"
TRAIN_SET, EVAL_SET = 0, 1  # second RNG key: the two sets never share a scene draw


@dataclass
class JudgeTrainConfig:
    train_images: int = 24000  # renders to learn from, drawn from the neutralised world
    eval_images: int = 2000  # held-out renders for the reported accuracy
    world_sample: int = 1000  # items of the world folder itself (real skews) to report accuracy on too
    epochs: int = 6  # passes over the training renders
    batch_size: int = 128  # images per step
    learning_rate: float = 3e-3  # AdamW peak rate (linear warmup, cosine decay)
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 100  # steps of linear warmup
    width: int = 32  # channels of the first conv stage
    feature_dim: int = 256  # size of the feature layer (Fréchet distances use it)
    person_share: float = 0.4  # share of object slots that are people (they carry gender and skin tone)
    augment: float = 0.3  # chance per image of blur + noise (generated images are softer than renders)
    seed: int = 0  # renders, initialisation and batch order all follow it
    workers: int = 2  # processes rendering the training images
    threads: int = 0  # torch threads (0: torch's default)
    resume: bool = True  # continue from the checkpoint in the output folder when there is one
    progress: bool = True  # progress bars


# ---- the world -------------------------------------------------------------------------------------------


def _tone_key(key: str) -> Any:
    return "none" if key in ("None", "none") else int(key)


def world_config_from_manifest(manifest: dict[str, Any]):
    """The WorldConfig of a built world folder, from its `_world.json` (whose JSON turned mix keys such as
    None and 1 into strings, and `sources` into a list)."""
    from crayonbox.data.world.config import parse_world_config

    raw = copy.deepcopy(manifest["config"])
    raw["objects_per_scene"] = {int(k): v for k, v in raw["objects_per_scene"].items()}
    raw["person"]["skin_tone"] = {_tone_key(k): v for k, v in raw["person"]["skin_tone"].items()}
    for rule in raw.get("cooccurrence", {}).values():
        if "skin_tone" in rule:
            rule["skin_tone"] = {_tone_key(k): v for k, v in rule["skin_tone"].items()}
    raw["layout"]["scale"] = {int(k): list(v) for k, v in raw["layout"]["scale"].items()}
    raw["sources"] = {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in raw["sources"]}
    return parse_world_config(raw)


def load_world(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(WorldConfig, provenance) from a world folder (`crayonbox world build`) or a world config YAML."""
    from crayonbox.data.world.build import MANIFEST
    from crayonbox.data.world.config import load_world_config

    path = Path(path)
    if path.is_file():
        return load_world_config(path), {"config_file": str(path.resolve())}
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise CrayonboxError(f"{path} is neither a world folder (no {MANIFEST}) nor a world config file; "
                             "build one with `crayonbox world build --out DIR -n N`")
    from crayonbox.config import read_json

    manifest = read_json(manifest_path)
    return world_config_from_manifest(manifest), {"folder": str(path.resolve()), "seed": manifest.get("seed"),
                                                  "n": manifest.get("n")}


def neutral_config(config: Any, person_share: float):
    """The same world with every planted skew removed (see the module docstring)."""
    from crayonbox.data.world.config import GENDERS, POSITIONS, TONES

    cfg = copy.deepcopy(config)
    others = [c for c in cfg.pool if c != "person"]
    if "person" in cfg.pool and others:
        cfg.categories = {"person": person_share} | {c: (1 - person_share) / len(others) for c in others}
    else:
        cfg.categories = {c: 1 / len(cfg.pool) for c in cfg.pool}
    cfg.weights, cfg.pair_with_person, cfg.cooccurrence = {}, {}, {}
    cfg.person = {"gender": {g: 1 / len(GENDERS) for g in GENDERS}, "skin_tone": {t: 1 / len(TONES) for t in TONES}}
    cfg.objects_per_scene = {n: 1 / len(POSITIONS) for n in POSITIONS}
    cfg.background = {k: {v: 1 / len(mix) for v in mix} for k, mix in cfg.background.items()}
    cfg.proper_names = {"rate": {}, "culture": {}}
    return cfg


_WORKER: dict[str, Any] = {}


def _init_worker(config: Any) -> None:
    from crayonbox.data.world.build import make_world

    _WORKER["world"] = make_world(config)


def _render_chunk(task: tuple[int, int, int, int]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Scenes (seed, set, i) for i in [start, stop): pixels and judge labels."""
    from crayonbox.data.world.build import render_scene

    seed, which, start, stop = task
    world = _WORKER["world"]
    images, labels = [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, which, i])
        scene = world.sample_scene(rng)
        images.append(render_scene(world, scene, rng))
        truth = {"background": scene.background,
                 "objects": [{"item": o.item.name, "category": o.item.category, "gender": o.emoji.gender,
                              "skin_tone": o.emoji.skin_tone, "attire": o.emoji.attire, "position": o.position}
                             for o in scene.objects]}
        labels.append(labels_of(truth))
    return np.stack(images), labels


def render_set(config: Any, n: int, seed: int, which: int, workers: int = 1, progress: bool = False,
               desc: str = "judge renders") -> tuple[np.ndarray, list[dict[str, str]]]:
    """`n` renders of `config` with their labels; the same (config, seed, which) always gives the same set."""
    chunk = 250
    tasks = [(seed, which, s, min(n, s + chunk)) for s in range(0, n, chunk)]
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    images, labels = [], []
    if workers <= 1 or len(tasks) == 1:
        _init_worker(config)
        results = map(_render_chunk, tasks)
    else:
        pool = mp.get_context().Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(config,))
        results = pool.imap(_render_chunk, tasks)  # ordered: the set does not depend on the worker count
    for pixels, rows in results:
        images.append(pixels)
        labels += rows
        bar.update(len(rows))
    if workers > 1 and len(tasks) > 1:
        pool.close()
    bar.close()
    return np.concatenate(images), labels


def encode_labels(labels: list[dict[str, str]], vocab: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """Label strings → index tensors per attribute; a label outside the vocabulary is an error."""
    out = {}
    for attribute, names in vocab.items():
        index = {name: i for i, name in enumerate(names)}
        try:
            out[attribute] = torch.tensor([index[row[attribute]] for row in labels], dtype=torch.long)
        except KeyError as e:
            raise CrayonboxError(f"judge: label {e} of {attribute} is not in the judge's vocabulary; the "
                                 "world has changed since the judge was trained — retrain it") from None
    return out


# ---- training --------------------------------------------------------------------------------------------


def _augment(pixels: torch.Tensor, chance: float, generator: torch.Generator) -> torch.Tensor:
    """Soften a random share of the batch like a VQGAN would: 2× down-up resampling plus a little noise."""
    if chance <= 0:
        return pixels
    pick = torch.rand(pixels.shape[0], generator=generator) < chance
    if not pick.any():
        return pixels
    soft = F.interpolate(F.avg_pool2d(pixels[pick], 2), scale_factor=2, mode="bilinear", align_corners=False)
    soft = soft + 0.02 * torch.randn(soft.shape, generator=generator)
    out = pixels.clone()
    out[pick] = soft.clamp(0, 1)
    return out


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def evaluate_judge(judge: Judge, images: np.ndarray, labels: list[dict[str, str]]) -> dict[str, Any]:
    """Accuracy per attribute, and per attribute *kind* where it matters: item, category and attire over
    occupied slots, gender and skin tone over slots that hold a person."""
    predicted = judge.predict(list(images))
    accuracy = {a: float(np.mean([p[a] == t[a] for p, t in zip(predicted, labels, strict=True)]))
                for a in judge.attributes}
    summary: dict[str, float] = {}
    for kind in ("category", "item", "attire", "gender", "skin_tone"):
        hits = []
        for p, t in zip(predicted, labels, strict=True):
            for slot in SLOTS:
                occupied = t[f"{slot}_category"] != "none"
                if occupied and (kind not in ("gender", "skin_tone") or t[f"{slot}_category"] == "person"):
                    hits.append(p[f"{slot}_{kind}"] == t[f"{slot}_{kind}"])
        summary[kind] = float(np.mean(hits)) if hits else float("nan")
    for a in ("count", "background_colour", "background_kind", "background_colour2"):
        summary[a] = accuracy[a]
    exact = float(np.mean([p == t for p, t in zip(predicted, labels, strict=True)]))
    return {"n": len(labels), "summary": summary, "accuracy": accuracy, "all_attributes_right": exact}


def _world_sample(folder: Path, n: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Up to n items of a built world folder (its real, skewed distribution) with judge labels."""
    from crayonbox.data.shards import decode_image, iter_items

    images, labels = [], []
    for item in iter_items(folder):
        if len(images) >= n:
            break
        if item.image and isinstance(item.meta.get("world"), dict):
            images.append(np.asarray(decode_image(item)))
            labels.append(labels_of(item.meta["world"]))
    return (np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)), labels


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A judge config without the options that do not change the result (progress bars, processes)."""
    training = {k: v for k, v in config["training"].items() if k not in ("resume", "progress", "workers", "threads")}
    return config | {"training": training}


def run_training(world_path: str | Path, out_dir: str | Path, cfg: JudgeTrainConfig) -> dict[str, Any]:
    """Render, train, evaluate and save a judge in `out_dir`; returns (and writes) metrics.json."""
    from crayonbox.data.world.build import make_world
    from crayonbox.train.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint

    if cfg.train_images < cfg.batch_size or cfg.eval_images < 1 or cfg.epochs < 1:
        raise CrayonboxError("judge: need train_images ≥ batch_size, eval_images ≥ 1 and epochs ≥ 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    world_config, provenance = load_world(world_path)
    neutral = neutral_config(world_config, cfg.person_share)
    world = make_world(neutral)
    vocab = vocabulary_of(world)
    config = JudgeConfig(JudgeNetConfig(image_size=world_config.size, width=cfg.width,
                                        feature_dim=cfg.feature_dim),
                         {a: vocab[a] for a in attribute_names()}, provenance | {"size": world_config.size},
                         asdict(cfg))

    train_images, train_labels = render_set(neutral, cfg.train_images, cfg.seed, TRAIN_SET, cfg.workers,
                                            cfg.progress, "judge renders")
    eval_images, eval_labels = render_set(neutral, cfg.eval_images, cfg.seed, EVAL_SET, 1)
    render_seconds = time.perf_counter() - started
    pixels, targets = _to_tensor(train_images), encode_labels(train_labels, config.vocab)

    torch.manual_seed(cfg.seed)
    net = JudgeNet(config.net, {a: len(v) for a, v in config.vocab.items()})
    net = net.to(memory_format=torch.channels_last)  # ~25% faster convolutions on CPU
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = cfg.train_images // cfg.batch_size
    total = steps_per_epoch * cfg.epochs

    def rate(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    first_epoch, losses = 0, []
    checkpoint = out / CHECKPOINT
    if cfg.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        if _comparable(state["config"]) != _comparable(config.to_dict()):
            raise CrayonboxError(f"{checkpoint} belongs to another judge run (other world or options); delete "
                                 "it or choose another --out")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first_epoch, losses = state["epoch"], state["losses"]

    bar = tqdm(total=total, initial=first_epoch * steps_per_epoch, desc="judge", unit="step",
               disable=not cfg.progress)
    for epoch in range(first_epoch, cfg.epochs):
        net.train()
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # per epoch: resumable exactly
        order = torch.randperm(cfg.train_images, generator=generator)
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            batch = _augment(pixels[rows], cfg.augment, generator).contiguous(memory_format=torch.channels_last)
            logits = net(batch)
            loss = sum(F.cross_entropy(logits[a], targets[a][rows]) for a in config.vocab) / len(config.vocab)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        losses.append(epoch_loss / steps_per_epoch)
        save_checkpoint(checkpoint, {"config": config.to_dict(), "net": net.state_dict(),
                                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                     "epoch": epoch + 1, "losses": losses})
    bar.close()

    judge = Judge(net, config)
    metrics: dict[str, Any] = {"held_out": evaluate_judge(judge, eval_images, eval_labels),
                               "epoch_losses": losses, "train_images": cfg.train_images}
    if "folder" in provenance and cfg.world_sample > 0:
        images, labels = _world_sample(Path(provenance["folder"]), cfg.world_sample)
        if labels:
            metrics["world_sample"] = evaluate_judge(judge, images, labels)
    metrics["seconds"] = {"render": render_seconds, "total": time.perf_counter() - started}
    judge.save(out, metrics)
    checkpoint.unlink(missing_ok=True)  # the judge folder is the result; a re-run retrains from scratch
    return metrics
