"""The one guard for every command that writes an output folder, and the checks for output files.

    folder = claim_output_folder(args.out, "world", "_world.json")

A command may write into a folder only when the folder is new, empty, or already this tool's output of the
same kind (so re-running a command resumes it). Anything else is someone's files, and writing there would
overwrite or delete them: that is refused, before any work, with a one-line error. A claimed folder gets a
small marker file naming its kind; folders written before markers existed are recognised by the command's
own manifest (`marker_file`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from crayonbox.config import write_text_atomic
from crayonbox.errors import CrayonboxError

MARKER = ".crayonbox-output.json"
TOOL = "crayonbox"


def _read_marker(path: Path) -> str:
    """The kind recorded in a marker; a damaged marker is an error (guessing could hand the folder over)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CrayonboxError(f"{path} is damaged ({type(e).__name__}); delete the folder or choose another "
                             "output folder") from None
    if not isinstance(data, dict) or data.get("tool") != TOOL or not isinstance(data.get("kind"), str):
        raise CrayonboxError(f"{path} is not a crayonbox output marker; choose another output folder")
    return data["kind"]


def check_output_folder(path: str | Path, kind: str, marker_file: str | None = None) -> bool:
    """Refuse `path` unless it is new, empty, or crayonbox `kind` output; True when it already is ours.
    Writes nothing: call it before validation-heavy work, then `claim_output_folder` to take the folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CrayonboxError(f"{folder} is a file, not a folder: choose a folder path for the output")
    _check_writable(folder)
    if not folder.exists():
        return False
    marker = folder / MARKER
    if marker.exists():
        found = _read_marker(marker)
        if found != kind:
            raise CrayonboxError(f"{folder} holds crayonbox {found} output, not {kind} output: choose another "
                                 "output folder")
        return True
    if marker_file is not None and (folder / marker_file).exists():
        return True  # written before markers existed; the command checks its own manifest next
    try:
        # another process of the same command (a DDP rank) may be writing its marker right now
        empty = not any(not (p.name.startswith(f".{MARKER}.") and p.name.endswith(".tmp"))
                        for p in folder.iterdir())
    except OSError as e:
        raise CrayonboxError(f"cannot read the output folder {folder} ({e.strerror})") from None
    if not empty:
        raise CrayonboxError(f"{folder} is not empty and holds no crayonbox {kind} output (it was not written by "
                             "this command): choose a new or empty output folder (nothing was written)")
    return False


def claim_output_folder(path: str | Path, kind: str, marker_file: str | None = None) -> Path:
    """Take `path` as the output folder of a `kind` command: create it if needed and mark it, or refuse it
    (see the module docstring). Returns the folder."""
    folder = Path(path)
    ours = check_output_folder(folder, kind, marker_file)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not ours:
            write_text_atomic(folder / MARKER, json.dumps({"tool": TOOL, "kind": kind}) + "\n")
    except OSError as e:
        raise CrayonboxError(f"cannot write the output folder {folder} ({e.strerror})") from None
    return folder


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path, target: Path | None = None) -> Path:
    """`folder`, or its nearest existing ancestor, must be a writable folder: a path under a file, or in a
    read-only place, fails here instead of after the work. Returns that folder."""
    path = target or folder
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise CrayonboxError(f"cannot write {path}: {ancestor} is a file, not a folder")
    try:  # a real probe: os.access says yes to root even on read-only mounts and /proc
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise CrayonboxError(f"cannot write {path}: {ancestor} is not writable ({e.strerror})") from None
    return ancestor


def check_output_file(path: str | Path) -> Path:
    """Refuse an output file path that cannot be written (a folder, under a file, in a read-only folder)
    before the work that produces it."""
    path = Path(path)
    if path.is_dir():
        raise CrayonboxError(f"{path} is a folder: give a file name")
    _check_writable(path.parent, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise CrayonboxError(f"cannot write {path}: the file is read-only")
    return path
