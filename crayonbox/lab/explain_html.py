"""explanation.html: the conclusion first, then one row per hypothesis, then the evidence behind each number.
Self-contained and escaped like the lab report (crayonbox.lab.report_html): no JavaScript, no external file."""

from __future__ import annotations

from pathlib import Path

from crayonbox.lab.explanation import Explanation, Outcome
from crayonbox.lab.report_html import esc, img, page, table
from crayonbox.lab.store import RunStore


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _interval(lo: float, hi: float) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _outcome_rows(rows: list[Outcome], label: str) -> list[list[str]]:
    return [[label, f"{o.condition_scale:g}", o.n, _pct(o.read_share), f"{_pct(o.share)} {_interval(*o.interval)}",
             _pct(o.training_share)] for o in rows]


def _samples(probe: Path, limit: int = 32) -> str:
    """A strip of blank-prompt images (headline scale), upscaled without smoothing."""

    with RunStore.open(probe) as store:
        records = [r for r in store.images() if r.prompt == "" and r.input_mode != "unconditional-ids"]
        scale = min((r.condition_scale for r in records), default=None)
        chosen = sorted((r for r in records if r.condition_scale == scale), key=lambda r: r.seed)[:limit]
        images = [store.load_image(r.path) for r in chosen]
    return "".join(img(image, f"blank prompt, seed {r.seed}", width=64) for image, r in zip(images, chosen,
                                                                                             strict=True))


def _agreement_note(agreement: dict, method: str) -> str:
    found = agreement.get(method) or {}
    if found.get("agree") is None:
        return " No significant ablation arm to check it against."
    verdict = "agrees" if found["agree"] else "disagrees"
    return (f" Its top group, <code>{esc(found['top_group'])}</code>, {verdict} with the arm that moved the output "
            f"most, <code>{esc(agreement['strongest_arm'])}</code> (agrees: most of the group's items are ones "
            "that arm moves).")


def _attribution(e: Explanation) -> str:
    likelihood = e.attribution.get("likelihood", {}).get("groups", [])
    neighbours = e.attribution.get("neighbours", {}).get("groups", [])
    agreement = e.attribution.get("agreement", {})
    html = ("<h2>Attribution to training items</h2><p class=\"note\">Likelihood: per training item, log p(image "
            "tokens | blank prompt) − log p(image tokens | unconditional ids), by teacher forcing; mean per caption "
            f"group with a bootstrap interval.{_agreement_note(agreement, 'likelihood')}</p>")
    html += table(["rank", "group", "items", "mean score (nats)", "95 % interval"],
                  [[g["rank"], g["group"], g["n"], f"{g['mean']['estimate']:.2f}",
                    f"[{g['mean']['low']:.2f}, {g['mean']['high']:.2f}]"] for g in likelihood])
    html += ("<p class=\"note\">Nearest neighbours: the caption groups of the 10 nearest training images of each "
             "blank-prompt image (colour-layout descriptor), against those of the &lt;unconditional ids&gt; "
             f"images; enrichment = ratio of the two shares, bootstrap over images."
             f"{_agreement_note(agreement, 'neighbours')}</p>")
    html += table(["group", "share among blank-prompt neighbours", "among control neighbours", "training share",
                   "enrichment", "95 % interval"],
                  [[g["group"], _pct(g["target_share"]), _pct(g["other_share"]), _pct(g["train_share"]),
                    f"{g['enrichment']['estimate']:.2f}",
                    f"[{g['enrichment']['low']:.2f}, {g['enrichment']['high']:.2f}]"] for g in neighbours])
    return html


def write_html(explanation: Explanation, path: Path, probe: Path) -> Path:
    """Render the explanation (see the module docstring); returns `path`."""
    e = explanation
    o = e.outcome
    sections = [f"<p><b>{esc(e.conclusion)}</b></p>",
                f"<p class=\"note\">Run: <code>{esc(e.run)}</code>. Causes: "
                f"{esc(', '.join(e.causes) or 'none found (see the verdict)')}.</p>"]
    sections.append("<h2>Hypotheses</h2>" + table(
        ["hypothesis", "status", "evidence"], [[h.title, h.status, h.evidence] for h in e.hypotheses],
        row_classes=["flag" if h.status == "supported" else "" for h in e.hypotheses]))
    sections.append(
        f"<h2>What the blank prompt draws</h2><p class=\"note\">{esc(o.attribute)} = {esc(o.value)}, read by the "
        f"skin meter (ΔE ≤ {esc(e.instrument.get('max_distance'))}) and corrected for its errors as validated on "
        f"{esc(e.instrument.get('validation'))}. The training share is the ground truth of every training "
        "item.</p>" + table(["prompt", "condition scale", "images", "read share", "corrected share (95 %)",
                             "training share"],
                            _outcome_rows(e.outcomes_by_scale, '""') + _outcome_rows(e.control,
                                                                                     "<unconditional ids>"))
        + f"<div class=\"grid\">{_samples(probe)}</div>")
    m = e.matched
    sections.append(
        f"<h2>The matched training items</h2><p>{m.n:,} of {m.training_items:,} training items reached the model "
        f"as <code>{esc(' '.join(m.tokens))}</code>, the blank prompt's ids; {_pct(m.share)} "
        f"{_interval(*m.interval)} of them are {esc(o.attribute)} {esc(o.value)} (ground truth). By the pipeline "
        "step each needed to end there (switched off, the caption no longer matches):</p>"
        + table(["group", "items", f"share {o.value}", "95 % interval"],
                [[g, s["n"], _pct(s["share"]), _interval(*s["interval"])] for g, s in m.by_step.items()]))
    if e.ablations:
        sections.append("<h2>Counterfactual retraining</h2><p class=\"note\">Each arm changes one pipeline decision, "
                        "retrains the transformer with the same seeds, and probes with the same image seeds. "
                        "Intervals hold both image sampling and seed-to-seed training noise.</p>" + table(
                            ["arm", "change", "baseline share", "arm share", "effect (points)", "95 % interval",
                             "significant"],
                            [[a.arm, a.description, _pct(a.baseline_share), _pct(a.arm_share),
                              f"{100 * a.effect:+.1f}", _interval(*a.interval), a.significant]
                             for a in e.ablations]))
    else:
        sections.append("<h2>Counterfactual retraining</h2><p class=\"warn\">No ablation given: causes cannot be "
                        "named. Run <code>crayonbox lab ablate RUN --out ABL</code>, then explain with "
                        "<code>--ablation ABL</code>.</p>")
    sections.append(_attribution(e))
    path.write_text(page("Why the blank prompt draws what it draws", sections), encoding="utf-8")
    return path
