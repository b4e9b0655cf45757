"""Values that pass the schema but no run can use, refused when params.yaml is loaded (one line naming the key).

Three layers:
- `load_params_yaml` reads the file: a key written twice at any level (YAML keeps the last one silently) and a
  non-finite number (`.inf`, `.nan`) anywhere are refused before the schema sees them.
- `check_config` (called at the end of `Config._sections_agree`, so for every Config) refuses combinations the
  schema cannot express: non-finite numbers set in code, a testbed model whose rotary heads cannot be built, testbed
  sets larger than the world can draw, more prompts per iteration than the pool holds, and an eva mix that rounds to
  no evolved prompts.
- `check_runnable` (called by the commands that run stages: `run`, `stage`, `serve`) refuses what this machine and
  the testbed make impossible for a run: a device it does not have, and testbed prompts that leave the model no
  position to answer in. A Config that only names a model or a tokenizer (in tests, in tools) may still hold these.

Errors follow `Config._sections_agree`'s convention: `ValueError("<key path>: <message>")`, printed as is.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from alignloop.config.base import ConfigError
from alignloop.models.shares import sft_batch_shares
from alignloop.models.vllm_env import uses_vllm, vllm_python

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
    """Refuse what the schema lets through but a run cannot use; ValueError("<key path>: <message>")."""
    _finite_numbers(cfg.model_dump(mode="python"), ())
    if cfg.model.name_or_path == "testbed" and cfg.model.architecture == "llama" and (
            cfg.model.n_embd // cfg.model.n_head) % 2:
        raise ValueError(f"model.n_head: the testbed's llama model needs an even head width (n_embd / n_head) for its "
                         f"rotary positions, got {cfg.model.n_embd} / {cfg.model.n_head} = "
                         f"{cfg.model.n_embd // cfg.model.n_head}")
    if cfg.data.is_testbed:
        _testbed_sets_drawable(cfg)
        if cfg.sample.num_prompts > cfg.testbed.prompt_pool_size:
            raise ValueError(f"sample.num_prompts: must be <= testbed.prompt_pool_size ({cfg.testbed.prompt_pool_size})"
                             f" (every iteration would sample the whole pool), got {cfg.sample.num_prompts}")
    if cfg.evolve.enabled and cfg.evolve.evolved_fraction > 0 and round(
            cfg.evolve.evolved_fraction * cfg.sample.num_prompts) == 0:
        raise ValueError(f"evolve.evolved_fraction: {cfg.evolve.evolved_fraction} of sample.num_prompts "
                         f"({cfg.sample.num_prompts}) rounds to 0 evolved prompts; raise it to at least "
                         f"{0.5 / cfg.sample.num_prompts:.3g} (or 0 to keep only the buffer)")


def check_runnable(cfg: Config, root: Path = Path(".")) -> None:
    """Refuse what a run of `cfg` cannot do on this machine (ConfigError naming the key); see the module docstring."""
    try:
        _device_exists(cfg.model.device)
        if uses_vllm(cfg):
            vllm_python(cfg, root)
        if cfg.pipeline.launcher == "accelerate":
            from alignloop.pipeline.launch import accelerate_config_file

            _launch_fits(cfg, launch_processes(accelerate_config_file(cfg, root)))
        if cfg.data.is_testbed:
            _testbed_prompts_fit(cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None


def launch_processes(path: Path) -> int:
    """The number of training processes an accelerate config file starts (`num_processes`, 1 when absent)."""
    if not path.is_file():
        raise ValueError(f"pipeline.accelerate_config: {path} does not exist (configs/accelerate/ has examples)")
    try:
        launch = yaml.safe_load(path.read_text()) or {}
        processes = int(launch.get("num_processes", 1)) if isinstance(launch, dict) else None
    except (yaml.YAMLError, TypeError, ValueError):
        processes = None
    if processes is None or processes < 1:
        raise ValueError(f"pipeline.accelerate_config: {path} is not an accelerate config with a positive "
                         "num_processes (write one with `accelerate config --config_file <path>`)")
    return processes


def _launch_fits(cfg: Config, processes: int) -> None:
    """Every process takes an equal share of each batch: the batch sizes must split evenly."""
    if cfg.optimize.batch_size % processes:
        raise ValueError(f"optimize.batch_size: {cfg.optimize.batch_size} does not split into {processes} equal "
                         f"shares (pipeline.accelerate_config starts {processes} processes)")
    if cfg.sft.enabled:
        sft_batch_shares(cfg.sft.batch_size, cfg.sft.micro_batch_size, processes)
    if processes > 1 and cfg.optimize.loss in ("tdpo1", "tdpo2"):
        raise ValueError(f"optimize.loss: {cfg.optimize.loss} reads the policy's hidden states outside its forward "
                         "pass, which data-parallel training does not synchronize; use pipeline.launcher: python (one "
                         "process) for it")


def _device_exists(name: str) -> None:
    if name in ("auto", "cpu"):
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"model.device: not a device: {name!r} (auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"model.device: {name} is not available here (torch {torch.__version__} sees no CUDA "
                             "device); use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"model.device: {name} does not exist here ({torch.cuda.device_count()} CUDA device(s))")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"model.device: {name} is not available here; use auto or cpu")
    elif device.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"model.device: {name!r} is not supported (auto, cpu, cuda, cuda:N or mps)")


# The chat template adds `<|user|>` and `<|assistant|>` to a prompt.
_CHAT_TOKENS = 2


def _tokens_before(text: str, following: str = ",") -> int:
    """Tokens of `text` in the testbed tokenizer where `following` comes next (a word is whole only before a
    space, comma or colon)."""
    from alignloop.testbed.tokenizer import pre_tokenized

    return len(pre_tokenized(text + following)) - len(pre_tokenized(following))


@lru_cache(maxsize=64)
def _chains(depth: int, held_out_only: bool) -> tuple[int, int]:
    """(longest instruction in tokens before the input, number of (chain, phrasing) pairs) over the chains
    of one depth that `testbed.world` may draw: no skill twice in a row, no held-out pair, `double` only alone."""
    from alignloop.testbed.world import HELD_OUT_PAIRS, SHALLOW_ONLY, SKILLS

    def verbs(name: str) -> tuple[int, int]:
        return max(_tokens_before(" " + verb) for verb in SKILLS[name].verbs), len(SKILLS[name].verbs)

    separator, colon = _tokens_before(", then"), _tokens_before(": ", "a")
    if held_out_only:
        longest = max(verbs(a)[0] + separator + verbs(b)[0] for a, b in HELD_OUT_PAIRS) + colon
        return longest, sum(verbs(a)[1] * verbs(b)[1] for a, b in HELD_OUT_PAIRS)
    names = [name for name in SKILLS if depth == 1 or name not in SHALLOW_ONLY]
    # longest[s] / count[s]: over allowed chains of the current length that end with skill s
    longest = {name: verbs(name)[0] for name in names}
    count = {name: verbs(name)[1] for name in names}
    for _ in range(depth - 1):
        longest, count = (
            {s: max((longest[p] + separator + verbs(s)[0] for p in names if p != s and (p, s) not in HELD_OUT_PAIRS),
                    default=-1) for s in names},
            {s: sum(count[p] * verbs(s)[1] for p in names if p != s and (p, s) not in HELD_OUT_PAIRS) for s in names})
    reachable = [value for value in longest.values() if value >= 0]
    return (max(reachable) + colon if reachable else -1), sum(count.values())


def _testbed_splits(cfg: Config) -> dict[str, tuple[tuple[int, ...], int, int, bool]]:
    """split → (depths, shortest input, longest input, held-out pairs only), as `testbed.data` draws them."""
    tb = cfg.testbed
    depths = tuple(depth for depth, weight in enumerate(tb.depth_weights, start=1) if weight > 0)
    return {"in_distribution": (depths, tb.min_length, tb.max_length, False),
            "harder": ((2, 3), tb.min_length, max(tb.max_length, tb.harder_max_length), False),
            "unseen_composition": ((2,), tb.min_length, tb.max_length, True)}


def longest_testbed_prompt(depths: tuple[int, ...], max_input: int, held_out_only: bool) -> int:
    """Tokens of the longest chat-formatted prompt the testbed can draw with these depths and input length."""
    return max(_chains(depth, held_out_only)[0] for depth in depths) + max_input + _CHAT_TOKENS


def _testbed_prompts_fit(cfg: Config) -> None:
    """Sampling and benchmarks refuse a prompt that leaves no position to answer in (models/generation.py)."""
    for split, (depths, _, max_input, held_out) in _testbed_splits(cfg).items():
        tokens = longest_testbed_prompt(depths, max_input, held_out)
        if tokens + 1 > cfg.model.max_length:
            raise ValueError(
                f"model.max_length: must be > {tokens}, the testbed's longest prompt in tokens ({split}: "
                f"{max(depths)} skill(s) on inputs of up to {max_input} characters), to leave room for an answer; "
                f"got {cfg.model.max_length}")


def _distinct_prompts(depths: tuple[int, ...], min_input: int, max_input: int, held_out: bool) -> int:
    """An upper bound of the distinct prompts of a split: (chain, phrasing) pairs times inputs."""
    inputs = sum(36 ** length for length in range(min_input, max_input + 1))
    return sum(_chains(depth, held_out)[1] for depth in depths) * inputs


def _testbed_sets_drawable(cfg: Config) -> None:
    """`testbed.data` draws distinct prompts; a set larger than its distribution holds can never be drawn."""
    tb = cfg.testbed
    for split, (depths, low, high, held_out) in _testbed_splits(cfg).items():
        wanted = tb.eval_size + (tb.prompt_pool_size if split == "in_distribution" else 0)
        at_most = _distinct_prompts(depths, low, high, held_out)
        if wanted > at_most:
            key = "testbed.prompt_pool_size" if split == "in_distribution" else "testbed.eval_size"
            raise ValueError(f"{key}: the testbed holds at most {at_most} distinct {split} prompts with inputs of "
                             f"{low}-{high} characters, fewer than the {wanted} asked for (eval_size"
                             f"{' + prompt_pool_size' if split == 'in_distribution' else ''}); lower it or raise "
                             "testbed.max_length")
