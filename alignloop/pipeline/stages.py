"""The stage registry: each stage declared once (function, inputs, outputs, params, code), driven by the CLI,
the Prefect flow and `dvc.yaml` alike.

The plan of a run is `prepare → sft → [reward_model] → benchmark 0 → (sample → rank → [evolve] → [cfn] → optimize
→ benchmark) × iterations → report`; evolve runs under eva (`evolve.enabled`), cfn under COPO
(`optimize.exploration: copo`), reward_model with `reward.enabled`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from alignloop.config import Config
from alignloop.errors import InputError
from alignloop.paths import Layout, eval_split_names
from alignloop.pipeline.code_graph import code_files
from alignloop.sources.models import base_model_deps, gguf_source_deps, policy_deps, ranker_deps, reward_init_deps


@dataclass(frozen=True)
class Stage:
    """One stage, declared once. Its work is `run_<name>` in `alignloop/tasks/<name>.py`, called as
    `run_<name>(cfg, layout, iteration)`, or `(cfg, layout)` for a stage that runs once per run."""
    name: str
    params: tuple[str, ...] | Callable[[Config], tuple[str, ...]]  # params.yaml keys the stage reads
    deps: Callable[[Layout, Config, int], list[Path]]
    outs: Callable[[Layout, Config, int], list[Path]]
    metrics: Callable[[Layout, Config, int], list[Path]] = lambda layout, cfg, i: []
    per_iteration: bool = True
    launchable: bool = False  # trains, so `pipeline.launcher: accelerate` runs it in accelerate's processes

    def run(self, cfg: Config, layout: Layout, iteration: int) -> None:
        """The stage's work: in accelerate's processes when it is launchable and the run says so, else here."""
        if self.launchable and cfg.pipeline.launcher == "accelerate":
            from alignloop.pipeline.launch import run_launched

            run_launched(self.name, cfg, layout, iteration)
        else:
            self.run_here(cfg, layout, iteration)

    def run_here(self, cfg: Config, layout: Layout, iteration: int) -> None:
        """The stage's work in this process (what a launched process calls)."""
        task = getattr(importlib.import_module(f"alignloop.tasks.{self.name}"), f"run_{self.name}")
        task(cfg, layout, iteration) if self.per_iteration else task(cfg, layout)

    def params_of(self, cfg: Config) -> tuple[str, ...]:
        return self.params(cfg) if callable(self.params) else self.params

    def code_paths(self) -> list[Path]:
        """The source files its results depend on: what `tasks/<name>.py` imports, followed through the package."""
        return list(code_files(f"alignloop.tasks.{self.name}"))

    def key(self, iteration: int) -> str:
        return f"{self.name}-{iteration}" if self.per_iteration else self.name


def _evolver_deps(layout: Layout, cfg: Config, i: int) -> list[Path]:
    """The llm evolver's own model; the constraints evolver reads the responses (which types the policy broke)."""
    if cfg.evolve.evolver == "llm" and cfg.evolve.llm_model != "policy" and Path(cfg.evolve.llm_model).exists():
        return [Path(cfg.evolve.llm_model)]
    return [layout.samples(i)] if cfg.evolve.evolver == "constraints" else []


def _evolve_params(cfg: Config) -> tuple[str, ...]:
    """The constraints evolver draws from data.constraints.train."""
    return ("seed", "evolve", "sample", "model", *(("data",) if cfg.evolve.evolver == "constraints" else ()))


def _previous_buffer(layout: Layout, cfg: Config, i: int) -> list[Path]:
    return [layout.cfn_visits(k) for k in range(1, i)] if cfg.cfn.replay == "all" else []


def _bonus_deps(layout: Layout, cfg: Config, i: int) -> list[Path]:
    return [layout.cfn_bonuses(i)] if cfg.optimize.exploration == "copo" else []


def _reference_deps(layout: Layout, cfg: Config, i: int) -> list[Path]:
    return policy_deps(cfg, layout, 0) if cfg.optimize.reference == "sft" and i > 1 else []


