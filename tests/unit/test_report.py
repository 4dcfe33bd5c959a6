"""Reports built from drill records: the HTML report, the history and its trend, secrets kept out."""

import base64
import dataclasses
import json
import shutil
import types
from html.parser import HTMLParser
from pathlib import Path

import pytest
from rich.console import Console

from harness.config import load_fleet
from harness.drill import Drill
from harness.errors import ConfigError
from harness.machine import MachineLoad
from harness.report import history, publish, record, redact, summary
from harness.report.drill_record import DrillRecord
from harness.report.html import summary_rows
from harness.report.runs import DrillResult, load_run
from harness.report.words import headline
from harness.samples import Verdict
from harness.timeline import Timeline
from tests.report_runs import FLEET, TOKEN, Scenario, write_run

OLD, NEW = "20261001T000000Z-aaaaaa", "20261101T000000Z-bbbbbb"
PNG = b"\x89PNG\r\n\x1a\n"
TRACEBACK = """drill = <harness.drill.Drill object at 0x7f2d>

    def test_lose_the_primary_cluster(drill: Drill) -> None:
>       failover.promote(passive)

drills/test_active_passive.py:31:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

    def promote(self, cluster: str) -> None:
>       raise FleetDrillError(f"{cluster} did not become primary within 60 s")
E       harness.errors.FleetDrillError: eu-west did not become primary within 60 s

harness/failover.py:120: FleetDrillError"""


