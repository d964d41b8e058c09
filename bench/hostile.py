"""Hostile clients against `crayonbox serve` on loopback: does the server's memory stay bounded, does it answer
every one of them, and does /healthz stay responsive meanwhile?

    .venv/bin/python bench/hostile.py                      # a random tiny model, the server's defaults
    .venv/bin/python bench/hostile.py --slow-clients 200 --chunked-mib 200 --json out.json

Builds a random `tiny` model, starts the server on a free 127.0.0.1 port, measures its idle RSS, then sends,
one kind after the other while a prober asks /healthz every 0.1 s:
  1. a chunked body of --chunked-mib MiB (no Content-Length: only counting bytes as they arrive can stop it);
  2. --slow-clients connections that promise 100 bytes and send 10 (the body timeout must answer them 408);
  3. a declared Content-Length of 200 MB, then 1 MiB of it;
  4. malformed JSON holding a unique marker (the 422 must not echo it), and an unknown 10 KB field name;
and finally SIGTERM with --slow-clients slow bodies still open: shutdown must answer them (408) without a
traceback or a 500. Prints the machine, the server's peak RSS above idle (target ≤ +64 MiB), the statuses seen
per attack, /healthz latency per attack, the shutdown's time and the tracebacks in the server's log.
Exit status 1 when a target is missed. Bounded: at most 1000 slow clients, 1024 MiB, each attack times out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from load import build_random_model, percentile, start_server
from machine import cpu_summary

RSS_TARGET_MIB = 64.0
HEALTH_TARGET_S = 1.0  # the slowest /healthz answer allowed during an attack
SLOW_HEAD = (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident set (or its peak, `VmHWM`) in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak(pid: int) -> bool:
    """Start the kernel's peak-RSS mark (`VmHWM`) afresh from now (Linux ≥ 4.0; False where not allowed)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


async def read_response(reader: asyncio.StreamReader, timeout: float) -> tuple[str, bytes]:
    """The status ("413", …; "reset" or "timeout" when no answer came) and the raw response."""
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except (ConnectionError, TimeoutError) as e:
        if not data:
            return ("timeout" if isinstance(e, TimeoutError) else "reset"), b""
    if not data.startswith(b"HTTP/1.1 "):
        return "no answer", data
    return data.split(b" ", 2)[1].decode(), data


async def send_body(port: int, head: bytes, chunks, timeout: float) -> tuple[str, bytes, float]:
    """Send `head`, then `chunks` while the server reads them and has not answered; returns the status, the
    response and the seconds until it came. The response is read while sending, so an answer that comes
    before the body is done is seen (the server closes then, and our remaining bytes make the kernel reset)."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(read_response(reader, timeout))
    try:
        writer.write(head)
        for chunk in chunks:
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)  # drain() does not yield while the socket takes data: let the reader run
    except ConnectionError:
        pass  # answered and closed while we were sending: the answer task has it
    status, response = await answer
    writer.close()
    return status, response, time.monotonic() - began


def chunked_body(mib: int, piece: int = 65536):
    """`mib` MiB as HTTP/1.1 chunks of `piece` bytes, made lazily (the bench must not hold 200 MB either)."""
    data = b"a" * piece
    frame = b"%x\r\n%s\r\n" % (piece, data)
    for _ in range(mib * 1024 * 1024 // piece):
        yield frame
    yield b"0\r\n\r\n"


async def slow_client(port: int, timeout: float) -> tuple[str, float]:
    """Promise 100 bytes, send 10, wait for the server's answer."""
    began = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return "refused connection", 0.0
    writer.write(SLOW_HEAD + b'{"prompt":')
    await writer.drain()
    status, _ = await read_response(reader, timeout)
    writer.close()
    return status, time.monotonic() - began


class Prober:
    """Asks /healthz every 0.1 s and keeps each answer's latency (a failure counts as the time it took)."""

    def __init__(self, url: str):
        self.url, self.latencies, self.failures = url, [], 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    ok = (await http.get(self.url + "/healthz")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.monotonic() - began)
                self.failures += not ok
                try:
                    await asyncio.wait_for(self._stop.wait(), 0.1)
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self._stop.set()


