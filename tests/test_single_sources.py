"""Names that several places spell must agree: each list has one source, and where params validation cannot import
the numeric code (it must stay light), these tests prove the two spellings equal."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from alignloop.config import JUDGE_NAMES, Config, EvolveConfig, OptimizeConfig, RankConfig
from alignloop.config.reward import RewardConfig
from alignloop.config.run import STAGE_NAMES
from alignloop.methods.creator import INFORMATIVENESS
from alignloop.methods.pairing import PAIR_RULES
from alignloop.models.losses import LOSSES
from alignloop.models.reward_losses import DENOISING
from alignloop.paths import EVAL_SPLITS
from alignloop.pipeline.stages import STAGES
from alignloop.testbed.data import eval_distributions

REPO = Path(__file__).resolve().parents[1]


def _literal(model, field: str) -> tuple[str, ...]:
    return get_args(model.model_fields[field].annotation)


def test_every_stage_is_one_task_module_and_one_registry_entry():
    assert set(STAGE_NAMES) == set(STAGES) and len(STAGE_NAMES) == len(STAGES) == 10
    for stage in STAGES.values():  # what Stage.run_here calls
        assert callable(getattr(__import__(f"alignloop.tasks.{stage.name}", fromlist=["_"]), f"run_{stage.name}"))


def test_loss_names_match_the_registry_and_the_params_comment():
    assert set(_literal(OptimizeConfig, "loss")) == set(LOSSES)
    comment = re.search(r"(?m)^  loss: \w+ +# (.+)$", (REPO / "params.yaml").read_text()).group(1)
    assert set(comment.split(" | ")) == set(LOSSES)


def test_ranker_names_have_a_judge_name():
    assert set(_literal(RankConfig, "ranker")) == set(JUDGE_NAMES)


def test_method_names_match_their_registries():
    assert set(_literal(RewardConfig, "denoising")) == set(DENOISING)
    assert set(_literal(RankConfig, "pair_rule")) == set(PAIR_RULES)
    assert set(_literal(EvolveConfig, "informativeness")) == set(INFORMATIVENESS)


def test_testbed_evaluation_splits_are_the_layouts():
    from alignloop.config import TestbedConfig

    assert tuple(eval_distributions(TestbedConfig())) == EVAL_SPLITS


def test_report_sections_are_the_figures_a_full_config_draws():
    from alignloop.report.html import SECTIONS
    from alignloop.report.rows import report_plot_names

    everything = Config(iterations=2, evolve={"enabled": True}, optimize={"exploration": "copo"},
                        reward={"enabled": True})
    assert [key for key, *_ in SECTIONS] == report_plot_names(everything)
    assert report_plot_names(Config(iterations=0, sft={"enabled": False})) == ["scores", "win_rate"]


def test_each_loss_parameter_is_declared_once():
    """The optimize section extends LossParams and the losses read that class: each parameter's default and bound
    are written in exactly one place in the package."""
    from alignloop.config.losses import LossParams
    from alignloop.models import losses

    assert issubclass(OptimizeConfig, LossParams) and losses.LossParams is LossParams
    assert not set(OptimizeConfig.__annotations__) & set(LossParams.model_fields)  # nothing declared again
    names = [name for name in LossParams.model_fields if name != "loss"]
    assert len(names) == 7
    sources = "\n".join(path.read_text() for path in (REPO / "alignloop").rglob("*.py"))
    for name in names:
        assert len(re.findall(rf"(?m)^\s+{name}: ", sources)) == 1, name

