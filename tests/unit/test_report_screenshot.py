"""The HTML report opened in headless Chromium: the page must render, not come out blank or broken, and its
summary table must fit the page (no sideways scrolling at 1,400 px)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness.report import publish
from harness.report.words import VERDICT_COLOURS
from tests.report_runs import Scenario, write_run
from tests.screenshots import (
    BROWSER_TIMEOUT_S,
    CHROMIUM,
    FLAGS,
    blank_or_broken,
    has_colour,
    needs_chromium,
    screenshot,
)

pytestmark = needs_chromium

PAGE_WIDTH = 1400
# Run while the page is parsed, at the end of its body: the first table's right edge and the widths the page
# scrolls over, written into the DOM that Chromium dumps (deterministic: no timers, no screenshots).
MEASURE = (
    "<script>{const t=document.querySelector('table'),p=document.documentElement;"
    "document.body.dataset.widths=[Math.ceil(t.getBoundingClientRect().right),t.scrollWidth,"
    "p.scrollWidth,p.clientWidth].join(' ')}</script>"
)
WIDTHS = re.compile(r'data-widths="(\d+) (\d+) (\d+) (\d+)"')


def test_the_report_renders_with_its_plots_and_verdict_colours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Scenario(outage_s=7.0)  # RTO and RPO met, availability missed: both colours on the page
    write_run(tmp_path / "reports", "20261101T000000Z-bbbbbb", monkeypatch, slow)
    report = publish.publish(tmp_path / "reports").report
    image = screenshot(report, tmp_path)
    assert blank_or_broken(image) is None
    assert has_colour(image, VERDICT_COLOURS["pass"]) and has_colour(image, VERDICT_COLOURS["fail"]), (
        "the verdict badges are drawn in their colours (the page's styles applied)"
    )


def test_a_blank_page_is_caught(tmp_path: Path) -> None:
    empty = tmp_path / "empty.html"
    empty.write_text("<!DOCTYPE html><html><body></body></html>")
    assert blank_or_broken(screenshot(empty, tmp_path, "800,600")) == "only 1 colours"


def too_wide(page: Path, folder: Path) -> str | None:
    """Why the page's first table does not fit a 1,400 px wide window, or None when it does."""
    measured = folder / f"{page.stem}.measured.html"
    measured.write_text(page.read_text().replace("</body>", f"{MEASURE}</body>"))
    command = [
        str(CHROMIUM),
        *FLAGS,
        f"--user-data-dir={folder / 'chromium-profile'}",
        f"--window-size={PAGE_WIDTH},900",
        "--dump-dom",
        measured.as_uri(),
    ]
    dom = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=True)
    found = WIDTHS.search(dom.stdout)
    assert found, f"the measuring script did not run: {dom.stderr[-500:]}"
    right, table_scroll, page_scroll, viewport = map(int, found.groups())
    assert viewport == PAGE_WIDTH, "the window is as wide as asked"
    if max(right, table_scroll, page_scroll) > viewport:
        return (
            f"table ends at {right} px (content {table_scroll} px), page {page_scroll} px, of {viewport} px"
        )
    return None


def _lengthen(folder: Path) -> None:
    """The drill's record with a long name, no title, and long reasons (one without a place to break)."""
    path = folder / "record.json"
    record = json.loads(path.read_text())
    record["drill"] = (
        "test_" + "_".join(["lose_the_primary_cluster_while_its_standby_is_cut_off"] * 3) + "[us-east]"
    )
    record.pop("title", None)
    for verdict in record["verdicts"]:
        verdict["expected"] += " " + "/".join(["the-writes-acknowledged-before-the-backup"] * 6)
        verdict["message"] += " " + "x" * 300 + " ".join(["and the write was lost"] * 30)
    record["message"] = "E   AssertionError: " + "y" * 500
    path.write_text(json.dumps(record))


def test_the_summary_table_fits_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _lengthen(write_run(tmp_path / "reports", "20261101T000000Z-bbbbbb", monkeypatch, Scenario(outage_s=7.0)))
    report = publish.publish(tmp_path / "reports").report
    assert too_wide(report, tmp_path) is None


def test_a_table_wider_than_the_page_is_caught(tmp_path: Path) -> None:
    wide = tmp_path / "wide.html"
    wide.write_text(f"<!DOCTYPE html><html><body><table><tr><td>{'x' * 400}</td></tr></table></body></html>")
    assert (too_wide(wide, tmp_path) or "").startswith("table ends at")