def _prepare_params(cfg: Config) -> tuple[str, ...]:
    """Real prompts are filtered by the room sampling and benchmarks need, a hub reward model is fetched, and
    `reward.data`'s pairs are read."""
    real = ("sample", "benchmark", "rank") if not cfg.data.is_testbed or cfg.rank.ranker != "gold" else ()
    reward = ("reward",) if cfg.reward.enabled and (cfg.reward.data is not None or cfg.reward.init != "policy") else ()
    return ("seed", "testbed", "data", "model", *real, *reward)


def _rank_params(cfg: Config) -> tuple[str, ...]:
    """The seed matters only to the rule that draws a random rejected response."""
    return (*(("seed",) if cfg.rank.pair_rule == "best_vs_random" else ()), "rank", "model")


def _reward_params(cfg: Config) -> tuple[str, ...]:
    own = cfg.reward.data is None  # pairs the run labels itself: the testbed's gold scorer, or the verifier
    return ("seed", "reward", "model", *(("testbed",) if own and cfg.data.is_testbed else ()),
            *(("data", "rank") if own and cfg.data.is_verifiable else ()))


def _reward_deps(layout: Layout, cfg: Config, i: int) -> list[Path]:
    """The pairs' source, the starting model, and policy 0 when its samples are needed (testbed pairs, MetaRM)."""
    testbed = cfg.reward.data is None
    policy = policy_deps(cfg, layout, 0) if testbed or cfg.reward.metarm else []
    source = layout.train_prompts if testbed else layout.preferences
    return list(dict.fromkeys([source, *reward_init_deps(cfg, layout), *policy]))


def _eval_sets(layout: Layout, cfg: Config) -> list[Path]:
    """The evaluation prompts (and, with data.sharegpt, the reference answers retention is measured on)."""
    return [layout.eval_prompts(split) for split in eval_split_names(cfg)] + (
        [layout.reference_answers] if cfg.data.is_verifiable else [])


def _benchmark_outs(layout: Layout, cfg: Config, i: int) -> list[Path]:
    return [layout.benchmark_outputs(i), *([layout.alpaca_eval(i)] if cfg.benchmark.alpaca_eval else [])]


def _report_deps(layout: Layout, cfg: Config, i: int) -> list[Path]:
    """Every iteration's metrics and training log, and the statistics of the stages the run has."""
    deps = [layout.metrics(k) for k in range(cfg.iterations + 1)]
    for k in range(cfg.iterations + 1):
        stages = iteration_stages(cfg, k)
        deps += [layout.train_log(k)] if "sft" in stages or "optimize" in stages else []
        deps += [layout.rank_stats(k)] if "rank" in stages else []
        deps += [layout.evolve_stats(k)] if "evolve" in stages else []
        deps += [layout.cfn_stats(k), layout.cfn_bonuses(k)] if "cfn" in stages else []
        deps += [layout.reward_stats, layout.reward_train_log] if "reward_model" in stages else []
    return deps


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("prepare", _prepare_params,  # a GGUF model's file, unless inside a package (machine-specific path)
          deps=lambda layout, cfg, i: gguf_source_deps(cfg, layout),
          outs=lambda layout, cfg, i: [layout.data], per_iteration=False),
    Stage("sft", ("seed", "model", "sft"),
          deps=lambda layout, cfg, i: [layout.sft_data, *base_model_deps(cfg, layout)],
          outs=lambda layout, cfg, i: [layout.policy(0), layout.train_log(0)], per_iteration=False, launchable=True),
    Stage("reward_model", _reward_params,
          deps=_reward_deps, outs=lambda layout, cfg, i: [layout.reward_outputs], per_iteration=False,
          launchable=True),
    Stage("sample", ("seed", "sample", "model"),
          deps=lambda layout, cfg, i: [layout.sample_prompts(i, cfg.evolve.enabled), *policy_deps(cfg, layout, i - 1)],
          outs=lambda layout, cfg, i: [layout.prompts(i), layout.samples(i)]),
    Stage("rank", _rank_params,
          deps=lambda layout, cfg, i: [layout.prompts(i), layout.samples(i), *ranker_deps(cfg, layout)],
          outs=lambda layout, cfg, i: [layout.scores(i), layout.pairs(i), layout.rank_stats(i)]),
    Stage("evolve", _evolve_params,
          deps=lambda layout, cfg, i: [*(layout.prompts(k) for k in range(1, i + 1)), layout.scores(i),
                                       *_eval_sets(layout, cfg), *policy_deps(cfg, layout, i - 1),
                                       *_evolver_deps(layout, cfg, i)],
          outs=lambda layout, cfg, i: [layout.next_prompts(i), layout.evolve_stats(i)]),
    Stage("cfn", ("seed", "cfn", "sample", "model"),
          deps=lambda layout, cfg, i: [layout.samples(i), layout.pairs(i), *policy_deps(cfg, layout, i - 1),
                                       *_previous_buffer(layout, cfg, i)],
          outs=lambda layout, cfg, i: [layout.cfn(i)]),
    Stage("optimize", ("seed", "optimize", "model"),
          deps=lambda layout, cfg, i: [layout.pairs(i), *policy_deps(cfg, layout, i - 1),
                                       *_reference_deps(layout, cfg, i), *_bonus_deps(layout, cfg, i)],
          outs=lambda layout, cfg, i: [layout.policy(i), layout.train_log(i)], launchable=True),
    Stage("benchmark", ("seed", "benchmark", "rank", "model"),
          deps=lambda layout, cfg, i: [*policy_deps(cfg, layout, i), *_eval_sets(layout, cfg),
                                       *([layout.benchmark_outputs(0), *policy_deps(cfg, layout, 0)] if i > 0 else []),
                                       *ranker_deps(cfg, layout)],
          outs=_benchmark_outs,
          metrics=lambda layout, cfg, i: [layout.metrics(i)]),
    Stage("report", ("iterations", "sft", "reward", "evolve", "optimize", "rank"),
          deps=_report_deps, outs=lambda layout, cfg, i: [layout.iterations_table, layout.report_plots],
          per_iteration=False),
)}


