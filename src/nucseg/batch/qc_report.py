"""An HTML quality-control page for a batch's output folder: one self-contained file, no server, no network.

:func:`write_qc_report` reads what ``nucseg segment`` wrote (``summary.csv``,
the label images, overlays and measurements when present) and writes
``report.html`` beside them: counts and quality per image in a sortable table,
the images flagged ``check`` first with thumbnails of their outlines,
histograms of nucleus area and of nuclei per image (matplotlib), and the
failed images with their errors. Images are embedded (base64), so the page
can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nucseg.batch.report import SUMMARY_FILE
from nucseg.batch.writers import output_paths
from nucseg.errors import InputError
from nucseg.io.atomic import atomic_write

REPORT_FILE = "report.html"
#: Longest side of an embedded thumbnail, pixels.
THUMBNAIL_SIZE = 320
#: Flagged images shown with thumbnails (the rest are in the table).
MAX_THUMBNAILS = 24


def read_summary(out_dir: str | Path) -> list[dict[str, str]]:
    """The rows of an output folder's ``summary.csv`` (image rows only, not the planes of stacks).

    Raises
    ------
    InputError
        The folder has no summary.csv (not a ``nucseg segment`` output folder).
    """
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        raise InputError(out_dir, f"holds no {SUMMARY_FILE}: give the --out folder of a nucseg segment run")
    with open(path, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if not row.get("plane")]


def write_qc_report(out_dir: str | Path, *, overwrite: bool = True) -> Path:
    """Write ``report.html`` for a ``nucseg segment`` output folder.

    Parameters
    ----------
    out_dir
        The folder (it holds ``summary.csv``).
    overwrite
        Replace an existing report.

    Returns
    -------
    Path
        The report.

    Raises
    ------
    InputError
        No ``summary.csv`` in ``out_dir``.
    """
    out_dir = Path(out_dir)
    rows = read_summary(out_dir)
    ok = [row for row in rows if row["status"] in ("ok", "skipped")]
    failed = [row for row in rows if row["status"] == "failed"]
    flagged = sorted((row for row in ok if row.get("flag") == "check"), key=lambda row: _number(row["quality"], 1.0))
    areas = _nucleus_areas(out_dir, ok)
    sections = [
        _header(out_dir, rows, ok, failed, flagged),
        _flagged_section(out_dir, flagged),
        _plots_section(areas, [_number(row["nuclei"], 0.0) for row in ok]),
        _table_section(rows),
        _failed_section(failed),
    ]
    page = _PAGE.format(title=html.escape(f"nucseg report: {out_dir.name}"), body="\n".join(sections))
    path = out_dir / REPORT_FILE
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _number(text: str, default: float) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


def _header(out_dir: Path, rows, ok, failed, flagged) -> str:
    nuclei = sum(int(_number(row["nuclei"], 0)) for row in ok)
    return (
        f"<h1>nucseg report</h1><p class='lead'>{html.escape(str(out_dir))}: <b>{len(rows)}</b> images, "
        f"<b>{len(ok)}</b> segmented, <b>{nuclei}</b> nuclei, <b id='n-flagged'>{len(flagged)}</b> to check, "
        f"<b>{len(failed)}</b> failed.</p>"
    )


def _flagged_section(out_dir: Path, flagged: Sequence[dict]) -> str:
    if not flagged:
        return (
            "<h2>Images to check</h2><p>None: every segmented image has a quality score above its model's "
            "threshold (or the model gives none: flag <i>unknown</i>).</p>"
        )
    cards = []
    for row in flagged[:MAX_THUMBNAILS]:
        thumbnail = _thumbnail(out_dir, row)
        picture = (
            f"<img alt='{html.escape(row['image'])}' src='{thumbnail}'>"
            if thumbnail
            else "<div class='missing'>no overlay</div>"
        )
        cards.append(
            f"<figure class='flagged'>{picture}<figcaption><b>{html.escape(row['image'])}</b><br>"
            f"quality {html.escape(row['quality'] or '?')}, {html.escape(row['nuclei'] or '0')} nuclei<br>"
            f"<span class='reason'>{html.escape(row['flag_reason'])}</span></figcaption></figure>"
        )
    more = f"<p>and {len(flagged) - MAX_THUMBNAILS} more in the table.</p>" if len(flagged) > MAX_THUMBNAILS else ""
    return f"<h2>Images to check</h2><div class='cards'>{''.join(cards)}</div>{more}"


def _thumbnail(out_dir: Path, row: dict) -> str | None:
    """A data URL of the image's outlines: its overlay, or one drawn from its labels and source image."""
    from PIL import Image

    paths = output_paths(out_dir, row["image"], overlay=True)
    try:
        if paths["overlay"].is_file():
            picture = Image.open(paths["overlay"]).convert("RGB")
        else:
            from nucseg.io.images import read_labels
            from nucseg.io.lazy import open_level_of_shape
            from nucseg.visualize import outline_overlay

            labels = read_labels(paths["labels"])
            if labels.ndim != 2:
                return None
            picture = Image.fromarray(outline_overlay(open_level_of_shape(row["path"], labels.shape).read(), labels))
    except (OSError, ValueError, InputError):
        return None
    picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return _data_url(picture, "JPEG")


