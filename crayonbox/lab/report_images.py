"""The report's images: sample thumbnails per id group and scale, and cluster exemplars.

Thumbnails are the first seeds (common random numbers: strips line up across prompts and scales), at most
THUMB_PX on a side and stored as palette PNGs, so a probe of many prompts still gives a page of a few hundred
kB; the instruments measure the originals, never these.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from PIL import Image

from crayonbox.lab.report_html import details, esc, img, table
from crayonbox.lab.report_summary import HEADLINE_FAMILIES
from crayonbox.lab.results_run import IdGroup, Metrics
from crayonbox.lab.store import RunStore
from crayonbox.model.images import make_grid

THUMB_IMAGES = 8  # images per scale in a sample strip (the first seeds, so strips line up across prompts)
THUMB_PX = 48  # largest side of a thumbnail; smaller images are shown at 2× with nearest-neighbour scaling


def prompts_html(group: IdGroup) -> str:
    """Every member of an id group as escaped HTML, joined by " = "."""
    return " = ".join(f"<code>{esc(m.text)}</code>" for m in group.members)


def thumbnail(image: Image.Image) -> Image.Image:
    """A sample shrunk to at most THUMB_PX on its longer side (small images are kept as they are)."""
    if max(image.size) <= THUMB_PX:
        return image
    image = image.copy()
    image.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)
    return image


def samples_section(store: RunStore, metrics: Metrics, records: list[Any]) -> str:
    """Per id group one strip of thumbnails per scale: the first THUMB_IMAGES seeds of its first member."""

    by_key: dict[str, dict[float, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(records, key=lambda r: r.image_index):
        by_key[r.prompt_key][r.condition_scale].append(r)
    figures: dict[bool, list[str]] = {True: [], False: []}  # headline (null, neutral) groups first, open
    for group in metrics.id_groups():
        scales = by_key.get(group.first.key)
        if not scales:
            continue
        columns = min(THUMB_IMAGES, max(len(rows) for rows in scales.values()))
        tiles, notes = [], []
        for scale, rows in sorted(scales.items()):
            row = [thumbnail(store.load_image(r.path)) for r in rows[:columns]]
            tiles += row + [Image.new("RGB", row[0].size, "white")] * (columns - len(row))  # keep rows aligned
            unique = metrics.dedupe.unique_for(group.first.key, scale) if metrics.dedupe else None
            notes.append(f"{scale:g}" + (f" ({unique[0]} of {unique[1]} unique)" if unique else ""))
        grid = make_grid(tiles, columns=columns)
        scale_up = 2 if max(tiles[0].size) * 2 <= THUMB_PX else 1  # tiny test models draw 16-px images
        seed = min(r.seed for rows in scales.values() for r in rows)
        caption = f"{prompts_html(group)} · rows: scale {', '.join(notes)} · seeds {seed}…"
        figures[group.first.family in HEADLINE_FAMILIES].append(
            f"<figure>{img(grid, f'samples {group.first.key}', grid.width * scale_up, palette=True)}"
            f"<figcaption>{caption}</figcaption></figure>")
    if not figures[True]:
        figures = {True: figures[False], False: []}
    rest = details(f"Samples of the other {len(figures[False])} id groups",
                   f"<div class=\"grid\">{''.join(figures[False])}</div>") if figures[False] else ""
    return (f"<h2>Samples</h2><p class=\"note\">The first {THUMB_IMAGES} seeds of each id group, one row per "
            f"condition scale, at most {THUMB_PX} px per image.</p><div class=\"grid\">{''.join(figures[True])}"
            f"</div>{rest}")


def clusters_section(store: RunStore, metrics: Metrics) -> str:
    """Exemplars of each label-free cluster, from the model and from training (folded)."""
    clusters = metrics.clusters
    if clusters is None:
        return ""

    paths = {r.sha256: r.path for r in store.images()}
    for record in store.record_keys("reference-items:"):
        paths.update({row["sha256"]: row["path"] for row in store.get_record(record)})
    # Training exemplars exist only when the training images themselves were measured: a reference table holds
    # labels, not pixels, and then (as without a reference) the clusters were fitted on the model's images alone.
    with_training = any(clusters.reference_exemplars.values())
    rows = []
    for label, shas in clusters.exemplars.items():
        cells = []
        groups = (shas, clusters.reference_exemplars.get(label, [])) if with_training else (shas,)
        for group in groups:
            images = [thumbnail(store.load_image(paths[s])) for s in group if s in paths]
            cells.append(img(make_grid(images, columns=len(images)), f"cluster {label}", 40 * len(images),
                             palette=True)
                         if images else "–")
        rows.append((esc(label), *cells))
    fitted_on = "the model's and the training images together" if with_training else "the model's images alone"
    headers = ["cluster", "model exemplars", *(["training exemplars"] if with_training else [])]
    return details("Label-free clusters", "<p>k-means on " + esc(clusters.extractor) + f" features of {fitted_on} "
                   "(no labels involved). Exemplars are the images nearest each centroid; the cluster shares per "
                   "prompt are in the tables above.</p>"
                   + table(headers, rows, raw_columns=tuple(range(len(headers)))))
