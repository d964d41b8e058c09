"""The judge: two small CNNs that read a world render back into its ground truth.

World scenes put 1–3 objects side by side in fixed slots (left / centre / right, world.py `_layout`), so the
judge works like a reader of that layout: a *scene net* looks at the whole image for the object count and the
background; a *slot net* looks at each slot's crop, resized to one size, for the object's item (the pool
entry: "health worker", "sari", "dog"), gender, skin tone (none / yellow / 1–5) and attire; its category is
the sum of its items' probabilities, so the two never disagree. Cropping makes every object a training
example at a normalised scale, which is what lets a CPU learn this in minutes: given about the same few minutes
on 2 busy cores, a whole-image CNN reached 15 % item accuracy and the crop reader 95 %.

`crayonbox eval` uses the judge for prompt adherence and the bias lab uses it as an instrument, so it must not
share the training world's skews: it learns from a neutralised copy of the world. This module is the judge
that reads images (what eval and the lab load); crayonbox/train/judge_train.py trains one.

    judge = Judge.load("run/judge")
    judge.predict([image])[0]["left_skin_tone"]   # "4"

A judge folder holds config.json (architecture, label vocabularies, provenance), model.safetensors (both
nets) and metrics.json (held-out accuracy per attribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crayonbox.config import write_json_atomic
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import ImageLike, to_pixels
from crayonbox.model_folder import WEIGHTS, load_component, save_component

NONE = "none"  # an empty slot, or an attribute the object does not have (a dog's gender)
UNCLEAR = "unclear"  # the judge's top answer is below the caller's confidence threshold
YELLOW = "yellow"  # a person emoji without a skin-tone modifier
SLOTS = ("left", "centre", "right")
LAYOUT = {1: ("centre",), 2: ("left", "right"), 3: ("left", "centre", "right")}  # = world config POSITIONS
CROP_MARGIN = 1.25  # a crop is this many slot widths wide: the slot plus the world's jitter
SLOT_ATTRIBUTES = ("category", "item", "gender", "skin_tone", "attire")
SLOT_HEADS = ("item", "gender", "skin_tone", "attire")  # learned; the category follows from the item
SCENE_ATTRIBUTES = ("count", "background_colour", "background_kind", "background_colour2")
TONE_LABELS = (NONE, YELLOW, "1", "2", "3", "4", "5")
GENDER_LABELS = (NONE, "woman", "man", "neutral")


def attribute_names() -> list[str]:
    """Every attribute the judge answers per image: per slot first, then per scene."""
    return [f"{slot}_{a}" for slot in SLOTS for a in SLOT_ATTRIBUTES] + list(SCENE_ATTRIBUTES)


def tone_label(obj: dict[str, Any]) -> str:
    """'1'..'5' for a toned emoji, 'yellow' for an untoned person, 'none' for everything else."""
    tone = obj.get("skin_tone")
    if tone not in (None, "none"):
        return str(tone)
    return YELLOW if obj.get("category") == "person" else NONE


def object_labels(obj: dict[str, Any] | None) -> dict[str, str]:
    """Slot attributes of one `meta["world"]` object (all NONE for an empty slot)."""
    if obj is None:
        return dict.fromkeys(SLOT_ATTRIBUTES, NONE)
    return {"category": obj["category"], "item": obj["item"], "gender": obj["gender"] or NONE,
            "skin_tone": tone_label(obj), "attire": obj.get("attire") or NONE}


def labels_of(world: dict[str, Any]) -> dict[str, str]:
    """The judge's target labels for one render, from its `meta["world"]` ground truth."""
    objects = world.get("objects") or []
    if len(objects) not in LAYOUT:
        raise CrayonboxError(f"a world scene has 1–{len(SLOTS)} objects, this one has {len(objects)}")
    background = world["background"]
    labels = {"count": str(len(objects)), "background_colour": background["colour"],
              "background_kind": background["kind"],
              "background_colour2": background.get("colour2") or NONE}  # a gradient's second colour
    by_slot = {o["position"]: o for o in objects}
    for slot in SLOTS:
        labels |= {f"{slot}_{a}": v for a, v in object_labels(by_slot.get(slot)).items()}
    return labels


