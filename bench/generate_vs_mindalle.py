"""crayonbox vs min-dalle 0.4.11 at the real DALL·E mini / mega shapes, on this machine, in one command.

    python bench/generate_vs_mindalle.py --mindalle-steps 64 --modes float32,fp16w,int8   # mini, ~25 min
    python bench/generate_vs_mindalle.py --model mega --mindalle-steps 16 --modes fp16w,int8

Both load the *same* random weights from disk (min-dalle's own .pt layout, converted for crayonbox by
`crayonbox convert --from mindalle`), run the same prompt, seed, top-k and condition scale, and alternate
run by run, each in a fresh subprocess (so peak RSS is each one's own). Per-stage times: encoder, decoder per
token (median), VQGAN. With --mindalle-steps N < 256 only N of min-dalle's decode steps are timed and its decoder
time is extrapolated as 256 × the median step, which is fair because its step cost is flat in position (it
always attends over all 256 slots and recomputes the cross-attention K/V); the output says so. crayonbox's step
cost grows with position (attention over the tokens so far), so early steps would flatter it: it runs
`--steps` (default all 256) and is extrapolated only when that is lowered too.

The same run measures this machine's matmul peak (in fp32 and in bf16) and read bandwidth, and prints, per row,
the floor of that precision (`floor_s`: the decoder's bytes per step — weights and K/V cache — × 256 ÷ bandwidth,
or its FLOPs ÷ the peak in its compute dtype, whichever is longer, plus the VQGAN's FLOPs ÷ the peak in its
dtype) and how far each row is from it, for the decoder alone and for the whole image. Whether a mode keeps the
images is bench/precision_quality.py's question.

    python bench/generate_vs_mindalle.py --device cuda --mindalle-dtype float16 --images 16 --model mega

On a GPU, min-dalle runs on the same device in the dtype given (its fp16 there), crayonbox in each --modes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_summary, machine_floor

PROMPT = "a woman wearing a red sari on a yellow background"
SEED = 7
# FLOPs of the DALL·E mini architecture (useful work: cross-K/V computed once), all images together, VQGAN
# included; the VQGAN's share (f16, 256 px, the same for mini and mega) counted with torch.utils.flop_counter.
USEFUL_GFLOP = {("mini", 1): 501, ("mini", 9): 4193, ("mega", 1): 1854, ("mega", 9): 14615}
VQGAN_GFLOP_PER_IMAGE = 252
BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2, "float16": 2, "fp16w": 2, "int8": 1}
MEAN_SLOTS_READ = 128.5  # self-attention K/V slots a step reads, averaged over the 256 steps


def useful_gflop(model: str, images: int) -> float:
    """Measured work at 1 and 9 images; other counts (a 4×4 grid) scale the 9-image figure."""
    return USEFUL_GFLOP.get((model, images), USEFUL_GFLOP[(model, 9)] * images / 9)


def decoder_weights(model: str) -> int:
    """Weights one decode step streams: every decoder layer's self-attention, the cross-attention's query and
    output (its keys and values are cached), the GLU, and the output head."""
    s = SHAPES[model]
    per_layer = 4 * s["d"] ** 2 + 2 * s["d"] ** 2 + 3 * s["d"] * s["glu"]
    return s["layers"] * per_layer + s["d"] * s["image_vocab"]


def step_bytes(model: str, images: int, mode: str, kv_bytes: int) -> float:
    """Bytes one decode step must read at the least: the decoder weights in the mode's width, and the
    self-attention K/V cache of every row (2 rows per image under guidance), averaged over the 256 steps."""
    s = SHAPES[model]
    kv = s["layers"] * 2 * images * 2 * s["d"] * kv_bytes * MEAN_SLOTS_READ
    return decoder_weights(model) * BYTES_PER_WEIGHT.get(mode, 4) + kv


SHAPES = {
    "mini": dict(layers=12, heads=16, d=1024, glu=2730, text_vocab=50264, image_vocab=16384),
    "mega": dict(layers=24, heads=32, d=2048, glu=4096, text_vocab=50272, image_vocab=16415),
}


# ----------------------------------------------------------------------------- weights on disk
def write_weights(root: Path, model: str) -> Path:
    """min-dalle's layout under root (pretrained/dalle_bart_{model}/, pretrained/vqgan/) with random weights."""
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer

    from crayonbox.train.tokenizer import BPETrainingConfig, train_bpe

    s = SHAPES[model]
    bart_dir, vq_dir = root / f"dalle_bart_{model}", root / "vqgan"
    bart_dir.mkdir(parents=True, exist_ok=True)
    vq_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    captions = [
        f"{a} {b} {c}"
        for a in ("a woman", "a man", "a dog", "a cat")
        for b in ("wearing a red sari", "in a kimono", "with a hat")
        for c in ("on a yellow background", "at night")
    ]
    train_bpe(captions * 5, root / "tok", BPETrainingConfig(vocab_size=400, show_progress=False))
    for name in ("vocab.json", "merges.txt"):
        (bart_dir / name).write_bytes((root / "tok" / name).read_bytes())
    for build, path in (
        (
            # min-dalle 0.4.11's order: layers, embed, heads, text vocab, text tokens, glu
            lambda: DalleBartEncoder(s["layers"], s["d"], s["heads"], s["text_vocab"], 64, s["glu"], "cpu"),
            bart_dir / "encoder.pt",
        ),
        (
            # image vocab, embed, heads, glu, layers
            lambda: DalleBartDecoder(s["image_vocab"], s["d"], s["heads"], s["glu"], s["layers"], "cpu"),
            bart_dir / "decoder.pt",
        ),
    ):
        module = build()
        state = {}
        for key, value in module.state_dict().items():
            if key.endswith("weight") and value.dim() >= 2:
                value = torch.randn_like(value) * 0.02
            # min-dalle's files lack the scale of norms that feed a Dense (they stay 1), and are fp16.
            if any(
                part in key for part in ("pre_", "glu.ln0.weight", "glu.ln1.weight", "final_ln.weight")
            ) and key.endswith("weight"):
                continue
            state[key] = value.half()
        torch.save(state, path)
        del module, state
    detoker = VQGanDetokenizer()
    for p in detoker.parameters():
        if p.dim() >= 2:
            p.data.normal_(0, 0.02)
    torch.save(detoker.state_dict(), vq_dir / "detoker.pt")
    return bart_dir


