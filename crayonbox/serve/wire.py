"""The pipe between the server and its model worker: whole messages as JSON, with an allow-list of types.

Nothing is unpickled. A message decodes only to plain values (None, bool, numbers, strings, lists, dicts), the
dataclasses named in `TYPES`, PIL images and LongTensors of token ids, whatever the bytes say. Tuples arrive as
lists, which every reader here unpacks the same way.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import fields, is_dataclass
from typing import Any

import torch
from PIL import Image

from crayonbox.sample import SamplingSettings
from crayonbox.serve.tickets import Done, Failed, Frame, Queued, Result, Started, Work
from crayonbox.text.tokenizer import EncodedPrompt

TYPES = {cls.__name__: cls for cls in (Work, SamplingSettings, EncodedPrompt, Queued, Started, Frame, Done,
                                       Failed, Result)}


def encode(message: Any) -> bytes:
    """A message as bytes; raises TypeError for a value the pipe does not carry."""
    return json.dumps(_plain(message), separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> Any:
    """The message `encode` made; raises ValueError for a type not in the allow-list."""
    return json.loads(data, object_hook=_typed)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Image.Image):
        pixels = base64.b64encode(value.tobytes()).decode("ascii")
        return {"__image__": [value.mode, value.width, value.height, pixels]}
    if isinstance(value, torch.Tensor) and value.dtype == torch.long:
        return {"__tokens__": value.tolist()}
    if is_dataclass(value) and TYPES.get(type(value).__name__) is type(value):
        return {"__type__": type(value).__name__,
                "fields": {f.name: _plain(getattr(value, f.name)) for f in fields(value)}}
    raise TypeError(f"a {type(value).__name__} cannot go over the model worker's pipe")


def _typed(obj: dict) -> Any:
    if "__image__" in obj:
        mode, width, height, pixels = obj["__image__"]
        return Image.frombytes(mode, (width, height), base64.b64decode(pixels))
    if "__tokens__" in obj:
        return torch.tensor(obj["__tokens__"], dtype=torch.long)
    if "__type__" in obj:
        cls = TYPES.get(obj["__type__"])
        if cls is None:
            raise ValueError(f"the model worker's pipe does not carry {obj['__type__']!r}")
        return cls(**obj["fields"])
    return obj


class Channel:
    """One end of the pipe: whole messages in and out; any thread may send."""

    def __init__(self, conn):
        self.conn = conn
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = encode(message)
        with self._send_lock:
            self.conn.send_bytes(data)

    def recv(self) -> Any:
        return decode(self.conn.recv_bytes())

    def poll(self, timeout_s: float) -> bool:
        return self.conn.poll(timeout_s)

    def close(self) -> None:
        self.conn.close()
