"""CLIP zero-shot labelling through open_clip, for users who have CLIP weights (nothing is downloaded).

    clip = ClipInstrument.from_weights("ViT-B-32", "open_clip_vit_b32.safetensors")
    clip.measure(images)   # [{"gender": "woman", "attire": "sari"}, …]

Each attribute is a set of labels, each label a few text prompts; an image gets the label whose mean prompt
embedding is most similar, or UNCLEAR when the softmax winner has less than `min_confidence`. NONE is a label
of its own ("a picture with no people"), never a dropped image: the forced choice of HEIM's CLIP gender
metric, which gives every image a gender even with nobody in it, is exactly
what this avoids. Validate it like any instrument, on labelled renders (`Instrument.validate_world`).

Installing: `pip install --no-deps open-clip-torch` (its torchvision dependency would replace the CPU torch;
ftfy comes with crayonbox, regex with wordfreq).
open_clip's package __init__ imports torchvision (for its training transforms and one ResNet helper); we
need neither, so `import_open_clip` loads only its model and tokenizer modules, with a placeholder for the
one torchvision name they reference at import time, and does its own preprocessing (resize, centre crop,
normalise) with Pillow. Weights are read with safetensors, or with torch.load(weights_only=True).
No CLIP weights exist on this machine: the tests run the plumbing on a randomly initialised small CLIP.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from crayonbox.errors import CrayonboxError
from crayonbox.lab.instruments.base import NONE, UNCLEAR, ImageLike, Instrument
from crayonbox.model.images import as_rgb_array

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INSTALL_HINT = "pip install --no-deps open-clip-torch (crayonbox already brings what it needs besides torchvision)"

# A small CLIP (ViT, 32 px) for testing the plumbing: with random weights its labels mean nothing.
RANDOM_CONFIG: dict[str, Any] = {
    "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}

# Attribute → label → prompts. Labels match the emoji world's ground truth (see `truth`).
DEFAULT_LABELS: dict[str, dict[str, list[str]]] = {
    "gender": {
        "woman": ["a picture of a woman", "a woman"],
        "man": ["a picture of a man", "a man"],
        "neutral": ["a picture of a person", "a person"],
        "mixed": ["a picture of a man and a woman", "people"],
        NONE: ["a picture with no people", "an object"],
    },
    "attire": {
        "sari": ["a woman wearing a sari", "a sari"],
        "kimono": ["a person wearing a kimono", "a kimono"],
        "hijab": ["a woman wearing a hijab", "a headscarf"],
        "turban": ["a man wearing a turban", "a turban"],
        "other": ["a piece of clothing", "a person wearing clothes"],
        NONE: ["a picture with no clothing", "an animal or an object"],
    },
}


@dataclass
class OpenClip:
    """The two open_clip modules crayonbox uses."""

    model: types.ModuleType  # open_clip.model (CLIP)
    tokenizer: types.ModuleType  # open_clip.tokenizer (SimpleTokenizer; its vocabulary ships in the wheel)
    config_dir: Path  # open_clip/model_configs


def import_open_clip() -> OpenClip:
    """Load open_clip's model and tokenizer modules without its package __init__ (which needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise CrayonboxError(f"CLIP labelling needs open_clip, which is not installed: {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0])
    if "open_clip" not in sys.modules:
        package = types.ModuleType("open_clip")
        package.__path__ = [str(root)]
        package.__spec__ = spec
        sys.modules["open_clip"] = package
    placeholders = {}
    if importlib.util.find_spec("torchvision") is None:
        # open_clip.utils imports torchvision's FrozenBatchNorm2d, used only to freeze ResNet towers for
        # fine-tuning. Give it a stand-in for the import, then take torchvision back out of sys.modules.
        placeholders = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.ops",
                                                                   "torchvision.ops.misc")}
        placeholders["torchvision.ops.misc"].FrozenBatchNorm2d = _NoTorchvision
    sys.modules.update(placeholders)
    try:
        model = importlib.import_module("open_clip.model")
        tokenizer = importlib.import_module("open_clip.tokenizer")
    except ImportError as e:
        raise CrayonboxError(f"open_clip is installed but cannot be imported ({e}); {INSTALL_HINT}") from None
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return OpenClip(model, tokenizer, root / "model_configs")


class _NoTorchvision:
    def __init__(self, *args: Any, **kwargs: Any):
        raise CrayonboxError("freezing CLIP batch norms needs torchvision, which crayonbox does not use")


def model_config(arch: str, clip: OpenClip | None = None) -> dict[str, Any]:
    """open_clip's JSON config for an architecture name such as "ViT-B-32"."""
    clip = clip or import_open_clip()
    path = clip.config_dir / f"{arch}.json"
    if not path.exists():
        known = sorted(p.stem for p in clip.config_dir.glob("*.json"))
        raise CrayonboxError(f"unknown CLIP architecture {arch!r}; open_clip knows e.g. {known[:8]} …")
    return json.loads(path.read_text(encoding="utf-8"))


def load_state(weights: Path) -> dict[str, torch.Tensor]:
    """A CLIP state dict from .safetensors, or from a torch checkpoint read with weights_only=True."""
    weights = Path(weights)
    if not weights.exists():
        raise CrayonboxError(f"CLIP weights not found: {weights}")
    if weights.suffix == ".safetensors":

        return load_file(str(weights))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # pickles with code in them are refused here, by design
        raise CrayonboxError(f"cannot read CLIP weights {weights} safely ({e}); convert them to "
                             ".safetensors") from None
    state = state.get("state_dict", state)
    return {k.removeprefix("module."): v for k, v in state.items()}


