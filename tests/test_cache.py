"""Digests, cache keys and code versions (alignloop/cache.py), driven through the real stage registry."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
from pathlib import Path

import pytest

from alignloop import code_graph
from alignloop.cache import (
    cache_key,
    code_version,
    digest,
)
from alignloop.code_graph import PACKAGE_DIR
from alignloop.config import Config
from alignloop.paths import Layout
from alignloop.stages import STAGES

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


# --- code version ---------------------------------------------------------------------------------------------


def _fake_package(root: Path) -> None:
    files = {
        "tasks/fake.py": "from alignloop.models.helper import f\nfrom alignloop.config import Config\n"
                         "from alignloop import progress\n\n\ndef run():\n    from alignloop.paths import Layout\n",
        "models/helper.py": "import alignloop.io\n",
        "io.py": "# io\n", "paths.py": "# paths\n", "config.py": "# config\n", "progress.py": "# bars\n",
        "unrelated.py": "# not imported\n",
    }
    for module, text in files.items():
        touch(root / module, text)


def test_code_files_follow_the_task_imports(tmp_path, monkeypatch):
    """A stage's code is what its task imports, transitively and inside functions too; config and progress bars
    are not code versions (the params slice and nothing)."""
    _fake_package(tmp_path)
    monkeypatch.setattr(code_graph, "PACKAGE_DIR", tmp_path)
    code_graph.code_files.cache_clear()
    try:
        assert code_graph.code_files("alignloop.tasks.fake") == tuple(
            tmp_path / module for module in ("io.py", "models/helper.py", "paths.py", "tasks/fake.py"))
        with pytest.raises(ValueError, match="alignloop.tasks.missing"):
            code_graph.code_files("alignloop.tasks.missing")
    finally:
        code_graph.code_files.cache_clear()


def test_code_version_hashes_module_contents(tmp_path, monkeypatch):
    """Editing a module the task reaches changes the version; editing one it does not reach leaves it."""
    _fake_package(tmp_path)
    monkeypatch.setattr(code_graph, "PACKAGE_DIR", tmp_path)
    code_graph.code_files.cache_clear()
    code_version.cache_clear()
    stage = dataclasses.replace(STAGES["rank"], name="fake")
    try:
        first = code_version(stage)
        rewrite(tmp_path / "models" / "helper.py", b"import alignloop.io\n# edited\n")
        assert code_version(stage) == first  # memoised for the life of the process ...
        code_version.cache_clear()
        edited = code_version(stage)
        assert edited != first  # ... and a helper module's content is part of it
        rewrite(tmp_path / "unrelated.py", b"# edited\n")
        rewrite(tmp_path / "config.py", b"# edited\n")
        code_version.cache_clear()
        assert code_version(stage) == edited
    finally:
        code_graph.code_files.cache_clear()
        code_version.cache_clear()


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


# Root modules that cannot change a stage's results: progress bars, and a memo of sha256 digests.
NOT_COMPUTING = ("progress", "digests")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_paths_cover_every_computing_module_the_task_imports(name):
    """Every module of alignloop reachable from the stage's task is hashed in its code version: tasks, models,
    testbed, methods and root modules such as io.py (config*.py enter through the params slice; progress.py only draws
    progress bars)."""
    todo, seen = [f"alignloop.tasks.{name}"], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module.split(".")[1].startswith("config"):  # params validation, not computation (the slice is hashed)
            continue
        path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
        if path.is_file():
            todo.extend(_alignloop_imports(path))
    def computing(module: str) -> bool:
        top = module.split(".")[1]
        if top in ("tasks", "models", "testbed", "methods"):
            return True
        return module.count(".") == 1 and top not in NOT_COMPUTING and not top.startswith("config")

    needed = {PACKAGE_DIR.joinpath(*m.split(".")[1:]).with_suffix(".py") for m in seen if computing(m)}
    assert needed - set(STAGES[name].code_paths()) == set()


def test_rank_key_reads_the_seed_only_for_a_random_pair_rule(tmp_path):
    layout = Layout(tmp_path)
    make_rank_deps(layout, 1)
    random_rule = {"rank": {"pair_rule": "best_vs_random"}}
    assert (cache_key(STAGES["rank"], Config(seed=5, **random_rule), layout, 1)
            != cache_key(STAGES["rank"], Config(**random_rule), layout, 1))
