"""What a batch did: one report per image, the summary CSV, one-line failure reasons."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nucseg.errors import NucsegError
from nucseg.io.atomic import atomic_write


SUMMARY_FILE = "summary.csv"


SUMMARY_COLUMNS = (
    "image",
    "plane",
    "path",
    "status",
    "nuclei",
    "mean_area_px",
    "median_diameter_px",
    "pixel_size_um",
    "scale",
    "quality",
    "flag",
    "flag_reason",
    "seconds",
    "error",
)


@dataclass
class ImageReport:
    """What happened to one image of a batch.

    Attributes
    ----------
    name, path
        As in :class:`ImageInput`.
    status
        ``"ok"``, ``"failed"`` or ``"skipped"`` (outputs existed).
    nuclei
        Number of nuclei found (None unless ok).
    mean_area
        Mean nucleus area in pixels (None unless ok; 0.0 without nuclei).
    median_diameter
        Median equivalent diameter of the nuclei found, pixels (None unless
        ok with nuclei): the size automatic sizing saw, beside ``scale``.
    pixel_size
        Microns per pixel the measurements used: given, or stated by the file
        (None when neither).
    planes
        For a Z-stack or time series: one report per plane, named ``z=3``,
        ``t=0,z=3``, ... (the image's own report sums them: nuclei over all
        planes, or 3-D nuclei when planes were linked). Empty for a 2-D image.
    scale
        Resize factor the network ran at (see ``diameter`` in
        :meth:`NetworkModel.segment`); None unless ok, and for models without a
        network.
    quality, flag, flag_reason
        The quality estimate (:class:`nucseg.inference.quality.Quality`):
        score in [0, 1] (None without a calibrated model), ``ok`` / ``check``
        / ``unknown`` (blank unless ok), and why an image is to be checked.
        For a stack: the lowest score of its planes.
    seconds
        Wall time spent on the image: reading, segmenting, writing.
    error
        Why it failed or was skipped.
    outputs
        Files written.
    from_earlier_labels
        Whether the image was not segmented again: an overlay or
        measurements asked for now were made from the labels an earlier run
        wrote (the numbers that only segmenting gives come from its summary).
    """

    name: str
    path: Path
    status: str
    nuclei: int | None = None
    mean_area: float | None = None
    seconds: float = 0.0
    error: str = ""
    outputs: list[Path] = field(default_factory=list)
    scale: float | None = None
    median_diameter: float | None = None
    pixel_size: float | None = None
    planes: list[ImageReport] = field(default_factory=list)
    quality: float | None = None
    flag: str = ""
    flag_reason: str = ""
    from_earlier_labels: bool = False


@dataclass
class BatchReport:
    """Result of :func:`segment_files`.

    Attributes
    ----------
    images
        One report per input image, in input order.
    out_dir
        The output folder.
    summary_path
        The summary CSV (one row per image).
    rle_path
        The Kaggle submission CSV, if one was asked for.
    seconds
        Wall time of the whole batch.
    """

    images: list[ImageReport]
    out_dir: Path
    summary_path: Path
    rle_path: Path | None = None
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for image in self.images if image.status == status)

    @property
    def n_ok(self) -> int:
        return self._count("ok")

    @property
    def n_failed(self) -> int:
        return self._count("failed")

    @property
    def n_skipped(self) -> int:
        return self._count("skipped")

    @property
    def n_flagged(self) -> int:
        """Images segmented but flagged ``check``."""
        return sum(1 for image in self.images if image.flag == "check")

    @property
    def n_nuclei(self) -> int:
        """Nuclei found by this run (not those of skipped images, found before)."""
        return sum(image.nuclei or 0 for image in self.images if image.status == "ok")

    @property
    def exit_code(self) -> int:
        """0 if every image was segmented or skipped, 1 if any failed."""
        return 1 if self.n_failed else 0

    def format_summary(self) -> str:
        """One line: images, nuclei, failures, skipped, seconds."""
        flagged = f", {self.n_flagged} to check (flag in the summary)" if self.n_flagged else ""
        return (
            f"{self.n_ok} of {len(self.images)} images segmented, {self.n_nuclei} nuclei, "
            f"{self.n_failed} failed, {self.n_skipped} skipped{flagged}, {self.seconds:.1f} s; "
            f"summary in {self.summary_path}"
        )


def describe_failure(exc: BaseException, path: Path) -> str:
    """One line that says why ``path`` failed: the error's own message, led by the path when it names none."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NucsegError):
        return message if getattr(exc, "path", None) is not None else f"{path}: {message}"
    if isinstance(exc, MemoryError):
        return f"{path}: out of memory (try a smaller --tile-size)"
    return f"{path}: {type(exc).__name__}: {message}" if message else f"{path}: {type(exc).__name__}"


