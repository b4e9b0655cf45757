"""benchmarks/seed_claims.py's arithmetic (no pipeline run): distinct-n by hand, paired differences over the seeds two
arms share, and the verdict's two-standard-error rule in both directions."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # benchmarks import `common` top-level

import seed_claims  # noqa: E402

from real_kit import needs_checkers  # noqa: E402


def test_distinct_n_counts_repeated_bigrams_once():
    # bigrams: (a b) (b a) (a b) | (a b) -> 2 distinct of 4
    assert seed_claims.distinct_n(["a b a b", "a b"]) == 0.5
    assert seed_claims.distinct_n(["one two three"], n=2) == 1.0
    assert math.isnan(seed_claims.distinct_n(["single"]))


def test_paired_differences_use_the_seeds_both_arms_have():
    arm = {0: {"m": 0.5}, 1: {"m": 0.7}, 2: {"m": 0.4}}
    control = {0: {"m": 0.3}, 1: {"m": 0.4}, 5: {"m": 0.9}}
    mean, sd, n = seed_claims.paired(arm, control, "m")
    assert n == 2 and mean == pytest.approx(0.25) and sd == pytest.approx(math.sqrt(2) * 0.05)
    assert math.isnan(seed_claims.paired(arm, control, "absent")[0])


@pytest.mark.parametrize("mean, sd, n, direction, expected", [
    (0.10, 0.05, 3, +1, "reproduced"),      # 0.10 > 2 · 0.05/√3 = 0.058
    (0.05, 0.05, 3, +1, "inconclusive"),    # 0.05 < 0.058
    (-0.10, 0.05, 3, +1, "not reproduced"),
    (-0.10, 0.05, 3, -1, "reproduced"),     # a claimed decrease
    (0.50, 0.01, 2, +1, "inconclusive"),    # two seeds are not enough
    (0.50, 0.01, 3, 0, "compared"),         # an arm with no claim in a direction
])
def test_verdict_is_two_standard_errors_in_the_claimed_direction(mean, sd, n, direction, expected):
    assert seed_claims.verdict(mean, sd, n, direction) == expected


def test_every_claim_names_a_known_arm_and_control():
    assert set(seed_claims.CLAIMS) <= set(seed_claims.ARMS)
    assert {control for _, _, control in seed_claims.CLAIMS.values()} <= set(seed_claims.ARMS)


def test_an_arm_starts_from_the_controls_finished_project_without_its_mlflow_store(tmp_path):
    control, arm = tmp_path / "dpo" / "seed-0", tmp_path / "copo" / "seed-0"
    for name in ("reports/summary.json", "artifacts/iter-1/pairs.jsonl", ".alignloop/stamps/prepare.json",
                 "mlflow.db", "run.log"):
        (control / name).parent.mkdir(parents=True, exist_ok=True)
        (control / name).write_text(name)
    seed_claims.start_from_control(control, arm)
    copied = sorted(p.relative_to(arm).as_posix() for p in arm.rglob("*") if p.is_file())
    assert copied == [".alignloop/stamps/prepare.json", "artifacts/iter-1/pairs.jsonl", "reports/summary.json"]

    (arm / "artifacts/iter-1/pairs.jsonl").write_text("the arm's own")
    seed_claims.start_from_control(control, arm)  # an arm's project, once made, is its own
    assert (arm / "artifacts/iter-1/pairs.jsonl").read_text() == "the arm's own"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    seed_claims.start_from_control(unfinished, tmp_path / "ipo" / "seed-0")
    assert not (tmp_path / "ipo").exists()


@needs_checkers
def test_every_arm_is_a_valid_config_within_the_budget():
    """Each arm's params (the preset, the budget, the arm's overrides) pass the config, so no arm fails late."""
    import yaml

    from alignloop.config import parse_config

    preset = yaml.safe_load(seed_claims.PRESET.read_text())
    for arm, overrides in seed_claims.ARMS.items():
        cfg = parse_config(seed_claims.seed_params(preset, 0, overrides=(*seed_claims.BUDGET, *overrides)))
        assert cfg.iterations == 2 and cfg.sample.num_prompts == 48, arm
    eva = parse_config(seed_claims.seed_params(preset, 0, overrides=seed_claims.ARMS["eva"]))
    assert eva.evolve.enabled and eva.evolve.evolver == "constraints"


def test_cfn_repeat_counts_pair_pseudo_counts_with_visits_of_the_same_constraint_types(tmp_path):
    from alignloop.io import write_jsonl
    from alignloop.paths import Layout

    layout = Layout(tmp_path)
    # iteration 1: constraint set A on two prompts (4 visits), B on one (2 visits); iteration 2: A again (2 more)
    prompts = {1: [("p1", ["a"]), ("p2", ["a"]), ("p3", ["b"])], 2: [("p4", ["a"]), ("p5", ["c"])]}
    pseudo = {1: {"p1": 3.0, "p3": 1.0}, 2: {"p4": 5.0, "p5": 1.5}}
    for iteration, rows in prompts.items():
        write_jsonl(layout.prompts(iteration), [{"prompt_id": pid, "instruction_id_list": ids} for pid, ids in rows])
        write_jsonl(layout.samples(iteration), [{"prompt_id": pid, "sample_index": k} for pid, _ in rows
                                                for k in range(2)])
        write_jsonl(layout.pairs(iteration), [{"pair_id": f"{pid}-0-1", "prompt_id": pid} for pid in pseudo[iteration]])
        layout.cfn(iteration).mkdir(parents=True)
        write_jsonl(layout.cfn(iteration) / "bonuses.jsonl", [{"pair_id": f"{pid}-0-1", "pseudo_count": n}
                                                              for pid, n in pseudo[iteration].items()])
    first, second = seed_claims.cfn_repeat_counts(tmp_path)
    assert (first["buffer_visits"], first["distinct_constraint_sets"], first["median_true_count"]) == (6, 2, 3.0)
    assert first["spearman"] == pytest.approx(1.0)  # A (4 visits) got the larger pseudo-count than B (2)
    # after iteration 2: A has 6 visits, C 2; pseudo-counts 5.0 vs 1.5 rank the same way
    assert (second["buffer_visits"], second["median_true_count"], second["spearman"]) == (10, 4.0, pytest.approx(1.0))


def test_reward_model_record_reads_the_ranker_and_the_learned_against_the_gold_path(tmp_path):
    from alignloop.io import write_json
    from alignloop.paths import Layout

    write_json(Layout(tmp_path).reward_stats, {"eval_accuracy": 0.7, "train_accuracy_true_labels": 0.8,
                                               "train_accuracy_given_labels": 0.65,
                                               "detection": {"precision": 0.5, "recall": 0.25, "flagged": 4}})
    # the learned reward rises every iteration while the verifier's accuracy peaks at 1: over-optimisation
    run = {"iterations": [{"metrics": {"in_distribution/sampled_reward": learned,
                                       "in_distribution/sampled_prompt_strict": sampled,
                                       "in_distribution/prompt_strict": greedy, "other": 9.0}}
                          for learned, sampled, greedy in [(-1.0, 0.25, 0.3), (0.5, 0.4, 0.45), (2.0, 0.2, 0.35)]]}
    record = seed_claims.reward_model_record(tmp_path, run)
    assert (record["eval_accuracy"], record["train_accuracy_true_labels"], record["train_accuracy_given_labels"],
            record["detection_precision"], record["detection_recall"]) == (0.7, 0.8, 0.65, 0.5, 0.25)
    assert [(r["iteration"], r["learned_reward"], r["gold_sampled"], r["gold_greedy"]) for r in record["trajectory"]] \
        == [(0, -1.0, 0.25, 0.3), (1, 0.5, 0.4, 0.45), (2, 2.0, 0.2, 0.35)]
    assert seed_claims.accuracy_by_iteration(run) == [0.3, 0.45, 0.35]


def test_reward_model_arms_are_also_compared_with_the_verifier_ranked_control():
    rm_arms = {arm for arm in seed_claims.ARMS if arm.startswith("rm_")}
    assert len(rm_arms) == 6
    assert {arm for arm, _, control in seed_claims.ALSO_COMPARED if control == "dpo"} >= rm_arms
    assert {(arm, control) for arm, _, control in seed_claims.ALSO_COMPARED} <= {
        (arm, control) for arm in seed_claims.ARMS for control in seed_claims.ARMS}


@needs_checkers
def test_sripo_is_judged_against_ipo_on_sums_its_own_loss_without_the_refinement_term():
    import yaml

    from alignloop.config import parse_config

    preset = yaml.safe_load(seed_claims.PRESET.read_text())
    control = parse_config(seed_claims.seed_params(preset, 0, overrides=seed_claims.ARMS["ipo_sum"])).optimize
    arm = parse_config(seed_claims.seed_params(preset, 0, overrides=seed_claims.ARMS["sripo"])).optimize
    assert seed_claims.CLAIMS["sripo"][2] == "ipo_sum"
    assert (control.loss, arm.loss) == ("sripo", "sripo")
    assert control.sr_lambda == 0 and arm.sr_lambda > 0
    assert control.model_dump(exclude={"sr_lambda"}) == arm.model_dump(exclude={"sr_lambda"})


def test_the_plot_draws_verdicts_curves_and_reward_model_paths(tmp_path):
    pytest.importorskip("matplotlib")
    verdicts = [{"arm": "rm_flip_20", "control": "rm_none_20", "metric": "in_distribution/prompt_strict",
                 "mean_diff": 0.05, "sd_diff": 0.02, "seeds": 3},
                {"arm": "copo", "control": "dpo", "metric": "in_distribution/prompt_strict", "mean_diff": 0.1,
                 "sd_diff": float("nan"), "seeds": 1}]  # one seed: no error bar, left out
    curves = {"dpo": {0: [0.3, 0.4], 1: [0.2, 0.3]}, "rm_flip_20": {0: [0.3, 0.2], 1: [0.2, 0.1]}}
    rankers = {"rm_flip_20": {s: {"trajectory": [{"learned_reward": -1.0}, {"learned_reward": 1.0}]} for s in (0, 1)}}
    seed_claims.plot(verdicts, curves, rankers, tmp_path / "plots" / "claims.png")
    assert (tmp_path / "plots" / "claims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
