"""The scheduler without HTTP: images/s of continuous batching vs offline batches, same model, same process.

    .venv/bin/python bench/scheduler_vs_offline.py --model crayonbox/assets/default --requests 16

Separates the scheduler's own cost (admission, compaction, staggered positions, per-request VQGAN decodes) from
the web layer's: `bench/load.py` measures both together. Offline is load.py's sustained rate of
full-batch offline generation, timed before and after the scheduler run (the ratio uses the faster, the
conservative choice).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from load import load_pipeline, offline_images_per_s  # bench/load.py: the same offline timing as the load test

from crayonbox.pipeline import Pipeline
from crayonbox.serve.scheduler import Scheduler, SchedulerConfig
from crayonbox.serve.tickets import Done, Failed, Work

PROMPTS = ["a dog on a blue background", "a woman with dark skin tone on a yellow background", "a pizza", ""]


def scheduler_images_per_s(pipe: Pipeline, batch: int, requests: int, images: int) -> float:
    config = SchedulerConfig(max_batch_images=batch, max_queue_images=requests * images, deadline_s=1e9)
    scheduler = Scheduler(pipe, config).start()
    finished = threading.Semaphore(0)
    failures: list[str] = []

    def sink(event: object) -> None:
        if isinstance(event, Failed):
            failures.append(event.message)
        if isinstance(event, (Done, Failed)):
            finished.release()

    began = time.perf_counter()
    for i in range(requests):
        scheduler.submit(Work(PROMPTS[i % len(PROMPTS)], images, i, pipe.settings(), False, f"c{i}"), sink)
    for _ in range(requests):
        finished.acquire()
    elapsed = time.perf_counter() - began
    scheduler.close()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {failures[0]}")
    return requests * images / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("crayonbox/assets/default"))
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-batch", type=int, default=18)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--images", type=int, default=9, help="images per request")
    p.add_argument("--offline-seconds", type=float, default=10.0, help="each offline timing runs this long")
    p.add_argument("--threads", type=int, default=1, help="torch threads (load.py's setting: 1)")
    args = p.parse_args()
    pipe = load_pipeline(args.model, args.threads, args.dtype)
    before, _ = offline_images_per_s(pipe, args.max_batch, args.offline_seconds, PROMPTS, args.images)
    served = scheduler_images_per_s(pipe, args.max_batch, args.requests, args.images)
    after, _ = offline_images_per_s(pipe, args.max_batch, args.offline_seconds, PROMPTS, args.images)
    print(f"offline {before:.2f} before, {after:.2f} after; scheduler {served:.2f} images/s; "
          f"scheduler ÷ offline {served / max(before, after):.3f}")


if __name__ == "__main__":
    main()
