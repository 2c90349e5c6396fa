"""The campaign report (oedal.report): the page made by rule report_campaign at the end of the tiny campaign
(tests/conftest.py: tiny_run, run once per session) shows the numbers of summary.csv, comparison.csv,
verdict.txt and metrics.json; it opens in headless Chromium without console errors and is not blank; a
report made mid-run (iterations missing, a run stopped, a training cut by the wall-clock limit) renders
and says so; `oedal status` prints where each run stands."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
CAMPAIGN = "tiny"
LAST = 2  # config/tiny.yaml: iterations 0, 1, 2
STRATEGIES = ("qs1-greedy", "random")


# ------------------------------------------------------------------------------------------------
# Reading the page
# ------------------------------------------------------------------------------------------------


class Tables(HTMLParser):
    """Every ``<table id=...>`` of a page as a list of rows; a row is the ``data-*`` attributes of its
    ``<tr>`` and, per cell with a ``data-key``, its ``data-value`` (numbers) or its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: tuple[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
        elif tag == "td" and self._row is not None and a.get("data-key"):
            self._cell, self._text = (a["data-key"], a.get("data-value")), []

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            key, value = self._cell
            self._row[key] = value if value is not None else "".join(self._text)
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def page_tables(html: str) -> dict[str, list[dict]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def number(text: str | None) -> float:
    return math.nan if text in (None, "", "nan") else float(text)


def same(a: float, b: float, rel: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def inline_images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def oedal(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "oedal", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def campaign(tiny_run) -> Path:
    return tiny_run / CAMPAIGN


@pytest.fixture(scope="module")
def page(campaign) -> str:
    return (campaign / "report.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# Chromium (installed from the Debian packages when missing; it cannot be, the test fails)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a chromium binary; ``apt-get install -y chromium`` (as root) when there is none."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail("chromium is not on PATH and cannot be installed here (needs root and apt-get): "
                    "install it with `apt-get install -y chromium`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=1200, env=env)
    if proc.returncode != 0:  # stale package lists: update once and try again
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600, env=env)
        proc = subprocess.run(install, capture_output=True, text=True, timeout=1200, env=env)
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(f"apt-get install chromium failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return found


def render(chromium: str, html: Path, png: Path) -> list[str]:
    """Screenshot of ``html`` (1280 × 2000 px) into ``png``; returns the page's console messages."""
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--screenshot={png}", "--window-size=1280,2000", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def pixel_spread(png: Path) -> float:
    """Standard deviation of the screenshot's grey levels (0 for a blank page)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    return float(pixels[..., :3].mean(axis=-1).std())


def test_the_console_check_sees_errors_and_the_blank_check_sees_a_blank_page(chromium, tmp_path):
    """The two checks below can fail: a script error is caught, a blank page has no spread."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>console.error("boom"); notDefined();</script></body></html>')
    messages = render(chromium, bad, tmp_path / "bad.png")
    assert any("boom" in m for m in messages) and any("notDefined" in m for m in messages), messages
    assert pixel_spread(tmp_path / "bad.png") < 1e-3


def test_the_page_opens_in_chromium_without_console_errors(chromium, campaign, tmp_path):
    shot = tmp_path / "report.png"
    assert render(chromium, campaign / "report.html", shot) == []
    assert pixel_spread(shot) > 0.05  # text, tables and figures, not a blank page


# ------------------------------------------------------------------------------------------------
# The numbers on the page
# ------------------------------------------------------------------------------------------------


def test_the_page_is_self_contained(page):
    assert "<script" not in page.lower()
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page), "the page must not load anything from a network"
    images = inline_images(page)
    assert len(images) >= 5  # three learning-curve figures, pool scores, score–error, parity ×2
    import matplotlib.image

    for data in images:  # every inline image decodes to a picture of some size
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0.01


def test_the_learning_curve_numbers_are_those_of_summary_csv(page, campaign):
    shown = page_tables(page)["summary"]
    summary = read_csv(campaign / "summary.csv")
    assert len(shown) == len(summary) == len(STRATEGIES) * (LAST + 1)
    by_key = {(r["strategy"], r["seed"], r["iteration"]): r for r in summary}
    columns = [c for c in shown[0] if c not in ("strategy", "seed", "iteration", "cpu_hours")]
    assert {"n_train", "labels_spent", "forces_mae_kcal/mol/A", "forces_maxe_kcal/mol/A", "energy_rmse_kcal/mol"} \
        <= set(columns)
    for row in shown:
        expected = by_key[(row["strategy"], row["seed"], row["iteration"])]
        for column in columns:
            assert same(number(row[column]), number(expected[column])), (row, column, expected[column])
        assert number(row["cpu_hours"]) > 0  # every model has a benchmarked training behind it


def test_the_verdict_is_that_of_comparison_csv_and_verdict_txt(page, campaign):
    comparison = {(r["strategy"], r["metric"], r["x"], float(r["x_value"])): r
                  for r in read_csv(campaign / "comparison.csv")}
    shown = page_tables(page)["key-ratios"]
    # one row per strategy other than random, per x (n_train, labels_spent) and force metric
    assert {(r["strategy"], r["x"], r["metric"]) for r in shown} == {
        ("qs1-greedy", x, f"forces_{s}_kcal/mol/A") for x in ("n_train", "labels_spent") for s in ("mae", "rmse", "maxe")}
    for row in shown:
        expected = comparison[(row["strategy"], row["metric"], row["x"], float(row["x_value"]))]
        for key in ("ratio", "low", "high", "n", "p_value"):
            assert same(number(row[key]), number(expected[key])), (row, key, expected)
    import html

    lines = (campaign / "verdict.txt").read_text().splitlines()
    assert lines and all(html.escape(line, quote=True) in page for line in lines)
    verdict_at = page.index('id="verdict"')
    assert verdict_at < page.index('id="curves"') < page.index('id="provenance"')  # the verdict comes first


def test_the_last_models_are_evaluated_as_the_workflow_did(page, campaign):
    """The parity plot's force MAE is the last iteration's test MAE of metrics.json (same model, same test
    set, same predictions); the score–error correlation covers the whole test set."""
    maes = [float(v) for v in re.findall(r'data-key="parity_force_mae" data-value="([^"]+)"', page)]
    expected = [json.loads((campaign / s / "seed0" / f"iter_{LAST:03d}" / "metrics.json").read_text())
                ["forces_mae_kcal/mol/A"] for s in STRATEGIES]
    assert len(maes) == len(STRATEGIES)
    for got, want in zip(maes, expected):
        assert math.isclose(got, want, rel_tol=1e-5), (got, want)
    tables = page_tables(page)
    scored = [r for name, rows in tables.items() for r in rows if "pearson" in r]
    assert len(scored) == 1 and scored[0]["strategy"] == "qs1-greedy"  # random scores nothing
    assert int(scored[0]["n"]) == 60  # config/tiny.yaml: split.n_test
    assert -1 <= number(scored[0]["pearson"]) <= 1 and -1 <= number(scored[0]["spearman"]) <= 1


def test_cost_progress_and_provenance(page, campaign):
    tables = page_tables(page)
    kinds = {r["kind"]: r for r in tables["job-costs"]}
    assert {"train", "score", "select", "label"} <= set(kinds)
    assert all(number(r["wall_s"]) > 0 and number(r["peak_rss_mb"]) > 0 for r in kinds.values())
    for row in tables["runs"]:
        status = json.loads((campaign / row["strategy"] / "seed0" / f"iter_{LAST:03d}" / "status.json").read_text())
        assert int(row["labels_spent"]) == status["labels_spent"] and int(row["n_train"]) == status["n_train"]
        assert row["state"] == "done"
    versions = {r["package"]: r["version"] for r in tables["versions"]}
    from importlib.metadata import version

    assert versions["oedal"] == version("oedal") and versions["torch"] == version("torch")
    import hashlib

    sums = {r["file"]: r["sha256"] for r in tables["checksums"]}
    assert sums["source.h5"] == hashlib.sha256((campaign / "data" / "source.h5").read_bytes()).hexdigest()
    assert '"n_train": 20' in page.replace("&quot;", '"')  # the recorded settings (campaign.json)


# ------------------------------------------------------------------------------------------------
# `oedal status` and a report made mid-run
# ------------------------------------------------------------------------------------------------


def test_status_says_where_each_run_stands(campaign):
    out = oedal("status", str(campaign)).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in STRATEGIES}
    assert set(lines) == set(STRATEGIES), out
    for strategy, line in lines.items():
        d = campaign / strategy / "seed0" / f"iter_{LAST:03d}"
        status, metrics = (json.loads((d / f).read_text()) for f in ("status.json", "metrics.json"))
        cells = line.split()
        assert cells[1:6] == ["0", str(LAST), str(status["n_train"]), str(status["labels_spent"]),
                              str(status["labels_failed"])], line
        assert cells[6] == f"{metrics['forces_mae_kcal/mol/A']:.3g}" and line.endswith("done"), line


@pytest.fixture
def mid_run(campaign, tmp_path) -> Path:
    """A copy of the tiny campaign as it might look mid-run: random's last iteration not begun, qs1-greedy's
    last one trained but not evaluated; campaign-level files not written yet."""
    copy = tmp_path / "results" / CAMPAIGN
    shutil.copytree(campaign, copy)
    shutil.rmtree(copy / "random" / "seed0" / f"iter_{LAST:03d}")
    (copy / "qs1-greedy" / "seed0" / f"iter_{LAST:03d}" / "metrics.json").unlink()
    for name in ("summary.csv", "comparison.csv", "verdict.txt", "report.html", "learning_curve.png"):
        (copy / name).unlink()
    return copy


def test_a_report_made_mid_run_renders_and_says_what_is_missing(mid_run, chromium, tmp_path):
    out = tmp_path / "mid.html"
    oedal("report", str(mid_run), "--out", str(out))
    page = out.read_text(encoding="utf-8")
    assert "qs1-greedy seed 0: iterations 0–1 finished, iteration 2 in progress" in page
    rows = page_tables(page)["summary"]
    assert sorted((r["strategy"], int(r["iteration"])) for r in rows) == [(s, i) for s in STRATEGIES for i in (0, 1)]
    assert "key-ratios" in page_tables(page)  # the comparison at what both runs reached
    assert render(chromium, out, tmp_path / "mid.png") == []
    assert pixel_spread(tmp_path / "mid.png") > 0.05
    status = oedal("status", str(mid_run)).stdout
    assert "in progress: iteration 2 of 0–2 not finished" in status, status


def test_a_stop_and_a_cut_training_are_shown_loudly(mid_run, tmp_path):
    d = mid_run / "qs1-greedy" / "seed0" / "iter_001"
    status = json.loads((d / "status.json").read_text())
    (d / "status.json").write_text(json.dumps({**status, "stopped": True, "reason": "no informative candidates"}))
    metrics = json.loads((d / "metrics.json").read_text())
    (d / "metrics.json").write_text(json.dumps({**metrics, "training_stopped": "time"}))
    out = tmp_path / "stopped.html"
    oedal("report", str(mid_run), "--out", str(out), "--no-models")
    page = out.read_text(encoding="utf-8")
    assert re.search(r'<div class="warning">WARNING: 1 training\(s\) stopped at the wall-clock limit', page)
    runs = {r["strategy"]: r["state"] for r in page_tables(page)["runs"]}
    assert runs["qs1-greedy"] == "stopped at iteration 1: no informative candidates", runs
    assert "stopped at iteration 1: no informative candidates" in oedal("status", str(mid_run)).stdout


def test_a_campaign_without_results_renders_and_a_missing_folder_is_an_error(tmp_path):
    empty = tmp_path / "results" / "empty"
    empty.mkdir(parents=True)
    oedal("report", str(empty), "--out", str(tmp_path / "empty.html"))
    page = (tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "no runs yet" in page and "no comparison yet" in page
    proc = oedal("report", str(tmp_path / "nowhere"), check=False)
    assert proc.returncode != 0 and "no such campaign folder" in proc.stderr
