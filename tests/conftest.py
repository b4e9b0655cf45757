"""Shared fixtures: a small, fixed testbed data set and the reloaded character tokenizer (both built once)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from alignloop.config import TestbedConfig
from alignloop.testbed.data import build_testbed_data
from alignloop.testbed.tokenizer import build_tokenizer

SMALL_TESTBED = TestbedConfig(sft_examples=200, prompt_pool_size=300, eval_size=50)


@pytest.fixture(scope="session")
def small_testbed_config() -> TestbedConfig:
    return SMALL_TESTBED


@pytest.fixture(scope="session")
def small_testbed_data() -> dict[str, list[dict]]:
    """build_testbed_data(TestbedConfig(sft_examples=200, prompt_pool_size=300, eval_size=50), seed=0)."""
    return build_testbed_data(SMALL_TESTBED, seed=0)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(96).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The testbed tokenizer as every stage sees it: saved, then reloaded through AutoTokenizer."""
    return AutoTokenizer.from_pretrained(tokenizer_dir)
