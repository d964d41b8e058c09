"""Reading an ablation folder (`crayonbox lab ablate`, crayonbox/train/ablate.py writes it): each arm's
effect on each outcome share, paired with the baseline by training seed, with intervals that hold the
seed-to-seed noise of training (crayonbox.lab.stats.seed_effects).

An effect on the share the instrument *reads* is attenuated by the instrument's errors: with sensitivity
Se = P(read o | o) and false-positive rate Fp = P(read o | not o), a true change Δ reads as (Se − Fp)·Δ.
So significance is judged on the read shares (no extra assumption), and the magnitude is also given
corrected, Δ / (Se − Fp), with Se and Fp from the instrument's validation on renders through the run's
VQGAN (a Rogan–Gladen correction of a difference).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crayonbox.config import read_json, write_json_atomic
from crayonbox.errors import CrayonboxError
from crayonbox.lab.blame import blame_run
from crayonbox.lab.families import NORMALISED
from crayonbox.lab.instruments.skin_tone import SkinToneConfig, SkinToneMeter
from crayonbox.lab.measure import through_model_vqgan
from crayonbox.lab.reference import validation_renders
from crayonbox.lab.stats.seed_effects import SeedCounts, SeedEffect, pooled_training_noise, seed_effect

ABLATION_FILE = "ablation.json"
VALIDATION_FILE = "validation.json"
RESULT_FILE = "result.json"
EFFECTS_FILE = "effects.json"
MIN_SEPARATION = 0.2  # Se − Fp below this: the instrument cannot separate the outcome; no corrected effect


def arm_slug(arm: str) -> str:
    """Folder name of an arm ("english_only:drop" → "english_only-drop")."""
    return arm.replace(":", "-")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """ABL/ablation.json; a folder without one is not an ablation (one-line error)."""
    path = Path(folder) / ABLATION_FILE
    if not path.exists():
        raise CrayonboxError(f"{folder} is not an ablation folder (no {ABLATION_FILE}); make one with "
                             "`crayonbox lab ablate RUN --out DIR`")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or "run_identity" not in manifest:
        raise CrayonboxError(f"{path} is not an ablation manifest")
    return manifest


DEFAULT_MAX_ARMS = 3  # with the baseline, 4 arms × 2 seeds: the bench's ≤ 20-minute budget
MIN_MOVED = 0.10  # an arm must move this share of the prompt's matched items to be ablated by default


def default_arms(captions: Path, tokenizer: Path, prompt: str = "", max_arms: int = DEFAULT_MAX_ARMS) -> list[str]:
    """The arms `lab ablate` runs when none are given: those whose change moves at least MIN_MOVED of the
    items captioned like `prompt` (blame's "necessary"), most moved first. Normaliser modes are left out:
    they change the prompt's own ids as well (raw `""` becomes the unconditional ids), so they test
    hypothesis (e), not a filter; ask for `normalize:raw` explicitly."""

    blamed = blame_run(captions, tokenizer, prompts=[prompt], progress=False).table
    matched = blamed.prompts[0].matched_baseline
    total = int(matched.sum())
    moved = {a.name: int(blamed.prompts[0].necessary[a.name].sum()) for a in blamed.arms if a.kind != "normalize"}
    chosen = [a for a, m in sorted(moved.items(), key=lambda kv: -kv[1]) if total and m >= MIN_MOVED * total]
    return chosen[:max_arms]


def roundtrip_validation(path: Path, world_config: Path, model: Path, n: int, max_distance: float,
                         reuse: Path | None = None) -> dict[str, Any]:
    """The skin meter's confusion on `n` labelled renders of the world passed through the model's VQGAN
    (how generated pixels look), cached in `path` (JSON). `reuse` is another command's cache (an ablation's),
    read when its settings match and never written."""
    settings = {"n": n, "max_distance": max_distance, "world_config": str(world_config), "model": str(model)}
    for cache in (reuse, path):
        if cache is not None and cache.exists():
            cached = read_json(cache)
            if cached.get("settings") == settings:
                return cached
    images, truths, where = through_model_vqgan(*validation_renders(n, world_config), str(model))
    meter = SkinToneMeter(SkinToneConfig(max_distance=max_distance))
    confusions = meter.validate_world(images, truths)
    result = {"source": where, "settings": settings, "confusions": {a: c.to_dict() for a, c in confusions.items()}}
    write_json_atomic(path, result)
    return result


@dataclass(frozen=True)
class ArmEffect:
    """One arm's effect on one outcome of one prompt at one condition scale."""

    arm: str
    step: str | None
    change: str
    prompt: str
    input_mode: str
    condition_scale: float
    attribute: str
    outcome: str
    effect: SeedEffect
    corrected: tuple[float, float, float] | None  # (effect, lo, hi) after the instrument correction

    def to_dict(self) -> dict[str, Any]:
        e = self.effect
        return {"arm": self.arm, "step": self.step, "change": self.change, "prompt": self.prompt,
                "input_mode": self.input_mode, "condition_scale": self.condition_scale,
                "attribute": self.attribute, "outcome": self.outcome, "effect": e.effect,
                "interval": list(e.interval), "significant": e.significant, "baseline_share": e.baseline_share,
                "arm_share": e.arm_share, "df": e.df, "standard_error": e.standard_error,
                "corrected": list(self.corrected) if self.corrected else None,
                "arm_seeds": [asdict(s) for s in e.arm_seeds],
                "baseline_seeds": [asdict(s) for s in e.baseline_seeds]}