def _data_url(picture, kind: str) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format=kind, quality=85)
    return f"data:image/{kind.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _nucleus_areas(out_dir: Path, rows: Sequence[dict]) -> np.ndarray:
    """Every nucleus's area in pixels, from the label images."""
    from nucseg.io.images import read_labels

    areas = []
    for row in rows:
        path = output_paths(out_dir, row["image"])["labels"]
        if path.is_file():
            counts = np.bincount(read_labels(path).ravel())[1:]
            areas.append(counts[counts > 0])
    return np.concatenate(areas) if areas else np.zeros(0)


def _plots_section(areas: np.ndarray, counts: Sequence[float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].hist(areas if areas.size else [0], bins=50, color="#3a7ca5")
    axes[0].set_xlabel("nucleus area (px)")
    axes[0].set_ylabel("nuclei")
    axes[0].set_title(f"nucleus area ({areas.size} nuclei)")
    axes[1].hist(counts if len(counts) else [0], bins=min(30, max(5, len(counts))), color="#d1495b")
    axes[1].set_xlabel("nuclei per image")
    axes[1].set_ylabel("images")
    axes[1].set_title(f"nuclei per image ({len(counts)} images)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    url = f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
    return f"<h2>Distributions</h2><img class='plots' alt='histograms' src='{url}'>"


_TABLE_COLUMNS = (
    ("image", "image", "text"),
    ("status", "status", "text"),
    ("nuclei", "nuclei", "number"),
    ("quality", "quality", "number"),
    ("flag", "flag", "text"),
    ("why", "flag_reason", "text"),
    ("mean area (px)", "mean_area_px", "number"),
    ("median diameter (px)", "median_diameter_px", "number"),
    ("scale", "scale", "number"),
    ("seconds", "seconds", "number"),
)


def _table_section(rows: Sequence[dict]) -> str:
    order = sorted(
        rows, key=lambda row: (row.get("flag") != "check", row["status"] != "failed", _number(row.get("quality"), 2.0))
    )
    header = "".join(
        f"<th data-type='{kind}' onclick='sortBy(this)'>{html.escape(title)}</th>" for title, _, kind in _TABLE_COLUMNS
    )
    body = "".join(
        f"<tr class='{html.escape(row.get('flag') or row['status'])}'>"
        + "".join(f"<td>{html.escape(row.get(key) or '')}</td>" for _, key, _ in _TABLE_COLUMNS)
        + "</tr>"
        for row in order
    )
    return (
        f"<h2>All images</h2><p>Click a column to sort.</p><table id='images'><thead><tr>{header}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _failed_section(failed: Sequence[dict]) -> str:
    if not failed:
        return "<h2>Failed images</h2><p>None.</p>"
    items = "".join(f"<li><b>{html.escape(row['image'])}</b>: {html.escape(row['error'])}</li>" for row in failed)
    return f"<h2>Failed images</h2><ul class='failed'>{items}</ul>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.lead {{ font-size: 1.1em; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure.flagged {{ margin: 0; width: 320px; border: 2px solid #d1495b; padding: 4px; }}
figure.flagged img {{ max-width: 100%; }}
.reason {{ color: #a4161a; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; }}
th {{ cursor: pointer; background: #eee; }}
tr.check td {{ background: #fde2e4; }}
tr.failed td {{ background: #eee; color: #777; }}
img.plots {{ max-width: 100%; }}
</style></head>
<body>
{body}
<script>
function sortBy(th) {{
  const table = th.closest("table"), column = Array.from(th.parentNode.children).indexOf(th);
  const numeric = th.dataset.type === "number", ascending = th.dataset.order !== "asc";
  th.dataset.order = ascending ? "asc" : "desc";
  const rows = Array.from(table.tBodies[0].rows);
  const key = r => {{ const t = r.cells[column].textContent; return numeric ? (t === "" ? Infinity : +t) : t; }};
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (ascending ? 1 : -1));
  rows.forEach(r => table.tBodies[0].appendChild(r));
}}
</script>
</body></html>
"""
