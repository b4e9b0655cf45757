"""Where the vLLM environment is (light: the config checks use it before any work)."""

from __future__ import annotations

from pathlib import Path

from alignloop.config import Config
from alignloop.errors import MissingInputError

# Where scripts/setup_vllm.sh puts the environment: next to the package's checkout.
DEFAULT_ENV = Path(__file__).resolve().parents[2] / ".venv-vllm"


def uses_vllm(cfg: Config) -> bool:
    return "vllm" in (cfg.sample.backend, cfg.benchmark.backend)


def vllm_python(cfg: Config, root: Path = Path(".")) -> Path:
    """The vLLM environment's interpreter: `vllm.python` (relative to the project), else the checkout's
    `.venv-vllm`."""
    python = root / cfg.vllm.python if cfg.vllm.python else DEFAULT_ENV / "bin" / "python"
    if not python.is_file():
        raise MissingInputError(
            f"vllm.python: no vLLM environment at {python}; create it with scripts/setup_vllm.sh (vLLM runs in its "
            "own environment) or point vllm.python at one")
    return python