def iteration_stages(cfg: Config, iteration: int) -> tuple[str, ...]:
    """The stages of one iteration, in order. `evolve` writes the next iteration's prompts, so the last iteration
    has none (growing the run adds it)."""
    if iteration == 0:  # without SFT, policy 0 is the base model itself; a trained reward model judges benchmark 0
        return (*(("sft",) if cfg.sft.enabled else ()), *(("reward_model",) if cfg.reward.enabled else ()),
                "benchmark")
    evolve = ("evolve",) if cfg.evolve.enabled and iteration < cfg.iterations else ()
    cfn = ("cfn",) if cfg.optimize.exploration == "copo" else ()
    return ("sample", "rank", *evolve, *cfn, "optimize", "benchmark")


@dataclass(frozen=True)
class Plan:
    """Every (stage, iteration) of a run, in an order that respects their dependencies: `first` (prepare), each
    iteration's stages (0: SFT, the reward model, the start's benchmark), then `last` (report). Iterating it yields
    the (stage, iteration) pairs in that order; the flow, `dvc.yaml` and the clean-up after a failure walk it."""
    first: tuple[Stage, ...]
    iterations: tuple[tuple[Stage, ...], ...]
    last: tuple[Stage, ...]

    def __iter__(self) -> Iterator[tuple[Stage, int]]:
        yield from ((stage, 0) for stage in self.first)
        for iteration, stages in enumerate(self.iterations):
            yield from ((stage, iteration) for stage in stages)
        yield from ((stage, 0) for stage in self.last)


def plan(cfg: Config) -> Plan:
    return Plan(first=(STAGES["prepare"],),
                iterations=tuple(tuple(STAGES[name] for name in iteration_stages(cfg, iteration))
                                 for iteration in range(cfg.iterations + 1)),
                last=(STAGES["report"],))


def check_iteration(stage: Stage, cfg: Config, iteration: int) -> None:
    if stage.per_iteration and not (0 <= iteration <= cfg.iterations):
        raise InputError(f"stage {stage.name}: iteration must be in 0..{cfg.iterations} (params iterations), "
                         f"got {iteration}")
    if stage.per_iteration and iteration == 0 and stage.name != "benchmark":
        raise InputError(f"stage {stage.name} runs in iterations 1..{cfg.iterations}; iteration 0 is SFT")
