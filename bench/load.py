"""Load test: N concurrent clients for T seconds against `crayonbox serve` on loopback.

    .venv/bin/python bench/load.py --model path/to/model --clients 32 --duration 60
    .venv/bin/python bench/load.py --random small --clients 32 --duration 60   # a random `small` model

Starts the server in a subprocess on a free 127.0.0.1 port (or uses --url, loopback only), runs the clients
(each with its own API key, so the per-client limit applies per client, and each honouring Retry-After), then
times offline batch generation in this process with the server idle, before and after the load: the same
batches a full server batch holds (`pipe([p, q], num_images=9)` for max batch 18), back to back for
--offline-seconds, the sustained rate.
Prints throughput, p50/p95 latency, refusals, errors, lost requests and served ÷ offline images per second.
Bounded: at most 256 clients and 600 s; clients stop sending at T and wait for the answers still owed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx

PROMPTS = ["a red dog on a yellow background", "a woman in a sari", "a blue cat on a white background",
           "a small green kimono", "a big man on a black background", ""]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Tally:
    """What the clients saw, summed over all of them (one event loop, so no locking)."""

    sent: int = 0
    ok: int = 0
    images: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # HTTP status → count (429, 503)
    errors: dict[str, int] = field(default_factory=dict)  # 5xx and any other unexpected status
    lost: int = 0  # sent, but no HTTP answer came back (connection dropped or timed out)
    latencies: list[float] = field(default_factory=list)  # of the 200s, seconds
    first_sent: float = 0.0
    last_answer: float = 0.0


async def client_loop(index: int, url: str, images: int, stop_at: float, tally: Tally) -> None:
    """Send one request at a time until `stop_at`; after a refusal wait as long as Retry-After says."""
    headers = {"X-API-Key": f"bench-client-{index}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(300.0)) as http:
        seed = index * 1_000_003
        while time.monotonic() < stop_at:
            body = {"prompt": PROMPTS[index % len(PROMPTS)], "n": images, "seed": seed % 2**32}
            began = time.monotonic()
            tally.first_sent = tally.first_sent or began
            tally.sent += 1
            try:
                r = await http.post("/v1/generate", json=body)
            except httpx.HTTPError:
                tally.lost += 1
                continue
            tally.last_answer = time.monotonic()
            code = str(r.status_code)
            if r.status_code == 200:
                served = len(r.json()["images"])
                tally.ok += 1
                tally.images += served
                tally.latencies.append(tally.last_answer - began)
                if served != images:
                    tally.errors["short"] = tally.errors.get("short", 0) + 1
                seed += images
            elif r.status_code in (429, 503):
                tally.refused[code] = tally.refused.get(code, 0) + 1
                wait = float(r.headers.get("Retry-After", "1"))
                await asyncio.sleep(min(wait, max(0.0, stop_at - time.monotonic())))
            else:
                tally.errors[code] = tally.errors.get(code, 0) + 1


async def run_clients(url: str, clients: int, duration: float, images: int) -> Tally:
    """Run `clients` client loops concurrently until `duration` has passed and every answer is in."""
    tally = Tally()
    stop_at = time.monotonic() + duration
    await asyncio.gather(*(client_loop(i, url, images, stop_at, tally) for i in range(clients)))
    return tally


def load_pipeline(model: Path, threads: int, dtype: str):
    """The model for the offline timing, with the server's thread count and precision, warmed up."""
    import torch

    from crayonbox.pipeline import Pipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = Pipeline.from_pretrained(model, dtype=dtype)
    pipe(PROMPTS[0], num_images=2, seed=0)
    return pipe


def offline_images_per_s(pipe, batch: int, seconds: float = 10.0, prompts: list[str] = PROMPTS,
                         images: int = 9) -> tuple[float, list[float]]:
    """Sustained offline throughput: back-to-back batches of `batch` images for at least `seconds` (and at
    least two batches), total images over total time; and each batch's own rate. Each batch is what the
    server's full batch holds under this load, requests of `images` images each, with the clients' prompts in
    turn: `pipe([p, q], num_images=9)` for the default 18. Sustained, like the served rate it is compared with:
    a best-of-few short runs would compare the machine's fastest moment with the server's average one."""
    per_batch = max(1, batch // images)
    rates, began, i = [], time.perf_counter(), 0
    while len(rates) < 2 or time.perf_counter() - began < seconds:
        batch_prompts = [prompts[(i + k) % len(prompts)] for k in range(per_batch)]
        one = time.perf_counter()
        pipe(batch_prompts, num_images=images, seed=i)
        rates.append(per_batch * images / (time.perf_counter() - one))
        i += per_batch
    return len(rates) * per_batch * images / (time.perf_counter() - began), rates


def build_random_model(folder: Path, preset: str) -> Path:
    """A model folder at a preset's shapes with random weights (throughput does not depend on the weights)."""
    from crayonbox.train.random_model import random_model

    return random_model(folder, preset)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, options: list[str], log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """`crayonbox serve --model MODEL OPTIONS` in a subprocess on a free loopback port (output to `log` when
    given); returns it once /healthz answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "crayonbox.cli", "serve", "--model", str(model), "--port", str(port),
               "--log-level", "warning", *options]
    output = log.open("w") if log else None
    server = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=output,
                              stderr=subprocess.STDOUT if log else None)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready"
                             + (f": {log.read_text()}" if log else ""))
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.kill()
    raise SystemExit("the server did not become healthy within 300 s")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of a process and of its child processes (the model worker),
    by thread id (Linux /proc; {} elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            children = (task / "children").read_text().split()
        except OSError:
            continue  # the thread ended
        out[task.name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        for child in children:
            out.update(thread_cpu_seconds(int(child)))
    return out


def server_cpu_shares(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """The server's CPU seconds per wall second during the load: all threads, and its busiest one."""
    used = {t: after[t] - before.get(t, 0.0) for t in after}
    if not used:
        return {}
    return {"server_cpu_per_wall_s": round(sum(used.values()) / wall, 3),
            "busiest_thread_cpu_per_wall_s": round(max(used.values()) / wall, 3)}


def metric(exposition: str, name: str) -> float | None:
    """The value of one unlabelled series in a Prometheus text exposition (None if absent)."""
    return next((float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name + " ")),
                None)


