"""`crayonbox lab explain RUN [--ablation ABL] --out DIR`: why does the blank prompt draw what it draws?

The question splits in two (bias-lab docs, "explain"): which training items the model's behaviour for the
prompt comes from (attribution), and which data-processing decision put them there (cause). The evidence:

1. the outcome: the blank prompt probed `n` times per condition scale, measured by the skin meter, its share
   corrected for the meter's errors as validated on renders through the run's own VQGAN;
2. the training share (ground truth of every training item) and the matched subset: the items whose final
   caption reached the model as the prompt's own ids, with the pipeline steps necessary for that (blame);
3. the counterfactuals (`lab ablate`): each arm's paired effect with intervals that hold training noise;
4. attribution: the model's likelihood score of each training item under the prompt, per caption group.

Each hypothesis of the DALL·E mini case gets a row: supported, not supported, or not tested. The verdict
names the steps whose ablation moved the outcome significantly toward the training share; with no
significant arm the conclusion says "cannot tell" (or "nothing to explain" when the prompt matches the data).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crayonbox.config import write_json_atomic
from crayonbox.errors import CrayonboxError
from crayonbox.lab import stats
from crayonbox.lab.ablation import VALIDATION_FILE, Ablation, load_ablation, roundtrip_validation
from crayonbox.lab.analysis import square_confusion
from crayonbox.lab.families import UNCONDITIONAL, PromptSpec
from crayonbox.lab.instruments.base import NONE, UNCLEAR
from crayonbox.run_record import RunRecord, read_run_record

EXPLANATION_JSON = "explanation.json"
EXPLANATION_HTML = "explanation.html"
NOT_SUBSTANTIVE = {NONE, UNCLEAR, "mixed"}
BLANK = PromptSpec("", "null")
SUPPORTED, NOT_SUPPORTED, NOT_TESTED, CANNOT_TELL = "supported", "not supported", "not tested", "cannot tell"


@dataclass
class ExplainConfig:
    """How much evidence to gather."""

    n: int = 300  # images per prompt and condition scale
    condition_scales: tuple[float, ...] = (1.0, 3.0, 10.0)  # the first is the headline scale
    image_seed: int = 0
    skin_max_distance: float = 12.0  # ΔE; the VQGAN shifts skin colours (see lab ablate)
    validation_n: int = 300
    attribution_limit: int = 0  # training items scored by likelihood (0 = all)
    confidence: float = 0.95
    workers: int = 2

    def validate(self) -> ExplainConfig:
        if self.n < 20 or self.validation_n < 20 or not self.condition_scales or self.attribution_limit < 0:
            raise CrayonboxError("need -n ≥ 20, --validation-n ≥ 20, at least one condition scale and "
                                 "--attribution-limit ≥ 0")
        return self


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


# ---- evidence ----------------------------------------------------------------------------------------------

def _probe(record: RunRecord, out: Path, config: ExplainConfig, progress: bool) -> dict[tuple, Counter]:
    """Probe the blank prompt and the unconditional control; skin-meter counts per (mode, scale)."""
    from crayonbox.lab.instruments.skin_tone import SkinToneConfig, SkinToneMeter
    from crayonbox.lab.probe import ProbeConfig, run_probe
    from crayonbox.lab.store import RunStore

    run_probe(ProbeConfig(model=record.model, prompts=[BLANK, UNCONDITIONAL], n=config.n,
                          condition_scales=config.condition_scales, seed=config.image_seed,
                          workers=config.workers), out / "probe", progress=progress)
    meter = SkinToneMeter(SkinToneConfig(max_distance=config.skin_max_distance))
    counts: dict[tuple, Counter] = {}
    with RunStore.open(out / "probe") as store:
        records = store.images()
        labels = meter.measure([store.load_image(r.path) for r in records])
    for r, label in zip(records, labels, strict=True):
        counts.setdefault((r.input_mode, r.condition_scale), Counter())[label["skin_tone"]] += 1
    return counts


def _target(counts: Counter) -> str:
    """The most common substantive reading: the outcome to explain."""
    substantive = [(c, v) for v, c in counts.items() if v not in NOT_SUBSTANTIVE]
    if not substantive:
        raise CrayonboxError("the meter read no skin tone in any blank-prompt image: nothing to explain with "
                             "this instrument")
    return max(substantive)[1]


def _outcome(counts: Counter, target: str, scale: float, validation: dict[str, Any], training_share: float,
             confidence: float) -> Outcome:
    from crayonbox.lab.instruments.skin_tone import OUTCOMES

    n = sum(counts.values())
    observed = np.array([counts.get(o, 0) for o in OUTCOMES])
    matrix, _ = square_confusion(validation["confusions"]["skin_tone"], OUTCOMES)
    # Classes the world never shows (and so never validated) are kept out of the inversion: their identity
    # rows would claim the meter reads them perfectly.
    index = OUTCOMES.index(target)
    try:
        corrected = stats.correct_for_confusion(observed, matrix, confidence, draws=1000, seed=0)
        share, low, high = (float(corrected.estimate[index]), float(corrected.low[index]),
                            float(corrected.high[index]))
    except CrayonboxError:
        w = stats.wilson_interval(int(observed[index]), n, confidence)
        share, low, high = w.estimate, w.low, w.high
    return Outcome("skin_tone", target, scale, n, float(observed[index] / n) if n else 0.0, share, (low, high),
                   training_share, dict(counts))


def _blame(record: RunRecord, target: str, confidence: float) -> tuple[Matched, Any, float]:
    from crayonbox.lab.blame import blame_run

    result = blame_run(record.captions, record.tokenizer, prompts=[BLANK], progress=False)
    table = result.table
    prompt = table.prompts[0]
    tones = np.array(table.facets["skin_tone"])
    kept = ~table.dropped["baseline"]
    training_share = float(np.mean(tones[kept] == target)) if kept.any() else 0.0
    matched = prompt.matched["baseline"] & kept
    n = int(matched.sum())
    hit = int(np.sum(tones[matched] == target))
    w = stats.wilson_interval(hit, n, confidence) if n else None
    groups = np.array(prompt.groups)
    by_step: dict[str, dict[str, Any]] = {}
    for group in sorted(set(groups[matched])):
        rows = matched & (groups == group)
        g_n, g_hit = int(rows.sum()), int(np.sum(tones[rows] == target))
        gw = stats.wilson_interval(g_hit, g_n, confidence)
        by_step[str(group)] = {"n": g_n, "share": g_hit / g_n, "interval": [gw.low, gw.high]}
    from crayonbox.lab.blame import load_tokenizer

    tokens = load_tokenizer(record.tokenizer).encode("").tokens
    moved_by = {arm: int(mask[matched].sum()) for arm, mask in prompt.necessary.items()}
    return (Matched(n, int(kept.sum()), hit / n if n else 0.0, (w.low, w.high) if w else (0.0, 0.0), tokens,
                    by_step, moved_by), result, training_share)


def _ablation_rows(ablation: Ablation | None, target: str, scale: float) -> list[AblationRow]:
    if ablation is None:
        return []
    from crayonbox.data.caption_arms import parse_arm

    manifest_config = None
    rows = []
    for e in ablation.effects_for("", condition_scale=scale, outcome=target):
        if manifest_config is None:
            manifest_config = read_run_record(ablation.manifest["run"]).pipeline_config
        arm = parse_arm(e.arm, manifest_config)
        rows.append(AblationRow(e.arm, e.step, e.change, arm.description, e.effect.effect, e.effect.interval,
                                e.effect.arm_share, e.effect.baseline_share, e.effect.significant, e.corrected,
                                [s.seed for s in e.effect.arm_seeds]))
    return sorted(rows, key=lambda r: r.effect)


def _attribution(record: RunRecord, out: Path, blame: Any, scale: float, config: ExplainConfig,
                 progress: bool) -> dict[str, Any]:
    """Both attributions of the blank prompt's images to caption groups of training items: the model's
    likelihood score per item, and the groups of the images' nearest training neighbours (blank-prompt
    images against the `<unconditional ids>` control's images at the same scale)."""
    from crayonbox.lab.attribution import attribute_likelihood, attribute_neighbours

    prompt = blame.table.prompts[0]
    groups = dict(zip(blame.table.keys, prompt.groups, strict=True))
    limit = config.attribution_limit or None
    likelihood = attribute_likelihood(record.model, "", record.tokens, groups, limit=limit, progress=progress)
    neighbours = attribute_neighbours(out / "probe", {BLANK.key}, record.world, groups, limit=limit,
                                      condition_scale=scale, progress=progress)
    found = neighbours.to_dict()
    found.pop("target_neighbours", None)  # per-image lists: too long for the page; the probe keeps the images
    return {"likelihood": likelihood.to_dict(), "neighbours": found}


