"""What flows between the web layer and the scheduler: the validated `Work`, the `Ticket` that follows it, and
the events the scheduler emits for it (`Queued` is computed on demand, the others are sent to the ticket's
sink from the worker thread)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image

from crayonbox.sample import ImageJob, SamplingSettings
from crayonbox.text.tokenizer import EncodedPrompt

log = logging.getLogger("crayonbox.serve")


@dataclass
class Work:
    """A validated request, ready to queue."""

    prompt: str
    n: int
    seed: int
    settings: SamplingSettings
    frames: bool = False  # wants progressive frames
    client: str = ""

    @property
    def rows(self) -> int:
        """KV-cache rows its images take: two each (cond + uncond), one each at condition scale 1."""
        return self.n * (1 if self.settings.condition_scale == 1 else 2)


@dataclass
class Queued:
    """Where a waiting request stands (computed when asked, by `Scheduler.progress`)."""

    position: int  # requests ahead of this one
    images_ahead: int
    start_s: float  # expected seconds until decoding starts
    finish_s: float  # expected seconds until the images are ready


@dataclass
class Started:
    """The request joined the decode batch."""

    step: int  # the scheduler's decode-step count when this request joined the batch


@dataclass
class Frame:
    """A progressive frame: the request's images with the undecoded rows filled in from the rows above."""

    tokens_done: int  # of image_length
    images: list[Image.Image]


@dataclass
class Result:
    """A finished request: its images and every input that made them."""

    images: list[Image.Image]
    tokens: torch.LongTensor  # (n, image_length)
    encoding: EncodedPrompt
    unconditional: EncodedPrompt
    seeds: list[int]
    settings: SamplingSettings
    queued_s: float
    decoding_s: float


@dataclass
class Done:
    """The request's images are ready."""

    result: Result


@dataclass
class Failed:
    """The request was accepted but cannot be answered (shutdown, internal error)."""

    status: int
    message: str
    retry_after_s: float | None = 5.0  # None: no time can be promised (the model worker is down for good)


Event = Queued | Started | Frame | Done | Failed


@dataclass(eq=False)
class Ticket:
    """One accepted request as it moves through the scheduler. `sink` receives its events, called from the
    worker thread (the web layer hands them over to its event loop)."""

    id: str
    work: Work
    sink: Callable[[Event], None]
    accepted_at: float
    arrival_step: int  # decode steps done when it was accepted
    state: str = "queued"  # queued → admitting → decoding → done | cancelled | failed
    admitted_step: int | None = None  # decode steps done when it joined the batch
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    jobs: list[ImageJob] = field(default_factory=list)
    encoding: EncodedPrompt | None = None

    @property
    def unfinished(self) -> bool:
        """Accepted and not yet answered: cancelling it still frees something."""
        return self.state in ("queued", "admitting", "decoding")

    def emit(self, event: Event) -> None:
        """Hand an event to the ticket's sink."""
        try:
            self.sink(event)
        except Exception:  # a sink must never take the worker down (e.g. its event loop is gone)
            log.debug("event sink of %s failed", self.id, exc_info=True)
