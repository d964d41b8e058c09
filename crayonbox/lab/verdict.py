"""The verdict of `crayonbox lab explain`, written from the numbers: one status per hypothesis of the DALL·E mini
blank-prompt case, the causes (steps whose ablation moved the outcome significantly toward the training share)
and the opening paragraph. Where intervals overlap it says "cannot tell", never a guess."""

from __future__ import annotations

import numpy as np

from crayonbox.lab.explanation import (
    CANNOT_TELL,
    NOT_SUPPORTED,
    NOT_TESTED,
    SUPPORTED,
    AblationRow,
    Hypothesis,
    Matched,
    Outcome,
)

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
