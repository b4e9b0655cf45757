"""Cache keys, output stamps and scratch clean-up (alignloop/cache.py), driven through the real stage registry."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from alignloop import stages
from alignloop.cache import (cache_key, code_version, digest, is_fresh, outputs_intact, outputs_manifest,
                             read_stamp, remove_scratch, stamp_path, write_stamp)
from alignloop.config import Config
from alignloop.io import read_json, read_jsonl, write_jsonl
from alignloop.paths import Layout
from alignloop.stages import PACKAGE_DIR, STAGES, run_stage


@pytest.fixture(autouse=True)
def _fresh_code_version_cache():
    """code_version is memoised per Stage; tests that fake the package directory must not leak into others."""
    code_version.cache_clear()
    yield
    code_version.cache_clear()


def rewrite(path: Path, data: bytes) -> None:
    """Overwrite a file in place, making sure its mtime moves (as it does between real edits) even on file systems
    with coarse timestamps: the digest memo is keyed on (inode, size, mtime)."""
    before = path.stat().st_mtime_ns if path.exists() else None
    path.write_bytes(data)
    if before is not None and path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def touch(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rewrite(path, data.encode() if isinstance(data, str) else data)
    return path


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
    sibling = dataclasses.replace(STAGES["rank"], name="rank2")
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


# --- code version ---------------------------------------------------------------------------------------------


def test_key_changes_when_the_stage_code_list_changes(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    make_rank_deps(layout, 1)
    rank = STAGES["rank"]
    wider = dataclasses.replace(rank, code=(*rank.code, "tasks/sample.py"))
    assert code_version(wider) != code_version(rank)
    assert cache_key(wider, cfg, layout, 1) != cache_key(rank, cfg, layout, 1)


def test_code_version_hashes_module_contents(tmp_path, monkeypatch):
    """Point the package directory at a fake package: editing a helper module changes the version."""
    package = tmp_path / "pkg"
    for module in ("io.py", "paths.py", "tasks/fake.py", "models/helper.py"):
        touch(package / module, f"# {module}\n")
    monkeypatch.setattr(stages, "PACKAGE_DIR", package)
    stage = dataclasses.replace(STAGES["rank"], name="fake", code=("tasks/fake.py", "models/helper.py"))
    assert stage.code_paths() == [package / "io.py", package / "paths.py", package / "tasks/fake.py",
                                  package / "models/helper.py"]
    first = code_version(stage)
    assert code_version(stage) == first

    rewrite(package / "models" / "helper.py", b"# helper, edited\n")
    assert code_version(stage) == first  # memoised for the life of the process ...
    code_version.cache_clear()
    edited = code_version(stage)
    assert edited != first  # ... and a helper module's content is part of it

    rewrite(package / "paths.py", b"# paths, edited\n")
    code_version.cache_clear()
    assert code_version(stage) not in (first, edited)  # the common modules too


def test_code_version_fails_loudly_on_a_missing_module(tmp_path, monkeypatch):
    monkeypatch.setattr(stages, "PACKAGE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError):
        code_version(STAGES["rank"])


def test_optimize_code_paths_include_its_helpers():
    paths = STAGES["optimize"].code_paths()
    for module in ("models/losses.py", "models/logprobs.py", "models/policy.py", "models/generation.py",
                   "tasks/optimize.py", "io.py", "paths.py"):
        assert PACKAGE_DIR / module in paths


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_code_path_exists(name):
    paths = STAGES[name].code_paths()
    assert paths and all(path.is_file() for path in paths), [p for p in paths if not p.is_file()]
    assert len(code_version(STAGES[name])) == 64


def _alignloop_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alignloop."):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names if alias.name.startswith("alignloop."))
    return modules


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_paths_cover_every_computing_module_the_task_imports(name):
    """Every module of alignloop.tasks/models/testbed reachable from the stage's task is hashed in its code
    version (config.py enters through the params slice; progress.py only draws progress bars)."""
    todo, seen = [f"alignloop.tasks.{name}"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
        if path.is_file():
            todo.extend(_alignloop_imports(path))
    needed = {PACKAGE_DIR.joinpath(*m.split(".")[1:]).with_suffix(".py") for m in seen
              if m.split(".")[1] in ("tasks", "models", "testbed")}
    assert needed - set(STAGES[name].code_paths()) == set()


# --- stamps ---------------------------------------------------------------------------------------------------


def make_rank_outputs(layout: Layout, iteration: int = 1) -> None:
    touch(layout.scores(iteration), b'{"score": 1.0}\n')
    touch(layout.pairs(iteration), b'{"pair_id": "p-0-1"}\n')
    touch(layout.rank_stats(iteration), b'{"pairs": 1}\n')


def test_stamp_round_trip(tmp_path):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    assert not outputs_intact(rank, cfg, layout, 1)  # no stamp yet
    assert not is_fresh(rank, cfg, layout, 1, "key-a")
    manifest = write_stamp(rank, cfg, layout, 1, "key-a")
    assert manifest == {
        "artifacts/iter-1/scores.jsonl": hashlib.sha256(b'{"score": 1.0}\n').hexdigest(),
        "artifacts/iter-1/pairs.jsonl": hashlib.sha256(b'{"pair_id": "p-0-1"}\n').hexdigest(),
        "artifacts/iter-1/rank_stats.json": hashlib.sha256(b'{"pairs": 1}\n').hexdigest(),
    }
    assert stamp_path(rank, layout, 1) == tmp_path / ".alignloop" / "stamps" / "rank-1.json"
    assert read_json(stamp_path(rank, layout, 1)) == {"cache_key": "key-a", "outputs": manifest}
    assert outputs_intact(rank, cfg, layout, 1)
    assert is_fresh(rank, cfg, layout, 1, "key-a")
    assert not is_fresh(rank, cfg, layout, 1, "key-b")
    assert not is_fresh(rank, cfg, layout, 2, "key-a")  # the stamp is per iteration


def test_global_stage_stamp_has_no_iteration(tmp_path):
    layout, cfg, sft = Layout(tmp_path), Config(), STAGES["sft"]
    touch(layout.policy(0) / "model.safetensors", b"w")
    touch(layout.train_log(0), b"{}")
    write_stamp(sft, cfg, layout, 0, "k")
    assert stamp_path(sft, layout, 0).name == "sft.json"
    assert is_fresh(sft, cfg, layout, 0, "k")


@pytest.mark.parametrize("output", ["scores", "pairs", "rank_stats"])
def test_stamp_stale_after_an_output_is_deleted(tmp_path, output):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    write_stamp(rank, cfg, layout, 1, "k")
    getattr(layout, output)(1).unlink()
    assert outputs_manifest(rank, cfg, layout, 1) is None
    assert not outputs_intact(rank, cfg, layout, 1)
    assert not is_fresh(rank, cfg, layout, 1, "k")


@pytest.mark.parametrize("output", ["scores", "pairs", "rank_stats"])
def test_stamp_stale_after_an_output_changes(tmp_path, output):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    write_stamp(rank, cfg, layout, 1, "k")
    path = getattr(layout, output)(1)
    data = bytearray(path.read_bytes())
    data[2] ^= 1  # one bit of one byte, same size
    rewrite(path, bytes(data))
    assert not outputs_intact(rank, cfg, layout, 1)
    assert not is_fresh(rank, cfg, layout, 1, "k")
    rewrite(path, bytes(data[:2]) + bytes([data[2] ^ 1]) + bytes(data[3:]))  # restored: intact again
    assert is_fresh(rank, cfg, layout, 1, "k")


def test_stamp_of_a_directory_output(tmp_path):
    layout, cfg, optimize = Layout(tmp_path), Config(), STAGES["optimize"]
    touch(layout.policy(1) / "model.safetensors", b"w1")
    touch(layout.policy(1) / "config.json", b"{}")
    touch(layout.train_log(1), b'{"history": []}')
    write_stamp(optimize, cfg, layout, 1, "k")
    assert is_fresh(optimize, cfg, layout, 1, "k")
    touch(layout.iteration(1) / ".policy.abc.tmp" / "model.safetensors", b"half")  # scratch: ignored
    assert is_fresh(optimize, cfg, layout, 1, "k")
    touch(layout.policy(1) / "added.bin", b"?")
    assert not is_fresh(optimize, cfg, layout, 1, "k")
    (layout.policy(1) / "added.bin").unlink()
    assert is_fresh(optimize, cfg, layout, 1, "k")
    rewrite(layout.policy(1) / "model.safetensors", b"w2")
    assert not is_fresh(optimize, cfg, layout, 1, "k")


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]", '"a string"'])
def test_corrupt_stamp_is_not_fresh(tmp_path, content):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    write_stamp(rank, cfg, layout, 1, "k")
    stamp_path(rank, layout, 1).write_text(content)
    assert read_stamp(rank, layout, 1) == {}
    assert not outputs_intact(rank, cfg, layout, 1)
    assert not is_fresh(rank, cfg, layout, 1, "k")


def test_stamp_with_the_key_but_other_outputs_is_not_fresh(tmp_path):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    manifest = write_stamp(rank, cfg, layout, 1, "k")
    stamp_path(rank, layout, 1).write_text(json.dumps({"cache_key": "k", "outputs": {
        **manifest, "artifacts/iter-1/pairs.jsonl": "0" * 64}}))
    assert not is_fresh(rank, cfg, layout, 1, "k")
    stamp_path(rank, layout, 1).write_text(json.dumps({"cache_key": "k"}))
    assert not is_fresh(rank, cfg, layout, 1, "k")


@pytest.mark.parametrize("output", ["scores", "pairs", "rank_stats"])
def test_write_stamp_refuses_missing_outputs(tmp_path, output):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    getattr(layout, output)(1).unlink()
    with pytest.raises(RuntimeError, match="rank-1"):
        write_stamp(rank, cfg, layout, 1, "k")
    assert not stamp_path(rank, layout, 1).exists()


def test_write_stamp_refuses_an_empty_model_directory(tmp_path):
    layout, cfg, optimize = Layout(tmp_path), Config(), STAGES["optimize"]
    layout.policy(1).mkdir(parents=True)
    touch(layout.train_log(1), b"{}")
    with pytest.raises(RuntimeError, match="optimize-1"):
        write_stamp(optimize, cfg, layout, 1, "k")


def test_write_stamp_refuses_missing_metrics(tmp_path):
    layout, cfg, benchmark = Layout(tmp_path), Config(), STAGES["benchmark"]
    touch(layout.benchmark_outputs(1), b"{}\n")
    with pytest.raises(RuntimeError, match="benchmark-1"):
        write_stamp(benchmark, cfg, layout, 1, "k")
    touch(layout.metrics(1), b"{}")
    assert set(write_stamp(benchmark, cfg, layout, 1, "k")) == {"artifacts/iter-1/benchmark_outputs.jsonl",
                                                                "artifacts/iter-1/metrics.json"}


def test_stale_stamp_replaced_by_a_new_one(tmp_path):
    layout, cfg, rank = Layout(tmp_path), Config(), STAGES["rank"]
    make_rank_outputs(layout)
    write_stamp(rank, cfg, layout, 1, "old")
    rewrite(layout.pairs(1), b'{"pair_id": "new"}\n')
    assert not outputs_intact(rank, cfg, layout, 1)
    write_stamp(rank, cfg, layout, 1, "new")
    assert is_fresh(rank, cfg, layout, 1, "new")
    assert not is_fresh(rank, cfg, layout, 1, "old")


# --- remove_scratch -------------------------------------------------------------------------------------------


def test_remove_scratch_removes_only_temporaries_of_the_stage_outputs(tmp_path):
    layout, cfg = Layout(tmp_path), Config()
    iteration_dir = layout.iteration(1)
    touch(iteration_dir / ".policy.xyz.tmp" / "policy" / "model.safetensors", b"half")
    touch(iteration_dir / ".policy.old" / "model.safetensors", b"previous")
    touch(iteration_dir / ".train_log.json.abc.tmp", b"half")  # scratch file of the other output
    touch(layout.policy(1) / "model.safetensors", b"current")
    touch(iteration_dir / "pairs.jsonl", b"{}\n")
    touch(iteration_dir / ".pairs.jsonl.q1.tmp", b"not optimize's output")  # rank's scratch: left alone
    touch(iteration_dir / ".policy.notes", b"not scratch")  # dot file of the output's name, no scratch suffix

    remove_scratch(STAGES["optimize"], cfg, layout, 1)

    assert not (iteration_dir / ".policy.xyz.tmp").exists()
    assert not (iteration_dir / ".policy.old").exists()
    assert not (iteration_dir / ".train_log.json.abc.tmp").exists()
    assert (layout.policy(1) / "model.safetensors").read_bytes() == b"current"
    assert (iteration_dir / "pairs.jsonl").read_bytes() == b"{}\n"
    assert (iteration_dir / ".pairs.jsonl.q1.tmp").exists()
    assert (iteration_dir / ".policy.notes").exists()


def test_remove_scratch_without_an_output_directory_is_a_no_op(tmp_path):
    remove_scratch(STAGES["optimize"], Config(), Layout(tmp_path), 1)
    assert list(tmp_path.iterdir()) == []


# --- run_stage ------------------------------------------------------------------------------------------------


def write_rank_inputs(layout: Layout, data: dict[str, list[dict]], count: int = 6) -> list[dict]:
    prompts = [{**row, "iteration": 1} for row in data["train_prompts"][:count]]
    samples = []
    for row in prompts:
        responses = [row["answer"], "zzz wrong", row["answer"] + " ✓", ""]
        samples += [{"prompt_id": row["prompt_id"], "sample_index": index, "prompt": row["prompt"],
                     "response": response, "num_tokens": len(response) + 1, "finished": bool(response),
                     "seed": 1000 + index, "policy": "sft-test"}
                    for index, response in enumerate(responses)]
    # one prompt whose responses all tie: it yields no pair
    tied = {**data["train_prompts"][count], "iteration": 1}
    prompts.append(tied)
    samples += [{"prompt_id": tied["prompt_id"], "sample_index": index, "prompt": tied["prompt"],
                 "response": tied["answer"], "num_tokens": 3, "finished": True, "seed": 7, "policy": "sft-test"}
                for index in range(4)]
    write_jsonl(layout.prompts(1), prompts)
    write_jsonl(layout.samples(1), reversed(samples))  # rank sorts by sample_index itself
    return prompts


def test_run_stage_rank_end_to_end(tmp_path, small_testbed_data):
    layout, cfg = Layout(tmp_path), Config()
    prompts = write_rank_inputs(layout, small_testbed_data)
    scratch = touch(layout.iteration(1) / ".pairs.jsonl.dead.tmp", b"left by a killed run")
    key = cache_key(STAGES["rank"], cfg, layout, 1)

    manifest = run_stage("rank", cfg, layout, 1)

    assert set(manifest) == {"artifacts/iter-1/scores.jsonl", "artifacts/iter-1/pairs.jsonl",
                             "artifacts/iter-1/rank_stats.json"}
    for relative, value in manifest.items():
        assert value == hashlib.sha256((tmp_path / relative).read_bytes()).hexdigest()
    assert not scratch.exists()
    assert stamp_path(STAGES["rank"], layout, 1).is_file()
    assert read_stamp(STAGES["rank"], layout, 1) == {"cache_key": key, "outputs": manifest}
    assert is_fresh(STAGES["rank"], cfg, layout, 1, cache_key(STAGES["rank"], cfg, layout, 1))

    pairs = read_jsonl(layout.pairs(1))
    assert len(pairs) == len(prompts) - 1  # the all-tied prompt is dropped
    assert [pair["prompt_id"] for pair in pairs] == [row["prompt_id"] for row in prompts[:-1]]
    for pair, row in zip(pairs, prompts):
        assert pair["chosen_score"] > pair["rejected_score"]
        assert pair["chosen"] in (row["answer"], row["answer"] + " ✓")
        assert pair["rejected"] in ("zzz wrong", "")
    assert len(read_jsonl(layout.scores(1))) == 4 * len(prompts)
    stats = read_json(layout.rank_stats(1))
    assert (stats["prompts"], stats["pairs"], stats["dropped_all_tied"]) == (len(prompts), len(prompts) - 1, 1)


def test_run_stage_stamps_the_given_key_and_detects_input_changes(tmp_path, small_testbed_data):
    layout, cfg = Layout(tmp_path), Config()
    write_rank_inputs(layout, small_testbed_data)
    run_stage("rank", cfg, layout, 1, key="explicit-key")
    assert is_fresh(STAGES["rank"], cfg, layout, 1, "explicit-key")
    real = cache_key(STAGES["rank"], cfg, layout, 1)
    assert not is_fresh(STAGES["rank"], cfg, layout, 1, real)

    run_stage("rank", cfg, layout, 1)
    assert is_fresh(STAGES["rank"], cfg, layout, 1, real)
    samples = read_jsonl(layout.samples(1))
    samples[0]["response"] = "changed"
    write_jsonl(layout.samples(1), samples)
    assert not is_fresh(STAGES["rank"], cfg, layout, 1, cache_key(STAGES["rank"], cfg, layout, 1))


def test_run_stage_missing_input_writes_nothing(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError) as excinfo:
        run_stage("rank", Config(), layout, 1)
    assert str(layout.prompts(1)) in str(excinfo.value)
    assert not layout.stamps.exists()
    assert not layout.pairs(1).exists()


@pytest.mark.parametrize(("iteration", "message"), [(0, "iteration 0 is SFT"), (4, "must be in 0..3")])
def test_run_stage_rejects_iterations_outside_the_plan(tmp_path, iteration, message):
    with pytest.raises(ValueError, match=message):
        run_stage("rank", Config(), Layout(tmp_path), iteration)
    assert list(tmp_path.iterdir()) == []


def test_file_digest_memo_is_per_file_identity(tmp_path):
    """Two files with equal stat data but different paths never share a memo entry."""
    a = touch(tmp_path / "a", b"1")
    b = touch(tmp_path / "b", b"2")
    os.utime(b, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns))
    assert digest(a) == hashlib.sha256(b"1").hexdigest()
    assert digest(b) == hashlib.sha256(b"2").hexdigest()
