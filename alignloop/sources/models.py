"""Where a run's models live: the testbed's base model, a local directory, a GGUF file, or a hub id resolved once.

A hub id is downloaded by `prepare` only (into the Hugging Face cache) and recorded in `data/model.json`; every later
stage reads the recorded directory, so a run never depends on the network after `prepare`. A GGUF
`model.name_or_path` (a path or `package:<module>/<file>.gguf`) is converted by `prepare` into `data/base_model/`,
where the testbed's untrained model goes too (alignloop/models/gguf.py). With `sft.enabled: false`
the base model itself is policy 0, used in place (never copied or converted).
"""

from __future__ import annotations

from pathlib import Path

from alignloop.config import Config, ConfigError
from alignloop.errors import MissingInputError
from alignloop.io import read_json
from alignloop.models.gguf import is_gguf
from alignloop.paths import Layout
from alignloop.sources.resources import is_package_resource

# What a policy or reward model needs from a hub repository (no pickled weights, no other formats).
MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken")


class ModelSourceError(ConfigError):
    """A model that cannot be found or used, phrased as one line naming the params key."""


def is_local(name_or_path: str, root: Path) -> bool:
    """A path (absolute, relative, or existing), a GGUF file or a `package:` file, rather than a hub id like
    `org/name`."""
    if is_gguf(name_or_path) or is_package_resource(name_or_path):
        return True
    path = Path(name_or_path)
    return (path.is_absolute() or name_or_path.startswith((".", "~")) or (root / path).exists()
            or (root / path.parts[0]).is_dir() or name_or_path.count("/") != 1)


def local_model_dir(name_or_path: str, root: Path, key: str) -> Path:
    """An existing model directory (config.json inside), resolved against the project root."""
    if is_gguf(name_or_path):  # model.name_or_path's GGUF never comes here: prepare converts it to data/base_model
        raise ModelSourceError(f"{key}: {name_or_path}: a GGUF file is read as model.name_or_path only; give a "
                               "model directory or a hub id")
    path = Path(name_or_path)
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_dir():
        raise ModelSourceError(f"{key}: {name_or_path}: no such directory (nor a hub id of the form org/name)")
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"{key}: {path} holds no config.json; point it at a saved Hugging Face model")
    return path


def resolve_model(name_or_path: str, root: Path, key: str, download: bool) -> Path:
    """The local directory of a model: the path itself, or the hub snapshot (downloaded only when `download`)."""
    if is_local(name_or_path, root):
        return local_model_dir(name_or_path, root, key)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name_or_path, allow_patterns=list(MODEL_FILES),
                                      local_files_only=not download))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated: one line either way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(f"{key}: could not {'download' if download else 'find'} hub model "
                               f"{name_or_path!r} ({reason})") from None


def read_model_config(path: str | Path, key: str, expected: str) -> dict:
    """A model directory's config.json, for up-front checks; a missing or damaged one is a ConfigError naming `key`."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{key}: {path}: no such directory")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{key}: {path} has no config.json; expected {expected}")
    try:
        raw = read_json(path / "config.json")
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: {path}/config.json is not a mapping; expected {expected}")
    return raw


def hub_models(cfg: Config, root: Path) -> dict[str, str]:
    """params key → hub id of every model of the run that comes from the hub (prepare downloads these)."""
    named = {"model.name_or_path": cfg.model.name_or_path}
    ranker = ranker_model(cfg)
    if ranker is not None:
        named[ranker[0]] = ranker[1]
    if cfg.reward.enabled and cfg.reward.init != "policy":
        named["reward.init"] = cfg.reward.init
    return {key: value for key, value in named.items() if value != "testbed" and not is_local(value, root)}


def model_dir(name_or_path: str, key: str, layout: Layout) -> Path:
    """The local directory of a configured model: the path itself, or the snapshot prepare recorded."""
    if is_local(name_or_path, layout.root):
        return local_model_dir(name_or_path, layout.root, key)
    if not layout.model_record.is_file():
        raise MissingInputError(f"{layout.model_record}: missing (run the prepare stage first; it downloads "
                                f"{name_or_path})")
    return Path(read_json(layout.model_record)[key])


def model_deps(name_or_path: str, layout: Layout) -> list[Path]:
    """What a stage reading this model depends on: its directory (relative to the project when given so, which keeps
    dvc.yaml portable), or for a hub model the record of its snapshot (a snapshot is immutable, and its directory is
    unknown before prepare downloads it)."""
    if not is_local(name_or_path, layout.root):
        return [layout.model_record]
    path = Path(name_or_path).expanduser()
    return [path if path.is_absolute() else layout.root / path]


def uses_base_model_dir(cfg: Config) -> bool:
    """prepare writes the base model to `data/base_model/`: the testbed's untrained model, or a converted GGUF."""
    return cfg.model.name_or_path == "testbed" or is_gguf(cfg.model.name_or_path)