def _agreement(attribution: dict[str, Any], rows: list[AblationRow], blame: Any) -> dict[str, Any]:
    """Does each attribution's top caption group consist of the items the strongest ablation arm moves?
    (Group names come from blame's necessary steps; an arm such as english_only:drop moves items that blame
    files under "blank via raw", so agreement is judged on the items, not on the names.)"""
    strongest = min(rows, key=lambda r: r.effect) if rows else None
    table = blame.table
    prompt = table.prompts[0]
    groups = np.array(prompt.groups)
    out: dict[str, Any] = {"strongest_arm": strongest.arm if strongest else None}
    top = {"likelihood": next(iter(attribution["likelihood"]["groups"]), {}).get("group"),
           "neighbours": next(iter(attribution["neighbours"]["groups"]), {}).get("group")}
    for method, group in top.items():
        agree = None
        if strongest is not None and strongest.significant and group and strongest.arm in prompt.necessary:
            members = groups == group
            agree = bool(members.any() and prompt.necessary[strongest.arm][members].mean() >= 0.5)
        out[method] = {"top_group": group, "agree": agree}
    return out


# ---- hypotheses and verdict --------------------------------------------------------------------------------

FILTER_KINDS = {"english_only", "names", "ban_list"}
LENGTH_KINDS = {"min_length"}


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _points(x: float) -> str:
    return f"{100 * x:+.0f}"


