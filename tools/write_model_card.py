"""Write a shipped model's MODEL_CARD.md: what it is, its data and licences, its test scores and the sizes it handles.

Usage::

    python benchmarks/eval_validation.py --split-from MODEL_DIR --split-part test --model NAME=MODEL_DIR \\
        --json runs/cards/NAME_test.json
    python tools/write_model_card.py MODEL_DIR --test runs/cards/NAME_test.json --row NAME

The card opens with the bioimage.io package's documentation
(:func:`nucseg.export.bioimageio.model_card`: network, input, output,
post-processing, training data and licences, validation scores), then adds
the test scores of the evaluation JSON (overall, per dataset and per image
kind; images no choice was made on) with the command that gives them, and
the nucleus sizes the model handles (training diameter, the scale
augmentation of its training crops, automatic sizing's range, the smallest
nucleus kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from nucseg.datasets.mixture import NAME_SEPARATOR
from nucseg.export.bioimageio import model_card
from nucseg.io.atomic import atomic_write
from nucseg.models.folder import CARD_FILE, read_model_config
from nucseg.postprocess.measure import AUTO_SCALE_LIMITS


def test_lines(document: dict, row: str, command: str, note: str | None = None) -> list[str]:
    """The card's test section from an ``eval_validation.py --json`` document (its model ``row``)."""
    report = document["models"][row]
    images = report["images"]
    own = Path(document["split_from"]).name == row
    split_from = "config.json (images no choice was made on)" if own else f"`{document['split_from']}`"
    datasets: dict[str, list[dict]] = defaultdict(list)
    kinds: dict[str, list[dict]] = defaultdict(list)
    for image in images:
        if NAME_SEPARATOR in image["name"]:
            datasets[image["name"].split(NAME_SEPARATOR)[0]].append(image)
        if image.get("kind"):
            kinds[f"by kind: {image['kind']}"].append(image)
    groups = {**(datasets if len(datasets) > 1 else {}), **kinds}
    backend = document.get("backend") or "the model's default backend (the int8 graph where the folder holds one)"
    lines = [
        "## Test scores",
        "",
        f"On the {len(images)} test images of the split stored in {split_from}, with automatic sizing and {backend}:",
        "",
        "| images | n | DSB score | AP@0.5 |",
        "|---|---:|---:|---:|",
        f"| all | {len(images)} | {report['overall']['dsb_score']:.3f} | {report['overall']['ap50']:.3f} |",
    ]
    for name, group in groups.items():
        lines.append(
            f"| {name} | {len(group)} | {fmean(i['dsb_score'] for i in group):.3f} | "
            f"{fmean(i['ap50'] for i in group):.3f} |"
        )
    return [*lines, "", *([note, ""] if note else []), f"Reproduce: `{command}`.", ""]


def size_lines(config) -> list[str]:
    """The card's section on the nucleus sizes the model handles."""
    augment = config.training.get("augment") or {}
    low, high = AUTO_SCALE_LIMITS
    sizes = {part.get("min_size") for part in [config.postprocess, *config.postprocess_by_kind.values()]}
    crops = (
        f"training crops were rescaled {augment['scale_min']:g} to {augment['scale_max']:g} times; "
        if "scale_min" in augment
        else ""
    )
    return [
        "## Nucleus sizes",
        "",
        f"Median training nucleus diameter {config.median_diameter or 0:.1f} px; {crops}automatic sizing "
        f"(`--diameter auto`, the default) brings an image's nuclei to the training size within factors "
        f"{low:g} to {high:g}, so it handles nuclei of about {(config.median_diameter or 0) / high:.0f} to "
        f"{(config.median_diameter or 0) / low:.0f} px across; beyond, a warning asks for `--diameter`. "
        f"Nuclei smaller than {' / '.join(str(s) for s in sorted(s for s in sizes if s is not None))} px in "
        "area at the network's scale (the tuned `min_size`, per image kind) are removed.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="the model folder")
    parser.add_argument("--test", type=Path, required=True, help="eval_validation.py --json of its test split")
    parser.add_argument("--row", help="the model's row name in that file (default: its only model)")
    parser.add_argument("--note", help="a sentence under the test table (e.g. which images are not truly held out)")
    args = parser.parse_args(argv)
    config, _ = read_model_config(args.model_dir)
    document = json.loads(args.test.read_text())
    if document.get("split_part") != "test" or document.get("rescale") or document.get("scale_limits"):
        print(
            f"write_model_card: error: {args.test}: not a plain test-split evaluation (split_part "
            f"{document.get('split_part')!r}, rescale {document.get('rescale')}, scale_limits "
            f"{document.get('scale_limits')})",
            file=sys.stderr,
        )
        return 2
    row = args.row or next(iter(document["models"]))
    model = document["models"][row]["model"]
    command = (
        f"python benchmarks/eval_validation.py --split-from {document['split_from']} --split-part test "
        f"--model {row}={model}" + (f" --backend {document['backend']}" if document.get("backend") else "")
    )
    card = "\n".join(
        [model_card(config).rstrip("\n"), "", *test_lines(document, row, command, args.note), *size_lines(config)]
    )
    with atomic_write(args.model_dir / CARD_FILE) as tmp:
        tmp.write_text(card)
    print(f"wrote {args.model_dir / CARD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
