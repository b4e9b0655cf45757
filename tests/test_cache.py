"""Digests, cache keys and code versions (alignloop/pipeline/cache.py), driven through the real stage registry."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from alignloop.config import Config
from alignloop.paths import Layout
from alignloop.pipeline.cache import (
    cache_key,
    code_version,
    digest,
)
from alignloop.pipeline.stages import STAGES

from cache_helpers import rewrite, touch


@pytest.fixture(autouse=True)
def _fresh_code_version_cache():
    """code_version is memoised per Stage; tests that fake the package directory must not leak into others."""
    code_version.cache_clear()
    yield
    code_version.cache_clear()


# --- digest ---------------------------------------------------------------------------------------------------


def test_digest_of_file_is_sha256_of_its_bytes(tmp_path):
    data = b"hello\x00world\n" * 1000
    path = touch(tmp_path / "a.bin", data)
    assert digest(path) == hashlib.sha256(data).hexdigest()


def test_digest_same_bytes_same_digest(tmp_path):
    a = touch(tmp_path / "a.txt", b"same content")
    b = touch(tmp_path / "sub" / "b.txt", b"same content")
    assert digest(a) == digest(b)
    assert digest(a) == digest(a)


def test_digest_one_byte_changed(tmp_path):
    path = touch(tmp_path / "a.txt", b"abcdef")
    before = digest(path)
    rewrite(path, b"abcdeg")
    after = digest(path)
    assert after != before
    assert after == hashlib.sha256(b"abcdeg").hexdigest()


def test_digest_of_directory_tracks_its_files(tmp_path):
    root = tmp_path / "model"
    touch(root / "config.json", b"{}")
    touch(root / "weights" / "part-0.bin", b"0123")
    first = digest(root)
    assert first is not None and len(first) == 64
    assert digest(root) == first

    rewrite(root / "weights" / "part-0.bin", b"0124")
    changed = digest(root)
    assert changed != first

    touch(root / "extra.txt", b"")
    added = digest(root)
    assert added not in (first, changed)

    (root / "extra.txt").unlink()
    assert digest(root) == changed


def test_digest_of_directory_depends_on_names_not_only_contents(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    touch(one / "a.txt", b"x")
    touch(two / "b.txt", b"x")
    assert digest(one) != digest(two)


def test_digest_of_directory_is_independent_of_its_location(tmp_path):
    one, two = tmp_path / "one", tmp_path / "elsewhere" / "two"
    for root in (one, two):
        touch(root / "a.txt", b"x")
        touch(root / "nested" / "b.txt", b"y")
    assert digest(one) == digest(two)


def test_digest_empty_directory_and_missing_path_are_none(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert digest(empty) is None
    (empty / "only_a_subdir").mkdir()
    assert digest(empty) is None
    assert digest(tmp_path / "does-not-exist") is None
    assert digest(tmp_path / "does-not-exist" / "deeper.txt") is None


def test_digest_ignores_scratch_entries(tmp_path):
    root = tmp_path / "policy"
    touch(root / "model.safetensors", b"weights")
    clean = digest(root)

    touch(root / ".policy.abc.tmp" / "model.safetensors", b"half written")  # scratch directory
    touch(root / ".x.old", b"previous")  # scratch file
    touch(root / "sub" / ".y.abc123.tmp", b"junk")  # scratch file deeper down: not an entry either
    assert digest(root / "sub") is None
    assert digest(root) == clean


def test_digest_scratch_rule_needs_leading_dot_and_suffix(tmp_path):
    root = tmp_path / "d"
    touch(root / "a", b"a")
    clean = digest(root)
    touch(root / "notes.tmp", b"a real file")  # no leading dot: part of the artifact
    assert digest(root) != clean
    (root / "notes.tmp").unlink()
    touch(root / ".hidden", b"a real file")  # leading dot, no scratch suffix: part of the artifact
    assert digest(root) != clean


def test_only_scratch_inside_directory_is_empty(tmp_path):
    root = tmp_path / "policy"
    touch(root / ".policy.abc.tmp" / "weights.bin", b"w")
    assert digest(root) is None


# --- cache_key ------------------------------------------------------------------------------------------------


def make_rank_deps(layout: Layout, iteration: int, prompts: bytes = b'{"prompt_id": "p"}\n',
                   samples: bytes = b'{"prompt_id": "p", "sample_index": 0}\n') -> None:
    touch(layout.prompts(iteration), prompts)
    touch(layout.samples(iteration), samples)


def make_optimize_deps(layout: Layout, iteration: int, pairs: bytes = b'{"pair_id": "a"}\n',
                       weights: bytes = b"weights") -> None:
    touch(layout.pairs(iteration), pairs)
    touch(layout.policy(iteration - 1) / "model.safetensors", weights)


def test_cache_key_is_stable(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    make_rank_deps(layout, 1)
    key = cache_key(STAGES["rank"], cfg, layout, 1)
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key(STAGES["rank"], cfg, layout, 1) == key
    assert cache_key(STAGES["rank"], Config(), Layout(tmp_path), 1) == key


def test_cache_key_does_not_depend_on_where_the_project_lives(tmp_path):
    keys = []
    for name in ("a", "b"):
        layout = Layout(tmp_path / name)
        make_rank_deps(layout, 1)
        keys.append(cache_key(STAGES["rank"], Config(), layout, 1))
    assert keys[0] == keys[1]


@pytest.mark.parametrize("which", ["prompts", "samples"])
def test_cache_key_changes_with_dep_content(tmp_path, which):
    layout, cfg = Layout(tmp_path), Config()
    make_rank_deps(layout, 1)
    before = cache_key(STAGES["rank"], cfg, layout, 1)
    path = layout.prompts(1) if which == "prompts" else layout.samples(1)
    rewrite(path, path.read_bytes().replace(b'"p"', b'"q"'))
    assert cache_key(STAGES["rank"], cfg, layout, 1) != before


def test_cache_key_changes_with_directory_dep_content(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    make_optimize_deps(layout, 1)
    before = cache_key(STAGES["optimize"], cfg, layout, 1)
    rewrite(layout.policy(0) / "model.safetensors", b"weightz")
    changed = cache_key(STAGES["optimize"], cfg, layout, 1)
    assert changed != before
    touch(layout.policy(0) / "tokenizer.json", b"{}")
    assert cache_key(STAGES["optimize"], cfg, layout, 1) not in (before, changed)


def test_cache_key_ignores_scratch_next_to_and_inside_deps(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    make_optimize_deps(layout, 1)
    before = cache_key(STAGES["optimize"], cfg, layout, 1)
    touch(layout.policy(0) / ".model.safetensors.old", b"stale")
    touch(layout.sft / ".model.abc.tmp" / "model.safetensors", b"half")
    assert cache_key(STAGES["optimize"], cfg, layout, 1) == before


@pytest.mark.parametrize("changed", [
    {"optimize": {"beta": 0.2}},
    {"optimize": {"nll_weight": 0.0}},
    {"optimize": {"learning_rate": 1e-4}},
    {"seed": 1},
], ids=["optimize.beta", "optimize.nll_weight", "optimize.learning_rate", "seed"])
def test_optimize_key_changes_with_its_params(tmp_path, changed):
    layout = Layout(tmp_path)
    make_optimize_deps(layout, 1)
    assert cache_key(STAGES["optimize"], Config(**changed), layout, 1) != cache_key(STAGES["optimize"], Config(),
                                                                                    layout, 1)


@pytest.mark.parametrize("changed", [
    {"sample": {"temperature": 0.5}},
    {"iterations": 7},
    {"benchmark": {"num_samples": 2}},
    {"pipeline": {"retries": {"optimize": 3}}},
    {"schedule": {"iterations_per_run": 4}},
    {"rank": {"ranker": "gold"}},
], ids=["sample.temperature", "iterations", "benchmark.num_samples", "pipeline.retries",
        "schedule.iterations_per_run", "rank-default"])
def test_optimize_key_ignores_params_outside_its_slice(tmp_path, changed):
    layout = Layout(tmp_path)
    make_optimize_deps(layout, 1)
    assert cache_key(STAGES["optimize"], Config(**changed), layout, 1) == cache_key(STAGES["optimize"], Config(),
                                                                                    layout, 1)


@pytest.mark.parametrize("changed", [{"seed": 5}, {"iterations": 9}, {"optimize": {"beta": 0.3}},
                                     {"sample": {"num_samples": 8}}])
def test_rank_key_only_reads_the_rank_section(tmp_path, changed):
    layout = Layout(tmp_path)
    make_rank_deps(layout, 1)
    assert cache_key(STAGES["rank"], Config(**changed), layout, 1) == cache_key(STAGES["rank"], Config(), layout, 1)


def test_reference_sft_adds_the_sft_model_as_a_dep_from_iteration_2(tmp_path):
    layout = Layout(tmp_path)
    cfg = Config(optimize={"reference": "sft"})
    make_optimize_deps(layout, 2)
    with pytest.raises(FileNotFoundError) as excinfo:  # the SFT model is an input of iteration 2 now
        cache_key(STAGES["optimize"], cfg, layout, 2)
    assert str(layout.policy(0)) in str(excinfo.value)
    touch(layout.policy(0) / "model.safetensors", b"sft")
    before = cache_key(STAGES["optimize"], cfg, layout, 2)
    rewrite(layout.policy(0) / "model.safetensors", b"sfu")
    assert cache_key(STAGES["optimize"], cfg, layout, 2) != before
    # with the previous policy as reference the SFT model is not an input of iteration 2
    previous = cache_key(STAGES["optimize"], Config(), layout, 2)
    rewrite(layout.policy(0) / "model.safetensors", b"sfv")
    assert cache_key(STAGES["optimize"], Config(), layout, 2) == previous


@pytest.mark.parametrize("name", ["rank", "optimize"])
def test_cache_key_differs_between_iterations(tmp_path, name):
    layout, cfg = Layout(tmp_path), Config()
    for iteration in (1, 2):
        if name == "rank":
            make_rank_deps(layout, iteration)
        else:
            make_optimize_deps(layout, iteration)
    assert cache_key(STAGES[name], cfg, layout, 1) != cache_key(STAGES[name], cfg, layout, 2)


def test_iteration_is_part_of_the_key_even_with_the_same_input_paths(tmp_path):
    """A stage whose inputs do not depend on the iteration still gets one key per iteration; a global stage not."""
    layout, cfg = Layout(tmp_path), Config()
    touch(layout.train_prompts, b'{"prompt_id": "p"}\n')
    per_iteration = dataclasses.replace(STAGES["rank"], deps=lambda layout, cfg, i: [layout.train_prompts])
    assert cache_key(per_iteration, cfg, layout, 1) != cache_key(per_iteration, cfg, layout, 2)
    global_stage = dataclasses.replace(per_iteration, per_iteration=False)
    assert cache_key(global_stage, cfg, layout, 0) == cache_key(global_stage, cfg, layout, 5)


def test_cache_key_differs_between_stages_with_the_same_inputs(tmp_path):
    layout = Layout(tmp_path)
    make_rank_deps(layout, 1)
    sibling = dataclasses.replace(STAGES["rank"], name="sample")  # same inputs and params, another stage
    assert cache_key(sibling, Config(), layout, 1) != cache_key(STAGES["rank"], Config(), layout, 1)


@pytest.mark.parametrize("missing", ["prompts", "samples"])
def test_cache_key_names_the_missing_dep(tmp_path, missing):
    layout = Layout(tmp_path)
    make_rank_deps(layout, 1)
    path = layout.prompts(1) if missing == "prompts" else layout.samples(1)
    path.unlink()
    with pytest.raises(FileNotFoundError) as excinfo:
        cache_key(STAGES["rank"], Config(), layout, 1)
    assert str(path) in str(excinfo.value)
    assert "rank-1" in str(excinfo.value)


def test_cache_key_treats_an_empty_model_directory_as_missing(tmp_path):
    layout = Layout(tmp_path)
    touch(layout.pairs(1), b"{}\n")
    layout.policy(0).mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as excinfo:
        cache_key(STAGES["optimize"], Config(), layout, 1)
    assert str(layout.policy(0)) in str(excinfo.value)


def test_rank_key_reads_the_seed_only_for_a_random_pair_rule(tmp_path):
    layout = Layout(tmp_path)
    make_rank_deps(layout, 1)
    random_rule = {"rank": {"pair_rule": "best_vs_random"}}
    assert (cache_key(STAGES["rank"], Config(seed=5, **random_rule), layout, 1)
            != cache_key(STAGES["rank"], Config(**random_rule), layout, 1))
