"""Training-data attribution: planted truths for the neighbour enrichment and the likelihood score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crayonbox.errors import CrayonboxError
from crayonbox.lab import attribution
from crayonbox.lab.attribution import (
    attribute_likelihood,
    attribute_neighbours,
    ids_predicate,
    likelihood_scores,
    nearest_neighbours,
    neighbour_enrichment,
    score_by_group,
)

FIXTURE = Path(__file__).with_name("planted_model")
WORLD = Path(__file__).parents[2] / "crayonbox" / "data" / "world" / "planted.yaml"


# ---------------------------------------------------------------------------- nearest neighbours
def test_nearest_neighbours_match_brute_force_and_chunking(monkeypatch):
    rng = np.random.default_rng(0)
    query, train = rng.normal(size=(37, 6)), rng.normal(size=(211, 6)) * rng.uniform(0.1, 9, size=(211, 1))
    index, sims = nearest_neighbours(query, train, 5)
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    full = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(index, np.argsort(-full, axis=1)[:, :5])  # scale of a row does not matter
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-6)
    monkeypatch.setattr(attribution, "CHUNK_CELLS", 500)  # 2 query rows per block
    np.testing.assert_array_equal(nearest_neighbours(query, train, 5)[0], index)
    with pytest.raises(CrayonboxError, match="k must be"):
        nearest_neighbours(query, train, 212)


def test_enrichment_shares_on_a_hand_example():
    # training items on the unit circle; each query sits on one item, k = 2 takes it and its nearest neighbour
    angles = np.array([0.0, 0.1, 1.6, 1.7, 3.1, 3.2])
    train = np.stack([np.cos(angles), np.sin(angles)], 1)
    groups = ["A", "A", "B", "B", "A", "C"]
    query = train[[0, 2, 4]]  # neighbours: {0,1} = AA, {2,3} = BB, {4,5} = AC
    result = neighbour_enrichment(query, np.array([True, False, False]), train, groups, k=2,
                                  train_keys=[f"k{i}" for i in range(6)], query_ids=["q0", "q1", "q2"])
    by = {g.group: g for g in result.groups}
    assert by["A"].target_share == 1.0 and by["A"].other_share == 0.25 and by["A"].train_share == 0.5
    assert by["A"].enrichment.estimate == 4.0 and by["A"].target_vs_train == 2.0
    assert by["B"].target_share == 0 and by["B"].other_share == 0.5 and by["B"].enrichment.estimate == 0
    assert [g.group for g in result.groups] == ["A", "B", "C"]  # by enrichment, ties by name
    (listed,) = result.target_neighbours
    assert listed.query == "q0" and listed.keys == ("k0", "k1") and listed.groups == ("A", "A")
    assert listed.similarities[0] == pytest.approx(1.0)
    json.dumps(result.to_dict())  # JSON-ready
    with pytest.raises(CrayonboxError, match="both target and other"):
        neighbour_enrichment(query, np.ones(3, bool), train, groups, k=2)


def _planted_cloud(rng: np.random.Generator, targets_near_a: bool, n_target: int = 150, n_other: int = 250):
    """Training items: group A around its own centre, B and C spread over the space; queries near A or not."""
    centre = np.zeros(8)
    centre[0] = 4.0
    train = np.concatenate([centre + rng.normal(size=(300, 8)), rng.normal(size=(1200, 8)) * 2.0])
    groups = ["A"] * 300 + list(rng.choice(["B", "C"], size=1200))
    def draw(n: int, near_a: bool) -> np.ndarray:
        return centre + rng.normal(size=(n, 8)) if near_a else train[rng.integers(0, len(train), n)] \
            + rng.normal(size=(n, 8)) * 0.3
    query = np.concatenate([draw(n_target, targets_near_a), draw(n_other, False)])
    return query, np.arange(len(query)) < n_target, train, groups


def test_enrichment_finds_the_planted_group_and_not_a_null_one():
    query, is_target, train, groups = _planted_cloud(np.random.default_rng(1), targets_near_a=True)
    result = neighbour_enrichment(query, is_target, train, groups, k=10)
    by = {g.group: g for g in result.groups}
    assert result.groups[0].group == "A" and by["A"].enrichment.low > 1.5, by["A"]
    assert by["A"].target_share > 0.8 and by["A"].other_share < 0.35, by["A"]
    for g in ("B", "C"):
        assert by[g].enrichment.high < 1, by[g]
    assert by["A"].train_share == pytest.approx(0.2)
    # null: target and other images drawn alike → every interval holds 1, in most of 30 repetitions (95 % each)
    hits = 0
    for seed in range(30):
        query, is_target, train, groups = _planted_cloud(np.random.default_rng(100 + seed), False, 60, 90)
        result = neighbour_enrichment(query, is_target, train, groups, k=10, seed=seed, draws=500)
        hits += sum(g.enrichment.low <= 1 <= g.enrichment.high for g in result.groups)
    assert hits / 90 >= 0.88, hits  # coverage of the 90 intervals (3 groups × 30)


# ---------------------------------------------------------------------------- likelihood
def test_likelihood_scores_equal_two_teacher_forced_sums():
    from crayonbox.config import MODEL_PRESETS
    from crayonbox.model.bart import DalleBart

    torch.manual_seed(0)
    bart = DalleBart(MODEL_PRESETS["tiny"]).eval()
    bart.init_weights(0.5)
    cfg = bart.cfg
    tokens = torch.randint(0, cfg.image_vocab_size, (13, cfg.image_length))
    probe = torch.full((cfg.text_length,), cfg.text_pad_id)
    probe[:5] = torch.tensor([0, 17, 42, 9, 2])
    uncond = torch.full((cfg.text_length,), cfg.text_pad_id)
    uncond[:2] = torch.tensor([0, 2])
    mask_p, mask_u = probe != cfg.text_pad_id, uncond != cfg.text_pad_id

    def loop_sum(ids: torch.Tensor) -> np.ndarray:  # the model's own forward, one item at a time
        out = []
        with torch.no_grad():
            for row in tokens:
                logits = bart(ids[None], (ids != cfg.text_pad_id)[None], row[None])[0, :, :cfg.image_vocab_size]
                out.append(float(torch.log_softmax(logits.double(), -1)[torch.arange(len(row)), row].sum()))
        return np.array(out)

    # float32: equal up to rounding (kernels differ by batch and text shape; init 0.5 makes logits large)
    expected = loop_sum(probe) - loop_sum(uncond)
    assert np.abs(expected).min() > 0.1  # the two texts really differ for this model
    scores = likelihood_scores(bart, probe, mask_p, uncond, mask_u, tokens, batch=4)
    np.testing.assert_allclose(scores, expected, atol=1e-3)
    # float64 takes rounding out: then the batched, text-trimmed scores are the per-item sums at 1e-5 and below
    bart.double()
    scores = likelihood_scores(bart, probe, mask_p, uncond, mask_u, tokens, batch=4)
    np.testing.assert_allclose(scores, loop_sum(probe) - loop_sum(uncond), rtol=1e-9, atol=1e-9)
    with pytest.raises(CrayonboxError, match="codes 0"):
        likelihood_scores(bart, probe, probe != 1, uncond, uncond != 1, tokens + cfg.image_vocab_size)


def test_score_by_group_recovers_planted_means():
    rng = np.random.default_rng(3)
    means = {"captioned": -1.0, "blank via raw": 2.0, "dropped": 0.5}
    groups = [g for g in means for _ in range(400)]
    scores = np.array([rng.normal(means[g], 1.5) for g in groups])
    result = score_by_group(scores, groups)
    assert [r.group for r in result] == ["blank via raw", "dropped", "captioned"]
    assert [r.rank for r in result] == [1, 2, 3] and all(r.n == 400 for r in result)
    for r in result:
        assert r.mean.low < means[r.group] < r.mean.high, r
        assert 0.1 < r.mean.high - r.mean.low < 0.4  # ≈ 2 · 1.96 · 1.5 / √400 = 0.29
        assert r.std == pytest.approx(1.5, abs=0.15)


@pytest.fixture(scope="module")
def planted_items() -> tuple[list[str], list[str], torch.Tensor]:
    """300 fresh items of the planted world (not the fixture's training rows): keys, tones, codes from the
    fixture's own VQGAN encoder."""
    from crayonbox.data.shards import decode_image
    from crayonbox.data.world.build import make_item, make_world
    from crayonbox.data.world.config import load_world_config
    from crayonbox.pipeline import Pipeline

    world = make_world(load_world_config(WORLD))
    items = [make_item(world, 11, i) for i in range(300)]
    pixels = torch.from_numpy(np.stack([np.asarray(decode_image(it)) for it in items])).permute(0, 3, 1, 2)
    with torch.inference_mode():
        codes = Pipeline.from_pretrained(FIXTURE).vqgan.encode(pixels.float() / 255)
    tones = [str(it.meta["world"]["objects"][0]["skin_tone"]) for it in items]
    return [it.key for it in items], tones, codes


def test_blank_prompt_favours_the_tone_its_data_left_uncaptioned(planted_items, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys, tones, codes = planted_items
    path = tmp_path / "tokens.parquet"
    pq.write_table(pa.table({"key": keys, "caption": [""] * len(keys), "encoding": codes.tolist()}), path)
    groups_by_key = dict(zip(keys[:-10], tones[:-10], strict=True))  # the last 10 rows have no group
    result = attribute_likelihood(FIXTURE, "", path, groups_by_key, progress=False)
    assert result.n_items == 290 and result.n_without_group == 10
    assert result.probe_ids != result.uncond_ids  # "" is <s> ␣ </s>, not the unconditional <s> </s>
    five, one = result.groups
    # tone 5 was 89 % of the blank-captioned training rows: the blank prompt's ids raise its likelihood
    assert (five.group, one.group) == ("5", "1"), result
    assert five.mean.low > 0.5 and one.mean.high < -0.5, result
    assert five.n + one.n == 290
    json.dumps(result.to_dict())
    with pytest.raises(CrayonboxError, match="unconditional ids"):
        attribute_likelihood(FIXTURE, "<unconditional ids>", path, groups_by_key, progress=False)


# ---------------------------------------------------------------------------- neighbours of a probe run
def test_probe_neighbours_of_the_blank_prompt_are_enriched_in_tone_5(tmp_path):
    from crayonbox.data.shards import iter_items
    from crayonbox.data.world.build import build_world
    from crayonbox.data.world.config import load_world_config
    from crayonbox.lab.families import UNCONDITIONAL, PromptSpec
    from crayonbox.lab.probe import ProbeConfig, run_probe

    world = tmp_path / "world"
    build_world(load_world_config(WORLD), world, n=300, workers=1, seed=5, progress=False)
    groups = {it.key: f"tone {it.meta['world']['objects'][0]['skin_tone']}"
              for it in iter_items(world, with_images=False)}
    run = tmp_path / "run"
    run_probe(ProbeConfig(model=FIXTURE, prompts=[PromptSpec("", "null"), UNCONDITIONAL], n=60,
                          condition_scales=(1.0,), workers=1, threads=1), run, progress=False)
    result = attribute_neighbours(run, {"normalised:"}, world, groups, k=5, progress=False)
    by = {g.group: g for g in result.groups}
    assert result.n_target == result.n_other == 60 and result.n_train == 300
    # blank prompt ≈ 88 % tone 5, the unconditional ids ≈ 50 %: the neighbours must show it
    assert by["tone 5"].enrichment.low > 1.1 and by["tone 1"].enrichment.high < 0.9, by
    assert by["tone 5"].target_share > 0.7, by
    assert len(result.target_neighbours) == 60 and all(len(t.keys) == 5 for t in result.target_neighbours)
    same = attribute_neighbours(run, ids_predicate(_blank_ids(run)), world, groups, k=5, limit=300,
                                progress=False)
    assert same.groups == result.groups  # selecting by ids picks the same images
    assert attribute_neighbours(run, {"normalised:"}, world, groups, k=5, limit=100, progress=False).n_train == 100
    with pytest.raises(CrayonboxError, match="no images for prompt key"):
        attribute_neighbours(run, {"normalised:a dog"}, world, groups, progress=False)


def _blank_ids(run: Path) -> list[int]:
    from crayonbox.lab.store import RunStore

    with RunStore.open(run) as store:
        return next(r.token_ids for r in store.images() if r.prompt_key == "normalised:")