class Page(HTMLParser):
    """The parts of report.html a test reads: tables (rows of cell texts, a cell spanning rows repeated in
    each), image sources, link targets."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self._rowspan = 1
        self.headings: list[str] = []
        self._heading: list[str] | None = None
        self._spans: dict[int, list] = {}  # column -> [rows it still spans, its text]
        self.feed(text)

    def _fill(self) -> None:
        """The cells of rows above that span down to here, at their columns."""
        row = self.tables[-1][-1]
        while (span := self._spans.get(len(row))) and span[0] > 0:
            row.append(span[1])
            span[0] -= 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append([])
            self._spans = {}
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._fill()
            self._cell, self._rowspan = [], int(found.get("rowspan") or 1)
        elif tag == "h2":
            self._heading = []
        elif tag == "img":
            self.images.append(found.get("src") or "")
        elif tag in ("a", "link", "script"):
            self.links.append(found.get("href") or found.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            row, text = self.tables[-1][-1], "".join(self._cell).strip()
            self._spans[len(row)] = [self._rowspan - 1, text]
            row.append(text)
            self._cell = None
        elif tag == "tr":
            self._fill()
        elif tag == "h2" and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        for collecting in (self._cell, self._heading):
            if collecting is not None:
                collecting.append(data)


def _record(folder: Path) -> dict:
    return json.loads((folder / "record.json").read_text())


def test_the_html_report_shows_the_figures_and_verdicts_of_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_run(tmp_path, NEW, monkeypatch)
    record = _record(folder)
    page = Page(publish.publish(tmp_path, NEW).report.read_text())

    table = page.tables[0]
    assert table[0] == ["drill", "cluster", "objective", "expected", "measured", "verdict", "reason"]
    rows = {row[2]: row for row in table[1:]}
    for verdict in record["verdicts"]:
        row = rows[verdict["objective"]]
        assert row[:2] == ["Active-passive: lose the primary cluster", "us-east"]
        assert row[3:6] == [verdict["expected"], verdict["measured"], verdict["status"].upper()]
        assert row[6] == verdict["message"]
    figures = record["figures"]["orders"]
    shown = {row[0]: row[1] for table in page.tables for row in table if len(row) >= 2}
    assert shown["RTO, measured"] == f"{figures['rto_s']:.2f} s"
    assert shown["RPO, measured"] == f"{figures['rpo_s']:.2f} s"
    assert shown["availability"] == f"{figures['availability'] * 100:.3f} %"
    assert shown["lost writes"] == str(figures["lost_writes"])
    for phase, seconds in figures["rto_phases"]["phases"].items():
        assert shown[phase] == f"{seconds:.2f} s"


def test_the_html_report_is_self_contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path, OLD, monkeypatch)
    page = Page(publish.publish(tmp_path, OLD).report.read_text())
    # the drill's timeline, then the RTO and RPO trends: every picture is inside the page
    assert len(page.images) == 3
    for source in page.images:
        prefix, _, data = source.partition(",")
        assert prefix == "data:image/png;base64"
        assert base64.b64decode(data).startswith(PNG)
    assert not [link for link in page.links if "://" in link], "nothing is fetched from the network"


def test_the_history_accumulates_one_line_per_drill_and_run_and_trends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(tmp_path, OLD, monkeypatch, Scenario(outage_s=3.0, lag_s=1.2, wall_start=1_790_000_000.0))
    late = Scenario(outage_s=6.0, lag_s=2.6, wall_start=1_792_000_000.0)
    write_run(tmp_path, NEW, monkeypatch, late)
    publish.publish(tmp_path, NEW)
    publish.publish(tmp_path, OLD)
    publish.publish(tmp_path, OLD)  # rebuilt: its lines are replaced, not added again

    lines = history.read(tmp_path / history.HISTORY)
    assert [line["run_id"] for line in lines] == [OLD, NEW]
    for figure in ("rto_s", "rpo_s"):
        (points,) = history.trend(lines, figure).values()
        measured = [
            _record(tmp_path / run / "test_lose_the_primary_cluster")["figures"]["orders"][figure]
            for run in (OLD, NEW)
        ]
        assert [p.value for p in points] == measured
        assert [p.objective for p in points] == [20.0, 20.0] if figure == "rto_s" else [5.0, 5.0]
    rto = history.trend(lines, "rto_s")["test_lose_the_primary_cluster / orders"]
    assert rto[0].value < rto[1].value, "the later run recovered more slowly"


def test_a_damaged_history_line_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / history.HISTORY
    path.write_text('{"run_id": "a", "time": 1, "drill": "d"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"history.jsonl:2: expected one JSON object per line"):
        history.read(path)


def test_a_token_in_a_record_never_reaches_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    message = f"the API said 401 to Authorization: Bearer {TOKEN}"
    folder = write_run(tmp_path, NEW, monkeypatch, Scenario(message=message))
    assert TOKEN not in (folder / "record.json").read_text(), "record.write masks it"
    record = _record(folder)  # a record written by something else still holds one
    record["message"] = message
    record["verdicts"][0]["message"] += f" token={TOKEN}"
    (folder / "record.json").write_text(json.dumps(record))

    published = publish.publish(tmp_path, NEW, with_evidence=True)
    summary.show(published)
    assert published.evidence is not None
    outputs = [published.report, published.history, *published.evidence.rglob("*")]
    leaked = [str(p) for p in outputs if p.is_file() and TOKEN[:40] in p.read_text()]
    assert not leaked
    assert redact.MASK in published.report.read_text()
    assert TOKEN[:40] not in capsys.readouterr().out


@pytest.mark.parametrize(
    "secret",
    [
        "Authorization: Bearer abcdefghijklmnop123",
        "client-key-data: " + "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB",
        "password=hunter2",
        "AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    ],
)
def test_token_looking_text_is_masked(secret: str) -> None:
    assert redact.MASK in redact.redact(f"before {secret} after")
    for keep in ("hunter2", "abcdefghijklmnop123", "AKIAIOSFODNN7EXAMPLE", "MIIEow", "LS0tLS1CRUdJTi"):
        assert keep not in redact.redact(secret)


def test_figures_ids_and_addresses_are_not_mistaken_for_secrets() -> None:
    text = "RTO 4.0 s, run 20261101T000000Z-bbbbbb, stream 1b4e28ba2fa1466b9d1e0a6f43cfb5a2, http://198.18.25.3:80/readyz"
    assert redact.redact(text) == text
    assert redact.redact_data({"tokens_lost": 3, "lost_writes": 5}) == {"tokens_lost": 3, "lost_writes": 5}


def test_a_missing_run_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path, OLD, monkeypatch)
    with pytest.raises(ConfigError, match=rf"no drill records for run 'nope' \(recent runs: {OLD}\)"):
        load_run(tmp_path, "nope")


def test_a_real_drill_record_without_its_raw_data_still_reports(tmp_path: Path) -> None:
    """A record from a real run on a starved machine: its verdicts are errors (probe gaps), its raw data is
    not kept here (2 MB), so the report must say there is nothing to plot rather than fail."""
    source = Path(__file__).parent / "report_data" / "active_active_ap_south.record.json"
    folder = (
        tmp_path / "20261126T110456Z-fc8748" / "test_lose_one_cluster_and_global_traffic_continues_ap-south_"
    )
    folder.mkdir(parents=True)
    shutil.copy(source, folder / "record.json")
    published = publish.publish(tmp_path)
    text = published.report.read_text()
    page = Page(text)
    record = json.loads(source.read_text())
    rows = page.tables[0][1:]
    assert [(row[1], row[2], row[4], row[5]) for row in rows] == [
        ("ap-south", v["objective"], v["measured"], "ERROR") for v in record["verdicts"]
    ]
    shown = {row[0]: row[1] for table in page.tables for row in table if len(row) >= 2}
    assert shown["availability"] == f"{record['figures']['orders']['availability'] * 100:.3f} %"
    assert shown["RTO, measured"] == "-" and shown["recovery outcome"] == "not_recovered"
    assert "no data to plot" in text
    assert published.run.verdict == "error"
    title = "Lose one cluster and global traffic continues (ap-south)"  # no title recorded: the name in words
    assert rows[0][0] == title and f"{title} ERROR" in page.headings
    assert (
        '<p class="what">RTO, availability and longest outage could not be judged after the cluster-loss on '
        "ap-south: the probes do not cover the window: no probe sent from +43.7 s to +45.1 s (1.4 s, more "
        "than 50 x the 0.02 s interval).</p>"
    ) in text


def _recorded(report_dir: Path, name: str, outcome: str, teardown: str = "", passed: int = 1) -> None:
    """A drill record made by record.write, with `passed` passing verdicts, from the call's outcome and its
    teardown's error, as the plugin makes it."""
    fleet_file = report_dir / "fleet.yaml"
    fleet_file.write_text(FLEET)
    drill = Drill(name, load_fleet(fleet_file), None, None, Timeline())  # type: ignore[arg-type]
    drill.verdicts += [Verdict("pass", "RTO", "<= 20 s", "2 s", "RTO 2 s within objective 20 s", {})] * passed
    outcome, message = record.conclude(drill, outcome, "", teardown)
    record.write(drill, report_dir / NEW / name, NEW, outcome, message)


