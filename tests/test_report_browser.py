"""report.html as a user sees it: rendered by a real headless browser (Debian's chromium), the screenshot checked
for content, the DOM for the key elements and numbers, and the print path (A4 PDF) for pages."""

from __future__ import annotations

import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from ivus_tf.predict import run_predict
from predict_helpers import FakeModel, calcium_pullback, write_image_folder

CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a headless chromium (Debian package 'chromium'; "
                                                         ".ci/run installs it)")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    images, _, _ = calcium_pullback(40, [(4, 27, 0, 300)])  # 24 frames of 0.25 mm: 6 mm of 300 degrees
    run_predict("unused", write_image_folder(folder / "pb", images), folder / "out", pixel_spacing_mm=0.04,
                model=FakeModel(), pullback_speed_mm_s=0.5, frame_rate_hz=2, report=True, overlays=False,
                show_summary=False)
    return folder / "out" / "report.html"


def chromium(tmp_path, *args, timeout=180) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", *map(str, args)]
    return subprocess.run(command, capture_output=True, timeout=timeout)


def test_screenshot_is_a_page_with_figures_not_a_blank(report_html, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,3600", report_html.as_uri())
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (3600, 1280)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert gray.std() > 30  # a blank or failed page is uniform
    assert (gray < 245).mean() > 0.15  # content covers the page, not just a title
    assert (gray[:120] < 100).mean() > 0.005  # dark title text at the top
    b, g, r = (image[..., i].astype(int) for i in range(3))
    assert ((r > 200) & (g < 90) & (b < 90)).sum() > 500  # calcium drawn in red in the figures
    assert ((r > 200) & (g > 180) & (b < 80)).sum() > 200  # lumen contours in yellow
    assert ((r < 80) & (g > 200) & (b > 200)).sum() > 200  # vessel contours in cyan


def test_dom_holds_the_numbers_and_nothing_external(report_html, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", report_html.as_uri()).stdout.decode("utf-8")
    assert "<h1>IVUS pullback calcium report</h1>" in dom
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom)) == 3
    assert not re.search(r'(src|href)="(https?:)?//', dom)  # opens offline: nothing fetched
    rows = re.findall(r"<tr class=\"lesion-row\" data-lesion=\"(\d+)\">(.*?)</tr>", dom, re.S)
    assert [number for number, _ in rows] == ["1"]
    assert "6.0</td>" in rows[0][1] and "1 of 3 assessable items" in rows[0][1]
    assert "Superficial calcium arc &gt; 270° over &gt; 5 mm" in dom or "Superficial calcium arc > 270°" in dom
    item = re.search(r'<tr data-item="superficial_arc_over_270_deg_longer_than_5_mm">(.*?)</tr>', dom, re.S)
    assert item and ">met<" in item.group(1)
    nodule = re.search(r'<tr data-item="calcified_nodule">(.*?)</tr>', dom, re.S)
    assert nodule and "not assessed" in nodule.group(1)
    assert "0.500 mm/s" in dom and "(--pullback-speed-mm-s)" in dom and "(--frame-rate-hz)" in dom


def test_prints_to_a4_pages(report_html, tmp_path):
    pdf = tmp_path / "report.pdf"
    chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report_html.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert 2 <= pages <= 8
    boxes = {tuple(round(float(v)) for v in box.split()) for box in re.findall(rb"/MediaBox\s*\[([^\]]+)\]", data)}
    assert boxes == {(0, 0, 595, 842)}  # A4 in points, from the print stylesheet's @page
    assert np.isfinite(len(data)) and len(data) > 100_000  # the figures are in it
