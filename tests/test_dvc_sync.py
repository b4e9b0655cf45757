"""DVC and Prefect agree on what is done (tiny preset, one iteration, the session's shared runs; slow).

After `alignloop run`, `dvc status` is clean and `dvc repro` runs nothing; after `dvc repro`, `alignloop run` recomputes
nothing; `dvc exp run -S optimize.beta=0.2` runs a sweep point in a git repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline_helpers import ALIGNLOOP, DVC, REPO, copy_project, run, snapshot, statuses

pytestmark = pytest.mark.slow


def test_dvc_is_clean_after_alignloop_run(tiny_run: Path, tmp_path: Path) -> None:
    project = copy_project(tiny_run, tmp_path / "project")
    assert (project / "dvc.lock").is_file()
    assert "up to date" in run([DVC, "status"], project).stdout
    repro = run([DVC, "repro"], project)
    assert "Running stage" not in repro.stdout, repro.stdout


def test_alignloop_run_reuses_what_dvc_repro_made(tiny_repro: Path, tmp_path: Path) -> None:
    project = copy_project(tiny_repro, tmp_path / "project")
    made_by_dvc = snapshot(project)
    run([ALIGNLOOP, "run"], project)
    assert set(statuses(project).values()) == {"reused"}, statuses(project)
    assert snapshot(project) == made_by_dvc
    assert "up to date" in run([DVC, "status"], project).stdout


def test_dvc_exp_run_sweeps_beta(tiny_run: Path, tmp_path: Path) -> None:
    # The shared run in a git repository: the sweep point reruns only what beta changes (optimize-1 onwards).
    project = copy_project(tiny_run, tmp_path / "project")
    run([DVC, "config", "core.no_scm", "false"], project)
    run(["git", "init", "-q"], project)
    run(["git", "config", "user.email", "test@alignloop"], project)
    run(["git", "config", "user.name", "test"], project)
    shutil.copy(REPO / ".gitignore", project / ".gitignore")  # the repository's rules: metrics files stay in git
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", "tiny project"], project)
    sweep = run([DVC, "exp", "run", "-S", "optimize.beta=0.2", "-n", "beta-0.2"], project).stdout
    assert "Running stage 'optimize-1'" in sweep and "Running stage 'sft'" not in sweep, sweep
    shown = json.loads(run([DVC, "exp", "show", "--json"], project).stdout)
    experiments = [exp for entry in shown for exp in (entry.get("experiments") or [])]
    names = {exp.get("name") for exp in experiments}
    assert "beta-0.2" in names, shown
    revs = [rev for exp in experiments if exp.get("name") == "beta-0.2" for rev in exp["revs"]]
    params = revs[0]["data"]["params"]["params.yaml"]["data"]
    assert params["optimize"]["beta"] == 0.2
    metrics = revs[0]["data"]["metrics"]
    assert any("in_distribution/greedy_gold" in value["data"] for value in metrics.values())
    # The experiment ran with the swept value (dvc.lock records the params each stage ran with).
    lock = (project / "dvc.lock").read_text()
    assert "beta: 0.2" in lock


def test_dvc_cache_links_unless_the_project_chose(tmp_path):
    from alignloop.pipeline.dvcfile import LINK_CACHE_TYPES, ensure_link_cache

    ensure_link_cache(tmp_path)  # not a DVC project: nothing happens
    assert not (tmp_path / ".dvc").exists()
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("")
    ensure_link_cache(tmp_path)
    assert LINK_CACHE_TYPES in (tmp_path / ".dvc" / "config").read_text()
    chosen = "[core]\n    autostage = true\n[cache]\n    type = copy\n"
    (tmp_path / ".dvc" / "config").write_text(chosen)
    ensure_link_cache(tmp_path)
    assert (tmp_path / ".dvc" / "config").read_text() == chosen
