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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crayonbox.config import write_json_atomic
from crayonbox.data.caption_arms import parse_arm
from crayonbox.errors import CrayonboxError
from crayonbox.lab import stats
from crayonbox.lab.ablation import VALIDATION_FILE, Ablation, load_ablation, roundtrip_validation
from crayonbox.lab.analysis import square_confusion
from crayonbox.lab.attribution import attribute_likelihood, attribute_neighbours
from crayonbox.lab.blame import blame_run, load_tokenizer
from crayonbox.lab.explain_html import write_html
from crayonbox.lab.explanation import AblationRow, Explanation, Matched, Outcome
from crayonbox.lab.families import UNCONDITIONAL, PromptSpec
from crayonbox.lab.instruments.base import NONE, UNCLEAR
from crayonbox.lab.instruments.skin_tone import OUTCOMES, SkinToneConfig, SkinToneMeter
from crayonbox.lab.probe import ProbeConfig, run_probe
from crayonbox.lab.store import RunStore
from crayonbox.lab.verdict import conclusion, find_causes, hypotheses
from crayonbox.outdir import claim_output_folder
from crayonbox.run_record import RunRecord, read_run_record

EXPLANATION_JSON = "explanation.json"
EXPLANATION_HTML = "explanation.html"
NOT_SUBSTANTIVE = {NONE, UNCLEAR, "mixed"}
BLANK = PromptSpec("", "null")


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


# ---- evidence ----------------------------------------------------------------------------------------------

def _probe(record: RunRecord, out: Path, config: ExplainConfig, progress: bool) -> dict[tuple, Counter]:
    """Probe the blank prompt and the unconditional control; skin-meter counts per (mode, scale)."""

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


def _blame(record: RunRecord, tokens: list[str], target: str, confidence: float) -> tuple[Matched, Any, float]:

    result = blame_run(record.captions, record.tokenizer, prompts=[BLANK], progress=False)
    table = result.table
    prompt = table.prompts[0]
    if "skin_tone" not in table.facets:
        raise CrayonboxError(f"{record.captions} has no ground-truth skin tones (world metadata): explain compares "
                             "the blank prompt with the training items' ground truth, so it needs a world run")
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

    moved_by = {arm: int(mask[matched].sum()) for arm, mask in prompt.necessary.items()}
    return (Matched(n, int(kept.sum()), hit / n if n else 0.0, (w.low, w.high) if w else (0.0, 0.0), tokens,
                    by_step, moved_by), result, training_share)


def _ablation_rows(ablation: Ablation | None, target: str, scale: float) -> list[AblationRow]:
    if ablation is None:
        return []

    config = ablation.manifest["pipeline_config"]
    rows = [AblationRow(e.arm, e.step, e.change, parse_arm(e.arm, config).description, e.effect.effect,
                        e.effect.interval, e.effect.arm_share, e.effect.baseline_share, e.effect.significant,
                        e.corrected, [s.seed for s in e.effect.arm_seeds])
            for e in ablation.effects_for("", condition_scale=scale, outcome=target)]
    return sorted(rows, key=lambda r: r.effect)


def _attribution(record: RunRecord, out: Path, blame: Any, scale: float, config: ExplainConfig,
                 progress: bool) -> dict[str, Any]:
    """Both attributions of the blank prompt's images to caption groups of training items: the model's
    likelihood score per item, and the groups of the images' nearest training neighbours (blank-prompt
    images against the `<unconditional ids>` control's images at the same scale)."""

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
    strongest = max(rows, key=lambda r: abs(r.effect)) if rows else None
    prompt = blame.table.prompts[0]
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


# ---- the whole explanation ---------------------------------------------------------------------------------

def explain_run(run: str | Path, out: str | Path, ablation: str | Path | None = None,
                config: ExplainConfig | None = None, progress: bool = True) -> Explanation:
    """Gather the evidence for the blank prompt of `run` and write DIR/explanation.json and .html."""

    config = (config or ExplainConfig()).validate()
    record = read_run_record(run)
    abl = load_ablation(ablation, record.path) if ablation is not None else None  # wrong run: fails here
    out = Path(out)
    claim_output_folder(out, "lab explain", EXPLANATION_JSON)  # new, empty, or an earlier explanation
    validation = roundtrip_validation(out / VALIDATION_FILE, record.world_config_path, record.model,
                                      config.validation_n, config.skin_max_distance,
                                      reuse=Path(ablation) / VALIDATION_FILE if ablation is not None else None)
    counts = _probe(record, out, config, progress)
    headline = config.condition_scales[0]
    target = _target(counts[(BLANK.input_mode, headline)])
    tokenizer = load_tokenizer(record.tokenizer)
    blank = tokenizer.encode("")
    matched, blame, training_share = _blame(record, blank.tokens, target, config.confidence)
    by_scale = [_outcome(counts[(BLANK.input_mode, s)], target, s, validation, training_share, config.confidence)
                for s in config.condition_scales]
    control = [_outcome(counts[(UNCONDITIONAL.input_mode, s)], target, s, validation, training_share,
                        config.confidence) for s in config.condition_scales]
    outcome = by_scale[0]
    rows = _ablation_rows(abl, target, headline)
    kinds = {s["name"]: s["step"] for s in record.pipeline_config["steps"]}
    merged = [p for p in ("", " ", ".") if tokenizer.encode(p).ids == blank.ids]
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