def convert(bart_dir: Path, out: Path) -> None:
    from crayonbox.weights.convert import convert_mindalle_folder
    from crayonbox.weights.export import write_model_folder

    write_model_folder(convert_mindalle_folder(bart_dir), out, dtype="float16")  # as min-dalle's files


# ----------------------------------------------------------------------------- workers (one run each)
class Timer:
    def __init__(self):
        self.times: dict[str, list[float]] = {}

    def wrap(self, obj, name: str, key: str):
        fn = getattr(obj, name)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            self.times.setdefault(key, []).append(time.perf_counter() - t)
            return out

        setattr(obj, name, timed)


class StopDecoding(Exception):
    pass


def run_mindalle(root: Path, model: str, images: int, steps: int, scale: float, top_k: int, device: str,
                 dtype: str) -> dict:
    import min_dalle.min_dalle as md

    md.requests.get = lambda *a, **k: None  # its constructor pings the hub even when the files are there
    torch.set_num_threads(os.cpu_count())
    t0 = time.perf_counter()
    m = md.MinDalle(models_root=str(root), dtype=getattr(torch, dtype), device=device, is_mega=model == "mega",
                    is_verbose=False)
    load = time.perf_counter() - t0
    timer = Timer()
    timer.wrap(m.encoder, "forward", "encoder")
    timer.wrap(m.detokenizer, "forward", "vqgan")
    step_fn = m.decoder.sample_tokens

    def counted(*args, **kwargs):
        if len(timer.times.get("step", [])) >= steps:
            raise StopDecoding
        t = time.perf_counter()
        out = step_fn(*args, **kwargs)
        timer.times.setdefault("step", []).append(time.perf_counter() - t)
        return out

    m.decoder.sample_tokens = counted
    grid = int(images**0.5)
    t0 = time.perf_counter()
    try:
        m.generate_images(
            PROMPT, seed=SEED, grid_size=grid, temperature=1, top_k=top_k, supercondition_factor=scale
        )
    except StopDecoding:  # timed `steps` steps: run the VQGAN on what we have to time it too
        with torch.no_grad():
            m.detokenizer.forward(False, torch.zeros(images, 256, dtype=torch.long, device=device))
    sync(device)
    total = time.perf_counter() - t0
    width = getattr(torch, dtype).itemsize
    return _summary(f"min-dalle {dtype}", timer, load, total, steps, precision=dict(
        mode=dtype, kv_bytes=width, vqgan_dtype=dtype))


