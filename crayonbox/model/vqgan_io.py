"""A VQGAN with its encoder, loaded from a folder, and the encode → decode round trip.

The generator only decodes (Pipeline loads the decoder half of a model folder); encoding images — the token
parquets of `crayonbox encode`, the lab's `--validate-roundtrip`, eval's "best possible tokens" reference —
needs the encoder too, which `crayonbox train vqgan` saves and official decoder-only checkpoints lack.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from crayonbox.config import read_json, vqgan_config_from_dict
from crayonbox.errors import CrayonboxError
from crayonbox.model.images import ImageLike, to_pil, to_pixels
from crayonbox.model.vqgan import VQGAN
from crayonbox.model_folder import load_component


def load_vqgan(path: str | Path) -> tuple[VQGAN, dict]:
    """A VQGAN with its encoder from a component folder, a `train vqgan` output or a model folder;
    returns the model and a provenance dict (path + the training report when there is one)."""
    path = Path(path)
    folder, name = (path.parent, path.name) if (path / "config.json").exists() else (path, "vqgan")
    if not (folder / name / "config.json").exists():
        raise CrayonboxError(f"no VQGAN in {path}: expected {path}/vqgan/config.json and model.safetensors "
                             "(train one with `crayonbox train vqgan`)")
    config, state = load_component(folder, name)
    model = VQGAN(vqgan_config_from_dict(config, f"{folder}/{name}/config.json"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if unexpected or missing:
        raise CrayonboxError(f"{folder}/{name} does not fit its config.json (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); encoding needs the encoder half, which official "
                             "decoder-only checkpoints lack")
    info: dict = {"path": str(folder.resolve())}
    if (folder / "report.json").exists():
        info["report"] = read_json(folder / "report.json")
    return model, info


@torch.inference_mode()
def round_trip(vqgan: VQGAN, images: Sequence[ImageLike], batch: int = 64) -> list[Image.Image]:
    """PIL images (or H×W×3 uint8 arrays) through `vqgan`, encode → decode, as PIL images at its resolution:
    what the best possible token sequence for each looks like once decoded."""
    dtype = next(vqgan.parameters()).dtype
    pixels = to_pixels(images, vqgan.cfg.resolution).to(dtype)
    return [im for s in range(0, len(pixels), batch)
            for im in to_pil(vqgan.decode(vqgan.encode(pixels[s:s + batch])))]
