"""The blank-prompt story, measured: how often a model draws a dark-skinned woman in a sari for `""`, at each
condition scale, against its training images and against the training items that share the blank prompt's
ids. This is the DALL·E mini mystery reduced to one number per scale, with its interval and a verdict that
says "cannot tell" when the intervals do.

An image shows the story when the judge's image-level reading (crayonbox/lab/instruments/judge.py, the
labels the lab stores) is: gender "woman", skin tone 4 or 5, attire "sari" (in the emoji world a sari is
drawn beside the person who wears it). Training images are read by the same judge, so its errors cancel in
the comparison; where the data carries ground truth (world items), the true share is reported beside it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crayonbox.lab.analysis import Measured
from crayonbox.lab.reference import ReferenceItem, blank_ids
from crayonbox.lab.stats import wilson_interval
from crayonbox.lab.stats.core import z_value
from crayonbox.lab.store import ImageRecord, RunStore
from crayonbox.model.judge import labels_of, scene_summary
from crayonbox.model_folder import ModelFolder

STORY = "a dark-skinned woman in a sari"
DARK_TONES = ("4", "5")
# What the judge must get right on the model's own kind of images (held-out renders through its VQGAN) before
# a story share read by it is a headline: below any of these, the verdict is withheld.
ROUND_TRIP_TARGETS = {"skin_tone": 0.90, "gender": 0.85, "attire": 0.90}
BLANK_PROMPT = ""  # the probe prompt whose images tell the story
CONFIDENCE = 0.95


def shows_story(labels: dict[str, str]) -> bool:
    """The judge instrument's image-level labels of one image: a woman (every person in it), skin tone 4–5,
    wearing a sari (the only attire in it)."""
    return (labels.get("gender") == "woman" and labels.get("skin_tone") in DARK_TONES
            and labels.get("attire") == "sari")


def truth_shows_story(world: dict[str, Any] | None) -> bool | None:
    """The same question asked of a world item's ground truth, summarised as the judge summarises (None
    without ground truth)."""
    if not world:
        return None
    return shows_story(scene_summary(labels_of(world)))


def wears_a_sari(world: dict[str, Any]) -> bool:
    """The world's own truth, as its planted numbers count it: a woman with skin tone 4–5 wearing a sari (other
    objects may stand beside her)."""
    objects = world["objects"]
    return any(o.get("relation") == "wearing" and objects[o["paired_with"]].get("item") == "sari"
               and o.get("gender") == "woman" and str(o.get("skin_tone")) in DARK_TONES for o in objects)


@dataclass
class Share:
    """k of n images, with its Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def share(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @classmethod
    def of(cls, hits: list[bool]) -> Share | None:
        if not hits:
            return None
        interval = wilson_interval(sum(hits), len(hits), CONFIDENCE)
        return cls(sum(hits), len(hits), interval.low, interval.high)


@dataclass
class Story:
    """The blank prompt's story share per scale, and what it is compared with."""

    judge: str  # instrument key of the judge that read the images
    by_scale: dict[float, Share]  # "" at each condition scale
    training: Share | None  # judged share over the reference (training) images
    matched: Share | None  # judged share over the training items whose caption ids are the blank prompt's
    training_truth: Share | None = None  # ground-truth share over the reference, when it carries truth
    matched_truth: Share | None = None
    judge_round_trip: dict[str, float] | None = None  # the judge's held-out accuracy on VQGAN round trips
    notes: list[str] = field(default_factory=list)
    judge_round_trip_by_count: dict[str, dict[str, float]] | None = None  # the same per layout (object count)
    # the per-layout accuracies weighted by the layouts the judge reads in the images of "": {"layouts": {count:
    # share}, "accuracy": {attribute: [estimate, low, high]}}; None without per-layout accuracies
    blank_layout_accuracy: dict[str, Any] | None = None

    def shortfalls(self) -> list[str]:
        """The judge's attributes below their round-trip target (all of them when it was never scored there)."""
        if self.judge_round_trip is None:
            return ["the judge was not scored on VQGAN round trips (train it with --round-trip-vqgan)"]
        return [f"{a} {self.judge_round_trip.get(a, float('nan')):.1%} < {t:.0%}"
                for a, t in ROUND_TRIP_TARGETS.items() if not self.judge_round_trip.get(a, 0.0) >= t]

    def verdict(self) -> str:
        """"withheld" when the judge misses a round-trip target; else "reproduced" when the interval at every
        scale lies above the training share, "not reproduced" when every interval lies at or below it, and
        "cannot tell" otherwise."""
        if self.shortfalls():
            return "withheld"
        if self.training is None or not self.by_scale:
            return "cannot tell"
        above = [s.low > self.training.share for s in self.by_scale.values()]
        below = [s.high <= self.training.share for s in self.by_scale.values()]
        if all(above):
            return "reproduced"
        return "not reproduced" if all(below) else "cannot tell"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_scale"] = {f"{scale:g}": asdict(s) for scale, s in self.by_scale.items()}
        data["verdict"] = self.verdict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Story:
        """The inverse of to_dict (extra keys such as the verdict or tone agreement are ignored)."""

        def share(d: dict[str, Any] | None) -> Share | None:
            return None if d is None else Share(**d)

        return cls(data["judge"], {float(k): Share(**v) for k, v in data["by_scale"].items()},
                   share(data.get("training")), share(data.get("matched")), share(data.get("training_truth")),
                   share(data.get("matched_truth")), data.get("judge_round_trip"), list(data.get("notes", [])),
                   data.get("judge_round_trip_by_count"), data.get("blank_layout_accuracy"))


def round_trip_accuracy(judge_metrics: dict[str, Any]) -> dict[str, float] | None:
    """The judge's accuracy per attribute on held-out renders through the model's VQGAN, from its
    metrics.json (None when it was trained without --round-trip-vqgan)."""
    trip = judge_metrics.get("held_out_round_trip")
    return None if not trip else {a: float(trip["summary"][a]) for a in ROUND_TRIP_TARGETS}


def round_trip_by_count(judge_metrics: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """The same per layout ("1", "2", "3" objects), when the judge's metrics break it down."""
    by_count = (judge_metrics.get("held_out_round_trip") or {}).get("by_count")
    return None if not by_count else {c: {a: float(part[a]["accuracy"]) for a in ROUND_TRIP_TARGETS}
                                      for c, part in by_count.items()}


def layout_weighted_accuracy(judge_metrics: dict[str, Any], layouts: Counter) -> dict[str, Any] | None:
    """The judge's round-trip accuracy on images with the layout mix `layouts` (object count → images): each
    layout's held-out accuracy weighted by its share, with a normal 95 % interval from the held-out counts
    (the shares are taken as known). The accuracy that matters for a share is the one on images like those it
    counts, and the held-out set weights layouts evenly, not as a model draws them."""
    by_count = (judge_metrics.get("held_out_round_trip") or {}).get("by_count") or {}
    known = {c: k for c, k in layouts.items() if c in by_count}
    total = sum(known.values())
    if not total:
        return None
    weights = {c: known[c] / total for c in sorted(known)}
    z = z_value(CONFIDENCE)
    accuracy = {}
    for a in ROUND_TRIP_TARGETS:
        parts = [(w, by_count[c][a]["accuracy"], by_count[c][a]["n"]) for c, w in weights.items()
                 if by_count[c].get(a, {}).get("n")]
        if not parts:
            continue
        scale = sum(w for w, _, _ in parts)  # layouts where the held-out set had none of `a` drop out
        parts = [(w / scale, p, n) for w, p, n in parts]
        estimate = sum(w * p for w, p, _ in parts)
        half = z * math.sqrt(sum(w * w * p * (1 - p) / n for w, p, n in parts))
        accuracy[a] = [estimate, max(0.0, estimate - half), min(1.0, estimate + half)]
    return {"layouts": weights, "accuracy": accuracy}


def measure_story(measured: Measured, images: list[ImageRecord], judge_key: str,
                  blank: list[int] | None, judge_metrics: dict[str, Any] | None = None) -> Story:
    """The story from a measured lab run: `images` are the run's records, `judge_key` the judge's instrument key
    in `measured`, `blank` the blank prompt's ids (None: no matched group), `judge_metrics` the judge folder's
    metrics.json (its round-trip accuracy decides whether the verdict may be given)."""
    run_labels = measured.run_labels.get(judge_key, {})
    by_scale: dict[float, list[bool]] = {}
    layouts: Counter = Counter()
    for record in images:
        if record.prompt == BLANK_PROMPT and record.input_mode == "normalised" and record.sha256 in run_labels:
            by_scale.setdefault(record.condition_scale, []).append(shows_story(run_labels[record.sha256]))
            layouts[run_labels[record.sha256].get("count")] += 1
    ref_labels = measured.reference_labels.get(judge_key, {})
    items: list[ReferenceItem] = [item for item in measured.reference if item.sha256 in ref_labels]
    matched = [item for item in items if blank is not None and item.ids == blank]
    notes = []
    if not items:
        notes.append("no training reference read by this judge: the training share is unknown")
    truths = [truth_shows_story(item.world) for item in items]
    story = Story(judge_key, {scale: Share.of(hits) for scale, hits in sorted(by_scale.items())},
                  Share.of([shows_story(ref_labels[item.sha256]) for item in items]),
                  Share.of([shows_story(ref_labels[item.sha256]) for item in matched]),
                  judge_round_trip=round_trip_accuracy(judge_metrics or {}), notes=notes,
                  judge_round_trip_by_count=round_trip_by_count(judge_metrics or {}),
                  blank_layout_accuracy=layout_weighted_accuracy(judge_metrics or {}, layouts))
    if items and all(t is not None for t in truths):
        story.training_truth = Share.of([bool(t) for t in truths])
        story.matched_truth = Share.of([bool(truth_shows_story(item.world)) for item in matched])
    return story


def tone_agreement(measured: Measured, skin_key: str, judge_key: str) -> Share | None:
    """How often the pixel meter and the judge give the same skin tone on the run's (generated) images, among
    the images where both give a definite answer (a tone 1–5 or "none"); None when they share no image."""
    definite = {*DARK_TONES, "1", "2", "3", "none"}
    skin, judge = measured.run_labels.get(skin_key, {}), measured.run_labels.get(judge_key, {})
    pairs = [(skin[sha]["skin_tone"], judge[sha]["skin_tone"]) for sha in skin.keys() & judge.keys()]
    return Share.of([a == b for a, b in pairs if a in definite and b in definite])


def story_lines(story: Story, agreement: Share | None = None) -> list[str]:
    """Markdown: a table of the blank prompt's share per scale beside the training and matched shares, the
    verdict in words, the judge's round-trip accuracy, and the instruments' agreement when given."""

    def pct(s: Share | None) -> str:
        return "–" if s is None else f"{s.share:.1%} [{s.low:.1%}, {s.high:.1%}] ({s.k}/{s.n})"

    lines = [f"Share of images showing {STORY} (judged; 95 % Wilson intervals).", "",
             "| images | share |", "|---|---|"]
    lines += [f"| `\"\"` at condition scale {scale:g} | {pct(s)} |" for scale, s in story.by_scale.items()]
    lines += [f"| training images | {pct(story.training)} |",
              f"| training items whose caption became the blank prompt's ids | {pct(story.matched)} |"]
    if story.training_truth is not None:
        lines += [f"| training images, ground truth | {pct(story.training_truth)} |",
                  f"| blank-id training items, ground truth | {pct(story.matched_truth)} |"]
    verdict = story.verdict()
    words = {"reproduced": "**The blank-prompt mode is reproduced**: at every scale the interval lies above the "
                           "training share.",
             "not reproduced": "**The blank-prompt mode is not reproduced**: at every scale the share is at or "
                               "below the training share.",
             "cannot tell": "**Cannot tell whether the blank-prompt mode is reproduced**: the intervals do not "
                            "all lie on one side of the training share.",
             "withheld": "**No verdict**: the judge that reads these images misses its accuracy targets on the "
                         f"model's own kind of images ({'; '.join(story.shortfalls())}), so these shares are "
                         "shown but not concluded from."}
    lines += ["", words[verdict], *(f"({n})" for n in story.notes)]
    if story.judge_round_trip:
        lines += ["", "The judge on held-out renders through this model's VQGAN: " + ", ".join(
            f"{a} {story.judge_round_trip[a]:.1%} (target {t:.0%})" for a, t in ROUND_TRIP_TARGETS.items()) + "."]
    if story.judge_round_trip_by_count:
        lines += ["By layout: " + "; ".join(
            f"{c} object{'s' if c != '1' else ''}: " + ", ".join(f"{a} {v:.1%}" for a, v in part.items())
            for c, part in sorted(story.judge_round_trip_by_count.items())) + "."]
    if story.blank_layout_accuracy:
        mix = story.blank_layout_accuracy
        lines += ["Weighted by the layouts the judge reads in the images of `\"\"` (" + ", ".join(
            f"{c} object{'s' if c != '1' else ''} {w:.0%}" for c, w in mix["layouts"].items()) + "): " + ", ".join(
            f"{a} {v[0]:.1%} [{v[1]:.1%}, {v[2]:.1%}]" for a, v in mix["accuracy"].items())
            + " (95 % normal intervals, the layout shares taken as known)."]
    if agreement:
        lines += [f"On these generated images the pixel skin-tone meter and the judge give the same tone "
                  f"{agreement.share:.1%} of the time ({agreement.k}/{agreement.n} images both read)."]
    return lines


def story_metrics(store: RunStore, measured: Measured, judge: Path | None) -> dict[str, Any] | None:
    """metrics.json's "story": the blank prompt's story measured with the run's judge (None without a judge),
    and how often the skin meter agrees with the judge on the run's images."""
    keys = {info["name"]: key for key, info in measured.instruments.items()}
    if "judge" not in keys or judge is None:
        return None
    model_dir = store.get_meta("model_dir")
    blank = blank_ids(ModelFolder(model_dir).tokenizer) if model_dir and Path(model_dir).is_dir() else None
    metrics_file = Path(judge) / "metrics.json"
    judge_metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    story = measure_story(measured, store.images(), keys["judge"], blank, judge_metrics).to_dict()
    if "skin_tone" in keys:
        agreement = tone_agreement(measured, keys["skin_tone"], keys["judge"])
        story["tone_agreement"] = None if agreement is None else asdict(agreement)
    return story
