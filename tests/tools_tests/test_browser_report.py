"""The HTML report in a real browser: headless Chromium renders every plot, logs nothing, and leaves a screenshot.

The screenshot lands in ``artifacts/report.png`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from fake_study import SECTION_IDS, build_study, report_figures

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
)
# Chromium writes every console message of the page as "...:CONSOLE:<line>] "<message>", source: ..." (older
# builds: "CONSOLE(<line>)"), without its level; the report logs nothing, so any such line is a failure.
CONSOLE = re.compile(r"CONSOLE[:(]\d+[)\]]|Uncaught")


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    return path


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    console = [line for line in result.stderr.splitlines() if CONSOLE.search(line)]
    assert not console, "console messages from the report:\n" + "\n".join(console[:20])
    return result


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    from search.tools.report import write_report

    study = build_study(tmp_path / "results", name="browser", n_complete=6, n_pruned=2, n_failed=1)
    report = write_report(study)
    url = report.resolve().as_uri()
    figures = report_figures(report.read_text())

    dom = _run(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", url).stdout
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom, f"section {sid} missing from the rendered page"
    for fig_id in figures:
        block = dom.split(f'id="{fig_id}"', 1)
        assert len(block) == 2 and 'class="main-svg"' in block[1][:20000], f"plot {fig_id} was not rendered"
    assert dom.count('class="main-svg"') >= len(figures)
    assert "could not be drawn" not in dom

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _run(chromium, tmp_path / "profile2", "--virtual-time-budget=10000", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.is_file() and shot.stat().st_size > 20_000