def _one_or_mixed(values: list[str]) -> str:
    if UNCLEAR in values:
        return UNCLEAR
    distinct = sorted(set(values))
    return NONE if not distinct else distinct[0] if len(distinct) == 1 else "mixed"


def scene_summary(labels: dict[str, str]) -> dict[str, str]:
    """Image-level view of per-slot labels, for distributions over many images (the blank prompt, the lab):
    count, background, categories ("animal+person"), people ("0".."3"), and the gender, skin tone and attire
    of the people in it — one value, "mixed", "none" (nobody / nothing), or "unclear"."""
    occupied = [s for s in SLOTS if labels[f"{s}_category"] != NONE]
    people = [s for s in occupied if labels[f"{s}_category"] == "person"]
    categories = sorted(labels[f"{s}_category"] for s in occupied)
    return {"count": labels["count"], "background": labels["background_colour"],
            "categories": UNCLEAR if UNCLEAR in categories else "+".join(categories) or NONE,
            "people": str(len(people)),
            "gender": _one_or_mixed([labels[f"{s}_gender"] for s in people]),
            "skin_tone": _one_or_mixed([labels[f"{s}_skin_tone"] for s in people]),
            "attire": _one_or_mixed([labels[f"{s}_attire"] for s in occupied
                                     if labels[f"{s}_attire"] != NONE])}


def slot_boxes(count: int, size: int) -> dict[str, tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of each slot's square crop for a scene of `count` objects on a size×size image."""
    side = min(size, round(size / count * CROP_MARGIN))
    y0 = (size - side) // 2
    boxes = {}
    for index, slot in enumerate(LAYOUT[count]):
        x0 = min(max(0, round((index + 0.5) * size / count - side / 2)), size - side)
        boxes[slot] = (x0, y0, x0 + side, y0 + side)
    return boxes


def crop_slots(pixels: Tensor, counts: Sequence[int], crop: int) -> tuple[Tensor, list[tuple[int, str]]]:
    """Crops of every occupied slot, resized to crop×crop: (M, 3, crop, crop) and (image index, slot) each."""
    size = pixels.shape[-1]
    crops, where = [], []
    for n in LAYOUT:
        rows = [i for i, c in enumerate(counts) if c == n]
        if not rows:
            continue
        for slot, (x0, y0, x1, y1) in slot_boxes(n, size).items():
            patch = pixels[rows, :, y0:y1, x0:x1]
            if patch.shape[-1] != crop:
                patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False,
                                      antialias=patch.shape[-1] > crop)
            crops.append(patch)
            where += [(i, slot) for i in rows]
    if not crops:
        return pixels.new_zeros(0, 3, crop, crop), []
    return torch.cat(crops), where


@dataclass
class JudgeNetConfig:
    """Architecture of the judge (saved in judge/config.json)."""

    image_size: int = 64  # the world's image side; other inputs are resized to it
    crop_size: int = 32  # every slot crop is resized to this side
    width: int = 24  # channels of the slot net's first stage (doubled twice)
    feature_dim: int = 256  # the slot net's feature layer
    scene_width: int = 16  # channels of the scene net's first stage
    scene_feature_dim: int = 64  # the scene net's feature layer
    dropout: float = 0.1  # on the features, in training only


