"""summary.csv across runs into one output folder: nothing an earlier run wrote is lost."""

import csv
from pathlib import Path

from nucseg.batch.driver import segment_files
from nucseg.batch.report import read_summary_csv

DSB_DIR = Path(__file__).parents[1] / "data" / "dsb2018"
SMALL_IDS = ("00071198", "00ae65c1", "0280fa8f")  # the three 256-pixel fixtures


def _sample(prefix: str) -> Path:
    return next(p for p in DSB_DIR.iterdir() if p.name.startswith(prefix))


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_a_rerun_keeps_the_numbers_of_skipped_images_and_the_rows_of_other_runs(tmp_path):
    first, second, third = (_sample(prefix) for prefix in SMALL_IDS)
    out = tmp_path / "out"
    segment_files([first, second], out, model="classical")
    before = _rows(out / "summary.csv")
    assert all(row["status"] == "ok" and int(row["nuclei"]) > 0 for row in before.values())

    report = segment_files([second, third], out, model="classical")  # second: skipped, third: new
    assert [image.status for image in report.images] == ["skipped", "ok"]
    assert report.images[0].nuclei == int(before[second.name]["nuclei"])
    assert report.n_nuclei == report.images[1].nuclei  # what this run found, not what it skipped
    after = _rows(out / "summary.csv")
    assert list(after) == [second.name, third.name, first.name]  # this run's rows, then the earlier run's
    assert after[first.name] == before[first.name]
    skipped = after[second.name]
    assert skipped["status"] == "skipped" and "numbers are those of the earlier run" in skipped["error"]
    assert all(skipped[column] == before[second.name][column] for column in ("nuclei", "mean_area_px", "scale"))


def test_an_unreadable_or_foreign_summary_is_replaced_not_a_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("name,count\nx,3\n", encoding="utf-8")
    assert read_summary_csv(out / "summary.csv") == {}
    report = segment_files([_sample(SMALL_IDS[0])], out, model="classical")
    assert report.n_ok == 1 and list(_rows(out / "summary.csv")) == [report.images[0].name]


def test_an_overlay_asked_for_on_a_rerun_is_drawn_from_the_earlier_labels(tmp_path):
    image = _sample(SMALL_IDS[0])
    out = tmp_path / "out"
    first = segment_files([image], out, model="classical").images[0]
    labels_file = out / f"{first.name}_labels.tif"
    labels_before = (labels_file.read_bytes(), labels_file.stat().st_mtime_ns)

    report = segment_files([image], out, model="classical", overlay=True, measure=True)
    again = report.images[0]
    assert again.status == "ok" and again.from_earlier_labels and again.nuclei == first.nuclei
    assert (out / f"{first.name}_overlay.png").is_file() and (out / f"{first.name}_nuclei.csv").is_file()
    assert (labels_file.read_bytes(), labels_file.stat().st_mtime_ns) == labels_before  # not segmented again
    with open(out / f"{first.name}_nuclei.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == first.nuclei
    row = _rows(out / "summary.csv")[first.name]
    assert row["status"] == "ok" and "labels of an earlier run" in row["error"]

    third = segment_files([image], out, model="classical", overlay=True, measure=True).images[0]
    assert third.status == "skipped" and third.nuclei == first.nuclei  # everything there: nothing to do


def test_the_summary_records_the_absolute_source_path_of_a_relative_input(tmp_path, monkeypatch):
    sample = _sample(SMALL_IDS[0])  # a DSB2018-layout folder: <id>/images/<id>.png
    source = sample / "images" / f"{sample.name}.png"
    monkeypatch.chdir(sample)
    segment_files([Path("images") / source.name], tmp_path / "out", model="classical")
    monkeypatch.chdir(tmp_path)  # as a later `nucseg report` or napari session started elsewhere would be
    recorded = read_summary_csv(tmp_path / "out" / "summary.csv")[source.stem].path
    assert recorded.is_absolute() and recorded.samefile(source)


def test_an_earlier_runs_relative_source_path_is_kept_as_it_recorded_it(tmp_path, monkeypatch):
    first, second = (_sample(prefix) for prefix in SMALL_IDS[:2])
    out = tmp_path / "out"
    segment_files([first], out, model="classical")
    summary = out / "summary.csv"
    recorded = str(read_summary_csv(summary)[first.name].path)
    summary.write_text(summary.read_text().replace(recorded, "images/relative.png"))  # as before absolute paths
    monkeypatch.chdir(tmp_path)  # another folder than the earlier run's: resolving there would invent a path
    segment_files([second], out, model="classical")
    rows = read_summary_csv(summary)
    assert rows[first.name].path == Path("images/relative.png")
    assert rows[second.name].path.is_absolute()
