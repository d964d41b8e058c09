"""The judge: a small CNN that reads a world render back into its ground truth.

It answers, for each of the three layout slots (left / centre / right), the object's category, its item
(the pool entry: "health worker", "sari", "dog"), gender, skin tone (none / yellow / 1–5) and attire, plus
the object count and the background — every attribute a prompt can ask for. `crayonbox eval` uses it to
check prompt adherence and the bias lab uses it as an instrument, so it must not share the training world's
skews: it learns from a *neutralised* copy of the world (same emoji, sizes and layout; uniform genders,
tones, items and backgrounds; no co-occurrence rules), or it would read "sari" as a hint of dark skin.

    judge = Judge.load("run/judge")
    judge.predict([pil_image])[0]["left_skin_tone"]   # "4"

A judge folder holds config.json (architecture, label vocabularies, provenance), model.safetensors and
metrics.json (held-out accuracy per attribute). Training lives in judge_train.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from crayonbox.config import read_json
from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import WEIGHTS, load_component, save_component

NONE = "none"  # an empty slot, or an attribute the object does not have (a dog's gender)
UNCLEAR = "unclear"  # the judge's top answer is below its confidence threshold
YELLOW = "yellow"  # a person emoji without a skin-tone modifier
SLOTS = ("left", "centre", "right")
SLOT_ATTRIBUTES = ("category", "item", "gender", "skin_tone", "attire")
IMAGE_ATTRIBUTES = ("count", "background_colour", "background_kind", "background_colour2")
TONE_LABELS = (NONE, YELLOW, "1", "2", "3", "4", "5")
GENDER_LABELS = (NONE, "woman", "man", "neutral")


def attribute_names() -> list[str]:
    """Every attribute the judge predicts, in head order: per slot first, then per image."""
    return [f"{slot}_{a}" for slot in SLOTS for a in SLOT_ATTRIBUTES] + list(IMAGE_ATTRIBUTES)


def tone_label(obj: dict[str, Any]) -> str:
    """'1'..'5' for a toned emoji, 'yellow' for an untoned person, 'none' for everything else."""
    tone = obj.get("skin_tone")
    if tone not in (None, "none"):
        return str(tone)
    return YELLOW if obj.get("category") == "person" else NONE


def labels_of(world: dict[str, Any]) -> dict[str, str]:
    """The judge's target labels for one render, from its `meta["world"]` ground truth."""
    objects = world.get("objects") or []
    if not 1 <= len(objects) <= len(SLOTS):
        raise CrayonboxError(f"a world scene has 1–{len(SLOTS)} objects, this one has {len(objects)}")
    background = world["background"]
    labels = {"count": str(len(objects)), "background_colour": background["colour"],
              "background_kind": background["kind"],
              "background_colour2": background.get("colour2") or NONE}  # a gradient's second colour
    by_slot = {o["position"]: o for o in objects}
    for slot in SLOTS:
        obj = by_slot.get(slot)
        labels[f"{slot}_category"] = obj["category"] if obj else NONE
        labels[f"{slot}_item"] = obj["item"] if obj else NONE
        labels[f"{slot}_gender"] = obj["gender"] if obj else NONE
        labels[f"{slot}_skin_tone"] = tone_label(obj) if obj else NONE
        labels[f"{slot}_attire"] = (obj.get("attire") or NONE) if obj else NONE
    return labels


def vocabulary_of(world: Any) -> dict[str, list[str]]:
    """Label vocabulary per attribute for a `World` (its pools decide categories, items and attire)."""
    from crayonbox.data.world.render import BACKGROUND_KINDS, COLOURS

    items = sorted(world.items)
    attire = sorted({e.attire for item in world.items.values() for e in item.variants.values() if e.attire})
    per_slot = {"category": [NONE, *sorted(world.pools)], "item": [NONE, *items],
                "gender": list(GENDER_LABELS), "skin_tone": list(TONE_LABELS), "attire": [NONE, *attire]}
    vocab = {f"{slot}_{a}": list(labels) for slot in SLOTS for a, labels in per_slot.items()}
    vocab |= {"count": [str(n) for n in range(1, len(SLOTS) + 1)], "background_colour": sorted(COLOURS),
              "background_kind": list(BACKGROUND_KINDS), "background_colour2": [NONE, *sorted(COLOURS)]}
    return vocab


@dataclass
class JudgeNetConfig:
    """Architecture of the judge CNN (saved in judge/config.json)."""

    image_size: int = 64  # input side in px; other sizes are resized to it
    width: int = 32  # channels of the first stage; stages double it twice
    feature_dim: int = 256  # the penultimate layer: the features of the Fréchet distance
    dropout: float = 0.1  # on the features, during training only


