"""report.html and the trend page in a real headless Chromium (Debian's `chromium`, installed by .ci/run).

Without Chromium the tests skip, saying so, so `scripts/test` needs nothing but Python; CI installs
it and sets HARNESS_REQUIRE_CHROMIUM=1, under which a missing browser fails them.

The page is loaded from a file, the DOM is read back after layout (its inline script records how
wide each chart's line was drawn and where each chart sits), and screenshots at a desktop and a
phone size are kept under results/screenshots/ as CI artifacts.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import cli
from harness import pipeline
from harness.results import history
from tests.fixtures import ROOT

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "results" / "screenshots"
DESKTOP = (1400, 2000)  # tall enough for the whole page of the lazy-release run
PHONE = (390, 2600)  # an iPhone-sized viewport, tall enough for the whole page
#: Headless Chromium lays a page out at least 500 px wide before it dumps the DOM (screenshots are
#: taken at the size asked for): the narrowest layout the DOM check can see.
NARROW = (500, 2600)


#: Set by .ci/run, which installs Chromium: there a missing browser fails the test instead of skipping it.
REQUIRE_ENV = "HARNESS_REQUIRE_CHROMIUM"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    why = "no Chromium on this machine: install Debian's `chromium` to run the browser tests (.ci/run does)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{why}; {REQUIRE_ENV}=1 requires them")
    pytest.skip(why)


def browse(url: str, *args: str, timeout: float = 90) -> str:
    """Run headless Chromium on ``url`` with a throwaway profile and no network; return its stdout.
    Chromium starts helper processes: on a timeout its whole process group is killed."""
    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        argv = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args, url]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                                env={**os.environ, "HOME": profile})
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"chromium did not finish within {timeout} s")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # helpers left behind, if any
            except ProcessLookupError:
                pass
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.read().decode()[-2000:]}"
        return stdout


def dom(page: Path, size: tuple[int, int]):
    from test_report_html import Page

    text = browse(page.as_uri(), f"--window-size={size[0]},{size[1]}", "--dump-dom")
    assert "</html>" in text, "the DOM was not dumped"
    return Page(text)


def screenshot(page: Path, name: str, size: tuple[int, int]) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / name
    target.unlink(missing_ok=True)
    browse(page.as_uri(), f"--window-size={size[0]},{size[1]}", f"--screenshot={target}")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == size
    assert len(data) > 20_000, "the screenshot looks empty"
    return target


def boxes(page, svgs) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in s["attrs"]["data-box"].split(",")) for s in svgs]


@pytest.fixture(scope="module")
def lazy_release_run(tmp_path_factory) -> Path:
    """The simulated MI250 lazy-release scenario, as `python run.py scenarios/sim_mi250_lazy_release.yaml`
    runs it (about 30 s: the fixed teardown waits the release delay out after every step)."""
    chromium()  # no browser: skip (or fail, in CI) before the run, not after it
    out = tmp_path_factory.mktemp("results")
    mp = pytest.MonkeyPatch()
    mp.setenv(history.ENV, str(out / "history.jsonl"))
    try:
        assert cli.main([str(ROOT / "scenarios" / "sim_mi250_lazy_release.yaml"), "--out", str(out)]) == 0
    finally:
        mp.undo()
    (run_dir,) = (out / "sim_mi250_lazy_release").iterdir()
    return run_dir


def test_lazy_release_report_in_a_browser(lazy_release_run):
    page_file = lazy_release_run / "report.html"
    for size in (DESKTOP, NARROW):
        page = dom(page_file, size)
        (verdict,) = page.find("section", "verdict")
        assert " ".join(page.text_of(verdict).split()).startswith("sim_mi250_lazy_release: PASS — fix confirmed")
        cards = {c["attrs"]["data-variant"]: c for c in page.find("div", "card") if "data-variant" in c["attrs"]}
        assert list(cards) == ["without_fix", "with_fix"]
        svgs = []
        for v, card in cards.items():
            charts = page.find("svg", "chart", within=card)
            assert len(charts) == 1, f"{v}: no memory chart in its card"
            svgs.append(charts[0])
            # the page's script ran and laid the memory line out; each chart's time axis is its own
            # variant's run, so even the baseline that fails fast spans most of its chart
            drawn, box_width = int(charts[0]["attrs"]["data-drawn"]), int(charts[0]["attrs"]["data-box"].split(",")[2])
            assert drawn > 0.5 * box_width, f"{v}: memory line {drawn} px wide in a {box_width} px chart"
            assert all(len(p["attrs"]["points"].split()) >= 8
                       for p in page.find("polyline", "memory", within=charts[0]))
        assert len(page.find("g", "failure", within=svgs[0])) == 7  # every engine after the first
        assert len(page.find("g", "failure", within=svgs[1])) == 0
        (left, top, width, _), (left2, top2, width2, _) = boxes(page, svgs)
        if size == DESKTOP:
            assert top == top2 and left2 > left + width, "variants side by side"
        else:
            assert left == left2 and top2 > top, "variants stacked on a narrow screen"
            assert 0.8 * NARROW[0] < width <= NARROW[0], "a chart fills the width, without overflow"
    shot = screenshot(page_file, "sim_mi250_lazy_release.png", DESKTOP)
    screenshot(page_file, "sim_mi250_lazy_release_phone.png", PHONE)
    (SCREENSHOTS / "sim_mi250_lazy_release.html").write_bytes(page_file.read_bytes())  # next to its picture
    assert shot.exists()


def test_trend_page_in_a_browser(tmp_path):
    from test_history import nightly_history, write_history

    write_history(tmp_path / "history.jsonl", nightly_history(), corrupt=False)
    out = tmp_path / "trend.html"
    pipeline.trend(tmp_path, "sampler_mi250", nights=7, recent=2, html_out=out, warn=lambda m: None)
    page = dom(out, DESKTOP)
    svgs = page.find("svg", "chart")
    assert len(svgs) == 2 and all(int(s["attrs"]["data-drawn"]) > 100 for s in svgs)
    assert "Newly flaky steps" in "".join(page.text)
    screenshot(out, "trend.png", (1100, 900))