@dataclass
class Ablation:
    """An ablation folder, read and analysed."""

    folder: Path
    manifest: dict[str, Any]
    validation: dict[str, Any]
    results: dict[str, dict[int, dict[str, Any]]]  # arm → seed → result.json
    effects: list[ArmEffect] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "arm seed S" jobs not finished

    def effects_for(self, prompt: str, input_mode: str = NORMALISED, condition_scale: float | None = None,
                    outcome: str | None = None, arm: str | None = None) -> list[ArmEffect]:
        """The effects on one prompt, optionally of one scale, outcome and arm."""
        return [e for e in self.effects if e.prompt == prompt and e.input_mode == input_mode
                and (condition_scale is None or e.condition_scale == condition_scale)
                and (outcome is None or e.outcome == outcome) and (arm is None or e.arm == arm)]

    def summary_lines(self) -> list[str]:
        """One line per arm for the blank prompt's most changed outcome (what the CLI prints)."""
        lines = [f"{self.folder}: {len(self.results)} arms, seeds {self.manifest['seeds']}"
                 + (f"; unfinished: {', '.join(self.missing)}" if self.missing else "")]
        if set(self.results) <= {"baseline"}:
            lines.append("  only the baseline was retrained: its seeds give the training noise, and no arm was asked "
                         "for (or blame found no step that moves the blank prompt's matched items)")
        best: dict[tuple[str, float], ArmEffect] = {}
        for e in self.effects_for(""):
            key = (e.arm, e.condition_scale)
            if key not in best or abs(e.effect.effect) > abs(best[key].effect.effect):
                best[key] = e
        for (arm, scale), e in sorted(best.items()):
            lo, hi = e.effect.interval
            verdict = "significant" if e.effect.significant else "cannot tell"
            lines.append(f'  {arm} (scale {scale:g}): "" {e.attribute} {e.outcome} '
                         f"{100 * e.effect.baseline_share:.1f}% → {100 * e.effect.arm_share:.1f}% "
                         f"({100 * e.effect.effect:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}], {verdict})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "run": self.manifest["run"], "arms": self.manifest["arms"],
                "seeds": self.manifest["seeds"], "missing": self.missing,
                "instrument_validation": self.validation.get("source"),
                "effects": [e.to_dict() for e in self.effects]}


