"""The explanation's verdict and hypotheses, from numbers with a known answer (no model needed): a cause is
named only when an ablation's interval excludes zero in the direction of the training share, and the
conclusion falls back to "cannot tell" or "nothing to explain" where the intervals do."""

from crayonbox.lab.explanation import CANNOT_TELL, NOT_SUPPORTED, NOT_TESTED, SUPPORTED, AblationRow, Matched, Outcome
from crayonbox.lab.verdict import conclusion, find_causes, hypotheses

KINDS = {"langid": "langid", "english_only": "english_only", "normalize": "normalize", "min_length": "min_length",
         "dropout": "dropout", "names": "names"}
TOKENS = ["<s>", "Ġ", "</s>"]


def outcome(share, lo, hi, training=0.5, scale=1.0):
    return Outcome("skin_tone", "5", scale, 300, share, share, (lo, hi), training, {"5": int(300 * share)})


def matched(groups, moved_by=None):
    n = sum(g["n"] for g in groups.values())
    share = sum(g["n"] * g["share"] for g in groups.values()) / n
    return Matched(n, 6000, share, (share - 0.02, share + 0.02), TOKENS, groups, moved_by or {})


def row(arm, effect, lo, hi, base=0.85):
    step, _, change = arm.partition(":")
    return AblationRow(arm, step, change, arm, effect, (lo, hi), base + effect, base, lo > 0 or hi < 0, None)


LANGUAGE = matched({"blank via english_only": {"n": 2673, "share": 0.88, "interval": [0.87, 0.89]}},
                   {"english_only:off": 2673, "english_only:drop": 2673, "min_length:off": 0})


def test_a_significant_arm_toward_the_training_share_is_the_cause():
    o = outcome(0.85, 0.81, 0.89)
    rows = [row("english_only:drop", -0.64, -0.69, -0.57), row("dropout:off", 0.01, -0.04, 0.05)]
    causes = find_causes(o, rows)
    assert causes == ["english_only"]
    text = conclusion(o, LANGUAGE, rows, causes, has_ablation=True)
    assert text.startswith("The blank prompt draws skin_tone 5 in 85 % [81 %, 89 %]")
    assert "2,673 training items, 88 %" in text and "-64 points [-69, -57]" in text
    assert text.endswith("Verdict: the english_only step caused it.")
    found = {h.key: h.status for h in hypotheses(o, [o], LANGUAGE, rows, KINDS, ["", " ", "."], 0.95)}
    evidence = {h.key: h.evidence for h in hypotheses(o, [o], LANGUAGE, rows, KINDS, [""], 0.95)}
    assert evidence["filtering"].startswith("blame: english_only:off moves 100 %, english_only:drop moves 100 % "
                                            "of the 2673 matched items; ablation: english_only:drop: -64 points")
    assert evidence["short_captions"].startswith("blame: no such step moves the matched items")
    assert found == {"majority": NOT_SUPPORTED, "short_captions": NOT_TESTED, "filtering": SUPPORTED,
                     "unlabeled": NOT_SUPPORTED, "normaliser": NOT_TESTED, "guidance": NOT_TESTED}


def test_an_arm_moving_away_from_the_training_share_is_not_a_cause():
    o = outcome(0.85, 0.81, 0.89)
    assert find_causes(o, [row("min_length:off", 0.08, 0.03, 0.13)]) == []


def test_overlapping_intervals_say_cannot_tell():
    o = outcome(0.85, 0.81, 0.89)
    rows = [row("english_only:drop", -0.20, -0.45, 0.05)]
    assert find_causes(o, rows) == []
    assert conclusion(o, LANGUAGE, rows, [], has_ablation=True).endswith(
        "Verdict: cannot tell: no ablation arm's interval excludes zero.")
    status = {h.key: h.status for h in hypotheses(o, [o], LANGUAGE, rows, KINDS, [""], 0.95)}
    assert status["filtering"] == CANNOT_TELL
    assert "cannot tell without counterfactual retraining" in conclusion(o, LANGUAGE, [], [], has_ablation=False)


def test_a_prompt_that_mirrors_the_data_needs_no_cause():
    # majority world: 80 % tone 5 overall, the blank prompt draws 79 % [74, 83]
    o = outcome(0.79, 0.74, 0.83, training=0.80)
    raw = matched({"blank via raw": {"n": 1532, "share": 0.79, "interval": [0.77, 0.81]}})
    rows = [row("english_only:drop", -0.01, -0.05, 0.03, base=0.79)]
    assert find_causes(o, rows) == []
    assert conclusion(o, raw, rows, [], True).endswith("Verdict: nothing to explain beyond the data.")
    status = {h.key: h.status for h in hypotheses(o, [o], raw, rows, KINDS, [""], 0.95)}
    assert status["majority"] == SUPPORTED and status["unlabeled"] == NOT_SUPPORTED
    # null world: 50/50, nothing significant, and 50 % is no majority
    null = outcome(0.52, 0.46, 0.58, training=0.50)
    assert {h.key: h.status for h in hypotheses(null, [null], raw, [], KINDS, [""], 0.95)}["majority"] == \
        NOT_SUPPORTED


def test_unlabeled_and_guidance_read_their_own_evidence():
    o1, o10 = outcome(0.85, 0.81, 0.89), outcome(0.97, 0.95, 0.99, scale=10.0)
    raw = matched({"blank via raw": {"n": 2400, "share": 0.89, "interval": [0.87, 0.90]},
                   "blank via english_only": {"n": 273, "share": 0.7, "interval": [0.64, 0.75]}})
    status = {h.key: h.status for h in hypotheses(o1, [o1, o10], raw, [], KINDS, ["", " ", "."], 0.95)}
    assert status["unlabeled"] == SUPPORTED and status["guidance"] == SUPPORTED
    flat = outcome(0.86, 0.82, 0.90, scale=10.0)
    assert {h.key: h.status for h in hypotheses(o1, [o1, flat], raw, [], KINDS, [""], 0.95)}["guidance"] == \
        NOT_SUPPORTED
