"""Checks that need the files a run names but no work: every one fails with a `ConfigError` naming its key, so a run
with a missing model, a model without a chat template, a reward model that is not a one-label classifier, or a
prompt file or column that does not exist, or a preference file without chosen/rejected columns stops before any
stage starts (exit code 2).

Hub models and dataset names are checked by `prepare`, the only stage that may use the network.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignloop.config import Config, ConfigError
from alignloop.models.gguf import check_gguf, is_gguf
from alignloop.sources.models import is_local, local_model_dir, ranker_model


def check_policy(cfg: Config, root: Path) -> None:
    name = cfg.model.name_or_path
    if is_gguf(name):  # the file is there and transformers reads its architecture; prepare converts it
        check_gguf(name, root)
        return
    if name == "testbed" or not is_local(name, root):
        return
    path = local_model_dir(name, root, "model.name_or_path")
    from transformers import AutoTokenizer

    from alignloop.models.policy import ModelLoadError, check_tokenizer

    try:
        check_tokenizer(AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.model.trust_remote_code), path)
    except ModelLoadError as exc:
        raise ConfigError(f"model.name_or_path: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.name_or_path: {path}: no loadable tokenizer ({str(exc).splitlines()[0]})") from None


def check_ranker(cfg: Config, root: Path) -> None:
    named = ranker_model(cfg)
    if named is None or not is_local(named[1], root):
        return
    key, path = named[0], Path(named[1])
    path = path if path.is_absolute() else root / path
    if cfg.rank.ranker == "pairrm":
        from alignloop.models.pairrm import check_pairrm

        check_pairrm(path, key)
    else:
        from alignloop.models.reward_model import check_reward_model

        check_reward_model(path, key)


def _is_local_file(path: str, root: Path) -> bool:
    from alignloop.sources.prompts import BUILDERS

    candidate = Path(path).expanduser()
    candidate = candidate if candidate.is_absolute() else root / candidate
    return candidate.suffix in BUILDERS or candidate.exists()


def _prepare_is_fresh(cfg: Config, root: Path) -> bool:
    """prepare already read the files with these params: a resumed run does not read them again."""
    from alignloop.paths import Layout
    from alignloop.pipeline import cache
    from alignloop.pipeline.stages import STAGES

    layout, prepare = Layout(root), STAGES["prepare"]
    return cache.is_fresh(prepare, cfg, layout, 0, cache.cache_key(prepare, cfg, layout, 0))


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Warnings only while checking: prepare logs the counts when it runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_prompt_files(cfg: Config, root: Path) -> None:
    """Local prompt sets are read and filtered exactly as prepare will (missing files or columns, a set left empty
    by filtering), unless prepare already ran with these params and files: a resumed run does not read them again."""
    if cfg.data.is_testbed:
        return
    if cfg.data.is_verifiable:  # the file and its filters; counting tokens (most of prepare's time) is prepare's
        if not _prepare_is_fresh(cfg, root):
            from alignloop.sources.verifiable import sharegpt_candidates

            sharegpt_candidates(cfg.data.sharegpt, root)
        return
    sets = [cfg.data.train, cfg.data.sft, *cfg.data.eval.values()]
    hub_model = cfg.model.name_or_path != "testbed" and not is_local(cfg.model.name_or_path, root)
    if hub_model or not all(spec is None or _is_local_file(spec.path, root) for spec in sets):
        return  # a dataset name or a hub model: only prepare may download them
    if _prepare_is_fresh(cfg, root):
        return
    from alignloop.paths import Layout
    from alignloop.tasks.prepare import real_data

    with _quiet("alignloop.sources.prompts"):
        real_data(cfg, Layout(root), resolved={})


def check_reward(cfg: Config, root: Path) -> None:
    """The reward model's starting point exists, and a local preference file has its columns and both splits."""
    if not cfg.reward.enabled:
        return
    if cfg.reward.init != "policy" and is_local(cfg.reward.init, root):
        local_model_dir(cfg.reward.init, root, "reward.init")
    if cfg.reward.data is not None and _is_local_file(cfg.reward.data.path, root) and not _prepare_is_fresh(cfg, root):
        from alignloop.sources.preferences import read_preference_pairs

        with _quiet("alignloop.sources.preferences"):
            read_preference_pairs(cfg.reward.data, root, cfg.reward.eval_fraction)


def preflight(cfg: Config, root: Path) -> None:
    check_policy(cfg, root)
    check_ranker(cfg, root)
    check_prompt_files(cfg, root)
    check_reward(cfg, root)