async def attack(name: str, url: str, work) -> dict:
    """Run one attack while probing /healthz; its statuses and the probe latencies."""
    prober = Prober(url)
    probing = asyncio.create_task(prober.run())
    began = time.monotonic()
    statuses, extra = await work
    wall = time.monotonic() - began
    prober.stop()
    await probing
    lat = prober.latencies
    return {"attack": name, "wall_s": round(wall, 2), "statuses": dict(Counter(statuses)), **extra,
            "healthz_probes": len(lat), "healthz_failures": prober.failures,
            "healthz_p50_ms": round(1000 * percentile(lat, 50), 1), "healthz_max_ms": round(1000 * max(lat), 1)}


async def chunked_attack(port: int, mib: int) -> tuple[list[str], dict]:
    status, response, took = await send_body(
        port, b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n", chunked_body(mib), timeout=60)
    return [status], {"offered_mib": mib, "response_bytes": len(response), "answer_s": round(took, 3)}


async def slow_attack(port: int, clients: int, timeout: float) -> tuple[list[str], dict]:
    results = await asyncio.gather(*(slow_client(port, timeout) for _ in range(clients)))
    waits = [w for status, w in results if status == "408"]
    return [s for s, _ in results], {"clients": clients,
                                     "answer_s_max": round(max(waits), 2) if waits else None}


async def oversize_attack(port: int) -> tuple[list[str], dict]:
    head = (b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n")
    status, response, took = await send_body(port, head, (b"a" * 65536 for _ in range(16)), timeout=30)
    return [status], {"declared_bytes": 200_000_000, "response_bytes": len(response), "answer_s": round(took, 3)}


async def malformed_attack(url: str) -> tuple[list[str], dict]:
    marker = secrets.token_hex(5_000)  # 10 KB found nowhere else
    bodies = [b'{"prompt": "' + marker.encode(), json.dumps({"prompt": "a", marker: 1}).encode(),
              b"\xff\xfe not json " + marker.encode(), json.dumps({"prompt": marker}).encode()]
    statuses, sizes, echoed = [], [], 0
    async with httpx.AsyncClient(timeout=30) as http:
        for body in bodies * 25:  # 100 requests: under the default rate limit they must all be 422, not 429
            r = await http.post(url + "/v1/generate", content=body, headers={"Content-Type": "application/json"})
            statuses.append(str(r.status_code))
            sizes.append(len(r.content))
            echoed += marker[40:80] in r.text  # a field name may be named by its first 40 characters, no more
    return statuses, {"largest_response_bytes": max(sizes), "responses_echoing_the_marker": echoed}


async def shutdown_with_slow_clients(server: subprocess.Popen, port: int, clients: int,
                                     timeout: float) -> dict:
    """SIGTERM while `clients` slow bodies are open: how they were answered and how long shutdown took."""
    pending = [asyncio.create_task(slow_client(port, timeout)) for _ in range(clients)]
    await asyncio.sleep(0.5)  # all connected and waiting
    began = time.monotonic()
    server.send_signal(signal.SIGTERM)
    results = await asyncio.gather(*pending)
    code = await asyncio.to_thread(server.wait, 180)
    return {"statuses": dict(Counter(s for s, _ in results)), "shutdown_s": round(time.monotonic() - began, 2),
            "exit": code}


async def run(args: argparse.Namespace, model: Path, log: Path) -> dict:
    server, url = start_server(model, ["--threads", "1", "--body-timeout", str(args.body_timeout)], log)
    port = int(url.rsplit(":", 1)[1])
    try:
        await asyncio.sleep(2)  # let start-up settle before the idle measurement
        idle = rss_mib(server.pid)
        exact_peak = reset_peak(server.pid)
        peak = idle
        sampling = True

        async def sample() -> None:  # where VmHWM cannot be reset, a 20 ms sampled peak instead
            nonlocal peak
            while sampling:
                peak = max(peak, rss_mib(server.pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        answer_within = args.body_timeout + 20
        attacks = [await attack("chunked body", url, chunked_attack(port, args.chunked_mib)),
                   await attack("slow bodies", url, slow_attack(port, args.slow_clients, answer_within)),
                   await attack("declared 200 MB", url, oversize_attack(port)),
                   await attack("malformed JSON", url, malformed_attack(url))]
        sampling = False
        await sampler
        if exact_peak:
            peak = max(peak, rss_mib(server.pid, "VmHWM"))
        after = rss_mib(server.pid)
        shutdown = await shutdown_with_slow_clients(server, port, args.slow_clients, answer_within)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    text = log.read_text(errors="replace")
    return {"idle_rss_mib": round(idle, 1), "peak_rss_above_idle_mib": round(peak - idle, 1),
            "rss_after_attacks_mib": round(after, 1),
            "peak_from": "VmHWM (exact)" if exact_peak else "sampled every 20 ms",
            "attacks": attacks, "sigterm_with_slow_bodies": shutdown,
            "server_log_tracebacks": text.count("Traceback"),
            "server_log_exceptions_in_asgi": text.count("Exception in ASGI application")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunked-mib", type=int, default=200, help="size of the chunked body offered")
    parser.add_argument("--slow-clients", type=int, default=100)
    parser.add_argument("--body-timeout", type=float, default=10.0, help="the server's --body-timeout")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if not 1 <= args.slow_clients <= 1000 or not 1 <= args.chunked_mib <= 1024 or not 0 < args.body_timeout <= 60:
        parser.error("--slow-clients 1–1000, --chunked-mib 1–1024, --body-timeout 0–60 s (this bench is bounded)")
    print(cpu_summary(), flush=True)
    with tempfile.TemporaryDirectory(prefix="crayonbox-hostile-") as scratch:
        model = build_random_model(Path(scratch), "tiny")
        report = asyncio.run(run(args, model, Path(scratch) / "server.log"))
    print(f"idle RSS {report['idle_rss_mib']} MiB; peak above idle {report['peak_rss_above_idle_mib']} MiB "
          f"(target ≤ {RSS_TARGET_MIB:g}; {report['peak_from']}); after the attacks {report['rss_after_attacks_mib']} "
          "MiB")
    for a in report["attacks"]:
        details = {k: v for k, v in a.items() if k not in ("attack", "statuses") and not k.startswith("healthz")}
        print(f"{a['attack']:<16} statuses {a['statuses']}  /healthz p50 {a['healthz_p50_ms']} ms, max "
              f"{a['healthz_max_ms']} ms, {a['healthz_failures']} failed of {a['healthz_probes']}  {details}")
    s = report["sigterm_with_slow_bodies"]
    print(f"SIGTERM with {args.slow_clients} slow bodies open: statuses {s['statuses']}, shut down in "
          f"{s['shutdown_s']} s (exit {s['exit']}); server log: {report['server_log_tracebacks']} tracebacks, "
          f"{report['server_log_exceptions_in_asgi']} 'Exception in ASGI application'")
    if args.json:
        args.json.write_text(json.dumps({**report, "cpu": cpu_summary(), "args": vars(args)}, indent=1,
                                        default=str) + "\n")
    expected = {"chunked body": {"413"}, "slow bodies": {"408"}, "declared 200 MB": {"413"},
                "malformed JSON": {"422"}}
    ok = (report["peak_rss_above_idle_mib"] <= RSS_TARGET_MIB
          and all(set(a["statuses"]) <= expected[a["attack"]] for a in report["attacks"])
          and all(a["healthz_failures"] == 0 and a["healthz_max_ms"] <= 1000 * HEALTH_TARGET_S
                  for a in report["attacks"])
          and all(a.get("responses_echoing_the_marker", 0) == 0 for a in report["attacks"])
          and set(s["statuses"]) <= {"408"} and report["server_log_tracebacks"] == 0)
    print("all targets met" if ok else "TARGET MISSED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