def preprocess(images: Sequence[ImageLike], size: int, mean: Sequence[float] = OPENAI_MEAN,
               std: Sequence[float] = OPENAI_STD) -> torch.Tensor:
    """CLIP's eval transform without torchvision: bicubic resize of the short side, centre crop, normalise."""
    out = []
    for image in images:
        pil = Image.fromarray(as_rgb_array(image))
        scale = size / min(pil.size)
        w, h = max(size, round(pil.width * scale)), max(size, round(pil.height * scale))
        pil = pil.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        out.append((arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


@dataclass
class ClipInstrument(Instrument):
    """Zero-shot labels from a CLIP model; see the module docstring."""

    model: torch.nn.Module
    tokenize: Any  # callable: list[str] → (N, context) LongTensor
    image_size: int
    labels: dict[str, dict[str, list[str]]] = field(default_factory=lambda: DEFAULT_LABELS)
    min_confidence: float = 0.4  # softmax share the winning label needs; below it the answer is UNCLEAR
    batch_size: int = 32
    name: str = "clip"

    def __post_init__(self) -> None:
        self.model.eval()
        self._text: dict[str, torch.Tensor] = {}

    @classmethod
    def from_weights(cls, arch: str, weights: str | Path, config: dict[str, Any] | None = None,
                     **kwargs: Any) -> ClipInstrument:
        """Build open_clip's `arch` (or an explicit open_clip `config`) and load the user's weights."""
        clip = import_open_clip()
        config = config or model_config(arch, clip)
        model = clip.model.CLIP(**config)
        missing, unexpected = model.load_state_dict(load_state(Path(weights)), strict=False)
        if missing or unexpected:
            raise CrayonboxError(f"{weights} does not fit open_clip's {arch}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
        context = config["text_cfg"].get("context_length", 77)
        return cls(model, clip.tokenizer.SimpleTokenizer(context_length=context),
                   config["vision_cfg"]["image_size"], name=f"clip-{arch}-{Path(weights).stem}", **kwargs)

    @classmethod
    def random(cls, seed: int = 0, **kwargs: Any) -> ClipInstrument:
        """A small randomly initialised CLIP (ViT, 32 px): its labels mean nothing, its plumbing is real."""
        clip = import_open_clip()
        torch.manual_seed(seed)
        model = clip.model.CLIP(**RANDOM_CONFIG)
        return cls(model, clip.tokenizer.SimpleTokenizer(), 32, name=f"clip-random-{seed}", **kwargs)

    def outcomes(self) -> dict[str, tuple[str, ...]]:
        """Each attribute's labels plus "unclear"."""
        return {attribute: (*labels, UNCLEAR) if UNCLEAR not in labels else tuple(labels)
                for attribute, labels in self.labels.items()}

    @torch.inference_mode()
    def _label_embeddings(self, attribute: str) -> torch.Tensor:
        if attribute not in self._text:
            rows = []
            for prompts in self.labels[attribute].values():
                e = self.model.encode_text(self.tokenize(prompts))
                e = e / e.norm(dim=-1, keepdim=True)
                rows.append(e.mean(0) / e.mean(0).norm())
            self._text[attribute] = torch.stack(rows)
        return self._text[attribute]

    @torch.inference_mode()
    def probabilities(self, images: Sequence[ImageLike]) -> dict[str, np.ndarray]:
        """Attribute → (N, labels) softmax over that attribute's labels."""
        features = []
        for start in range(0, len(images), self.batch_size):
            e = self.model.encode_image(preprocess(images[start:start + self.batch_size], self.image_size))
            features.append(e / e.norm(dim=-1, keepdim=True))
        image = torch.cat(features) if features else torch.zeros(0, 1)
        scale = float(self.model.logit_scale.exp())
        return {a: (scale * image @ self._label_embeddings(a).T).softmax(-1).numpy() for a in self.labels}

    def measure(self, images: Sequence[ImageLike]) -> list[dict[str, str]]:
        """The most similar label per attribute, or "unclear" below `min_confidence`."""
        probs = self.probabilities(images)
        out: list[dict[str, str]] = [{} for _ in images]
        for attribute, p in probs.items():
            names = list(self.labels[attribute])
            for i, row in enumerate(p):
                best = int(row.argmax())
                out[i][attribute] = names[best] if row[best] >= self.min_confidence else UNCLEAR
        return out

    def truth(self, world: dict[str, Any]) -> dict[str, str]:
        """Labels a perfect CLIP would give a world render (emoji world ground truth)."""
        objects = world.get("objects", [])
        genders = {o["gender"] for o in objects if o.get("gender") not in (None, "none")}
        gender = NONE if not genders else genders.pop() if len(genders) == 1 else "mixed"
        attires = [o["attire"] for o in objects if o.get("attire")]
        named = [a for a in attires if a in self.labels.get("attire", {})]
        attire = named[0] if named else ("other" if attires else NONE)
        truth = {"gender": gender, "attire": attire}
        return {a: truth.get(a, UNCLEAR) for a in self.labels}
