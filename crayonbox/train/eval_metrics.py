"""The numbers of `crayonbox eval`, as pure functions: prompt adherence with its chance level, the Fréchet
distance between two feature sets, and label distributions with their total-variation distance.

Adherence compares what a prompt asked for with what the judge read. A prompt names its objects in caption
order, but the world lays objects out in random slots, so the judged objects are matched to the asked ones by
the assignment that agrees on the most attributes. Only what the prompt says is checked: "a woman" fixes the
gender but not the skin tone; "a woman: dark skin tone" fixes both.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crayonbox.model.judge import NONE, SLOT_ATTRIBUTES, SLOTS, tone_label

SCENE_CHECKS = ("count", "background_colour", "background_kind", "background_colour2")


@dataclass
class Expectation:
    """What one prompt asks for: per object the attributes it names, and the scene attributes."""

    objects: list[dict[str, str]]
    scene: dict[str, str] = field(default_factory=dict)


def expectation_of(world: dict[str, Any]) -> Expectation:
    """The attributes an English caption that names every object (with its skin tone, when it has one) and
    the background fixes, from `meta["world"]`-style ground truth."""
    objects = []
    for obj in world["objects"]:
        asked = {"category": obj["category"], "item": obj["item"]}
        if obj["category"] == "person":
            asked["gender"] = obj["gender"]
        if tone_label(obj) not in (NONE, "yellow"):
            asked["skin_tone"] = tone_label(obj)
        if obj.get("attire"):
            asked["attire"] = obj["attire"]
        objects.append(asked)
    background = world["background"]
    scene = {"count": str(len(objects)), "background_colour": background["colour"],
             "background_kind": background["kind"]}
    if background.get("colour2"):
        scene["background_colour2"] = background["colour2"]
    return Expectation(objects, scene)


def judged_objects(labels: dict[str, str]) -> list[dict[str, str]]:
    """The objects the judge saw (occupied slots, left to right) with their slot attributes."""
    return [{a: labels[f"{slot}_{a}"] for a in SLOT_ATTRIBUTES} for slot in SLOTS
            if labels[f"{slot}_category"] != NONE]


def match_objects(asked: list[dict[str, str]], seen: list[dict[str, str]]) -> list[dict[str, bool]]:
    """Per asked object, which of its attributes the best-matching seen object has (missing objects match
    nothing). Best = most agreeing attributes over all one-to-one assignments (at most 3! of them)."""
    seen = seen + [dict.fromkeys(SLOT_ATTRIBUTES, NONE)] * max(0, len(asked) - len(seen))
    best, best_score = None, -1
    for order in itertools.permutations(range(len(seen)), len(asked)):
        hits = [{a: seen[j].get(a) == v for a, v in obj.items()} for obj, j in zip(asked, order, strict=True)]
        score = sum(sum(h.values()) for h in hits)
        if score > best_score:
            best, best_score = hits, score
    return best or []


def image_checks(expected: Expectation, labels: dict[str, str]) -> dict[str, bool]:
    """Pass/fail per attribute the prompt fixes (object attributes pass when every asked object has it),
    plus "all": the image shows everything the prompt asked for."""
    hits = match_objects(expected.objects, judged_objects(labels))
    checks: dict[str, bool] = {}
    for a in SLOT_ATTRIBUTES:
        asked = [h[a] for h in hits if a in h]
        if asked:
            checks[a] = all(asked)
    for a, v in expected.scene.items():
        checks[a] = labels.get(a) == v
    checks["all"] = all(checks.values())
    return checks


def adherence(expected: Sequence[Expectation], labels: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Share of images passing each check, with how many images each check applied to, and the same shares
    with every image judged against the *next* image's prompt: the chance level of an image that ignores its
    prompt but keeps the model's overall habits."""
    if len(expected) != len(labels):
        raise ValueError(f"{len(expected)} prompts but {len(labels)} judged images")
    own = [image_checks(e, lab) for e, lab in zip(expected, labels, strict=True)]
    others = list(labels[1:]) + list(labels[:1])
    shifted = [image_checks(e, lab) for e, lab in zip(expected, others, strict=True)]
    out: dict[str, Any] = {"images": len(expected), "adherence": {}, "chance": {}, "applies_to": {}}
    names = [a for a in (*SLOT_ATTRIBUTES, *SCENE_CHECKS, "all") if any(a in c for c in own)]
    for a in names:
        values = [c[a] for c in own if a in c]
        chance = [c[a] for c in shifted if a in c]
        out["adherence"][a] = float(np.mean(values))
        out["chance"][a] = float(np.mean(chance)) if chance else float("nan")
        out["applies_to"][a] = len(values)
    out["by_asked"] = by_asked_value(expected, labels)
    return out


def by_asked_value(expected: Sequence[Expectation], labels: Sequence[dict[str, str]],
                   attributes: tuple[str, ...] = ("gender", "skin_tone")) -> dict[str, dict[str, dict[str, Any]]]:
    """Per object attribute, per value a prompt asks for, the share of asked objects drawn with it and how
    many were asked ({"gender": {"neutral": {"adherence": 0.52, "n": 81}, …}}): a prompt's gender-free word
    ("farmer", the neutral emoji) is a different question from "woman farmer", and a held-out set leans to
    rare compositions, so the overall share hides which one a model fails."""
    hits: dict[str, dict[str, list[bool]]] = {a: {} for a in attributes}
    for e, lab in zip(expected, labels, strict=True):
        for obj, hit in zip(e.objects, match_objects(e.objects, judged_objects(lab)), strict=True):
            for a in attributes:
                if a in obj:
                    hits[a].setdefault(obj[a], []).append(hit[a])
    return {a: {v: {"adherence": float(np.mean(h)), "n": len(h)} for v, h in sorted(values.items())}
            for a, values in hits.items() if values}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½) between Gaussians fitted to two (N, D) feature sets (FID's
    formula; small sets give a biased-high value, so compare against a real-vs-real floor at the same N)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 feature vectors on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr (ΣaΣb)^½ = Σ √λ over the eigenvalues of ΣaΣb (real and ≥ 0 for two covariances): unlike sqrtm, this
    # stays finite when a small sample makes the covariances singular.
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real
    root_trace = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace
    return float(max(distance, 0.0))


def distribution(rows: Sequence[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Per attribute, the share of each label (sorted by share)."""
    out: dict[str, dict[str, float]] = {}
    for attribute in rows[0] if rows else ():
        counts = Counter(row[attribute] for row in rows)
        out[attribute] = {label: n / len(rows) for label, n in counts.most_common()}
    return out


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """½ Σ |p − q| over the union of labels."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))
