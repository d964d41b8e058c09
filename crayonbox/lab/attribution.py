"""Which training items does a prompt's picture come from? Two independent answers, per caption group.

1. Nearest neighbours (`neighbour_enrichment`, `attribute_neighbours`): embed the probe's images and the
   training images, find each image's k nearest training items (cosine on L2-normalised features), and compare
   the groups among the TARGET images' neighbours with those among the OTHER probe images' neighbours. Both
   sets are generated images, so the VQGAN's look and the feature space's density affect both alike; their
   ratio isolates what the target prompt adds. Intervals resample query images, not neighbours, because the
   k neighbours of one image are not independent.
2. Model likelihood (`likelihood_scores`, `attribute_likelihood`): per training item,
   log p(tokens | probe ids) − log p(tokens | unconditional ids), exact under teacher forcing. Per token,
   guidance samples from p_c·(p_c/p_u)^(scale−1), so high-scoring items are the ones the prompt pushes towards
   (and at scale 1 the score is how much more likely the prompt makes the item than no caption does).

Everything is numpy or torch inference; the training data is read from its parquet and shards directly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import LongTensor, Tensor
from tqdm.auto import tqdm

from crayonbox.data.shards import decode_image, iter_items
from crayonbox.errors import CrayonboxError
from crayonbox.lab.families import UNCONDITIONAL, PromptSpec
from crayonbox.lab.instruments.clusters import ColourLayoutFeatures, FeatureExtractor
from crayonbox.lab.measure import embed_images
from crayonbox.lab.probe import encode_spec
from crayonbox.lab.stats.core import StatsResult, check_confidence
from crayonbox.lab.stats.proportions import Interval
from crayonbox.lab.store import ImageRecord, RunStore
from crayonbox.pipeline import Pipeline

DRAWS = 2000  # bootstrap resamples: percentile bounds then move by < 1 % of their width between seeds
CHUNK_CELLS = 1 << 24  # similarity / resample blocks of at most this many floats (64 MiB)
LOGIT_CELLS = 1 << 27  # teacher-forced logits per batch (512 MiB of fp32): dalle-mini is 256 × 16385 per row


# ---------------------------------------------------------------------------- shared: the bootstrap
def _resampled_sums(values: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, G) column sums of `values` (n, G) over `draws` resamples of its n rows with replacement."""
    n = len(values)
    if draws < 1:
        raise CrayonboxError(f"draws must be at least 1 bootstrap resample, got {draws}")
    out = np.empty((draws, values.shape[1]))
    rows = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, draws, rows):
        m = min(rows, draws - start)
        # Counts of each row in each resample, via one bincount: far faster than rng.multinomial for big n.
        picks = rng.integers(0, n, size=(m, n)) + (np.arange(m) * n)[:, None]
        weights = np.bincount(picks.ravel(), minlength=m * n).reshape(m, n)
        out[start:start + m] = weights @ values
    return out


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    # inverted_cdf picks real resample values: no interpolation between a finite ratio and inf (→ nan).
    alpha = (1.0 - confidence) / 2.0
    return (np.quantile(samples, alpha, axis=0, method="inverted_cdf"),
            np.quantile(samples, 1.0 - alpha, axis=0, method="inverted_cdf"))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.where(a > 0, np.inf, np.nan))


# ---------------------------------------------------------------------------- (a) nearest neighbours
@dataclass(frozen=True)
class GroupEnrichment(StatsResult):
    """One caption group among the neighbours of the target images and of the other images."""

    group: str
    target_share: float  # of all target images' neighbours, the share in this group
    other_share: float  # the same for the non-target images
    train_share: float  # the group's share of the training items searched
    target_vs_train: float  # target_share / train_share (density of the feature space not removed)
    enrichment: Interval  # target_share / other_share, bootstrap over query images (percentile)