def _arm_status(rows: list[AblationRow], toward: float) -> tuple[str, str]:
    """Status of a hypothesis tested by these arms: supported when one moved the outcome significantly
    toward the training share (sign `toward`), not supported when every interval sits within ±5 points."""
    if not rows:
        return NOT_TESTED, ""
    text = "; ".join(f"{r.arm}: {_points(r.effect)} points [{_points(r.interval[0])}, {_points(r.interval[1])}]"
                     for r in rows)
    if any(r.significant and np.sign(r.effect) == toward for r in rows):
        return SUPPORTED, text
    if all(-0.05 <= r.interval[0] and r.interval[1] <= 0.05 for r in rows):
        return NOT_SUPPORTED, text
    return CANNOT_TELL, text


def hypotheses(outcome: Outcome, by_scale: list[Outcome], matched: Matched, rows: list[AblationRow],
               kinds: dict[str, str], merged: list[str], confidence: float) -> list[Hypothesis]:
    """One row per hypothesis of the DALL·E mini case (see the module docstring)."""
    lo, hi = outcome.interval
    q = outcome.training_share
    over, under = lo > q, hi < q
    toward = -1.0 if over else 1.0 if under else 0.0
    v = f"{outcome.attribute} {outcome.value}"
    out = []
    if over or under:
        out.append(Hypothesis("majority", "(a) the data's majority", NOT_SUPPORTED,
                              f"the prompt draws {v} in {_pct(outcome.share)} [{_pct(lo)}, {_pct(hi)}], "
                              f"the training data holds {_pct(q)}: more than the data explains"
                              if over else f"draws {v} less than the data holds ({_pct(q)})"))
    else:
        status = SUPPORTED if q > 0.5 else NOT_SUPPORTED
        out.append(Hypothesis("majority", "(a) the data's majority", status,
                              f"the prompt draws {v} in {_pct(outcome.share)} [{_pct(lo)}, {_pct(hi)}], as the "
                              f"training data holds it ({_pct(q)})"
                              + ("" if q > 0.5 else f"; {v} is not a majority there")))
    for key, title, wanted in (("short_captions", "(b) short captions", LENGTH_KINDS),
                               ("filtering", "(c) filtering emptied or mangled captions", FILTER_KINDS)):
        tested = [r for r in rows if kinds.get(r.step or "") in wanted]
        status, text = _arm_status(tested, toward) if toward else (NOT_SUPPORTED if tested else NOT_TESTED, "")
        arms = {a: m for a, m in matched.moved_by.items() if kinds.get(a.partition(":")[0]) in wanted and m}
        evidence = ("blame: " + ", ".join(f"{a} moves {_pct(m / matched.n)}" for a, m in arms.items())
                    + f" of the {matched.n} matched items") if arms and matched.n else \
            "blame: no such step moves the matched items"
        out.append(Hypothesis(key, title, status, f"{evidence}; ablation: {text}" if text else
                              f"{evidence}; no ablation arm tests it"))
    raw = matched.by_step.get("blank via raw")
    if raw and raw["n"] >= matched.n / 2 and raw["interval"][0] > q:
        status, text = SUPPORTED, (f"{raw['n']} of the {matched.n} matched items had no caption at all; they are "
                                   f"{_pct(raw['share'])} {v} against {_pct(q)} in training (correlational)")
    elif raw:
        status, text = NOT_SUPPORTED, (f"{raw['n']} of {matched.n} matched items had no caption; they are "
                                       f"{_pct(raw['share'])} {v} (training {_pct(q)})")
    else:
        status, text = NOT_SUPPORTED, "no matched item had an empty raw caption"
    out.append(Hypothesis("unlabeled", "(d) unlabeled images", status, text))
    normaliser = [r for r in rows if kinds.get(r.step or "") == "normalize"]
    status, text = _arm_status(normaliser, toward) if toward else (NOT_SUPPORTED if normaliser else NOT_TESTED, "")
    fact = f"{', '.join(repr(p) for p in merged)} reach the model as the same ids {' '.join(matched.tokens)}"
    out.append(Hypothesis("normaliser", "(e) the normaliser merges blank inputs", status,
                          f"{fact}; ablation: {text}" if text else f"{fact}; no normalize arm was retrained"))
    out.append(_guidance(by_scale, v))
    return out


