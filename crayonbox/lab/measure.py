"""Apply instruments to every image of a run and to the reference (training) images, validate the
instruments, then compute the statistics (analysis.py) into RUN/metrics.json.

    metrics = measure_run("RUN", MeasureConfig(reference="DATA", clusters=8))

Labels are cached per image hash and instrument version in the run's SQLite, so re-measuring after a longer
probe only measures the new images; reference labels, features and validation matrices are cached the same
way. The reference is the training images (`reference=DATA`, or the model's own from its provenance); when
they are not on this machine, the model folder's reference table (`crayonbox lab reference`) stands in for
every instrument of the same version (cache key), and the clusters run on the run's images alone.
Instruments: "skin_tone" (pixel meter), "judge" (the world judge CNN, `judge=FOLDER`), "clip" (open_clip
zero-shot, `clip_weights=FILE`), and "clusters" (the label-free track, always available).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from crayonbox.config import write_text_atomic
from crayonbox.errors import CrayonboxError
from crayonbox.lab.analysis import Measured, analyse
from crayonbox.lab.dedupe import dedupe_run
from crayonbox.lab.instruments.base import Instrument
from crayonbox.lab.instruments.clip import ClipInstrument
from crayonbox.lab.instruments.clusters import ClusterModel, ColourLayoutFeatures, FeatureExtractor
from crayonbox.lab.instruments.judge import JudgeInstrument
from crayonbox.lab.instruments.skin_tone import SkinToneConfig, SkinToneMeter
from crayonbox.lab.probe import load_tokenizer
from crayonbox.lab.reference import (
    ReferenceItem,
    ReferencePlan,
    ReferenceTable,
    dataset_id,
    iter_reference,
    plan_reference,
    validation_folder,
    validation_renders,
)
from crayonbox.lab.results_run import IMAGES, TABLE
from crayonbox.lab.store import RunStore
from crayonbox.lab.story import story_metrics
from crayonbox.model.vqgan_io import load_vqgan, round_trip

INSTRUMENTS = ("skin_tone", "judge", "clip", "clusters")
METRICS = "metrics.json"


@dataclass
class MeasureConfig:
    """What to measure a run with, and against what."""

    instruments: tuple[str, ...] = ("skin_tone", "clusters")  # add "judge" / "clip" when you have them
    judge: Path | None = None  # trained judge folder (`crayonbox train judge`)
    clip_arch: str = "ViT-B-32"  # open_clip architecture of the CLIP weights
    clip_weights: Path | None = None  # .safetensors (or weights-only .pt) CLIP state dict
    reference: Path | None = None  # training shard folder; None = the model's own, from its provenance
    use_reference: bool = True  # False: compare with nothing but the uniform distribution
    reference_limit: int = 2000  # training images measured (the first ones in shard order)
    validation: Path | None = None  # labelled world folder; None = fresh renders of the world config
    validation_n: int = 300
    # Validate on the renders as the run's model would draw them: through its own VQGAN (encode → decode).
    # Generated pixels drift in colour; an instrument validated only on clean renders hides that error.
    validate_roundtrip: bool = False
    skin_max_distance: float = 8.0  # ΔE of a skin pixel from its palette colour (raise for VQGAN colour drift)
    world_config: Path | None = None  # world config of the fresh validation renders (None: default world)
    clusters: int = 8  # k of the label-free track
    seed: int = 0  # k-means and bootstrap seed
    confidence: float = 0.95
    batch: int = 64  # images per instrument call

    def validate(self) -> MeasureConfig:
        """Check the options before anything is loaded; returns self."""
        unknown = [name for name in self.instruments if name not in INSTRUMENTS]
        if unknown:
            raise CrayonboxError(f"unknown instrument(s) {unknown}: choose from {', '.join(INSTRUMENTS)}")
        if "judge" in self.instruments and self.judge is None:
            raise CrayonboxError("the judge instrument needs --judge FOLDER (train one with "
                                 "`crayonbox train judge`), or a model folder that ships judge/")
        if "clip" in self.instruments and self.clip_weights is None:
            raise CrayonboxError("the clip instrument needs --clip-weights FILE (no CLIP weights ship with "
                                 "crayonbox)")
        if self.clusters < 2 or self.reference_limit < 0 or self.validation_n < 1 or self.batch < 1:
            raise CrayonboxError("need --clusters ≥ 2, --reference-limit ≥ 0, --validation-n ≥ 1 and "
                                 "--batch ≥ 1")
        return self


def instrument_key(instrument: Instrument, identity: str = "") -> str:
    """Cache key: the instrument's name plus a hash of its settings and `identity` (e.g. its weights' hash),
    so changed thresholds or another judge re-measure instead of reusing labels."""
    settings = repr(getattr(instrument, "config", None)) + repr(getattr(instrument, "unclear_below", None))
    digest = hashlib.sha256((settings + identity).encode()).hexdigest()[:8]
    return f"{instrument.name}-{digest}"


def file_digest(path: Path) -> str:
    """sha256 of one file, or of every file of a folder (sorted), for instrument identities."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def build_instruments(config: MeasureConfig) -> list[tuple[Instrument, str]]:
    """The labelled instruments named in the config with their identities (the cluster track is built
    after features exist)."""
    out: list[tuple[Instrument, str]] = []
    if "skin_tone" in config.instruments:

        # (the cache key hashes the meter's config, so another threshold re-measures)
        out.append((SkinToneMeter(SkinToneConfig(max_distance=config.skin_max_distance)), ""))
    if "judge" in config.instruments:
        out.append((load_judge(Path(config.judge)), file_digest(Path(config.judge) / "model.safetensors")))
    if "clip" in config.instruments:

        out.append((ClipInstrument.from_weights(config.clip_arch, config.clip_weights),
                    config.clip_arch + file_digest(Path(config.clip_weights))))
    return out