def write_summary_csv(
    report: BatchReport, path: str | Path, *, overwrite: bool = True, kept: Sequence[ImageReport] = ()
) -> Path:
    """Write one row per image (see :data:`SUMMARY_COLUMNS`) as CSV, atomically.

    ``kept``: reports of images of earlier runs into the same folder, written
    after those of ``report`` (see :func:`merge_earlier_summary`).
    """
    with atomic_write(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(SUMMARY_COLUMNS)
            # this run's sources absolute, readable from any folder (the QC report, the napari reader); an
            # earlier run's as it recorded them: an old relative path was relative to that run's folder
            sources = [Path(image.path).absolute() for image in report.images] + [image.path for image in kept]
            for image, source in zip([*report.images, *kept], sources):
                for row in [image, *image.planes]:  # a stack: the image, then each of its planes
                    writer.writerow(_summary_row(image, row, source))
    return Path(path)


def read_summary_csv(path: str | Path) -> dict[str, ImageReport]:
    """The image reports a ``summary.csv`` holds, by image name (planes under their image).

    Empty when the file does not exist or is not a summary of this version
    (another header): an earlier summary is kept where it can be read, never
    a reason to fail.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    if not rows or tuple(rows[0]) != SUMMARY_COLUMNS:
        return {}
    reports: dict[str, ImageReport] = {}
    for values in rows[1:]:
        if len(values) != len(SUMMARY_COLUMNS):
            continue
        row = dict(zip(SUMMARY_COLUMNS, values))
        try:
            report = ImageReport(
                row["image"],
                Path(row["path"]),
                row["status"],
                nuclei=_number(row["nuclei"], int),
                mean_area=_number(row["mean_area_px"]),
                seconds=_number(row["seconds"]) or 0.0,
                error=row["error"],
                scale=_number(row["scale"]),
                median_diameter=_number(row["median_diameter_px"]),
                pixel_size=_number(row["pixel_size_um"]),
                quality=_number(row["quality"]),
                flag=row["flag"],
                flag_reason=row["flag_reason"],
            )
        except ValueError:
            continue
        if not row["plane"]:
            reports[report.name] = report
        elif report.name in reports:
            reports[report.name].planes.append(dataclasses.replace(report, name=row["plane"]))
    return reports


def _number(text: str, kind: type = float) -> float | int | None:
    return None if text == "" else kind(text)


def merge_earlier_summary(report: BatchReport) -> list[ImageReport]:
    """Keep what the folder's earlier ``summary.csv`` says that this run did not redo.

    An image skipped because its outputs exist gets the numbers of the run
    that wrote them (status still ``skipped``); one whose missing overlay or
    measurements were made from earlier labels gets that run's count,
    factor and quality; the reports of images this run
    did not have at all are returned, to be written after this run's (see
    :func:`write_summary_csv`). So a re-run, or a second folder segmented
    into the same output folder, loses no row of the summary.
    """
    earlier = read_summary_csv(report.summary_path)
    for index, image in enumerate(report.images):
        before = earlier.get(image.name)
        if image.from_earlier_labels and before is not None and before.status in ("ok", "skipped"):
            for now, then in zip([image, *image.planes], [before, *before.planes]):  # the same labels
                now.nuclei, now.scale = then.nuclei, then.scale  # nuclei: 3-D ones, for planes linked then
                now.quality, now.flag, now.flag_reason = then.quality, then.flag, then.flag_reason
        elif image.status == "skipped" and before is not None and before.status in ("ok", "skipped"):
            planes = [dataclasses.replace(plane, status="skipped") for plane in before.planes]
            report.images[index] = dataclasses.replace(
                before,
                path=image.path,
                status="skipped",
                seconds=0.0,
                planes=planes,
                error=f"{image.error}; its numbers are those of the earlier run",
            )
    names = {image.name for image in report.images}
    return [image for name, image in earlier.items() if name not in names]


def _summary_row(image: ImageReport, row: ImageReport, source: Path) -> list:
    """One line of ``summary.csv``: ``row`` is ``image`` itself or one of its planes."""
    return [
        image.name,
        "" if row is image else row.name,
        str(source),
        row.status,
        "" if row.nuclei is None else row.nuclei,
        "" if row.mean_area is None else f"{row.mean_area:.1f}",
        "" if row.median_diameter is None else f"{row.median_diameter:.1f}",
        "" if row.pixel_size is None else f"{row.pixel_size:.4g}",
        "" if row.scale is None else f"{row.scale:.3f}",
        "" if row.quality is None else f"{row.quality:.3f}",
        row.flag,
        row.flag_reason,
        f"{row.seconds:.3f}" if row is image else "",
        row.error,
    ]
