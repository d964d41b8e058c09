"""The page's icon, a box of three crayons, drawn from one list of polygons into both committed files:
static/favicon.svg (what browsers that take an SVG icon use) and static/favicon.ico (16, 32 and 48 px, for
`/favicon.ico` and older browsers). Pillow cannot read SVG, so the shapes live here rather than in the SVG.

    python -m crayonbox.serve.favicon     # rewrite both files after changing SHAPES
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from crayonbox.serve.page import STATIC

VIEW = 32  # the shapes' coordinate square
ICO_SIZES = (16, 32, 48)
OVERSAMPLE = 8  # drawn this many times larger, then shrunk: smooth edges without an SVG renderer
SHAPES: list[tuple[str, list[tuple[float, float]]]] = [  # painted in order: crayons, then the box over them
    ("#d62828", [(6, 7), (8.5, 1.5), (11, 7), (11, 20), (6, 20)]),  # red crayon with its tip
    ("#f4c20d", [(13.5, 5), (16, -0.5), (18.5, 5), (18.5, 20), (13.5, 20)]),  # yellow
    ("#1e6fd9", [(21, 8), (23.5, 2.5), (26, 8), (26, 20), (21, 20)]),  # blue
    ("#f26b21", [(3, 14), (29, 14), (27, 31), (5, 31)]),  # the box (the page's accent colour)
    ("#ffffff", [(9, 19), (23, 19), (23, 25), (9, 25)]),  # its label
    ("#f26b21", [(12, 21), (20, 21), (20, 23), (12, 23)]),  # a stripe on the label
]


def favicon_svg() -> str:
    """The icon as SVG text."""
    paths = "\n".join(f'  <polygon fill="{fill}" points="{" ".join(f"{x:g},{y:g}" for x, y in points)}"/>'
                      for fill, points in SHAPES)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {VIEW} {VIEW}">\n'
            f"  <title>crayonbox</title>\n{paths}\n</svg>\n")


def favicon_image(side: int) -> Image.Image:
    """The icon as an RGBA image `side` pixels square."""
    big = side * OVERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    scale = big / VIEW
    for fill, points in SHAPES:
        draw.polygon([(x * scale, y * scale) for x, y in points], fill=fill)
    return image.resize((side, side), Image.Resampling.LANCZOS)


def write_icons(folder: Path = STATIC) -> None:
    """Write favicon.svg and favicon.ico into `folder`."""
    (folder / "favicon.svg").write_text(favicon_svg(), encoding="utf-8")
    largest = favicon_image(max(ICO_SIZES))
    frames = [favicon_image(side) for side in ICO_SIZES if side != max(ICO_SIZES)]
    largest.save(folder / "favicon.ico", format="ICO", sizes=[(s, s) for s in ICO_SIZES], append_images=frames)


if __name__ == "__main__":
    write_icons()
