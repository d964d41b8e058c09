"""`crayonbox download`: fetch the official weights from the Hugging Face hub, then convert them.

Files go through huggingface_hub's cache (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub), so a second
download is free and `HF_HUB_OFFLINE=1` works from a filled cache. Nothing here runs unless a user asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crayonbox.errors import CrayonboxError
from crayonbox.weights.convert import convert_flax_folder
from crayonbox.weights.export import write_model_folder


@dataclass(frozen=True)
class HubModel:
    repo: str
    revision: str | None  # None: the branch head ("main")


MODELS = {
    "dalle-mini": HubModel("dalle-mini/dalle-mini", None),
    "dalle-mega": HubModel("dalle-mini/dalle-mega", None),
}
# The VQGAN commit the official inference notebook pins (VQGAN_COMMIT_ID; reference §2.4).
VQGAN = HubModel("dalle-mini/vqgan_imagenet_f16_16384", "e93a26e7707683d349bf5d5c41c5b0ef69b677a9")

MODEL_FILES = ("config.json", "flax_model.msgpack", "vocab.json", "merges.txt")
OPTIONAL_MODEL_FILES = ("tokenizer.json", "special_tokens_map.json", "tokenizer_config.json")
VQGAN_FILES = ("config.json", "flax_model.msgpack")


def _fetch(
    model: HubModel, revision: str | None, filename: str, cache_dir: str | None, optional: bool = False
) -> Path | None:
    """One file through the hub cache, with every failure turned into a one-line CrayonboxError.

    An optional file that the repo (or, offline, the cache) lacks gives None.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (  # here in every huggingface_hub since 0.23
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{model.repo}@{revision or 'main'}"
    try:
        return Path(hf_hub_download(model.repo, filename, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError:
        if optional:
            return None
        raise CrayonboxError(
            f"cannot download {filename} from {where}: no connection to huggingface.co (or "
            "HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache; connect and retry, "
            "or convert files you have with `crayonbox convert --from flax DIR`"
        ) from None
    except EntryNotFoundError:  # after LocalEntryNotFoundError, its subclass: the file is not in the repo
        if optional:
            return None
        raise CrayonboxError(f"{where} has no file {filename}") from None
    except RepositoryNotFoundError:
        raise CrayonboxError(f"repository {model.repo} not found on the Hugging Face hub") from None
    except RevisionNotFoundError:
        raise CrayonboxError(f"revision {revision!r} not found in {model.repo}") from None
    except (HfHubHTTPError, OSError) as e:
        raise CrayonboxError(f"downloading {filename} from {where} failed: {e}".splitlines()[0]) from None


def fetch_files(
    model: HubModel,
    revision: str | None,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    cache_dir: str | None = None,
) -> Path:
    """Fetch a repo's files into the hub cache; returns the snapshot folder that holds them.

    Required files come first, so that being offline is reported for a file that matters.
    """
    paths = [_fetch(model, revision, name, cache_dir) for name in required]
    for name in optional:
        _fetch(model, revision, name, cache_dir, optional=True)
    return paths[0].parent


def download(
    name: str,
    out: str | Path,
    revision: str | None = None,
    dtype: str = "auto",
    overwrite: bool = False,
    cache_dir: str | None = None,
) -> Path:
    """Download `dalle-mini` or `dalle-mega` and the VQGAN, and convert them into the model folder `out`."""
    if name not in MODELS:
        raise CrayonboxError(f"unknown model {name!r}: choose {' or '.join(MODELS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:  # fail before a multi-GB download, not after
        raise CrayonboxError(
            f"{out} already exists and is not empty; choose another --out or pass --overwrite"
        )
    model = MODELS[name]
    revision = revision or model.revision
    model_dir = fetch_files(model, revision, MODEL_FILES, OPTIONAL_MODEL_FILES, cache_dir)
    vqgan_dir = fetch_files(VQGAN, VQGAN.revision, VQGAN_FILES, cache_dir=cache_dir)
    # Imported here, not above: torch loads only once there is something to convert.

    converted = convert_flax_folder(model_dir, vqgan_dir)
    converted.provenance |= {
        "hub": {
            "repo": model.repo,
            "revision": model_dir.name,
            "vqgan_repo": VQGAN.repo,
            "vqgan_revision": vqgan_dir.name,
        }
    }
    return write_model_folder(converted, out, dtype=dtype, overwrite=overwrite)
