"""Pipeline under diffusers' argument names: aliases, generators, output types, devices, bad prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crayonbox.errors import CrayonboxError
from crayonbox.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


def test_aliases_give_the_same_images(pipe):
    ours = pipe("a red dog", num_images=2, seed=3, condition_scale=5.0)
    theirs = pipe("a red dog", num_images_per_prompt=2, seed=3, guidance_scale=5.0)
    assert torch.equal(ours.tokens, theirs.tokens) and theirs.settings.condition_scale == 5.0


@pytest.mark.parametrize("kwargs, names", [
    (dict(num_images=2, num_images_per_prompt=2), "num_images and num_images_per_prompt"),
    (dict(condition_scale=2.0, guidance_scale=2.0), "condition_scale and guidance_scale"),
    (dict(seed=1, generator=torch.Generator().manual_seed(1)), "seed and generator"),
])
def test_both_names_of_one_setting_are_refused(pipe, kwargs, names):
    with pytest.raises(CrayonboxError, match=names):
        pipe("a dog", **kwargs)


def test_from_pretrained_aliases(tiny_model_dir):
    with pytest.raises(CrayonboxError, match="dtype and torch_dtype"):
        Pipeline.from_pretrained(tiny_model_dir, dtype="float32", torch_dtype=torch.float32)
    half = Pipeline.from_pretrained(tiny_model_dir, torch_dtype=torch.bfloat16, device="cpu")
    assert half.dtype == torch.bfloat16 and half.device == torch.device("cpu")


def test_one_generator_fixes_the_base_seed(pipe):
    expected = int(torch.randint(2**31, (1,), generator=torch.Generator().manual_seed(42)))
    out = pipe("a red dog", num_images=3, generator=torch.Generator().manual_seed(42))
    assert out.seeds == [expected, expected + 1, expected + 2]
    assert torch.equal(out.tokens, pipe("a red dog", num_images=3, seed=expected).tokens)


def test_a_generator_per_image(pipe):
    gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9, 10)]
    out = pipe(["a dog", "a cat"], num_images=2, generator=gens)
    seeds = [int(torch.randint(2**31, (1,), generator=torch.Generator().manual_seed(s))) for s in (7, 8, 9, 10)]
    assert out.seeds == seeds and out.prompts == ["a dog", "a dog", "a cat", "a cat"]
    # image 3 ("a cat", its own generator) is the image that seed draws alone: seeds do not depend on the batch
    alone = pipe("a cat", generator=[torch.Generator().manual_seed(10)])
    assert torch.equal(alone.tokens[0], out.tokens[3])
    with pytest.raises(CrayonboxError, match="got 3 generators for 4 images"):
        pipe(["a dog", "a cat"], num_images=2, generator=gens[:3])


def test_output_types_hold_the_same_pixels(pipe):
    pil = pipe("a dog", num_images=2, seed=5)
    as_np = pipe("a dog", num_images=2, seed=5, output_type="np").images
    as_pt = pipe("a dog", num_images=2, seed=5, output_type="pt").images
    side = pipe.vqgan_config.resolution
    assert as_np.shape == (2, side, side, 3) and as_np.dtype == np.float32
    assert 0.0 <= as_np.min() and as_np.max() <= 1.0
    assert np.array_equal(np.round(as_np[1] * 255).astype(np.uint8), np.asarray(pil.images[1]))
    assert as_pt.shape == (2, 3, side, side) and torch.equal(as_pt, torch.from_numpy(as_np).permute(0, 3, 1, 2))
    with pytest.raises(CrayonboxError, match="output_type must be one of pil, np, pt"):
        pipe("a dog", output_type="latent")


def test_return_dict_false_gives_a_tuple(pipe):
    out = pipe("a dog", seed=1, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1 and len(out[0]) == 1
    assert out[0][0].tobytes() == pipe("a dog", seed=1).images[0].tobytes()


@pytest.mark.parametrize("prompt, got", [
    (None, "NoneType None"), ([], "an empty list"), (123, "int 123"), (["a dog", None], "a list holding NoneType"),
])
def test_bad_prompts_get_one_clear_error(pipe, prompt, got):
    with pytest.raises(CrayonboxError, match=f"prompt must be a string or a list of strings \\(got {got}"):
        pipe(prompt)
    with pytest.raises(CrayonboxError, match="prompt must be"):
        pipe.stream(prompt)  # refused when called, not at the first frame


def test_to_cpu_and_dtype(tiny_model_dir):
    p = Pipeline.from_pretrained(tiny_model_dir)
    before = p("a dog", seed=2).tokens
    assert p.to("cpu") is p and p.device == torch.device("cpu")
    assert torch.equal(p.to(torch.device("cpu"))("a dog", seed=2).tokens, before)
    p.to(torch.bfloat16)
    assert p.dtype == torch.bfloat16 and next(p.vqgan.parameters()).dtype == torch.bfloat16
    assert p("a dog", seed=2).tokens.shape == before.shape  # runs in the new dtype
    p.to(dtype="float32")
    assert p.dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_to_cuda_without_cuda_is_one_clear_error(tiny_model_dir, pipe):
    with pytest.raises(CrayonboxError, match="has no CUDA GPU"):
        pipe.to("cuda")
    with pytest.raises(CrayonboxError, match="has no CUDA GPU"):
        Pipeline.from_pretrained(tiny_model_dir, device="cuda:0")
    with pytest.raises(CrayonboxError, match="unknown device 'gpu7'"):
        pipe.to("gpu7")
    assert pipe.device == torch.device("cpu")  # nothing moved
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert pipe.to("auto").device == torch.device("cpu")  # auto: a GPU when there is one