def test_a_drill_that_broke_after_passing_verdicts_is_an_error_in_every_report(tmp_path: Path) -> None:
    teardown = "RevertError: cluster-loss on us-east: revert failed"
    _recorded(tmp_path, "test_breaks_late", "passed", teardown)
    published = publish.publish(tmp_path, NEW, with_evidence=True)
    assert published.run.verdict == "error"
    completed = ("drill completed", "the drill runs to its end and judges its objectives", "error", "error")
    rows = summary_rows(published.run)
    assert [row[2:6] for row in rows] == [("RTO", "<= 20 s", "2 s", "pass"), completed]
    assert rows[-1][6] == f"teardown: {teardown}"
    assert f'<p class="what">The drill broke: teardown: {teardown}.</p>' in published.report.read_text()
    (entry,) = history.read(published.history)
    assert entry["verdict"] == "error"
    assert published.evidence is not None
    csv = (published.evidence / "objectives_vs_measured.csv").read_text()
    assert ",".join([*completed, f"teardown: {teardown}"]) in csv


def test_skipped_drills_neither_pass_nor_fail_a_run(tmp_path: Path) -> None:
    _recorded(tmp_path, "test_skipped", "skipped", passed=0)
    assert load_run(tmp_path, NEW).verdict == "skip", "a run that ran nothing passed nothing"
    _recorded(tmp_path, "test_ran", "passed")
    assert load_run(tmp_path, NEW).verdict == "pass"
    assert [d.verdict for d in load_run(tmp_path, NEW).drills] == ["pass", "skip"]


def test_a_record_whose_verdict_is_unknown_is_an_error(tmp_path: Path) -> None:
    assert (
        DrillResult(tmp_path, DrillRecord.parse({"drill": "d", "verdict": "passed"}, "r")).verdict == "error"
    )
    assert DrillResult(tmp_path, DrillRecord.parse({"drill": "d"}, "r")).verdict == "error"


def test_a_record_that_does_not_fit_its_type_is_one_line_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_run(tmp_path, NEW, monkeypatch)
    broken = _record(folder)
    broken["verdicts"][0]["status"] = "passed"
    (folder / "record.json").write_text(json.dumps(broken))
    with pytest.raises(ConfigError) as raised:
        load_run(tmp_path, NEW)
    message = str(raised.value)
    assert message.startswith(f"{folder / 'record.json'}: field verdicts.0.status: ") and "\n" not in message
    del broken["drill"]
    (folder / "record.json").write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match="field drill: "):
        load_run(tmp_path, NEW)


def test_a_drill_is_titled_in_words_in_the_summary_and_its_heading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_run(tmp_path, NEW, monkeypatch)
    assert _record(folder)["title"] == "Active-passive: lose the primary cluster"
    published = publish.publish(tmp_path, NEW)
    page = Page(published.report.read_text())
    assert {row[0] for row in page.tables[0][1:]} == {"Active-passive: lose the primary cluster"}
    assert "Active-passive: lose the primary cluster PASS" in page.headings
    console = Console(record=True, width=200)
    summary.show(published, console)
    terminal = console.export_text()
    assert "Active-passive: lose the primary cluster" in terminal and "test_lose_the_primary" not in terminal
    old = _record(folder)
    del old["title"]  # a record written before drills had titles
    (folder / "record.json").write_text(json.dumps(old))
    page = Page(publish.publish(tmp_path, NEW).report.read_text())
    assert {row[0] for row in page.tables[0][1:]} == {"Lose the primary cluster"}
    assert "Lose the primary cluster PASS" in page.headings


def _undocumented() -> None:
    pass


