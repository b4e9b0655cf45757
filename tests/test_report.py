"""`reports/report.html`: a tiny run with every optional section (eva, COPO, a reward model) writes one
self-contained page with every section, every figure and the run facts; the figures are byte-identical when drawn
again, and `alignloop report` rewrites the page."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from alignloop.config import Config
from alignloop.report.html import SECTIONS
from alignloop.report.rows import report_plot_names

from pipeline_helpers import ALIGNLOOP, continue_run, run

pytestmark = pytest.mark.slow
EVERYTHING = {"iterations": 2, "evolve": {"enabled": True}, "optimize": {"exploration": "copo"},
              "reward": {"enabled": True}}


class _Page(HTMLParser):
    """Sections by id, with the images and tables inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "section":
            self._current = attrs["id"]
            self.sections[self._current] = {"images": [], "tables": 0, "text": ""}
        elif self._current and tag == "img":
            self.sections[self._current]["images"].append(attrs["src"])
        elif self._current and tag == "table":
            self.sections[self._current]["tables"] += 1

    def handle_data(self, data: str) -> None:
        if self._current:
            self.sections[self._current]["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._current = None


def _digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.png"))}


def _page(project: Path) -> _Page:
    page = _Page()
    page.feed((project / "reports" / "report.html").read_text(encoding="utf-8"))
    return page


def test_the_report_has_every_section_and_figure(tiny_run: Path, tmp_path: Path) -> None:
    project = continue_run(tiny_run, tmp_path / "project", EVERYTHING, cached=("prepare", "sft"))
    cfg = Config.model_validate(yaml.safe_load((project / "params.yaml").read_text()))
    plots = project / "reports" / "plots"
    assert sorted(path.stem for path in plots.glob("*.png")) == sorted(report_plot_names(cfg))
    assert len(report_plot_names(cfg)) == len(SECTIONS) == 7

    page = _page(project)
    assert list(page.sections) == [key for key, *_ in SECTIONS] + ["run"]
    for key, *_ in SECTIONS:
        section = page.sections[key]
        assert len(section["images"]) == 1 and section["tables"] >= 1, key
        data = base64.b64decode(section["images"][0].removeprefix("data:image/png;base64,"))
        assert data == (plots / f"{key}.png").read_bytes()  # embedded, not linked: the page is self-contained
    scores = page.sections["scores"]["text"]
    assert all(split in scores for split in ("in_distribution", "harder", "unseen_composition"))
    assert "lc_win_rate_vs_sft" in scores and "SFT (0)" in scores
    facts = page.sections["run"]["text"]
    assert "optimize-2" in facts and "ran" in facts  # wall time per stage
    assert "exploration: copo" in facts  # the params
    assert re.search(r"wall time of the flow\s*[\d.]+ s", facts)

    # The same artifacts draw the same bytes, and `alignloop report` rewrites the page from them.
    before = _digests(plots)
    (project / "reports" / "report.html").unlink()
    out = run([ALIGNLOOP, "report"], project).stdout
    assert "report in reports/report.html" in out
    assert _digests(plots) == before
    assert list(_page(project).sections) == list(page.sections)


def test_a_run_without_the_optional_methods_says_so(tiny_run: Path) -> None:
    page = _page(tiny_run)
    for key, switch in (("eva", "evolve.enabled: true"), ("copo", "optimize.exploration: copo"),
                        ("reward_model", "reward.enabled: true")):
        assert not page.sections[key]["images"] and switch in page.sections[key]["text"]
    assert page.sections["scores"]["images"] and page.sections["training"]["images"]