def load_judge(folder: Path) -> Instrument:
    """The world judge instrument from a trained judge folder (`crayonbox train judge`)."""
    if not (Path(folder) / "model.safetensors").exists():
        raise CrayonboxError(f"--judge {folder}: no judge there (expected model.safetensors; train one with "
                             "`crayonbox train judge`)")

    return JudgeInstrument.load(folder)


def label_images(store: RunStore, instrument: Instrument, key: str, shas: Sequence[str],
                 paths: dict[str, str], batch: int, progress: bool) -> dict[str, dict[str, str]]:
    """Labels of these images (sha → {attribute: label}), measuring and caching only the uncached ones."""

    have = store.labels(key)
    missing = list(store.iter_missing(shas, have))
    bar = tqdm(total=len(missing), desc=f"measure {instrument.name}", unit="img", disable=not progress)
    for start in range(0, len(missing), batch):
        part = missing[start:start + batch]
        labels = instrument.measure([store.load_image(paths[sha]) for sha in part])
        new = dict(zip(part, labels, strict=True))
        store.add_labels(key, new)
        have.update(new)
        bar.update(len(part))
    bar.close()
    return {sha: have[sha] for sha in shas}


def embed_images(store: RunStore, extractor: FeatureExtractor, shas: Sequence[str], paths: dict[str, str],
                 batch: int, progress: bool) -> np.ndarray:
    """Feature rows for these images, computing and caching only the uncached ones."""

    have = store.features(extractor.name)
    missing = list(store.iter_missing(shas, have))
    for start in tqdm(range(0, len(missing), batch), desc="features", unit="batch", disable=not progress):
        part = missing[start:start + batch]
        vectors = extractor.embed([store.load_image(paths[sha]) for sha in part])
        new = dict(zip(part, vectors, strict=True))
        store.add_features(extractor.name, new)
        have.update(new)
    return np.stack([have[sha] for sha in shas]) if shas else np.zeros((0, 1), np.float32)


def load_reference(store: RunStore, folder: Path, limit: int, progress: bool) -> list[ReferenceItem]:
    """The reference items of the run (stored as PNGs in it the first time), cached as a record."""


    record = f"reference-items:{dataset_id(folder, limit)}"
    cached = store.get_record(record)
    if cached is not None:
        return [ReferenceItem(**row) for row in cached]
    model_dir = store.get_meta("model_dir")
    tokenizer = load_tokenizer(Path(model_dir)) if model_dir and Path(model_dir).is_dir() else None
    items = [item for item, _ in tqdm(iter_reference(folder, store.folder, limit, tokenizer), total=limit,
                                      desc="reference images", unit="img", disable=not progress)]
    if not items:
        raise CrayonboxError(f"--reference {folder} has no readable images")
    store.put_record(record, [item.__dict__ for item in items])
    return items