def mean_ms(exposition: str, histogram: str) -> float | None:
    """A histogram's mean in milliseconds (None if it has no observations or is absent)."""
    count = metric(exposition, histogram + "_count")
    return round(1000 * metric(exposition, histogram + "_sum") / count, 3) if count else None


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method), NaN for no values."""
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    """Parse the options, run the load and the offline timing, print the report; 1 on any 5xx or loss."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="model folder")
    source.add_argument("--random", choices=["tiny", "small"], help="build a random model at this preset")
    parser.add_argument("--url", default=None, help="a running server to use (loopback only)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds during which clients send")
    parser.add_argument("--images", type=int, default=9, help="images per request")
    parser.add_argument("--max-batch", type=int, default=18)
    parser.add_argument("--queue", type=int, default=72)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for the server and the offline run alike (0: torch's default)")
    parser.add_argument("--dtype", default="auto", help="precision for the server and the offline run alike")
    parser.add_argument("--worker", choices=["process", "thread"], default="process",
                        help="the server's --worker: the model in its own process, or in a thread of the server")
    parser.add_argument("--offline-seconds", type=float, default=10.0,
                        help="how long each offline timing (before and after the load) runs batches")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.duration <= 600:
        parser.error("--clients must be 1–256 and --duration 0–600 s (this bench is bounded)")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        parser.error("--url must be a loopback address (127.0.0.1, localhost, ::1)")

    background_load = os.getloadavg()[0]  # before we add any: how busy the machine was with others' work
    with tempfile.TemporaryDirectory(prefix="crayonbox-load-") as scratch:
        model = args.model or build_random_model(Path(scratch), args.random)
        server, url = (None, args.url) if args.url else start_server(model, [
            "--max-batch", str(args.max_batch), "--queue", str(args.queue), "--deadline", str(args.deadline),
            "--threads", str(args.threads), "--dtype", args.dtype, "--worker", args.worker])
        try:
            # offline is timed before and after the load (server idle both times): on a shared machine the
            # background changes, and the ratio uses the faster of the two, which is the conservative choice
            pipe = load_pipeline(model, args.threads, args.dtype)  # once: timed before and after the load
            offline_before, batches_before = offline_images_per_s(pipe, args.max_batch, args.offline_seconds,
                                                  images=args.images)
            print(f"load: {args.clients} clients × {args.duration:.0f} s, {args.images} images per request, "
                  f"server {url}, max batch {args.max_batch}", flush=True)
            cpu_before = thread_cpu_seconds(server.pid) if server is not None else {}
            clients_cpu = time.process_time()
            tally = asyncio.run(run_clients(url, args.clients, args.duration, args.images))
            clients_cpu = time.process_time() - clients_cpu
            cpu_after = thread_cpu_seconds(server.pid) if server is not None else {}
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            offline_after, batches_after = offline_images_per_s(pipe, args.max_batch, args.offline_seconds,
                                                 images=args.images)
        finally:
            if server is not None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=120)
        offline = max(offline_before, offline_after)

    wall = max(tally.last_answer - tally.first_sent, 1e-9)
    served = tally.images / wall
    report = {
        "clients": args.clients, "duration_s": args.duration, "dtype": args.dtype, "wall_s": round(wall, 2),
        "requests_sent": tally.sent, "ok": tally.ok, "refused": tally.refused, "errors": tally.errors,
        "lost": tally.lost, "images": tally.images, "served_images_per_s": round(served, 3),
        "requests_per_s": round(tally.ok / wall, 3),
        "latency_p50_s": round(percentile(tally.latencies, 50), 3),
        "latency_p95_s": round(percentile(tally.latencies, 95), 3),
        "offline_images_per_s": f"{offline_before:.3f} before, {offline_after:.3f} after",
        "served_over_offline": round(served / offline, 3),
        # how much single offline batches vary on this machine (why the baseline is a sustained rate)
        "offline_one_batch_images_per_s": f"{min(batches_before + batches_after):.2f} to "
                                          f"{max(batches_before + batches_after):.2f}",
        "background_load_1m": background_load,
        "server_5xx": sum(v for k, v in tally.errors.items() if k.startswith("5")),
        # where the server's CPU went (its processes, the model worker's included): its busiest thread is the
        # decode loop (a share near 1.0 means it never waited; well below, it waited for the GIL or for work)
        **server_cpu_shares(cpu_before, cpu_after, wall),
        # the load generator shares this machine: on 2 cores its CPU slows the worker (docs/serving.md)
        "load_generator_cpu_per_wall_s": round(clients_cpu / wall, 3),
        "decode_steps": metric(metrics, "crayonbox_decode_steps_total"),
        # with the model in its own process, how long a call to it held the server's event loop
        "worker_call_ms_mean": mean_ms(metrics, "crayonbox_worker_call_seconds"),
    }
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        settings = {k: str(v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({**report, "args": settings}, indent=1) + "\n")
    return 0 if report["server_5xx"] == 0 and tally.lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
