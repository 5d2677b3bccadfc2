"""The HTML quality-control page: written from a real batch, and rendered by a real headless browser."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from nucseg.batch.qc_report import REPORT_FILE, write_qc_report
from nucseg.cli import main as nucseg_main
from nucseg.datasets.locations import sample_image_paths
from nucseg.errors import InputError
from nucseg.inference.quality import QUALITY_FEATURES
from nucseg.models.folder import read_model_config, rewrite_model_config
from nucseg.models.registry import DEFAULT_MODEL, resolve_model_path

SCREENSHOT = __import__("os").environ.get("NUCSEG_REPORT_SCREENSHOT")  # where to save the README's screenshot


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The samples and one broken file, segmented by the default model calibrated to flag low-contrast images."""
    root = tmp_path_factory.mktemp("qc")
    model = root / "model"
    shutil.copytree(resolve_model_path(DEFAULT_MODEL), model)
    config, _ = read_model_config(model)
    # A calibration whose score falls with ambiguity: the histology and brightfield samples come out flagged.
    calibration = {
        "intercept": 0.95,
        "weights": dict.fromkeys(QUALITY_FEATURES, 0.0) | {"ambiguous": -2.0},
        "threshold": 0.5,
        "training_kinds": ["fluorescence"],
        "fitted_on": "a test",
    }
    rewrite_model_config(model, dataclasses.replace(config, quality=calibration))
    images = root / "images"
    images.mkdir()
    for path in sample_image_paths():
        shutil.copy(path, images / path.name)
    (images / "broken.png").write_bytes(b"not a png")
    code = nucseg_main(["segment", str(images), "--model", str(model), "--out", str(root / "out"), "--report"])
    assert code == 1  # one failed image
    return root / "out"


def test_summary_carries_the_quality_score_and_flag_of_every_image(batch):
    import csv

    with open(batch / "summary.csv", newline="") as fh:
        rows = {row["image"]: row for row in csv.DictReader(fh)}
    segmented = [row for row in rows.values() if row["status"] == "ok"]
    assert len(segmented) == 3 and all(0 <= float(row["quality"]) <= 1 for row in segmented)
    assert all(row["flag"] in ("ok", "check") for row in segmented)
    assert any(row["flag"] == "check" and "uncertain" in row["flag_reason"] for row in segmented)
    assert rows["broken"]["status"] == "failed" and rows["broken"]["flag"] == ""


def test_report_puts_flagged_images_first_with_thumbnails(batch):
    page = (batch / REPORT_FILE).read_text()
    flagged = page.index("Images to check")
    assert page.count("<figure class='flagged'>") >= 1 and "data:image/jpeg;base64," in page[flagged:]
    assert page.index("Distributions") > flagged and "data:image/png;base64," in page
    assert "broken" in page[page.index("Failed images") :]
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched


def test_report_command_rewrites_the_page_and_refuses_other_folders(batch, tmp_path):
    (batch / REPORT_FILE).unlink()
    assert nucseg_main(["report", str(batch)]) == 0 and (batch / REPORT_FILE).is_file()
    with pytest.raises(InputError, match="holds no summary.csv"):
        write_qc_report(tmp_path)
    assert nucseg_main(["report", str(tmp_path)]) != 0


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
    driver_path = shutil.which("chromedriver")
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not driver_path or not browser_path:
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver; .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_report_renders_in_a_headless_browser_without_errors(batch):
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.get((batch / REPORT_FILE).as_uri())
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
        figures = driver.find_elements(By.CSS_SELECTOR, "figure.flagged img")
        assert figures and all(img.is_displayed() and img.get_property("naturalWidth") > 0 for img in figures)
        assert int(driver.find_element(By.ID, "n-flagged").text) == len(figures)
        nuclei_header = driver.find_elements(By.CSS_SELECTOR, "#images th")[2]
        nuclei_header.click()  # sort by nuclei, ascending
        counts = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#images tbody tr td:nth-child(3)")]
        numbers = [int(c) for c in counts if c]
        assert numbers == sorted(numbers)
        assert not [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        if SCREENSHOT:
            Path(SCREENSHOT).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(SCREENSHOT)
    finally:
        driver.quit()


def test_a_pyramid_segmented_at_level_1_gets_its_thumbnail_from_that_level(tmp_path, pyramid_tiff):
    from nucseg.batch.qc_report import _thumbnail, read_summary
    from nucseg.io.images import read_image

    gray = read_image(sample_image_paths()[0])
    gray = gray[:, :, 0] if gray.ndim == 3 else gray
    pyramid_tiff(tmp_path / "slide.ome.tif", gray, 0.25)
    out = tmp_path / "out"  # no --overlay: the report draws the outlines on the source image itself
    assert nucseg_main(["segment", str(tmp_path / "slide.ome.tif"), "--out", str(out), "--model", "classical"]) == 0
    assert (
        nucseg_main(
            [
                "segment",
                str(tmp_path / "slide.ome.tif"),
                "--out",
                str(out / "1"),
                "--model",
                "classical",
                "--level",
                "1",
            ]
        )
        == 0
    )
    for folder in (out, out / "1"):  # labels of level 0, then of level 1 (a quarter of the pixels)
        (row,) = read_summary(folder)
        assert _thumbnail(folder, row).startswith("data:image/jpeg;base64,")
