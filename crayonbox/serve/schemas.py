"""The JSON API's request and response shapes, and the prompt checks that need more than a type.

Numeric ranges are pydantic constraints, so FastAPI answers 422 with the field and the bound. The prompt gets
its own checks (length in characters, control characters, lone surrogates) with messages that say what to
change; the token-count check needs the model's tokenizer and lives in `check_prompt_tokens`.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic_core import PydanticCustomError

from crayonbox.sampler_settings import sampler_fields, sampler_names, sampler_type
from crayonbox.text.tokenizer import EncodedPrompt, Tokenizer

MAX_IMAGES = 9  # one 3×3 grid, as on the original page
MAX_PROMPT_CHARS = 500
MAX_SEED = 2**32 - 1  # images use seed, seed+1, …; small enough to stay exact in JavaScript numbers
ALLOWED_CONTROLS = {"\t", "\n", "\r"}  # pasted text carries these; the normaliser turns them into spaces
MAX_ERROR_TEXT = 200  # characters of an error message: enough to act on, never an echo of a body
MAX_FIELD_NAME = 40  # characters of a field name in an error (an unknown key is the client's own text)


class InvalidField(ValueError):
    """A request field the model cannot take; becomes a 422 naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def short_text(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text` cut to `limit` characters (saying how long it was) and made encodable: error messages and field
    names can hold the client's own text, which is never echoed at length, and a lone surrogate would turn the
    JSON answer into a 500."""
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate becomes \udXXX


def check_prompt_text(prompt: str, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Reject prompts that are too long or hold characters no tokenizer should see. An empty prompt is
    allowed on purpose: it is the famous "blank prompt" probe of the model's prior."""
    if len(prompt) > max_chars:
        raise InvalidField("prompt", f"prompt is {len(prompt)} characters; the limit is {max_chars}")
    for position, char in enumerate(prompt):
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            raise InvalidField("prompt", f"prompt holds a lone UTF-16 surrogate (U+{code:04X}) at character "
                               f"{position}: send valid Unicode text (a surrogate pair must be complete)")
        if unicodedata.category(char) == "Cc" and char not in ALLOWED_CONTROLS:
            raise InvalidField("prompt", f"prompt holds the control character U+{code:04X} at character "
                               f"{position}: remove it (tabs and newlines are fine)")
        if code in (0xFFFE, 0xFFFF):
            raise InvalidField("prompt", f"prompt holds the non-character U+{code:04X} at character "
                               f"{position}: remove it")
    return prompt


def check_prompt_tokens(prompt: str, tokenizer: Tokenizer) -> EncodedPrompt:
    """Encode the prompt and refuse it when the model would have to cut it (offline generation warns and
    cuts; a server must not silently draw something other than what was asked)."""
    encoded = tokenizer.encode(prompt)
    if encoded.was_cut:
        # The count, not the cut text: an error never repeats a client's input back at length.
        raise InvalidField("prompt", f"prompt is {len(encoded.tokens) + len(encoded.cut_tokens)} tokens; the "
                           f"model reads at most {tokenizer.text_length} (with <s> and </s>): shorten it by "
                           f"{len(encoded.cut_tokens)} tokens")
    return encoded


def _sampler_request_fields() -> dict[str, Any]:
    """One optional request field per `SamplingSettings` knob, with its bounds and help as pydantic
    constraints (None: the model's default). Floats must be finite."""
    out: dict[str, Any] = {}
    for f in sampler_fields():
        kind = sampler_type(f)
        finite = {"allow_inf_nan": False} if kind is float else {}
        out[f.name] = (kind | None, Field(None, description=f.metadata["help"], **f.metadata["bounds"], **finite))
    return out


class _PromptRequest(BaseModel):
    # strict: `true` is not a number and "3" is not an int; extra="forbid": a misspelt field is an error,
    # not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(description="the text; empty is allowed (the blank-prompt probe)",
                        examples=["an armchair in the shape of an avocado"])
    n: int = Field(MAX_IMAGES, ge=1, le=MAX_IMAGES, description="number of images")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="image i uses seed+i; random when omitted")

    @field_validator("prompt")
    @classmethod
    def _prompt_characters(cls, prompt: str) -> str:
        try:
            return check_prompt_text(prompt)
        except InvalidField as e:  # a custom error type keeps "Value error, " off the message
            raise PydanticCustomError("prompt_text", e.message) from None


# The knobs sit between the seed and `frames`, where the hand-written fields were (field order is the order
# of the OpenAPI schema and of the errors of a request with several bad fields).
SamplerRequest: type[BaseModel] = create_model("SamplerRequest", __base__=_PromptRequest,
                                               **_sampler_request_fields())


class GenerateRequest(SamplerRequest):  # type: ignore[misc, valid-type]  # a base built by create_model
    """What to draw. Omitted sampling settings take the model's defaults (`GET /healthz` lists them)."""

    frames: bool = Field(True, description="streaming only: send progressive frames while decoding")

    def sampler(self) -> dict[str, float | int | None]:
        """The sampler knobs as sent (None: not sent), for `ModelInfo.settings(**…)`."""
        return {name: getattr(self, name) for name in sampler_names()}


Settings: type[BaseModel] = create_model(
    "Settings", __doc__="The sampling settings a result was drawn with (the request's, or the model's defaults).",
    **{f.name: (sampler_type(f), ...) for f in sampler_fields()})


class ImageOut(BaseModel):
    """One image with its seed and the exact codes it was decoded from."""

    seed: int
    png_base64: str = Field(description="the image as a base64 PNG")
    image_tokens: list[int] = Field(description="the VQGAN codes decoded into this image, row-major")


class Timing(BaseModel):
    """Where the request's time went, in seconds."""

    queued_s: float = Field(description="from acceptance to the first decode step")
    decoding_s: float = Field(description="from the first decode step to the images")
    total_s: float


class GenerateResponse(BaseModel):
    """The images and every id that went into them, so a result can be reproduced offline exactly."""

    id: str
    prompt: str
    normalized: str = Field(description="the text the tokenizer saw")
    text_ids: list[int] = Field(description="encoder input ids, <s> … </s> and padding, as fed")
    text_tokens: list[str]
    unconditional_ids: list[int] = Field(description="the unconditional branch's ids")
    notes: list[str] = Field(description="what the normaliser and tokenizer did, in words")
    settings: Settings
    seeds: list[int]
    images: list[ImageOut]
    timing: Timing


class Health(BaseModel):
    """`GET /healthz`: liveness, the batch state and the model's sampling defaults."""

    status: str = Field(description="ok; draining while shutting down; worker restarting while a model process "
                        "that died is brought back; worker down once the server has given up on it")
    detail: str = Field("", description="why the model worker is not serving (empty while it is)")
    retry_after_s: float | None = Field(None, description="while the worker restarts: when it should serve again; "
                                        "null when no time can be promised")
    model: str
    image_size: int
    image_tokens: int
    max_batch_images: int
    cache_rows: int
    queue_images: int
    batch_images: int
    tokens_per_s: float
    defaults: Settings
    precision: str = Field(description="the transformer's precision: float32, bfloat16, fp16w, …")
    precision_reason: str = Field(description="why: what this machine's hardware has, or that it was asked for")
