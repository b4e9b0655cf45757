"""`alignloop init DIR --preset NAME`: a new project directory that is a git + DVC project from the first run.

It writes params.yaml (the preset, validated first), dvc.yaml for it, a .gitignore for the run's local stores, runs
`git init` and `dvc init` (DVC's cache set to links), and commits these files, so `alignloop run`, `dvc repro`,
`dvc status` and `dvc exp run -S key=value` (which needs a commit) all work there at once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from alignloop.config import Config, ConfigError, load_config
from alignloop.io import write_text

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
DEFAULT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"

# Local stores of a run; DVC adds its own outputs (data/, artifacts/) to .gitignore when it records them.
GITIGNORE = """\
# alignloop's local stores (DVC tracks data/ and artifacts/ and ignores them itself)
/mlflow.db
/mlruns/
/mlartifacts/
/.prefect/
/.alignloop/
/reports/*
!/reports/iterations.json
/dvc_plots/
"""


def preset_names() -> list[str]:
    return ["default", *sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))]


def preset_path(name: str) -> Path:
    """The params file of a preset: `default` is the repository's params.yaml (the testbed run)."""
    path = DEFAULT_PARAMS if name == "default" else PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"--preset: no preset {name!r}; presets are: {', '.join(preset_names())}")
    return path


def _git(args: list[str], root: Path) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def _commit_identity(root: Path) -> list[str]:
    """A committer for the first commit where git has none configured (fresh machines, CI)."""
    configured = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True)
    return [] if configured.stdout.strip() else ["-c", "user.name=alignloop", "-c", "user.email=alignloop@localhost"]


def init_project(target: Path, preset: str) -> Config:
    """Create the project at `target` (absent or empty); returns its validated config. Nothing is left behind when
    a step fails."""
    source = preset_path(preset)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target}: exists and is not an empty directory; pick a new one")
    if shutil.which("git") is None:
        raise ConfigError("git is not installed; alignloop init makes a git + DVC project (install git)")
    cfg = load_config(source)  # a preset that cannot run here (a missing kit) stops before anything is written
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        write_text(target / "params.yaml", source.read_text(encoding="utf-8"))
        write_text(target / ".gitignore", GITIGNORE)
        _git(["init", "-q"], target)
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=target, check=True, capture_output=True,
                       text=True)
        from alignloop.pipeline.dvcfile import write_dvc_yaml

        write_dvc_yaml(cfg, target)
        _git(["add", "params.yaml", "dvc.yaml", ".gitignore", ".dvc", ".dvcignore"], target)
        _git([*_commit_identity(target), "commit", "-q", "-m", f"alignloop init (preset {preset})"], target)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return cfg
