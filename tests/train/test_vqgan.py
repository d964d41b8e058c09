"""VQGAN training: the EMA codebook, dead-code restarts, k-means init, and a short run that learns."""

from __future__ import annotations

import json

import pytest
import torch

from crayonbox.errors import CrayonboxError
from crayonbox.model.vqgan_io import load_vqgan
from crayonbox.train.vqgan import EMACodebook, VQGANTrainConfig, kmeans, train_vqgan
from tests.train.conftest import MICRO_VQGAN


def test_ema_update_moves_used_codes_towards_their_mean():
    weight = torch.zeros(4, 2)
    book = EMACodebook(weight, decay=0.5)
    flat = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 6.0]])
    ids = torch.tensor([1, 1, 3])
    for step in range(30):
        book.update(flat, ids, step)
    assert torch.allclose(weight[1], torch.tensor([3.0, 0.0]), atol=1e-3)  # mean of its two vectors
    assert torch.allclose(weight[3], torch.tensor([0.0, 6.0]), atol=1e-3)
    assert book.last_used.tolist() == [0, 29, 0, 29]


def test_dead_codes_restart_at_encoder_outputs():
    weight = torch.zeros(4, 2)
    book = EMACodebook(weight, decay=0.9)
    flat = torch.tensor([[5.0, 5.0], [7.0, 7.0]])
    book.update(flat, torch.tensor([0, 0]), step=0)
    restarted = book.restart_dead(flat, step=10, dead_after=5, gen=torch.Generator().manual_seed(0))
    assert restarted == 4  # code 0 was last used at step 0 too
    assert all(any(torch.equal(row, f) for f in flat) for row in weight)
    assert book.restart_dead(flat, step=11, dead_after=5, gen=torch.Generator()) == 0


def test_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centres])
    found = kmeans(points, 3, iterations=10, gen=torch.Generator().manual_seed(1))
    assert torch.cdist(centres, found).min(1).values.max() < 0.2


def test_a_short_run_learns_to_reconstruct_and_uses_the_codebook(toy_vqgan, toy_shards):
    from crayonbox.model.vqgan import VQGAN
    from crayonbox.train.data import held_out
    from crayonbox.train.vqgan import evaluate, load_images

    report = json.loads((toy_vqgan / "report.json").read_text())
    assert report["steps"] == 40 and report["images"]["eval"] > 5
    keys, pixels, _ = load_images(toy_shards, 16, progress=False)
    torch.manual_seed(0)
    untrained = evaluate(VQGAN(MICRO_VQGAN), pixels[held_out(keys, 0.15)])
    assert report["eval_psnr"] > untrained["eval_psnr"] + 1.5, (report["eval_psnr"], untrained["eval_psnr"])
    assert report["eval_usage"] > 0.3 and report["eval_perplexity"] > 8  # k-means init: no collapsed codebook
    model, info = load_vqgan(toy_vqgan)
    assert info["report"]["eval_psnr"] == report["eval_psnr"] and model.cfg.n_embed == 64
    assert sorted(p.name for p in (toy_vqgan / "vqgan").iterdir()) == ["config.json", "model.safetensors"]
    assert (toy_vqgan / "train" / "reconstructions.png").exists()
    rows = (toy_vqgan / "train" / "metrics.csv").read_text().splitlines()
    assert rows[20].split(",")[6] == "0.0" and float(rows[21].split(",")[6]) > 0  # commitment from step 21


def test_resume_continues_to_the_same_weights(toy_shards, tmp_path, micro_preset):
    common = dict(data=str(toy_shards), preset=micro_preset, batch_size=8, kmeans_batches=1, eval_every=4,
                  eval_fraction=0.15, checkpoint_every=2, progress=False, threads=1, dead_after=1,
                  quantize_after=2)
    train_vqgan(VQGANTrainConfig(out=str(tmp_path / "a"), steps=6, **common))
    train_vqgan(VQGANTrainConfig(out=str(tmp_path / "b"), steps=6, max_minutes=1e-9, **common))  # stops at 1
    with pytest.raises(CrayonboxError, match="--resume"):
        train_vqgan(VQGANTrainConfig(out=str(tmp_path / "b"), steps=6, **common))
    train_vqgan(VQGANTrainConfig(out=str(tmp_path / "b"), steps=6, resume=True, **common))
    a, _ = load_vqgan(tmp_path / "a")
    b, _ = load_vqgan(tmp_path / "b")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    rows = (tmp_path / "b" / "train" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_n_embed_sizes_the_codebook_and_a_resume_must_keep_it(toy_shards, tmp_path, micro_preset):
    common = dict(data=str(toy_shards), preset=micro_preset, batch_size=8, kmeans_batches=1, eval_every=4,
                  eval_fraction=0.15, checkpoint_every=2, progress=False, threads=1, quantize_after=2)
    train_vqgan(VQGANTrainConfig(out=str(tmp_path / "a"), steps=4, max_minutes=1e-9, n_embed=24, **common))
    with pytest.raises(CrayonboxError, match="cannot resume"):  # the checkpoint's codebook has 24 codes
        train_vqgan(VQGANTrainConfig(out=str(tmp_path / "a"), steps=4, resume=True, **common))
    train_vqgan(VQGANTrainConfig(out=str(tmp_path / "a"), steps=4, resume=True, n_embed=24, **common))
    model, info = load_vqgan(tmp_path / "a")
    assert model.cfg.n_embed == 24 and model.quantize.embedding.weight.shape[0] == 24
    assert MICRO_VQGAN.n_embed != 24  # the preset itself is left alone
    with pytest.raises(CrayonboxError, match="--n-embed must be at least 2"):
        train_vqgan(VQGANTrainConfig(out=str(tmp_path / "b"), steps=4, n_embed=-1, **common))
    assert not (tmp_path / "b").exists()  # refused before it claims a folder


def test_missing_data_is_a_clear_error(tmp_path, micro_preset):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrayonboxError, match="no images"):
        train_vqgan(VQGANTrainConfig(data=str(tmp_path / "empty"), out=str(tmp_path / "o"),
                                     preset=micro_preset, progress=False))
    with pytest.raises(CrayonboxError, match="no VQGAN"):
        load_vqgan(tmp_path)


def test_inference_decode_in_place_matches_autograd_decode():
    """Without autograd the resnet blocks work in place (faster); with it they must not (training). Both give
    the same pixels, and the autograd path still backpropagates."""
    from crayonbox.model.vqgan import VQGAN

    torch.manual_seed(0)
    vqgan = VQGAN(MICRO_VQGAN).eval()
    tokens = torch.randint(0, MICRO_VQGAN.n_embed, (2, MICRO_VQGAN.tokens_side**2))
    with torch.inference_mode():
        fast = vqgan.decode(tokens)
    slow = vqgan.decode(tokens)
    assert slow.requires_grad
    assert torch.allclose(fast, slow.detach(), atol=1e-6)
    slow.sum().backward()
    assert vqgan.decoder.conv_out.weight.grad is not None
