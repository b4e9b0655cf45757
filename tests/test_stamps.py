"""Output stamps, scratch clean-up and run_stage (alignloop/pipeline/cache.py, alignloop/pipeline/stages.py)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from alignloop.config import Config
from alignloop.io import read_json, read_jsonl, write_jsonl
from alignloop.paths import Layout
from alignloop.pipeline.cache import (
    cache_key,
    code_version,
    digest,
    is_fresh,
    outputs_intact,
    outputs_manifest,
    read_stamp,
    remove_scratch,
    run_stage,
    stamp_path,
    write_stamp,
)
from alignloop.pipeline.stages import STAGES

from cache_helpers import rewrite, touch


@pytest.fixture(autouse=True)
def _fresh_code_version_cache():
    """code_version is memoised per Stage; tests that fake the package directory must not leak into others."""
    code_version.cache_clear()
    yield
    code_version.cache_clear()


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
    touch(layout.alpaca_eval(1) / "in_distribution.json", b"[]\n")
    with pytest.raises(RuntimeError, match="benchmark-1"):
        write_stamp(benchmark, cfg, layout, 1, "k")
    touch(layout.metrics(1), b"{}")
    assert set(write_stamp(benchmark, cfg, layout, 1, "k")) == {"artifacts/iter-1/benchmark_outputs.jsonl",
                                                                "artifacts/iter-1/alpaca_eval",
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
                     "response": response, "response_ids": [ord(c) for c in response],
                     "num_tokens": len(response) + 1, "finished": bool(response),
                     "seed": 1000 + index, "policy": "sft-test"}
                    for index, response in enumerate(responses)]
    # one prompt whose responses all tie: it yields no pair
    tied = {**data["train_prompts"][count], "iteration": 1}
    prompts.append(tied)
    samples += [{"prompt_id": tied["prompt_id"], "sample_index": index, "prompt": tied["prompt"],
                 "response": tied["answer"], "response_ids": [1, 2, 3], "num_tokens": 3, "finished": True, "seed": 7,
                 "policy": "sft-test"}
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