@dataclass(frozen=True)
class TargetNeighbours(StatsResult):
    """The k nearest training items of one target image, nearest first."""

    query: str  # the image's id (sha256 in a probe run, else its row number)
    keys: tuple[str, ...]
    groups: tuple[str, ...]
    similarities: tuple[float, ...]  # cosine similarity of the L2-normalised features


@dataclass(frozen=True)
class NeighbourResult(StatsResult):
    """What `neighbour_enrichment` found: per-group shares and ratios, and every target image's neighbours."""

    k: int
    n_target: int
    n_other: int
    n_train: int
    groups: tuple[GroupEnrichment, ...]  # by enrichment, highest first
    target_neighbours: tuple[TargetNeighbours, ...]
    confidence: float
    draws: int
    seed: int
    metric: str = "cosine"


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or not np.all(np.isfinite(x)):
        raise CrayonboxError(f"{name} must be a non-empty finite (N, D) array, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(query: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (Q, k) and cosine similarities (Q, k) of each query's k nearest training rows, nearest first.
    Queries go in blocks, so 5,000 × 30,000 never holds more than CHUNK_CELLS similarities at once."""
    q, t = _unit_rows(query, "query features"), _unit_rows(train, "training features")
    if q.shape[1] != t.shape[1]:
        raise CrayonboxError(f"query features have {q.shape[1]} dimensions, training features {t.shape[1]}")
    if not 1 <= k <= len(t):
        raise CrayonboxError(f"k must be between 1 and the {len(t)} training items, got {k}")
    index, sims = np.empty((len(q), k), np.int64), np.empty((len(q), k), np.float32)
    rows = max(1, CHUNK_CELLS // len(t))
    for start in range(0, len(q), rows):
        s = q[start:start + rows] @ t.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < len(t) else np.tile(np.arange(len(t)), (len(s), 1))
        top_s = np.take_along_axis(s, top, 1)
        order = np.lexsort((top, -top_s), axis=1)  # by similarity, ties by training row: reproducible
        index[start:start + rows] = np.take_along_axis(top, order, 1)
        sims[start:start + rows] = np.take_along_axis(top_s, order, 1)
    return index, sims


def neighbour_enrichment(query_features: np.ndarray, query_is_target: np.ndarray, train_features: np.ndarray,
                         train_groups: Sequence[str], k: int = 10, confidence: float = 0.95, seed: int = 0, *,
                         train_keys: Sequence[str] | None = None, query_ids: Sequence[str] | None = None,
                         draws: int = DRAWS) -> NeighbourResult:
    """Per group: share of the target images' k nearest training items in it vs the other images', with a
    bootstrap interval (resampling target and other images separately) for the ratio."""
    check_confidence(confidence)
    is_target = np.asarray(query_is_target, dtype=bool)
    groups = np.asarray(list(train_groups), dtype=object)
    if is_target.shape != (len(query_features),):
        raise CrayonboxError(f"query_is_target has {is_target.size} entries for {len(query_features)} images")
    if len(groups) != len(train_features):
        raise CrayonboxError(f"{len(groups)} training groups for {len(train_features)} training feature rows")
    if is_target.all() or not is_target.any():
        raise CrayonboxError("need both target and other images: the other images are the comparison")
    keys = [str(i) for i in range(len(groups))] if train_keys is None else [str(x) for x in train_keys]
    ids = [str(i) for i in range(len(is_target))] if query_ids is None else [str(x) for x in query_ids]
    if len(keys) != len(groups) or len(ids) != len(is_target):
        raise CrayonboxError("train_keys / query_ids must have one entry per training item / query image")
    index, sims = nearest_neighbours(query_features, train_features, k)
    names, code = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(index), len(names)))  # per query image: how many of its neighbours in each group
    np.add.at(counts, (np.repeat(np.arange(len(index)), k), code[index].ravel()), 1.0)
    target, other = counts[is_target], counts[~is_target]
    rng = np.random.default_rng(seed)
    boot = _ratio(_resampled_sums(target, draws, rng) / (len(target) * k),
                  _resampled_sums(other, draws, rng) / (len(other) * k))
    low, high = _percentiles(boot, confidence)
    t_share, o_share = target.sum(0) / (len(target) * k), other.sum(0) / (len(other) * k)
    train_share = np.bincount(code, minlength=len(names)) / len(code)
    ratio = _ratio(t_share, o_share)
    rows = [GroupEnrichment(str(g), float(t_share[i]), float(o_share[i]), float(train_share[i]),
                            float(_ratio(t_share[i:i + 1], train_share[i:i + 1])[0]),
                            Interval(float(ratio[i]), float(low[i]), float(high[i]), confidence,
                                     "bootstrap-percentile over query images"))
            for i, g in enumerate(names)]
    rows.sort(key=lambda r: (-np.nan_to_num(r.enrichment.estimate, nan=-np.inf), r.group))
    listed = tuple(TargetNeighbours(ids[q], tuple(keys[j] for j in index[q]), tuple(str(groups[j]) for j in index[q]),
                                    tuple(float(s) for s in sims[q])) for q in np.flatnonzero(is_target))
    return NeighbourResult(k, int(is_target.sum()), int((~is_target).sum()), len(groups), tuple(rows), listed,
                           confidence, draws, seed)


# ---------------------------------------------------------------------------- (b) model likelihood
def _encode(bart: torch.nn.Module, ids: Tensor, mask: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    ids, mask = torch.as_tensor(ids).reshape(1, -1).long(), torch.as_tensor(mask).reshape(1, -1).bool()
    span = int(mask.sum())  # padding is masked anyway: the encoder runs over the real tokens only
    if span == 0 or ids.shape != mask.shape:
        raise CrayonboxError(f"text ids {tuple(ids.shape)} and mask {tuple(mask.shape)} must match, mask not empty")
    ids, mask = ids[:, :span].to(device), mask[:, :span].to(device)
    return bart.encoder(ids, mask), mask


def _log_likelihood(bart: torch.nn.Module, text: tuple[Tensor, Tensor], tokens: LongTensor) -> Tensor:
    """Σ_t log p(x_t | x_<t, text) per row, over the image codes only, as the sampler normalises them."""
    states, mask = text
    rows = tokens.shape[0]
    bos = tokens.new_full((rows, 1), bart.cfg.bos_token_id)
    logits = bart.decoder(torch.cat([bos, tokens[:, :-1]], 1), states.expand(rows, -1, -1), mask.expand(rows, -1))
    logits = logits[..., :bart.cfg.image_vocab_size]
    logp = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)  # fp16/bf16 → fp32
    return logp.gather(-1, tokens[..., None])[..., 0].double().sum(1)


def likelihood_scores(bart: torch.nn.Module, text_ids_probe: Tensor, mask_probe: Tensor, text_ids_uncond: Tensor,
                      mask_uncond: Tensor, image_tokens: LongTensor, batch: int = 256,
                      progress: bool = False) -> np.ndarray:
    """Per row of image_tokens (N, L): log p(tokens | probe ids) − log p(tokens | unconditional ids), in nats."""

    cfg = bart.cfg
    tokens = torch.as_tensor(image_tokens).long()
    if tokens.ndim != 2 or tokens.shape[1] != cfg.image_length:
        raise CrayonboxError(f"image tokens must be (N, {cfg.image_length}), got {tuple(tokens.shape)}")
    if tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < cfg.image_vocab_size:
        raise CrayonboxError(f"image tokens must be codes 0..{cfg.image_vocab_size - 1}: another VQGAN's tokens?")
    if batch < 1:
        raise CrayonboxError(f"batch must be at least 1, got {batch}")
    device = next(bart.parameters()).device
    rows = max(1, min(batch, LOGIT_CELLS // (cfg.image_length * cfg.image_embed_rows)))
    out = np.empty(len(tokens))
    with torch.inference_mode():
        probe = _encode(bart, text_ids_probe, mask_probe, device)
        uncond = _encode(bart, text_ids_uncond, mask_uncond, device)
        for start in tqdm(range(0, len(tokens), rows), desc="likelihood", unit="batch", disable=not progress):
            x = tokens[start:start + rows].to(device)
            out[start:start + rows] = (_log_likelihood(bart, probe, x) - _log_likelihood(bart, uncond, x)).cpu()
    return out


@dataclass(frozen=True)
class GroupScore(StatsResult):
    """The likelihood score of one caption group's training items."""

    group: str
    n: int
    mean: Interval  # mean score (nats), bootstrap percentile interval over the group's items
    median: float
    std: float
    rank: int  # 1 = the group the prompt favours most (highest mean)


def score_by_group(scores: np.ndarray, groups: Sequence[str], confidence: float = 0.95, seed: int = 0,
                   draws: int = DRAWS) -> list[GroupScore]:
    """Mean likelihood score per group with a bootstrap interval, highest mean first."""
    check_confidence(confidence)
    scores, labels = np.asarray(scores, dtype=float), np.asarray(list(groups), dtype=object)
    if scores.ndim != 1 or len(scores) != len(labels) or len(scores) == 0 or not np.all(np.isfinite(scores)):
        raise CrayonboxError(f"need one finite score per group label, got {scores.shape} scores, {len(labels)} labels")
    rng = np.random.default_rng(seed)
    out = []
    for name in np.unique(labels):
        x = scores[labels == name]
        means = _resampled_sums(x[:, None], draws, rng)[:, 0] / len(x)
        low, high = _percentiles(means, confidence)
        out.append((str(name), len(x), Interval(float(x.mean()), float(low), float(high), confidence,
                                                "bootstrap-percentile"), float(np.median(x)), float(x.std())))
    out.sort(key=lambda r: (-r[2].estimate, r[0]))
    return [GroupScore(*row, rank=i + 1) for i, row in enumerate(out)]


@dataclass(frozen=True)
class LikelihoodAttribution(StatsResult):
    """What `attribute_likelihood` found for one prompt, per caption group."""

    prompt: str  # the prompt's label ('""' for the blank prompt, <unconditional ids> for the control)
    probe_ids: tuple[int, ...]
    uncond_ids: tuple[int, ...]
    n_items: int  # items scored
    n_without_group: int  # parquet rows whose key has no group: left out
    groups: tuple[GroupScore, ...]


def read_tokens(path: Path, groups_by_key: dict[str, str], limit: int | None) -> tuple[list[str], LongTensor, int]:
    """Keys and codes (N, L) of the parquet rows (a file or a folder of them) that have a group."""

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise CrayonboxError(f"no token parquet at {path}: a training run folder holds tokens.parquet")
    keys, rows, skipped = [], [], 0
    for file in files:
        table = pq.read_table(file, columns=["key", "encoding"])
        for key, codes in zip(table.column("key").to_pylist(), table.column("encoding").to_pylist(), strict=True):
            if key not in groups_by_key:
                skipped += 1
            elif limit is None or len(keys) < limit:
                keys.append(key)
                rows.append(codes)
    if not keys:
        raise CrayonboxError(f"none of the {skipped} rows of {path} has a group in groups_by_key: wrong run?")
    if len({len(r) for r in rows}) > 1:
        raise CrayonboxError(f"{path}: encodings have different lengths; encode all images with one VQGAN")
    return keys, torch.tensor(rows, dtype=torch.long), skipped


def attribute_likelihood(model_folder: Path, prompt: str | PromptSpec, tokens_parquet: Path,
                         groups_by_key: dict[str, str], limit: int | None = None, progress: bool = True,
                         confidence: float = 0.95, seed: int = 0, batch: int = 256) -> LikelihoodAttribution:
    """Score every grouped training item for `prompt` (as the probe encodes it) and summarise by group."""

    spec = prompt if isinstance(prompt, PromptSpec) else UNCONDITIONAL if prompt == UNCONDITIONAL.label \
        else PromptSpec(prompt, "attribution")
    pipe = Pipeline.from_pretrained(model_folder)
    probe, uncond = encode_spec(pipe.tokenizer, spec), pipe.tokenizer.unconditional()
    if probe.ids == uncond.ids:
        raise CrayonboxError(f"{spec.label} reaches the model as the unconditional ids: every score would be 0")
    keys, tokens, skipped = read_tokens(tokens_parquet, groups_by_key, limit)
    scores = likelihood_scores(pipe.bart, torch.tensor(probe.ids), torch.tensor(probe.attention_mask),
                               torch.tensor(uncond.ids), torch.tensor(uncond.attention_mask), tokens, batch, progress)
    real = [i for i, m in zip(probe.ids, probe.attention_mask, strict=True) if m]
    real_u = [i for i, m in zip(uncond.ids, uncond.attention_mask, strict=True) if m]
    return LikelihoodAttribution(spec.label, tuple(real), tuple(real_u), len(keys), skipped,
                                 tuple(score_by_group(scores, [groups_by_key[k] for k in keys], confidence, seed)))


# ---------------------------------------------------------------------------- (c) neighbours of a probe run
def ids_predicate(token_ids: Sequence[int]) -> Callable[[ImageRecord], bool]:
    """Select the probe images whose conditional ids were exactly these (padding left out)."""
    wanted = [int(i) for i in token_ids]
    return lambda record: list(record.token_ids) == wanted


def _train_batches(world: Path, groups_by_key: dict[str, str], limit: int | None,
                   batch: int) -> Iterator[tuple[list[str], list]]:
    """(keys, RGB images) of the first `limit` grouped items of the world's shards, `batch` at a time."""

    items = islice((item for item in iter_items(Path(world)) if item.key in groups_by_key), limit)
    while chunk := list(islice(items, batch)):
        yield [item.key for item in chunk], [decode_image(item) for item in chunk]


def attribute_neighbours(probe_run: Path, target_prompt_keys: Collection[str] | Callable[[ImageRecord], bool],
                         train_world: Path, groups_by_key: dict[str, str],
                         extractor: FeatureExtractor | None = None, k: int = 10, limit: int | None = None,
                         condition_scale: float | None = None, confidence: float = 0.95, seed: int = 0,
                         batch: int = 256, progress: bool = True) -> NeighbourResult:
    """`neighbour_enrichment` for a probe run: targets are the images whose prompt key (PromptSpec.key, e.g.
    "normalised:" for the blank prompt) is in `target_prompt_keys`, or that a predicate selects (see
    `ids_predicate`); the training items are the first `limit` grouped items of the world's shards."""


    extractor = extractor or ColourLayoutFeatures()
    with RunStore.open(probe_run) as store:
        records = [r for r in store.images() if condition_scale is None or r.condition_scale == condition_scale]
        if not records:
            raise CrayonboxError(f"{probe_run} holds no images at condition scale {condition_scale}")
        if callable(target_prompt_keys):
            is_target = [bool(target_prompt_keys(r)) for r in records]
        else:
            unknown = set(target_prompt_keys) - {r.prompt_key for r in records}
            if unknown:
                raise CrayonboxError(f"no images for prompt key(s) {sorted(unknown)[:3]}: keys read 'normalised:a dog'")
            is_target = [r.prompt_key in target_prompt_keys for r in records]
        shas = [r.sha256 for r in records]
        query = embed_images(store, extractor, shas, {r.sha256: r.path for r in records}, batch, progress)
    keys, parts = [], []
    for chunk_keys, images in tqdm(_train_batches(train_world, groups_by_key, limit, batch),
                                   desc="training features", unit="batch", disable=not progress):
        keys += chunk_keys
        parts.append(extractor.embed(images))
    if not keys:
        raise CrayonboxError(f"no item of {train_world} has a group in groups_by_key: wrong world folder?")
    return neighbour_enrichment(query, np.asarray(is_target), np.concatenate(parts), [groups_by_key[x] for x in keys],
                                k, confidence, seed, train_keys=keys, query_ids=shas)
