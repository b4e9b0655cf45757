"""Helpers of the reliability tests: run the CLI with a function replaced by one that raises, read its stderr."""

from __future__ import annotations

from pathlib import Path

from pipeline_helpers import env_for

# Put on PYTHONPATH: replaces `module:function` with one raising `module:Class(message)` in every process that starts
# with ALIGNLOOP_TEST_RAISE set (the CLI under test), before the CLI imports it.
SITECUSTOMIZE = '''
import importlib, os
spec = os.environ.get("ALIGNLOOP_TEST_RAISE")
if spec:
    target, error, message = spec.split("|")
    module_name, name = target.split(":")
    error_module, error_name = error.split(":")
    error_class = getattr(importlib.import_module(error_module), error_name)
    def _raise(*args, **kwargs):
        raise error_class(message)
    owner = importlib.import_module(module_name)
    if "." in name:
        holder, attr = name.split(".")
        object.__setattr__(getattr(owner, holder), attr, _raise)
    else:
        setattr(owner, name, _raise)
'''


def raising_env(tmp_path: Path, project: Path, target: str, error: str, message: str, **extra: str) -> dict[str, str]:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return env_for(project, PYTHONPATH=str(hooks), ALIGNLOOP_TEST_RAISE=f"{target}|{error}|{message}", **extra)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