def validate(store: RunStore, instrument: Instrument, key: str, config: MeasureConfig,
             cache: dict[str, Any]) -> dict[str, Any]:
    """Confusion matrices of one instrument on labelled held-out renders (cached in the run)."""
    source = (str(config.validation) if config.validation
              else f"renders:{config.world_config}:{config.validation_n}")
    if config.validate_roundtrip:
        source += f":roundtrip:{store.get_meta('model_hash')}"
    record = f"validation:{key}:{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    found = store.get_record(record)
    if found is not None:
        return found
    try:
        if "data" not in cache:
            cache["data"] = (validation_folder(config.validation, config.validation_n) if config.validation
                             else validation_renders(config.validation_n, config.world_config))
            if config.validate_roundtrip:
                cache["data"] = through_model_vqgan(*cache["data"], store.get_meta("model_dir"))
        images, truths, where = cache["data"]
        confusions = instrument.validate_world(images, truths)
        result = {"source": where, "confusions": {a: c.to_dict() for a, c in confusions.items()}}
    except CrayonboxError as e:
        return {"source": source, "error": str(e)}  # not cached: fixable (e.g. install the font), so retried
    store.put_record(record, result)
    return result


def through_model_vqgan(images: list, truths: list, where: str, model_dir: str | None) -> tuple[list, list, str]:
    """The validation renders after a round trip through the run model's VQGAN (needs its encoder)."""
    if not model_dir:
        raise CrayonboxError("--validate-roundtrip needs the run's model folder, which this run does not record")
    vqgan, _ = load_vqgan(Path(model_dir))
    return (round_trip(vqgan.eval(), images), truths,
            f"{where}, each through the model's VQGAN (encode → decode) like a generated image")


def fit_clusters(store: RunStore, run_shas: list[str], paths: dict[str, str], reference: list[ReferenceItem],
                 extractor: FeatureExtractor, config: MeasureConfig,
                 progress: bool) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Fit k-means on run + reference features; labels for both, plus exemplars and the model."""
    shas = list(dict.fromkeys(run_shas + [item.sha256 for item in reference]))
    features = embed_images(store, extractor, shas, paths, config.batch, progress)
    # A probe of a collapsed model can hold fewer distinct pictures than --clusters: use what there is.
    k = min(config.clusters, len(np.unique(features, axis=0)))
    if k < 2:
        raise CrayonboxError("every image of the run looks the same: nothing to cluster; measure without "
                             "the clusters instrument")
    model = ClusterModel.fit(features, k, extractor.name, config.seed)
    labels = dict(zip(shas, ({"cluster": c} for c in model.assign(features)), strict=True))
    run_set = set(run_shas)
    run_rows = [i for i, sha in enumerate(shas) if sha in run_set]
    ref_rows = [i for i, sha in enumerate(shas) if sha not in run_set]
    info = {"model": model.to_dict(), "extractor": extractor.name,
            "exemplars": model.exemplars([shas[i] for i in run_rows], features[run_rows]),
            "reference_exemplars": model.exemplars([shas[i] for i in ref_rows], features[ref_rows])
            if ref_rows else {}}
    return labels, info


def collect(store: RunStore, config: MeasureConfig, progress: bool = True) -> Measured:
    """Measure the run's images and the reference with every instrument (using the caches)."""
    records = store.images()
    if not records:
        raise CrayonboxError(f"{store.folder} holds no images yet: run "
                             f"`crayonbox lab probe --out {store.folder}`")
    paths = {r.sha256: r.path for r in records}
    run_shas = list(paths)
    model_dir = store.get_meta("model_dir")
    plan = plan_reference(config.reference, config.use_reference, model_dir)
    measured = Measured({}, {})
    if config.reference_limit <= 0 and plan.why_none is None:
        plan = ReferencePlan(why_none="--reference-limit 0 was given")
    if plan.folder is not None:
        measured.reference = load_reference(store, plan.folder, config.reference_limit, progress)
        measured.reference_source = f"first {len(measured.reference)} images of {plan.folder}"
        measured.reference_kind = IMAGES
        paths.update({item.sha256: item.path for item in measured.reference})
    elif plan.table is not None:
        check_table_tokenizer(plan.table, Path(str(model_dir)))
        measured.reference = plan.table.items(config.reference_limit)
        measured.reference_source = plan.table.describe(len(measured.reference))
        measured.reference_kind = TABLE
    else:
        measured.reference_notes.append(f"no training reference: {plan.why_none}")
    reference = measured.reference
    ref_shas = list(dict.fromkeys(item.sha256 for item in reference))

    validation_cache: dict[str, Any] = {}
    extractor: FeatureExtractor = ColourLayoutFeatures()
    for instrument, identity in build_instruments(config):
        key = instrument_key(instrument, identity)
        measured.instruments[key] = {"name": instrument.name, "outcomes": instrument.outcomes(),
                                     "validation": validate(store, instrument, key, config, validation_cache)}
        measured.run_labels[key] = label_images(store, instrument, key, run_shas, paths, config.batch,
                                                progress)
        if plan.table is not None and reference:
            labels, why = plan.table.labels(instrument.name, key, instrument.outcomes(), reference)
            if labels is None:
                measured.reference_notes.append(str(why))
            else:
                measured.reference_labels[key] = labels
        elif reference:
            measured.reference_labels[key] = label_images(store, instrument, key, ref_shas, paths,
                                                          config.batch, progress)
        if instrument.name == "judge":
            extractor = JudgeFeatures(instrument, key)  # its penultimate features beat colour histograms
    if "clusters" in config.instruments:
        # A table holds labels, not pixels: the clusters are fitted on the run's images alone.
        images = reference if plan.table is None else []
        if plan.table is not None and reference:
            measured.reference_notes.append("clusters: the reference table holds no images, so the clusters are "
                                            "fitted on the run's images only and not compared with training data")
        labels, info = fit_clusters(store, run_shas, paths, images, extractor, config, progress)
        key = f"clusters-{info['extractor']}-k{len(info['model']['centroids'])}"
        measured.instruments[key] = {"name": "clusters", "outcomes": {"cluster": ClusterModel(
            extractor.name, np.asarray(info["model"]["centroids"]), config.seed).labels},
            "validation": {"source": "label-free: no ground truth; judge it by the exemplars"}}
        measured.run_labels[key] = {sha: labels[sha] for sha in run_shas}
        if images:
            measured.reference_labels[key] = {sha: labels[sha] for sha in ref_shas}
        measured.clusters = info
    return measured


