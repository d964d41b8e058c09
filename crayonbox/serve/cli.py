"""`crayonbox serve`: the web page and JSON API on uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

from crayonbox.config import DEVICE_HELP, PRECISIONS
from crayonbox.errors import CrayonboxError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    p = sub.add_parser("serve", help="serve the web page and the JSON API (continuous batching)",
                       description="Serve the DALL·E-mini-style page and the JSON API. One worker owns the "
                       "model; requests join its decode batch at any step. Overload is refused at once with "
                       "429/503 and Retry-After.")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", choices=PRECISIONS, default="auto",
                   help="precision (as for `crayonbox generate`); served = offline at the same one")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + "; the decode worker runs there")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default, one per core); 1 on a busy shared machine")
    p.add_argument("--max-batch", type=int, default=18, metavar="IMAGES",
                   help="images decoded together (≥ 9; each takes 2 KV-cache rows)")
    p.add_argument("--max-cache-mib", type=float, default=0, metavar="MIB",
                   help="cap the KV cache at this many MiB (0: no cap beyond --max-batch)")
    p.add_argument("--queue", type=int, default=72, metavar="IMAGES", help="images that may wait to start")
    p.add_argument("--deadline", type=float, default=60, metavar="S",
                   help="refuse (503) requests expected to take longer than this")
    p.add_argument("--frame-budget", type=float, default=0.25, metavar="SHARE",
                   help="share of the worker's time that progressive frames may use")
    p.add_argument("--rate", type=float, default=30, metavar="PER_MIN", help="requests per minute per client")
    p.add_argument("--burst", type=int, default=10, help="requests a quiet client may send back to back")
    p.add_argument("--max-in-flight", type=int, default=2, help="unanswered requests per client")
    p.add_argument("--body-timeout", type=float, default=10, metavar="S",
                   help="a request body must arrive within this long of its headers (else 408)")
    p.add_argument("--max-connections", type=int, default=512, metavar="N",
                   help="open connections and running requests beyond this get 503 at once")
    p.add_argument("--api-keys", type=Path, default=None, metavar="FILE",
                   help="file of accepted X-API-Key values, one per line (default: any key names a client)")
    p.add_argument("--worker", choices=["process", "thread"], default="process",
                   help="where the model decodes: a process of its own (default: the web layer never holds "
                   "the decode loop's GIL) or a thread of the server's process")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_serve)


def build_config(args: argparse.Namespace, model_name: str):
    """The ServeConfig the command-line options describe, with the ranges checked."""
    from crayonbox.serve.app import ServeConfig
    from crayonbox.serve.limits import RateLimitConfig
    from crayonbox.serve.scheduler import SchedulerConfig

    if not 1 <= args.port <= 65535:
        raise CrayonboxError(f"--port must be 1–65535 (got {args.port})")
    if args.max_batch < 9:
        raise CrayonboxError(f"--max-batch must be at least 9, one 3×3 request (got {args.max_batch})")
    if args.queue < 9:
        raise CrayonboxError(f"--queue must be at least 9 images (got {args.queue})")
    if args.deadline <= 0 or args.rate <= 0 or args.burst < 1 or args.max_in_flight < 1:
        raise CrayonboxError("--deadline and --rate must be > 0, --burst and --max-in-flight ≥ 1")
    if not 0 < args.body_timeout <= 300:
        raise CrayonboxError(f"--body-timeout must be > 0 and ≤ 300 s (got {args.body_timeout})")
    if args.max_connections < 1:
        raise CrayonboxError(f"--max-connections must be ≥ 1 (got {args.max_connections})")
    if not 0 <= args.frame_budget <= 1:
        raise CrayonboxError(f"--frame-budget is a share of time, 0–1 (got {args.frame_budget})")
    keys = None
    if args.api_keys is not None:
        if not args.api_keys.is_file():
            raise CrayonboxError(f"--api-keys {args.api_keys}: no such file")
        keys = frozenset(line.strip() for line in args.api_keys.read_text().splitlines() if line.strip())
        if not keys:
            raise CrayonboxError(f"--api-keys {args.api_keys} holds no keys")
    scheduler = SchedulerConfig(max_batch_images=args.max_batch, max_cache_mib=args.max_cache_mib,
                                max_queue_images=args.queue, deadline_s=args.deadline,
                                frame_budget=args.frame_budget)
    rate = RateLimitConfig(requests_per_minute=args.rate, burst=args.burst, max_in_flight=args.max_in_flight)
    # accepted work was promised to finish within the deadline, so the grace period is the deadline
    return ServeConfig(scheduler, rate, keys, shutdown_grace_s=args.deadline, model_name=model_name,
                       body_timeout_s=args.body_timeout)


def exposure_warning(host: str, port: int, api_keys: bool) -> str | None:
    """One line for stderr when `host` is not loopback-only: who can now reach the server. None for loopback."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host.strip("[]")).is_loopback:
            return None
    except ValueError:
        pass  # a host name: it may resolve to anything, so it gets the warning
    who = "every network interface" if host in ("0.0.0.0", "::", "[::]") else host
    access = ("clients need a key from --api-keys" if api_keys else
              "no authentication: anyone who can reach it may use it (see --api-keys)")
    return (f"crayonbox: warning: --host {host} exposes the server on {who}, port {port}, over plain HTTP; "
            f"{access}. docs/security.md says what it promises.")


def run_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C / SIGTERM, which drains: new work gets 503, accepted work may finish."""
    import uvicorn

    from crayonbox import default_model_dir
    from crayonbox.pipeline import Pipeline
    from crayonbox.serve.app import create_app
    from crayonbox.serve.worker import WorkerProcess

    folder = args.model if args.model is not None else default_model_dir()
    if args.threads < 0:
        raise CrayonboxError(f"--threads must be ≥ 0 (got {args.threads})")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = build_config(args, model_name=Path(folder).resolve().name)
    warning = exposure_warning(args.host, args.port, config.api_keys is not None)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if args.worker == "process":  # loaded and warmed up before uvicorn starts, so a bad model is one line
        backend = WorkerProcess(folder, config.scheduler, args.dtype, args.threads, args.log_level,
                                device=args.device).start()
    else:
        backend = Pipeline.from_pretrained(folder, dtype=args.dtype, device=args.device)
    app = create_app(backend, config)
    scheduler = app.state.scheduler

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            scheduler.drain()  # from the first signal on, new requests get 503 instead of a reset connection
            super().handle_exit(sig, frame)

    # The grace period covers accepted work (the deadline) and bodies still arriving (the body timeout, after
    # which they get 408): past it uvicorn cancels what is left, and a cancelled request logs a traceback.
    grace = max(config.shutdown_grace_s, config.body_timeout_s) + 5
    uv_config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                               timeout_graceful_shutdown=int(grace), limit_concurrency=args.max_connections,
                               timeout_keep_alive=5)
    print(f"crayonbox: serving {folder} on http://{args.host}:{args.port}/  (API docs: /docs)")
    DrainingServer(uv_config).run()
    return 0
