"""The VQGAN's object-aware reconstruction weight: masks from world metadata, the weighted losses, and a
short run on striped backgrounds where weighting the objects' boxes buys a sharper object."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.train.vqgan import (
    VQGANTrainConfig,
    load_images,
    object_mask,
    pixel_weights,
    reconstruction_losses,
    train_vqgan,
)
from tests.train.conftest import COLOURS


def test_object_mask_covers_every_box_scaled_to_the_resolution():
    meta = {"world": {"size": 32, "objects": [{"bbox": [2, 4, 10, 12]}, {"bbox": [20, 20, 32, 31]}]}}
    mask = object_mask(meta, 16)
    expected = np.zeros((16, 16), dtype=bool)
    expected[2:6, 1:5] = True  # rows y0..y1, columns x0..x1, halved
    expected[10:16, 10:16] = True  # 31 / 2 = 15.5 rounds out to the edge
    assert np.array_equal(mask, expected)
    assert object_mask({"width": 16}, 16) is None  # nothing says where objects are
    assert not object_mask({"world": {"size": 16, "objects": []}}, 16).any()  # a bare background: none


def test_pixel_weights_keep_a_mean_of_one_and_the_asked_ratio():
    masks = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    masks[0, 0, :2, :2] = True
    weights = pixel_weights(masks, 5.0)
    assert weights.mean().item() == pytest.approx(1.0)
    assert (weights[0, 0, 0, 0] / weights[0, 0, 3, 3]).item() == pytest.approx(5.0)
    assert pixel_weights(masks, 1.0) is None and pixel_weights(None, 5.0) is None


def test_weighted_losses_count_an_error_by_where_it_is():
    x = torch.zeros(1, 3, 4, 4)
    inside, outside = x.clone(), x.clone()
    inside[..., 0, 0] = 1.0
    outside[..., 3, 3] = 1.0
    masks = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    masks[..., :2, :2] = True
    weights = pixel_weights(masks, 4.0)
    plain = reconstruction_losses(inside, x, None)
    assert [t.item() for t in reconstruction_losses(inside, x, torch.ones(1, 1, 4, 4))] == pytest.approx(
        [t.item() for t in plain])
    l1_in, l2_in, edge_in = reconstruction_losses(inside, x, weights)
    l1_out, l2_out, edge_out = reconstruction_losses(outside, x, weights)
    assert (l1_in / l1_out).item() == pytest.approx(4.0) and (l2_in / l2_out).item() == pytest.approx(4.0)
    assert edge_in.item() > 2 * edge_out.item()
    assert l1_in.item() == pytest.approx(plain[0].item() * weights[0, 0, 0, 0].item())


def _striped_items(n: int, size: int = 16):
    """A square on a background of fine stripes; the metadata places the square (as world items do)."""
    from crayonbox.data.shards import Item

    names = list(COLOURS)
    items = []
    for i in range(n):
        square, a, b = (COLOURS[names[(i + k) % len(names)]] for k in (0, 2, 4))
        pixels = np.empty((size, size, 3), dtype=np.uint8)
        pixels[:] = a
        pixels[:, (i % 2)::2] = b  # one-pixel stripes: costly to reconstruct, and nobody asks for them
        lo = 4 + i % 3
        pixels[lo:lo + 6, lo:lo + 6] = square
        pixels[lo + 2:lo + 4, lo + 1:lo + 5] = COLOURS[names[(i + 1) % len(names)]]  # a detail in the object
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        world = {"size": size, "objects": [{"bbox": [lo, lo, lo + 6, lo + 6]}]}
        items.append(Item(f"{i:09d}", buffer.getvalue(), "png", "a square", {"world": world}))
    return items


@pytest.fixture(scope="module")
def striped_shards(tmp_path_factory):
    from crayonbox.data.shards import write_shard

    folder = tmp_path_factory.mktemp("striped") / "shards"
    folder.mkdir()
    write_shard(folder / "00000.tar", _striped_items(96))
    return folder


def test_weighting_the_objects_buys_a_sharper_object(striped_shards, tmp_path, micro_preset):
    _, _, masks = load_images(striped_shards, 16, progress=False, with_masks=True)
    assert masks is not None and masks.shape == (96, 1, 16, 16) and masks.float().mean().item() == pytest.approx(
        36 / 256)
    common = dict(data=str(striped_shards), preset=micro_preset, steps=120, batch_size=16, kmeans_batches=2,
                  eval_every=120, eval_fraction=0.2, checkpoint_every=120, progress=False, threads=1,
                  quantize_after=40, learning_rate=3e-3, warmup_steps=10)
    uniform = train_vqgan(VQGANTrainConfig(out=str(tmp_path / "uniform"), **common))
    weighted = train_vqgan(VQGANTrainConfig(out=str(tmp_path / "weighted"), object_weight=8.0, **common))
    assert weighted["eval_psnr_objects"] > uniform["eval_psnr_objects"] + 1.0, (weighted, uniform)
    assert weighted["config"]["object_weight"] == 8.0
    header = (tmp_path / "weighted" / "train" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "eval_psnr_objects" in header
    assert json.loads((tmp_path / "weighted" / "report.json").read_text())["eval_psnr_objects"] == pytest.approx(
        weighted["eval_psnr_objects"])


def test_an_object_weight_needs_data_that_places_its_objects(toy_shards, tmp_path, micro_preset):
    with pytest.raises(CrayonboxError, match="does not say where its objects are"):
        train_vqgan(VQGANTrainConfig(data=str(toy_shards), out=str(tmp_path / "v"), preset=micro_preset, steps=2,
                                     object_weight=4.0, progress=False, threads=1))
    with pytest.raises(CrayonboxError, match="must be positive"):
        train_vqgan(VQGANTrainConfig(data=str(toy_shards), out=str(tmp_path / "w"), preset=micro_preset, steps=2,
                                     object_weight=0.0, progress=False, threads=1))


def test_finetuning_the_decoder_keeps_every_code_and_sharpens_the_weighted_objects(striped_shards, tmp_path,
                                                                                      micro_preset):
    from crayonbox.model.images import to_unit
    from crayonbox.model.vqgan_io import load_vqgan
    from crayonbox.train.vqgan import evaluate

    common = dict(data=str(striped_shards), batch_size=16, eval_every=60, eval_fraction=0.2, checkpoint_every=60,
                  progress=False, threads=1, learning_rate=3e-3, warmup_steps=10)
    train_vqgan(VQGANTrainConfig(out=str(tmp_path / "base"), preset=micro_preset, steps=120, kmeans_batches=2,
                                 quantize_after=40, **common))
    tuned = {w: train_vqgan(VQGANTrainConfig(out=str(tmp_path / f"w{w:g}"), finetune_decoder=str(tmp_path / "base"),
                                             object_weight=w, steps=60, **common)) for w in (1.0, 8.0)}
    assert tuned[8.0]["eval_psnr_objects"] > tuned[1.0]["eval_psnr_objects"] + 3.0, tuned  # 21.3 vs 12.0 dB here
    assert tuned[8.0]["finetuned_from"] == str((tmp_path / "base").resolve())

    base, _ = load_vqgan(tmp_path / "base")
    sharper, _ = load_vqgan(tmp_path / "w8")
    before, after = base.state_dict(), sharper.state_dict()
    frozen = [k for k in before if not k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    _, pixels, masks = load_images(striped_shards, 16, progress=False, with_masks=True)
    with torch.no_grad():  # a transformer trained on the base's codes still fits
        assert torch.equal(base.encode(to_unit(pixels)), sharper.encode(to_unit(pixels)))
    assert evaluate(sharper, pixels, masks)["eval_psnr_objects"] > evaluate(base, pixels, masks)["eval_psnr_objects"]


def test_finetuning_a_decoder_keeps_its_codebook_size(toy_shards, tmp_path, micro_preset):
    train_vqgan(VQGANTrainConfig(data=str(toy_shards), out=str(tmp_path / "base"), preset=micro_preset, steps=4,
                                 batch_size=8, kmeans_batches=1, progress=False, threads=1))
    with pytest.raises(CrayonboxError, match="differs from the .* codes"):
        train_vqgan(VQGANTrainConfig(data=str(toy_shards), out=str(tmp_path / "tuned"), n_embed=7,
                                     finetune_decoder=str(tmp_path / "base"), steps=2, progress=False, threads=1))
    assert not (tmp_path / "tuned").exists()
    with pytest.raises(CrayonboxError, match="no VQGAN in"):
        train_vqgan(VQGANTrainConfig(data=str(toy_shards), out=str(tmp_path / "tuned"), steps=2, progress=False,
                                     finetune_decoder=str(tmp_path / "nothing"), threads=1))
