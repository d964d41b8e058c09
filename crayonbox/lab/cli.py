"""`crayonbox lab …`: probe a model, measure the images, write the report and the model card.

    crayonbox lab probe --prompts null,neutral -n 400 --condition-scale 1,3,10 --out RUN
    crayonbox lab reference MODEL --data SHARDS [--judge JUDGE] [--limit N] [--force]
    crayonbox lab measure RUN [--reference DATA] [--instruments skin_tone,clusters]
    crayonbox lab report RUN [--out DIR]
    crayonbox lab card MODEL [--run RUN]
    crayonbox lab families [NAME]
    crayonbox lab blame CAPTIONS --tokenizer TOKDIR [--prompts null] [--arms english_only:off] --out DIR
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from crayonbox.config import DEVICE_HELP
from crayonbox.sampler_settings import add_sampler_arguments, sampler_overrides


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,3,10, got "
                                         f"{text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one condition scale")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    """Add `crayonbox lab probe|reference|measure|report|card|ablate|explain|families|blame`."""
    lab = sub.add_parser("lab", help="bias lab: probe a model at scale, measure, report")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="STEP", required=True)

    probe = lab_sub.add_parser("probe", help="generate many images per prompt and condition scale into a run")
    probe.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    probe.add_argument("--prompts", required=True, help="families (null, neutral, attire, person, animal, "
                       "food, object) and/or prompt files, comma-separated")
    probe.add_argument("-n", type=int, default=400, help="images per prompt and scale (default 400)")
    probe.add_argument("--condition-scale", type=_floats, default=(1.0, 3.0, 10.0), help="e.g. 1,3,10")
    add_sampler_arguments(probe, skip=("condition_scale",))  # the scale is the grid above
    probe.add_argument("--seed", type=int, default=0, help="image i of every prompt uses seed+i (default 0)")
    probe.add_argument("--out", type=Path, required=True, help="run folder (created, or resumed)")
    probe.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    probe.add_argument("--threads", type=int, default=None, help="torch threads per process")
    probe.add_argument("--device", default="auto", help=DEVICE_HELP)
    probe.add_argument("--batch-images", type=int, default=256, help="images decoded together")
    probe.add_argument("--world-config", type=Path, default=None, help="world config for the world families")
    probe.add_argument("--verify", action="store_true", help="redraw rows whose PNG has gone missing")
    probe.add_argument("--quiet", action="store_true", help="no progress bar")
    probe.set_defaults(func=run_probe_command)

    ref = lab_sub.add_parser("reference", help="measure a model's training images once and store the labels in "
                             "MODEL/reference/, for `lab measure` where the training data is not")
    ref.add_argument("model", type=Path, help="model folder (the table is written to MODEL/reference/)")
    ref.add_argument("--data", type=Path, required=True, help="the caption-pipeline output shard folder the "
                     "model was trained on")
    ref.add_argument("--judge", type=Path, default=None, help="judge folder to label with too (default: "
                     "MODEL/judge/ when the model ships one)")
    ref.add_argument("--limit", type=int, default=2000, help="training images measured, the first in shard "
                     "order (default 2000, as `lab measure --reference-limit`; 0 = all)")
    ref.add_argument("--skin-max-distance", type=float, default=8.0,
                     help="ΔE of the skin meter (default 8, as `lab measure`; part of its version)")
    ref.add_argument("--force", action="store_true", help="replace an existing MODEL/reference/")
    ref.add_argument("--quiet", action="store_true", help="no progress bar")
    ref.set_defaults(func=run_reference_command)

    measure = lab_sub.add_parser("measure", help="apply instruments to a run and compute the statistics")
    measure.add_argument("run", type=Path)
    measure.add_argument("--instruments", default="skin_tone,clusters",
                         help="comma-separated: skin_tone, judge, clip, clusters "
                              "(default skin_tone,clusters)")
    measure.add_argument("--judge", type=Path, default=None, help="trained judge folder (for the judge)")
    measure.add_argument("--clip-weights", type=Path, default=None, help="CLIP state dict (.safetensors)")
    measure.add_argument("--clip-arch", default="ViT-B-32", help="open_clip architecture of those weights")
    measure.add_argument("--reference", type=Path, default=None,
                         help="training shard folder (default: the model's training data, from its "
                              "provenance)")
    measure.add_argument("--no-reference", action="store_true", help="compare with a balanced model only")
    measure.add_argument("--reference-limit", type=int, default=2000, help="training images to measure")
    measure.add_argument("--validation", type=Path, default=None,
                         help="labelled world folder (default: fresh renders of the world config)")
    measure.add_argument("--validation-n", type=int, default=300)
    measure.add_argument("--validate-roundtrip", action="store_true",
                         help="validate instruments on renders passed through the model's own VQGAN")
    measure.add_argument("--skin-max-distance", type=float, default=8.0,
                         help="ΔE within which a pixel counts as a skin tone (default 8; generated images "
                              "drift, check with --validate-roundtrip)")
    measure.add_argument("--world-config", type=Path, default=None,
                         help="world config of the validation renders")
    measure.add_argument("--clusters", type=int, default=8, help="k of the label-free clusters (default 8)")
    measure.add_argument("--seed", type=int, default=0)
    measure.add_argument("--quiet", action="store_true")
    measure.set_defaults(func=run_measure_command)

    report = lab_sub.add_parser("report", help="write the self-contained HTML report (+ JSON, CSV)")
    report.add_argument("run", type=Path)
    report.add_argument("--out", type=Path, default=None, help="folder (default RUN/report)")
    report.set_defaults(func=run_report_command)

    card = lab_sub.add_parser("card", help="write a model card with the lab's measured figures")
    card.add_argument("model", type=Path)
    card.add_argument("--run", type=Path, default=None, help="a measured lab run of this model")
    card.add_argument("--out", type=Path, default=None, help="Markdown file (default MODEL/MODEL_CARD.md)")
    card.set_defaults(func=run_card_command)

    ablate = lab_sub.add_parser("ablate", help="counterfactual retraining: each caption-pipeline change × "
                                "training seeds, probed and measured against the baseline")
    ablate.add_argument("run", type=Path, help="a `crayonbox train all` run folder")
    ablate.add_argument("--arms", default=None, help="comma-separated STEP:CHANGE (english_only:drop, "
                        "min_length:off, normalize:raw, dropout:off, names:off, …); default: the steps "
                        "`lab blame` finds necessary for the blank prompt's ids")
    ablate.add_argument("--seeds", type=int, default=2, help="training seeds per arm (default 2)")
    ablate.add_argument("--prompts", default="null", help="families or prompt files (default null)")
    ablate.add_argument("-n", type=int, default=300, help="images per prompt and scale (default 300)")
    ablate.add_argument("--condition-scale", type=_floats, default=(1.0,), help="e.g. 1,3,10 (default 1)")
    ablate.add_argument("--steps", type=int, default=0, help="transformer steps (default: the recipe's)")
    ablate.add_argument("--workers", type=int, default=2, help="models trained at once, a thread each")
    ablate.add_argument("--skin-max-distance", type=float, default=12.0, help="ΔE of the skin meter")
    ablate.add_argument("--out", type=Path, required=True, help="ablation folder (created, or resumed)")
    ablate.add_argument("--quiet", action="store_true", help="no progress bars")
    # Retraining is train/'s work: the handler is looked up by module name when the command runs.
    ablate.set_defaults(func=_by_name("crayonbox.train.ablate", "run_ablate_command"))

    explain = lab_sub.add_parser("explain", help="why the blank prompt draws what it draws: outcome, matched "
                                 "training items, ablations, attribution, a verdict (HTML + JSON)")
    explain.add_argument("run", type=Path, help="a `crayonbox train all` run folder")
    explain.add_argument("--ablation", type=Path, default=None, help="a `crayonbox lab ablate` folder of RUN")
    explain.add_argument("-n", type=int, default=300, help="images per condition scale (default 300)")
    explain.add_argument("--condition-scale", type=_floats, default=(1.0, 3.0, 10.0), help="default 1,3,10")
    explain.add_argument("--attribution-limit", type=int, default=0, help="training items scored (0 = all)")
    explain.add_argument("--out", type=Path, required=True, help="folder for explanation.html and .json")
    explain.add_argument("--quiet", action="store_true", help="no progress bars")
    explain.set_defaults(func=run_explain_command)

    fam = lab_sub.add_parser("families", help="list the built-in prompt families (or one family's prompts)")
    fam.add_argument("name", nargs="?")
    fam.add_argument("--world-config", type=Path, default=None)
    fam.set_defaults(func=run_families_command)

    blame = lab_sub.add_parser("blame", help="which caption-pipeline step made training items match a prompt")
    blame.add_argument("captions", type=Path, help="a caption run folder (`crayonbox data captions` output)")
    blame.add_argument("--tokenizer", type=Path, required=True, help="tokenizer folder (or a model folder)")
    blame.add_argument("--prompts", default=None, help="families (null, …) and/or prompt files, comma-separated "
                       "(default: the blank prompt \"\")")
    blame.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                       help="an exact prompt, repeatable ('' is the blank prompt)")
    blame.add_argument("--arms", default=None, help="comma-separated arms, e.g. english_only:off,normalize:raw "
                       "(default: every candidate arm of the pipeline)")
    blame.add_argument("--out", type=Path, required=True, help="new or empty folder (or an earlier blame's)")
    blame.add_argument("--quiet", action="store_true", help="no progress bar")
    blame.set_defaults(func=run_blame_command)


def _by_name(module: str, function: str):
    """A handler that imports `module` only when the command runs (train/ is not imported by the lab)."""

    def handler(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    return handler


def run_probe_command(args: argparse.Namespace) -> int:
    """`crayonbox lab probe`."""
    from crayonbox.lab.probe import ProbeConfig, run_probe

    config = ProbeConfig(model=args.model, prompts=[args.prompts], n=args.n,
                         condition_scales=args.condition_scale,
                         sampler=sampler_overrides(args, skip=("condition_scale",)), seed=args.seed,
                         workers=args.workers, threads=args.threads, batch_images=args.batch_images,
                         world_config=args.world_config, verify=args.verify, device=args.device)
    summary = run_probe(config, args.out, progress=not args.quiet)
    print(f"{summary.run}: {summary.generated} new images ({summary.already_stored} already stored, "
          f"{summary.planned} planned) in {summary.seconds:.1f} s, {summary.images_per_second:.2f} images/s")
    return 0


def run_measure_command(args: argparse.Namespace) -> int:
    """`crayonbox lab measure`."""
    from crayonbox.lab.measure import MeasureConfig, measure_run

    config = MeasureConfig(
        instruments=tuple(p.strip() for p in args.instruments.split(",") if p.strip()), judge=args.judge,
        clip_arch=args.clip_arch, clip_weights=args.clip_weights, reference=args.reference,
        use_reference=not args.no_reference, reference_limit=args.reference_limit, validation=args.validation,
        validation_n=args.validation_n, world_config=args.world_config,
        validate_roundtrip=args.validate_roundtrip, skin_max_distance=args.skin_max_distance, clusters=args.clusters,
        seed=args.seed)
    metrics = measure_run(args.run, config, progress=not args.quiet)
    found = metrics["multiple_testing"].get("discoveries", [])
    reference = metrics["reference"]
    against = (f"reference: {reference['source']}" if reference["n"] else
               "NO TRAINING REFERENCE: shares are compared only with each other and a balanced model")
    print(f"{args.run}/metrics.json: {len(metrics['cells'])} cells, {against}; {len(found)} of "
          f"{metrics['multiple_testing']['tests']} tests significant after Benjamini–Hochberg")
    for note in reference.get("notes") or []:
        print(f"  {note}")
    return 0


def run_reference_command(args: argparse.Namespace) -> int:
    """`crayonbox lab reference`."""
    from crayonbox.lab.reference_table import TableConfig, build_reference_table

    config = TableConfig(judge=args.judge, limit=args.limit, skin_max_distance=args.skin_max_distance,
                         force=args.force)
    manifest = build_reference_table(args.model, args.data, config, progress=not args.quiet)
    groups, summary = manifest["groups"], manifest["summary"]
    instruments = ", ".join(f"{name} ({entry['key']})" for name, entry in manifest["instruments"].items())
    print(f"{args.model}/reference: {manifest['items']} training images, {groups['count']} caption-id groups "
          f"(blank prompt's: {summary['blank']['n']} images, unconditional: {summary['unconditional']['n']}), "
          f"measured with {instruments}; data sha256 {manifest['data_sha256'][:12]}…")
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    """`crayonbox lab report`."""
    from crayonbox.lab.report import build_report

    print(build_report(args.run, args.out))
    return 0


def run_card_command(args: argparse.Namespace) -> int:
    """`crayonbox lab card`."""
    from crayonbox.lab.card import write_card

    print(write_card(args.model, args.run, args.out))
    return 0


def run_explain_command(args: argparse.Namespace) -> int:
    """`crayonbox lab explain`."""
    from crayonbox.lab.explain import EXPLANATION_HTML, ExplainConfig, explain_run

    config = ExplainConfig(n=args.n, condition_scales=args.condition_scale,
                           attribution_limit=args.attribution_limit)
    explanation = explain_run(args.run, args.out, args.ablation, config, progress=not args.quiet)
    print(explanation.conclusion)
    print(f"{args.out / EXPLANATION_HTML}")
    return 0


def run_families_command(args: argparse.Namespace) -> int:
    """`crayonbox lab families`."""
    from crayonbox.lab.families import FAMILIES, family

    if args.name is None:
        print("\n".join(FAMILIES))
        return 0
    for spec in family(args.name, args.world_config):
        print(json.dumps({"prompt": spec.prompt, "input_mode": spec.input_mode}, ensure_ascii=False))
    return 0



def run_blame_command(args: argparse.Namespace) -> int:
    """`crayonbox lab blame`."""
    from crayonbox.lab.blame import blame_run
    from crayonbox.lab.blame_report import check_out_dir, write_blame
    from crayonbox.lab.families import PromptSpec, expand_prompts

    check_out_dir(args.out)  # before the work, so a bad --out costs nothing
    specs = (expand_prompts(args.prompts) if args.prompts else []) + [PromptSpec(p, "given")
                                                                       for p in args.prompt or []]
    arms = [a for a in args.arms.split(",") if a.strip()] if args.arms else None
    result = blame_run(args.captions, args.tokenizer, specs or [""], arms, progress=not args.quiet)
    data = write_blame(result, args.out)
    for summary in data["prompts"]:
        top = ", ".join(f"{g} {n}" for g, n in summary["groups"].items() if g != "captioned")
        print(f"{summary['label']}: {summary['matched']['n']} of {summary['kept']} items match ({top})")
    print(f"{args.out}/blame.json, blame.parquet: {len(result.table.keys)} items × "
          f"{len(result.table.arms)} arms in {result.seconds:.1f} s")
    return 0
