"""Values that pass the schema but no run can use, refused when params.yaml is loaded (one line naming the key).

Two layers:
- `load_params_yaml` reads the file: a key written twice at any level (YAML keeps the last one silently) and a
  non-finite number (`.inf`, `.nan`) anywhere are refused before the schema sees them.
- `check_config` (`Config._sections_agree`, so for every Config) holds every rule across sections, refusing what
  the schema cannot express: a ranker or evolver the data cannot use, answers longer than the model's positions, a
  reward model neither named nor trained, micro-batches that do not divide, non-finite numbers set in code, a
  testbed model whose rotary heads cannot be built, testbed sets larger than the world can draw, more prompts per
  iteration than the pool holds, and an eva mix that rounds to no evolved prompts. A bound on one value lives on its
  field, and a rule inside one section in that section's validator.
What this machine cannot run (a device, the vLLM environment, an accelerate config, testbed prompts longer than
`model.max_length` allows) is checked before any work by `alignloop.pipeline.runnable.check_runnable`; the size of
the testbed's world is computed in `alignloop.testbed.geometry`.

Errors follow `Config._sections_agree`'s convention: `ValueError("<key path>: <message>")`, printed as is.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import yaml

from alignloop.config.base import ConfigError

if TYPE_CHECKING:
    from alignloop.config import Config

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "params"


def _no_duplicate_keys(node: yaml.Node, source: str, path: tuple[str | int, ...], seen: set[int]) -> None:
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            if key in keys:
                raise ConfigError(f"{source}: key `{_dotted((*path, key))}` appears twice "
                                  f"(line {key_node.start_mark.line + 1})")
            keys.add(key)
            _no_duplicate_keys(value_node, source, (*path, key), seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _no_duplicate_keys(item, source, (*path, index), seen)


def _finite_numbers(value: Any, path: tuple[str | int, ...]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{_dotted(path)}: must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite_numbers(item, (*path, str(key)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _finite_numbers(item, (*path, index))


def load_params_yaml(text: str, source: str = "params.yaml") -> Any:
    """`yaml.safe_load`, refusing a key written twice in one mapping and non-finite numbers (ConfigError)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _no_duplicate_keys(node, source, (), set())
        raw = loader.construct_document(node)
    finally:
        loader.dispose()
    try:
        _finite_numbers(raw, ())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return raw


# --- cross-field checks ---------------------------------------------------------------------------------------------