def _separation(validation: dict[str, Any], attribute: str, outcome: str) -> float | None:
    """Se − Fp of `outcome` from the validation confusion, None when the outcome was never true there."""
    confusion = validation.get("confusions", {}).get(attribute)
    if not confusion or outcome not in confusion["labels"]:
        return None
    labels, counts = confusion["labels"], confusion["counts"]
    j = labels.index(outcome)
    row = counts[j]
    others = [counts[i] for i in range(len(labels)) if i != j and sum(counts[i])]
    if not sum(row) or not others:
        return None
    return row[j] / sum(row) - sum(r[j] for r in others) / sum(sum(r) for r in others)


def load_ablation(folder: str | Path, run: str | Path | None = None, confidence: float = 0.95) -> Ablation:
    """Read ABL (checking it belongs to `run` when given) and compute every arm's effects."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if run is not None and Path(run).resolve() != Path(manifest["run"]):
        raise CrayonboxError(f"{folder} is an ablation of {manifest['run']}, not of {Path(run).resolve()}")
    validation_path = folder / VALIDATION_FILE
    validation = read_json(validation_path) if validation_path.exists() else {}
    results: dict[str, dict[int, dict[str, Any]]] = {}
    missing = []
    for arm in manifest["arms"]:
        for seed in manifest["seeds"]:
            path = folder / "arms" / arm_slug(arm) / f"seed{seed}" / RESULT_FILE
            if path.exists():
                results.setdefault(arm, {})[seed] = json.loads(path.read_text(encoding="utf-8"))
            else:
                missing.append(f"{arm} seed {seed}")
    ablation = Ablation(folder, manifest, validation, results, missing=missing)
    if "baseline" in results:
        ablation.effects = _effects(results, validation, confidence)
    return ablation


def _effects(results: dict[str, dict[int, dict[str, Any]]], validation: dict[str, Any],
             confidence: float) -> list[ArmEffect]:
    # (prompt, mode, scale, attribute) → arm → [SeedCounts per outcome]
    tallies: dict[tuple, dict[str, dict[str, list[SeedCounts]]]] = defaultdict(lambda: defaultdict(dict))
    outcomes: dict[tuple, set[str]] = defaultdict(set)
    for by_seed in results.values():
        for result in by_seed.values():
            for cell in result["cells"]:
                key = (cell["prompt"], cell["input_mode"], float(cell["condition_scale"]), cell["attribute"])
                outcomes[key] |= set(cell["counts"])
    for arm, by_seed in results.items():
        for seed, result in sorted(by_seed.items()):
            for cell in result["cells"]:
                key = (cell["prompt"], cell["input_mode"], float(cell["condition_scale"]), cell["attribute"])
                if cell["n"] == 0:
                    continue
                for outcome in outcomes[key]:
                    tallies[key][arm].setdefault(outcome, []).append(
                        SeedCounts(seed, int(cell["counts"].get(outcome, 0)), int(cell["n"])))
    effects = []
    for key, by_arm in tallies.items():
        prompt, mode, scale, attribute = key
        for outcome in sorted(outcomes[key]):
            per_arm = {arm: counts[outcome] for arm, counts in by_arm.items() if outcome in counts}
            if "baseline" not in per_arm:
                continue
            noise = pooled_training_noise(per_arm)
            separation = _separation(validation, attribute, outcome)
            for arm, seeds in per_arm.items():
                if arm == "baseline":
                    continue
                effect = seed_effect(seeds, per_arm["baseline"], noise, confidence)
                corrected = None
                if separation is not None and separation >= MIN_SEPARATION:
                    corrected = (effect.effect / separation, effect.interval[0] / separation,
                                 effect.interval[1] / separation)
                step, _, change = arm.partition(":")
                effects.append(ArmEffect(arm, step, change, prompt, mode, scale, attribute, outcome, effect,
                                         corrected))
    return effects
