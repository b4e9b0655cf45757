"""When a stage's result can be reused: a cache key over everything it reads, and a stamp over what it wrote.

The key hashes the stage name, the iteration, the stage's slice of params.yaml, the content of its input artifacts, a
code version (the source of every module the stage uses, plus the versions of the numeric libraries) and, for stages
that run a model, the device type `model.device` resolves to (dtype is in the params). The stamp,
written after the stage's outputs, records that key and a digest of each output; outputs that are missing, changed or
half-written fail the stamp check, so the stage runs again. Both drivers (`alignloop run` and `dvc repro`) write stamps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from alignloop import __version__
from alignloop.config import Config
from alignloop.errors import MissingInputError
from alignloop.io import read_json, write_json
from alignloop.paths import Layout
from alignloop.pipeline import stop_points
from alignloop.pipeline.digests import file_digest
from alignloop.pipeline.stages import STAGES, Stage, check_iteration

# Library versions that change numbers (kernels, sampling, training loops): part of every code version.
_NUMERIC_LIBRARIES = ("torch", "transformers", "trl", "tokenizers", "safetensors", "peft", "accelerate", "datasets",
                      "numpy")


def is_scratch(name: str) -> bool:
    """Temporaries of `io.atomic_path` left by a killed process; never part of an artifact."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".old"))


def digest(path: Path) -> str | None:
    """sha256 of a file, or of a directory's sorted (relative path, file digest) list; None if it does not exist."""
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        return None
    entries = []
    for directory, subdirs, files in os.walk(path):
        subdirs[:] = sorted(name for name in subdirs if not is_scratch(name))
        for name in sorted(files):
            if not is_scratch(name):
                full = Path(directory) / name
                entries.append((full.relative_to(path).as_posix(), file_digest(full)))
    if not entries:
        return None  # an empty directory is an incomplete output, not an artifact
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _library_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=None)
def code_version(stage: Stage) -> str:
    sha = hashlib.sha256(f"alignloop {__version__}".encode())
    for name in _NUMERIC_LIBRARIES:
        sha.update(f"{name} {_library_version(name)}".encode())
    for path in stage.code_paths():
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


@lru_cache(maxsize=None)
def resolved_device(name: str) -> str:
    """The device type `model.device` resolves to on this machine (cpu, cuda, ...)."""
    from alignloop.models.device import resolve_device

    return resolve_device(name).type


def _relative(path: Path, layout: Layout) -> str:
    return Path(os.path.relpath(path, layout.root)).as_posix()


def params_slice(stage: Stage, cfg: Config) -> dict[str, Any]:
    dumped = cfg.model_dump(mode="json")
    return {key: dumped[key] for key in stage.params_of(cfg)}


def cache_key(stage: Stage, cfg: Config, layout: Layout, iteration: int) -> str:
    """What the stage's outputs are a function of. Inputs must exist (their producers ran first)."""
    inputs = {}
    for path in stage.deps(layout, cfg, iteration):
        value = digest(path)
        if value is None:
            raise MissingInputError(f"{path}: input of stage {stage.key(iteration)} is missing "
                                    "(run the stages before it first)")
        inputs[_relative(path, layout)] = value
    payload = {"stage": stage.name, "iteration": iteration if stage.per_iteration else None,
               "params": params_slice(stage, cfg), "inputs": inputs, "code": code_version(stage)}
    if "model" in stage.params_of(cfg):  # `auto` runs on cuda or cpu, whose kernels give different numbers
        payload["device"] = resolved_device(cfg.model.device)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def outputs_manifest(stage: Stage, cfg: Config, layout: Layout, iteration: int) -> dict[str, str] | None:
    """Digest of every output, or None when one is missing or empty."""
    manifest = {}
    for path in [*stage.outs(layout, cfg, iteration), *stage.metrics(layout, cfg, iteration)]:
        value = digest(path)
        if value is None:
            return None
        manifest[_relative(path, layout)] = value
    return manifest


def stamp_path(stage: Stage, layout: Layout, iteration: int) -> Path:
    return layout.stamps / f"{stage.key(iteration)}.json"


def write_stamp(stage: Stage, cfg: Config, layout: Layout, iteration: int, key: str) -> dict[str, str]:
    manifest = outputs_manifest(stage, cfg, layout, iteration)
    if manifest is None:
        raise RuntimeError(f"stage {stage.key(iteration)} finished without writing all of its outputs")
    write_json(stamp_path(stage, layout, iteration), {"cache_key": key, "outputs": manifest})
    return manifest


def read_stamp(stage: Stage, layout: Layout, iteration: int) -> dict[str, Any]:
    try:
        stamp = read_json(stamp_path(stage, layout, iteration))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def outputs_intact(stage: Stage, cfg: Config, layout: Layout, iteration: int) -> bool:
    """True when the stage finished once and its outputs are still exactly what it wrote."""
    stamp = read_stamp(stage, layout, iteration)
    return bool(stamp) and stamp.get("outputs") == outputs_manifest(stage, cfg, layout, iteration)


def is_fresh(stage: Stage, cfg: Config, layout: Layout, iteration: int, key: str) -> bool:
    """True when the outputs on disk were written by a run with this key and have not changed since."""
    return read_stamp(stage, layout, iteration).get("cache_key") == key and outputs_intact(stage, cfg, layout,
                                                                                             iteration)


def remove_scratch(stage: Stage, cfg: Config, layout: Layout, iteration: int) -> None:
    """Delete temporaries that a killed run left next to this stage's outputs."""
    for out in stage.outs(layout, cfg, iteration):
        if out.parent.is_dir():
            for sibling in out.parent.glob(f".{out.name}.*"):
                if is_scratch(sibling.name):
                    if sibling.is_dir():
                        shutil.rmtree(sibling, ignore_errors=True)
                    else:
                        sibling.unlink(missing_ok=True)


def run_stage(name: str, cfg: Config, layout: Layout, iteration: int = 0, key: str | None = None) -> dict[str, str]:
    """Run one stage and stamp its outputs as made from `key` (computed here if not given); returns their digests."""
    stage = STAGES[name]
    check_iteration(stage, cfg, iteration)
    key = key or cache_key(stage, cfg, layout, iteration)
    remove_scratch(stage, cfg, layout, iteration)
    with stop_points.stage(stage.key(iteration)):
        stage.run(cfg, layout, iteration)
        stop_points.reach_in_stage("outputs-written")
    return write_stamp(stage, cfg, layout, iteration, key)