def check_config(cfg: Config) -> None:
    """Every rule across sections: refuse what the schema lets through but a run cannot use; ValueError("<key
    path>: <message>")."""
    if cfg.rank.ranker == "verifier" and not cfg.data.is_verifiable:
        raise ValueError("rank.ranker: verifier checks the constraints of data.sharegpt prompts; set data.sharegpt "
                         "(or use gold on the testbed, reward_model or pairrm with data.train)")
    if cfg.data.is_verifiable and cfg.sft.enabled:
        raise ValueError("sft.enabled: data.sharegpt brings no demonstrations; set sft.enabled: false to start "
                         "from model.name_or_path as it is")
    if not cfg.data.is_testbed:
        if cfg.rank.ranker == "gold":
            raise ValueError("rank.ranker: gold scores only the testbed's prompts (it needs their answers); use "
                             "reward_model with data.train")
        if cfg.evolve.enabled and cfg.evolve.evolver == "testbed":
            raise ValueError("evolve.evolver: testbed rewrites only testbed prompts; use constraints with "
                             "data.sharegpt, llm with data.train")
        if cfg.sft.enabled and cfg.data.sft is None and not cfg.data.is_verifiable:
            raise ValueError("data.sft: SFT needs demonstrations with data.train (or set sft.enabled: false to "
                             "start from model.name_or_path as it is)")
    if cfg.evolve.enabled and cfg.evolve.evolver == "constraints" and not cfg.data.is_verifiable:
        raise ValueError("evolve.evolver: constraints evolves the verifiable constraints of data.sharegpt prompts; "
                         "use testbed on the testbed, llm with data.train")
    if cfg.sample.max_new_tokens >= cfg.model.max_length:
        raise ValueError(f"sample.max_new_tokens: must be < model.max_length ({cfg.model.max_length}) to leave "
                         f"room for the prompt, got {cfg.sample.max_new_tokens}")
    if cfg.benchmark.max_new_tokens >= cfg.model.max_length:
        raise ValueError(f"benchmark.max_new_tokens: must be < model.max_length ({cfg.model.max_length}), got "
                         f"{cfg.benchmark.max_new_tokens}")
    _reward_model_known(cfg)
    micro = cfg.optimize.micro_batch_size
    if micro is not None and micro > cfg.optimize.batch_size:
        raise ValueError(f"optimize.micro_batch_size: must be <= optimize.batch_size ({cfg.optimize.batch_size}),"
                         f" got {micro}")
    micro = cfg.sft.micro_batch_size
    if micro is not None and micro < cfg.sft.batch_size and cfg.sft.batch_size % micro:
        raise ValueError(f"sft.micro_batch_size: must divide sft.batch_size ({cfg.sft.batch_size}), got {micro}")
    _finite_numbers(cfg.model_dump(mode="python"), ())
    if cfg.model.name_or_path == "testbed" and cfg.model.architecture == "llama" and (
            cfg.model.n_embd // cfg.model.n_head) % 2:
        raise ValueError(f"model.n_head: the testbed's llama model needs an even head width (n_embd / n_head) for its "
                         f"rotary positions, got {cfg.model.n_embd} / {cfg.model.n_head} = "
                         f"{cfg.model.n_embd // cfg.model.n_head}")
    if cfg.data.is_testbed:
        from alignloop.testbed.geometry import check_sets_drawable  # the testbed world's size

        check_sets_drawable(cfg.testbed)
        if cfg.sample.num_prompts > cfg.testbed.prompt_pool_size:
            raise ValueError(f"sample.num_prompts: must be <= testbed.prompt_pool_size ({cfg.testbed.prompt_pool_size})"
                             f" (every iteration would sample the whole pool), got {cfg.sample.num_prompts}")
    if cfg.evolve.enabled and cfg.evolve.evolved_fraction > 0 and round(
            cfg.evolve.evolved_fraction * cfg.sample.num_prompts) == 0:
        raise ValueError(f"evolve.evolved_fraction: {cfg.evolve.evolved_fraction} of sample.num_prompts "
                         f"({cfg.sample.num_prompts}) rounds to 0 evolved prompts; raise it to at least "
                         f"{0.5 / cfg.sample.num_prompts:.3g} (or 0 to keep only the buffer)")


def _reward_model_known(cfg: Config) -> None:
    """The ranker's reward model is named, or trained by the run; the trained one needs pairs to train on."""
    trained = cfg.reward.enabled and cfg.rank.ranker == "reward_model"
    if cfg.rank.ranker == "reward_model" and not cfg.rank.reward_model and not cfg.reward.enabled:
        raise ValueError("rank.reward_model: required when rank.ranker is reward_model (a directory or hub id), "
                         "unless reward.enabled trains one")
    if trained and cfg.rank.reward_model:
        raise ValueError("rank.reward_model: leave it empty with reward.enabled (the run ranks with the reward "
                         "model it trains), or set reward.enabled: false")
    if cfg.reward.label_noise and not cfg.data.is_verifiable:
        raise ValueError("reward.label_noise: flips the verifier's labels of data.sharegpt pairs; on the testbed use "
                         "testbed.label_noise, with reward.data flip the file's labels yourself")
    if cfg.reward.enabled and not cfg.data.is_testbed and not cfg.data.is_verifiable and cfg.reward.data is None:
        raise ValueError("reward.data: required with data.train (preference pairs with prompt, chosen and "
                         "rejected columns); the testbed and data.sharegpt build their own")
