"""``starchart clip IMAGE... --labels "cat,dog,car"``: zero-shot in the terminal.

Loads the CLIP model in this process (no server needed) and classifies each
image over the labels: a table by default, ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starchart.errors import BadRequest
from starchart.settings import Settings

if TYPE_CHECKING:
    from starchart.api.clip_protocol import ClassifyRequest
    from starchart.vision.clip import ClipModel, Label

SETTINGS = ["clip", "clip_device", "clip_max_batch", "clip_max_labels", "clip_max_images",
            "clip_max_image_pixels", "log_level"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", type=Path,
                        help="image files (PNG, JPEG, WebP, GIF, BMP, TIFF, ...)")
    parser.add_argument("--labels", required=True, action="append",
                        help="comma-separated labels, e.g. \"cat,dog,car\" (repeat the flag"
                        " for a label that holds a comma)")
    parser.add_argument("--template", dest="templates", action="append", metavar="TEMPLATE",
                        help="prompt template with {} for the label (repeatable; several are"
                        " averaged). Default: \"a photo of a {}\"")
    parser.add_argument("--top", type=int, default=None, metavar="N",
                        help="show only the N most likely labels per image")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def parse_labels(values: list[str]) -> list[str]:
    labels = values[0].split(",") if len(values) == 1 else values
    return [label.strip() for label in labels]


def run_clip(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here, not at the top: the API protocol, the engines, numpy and Pillow
    # (torch when the model loads), which `starchart --help` and the other commands
    # must not pay for.
    from starchart.api.clip_protocol import ClassifyRequest, ClipLimits
    from starchart.vision.clip import DEFAULT_CLIP, ClipModel
    from starchart.vision.images import open_image, set_pixel_limit

    request = ClassifyRequest(image="", labels=parse_labels(args.labels),
                              templates=args.templates)
    request.check(ClipLimits.from_settings(settings))
    if len(args.images) > settings.clip_max_images:
        raise BadRequest(f"{len(args.images)} images given; the limit is"
                         f" {settings.clip_max_images} (setting clip_max_images)")
    set_pixel_limit(settings.clip_max_image_pixels)
    images = [open_image(_read(path), param=str(path), max_pixels=settings.clip_max_image_pixels)
              for path in args.images]
    model = ClipModel.from_settings(settings, settings.clip or DEFAULT_CLIP)
    model.load()
    try:
        results = asyncio.run(_classify_all(model, images, request))
    finally:
        model.close()
    if args.top is not None:
        results = [ranked[: max(args.top, 1)] for ranked in results]
    if args.json:
        print(json.dumps(_as_json(model, args.images, results), indent=2))
    else:
        print(render_table(args.images, results))
    return 0


async def _classify_all(model: ClipModel, images: list[Any],
                        request: ClassifyRequest) -> list[list[Label]]:
    # Concurrent, so the images share forward passes through the batcher.
    return list(await asyncio.gather(*(
        model.classify(image, request.labels, request.prompt_templates) for image in images)))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read the file ({exc.strerror})",
                         param=str(path)) from None


def _as_json(model: ClipModel, paths: list[Path], results: list[list[Label]]) -> dict[str, Any]:
    return {"model": model.info.id, "logit_scale": model.logit_scale,
            "images": [{"image": str(path), "labels": [label.as_dict() for label in ranked]}
                       for path, ranked in zip(paths, results, strict=True)]}


def render_table(paths: list[Path], results: list[list[Label]]) -> str:
    rows = [("image", "label", "probability", "similarity")]
    for path, ranked in zip(paths, results, strict=True):
        for i, label in enumerate(ranked):
            rows.append((str(path) if i == 0 else "", label.label,
                         f"{label.probability * 100:.2f}%", f"{label.similarity:.2f}"))
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    lines = []
    for row in rows:
        left = f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}"
        lines.append(f"{left}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}")
    return "\n".join(lines)