def _trunk(plan: list[tuple[int, int, int]]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out, stride in plan:
        layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class Branch(nn.Module):
    """Conv stages → flatten (positions stay distinct) → feature layer → one linear head per attribute."""

    def __init__(self, plan: list[tuple[int, int, int]], side: int, feature_dim: int, dropout: float,
                 heads: dict[str, int]):
        super().__init__()
        self.trunk = _trunk(plan)
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(plan[-1][1] * side * side, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, n) for name, n in heads.items()})

    def features(self, pixels: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] → (B, feature_dim)."""
        return self.neck(self.trunk((pixels - 0.5) / 0.25))

    def classify(self, features: Tensor) -> dict[str, Tensor]:
        """Logits per attribute from features."""
        features = self.dropout(features)
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, pixels: Tensor) -> dict[str, Tensor]:
        return self.classify(self.features(pixels))


class JudgeNet(nn.Module):
    """The scene net and the slot net."""

    def __init__(self, cfg: JudgeNetConfig, vocab: dict[str, list[str]]):
        super().__init__()
        self.cfg = cfg
        w, s = cfg.width, cfg.scene_width
        slot_plan = [(3, w, 1), (w, 2 * w, 2), (2 * w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        # the scene net strides from its first layer: count and background need the whole image, not detail
        scene_plan = [(3, s, 2), (s, 2 * s, 2), (2 * s, 4 * s, 2), (4 * s, 4 * s, 1)]
        self.slot = Branch(slot_plan, cfg.crop_size // 4, cfg.feature_dim, cfg.dropout,
                           {a: len(vocab[a]) for a in SLOT_HEADS})
        self.scene = Branch(scene_plan, cfg.image_size // 8, cfg.scene_feature_dim, cfg.dropout,
                            {a: len(vocab[a]) for a in SCENE_ATTRIBUTES})


@dataclass
class JudgeConfig:
    """Everything needed to rebuild a trained judge: architecture, vocabularies, and where it came from."""

    net: JudgeNetConfig = field(default_factory=JudgeNetConfig)
    vocab: dict[str, list[str]] = field(default_factory=dict)  # attribute → labels, in head order
    item_category: dict[str, str] = field(default_factory=dict)  # item label → its category label
    world: dict[str, Any] = field(default_factory=dict)  # the world it learned: folder or config file, seed
    training: dict[str, Any] = field(default_factory=dict)  # JudgeTrainConfig fields

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "judge config") -> JudgeConfig:
        try:
            return cls(net=JudgeNetConfig(**data["net"]), vocab=data["vocab"],
                       item_category=data["item_category"], world=data.get("world", {}),
                       training=data.get("training", {}))
        except (KeyError, TypeError) as e:
            raise CrayonboxError(f"{where} is not a judge config ({e}); retrain with "
                                 "`crayonbox train judge`") from None


@dataclass
class JudgeOutput:
    """What the judge makes of a batch: per-attribute probabilities (N, labels) and features."""

    probabilities: dict[str, Tensor]
    features: Tensor  # (N, scene_feature_dim + feature_dim): scene features and the mean of its slots'


class Judge:
    """A trained judge: labels (with an optional "unclear" threshold), probabilities and features."""

    def __init__(self, net: JudgeNet, config: JudgeConfig):
        self.net, self.config = net.eval(), config
        self.attributes = attribute_names()
        items, categories = config.vocab["item"], config.vocab["category"]
        # item → category as a 0/1 matrix: P(category) is the sum of its items' probabilities
        self.item_to_category = torch.zeros(len(items), len(categories))
        for i, item in enumerate(items):
            self.item_to_category[i, categories.index(config.item_category[item])] = 1.0

    @classmethod
    def load(cls, folder: str | Path) -> Judge:
        """Load a judge folder (`crayonbox train judge` output)."""
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / WEIGHTS).is_file():
            raise CrayonboxError(f"{folder} is not a judge folder (expected config.json and {WEIGHTS}); "
                                 "train one with `crayonbox train judge --world WORLD --out DIR`")
        raw, state = load_component(folder.parent, folder.name)
        config = JudgeConfig.from_dict(raw, f"{folder}/config.json")
        net = JudgeNet(config.net, config.vocab)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise CrayonboxError(f"weights in {folder} do not fit its config.json ({str(e)[:200]})") from None
        return cls(net, config)

    def save(self, folder: str | Path, metrics: dict[str, Any] | None = None) -> None:
        """Write config.json + model.safetensors (+ metrics.json) into `folder`, each file atomically."""
        folder = Path(folder)
        save_component(folder.parent, folder.name, self.config.to_dict(), self.net.state_dict())
        if metrics is not None:
            write_json_atomic(folder / "metrics.json", metrics)

    def labels(self, attribute: str) -> list[str]:
        """The labels of an attribute, in probability order."""
        return self.config.vocab[attribute.split("_", 1)[1] if attribute.startswith(SLOTS) else attribute]

    @torch.inference_mode()
    def run(self, images: Sequence[ImageLike], batch: int = 256) -> JudgeOutput:
        """Probabilities per attribute and features for every image (slots outside the predicted layout are
        NONE with probability 1)."""
        cfg, vocab = self.config.net, self.config.vocab
        probs: dict[str, list[Tensor]] = {a: [] for a in self.attributes}
        features: list[Tensor] = []
        for start in range(0, len(images), batch):
            pixels = to_pixels(images[start:start + batch], cfg.image_size)
            scene_features = self.net.scene.features(pixels)
            scene = {a: p.softmax(-1) for a, p in self.net.scene.classify(scene_features).items()}
            counts = [int(vocab["count"][k]) for k in scene["count"].argmax(-1).tolist()]
            crops, where = crop_slots(pixels, counts, cfg.crop_size)
            slot_features = self.net.slot.features(crops)
            slot_logits = self.net.slot.classify(slot_features)
            rows = torch.tensor([i for i, _ in where], dtype=torch.long)
            columns = torch.tensor([SLOTS.index(slot) for _, slot in where], dtype=torch.long)
            for a in SCENE_ATTRIBUTES:
                probs[a].append(scene[a])
            slot_probs = {a: logits.softmax(-1) for a, logits in slot_logits.items()}
            slot_probs["category"] = slot_probs["item"] @ self.item_to_category
            for a in SLOT_ATTRIBUTES:
                full = torch.zeros(len(pixels), len(SLOTS), len(vocab[a]))
                full[:, :, vocab[a].index(NONE)] = 1.0  # slots outside the layout are empty for sure
                full[rows, columns] = slot_probs[a]
                for s, slot in enumerate(SLOTS):
                    probs[f"{slot}_{a}"].append(full[:, s])
            per_image = torch.tensor(counts, dtype=torch.float32)[rows, None]
            pooled = torch.zeros(len(pixels), cfg.feature_dim).index_add_(0, rows, slot_features / per_image)
            features.append(torch.cat([scene_features, pooled], dim=1))
        width = cfg.scene_feature_dim + cfg.feature_dim
        return JudgeOutput({a: torch.cat(p) if p else torch.zeros(0, len(self.labels(a)))
                            for a, p in probs.items()},
                           torch.cat(features) if features else torch.zeros(0, width))

    def predict(self, images: Sequence[ImageLike], unclear_below: float = 0.0,
                batch: int = 256) -> list[dict[str, str]]:
        """Labels per image; an attribute whose top probability is below `unclear_below` becomes "unclear"."""
        return self.labels_from(self.run(images, batch), unclear_below)

    def labels_from(self, output: JudgeOutput, unclear_below: float = 0.0) -> list[dict[str, str]]:
        """Labels from a `run` output (so one pass gives labels and features)."""
        n = len(output.features)
        rows: list[dict[str, str]] = [{} for _ in range(n)]
        for a, p in output.probabilities.items():
            top, index = p.max(-1)
            labels = self.labels(a)
            for i, (confidence, k) in enumerate(zip(top.tolist(), index.tolist(), strict=True)):
                rows[i][a] = UNCLEAR if confidence < unclear_below else labels[k]
        return rows

    def features(self, images: Sequence[ImageLike], batch: int = 256) -> np.ndarray:
        """(N, D) float64 judge features (for Fréchet distances)."""
        return self.run(images, batch).features.double().numpy()
