"""Which caption-pipeline decision made each training item reach the model as a probe prompt's ids.

    crayonbox lab blame CAPS --tokenizer TOKDIR [--prompts null] [--arms english_only:off] --out DIR

The provenance column `blanked_by` names the *first* step that blanked a caption, not the cause: a caption
English-only blanks would often be blanked by the normaliser anyway. Blame asks counterfactually. Every item's
RAW caption is run again through each arm (`crayonbox.data.caption_arms`: one step off, one policy flipped,
another normaliser mode, the tokenizer following the normaliser) and through each step alone. Per item:
- necessary[arm]: it matches the prompt's ids under the baseline but not under the arm (dropped counts);
- sufficient[step]: that step alone (langid before english_only) blanks or drops the non-blank raw caption;
- raw_blank: the raw caption said nothing ("unlabeled"): no letter, digit or symbol, e.g. "" or the ". " an
  empty Flickr title and description join to.
Its group is "blank via STEP(+STEP)" for the steps necessary through arms that keep the item and leave the
normaliser as it is; else "blank via raw" when raw_blank; else "blank via STEP|STEP" for the steps each
sufficient alone (overdetermined: langid calls "snail" non-English, and min_length blanks it too); else "blank
via normaliser/other"; "captioned" when it does not match the prompt; "dropped" when the baseline drops it.
A drop arm removes the item, which says nothing about why it was blank. A normaliser arm changes the prompt's
ids too (raw "" is <s></s> while a filter's " " stays <s> Ġ </s>), so it separates nearly every blank caption
from "" and would name the normaliser in every group (hypothesis e, "the normaliser merges blank inputs"): its
counts are in the per-arm summary instead.

Speed: the steps are pure functions of the text, the item's ground-truth names (names step) and the dropout
draw (dropout), so each variant runs once per distinct (raw caption, names, dropout flags), and each distinct
final caption is tokenized once per tokenizer.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from crayonbox.data.caption_arms import BASELINE, Arm, arm_config, candidate_arms, parse_arm
from crayonbox.data.caption_steps import CaptionState, ground_truth_names, is_blank
from crayonbox.data.captions import build_steps, pipeline_normalizer, step_config
from crayonbox.errors import CrayonboxError
from crayonbox.lab.families import UNCONDITIONAL_IDS, PromptSpec
from crayonbox.lab.reference import caption_ids
from crayonbox.text.tokenizer import Tokenizer

ATTRIBUTES = ("skin_tone", "gender", "attire")  # ground truth of the world's people, where meta has it
RawItem = tuple[str, str, dict]  # (key, raw caption, meta)


@dataclass
class PromptBlame:
    """One probe prompt against every item: its ids and the items' matches per arm."""

    prompt: PromptSpec
    ids: dict[str, list[int]]  # arm name (baseline included) -> the prompt's real ids under that arm
    matched: dict[str, np.ndarray]  # arm name (baseline included) -> bool per item
    necessary: dict[str, np.ndarray]  # arm name -> matched under the baseline, not under the arm
    groups: list[str]  # per item: "blank via …", "captioned" or "dropped"

    @property
    def matched_baseline(self) -> np.ndarray:
        """Which items reach the model as this prompt's ids under the pipeline as configured."""
        return self.matched[BASELINE]


@dataclass
class BlameTable:
    """Columnar blame of every item (one entry per item in each array or list)."""

    keys: list[str]
    arms: list[Arm]  # the arms compared with the baseline, in order
    steps: list[str]  # the baseline pipeline's step names, in order
    dropout_steps: list[str]  # those of kind dropout (they blank to "", the others to " ")
    raw_blank: np.ndarray
    blanked_by: list[str | None]  # the provenance-style first blanking step (None when dropped)
    finals: list[str | None]  # the baseline's final caption (None when dropped)
    dropped: dict[str, np.ndarray]  # arm name (baseline included) -> dropped under that arm
    sufficient: dict[str, np.ndarray]  # step name -> that step alone blanks or drops the raw caption
    facets: dict[str, list[str]]  # source, language, skin_tone, gender, attire -> value per item
    prompts: list[PromptBlame] = field(default_factory=list)

    def rows(self) -> dict[str, list]:
        """Columns of blame.parquet: one row per (prompt, item)."""
        cols: dict[str, list] = {"prompt": [], "input_mode": [], "key": [], "group": [], "matched": [],
                                 "necessary": [], "sufficient": [], "raw_blank": [], "blanked_by": []}
        cols.update({f"matched.{a.name}": [] for a in self.arms})
        sufficient = [[s for s, mask in self.sufficient.items() if mask[i]] for i in range(len(self.keys))]
        for p in self.prompts:
            cols["prompt"] += [p.prompt.prompt] * len(self.keys)
            cols["input_mode"] += [p.prompt.input_mode] * len(self.keys)
            cols["key"] += self.keys
            cols["group"] += p.groups
            cols["matched"] += p.matched_baseline.tolist()
            cols["necessary"] += [[a for a, mask in p.necessary.items() if mask[i]] for i in range(len(self.keys))]
            cols["sufficient"] += sufficient
            cols["raw_blank"] += self.raw_blank.tolist()
            cols["blanked_by"] += self.blanked_by
            for a in self.arms:
                cols[f"matched.{a.name}"] += p.matched[a.name].tolist()
        return cols