def base_model_dir(cfg: Config, layout: Layout) -> Path:
    """The model SFT starts from (and policy 0 without SFT)."""
    if uses_base_model_dir(cfg):
        return layout.base_model
    return model_dir(cfg.model.name_or_path, "model.name_or_path", layout)


def base_model_deps(cfg: Config, layout: Layout) -> list[Path]:
    if uses_base_model_dir(cfg):
        return [layout.base_model]
    return model_deps(cfg.model.name_or_path, layout)


def gguf_source_deps(cfg: Config, layout: Layout) -> list[Path]:
    """The GGUF file prepare converts, when it is a path (relative to the project when given so, which keeps dvc.yaml
    portable). A `package:` file is left out: its path is the machine's site-packages, which would make dvc.yaml
    differ per machine; its spec is in the params prepare reads, and its sha256 in data/model.json."""
    name = cfg.model.name_or_path
    if not is_gguf(name) or is_package_resource(name):
        return []
    path = Path(name).expanduser()
    return [path if path.is_absolute() else layout.root / path]


def trains_ranker(cfg: Config) -> bool:
    """The ranker is the reward model this run trains (`reward.enabled`, no `rank.reward_model`)."""
    return cfg.rank.ranker == "reward_model" and cfg.reward.enabled and not cfg.rank.reward_model


def ranker_model(cfg: Config) -> tuple[str, str] | None:
    """(params key, directory or hub id) of the ranker's model given in params; None for the rankers without a
    model (gold, verifier) and for the reward model the run trains."""
    if cfg.rank.ranker in ("gold", "verifier") or trains_ranker(cfg):
        return None
    key = f"rank.{cfg.rank.ranker}"
    return key, getattr(cfg.rank, cfg.rank.ranker)


def ranker_model_dir(cfg: Config, layout: Layout) -> Path | None:
    if trains_ranker(cfg):
        return layout.reward_model
    named = ranker_model(cfg)
    return None if named is None else model_dir(named[1], named[0], layout)


def ranker_deps(cfg: Config, layout: Layout) -> list[Path]:
    if trains_ranker(cfg):
        return [layout.reward_model]
    named = ranker_model(cfg)
    return [] if named is None else model_deps(named[1], layout)


def reward_init_dir(cfg: Config, layout: Layout) -> Path:
    """The model the `reward_model` stage starts from: policy 0, or `reward.init`."""
    if cfg.reward.init == "policy":
        return policy_dir(cfg, layout, 0)
    return model_dir(cfg.reward.init, "reward.init", layout)


def reward_init_deps(cfg: Config, layout: Layout) -> list[Path]:
    if cfg.reward.init == "policy":
        return policy_deps(cfg, layout, 0)
    return model_deps(cfg.reward.init, layout)


def policy_dir(cfg: Config, layout: Layout, iteration: int) -> Path:
    """The model after `iteration`; policy 0 is the SFT model, or the base model itself when SFT is off."""
    if iteration == 0 and not cfg.sft.enabled:
        return base_model_dir(cfg, layout)
    return layout.policy(iteration)


def policy_deps(cfg: Config, layout: Layout, iteration: int) -> list[Path]:
    if iteration == 0 and not cfg.sft.enabled:
        return base_model_deps(cfg, layout)
    return [layout.policy(iteration)]