def check_table_tokenizer(table: ReferenceTable, model_dir: Path) -> None:
    """Refuse a table whose caption-id groups were computed with another tokenizer than the model's."""
    if table.manifest.get("tokenizer_sha256") != file_digest(model_dir / "tokenizer"):
        raise CrayonboxError(f"{table.folder} was built with another tokenizer than {model_dir}'s, so its caption "
                             f"ids are not this model's: rebuild it with `crayonbox lab reference {model_dir} "
                             "--data SHARDS --force`")


@dataclass
class JudgeFeatures:
    """A judge instrument's penultimate features as a FeatureExtractor for the cluster track."""

    judge: Any  # JudgeInstrument
    key: str  # its instrument key (name + weights hash), so each judge caches its own features

    @property
    def name(self) -> str:
        """Feature-cache name: the judge's instrument key."""
        return f"{self.key}-features"

    def embed(self, images: Sequence[Any]) -> np.ndarray:
        """The judge's penultimate features, (N, D) float32."""
        return np.asarray(self.judge.features(images), dtype=np.float32)


def measure_run(run: str | Path, config: MeasureConfig | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Measure a run and write RUN/metrics.json (atomically); returns the metrics."""

    config = config or MeasureConfig()
    with RunStore.open(run) as store:
        config = with_model_judge(config, store.get_meta("model_dir")).validate()
        measured = collect(store, config, progress)
        metrics = analyse(store, measured, config.confidence, config.seed)
        story = story_metrics(store, measured, config.judge)
        if story is not None:
            metrics["story"] = story
        metrics["dedupe"] = dedupe_run(store, progress=progress)
        metrics["measure_config"] = {k: str(v) if isinstance(v, Path) else v
                                     for k, v in config.__dict__.items()}
        write_metrics(store.folder, metrics)
    return metrics


def with_model_judge(config: MeasureConfig, model_dir: str | None) -> MeasureConfig:
    """The judge instrument without --judge reads with the judge the run's model ships (MODEL/judge/)."""
    if "judge" in config.instruments and config.judge is None and model_dir:
        shipped = Path(model_dir) / "judge"
        if (shipped / "model.safetensors").is_file():
            return replace(config, judge=shipped)
    return config


def write_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    """RUN/metrics.json, written atomically."""
    path = Path(folder) / METRICS
    write_text_atomic(path, json.dumps(metrics, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    return path


def read_metrics(folder: str | Path) -> dict[str, Any]:
    """RUN/metrics.json, with an error that says to run `crayonbox lab measure` first."""
    path = Path(folder) / METRICS
    if not path.exists():
        raise CrayonboxError(f"{folder} has no {METRICS}: run `crayonbox lab measure {folder}` first")
    return json.loads(path.read_text(encoding="utf-8"))