@dataclass
class BlameResult:
    """What `blame_run` found, with where it came from."""

    captions_dir: str
    tokenizer_dir: str
    pipeline: dict[str, Any]
    table: BlameTable
    baseline_disagreements: int  # items whose recomputed baseline final caption differs from the provenance
    seconds: float


# ---- running variants of the pipeline ---------------------------------------------------------------------


Outcome = tuple[str | None, str | None, str | None]  # (final caption or None if dropped, language, blanked_by)


class _Runner:
    """Runs step lists over all items. Each step's output is a pure function of the caption, the detected
    language (english_only), the item's ground-truth names (names) and its dropout draw (dropout), so it is
    memoised on exactly those: arms sharing a prefix of steps share its work."""

    def __init__(self, items: Sequence[RawItem]):
        self.items = items
        self.names = [ground_truth_names(meta) for _, _, meta in items]
        self._draws: dict[int, list[float]] = {}
        self._flags: dict[tuple[int, float], list[bool]] = {}
        self._shared: dict[str, Any] = {}  # step config -> one instance, shared by every arm that has it
        self._memo: dict[tuple, tuple] = {}

    def steps(self, config: dict[str, Any]) -> list[Any]:
        return [self._shared.setdefault(json.dumps(step_config(s), sort_keys=True), s) for s in build_steps(config)]

    def _flag(self, step: Any) -> list[bool]:
        if (step.seed, step.p) not in self._flags:
            if step.seed not in self._draws:
                self._draws[step.seed] = [step.draw(key) for key, _, _ in self.items]
            self._flags[step.seed, step.p] = [d < step.p for d in self._draws[step.seed]]
        return self._flags[step.seed, step.p]

    def _walk(self, steps: list[Any], i: int) -> Outcome:
        """As `CaptionPipeline.process_item`, through the step memo."""
        key, caption, meta = self.items[i]
        language = confidence = None
        blanked_by = "raw" if is_blank(caption) else None
        for step in steps:
            kind = step.kind
            extra = (language, confidence) if kind == "english_only" else self.names[i] if kind == "names" \
                else self._flag(step)[i] if kind == "dropout" else None
            memo_key = (id(step), caption, extra)
            out = self._memo.get(memo_key)
            if out is None:
                state = CaptionState(key, caption, meta, language, confidence)
                result = step(state)
                out = self._memo[memo_key] = (result.caption, result.dropped, state.language,
                                              state.language_confidence)
            if kind == "langid":
                language, confidence = out[2], out[3]
            if out[1]:
                return None, language, None
            if blanked_by is None and is_blank(out[0]):
                blanked_by = step.name
            caption = out[0]
        return caption, language, blanked_by

    def run(self, steps: list[Any]) -> list[Outcome]:
        """Each item's outcome, computed once per distinct (raw caption, names, dropout flags)."""
        flags = [self._flag(s) for s in steps if s.kind == "dropout"]
        memo: dict[tuple, Outcome] = {}
        out = []
        for i, (_, raw, _) in enumerate(self.items):
            item_key = (raw, self.names[i], *(f[i] for f in flags))
            hit = memo.get(item_key)
            if hit is None:
                hit = memo[item_key] = self._walk(steps, i)
            out.append(hit)
        return out


def arm_tokenizer(base: Tokenizer, config: dict[str, Any], arm: Arm) -> Tokenizer:
    """The tokenizer of an arm: the base one, except that a normaliser arm's tokenizer uses its normaliser."""
    if arm.kind != "normalize":
        return base
    return Tokenizer(base.backend, pipeline_normalizer(arm_config(config, arm)), base.text_length)


def prompt_ids(tokenizer: Tokenizer, spec: PromptSpec) -> list[int]:
    """The real ids of a probe input, as `crayonbox.lab.probe.encode_spec` builds them (not imported from
    there: probe loads torch)."""
    enc = tokenizer.unconditional() if spec.input_mode == UNCONDITIONAL_IDS else tokenizer.encode(spec.prompt)
    return [i for i, m in zip(enc.ids, enc.attention_mask, strict=True) if m]


