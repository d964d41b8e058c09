"""What `crayonbox lab explain` found, as typed records: the outcome, the matched training items, the ablation
rows, the hypotheses and the verdict. `Explanation.to_dict()` is explanation.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SUPPORTED, NOT_SUPPORTED, NOT_TESTED, CANNOT_TELL = "supported", "not supported", "not tested", "cannot tell"


@dataclass
class Outcome:
    """What the prompt draws at one condition scale, for the target attribute value."""

    attribute: str
    value: str
    condition_scale: float
    n: int
    read_share: float  # as the meter read it
    share: float  # corrected for the meter's validated errors
    interval: tuple[float, float]
    training_share: float  # ground truth over every training item
    read_counts: dict[str, int]


@dataclass
class Matched:
    """The training items whose caption reached the model as the prompt's ids."""

    n: int
    training_items: int
    share: float  # of the target value, ground truth
    interval: tuple[float, float]
    tokens: list[str]
    by_step: dict[str, dict[str, Any]]  # group ("blank via english_only", …) → n, share, interval
    moved_by: dict[str, int] = field(default_factory=dict)  # arm → matched items it no longer matches (blame)


@dataclass
class AblationRow:
    arm: str
    step: str | None
    change: str
    description: str
    effect: float
    interval: tuple[float, float]
    arm_share: float
    baseline_share: float
    significant: bool
    corrected: tuple[float, float, float] | None  # the effect corrected for the meter's errors, with interval
    seeds: list[int] = field(default_factory=list)


@dataclass
class Hypothesis:
    key: str  # majority, short_captions, filtering, unlabeled, normaliser, guidance
    title: str
    status: str  # supported | not supported | not tested | cannot tell
    evidence: str


@dataclass
class Explanation:
    run: str
    prompt: str
    outcome: Outcome
    outcomes_by_scale: list[Outcome]
    control: list[Outcome]  # <unconditional ids>, per scale
    matched: Matched
    ablations: list[AblationRow]
    attribution: dict[str, Any]
    hypotheses: list[Hypothesis]
    causes: list[str]
    conclusion: str
    instrument: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "run": self.run, "prompt": self.prompt, "conclusion": self.conclusion,
            "outcome": {"attribute": o.attribute, "value": o.value, "share": o.share, "interval": list(o.interval),
                        "read_share": o.read_share, "training_share": o.training_share, "n": o.n,
                        "condition_scale": o.condition_scale},
            "outcomes_by_scale": [asdict(x) for x in self.outcomes_by_scale],
            "control": [asdict(x) for x in self.control],
            "matched": asdict(self.matched),
            "ablations": [asdict(a) for a in self.ablations],
            "attribution": self.attribution,
            "verdict": {"causes": self.causes, "hypotheses": {h.key: h.status for h in self.hypotheses}},
            "hypotheses": [asdict(h) for h in self.hypotheses],
            "instrument": self.instrument,
        }
