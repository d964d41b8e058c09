"""From files on disk to a `Converted` model: finds the files of each source layout and runs its converter.

Sources:
- "flax": a folder like the hub repos `dalle-mini/dalle-mini` / `dalle-mini/dalle-mega` (`config.json`,
  `flax_model.msgpack`, tokenizer files); the VQGAN a folder like `dalle-mini/vqgan_imagenet_f16_16384`.
- "mindalle": min-dalle's files, either as it lays them out (`pretrained/dalle_bart_mini/{encoder,decoder}.pt`
  + `vocab.json`, `merges.txt`; `pretrained/vqgan/detoker.pt`) or as its hub repo `kuprel/min-dalle` names
  them (`encoder_mini.pt`, `vocab_mini.json`, … next to mega's `encoder.pt`).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from crayonbox.config import VQGANConfig, read_json
from crayonbox.errors import CrayonboxError
from crayonbox.weights import convert_flax as flax
from crayonbox.weights import convert_mindalle as mindalle
from crayonbox.weights.export import Converted, find_tokenizer_files
from crayonbox.weights.flax_msgpack import read_flax_msgpack

FLAX_WEIGHTS = "flax_model.msgpack"


def _folder(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CrayonboxError(f"{what} folder not found: {path}")
    return path


def convert_flax_vqgan(src: str | Path) -> tuple[VQGANConfig, dict[str, Tensor]]:
    """A vqgan-jax folder (`config.json` + `flax_model.msgpack`) → (config, state dict)."""
    src = _folder(src, "VQGAN")
    cfg = flax.vqgan_config_from_official(read_json(src / "config.json"), str(src / "config.json"))
    state = flax.convert_vqgan_params(read_flax_msgpack(src / FLAX_WEIGHTS), cfg, str(src / FLAX_WEIGHTS))
    return cfg, state


def convert_flax_folder(
    src: str | Path, vqgan: str | Path | None = None, tokenizer: str | Path | None = None
) -> Converted:
    """An official DalleBart folder (+ optional VQGAN folder) → `Converted`. Tokenizer files come from
    `tokenizer` if given, else from `src`."""
    src = _folder(src, "model")
    data = read_json(src / "config.json")
    cfg = flax.bart_config_from_official(data, str(src / "config.json"))
    tokenizer_files = find_tokenizer_files(Path(tokenizer) if tokenizer else src)
    state = flax.convert_bart_params(read_flax_msgpack(src / FLAX_WEIGHTS), cfg, str(src / FLAX_WEIGHTS))
    converted = Converted(
        cfg,
        state,
        tokenizer_files=tokenizer_files,
        normalizer_mode=flax.normalizer_mode_from_official(data),
        provenance={"converted_from": "flax", "bart": str(src)},
    )
    if vqgan is not None:
        converted.vqgan_config, converted.vqgan_state = convert_flax_vqgan(vqgan)
        converted.provenance["vqgan"] = str(vqgan)
    _check_codebook(converted)
    return converted


def _pick(src: Path, stem: str, variant: str | None) -> Path:
    """`stem.pt` (mega, or min-dalle's local name for either) or `stem_mini.pt` (hub name for mini)."""
    plain, mini = src / f"{stem}.pt", src / f"{stem}_mini.pt"
    if variant == "mini":
        return mini if mini.is_file() else plain
    if variant == "mega":
        return plain
    if plain.is_file() and mini.is_file():
        raise CrayonboxError(
            f"{src} holds both {plain.name} (mega) and {mini.name}: pass --variant mini or mega"
        )
    return mini if mini.is_file() else plain


def _find_detoker(src: Path, vqgan: str | Path | None) -> Path | None:
    if vqgan is not None:
        path = Path(vqgan)
        path = path / "detoker.pt" if path.is_dir() else path
        if not path.is_file():
            raise CrayonboxError(f"missing file: {path}")
        return path
    beside, min_dalle_layout = src / "detoker.pt", src.parent / "vqgan" / "detoker.pt"  # hub repo / local
    for candidate in (beside, min_dalle_layout):
        if candidate.is_file():
            return candidate
    return None


def convert_mindalle_folder(
    src: str | Path,
    vqgan: str | Path | None = None,
    tokenizer: str | Path | None = None,
    variant: str | None = None,
) -> Converted:
    """min-dalle's encoder/decoder `.pt` files (+ `detoker.pt` if found) → `Converted`."""
    src = _folder(src, "min-dalle")
    encoder_path, decoder_path = _pick(src, "encoder", variant), _pick(src, "decoder", variant)
    encoder, decoder = mindalle.load_pt(encoder_path), mindalle.load_pt(decoder_path)
    detoker_path = _find_detoker(src, vqgan)
    detoker = mindalle.load_pt(detoker_path) if detoker_path else None
    vqgan_cfg = mindalle.vqgan_config_for_detokenizer(detoker) if detoker is not None else None
    codes = vqgan_cfg.n_embed if vqgan_cfg else mindalle.OFFICIAL_BOS
    cfg = mindalle.bart_config_from_mindalle(encoder, decoder, image_vocab_size=codes)
    mini_names = {"vocab.json": ("vocab_mini.json",), "merges.txt": ("merges_mini.txt",)}
    is_mini = encoder_path.name.endswith("_mini.pt")
    tokenizer_files = find_tokenizer_files(
        Path(tokenizer) if tokenizer else src, mini_names if is_mini else None
    )
    state = mindalle.convert_mindalle_bart(encoder, decoder, cfg, f"{encoder_path} + {decoder_path}")
    del encoder, decoder
    converted = Converted(
        cfg,
        state,
        tokenizer_files=tokenizer_files,
        normalizer_mode="official",
        provenance={"converted_from": "mindalle", "bart": [str(encoder_path), str(decoder_path)]},
    )
    if detoker is not None:
        converted.vqgan_config = vqgan_cfg
        converted.vqgan_state = mindalle.convert_mindalle_vqgan(detoker, vqgan_cfg, str(detoker_path))
        converted.provenance["vqgan"] = str(detoker_path)
    return converted


def _check_codebook(converted: Converted) -> None:
    """The model must not emit codes the VQGAN cannot decode."""
    if converted.vqgan_config and converted.vqgan_config.n_embed < converted.bart_config.image_vocab_size:
        raise CrayonboxError(
            f"the VQGAN has {converted.vqgan_config.n_embed} codes but the model samples "
            f"{converted.bart_config.image_vocab_size}: they were not made for each other"
        )