def is_unlabeled(caption: str) -> bool:
    """True when the caption holds no letter, digit or symbol (emoji are symbols): only spaces, punctuation or
    invisible characters, so nothing in it describes the image."""
    return not any(unicodedata.category(ch)[0] in "LNS" for ch in caption)


def _facets(items: Sequence[RawItem], languages: list[str | None]) -> dict[str, list[str]]:
    facets: dict[str, list[str]] = {"source": [], "language": []}
    attrs: dict[str, list[str]] = {a: [] for a in ATTRIBUTES}
    for (_, _, meta), detected in zip(items, languages, strict=True):
        world = meta.get("world") or {}
        facets["source"].append(str(world.get("source", meta.get("source"))))
        facets["language"].append(str(world.get("caption_language") or detected))  # ground truth first
        for a in ATTRIBUTES:  # an item with several people counts under the set of their values ("1+5")
            values = sorted({str(o[a]) for o in world.get("objects") or [] if o.get(a) is not None})
            attrs[a].append("+".join(values) or "none")
    facets.update({a: v for a, v in attrs.items() if any(x != "none" for x in v)})
    return facets


def blame_items(raw: Sequence[RawItem], config: dict[str, Any], tokenizer: Tokenizer,
                prompts: Sequence[str | PromptSpec] = ("",), arms: Sequence[str | Arm] | None = None,
                progress: bool = True) -> BlameTable:
    """Blame every item (key, raw caption, meta) for matching each prompt (text, or a PromptSpec for the
    `<unconditional ids>` input) under the pipeline `config`, comparing with `arms` (default: every candidate
    arm). Raises CrayonboxError for an arm the pipeline cannot have."""

    if not raw:
        raise CrayonboxError("no items to blame: the caption run holds no provenance rows")
    chosen = candidate_arms(config) if arms is None else [a if isinstance(a, Arm) else parse_arm(a, config)
                                                           for a in arms]
    chosen = [a for a in dict.fromkeys(chosen) if a.name != BASELINE]
    specs = [p if isinstance(p, PromptSpec) else PromptSpec(p, "blank" if p == "" else "given") for p in prompts]
    runner = _Runner(raw)
    base_steps = runner.steps(config)
    every = [Arm(BASELINE, None, None, BASELINE), *chosen]
    configs = {a.name: arm_config(config, a) for a in every}  # validates every arm before any work
    finals: dict[str, list] = {}
    for arm in tqdm(every, desc="blame arms", unit="arm", disable=not progress):
        finals[arm.name] = runner.run(runner.steps(configs[arm.name]))
    _, languages, blanked_by = zip(*finals[BASELINE], strict=True)
    raw_blank = np.array([is_unlabeled(c) for _, c, _ in raw])
    literally_blank = np.array([is_blank(c) for _, c, _ in raw])
    sufficient = {}
    for i, step in enumerate(base_steps):
        if step.kind == "langid":
            continue  # it never changes a caption
        alone = [next(s for s in reversed(base_steps[:i]) if s.kind == "langid"), step] \
            if step.kind == "english_only" else [step]
        blank = np.array([f is None or is_blank(f) for f, _, _ in runner.run(alone)])
        sufficient[step.name] = blank & ~literally_blank  # "" stays blank whatever the step does
    table = BlameTable(keys=[k for k, _, _ in raw], arms=chosen, steps=[s.name for s in base_steps],
                       dropout_steps=[s.name for s in base_steps if s.kind == "dropout"],
                       raw_blank=raw_blank, blanked_by=list(blanked_by),
                       finals=[f for f, _, _ in finals[BASELINE]],
                       dropped={n: np.array([f is None for f, _, _ in r]) for n, r in finals.items()},
                       sufficient=sufficient, facets=_facets(raw, list(languages)))
    _match_prompts(table, every, finals, tokenizer, config, specs)
    return table


def _match_prompts(table: BlameTable, every: list[Arm], finals: dict[str, list], tokenizer: Tokenizer,
                   config: dict[str, Any], specs: list[PromptSpec]) -> None:
    tokenizers: dict[str, Tokenizer] = {}
    codes: dict[str, np.ndarray] = {}
    ids_code: dict[tuple[int, ...], int] = {}  # distinct ids -> a small int, so matching is one array compare
    memo: dict[tuple[str, str], int] = {}  # (tokenizer's normaliser, final caption) -> code of its ids
    for arm in every:
        tok = tokenizers[arm.name] = arm_tokenizer(tokenizer, config, arm)
        name = repr(tok.normalizer_config)
        arm_finals = [f for f, _, _ in finals[arm.name]]
        todo = list(dict.fromkeys(f for f in arm_finals if f is not None and (name, f) not in memo))
        for final, ids in zip(todo, caption_ids_batch(tok, todo), strict=True):
            memo[name, final] = ids_code.setdefault(ids, len(ids_code))
        codes[arm.name] = np.array([-1 if f is None else memo[name, f] for f in arm_finals], dtype=np.int64)
    for spec in specs:
        ids = {a.name: prompt_ids(tokenizers[a.name], spec) for a in every}
        matched = {a.name: codes[a.name] == ids_code.get(tuple(ids[a.name]), -2) for a in every}
        base = matched[BASELINE]
        necessary = {a.name: base & ~matched[a.name] for a in table.arms}
        table.prompts.append(PromptBlame(spec, ids, matched, necessary, _groups(table, base, necessary)))


