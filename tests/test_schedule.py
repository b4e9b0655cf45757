"""Scheduled growth of the pipeline (alignloop/pipeline/schedule.py): the iterations line of params.yaml and completed
work."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignloop.config import Config, load_config
from alignloop.paths import Layout
from alignloop.pipeline.cache import write_stamp
from alignloop.pipeline.schedule import completed_iterations, scheduled_iterations, set_iterations
from alignloop.pipeline.stages import STAGES

pytestmark = pytest.mark.timeout(60)  # completed_iterations loops while stamps hold: a bug there must not hang

PARAMS = """\
# params.yaml of a test project; iterations: 99 in this comment must stay as it is
seed: 0
iterations: 3   # online iterations after SFT
optimize:
  beta: 0.1  # KL strength
schedule:
  iterations_per_run: 1
#iterations: 42
"""


def test_set_iterations_rewrites_only_the_value(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    set_iterations(path, 12)
    text = path.read_text()
    assert text == PARAMS.replace("iterations: 3   # online", "iterations: 12   # online")
    before, after = PARAMS.splitlines(keepends=True), text.splitlines(keepends=True)
    assert len(before) == len(after)
    assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [2]
    assert after[2] == "iterations: 12   # online iterations after SFT\n"
    cfg = load_config(path)
    assert cfg.iterations == 12
    assert cfg.schedule.iterations_per_run == 1
    assert cfg.optimize.beta == 0.1


def test_set_iterations_twice_and_down(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    set_iterations(path, 12)
    set_iterations(path, 2)
    assert path.read_text() == PARAMS.replace("iterations: 3 ", "iterations: 2 ")
    assert load_config(path).iterations == 2


def test_set_iterations_leaves_a_nested_iterations_key_alone(tmp_path):
    path = tmp_path / "params.yaml"
    original = "schedule:\n  iterations_per_run: 2\nsample:\n  num_prompts: 10\niterations: 1\n"
    path.write_text(original)
    set_iterations(path, 5)
    assert path.read_text() == "schedule:\n  iterations_per_run: 2\nsample:\n  num_prompts: 10\niterations: 5\n"
    cfg = load_config(path)
    assert (cfg.iterations, cfg.schedule.iterations_per_run, cfg.sample.num_prompts) == (5, 2, 10)


def test_set_iterations_appends_when_absent(tmp_path):
    path = tmp_path / "params.yaml"
    original = "# no iterations: key here\nseed: 4\nschedule:\n  iterations_per_run: 3\n"
    path.write_text(original)
    set_iterations(path, 6)
    assert path.read_text() == original + "iterations: 6\n"
    cfg = load_config(path)
    assert (cfg.iterations, cfg.seed, cfg.schedule.iterations_per_run) == (6, 4, 3)


def test_set_iterations_appends_after_a_last_line_without_newline(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 4")
    set_iterations(path, 2)
    assert path.read_text() == "seed: 4\niterations: 2\n"
    assert load_config(path).iterations == 2


def test_set_iterations_on_an_empty_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    set_iterations(path, 4)
    assert path.read_text() == "iterations: 4\n"
    assert load_config(path) == Config(iterations=4)


def test_set_iterations_leaves_no_temporaries(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    set_iterations(path, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_set_iterations_on_the_repository_params_keeps_everything_else(tmp_path):
    repository = Path(__file__).resolve().parents[1] / "params.yaml"
    if not repository.is_file():
        pytest.skip("the repository has no params.yaml")
    original = repository.read_text()
    path = tmp_path / "params.yaml"
    path.write_text(original)
    set_iterations(path, 17)
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines()) if a != b]
    assert len(original.splitlines()) == len(path.read_text().splitlines())
    assert len(changed) == 1 and changed[0][1].startswith("iterations: 17")
    assert load_config(path) == load_config(repository).model_copy(update={"iterations": 17})


# --- completed / scheduled iterations -------------------------------------------------------------------------


def finish_benchmark(layout: Layout, iteration: int, cfg: Config | None = None) -> None:
    layout.iteration(iteration).mkdir(parents=True, exist_ok=True)
    layout.benchmark_outputs(iteration).write_text(f'{{"iteration": {iteration}}}\n')
    layout.metrics(iteration).write_text(f'{{"in_distribution/greedy_gold": 0.{iteration}}}\n')
    layout.alpaca_eval(iteration).mkdir(exist_ok=True)
    (layout.alpaca_eval(iteration) / "in_distribution.json").write_text("[]\n")
    write_stamp(STAGES["benchmark"], cfg or Config(), layout, iteration, f"any-key-{iteration}")


def test_completed_iterations_without_stamps(tmp_path):
    assert completed_iterations(Config(), Layout(tmp_path)) == -1


def test_completed_iterations_needs_stamps_not_just_files(tmp_path):
    layout = Layout(tmp_path)
    for iteration in (0, 1):
        layout.iteration(iteration).mkdir(parents=True)
        layout.benchmark_outputs(iteration).write_text("{}\n")
        layout.metrics(iteration).write_text("{}\n")
    assert completed_iterations(Config(), layout) == -1


def test_completed_iterations_counts_stamped_benchmarks(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    finish_benchmark(layout, 0)
    assert completed_iterations(cfg, layout) == 0
    finish_benchmark(layout, 1)
    assert completed_iterations(cfg, layout) == 1


def test_completed_iterations_is_contiguous_from_sft(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    for iteration in (0, 1):
        finish_benchmark(layout, iteration)
    layout.metrics(0).unlink()
    assert completed_iterations(cfg, layout) == -1


def test_completed_iterations_stops_at_a_gap(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    for iteration in (0, 2, 3):
        finish_benchmark(layout, iteration)
    assert completed_iterations(cfg, layout) == 0


def test_completed_iterations_ignores_changed_outputs(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    for iteration in (0, 1, 2):
        finish_benchmark(layout, iteration)
    layout.benchmark_outputs(2).write_text('{"iteration": 2, "edited": true}\n')
    assert completed_iterations(cfg, layout) == 1


def test_completed_iterations_can_exceed_params_iterations(tmp_path):
    layout = Layout(tmp_path)
    for iteration in range(4):
        finish_benchmark(layout, iteration)
    assert completed_iterations(Config(iterations=1), layout) == 3


@pytest.mark.parametrize(("finished", "expected"), [((), 2), ((0,), 2), ((0, 1), 3), ((0, 1, 2), 4), ((1, 2), 2)])
def test_scheduled_iterations(tmp_path, finished, expected):
    layout, cfg = Layout(tmp_path), Config(schedule={"iterations_per_run": 2})
    for iteration in finished:
        finish_benchmark(layout, iteration)
    assert scheduled_iterations(cfg, layout) == expected
    assert scheduled_iterations(Config(), layout) == expected - 1