def test_a_drill_s_title_comes_from_its_docstrings(request: pytest.FixtureRequest) -> None:
    """The drill's title is its docstring's first sentence.

    Not this paragraph."""
    assert record.title_of(request.node) == "The drill's title is its docstring's first sentence"
    labelled = types.ModuleType(
        "drills.test_x", "Active-passive: lose the primary cluster, fail over to the\npassive one. Judge RTO."
    )
    item = types.SimpleNamespace(name="test_lose_the_primary[us-east]", obj=_undocumented, module=labelled)
    assert record.title_of(item) == "Active-passive: lose the primary (us-east)"
    plain = types.ModuleType("drills.test_y", "Every backup is recent\nand kept in another region.\n\nMore.")
    item = types.SimpleNamespace(name="test_backups", obj=_undocumented, module=plain)
    assert record.title_of(item) == "Every backup is recent and kept in another region"
    experiment = types.SimpleNamespace(name="orders-pod-kill.yaml", raw={"title": "Kill a pod of orders"})
    assert record.title_of(experiment) == "Kill a pod of orders"
    assert record.title_of(types.SimpleNamespace(name="test_nothing", obj=_undocumented)) == ""


def test_a_failed_drill_says_what_went_wrong_before_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossy = Scenario(before_s=10.0, lag_s=7.0, message=TRACEBACK)  # RPO 7 s, objective 5 s
    folder = write_run(tmp_path, NEW, monkeypatch, lossy)
    text = publish.publish(tmp_path, NEW).report.read_text()
    sentence = (
        '<p class="what">RPO missed after the cluster-loss on us-east: measured 7.0 s, expected &lt;= 5 s; '
        "34 of 49 writes acknowledged before t0 lost, the first #16 acked at -6.8 s.</p>"
    )
    traceback = "<details><summary>The Python traceback</summary><pre>drill = &lt;harness.drill.Drill"
    assert sentence in text and traceback in text
    assert text.index("<h2>") < text.index(sentence) < text.index(traceback), "the sentence first, then it"
    rpo = next(row for row in Page(text).tables[0][1:] if row[2] == "RPO")
    assert rpo[6].endswith("34 holes below the newest surviving write: #16, #17, #18, #19, #20 and 29 more")
    assert _record(folder)["figures"]["orders"]["lost_writes"] == 34


def test_a_verdict_missed_on_a_loaded_runner_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run records how busy the harness's machine was; a miss measured on a saturated runner says so
    in the headline and beside the verdict, a pass does not."""
    loaded = MachineLoad(cpus=2, busy=0.97, load1=4.1)
    write_run(tmp_path, NEW, monkeypatch, Scenario(before_s=10.0, lag_s=7.0, runner=loaded))  # RPO 7 s > 5 s
    text = publish.publish(tmp_path, NEW).report.read_text()
    note = "measured on a loaded runner (2 CPUs, 97% busy, load average 4.1)"
    assert f"It was {note}: the runner may have missed it, not the fleet.</p>" in text
    rpo = next(row for row in Page(text).tables[0][1:] if row[2] == "RPO")
    assert rpo[5] == "FAIL" and rpo[6].endswith(f"({note})"), rpo
    assert "the runner: 2 CPUs, 97% busy, load average 4.1" in text
    quiet = tmp_path / "quiet"
    write_run(quiet, NEW, monkeypatch, Scenario(before_s=10.0, lag_s=7.0, runner=MachineLoad(2, 0.4, 0.8)))
    assert "loaded runner" not in publish.publish(quiet, NEW).report.read_text()
    passed = tmp_path / "passed"
    write_run(passed, NEW, monkeypatch, Scenario(runner=loaded))
    assert "loaded runner" not in publish.publish(passed, NEW).report.read_text()


def test_a_drill_that_broke_says_where_in_one_sentence() -> None:
    broke = DrillRecord.parse({"drill": "d", "outcome": "error", "verdicts": [], "message": TRACEBACK}, "r")
    assert headline(broke, "after the cluster-loss on us-east") == (
        "The drill broke after the cluster-loss on us-east at drills/test_active_passive.py:31: "
        "harness.errors.FleetDrillError: eu-west did not become primary within 60 s."
    )
    missed = [
        Verdict("fail", name, expected, measured, "m", {})
        for name, measured, expected in (("RTO", "31 s", "<= 20 s"), ("availability", "70%", ">= 99%"))
    ]
    assert headline(DrillRecord("d", outcome="failed", verdicts=tuple(missed)), "") == (
        "Missed: RTO (measured 31 s, expected <= 20 s) and availability (measured 70%, expected >= 99%)."
    )
    passed = (dataclasses.replace(missed[0], status="pass"),)
    assert headline(DrillRecord("d", outcome="passed", verdicts=passed), "on us-east") == ""