def sync(device: str) -> None:
    """Wait for the GPU, so a time covers the work and not only its launch."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_crayonbox(folder: Path, images: int, steps: int, scale: float, top_k: int, mode: str,
                  device: str) -> dict:
    from crayonbox.pipeline import Pipeline

    torch.set_num_threads(os.cpu_count())
    t0 = time.perf_counter()
    pipe = Pipeline.from_pretrained(folder, dtype=mode, device=device)
    load = time.perf_counter() - t0
    timer = Timer()
    timer.wrap(pipe.bart.encoder, "forward", "encoder")
    timer.wrap(pipe.vqgan, "decode", "vqgan")
    timer.wrap(pipe.bart.decoder, "step", "step")

    def stop(step: int) -> None:
        if step >= steps:
            raise StopDecoding

    t0 = time.perf_counter()
    try:
        pipe(PROMPT, num_images=images, seed=SEED, condition_scale=scale, top_k=top_k, callback=stop)
    except StopDecoding:
        stopped = True  # decode after the except block: its traceback would keep the KV cache alive
    else:
        stopped = False
    if stopped:
        pipe.decode_images(torch.zeros(images, 256, dtype=torch.long), batch=images)
    sync(device)
    total = time.perf_counter() - t0
    label = f"auto:{pipe.precision_choice.describe()}" if mode == "auto" else mode
    precision = dict(mode=pipe.precision_choice.mode if mode == "auto" else mode, kv_bytes=pipe.dtype.itemsize,
                     vqgan_dtype=str(next(pipe.vqgan.parameters()).dtype).removeprefix("torch."))
    return _summary(f"crayonbox {label}", timer, load, total, steps, precision)


def _summary(name: str, timer: Timer, load: float, total: float, steps: int, precision: dict) -> dict:
    """The run's times, peak memory and `precision` (mode, K/V cache bytes per number, VQGAN dtype)."""
    step = statistics.median(timer.times["step"])
    encoder = sum(timer.times.get("encoder", [0.0]))
    vqgan = sum(timer.times.get("vqgan", [0.0]))
    decoder = 256 * step if steps < 256 else sum(timer.times["step"])
    return {
        "impl": name,
        "load_s": load,
        "encoder_s": encoder,
        "step_ms": 1000 * step,
        "decoder_s": decoder,
        "vqgan_s": vqgan,
        "total_s": encoder + decoder + vqgan if steps < 256 else total,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "extrapolated": steps < 256,
        **precision,
    }


# ----------------------------------------------------------------------------- orchestration
def worker(args: argparse.Namespace) -> None:
    if args.worker == "mindalle":
        out = run_mindalle(Path(args.root), args.model, args.images, args.steps, args.scale, args.top_k,
                           args.device, args.mindalle_dtype)
    else:
        out = run_crayonbox(Path(args.root), args.images, args.steps, args.scale, args.top_k, args.mode,
                            args.device)
    print("RESULT " + json.dumps(out))