class JudgeNet(nn.Module):
    """A 4×4 stride-2 stem, conv stages at 1/4 and 1/8 resolution, flattened (so positions stay distinct: the
    left slot is read from the left of the map), one feature layer, and one linear head per attribute.

    The stem patchifies instead of convolving at full resolution: on 2 CPU cores a full-resolution first
    stage cost 3× the time for no accuracy (the 4×4 patches keep every pixel's colour in their channels)."""

    def __init__(self, cfg: JudgeNetConfig, head_sizes: dict[str, int]):
        super().__init__()
        w = cfg.width
        plan = [(3, w, 4, 2), (w, 2 * w, 3, 2), (2 * w, 2 * w, 3, 1), (2 * w, 4 * w, 3, 2), (4 * w, 4 * w, 3, 1)]
        layers: list[nn.Module] = []
        for c_in, c_out, kernel, stride in plan:
            layers += [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2 if kernel % 2 else 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        side = cfg.image_size // 8
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, cfg.feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.feature_dim, n) for name, n in head_sizes.items()})

    def features(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] → (B, feature_dim)."""
        return self.neck(self.trunk((pixels - 0.5) / 0.25))

    def forward(self, pixels: Tensor) -> dict[str, Tensor]:
        """Logits per attribute."""
        features = self.dropout(self.features(pixels))
        return {name: head(features) for name, head in self.heads.items()}


@dataclass
class JudgeConfig:
    """Everything needed to rebuild a trained judge: architecture, vocabularies, and where it came from."""

    net: JudgeNetConfig = field(default_factory=JudgeNetConfig)
    vocab: dict[str, list[str]] = field(default_factory=dict)  # attribute → labels, in head order
    world: dict[str, Any] = field(default_factory=dict)  # the world it learned: folder, seed, config
    training: dict[str, Any] = field(default_factory=dict)  # JudgeTrainConfig fields

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "judge config") -> JudgeConfig:
        try:
            return cls(net=JudgeNetConfig(**data["net"]), vocab=data["vocab"], world=data.get("world", {}),
                       training=data.get("training", {}))
        except (KeyError, TypeError) as e:
            raise CrayonboxError(f"{where} is not a judge config ({e}); retrain with `crayonbox train judge`") \
                from None


def to_pixels(images: Sequence[Image.Image | np.ndarray], size: int) -> Tensor:
    """PIL images or H×W×3 uint8 arrays → (B, 3, size, size) float in [0, 1], resized (bilinear) if needed."""
    arrays = []
    for image in images:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        pil = pil.convert("RGB")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(pil, dtype=np.uint8))
    if not arrays:
        return torch.zeros(0, 3, size, size)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


class Judge:
    """A trained judge: predicts labels (with an "unclear" threshold) and features for any images."""

    def __init__(self, net: JudgeNet, config: JudgeConfig):
        self.net, self.config = net.eval(), config
        self.attributes = list(config.vocab)

    @classmethod
    def load(cls, folder: str | Path) -> Judge:
        """Load a judge folder (`crayonbox train judge` output)."""
        folder = Path(folder)
        if not (folder / "config.json").exists() or not (folder / WEIGHTS).exists():
            raise CrayonboxError(f"{folder} is not a judge folder (expected config.json and {WEIGHTS}); train "
                                 "one with `crayonbox train judge --world WORLD --out DIR`")
        raw, state = load_component(folder.parent, folder.name)
        config = JudgeConfig.from_dict(raw, f"{folder}/config.json")
        net = JudgeNet(config.net, {k: len(v) for k, v in config.vocab.items()})
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise CrayonboxError(f"weights in {folder} do not fit its config.json ({str(e)[:200]})") from None
        return cls(net, config)

    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None) -> None:
        """Write config.json + model.safetensors (+ metrics.json) into `folder` (each file atomically)."""
        folder = Path(folder)
        save_component(folder.parent, folder.name, self.config.to_dict(), self.net.state_dict())
        if metrics is not None:
            write_json_atomic(folder / "metrics.json", metrics)

    def metrics(self, folder: str | Path) -> dict[str, Any]:
        """The metrics.json saved beside the weights."""
        return read_json(Path(folder) / "metrics.json")

    @torch.inference_mode()
    def probabilities(self, images: Sequence[Image.Image | np.ndarray], batch: int = 256) -> dict[str, Tensor]:
        """Softmax per attribute: {attribute: (N, labels)}."""
        out: dict[str, list[Tensor]] = {a: [] for a in self.attributes}
        for start in range(0, len(images), batch):
            logits = self.net(to_pixels(images[start:start + batch], self.config.net.image_size))
            for a in self.attributes:
                out[a].append(logits[a].softmax(-1))
        return {a: torch.cat(p) if p else torch.zeros(0, len(self.config.vocab[a])) for a, p in out.items()}

    def predict(self, images: Sequence[Image.Image | np.ndarray], unclear_below: float = 0.0,
                batch: int = 256) -> list[dict[str, str]]:
        """Labels per image; an attribute whose top probability is below `unclear_below` becomes "unclear"."""
        probs = self.probabilities(images, batch)
        rows: list[dict[str, str]] = [{} for _ in range(len(images))]
        for a, p in probs.items():
            top, index = p.max(-1)
            labels = self.config.vocab[a]
            for i, (confidence, k) in enumerate(zip(top.tolist(), index.tolist(), strict=True)):
                rows[i][a] = UNCLEAR if confidence < unclear_below else labels[k]
        return rows

    @torch.inference_mode()
    def features(self, images: Sequence[Image.Image | np.ndarray], batch: int = 256) -> np.ndarray:
        """(N, feature_dim) float64 penultimate activations (for Fréchet distances)."""
        chunks = [self.net.features(to_pixels(images[s:s + batch], self.config.net.image_size)).double()
                  for s in range(0, len(images), batch)]
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, self.config.net.feature_dim))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """JSON to a temporary file, then renamed over `path`: a reader never sees half a file."""
    import json
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def train_judge(world_dir: str | Path, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Train a judge on renders of the world in `world_dir` (a `crayonbox world build` folder, or a world
    config YAML) and save it in `out_dir`; returns metrics.json. Options are JudgeTrainConfig fields."""
    from crayonbox.train.judge_train import JudgeTrainConfig, run_training

    return run_training(world_dir, out_dir, JudgeTrainConfig(**options))
