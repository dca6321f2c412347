"""The HTML report as a browser shows it: headless Chromium loads the file, its DOM holds the decision, and a
screenshot of the page is not blank."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_evaluate_report import fixture_context  # same directory: pytest puts it on sys.path

from components.evaluate.report import render_html

TIMEOUT_S = 120


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian package 'chromium'); .ci/run installs it when it can"
)


def _run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


class _TextOf(HTMLParser):
    """Text inside the element with a given id."""

    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    )

    def __init__(self, element_id: str):
        super().__init__()
        self.element_id, self.depth, self.found, self.parts = element_id, 0, False, []

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.element_id:
            self.depth, self.found = 1, True

    def handle_endtag(self, tag):
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


def _text_of(dom: str, element_id: str) -> str | None:
    parser = _TextOf(element_id)
    parser.feed(dom)
    return parser.text if parser.found else None


@pytest.fixture
def report_file(upstream, tmp_path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(render_html(fixture_context(upstream)), encoding="utf-8")
    return path


def test_browser_dom_shows_the_decision(report_file, tmp_path):
    proc = _run_chromium(tmp_path / "profile", "--dump-dom", report_file.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    decision = _text_of(dom, "decision")
    assert decision is not None, "no element with id=decision in the rendered DOM"
    assert decision.startswith("SHARPEN") and "(test rule text)" in decision
    assert "Pass@2 CI lower bound 0.40 < tau 0.50" in decision  # the rule, unescaped by the browser
    assert "SYNTHETIC RUN" in (_text_of(dom, "synthetic-banner") or "")
    assert "FLAGGED" in (_text_of(dom, "overfit-flag") or "")
    for section in ("sec-probe", "sec-benchmarks", "sec-transfer", "sec-steps"):
        assert _text_of(dom, section), f"section {section} missing or empty in the rendered DOM"


def test_browser_screenshot_is_not_blank(report_file, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    proc = _run_chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1400,2400",
        "--hide-scrollbars",
        report_file.as_uri(),
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1400, 2400)
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        top = rgb.crop((0, 0, 1400, 60)).getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 50, f"only {len(colours)} distinct colours: the page looks blank"
    # the synthetic banner across the top is red
    _, dominant = max(top)
    assert dominant[0] > 150 and dominant[1] < 80 and dominant[2] < 80, dominant