def spawn(args: argparse.Namespace, kind: str, root: Path, images: int, mode: str = "float32") -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--root",
        str(root),
        "--model",
        args.model,
        "--images",
        str(images),
        "--steps",
        str(args.mindalle_steps if kind == "mindalle" else args.steps),
        "--scale",
        str(args.scale),
        "--top-k",
        str(args.top_k),
        "--mode",
        mode,
        "--device",
        args.device,
        "--mindalle-dtype",
        args.mindalle_dtype,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode == -9 and kind == "mindalle":  # the kernel's OOM killer: a result, not a bench bug
        return {"impl": f"min-dalle {args.mindalle_dtype}", "failed": "killed by the OOM killer (not enough memory)"}
    if out.returncode or not lines:
        raise SystemExit(f"{kind} run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mini", "mega"], default="mini")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per configuration")
    p.add_argument("--steps", type=int, default=256, help="crayonbox decode steps to time (< 256: extrapolate)")
    p.add_argument("--mindalle-steps", type=int, default=None,
                   help="min-dalle decode steps to time (default --steps; its step cost is flat, so < 256 is fair)")
    p.add_argument("--scale", type=float, default=16.0, help="condition scale (min-dalle default 16)")
    p.add_argument("--top-k", type=int, default=256, help="top-k (min-dalle default 256)")
    p.add_argument("--modes", default="float32,fp16w,int8", help="crayonbox precision modes, comma-separated")
    p.add_argument("--images", default="1,9", help="image counts to time, comma-separated")
    p.add_argument("--skip-mindalle", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]: both implementations run there")
    p.add_argument("--mindalle-dtype", default="float32", help="min-dalle's dtype (float16 is its GPU mode)")
    p.add_argument("--worker", choices=["mindalle", "crayonbox"], help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--prepare", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.mindalle_steps = args.mindalle_steps or args.steps
    if args.prepare:
        convert(write_weights(Path(args.prepare), args.model), Path(args.prepare) / "crayonbox")
        return None
    if args.worker:
        args.images = int(args.images)
        return worker(args)

    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-md-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        # in a child process: the parent would keep the memory of these GB-sized modules (glibc rarely returns
        # it), which min-dalle's mega run then lacks
        subprocess.run([sys.executable, __file__, "--prepare", str(root), "--model", args.model], check=True)
        print(f"random weights written and converted in {time.perf_counter() - t:.0f} s", flush=True)
        floor = machine_floor(args.device)
        print(f"machine: {cpu_summary() if args.device == 'cpu' else torch.cuda.get_device_name(args.device)}")
        print(f"measured: matmul fp32 {floor['float32']:.0f}, bf16 {floor['bfloat16']:.0f} GFLOP/s; read "
              f"bandwidth {floor['read_gbs']:.1f} GB/s", flush=True)
        results: dict[tuple[str, int], list[dict]] = {}
        for images in [int(x) for x in args.images.split(",")]:
            for _ in range(args.rounds):
                runs = [] if args.skip_mindalle else [("mindalle", "float32")]
                runs += [("crayonbox", m) for m in modes]
                for kind, mode in runs:
                    r = spawn(args, kind, root if kind == "mindalle" else root / "crayonbox", images, mode)
                    if "failed" in r:
                        print(f"  {r['impl']:<20} n={images}: {r['failed']}", flush=True)
                        continue
                    results.setdefault((r["impl"], images), []).append(r)
                    print(f"  {r['impl']:<20} n={images}: total {r['total_s']:.1f} s", flush=True)
        print_table(results, floor, args)


def floor_s(row: dict, model: str, images: int, floor: dict) -> tuple[float, float]:
    """(decoder, total) seconds this row's precision cannot beat on this machine. Decoder: streaming its bytes
    once per step (`step_bytes`) at the measured bandwidth, or its FLOPs at the measured peak of its compute
    dtype (fp16w computes in fp32; int8 is held to the fp32 peak too, which flatters it), whichever is longer;
    total: that plus the VQGAN's FLOPs at the peak of the VQGAN's dtype (the two run one after the other)."""
    peak = {"bfloat16": floor["bfloat16"], "float16": floor["bfloat16"]}
    mode = row["mode"]
    vqgan_gflop = VQGAN_GFLOP_PER_IMAGE * images
    compute = (useful_gflop(model, images) - vqgan_gflop) / peak.get(mode, floor["float32"])
    stream = step_bytes(model, images, mode, row["kv_bytes"]) * 256 / (floor["read_gbs"] * 1e9)
    decoder = max(compute, stream)
    return decoder, decoder + vqgan_gflop / peak.get(row["vqgan_dtype"], floor["float32"])


def print_table(results: dict, floor: dict, args: argparse.Namespace) -> None:
    print(
        f"\n{args.model} shapes, condition scale {args.scale}, top-k {args.top_k}; medians over {args.rounds} "
        f"rounds"
        + (f"; min-dalle decoder extrapolated from {args.mindalle_steps} steps" if args.mindalle_steps < 256 else "")
        + (f"; crayonbox decoder extrapolated from {args.steps} steps" if args.steps < 256 else "")
    )
    head = (
        f"{'impl':<38}{'images':>7}{'encoder s':>11}{'step ms':>9}{'decoder s':>11}{'vqgan s':>9}"
        f"{'total s':>9}{'peak GiB':>10}{'vs md':>8}{'floor s':>9}{'dec×floor':>11}{'tot×floor':>11}"
    )
    print(head)
    for (impl, images), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in ("encoder_s", "step_ms", "decoder_s", "vqgan_s", "total_s", "peak_rss_gib")
        }
        base = results.get((f"min-dalle {args.mindalle_dtype}", images))
        ratio = med["total_s"] / statistics.median(r["total_s"] for r in base) if base else float("nan")
        decoder_floor, total_floor = floor_s(runs[0], args.model, images, floor)
        print(
            f"{impl:<38}{images:>7}{med['encoder_s']:>11.2f}{med['step_ms']:>9.1f}{med['decoder_s']:>11.1f}"
            f"{med['vqgan_s']:>9.1f}{med['total_s']:>9.1f}{med['peak_rss_gib']:>10.2f}{ratio:>8.2f}"
            f"{total_floor:>9.1f}{med['decoder_s'] / decoder_floor:>11.2f}{med['total_s'] / total_floor:>11.2f}"
        )
    print(
        "vs md = crayonbox total / min-dalle total (lower is faster). floor s = this precision's floor on this "
        "machine: the decoder's (max of streaming its weights and K/V cache once per step at the measured "
        "bandwidth, and its FLOPs at the measured peak of its compute dtype) plus the VQGAN's FLOPs at the peak "
        "of its dtype; dec×floor and tot×floor = measured / floor for the decoder and for the whole image (1 = "
        "at the floor)."
    )


if __name__ == "__main__":
    main()
