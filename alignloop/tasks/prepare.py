"""Stage `prepare`: everything later stages read, under `data/`, made once.

On the testbed: its generated data and untrained model. With `data.train`: the prompt sets read with `datasets`,
with stable content-hash ids, duplicates and evaluation prompts (leakage) removed from training, and prompts that
leave no room to answer within `model.max_length` dropped — each removal counted in `data/prepare_stats.json`.
`reward.data`'s preference pairs are read into `data/preferences.jsonl`. Hub models (`model.name_or_path`,
`rank.reward_model`, `reward.init`) are downloaded here and their local snapshot recorded in
`data/model.json`, so no later stage needs the network. A GGUF `model.name_or_path` is converted into
`data/base_model/`, and `data/model.json` records its file by content (alignloop/models/gguf.py).
"""

from __future__ import annotations

import logging

from alignloop.config import Config
from alignloop.io import atomic_path, write_json, write_jsonl
from alignloop.models.gguf import is_gguf
from alignloop.paths import Layout
from alignloop.sources.models import hub_models, local_model_dir, resolve_model

log = logging.getLogger(__name__)


def prompt_counter(cfg: Config, layout: Layout, resolved: dict[str, str]):
    """Tokens of a prompt as the policy sees it (chat-formatted, generation prompt included)."""
    from alignloop.models.generation import prompt_token_ids
    from alignloop.models.policy import load_tokenizer
    from alignloop.testbed.tokenizer import build_tokenizer

    key = "model.name_or_path"
    if cfg.model.name_or_path == "testbed":
        tokenizer = build_tokenizer(cfg.model.max_length)
    elif is_gguf(cfg.model.name_or_path) and key not in resolved:  # not converted yet: preflight's check
        from alignloop.models.gguf import check_gguf, gguf_tokenizer

        tokenizer = gguf_tokenizer(check_gguf(cfg.model.name_or_path, layout.root)[0])
    else:
        path = resolved[key] if key in resolved else local_model_dir(cfg.model.name_or_path, layout.root, key)
        tokenizer = load_tokenizer(path, cfg.model)
    tokenizer.model_max_length = 1 << 60  # counting over-long prompts is the point: no "longer than" warning
    return lambda text: len(prompt_token_ids(tokenizer, text))


def real_data(cfg: Config, layout: Layout, resolved: dict[str, str]) -> tuple[dict[str, list[dict]], dict]:
    limits = {"max_train_prompt_tokens": cfg.model.max_length - cfg.sample.max_new_tokens,
              "max_eval_prompt_tokens": cfg.model.max_length - cfg.benchmark.max_new_tokens}
    if cfg.data.is_verifiable:
        from alignloop.sources.verifiable import prepare_verifiable_sets

        return prepare_verifiable_sets(cfg.data, layout.root, cfg.seed, prompt_counter(cfg, layout, resolved),
                                       **limits)
    from alignloop.sources.prompts import prepare_prompt_sets

    return prepare_prompt_sets(cfg.data, layout.root, prompt_counter(cfg, layout, resolved), **limits)


def run_prepare(cfg: Config, layout: Layout) -> None:
    resolved = {key: str(resolve_model(name, layout.root, key, download=True))
                for key, name in hub_models(cfg, layout.root).items()}
    # data/ is one DVC output: build it aside and swap it in whole.
    with atomic_path(layout.data) as staged_data:
        record = dict(resolved)
        if is_gguf(cfg.model.name_or_path):  # converted first: prompts are counted with its tokenizer
            from alignloop.models.gguf import convert_for_prepare

            base_model = layout.base_model.relative_to(layout.data)
            record["model.name_or_path"] = convert_for_prepare(cfg.model.name_or_path, layout.root,
                                                               staged_data / base_model, base_model.as_posix())
            resolved = {**resolved, "model.name_or_path": str(staged_data / base_model)}
        if record:
            write_json(staged_data / layout.model_record.name, record)
        if cfg.data.is_testbed:
            from alignloop.testbed.data import build_testbed_data

            files, stats = build_testbed_data(cfg.testbed, cfg.seed), None
        else:
            files, stats = real_data(cfg, layout, resolved)
        if cfg.reward.enabled and cfg.reward.data is not None:
            from alignloop.sources.preferences import read_preference_pairs

            files["preferences"] = read_preference_pairs(cfg.reward.data, layout.root, cfg.reward.eval_fraction)
        for name, rows in files.items():
            write_jsonl(staged_data / f"{name}.jsonl", rows)
        if stats is not None:
            write_json(staged_data / layout.prepare_stats.name, stats)
        if cfg.model.name_or_path == "testbed":
            from alignloop.testbed.model import create_base_model

            create_base_model(cfg.model, cfg.seed, staged_data / layout.base_model.relative_to(layout.data))
    log.info("prepare: %s", ", ".join(f"{name}={len(rows)}" for name, rows in files.items()))