def _guidance(by_scale: list[Outcome], v: str) -> Hypothesis:
    title = "(f) guidance amplifies \"no caption\""
    if len(by_scale) < 2:
        return Hypothesis("guidance", title, NOT_TESTED, "probed at one condition scale only")
    first, last = by_scale[0], by_scale[-1]
    text = (f"{v}: {_pct(first.share)} [{_pct(first.interval[0])}, {_pct(first.interval[1])}] at scale "
            f"{first.condition_scale:g}, {_pct(last.share)} [{_pct(last.interval[0])}, {_pct(last.interval[1])}] "
            f"at scale {last.condition_scale:g}")
    if last.interval[0] > first.interval[1]:
        return Hypothesis("guidance", title, SUPPORTED, text)
    if last.interval[1] < first.interval[0]:
        return Hypothesis("guidance", title, NOT_SUPPORTED, text + " (guidance reduces it)")
    return Hypothesis("guidance", title, NOT_SUPPORTED if abs(last.share - first.share) < 0.05 else CANNOT_TELL,
                      text)


def conclusion(outcome: Outcome, matched: Matched, rows: list[AblationRow], causes: list[str],
               has_ablation: bool) -> str:
    """The page's opening paragraph, written from the numbers; "cannot tell" wherever intervals do."""
    lo, hi = outcome.interval
    q = outcome.training_share
    v = f"{outcome.attribute} {outcome.value}"
    text = (f"The blank prompt draws {v} in {_pct(outcome.share)} [{_pct(lo)}, {_pct(hi)}] of images at condition "
            f"scale {outcome.condition_scale:g} (training: {_pct(q)}). It reaches the model as "
            f"`{' '.join(matched.tokens)}`, the caption of {matched.n:,} training items, {_pct(matched.share)} {v}.")
    if lo <= q <= hi:
        return text + (" The blank prompt draws what the training data holds: no pipeline step is needed to "
                       "explain it. Verdict: nothing to explain beyond the data.")
    for r in (r for r in rows if r.step in causes and r.significant):
        text += (f" With {r.description}, the blank prompt's {v} share moves from {_pct(r.baseline_share)} to "
                 f"{_pct(r.arm_share)} as the meter reads it ({_points(r.effect)} points [{_points(r.interval[0])}, "
                 f"{_points(r.interval[1])}], retrained with {len(r.seeds)} seeds).")
    if causes:
        return text + f" Verdict: {', '.join(f'the {c} step' for c in causes)} caused it."
    if not has_ablation:
        return text + (" Verdict: cannot tell without counterfactual retraining (run `crayonbox lab ablate`).")
    return text + " Verdict: cannot tell: no ablation arm's interval excludes zero."


