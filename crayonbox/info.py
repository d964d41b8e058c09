"""`crayonbox info [MODEL]`: what a model folder can draw and how it was made, from the folder alone.

Read without loading weights (parameter counts come from the safetensors headers), so it is instant even for
dalle-mega. Every line says where it comes from when the folder does not record something directly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from crayonbox.errors import CrayonboxError
from crayonbox.hub import CARD_FILES
from crayonbox.model_folder import WEIGHTS, ModelFolder, read_safetensors_header

NORMALISERS = {
    "official": "English: the official normaliser transliterates other scripts to ASCII (unidecode)",
    "multilingual": "any script, kept as written (multilingual normaliser)",
    "raw": "any text, as typed (raw: no normaliser)",
}
SHOWN_WORDS = 60  # of a derived word list, so a 50k vocabulary does not flood the terminal


def parameter_count(path: Path) -> int:
    """Number of values in a safetensors file, from its JSON header (no tensor is read)."""
    entries, _ = read_safetensors_header(path)
    try:
        return sum(math.prod(int(n) for n in entry["shape"]) for entry in entries.values())
    except (KeyError, TypeError, ValueError) as e:
        raise CrayonboxError(f"cannot read the header of {path}: {e!r}") from None


def describe(folder: str | Path) -> list[tuple[str, str]]:
    """(label, text) rows about the model folder `folder`."""
    model = ModelFolder(folder).check()
    bart, vqgan, tokenizer = model.config, model.vqgan_config, model.tokenizer
    params = {name: parameter_count(model.path / name / WEIGHTS) for name in ("bart", "vqgan")
              if (model.path / name / WEIGHTS).is_file()}
    rows = [
        ("model", str(model.path)),
        ("native size", f"{vqgan.resolution}×{vqgan.resolution} px (`crayonbox generate --upscale N` enlarges)"),
        ("grid", f"{bart.grid}×{bart.grid} = {bart.image_length} image tokens, each one of {vqgan.n_embed} "
                 "VQGAN codes"),
        ("parameters", ", ".join(f"{'transformer' if n == 'bart' else 'VQGAN'} {_millions(c)}"
                                 for n, c in params.items()) + f" (total {_millions(sum(params.values()))})"),
        ("vocabulary", f"{tokenizer.vocab_size} text ids, {len(tokenizer.whole_words())} whole words; prompts "
                       f"up to {bart.text_length} tokens"),
        ("concepts", _concepts(model)),
        ("languages", _languages(model)),
        ("training data", _training(model)),
        ("card", next((str(model.path / n) for n in CARD_FILES if (model.path / n).is_file()),
                      "none (write one with `crayonbox lab card MODEL`)")),
    ]
    return rows


def summary(folder: str | Path) -> str:
    """One sentence on what the model draws, for the web page and `generate`: native size and its concepts."""
    model = ModelFolder(folder)
    size = model.vqgan_config.resolution
    concepts = model.concepts
    if not concepts:
        return f"This model draws {size}×{size} px images (`crayonbox info` says what it was trained on)."
    kinds = ", ".join(f"{category} {len(names)}" for category, names in concepts.items())
    return (f"This model draws {size}×{size} px sketches of the {sum(len(n) for n in concepts.values())} "
            f"concepts of the world it was trained on ({kinds}); words it never learnt are named under Notes.")


def format_rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in rows)


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f} M" if count >= 1e5 else f"{count:,}"


def _concepts(model: ModelFolder) -> str:
    concepts = model.concepts
    if concepts:
        total = sum(len(names) for names in concepts.values())
        where = model.world_path.name if model.world_path else "the folder"
        lines = [f"{total} concepts in {len(concepts)} categories, from the world it was trained on ({where}):"]
        lines += [f"  {category} ({len(names)}): {', '.join(names)}" for category, names in concepts.items()]
        background = model.world.get("background") or {}
        for key in ("colour", "kind"):
            if isinstance(background.get(key), dict):
                lines.append(f"  background {key}s: {', '.join(map(str, background[key]))}")
        return "\n".join(lines)
    words = model.tokenizer.whole_words()
    more = f", … ({len(words) - SHOWN_WORDS} more)" if len(words) > SHOWN_WORDS else ""
    shown = ", ".join(words[:SHOWN_WORDS]) + more
    return (f"not recorded in the folder; derived from the tokenizer's {len(words)} whole-word tokens (words it "
            f"can read, not necessarily draw): {shown}")


def _languages(model: ModelFolder) -> str:
    mode = model.tokenizer.normalizer_config.mode
    text = NORMALISERS.get(mode, mode)
    languages = sorted({str(lang) for source in (model.world.get("sources") or {}).values()
                        if isinstance(source, dict) for lang in (source.get("language") or {})})
    return text + (f"; training captions in {', '.join(languages)}" if languages else "")


def _training(model: ModelFolder) -> str:
    prov = model.provenance
    if "converted_from" in prov:
        hub = prov.get("hub") or {}
        origin = f" ({hub['repo']}@{hub.get('revision', 'main')})" if "repo" in hub else ""
        return f"converted from official {prov['converted_from']} weights{origin}; their training data: see its card"
    if "trained_by" not in prov:
        return "not recorded in pipeline.json"
    parts = [f"`{prov['trained_by']}`"]
    recipe = _json(model.path / "recipe.json")
    config = recipe.get("recipe_config") or {}
    if "world_items" in config:
        parts.append(f"{config['world_items']:,} synthetic {config.get('world_size', '?')} px images of an emoji "
                     "world with captions (no real photographs)")
    stages = {s.get("name"): s.get("summary") or {} for s in recipe.get("stages") or [] if isinstance(s, dict)}
    model_stage = stages.get("model") or prov
    if "samples_seen" in model_stage:
        parts.append(f"{model_stage['samples_seen']:,} captions seen in {model_stage.get('steps', '?')} steps")
    return "; ".join(parts)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
