"""Model folders on the Hugging Face Hub: load one by repo id, upload one, and the card header the Hub reads.

Loading goes through huggingface_hub's cache (`HF_HUB_CACHE`, default ~/.cache/huggingface/hub), as
`crayonbox download` does (weights/hub.py): a second load is free, and `HF_HUB_OFFLINE=1` or
`local_files_only=True` loads from a filled cache without a connection. Nothing here touches the network
unless a caller names a repo that is not a local folder, or asks to upload.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from crayonbox.errors import CrayonboxError

# `owner/name`, as the Hub spells repo ids: letters, digits, '-', '_', '.'; neither part starts with '.'.
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}")
CARD_TAGS = ("text-to-image", "dalle-mini", "crayonbox", "pytorch")
CARD_HEADER = ("---\nlibrary_name: crayonbox\nlicense: apache-2.0\n"
               f"tags: [{', '.join(CARD_TAGS)}]\npipeline_tag: text-to-image\n---\n")
CARD_FILES = ("README.md", "MODEL_CARD.md")  # the Hub shows README.md; `crayonbox lab card` writes MODEL_CARD.md


def looks_like_repo_id(name: str | Path) -> bool:
    """`owner/name` and nothing more (a local path such as `models/mini` also looks so: check it first)."""
    return isinstance(name, str) and REPO_ID.fullmatch(name) is not None and ".." not in name


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import, which may be too early)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_model(
    name: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A model folder: `name` itself when it exists here, else, for an `owner/name` repo id, its snapshot in the
    Hub cache (downloaded unless offline). Anything else is returned as a path, for the folder reader to
    report as missing."""
    if Path(name).exists() or not looks_like_repo_id(str(name)):
        if revision is not None:
            raise CrayonboxError(f"revision {revision!r} applies to Hub repos; {name} is a local folder")
        return Path(name)
    return snapshot(str(name), revision, cache_dir, local_files_only)


def snapshot(
    repo_id: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """`huggingface_hub.snapshot_download`, with every failure as one CrayonboxError line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = bool(local_files_only) or hub_offline()
    where = f"{repo_id}@{revision or 'main'}"
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir) if cache_dir else None,
                                 local_files_only=offline)
    except LocalEntryNotFoundError:
        why = "offline (HF_HUB_OFFLINE=1 or local_files_only)" if offline else "huggingface.co cannot be reached"
        raise CrayonboxError(f"{repo_id} is not a local folder, and {where} is not in the Hugging Face cache: "
                             f"{why}; connect and retry, or pass the path of a model folder") from None
    except RepositoryNotFoundError:
        raise CrayonboxError(f"{repo_id} is neither a local folder nor a repository on the Hugging Face hub "
                             "(a private repo needs `hf auth login`)") from None
    except RevisionNotFoundError:
        raise CrayonboxError(f"revision {revision!r} not found in {repo_id}") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CrayonboxError(f"downloading {where} failed: {e}".splitlines()[0]) from None
    return Path(path)


def with_card_header(text: str) -> str:
    """A model card with the Hub's YAML header (library, licence, tags, pipeline) in front, unless it has one."""
    return text if text.startswith("---\n") else CARD_HEADER + "\n" + text


def write_hub_card(folder: Path, source: Path | None = None) -> Path:
    """`folder/README.md` with the Hub header: from `source`'s README.md or MODEL_CARD.md (else `folder`'s), or
    a short card naming the model when neither has one."""
    for base in (source, folder):
        found = [base / name for name in CARD_FILES if base is not None and (base / name).is_file()]
        if found:
            text = found[0].read_text(encoding="utf-8")
            break
    else:
        text = (f"# {folder.name}\n\nA crayonbox model folder (DALL·E mini architecture). Load it with\n\n"
                "    from crayonbox import Pipeline\n    pipe = Pipeline.from_pretrained(\"OWNER/NAME\")\n\n"
                "`crayonbox info` lists what it can draw; `crayonbox lab card` measures its biases.\n")
    path = folder / "README.md"
    path.unlink(missing_ok=True)  # may be a hard link to the user's own card: never write through it
    path.write_text(with_card_header(text), encoding="utf-8")
    return path


def upload_folder(
    folder: Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` as one commit; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError

    if not looks_like_repo_id(repo_id):
        raise CrayonboxError(f"{repo_id!r} is not a Hugging Face repo id: use OWNER/NAME")
    if hub_offline():
        raise CrayonboxError("cannot upload with HF_HUB_OFFLINE=1: unset it and retry")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                                   commit_message=commit_message or "Upload crayonbox model")
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CrayonboxError(f"uploading to {repo_id} failed: {e}".splitlines()[0]) from None
    return str(getattr(commit, "commit_url", commit))


def upload_model_folder(folder: str | Path, repo_id: str, **options: object) -> str:
    """`crayonbox upload`: a model folder as it is, plus a README.md with the Hub header. The user's folder is
    left untouched: its files are hard-linked (or copied) into a staging folder that gets the card."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="crayonbox-upload-") as tmp:
        staged = Path(tmp) / folder.name
        shutil.copytree(folder, staged, copy_function=_link_or_copy)
        write_hub_card(staged)
        return upload_folder(staged, repo_id, **options)  # type: ignore[arg-type]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # weights can be gigabytes: a link costs nothing
    except OSError:
        shutil.copy2(src, dst)