def find_causes(outcome: Outcome, rows: list[AblationRow]) -> list[str]:
    """Steps whose arm moved the outcome significantly toward the training share."""
    lo, hi = outcome.interval
    toward = -1.0 if lo > outcome.training_share else 1.0 if hi < outcome.training_share else 0.0
    if not toward:
        return []
    return list(dict.fromkeys(r.step for r in rows if r.step and r.significant and np.sign(r.effect) == toward))


# ---- the whole explanation ---------------------------------------------------------------------------------

def check_out(out: Path) -> None:
    """`out` must be new, empty, or an earlier explanation (its probe is resumed)."""
    if out.exists() and not out.is_dir():
        raise CrayonboxError(f"--out {out} is a file; give a new folder")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPLANATION_JSON).exists() and \
            not (out / "probe" / "lab.sqlite").exists():
        raise CrayonboxError(f"--out {out} holds other files; give a new or empty folder")


def explain_run(run: str | Path, out: str | Path, ablation: str | Path | None = None,
                config: ExplainConfig | None = None, progress: bool = True) -> Explanation:
    """Gather the evidence for the blank prompt of `run` and write DIR/explanation.json and .html."""
    from crayonbox.lab.explain_html import write_html

    config = (config or ExplainConfig()).validate()
    record = read_run_record(run)
    abl = load_ablation(ablation, record.path) if ablation is not None else None  # wrong run: fails here
    out = Path(out)
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    validation_file = Path(ablation) / VALIDATION_FILE if ablation is not None else out / VALIDATION_FILE
    if ablation is None or not validation_file.exists():
        validation_file = out / VALIDATION_FILE
    validation = roundtrip_validation(validation_file, record.world_config_path, record.model,
                                      config.validation_n, config.skin_max_distance)
    counts = _probe(record, out, config, progress)
    headline = config.condition_scales[0]
    target = _target(counts[(BLANK.input_mode, headline)])
    matched, blame, training_share = _blame(record, target, config.confidence)
    by_scale = [_outcome(counts[(BLANK.input_mode, s)], target, s, validation, training_share, config.confidence)
                for s in config.condition_scales]
    control = [_outcome(counts[(UNCONDITIONAL.input_mode, s)], target, s, validation, training_share,
                        config.confidence) for s in config.condition_scales]
    outcome = by_scale[0]
    rows = _ablation_rows(abl, target, headline)
    kinds = {s["name"]: s["step"] for s in record.pipeline_config["steps"]}
    from crayonbox.lab.blame import load_tokenizer

    tokenizer = load_tokenizer(record.tokenizer)
    merged = [p for p in ("", " ", ".") if tokenizer.encode(p).ids == tokenizer.encode("").ids]
    causes = find_causes(outcome, rows)
    attribution = _attribution(record, out, blame, headline, config, progress)
    attribution["agreement"] = _agreement(attribution, rows, blame)
    explanation = Explanation(
        run=str(record.path.resolve()), prompt="", outcome=outcome, outcomes_by_scale=by_scale, control=control,
        matched=matched, ablations=rows, attribution=attribution,
        hypotheses=hypotheses(outcome, by_scale, matched, rows, kinds, merged, config.confidence),
        causes=causes, conclusion=conclusion(outcome, matched, rows, causes, abl is not None),
        instrument={"name": "skin_tone", "max_distance": config.skin_max_distance,
                    "validation": validation["source"], "confusion": validation["confusions"]["skin_tone"]})
    write_json_atomic(out / EXPLANATION_JSON, explanation.to_dict())
    write_html(explanation, out / EXPLANATION_HTML, out / "probe")
    return explanation
