"""The world judge as a lab instrument: image-level labels (who is in the picture, their gender, skin tone and
attire, the background), with "none" and "unclear" as outcomes.

The judge itself (crayonbox/model/judge.py) reads every slot of the world's layout; the lab mostly asks
image-level questions ("is there a person, and what skin tone?"), so this wrapper summarises the slots with
`scene_summary`. An answer below `unclear_below` confidence is "unclear" rather than a guess, and the
validation confusion matrix (`validate_world` on held-out renders) shows how often that happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crayonbox.lab.instruments.base import NONE, UNCLEAR, ImageLike, Instrument
from crayonbox.model.judge import SLOTS, Judge, labels_of, scene_summary

MIXED = "mixed"
SUMMARY_ATTRIBUTES = ("count", "background", "people", "gender", "skin_tone", "attire")


class JudgeInstrument(Instrument):
    """Image-level summaries of the judge's slot labels; `per_slot=True` adds the raw slot attributes."""

    name = "judge"

    def __init__(self, judge: Judge, unclear_below: float = 0.5, per_slot: bool = False):
        self.judge, self.unclear_below, self.per_slot = judge, unclear_below, per_slot

    @classmethod
    def load(cls, folder: str | Path, unclear_below: float = 0.5, per_slot: bool = False) -> JudgeInstrument:
        """The instrument of a judge folder (`crayonbox train judge` output)."""
        return cls(Judge.load(folder), unclear_below, per_slot)

    def outcomes(self) -> dict[str, tuple[str, ...]]:
        vocab = self.judge.config.vocab
        out = {"count": (*vocab["count"], UNCLEAR),
               "background": (*vocab["background_colour"], UNCLEAR),
               "people": (*[str(n) for n in range(len(SLOTS) + 1)], UNCLEAR),
               "gender": (*vocab["gender"], MIXED, UNCLEAR),
               "skin_tone": (*vocab["skin_tone"], MIXED, UNCLEAR),
               "attire": (*vocab["attire"], MIXED, UNCLEAR)}
        if self.per_slot:
            out |= {a: (*self.judge.labels(a), UNCLEAR) for a in self.judge.attributes}
        return out

    def _summarise(self, labels: dict[str, str]) -> dict[str, str]:
        summary = scene_summary(labels)
        if any(labels[f"{s}_category"] == UNCLEAR for s in SLOTS):
            summary["people"] = UNCLEAR  # an unreadable slot might hold a person
        row = {a: summary[a] for a in SUMMARY_ATTRIBUTES}
        if self.per_slot:
            row |= labels
        return row

    def measure(self, images: Sequence[ImageLike]) -> list[dict[str, str]]:
        return [self._summarise(labels) for labels in self.judge.predict(images, self.unclear_below)]

    def truth(self, world: dict[str, Any]) -> dict[str, str]:
        return self._summarise(labels_of(world))

    def features(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Judge features (N, D) for label-free clustering or Fréchet distances."""
        return self.judge.features(images)


__all__ = ["JudgeInstrument", "MIXED", "NONE", "SUMMARY_ATTRIBUTES", "UNCLEAR"]
