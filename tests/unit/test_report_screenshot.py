"""The HTML report opened in headless Chromium: the page must render, not come out blank or broken."""

from pathlib import Path

import pytest

from harness.report import publish
from harness.report.words import VERDICT_COLOURS
from tests.report_runs import Scenario, write_run
from tests.screenshots import blank_or_broken, has_colour, needs_chromium, screenshot

pytestmark = needs_chromium


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