def caption_ids_batch(tokenizer: Tokenizer, captions: list[str]) -> list[tuple[int, ...]]:
    """`reference.caption_ids` of many captions: the same normaliser and framing, without the notes and with
    one batched BPE call (the notes cost more than the ids; tests check both agree)."""
    unconditional = tuple(caption_ids(tokenizer, ""))
    encoded = tokenizer.backend.encode_batch([tokenizer.normalizer(c) for c in captions], add_special_tokens=False)
    room = tokenizer.text_length - 2
    return [unconditional if c == "" else (tokenizer.bos_id, *e.ids[:room], tokenizer.eos_id)
            for c, e in zip(captions, encoded, strict=True)]


def _groups(table: BlameTable, matched: np.ndarray, necessary: dict[str, np.ndarray]) -> list[str]:
    order = {s: i for i, s in enumerate(table.steps)}
    dropouts = set(table.dropout_steps)
    groups = []
    for i in range(len(table.keys)):
        if table.dropped[BASELINE][i]:
            groups.append("dropped")
        elif not matched[i]:
            groups.append("captioned")
        else:
            steps = {a.step for a in table.arms
                     if necessary[a.name][i] and not table.dropped[a.name][i] and a.kind != "normalize"}
            # Dropout blanks to "" and the filters to " ": only steps leaving this item's kind of blank count.
            alone = [s for s, mask in table.sufficient.items()
                     if mask[i] and (table.finals[i] == "") == (s in dropouts)]
            if steps:
                groups.append("blank via " + "+".join(sorted(steps, key=order.__getitem__)))
            elif table.raw_blank[i]:
                groups.append("blank via raw")
            else:
                groups.append("blank via " + ("|".join(alone) or "normaliser/other"))
    return groups


# ---- caption runs on disk ---------------------------------------------------------------------------------


def load_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer of a tokenizer folder, or of a model folder (its tokenizer/ subfolder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CrayonboxError(f"--tokenizer {folder}: no such folder (give a tokenizer or model folder)")
    return Tokenizer.from_folder(folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder)


def read_caption_run(captions_dir: Path) -> tuple[dict[str, Any], list[RawItem], list[str | None]]:
    """(pipeline config, (key, raw caption, meta) per item, provenance final captions) of a caption run."""

    captions_dir = Path(captions_dir)
    manifest = captions_dir / "caption_pipeline.json"
    files = sorted((captions_dir / "provenance").glob("*.parquet"))
    if not manifest.is_file() or not files:
        raise CrayonboxError(f"{captions_dir} is not a caption run: it needs caption_pipeline.json and "
                             "provenance/*.parquet (made by `crayonbox data captions`)")
    config = json.loads(manifest.read_text(encoding="utf8")).get("pipeline")
    build_steps(config)  # a broken manifest fails here, with the pipeline's own message
    items, finals = [], []
    needed = ["key", "source", "raw_caption", "world", "final_caption"]
    for path in files:
        table = pq.read_table(path)
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise CrayonboxError(f"{path} lacks provenance column(s) {missing}: rerun `crayonbox data captions`")
        cols = table.select(needed).to_pydict()
        for key, source, caption, world, final in zip(*(cols[c] for c in needed), strict=True):
            items.append((key, caption or "", {"world": json.loads(world)} if world else {"source": source}))
            finals.append(final)
    return config, items, finals


def blame_run(captions_dir: Path, tokenizer_dir: Path, prompts: Sequence[str | PromptSpec] = ("",),
              arms: Sequence[str | Arm] | None = None, progress: bool = True) -> BlameResult:
    """Blame the items of a caption run (`crayonbox data captions` output) for each prompt; writes nothing."""
    start = time.perf_counter()
    tokenizer = load_tokenizer(tokenizer_dir)
    config, items, finals = read_caption_run(captions_dir)
    table = blame_items(items, config, tokenizer, prompts, arms, progress)
    disagree = sum(a != b for a, b in zip(table.finals, finals, strict=True))
    return BlameResult(str(captions_dir), str(tokenizer_dir), config, table, disagree, time.perf_counter() - start)
