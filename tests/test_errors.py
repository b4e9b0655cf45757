"""Which errors are a person's to fix (one `error:` line) and which are bugs (`unexpected error`, traceback in the
log): decided by type, `alignloop.errors` (issue 26, item 5)."""

from __future__ import annotations

import errno

import pytest

from alignloop.config import ConfigError
from alignloop.errors import InputError, MissingInputError, NonFiniteError, StageError, UserError, is_user_error
from alignloop.io import DamagedFileError
from alignloop.models.generation import PromptTooLongError
from alignloop.models.logprobs import SequenceTooLongError
from alignloop.models.policy import ModelLoadError
from alignloop.models.training import NonFiniteWeightsError
from alignloop.pipeline.launch import LaunchedStageError, LaunchedStageUserError
from alignloop.pipeline.run_lock import RunLockedError
from alignloop.sources.prompts import DataError
from alignloop.tasks.optimize import NonFiniteLossError


@pytest.mark.parametrize("exc", [
    ConfigError("optimize.beta: must be > 0, got 0"), DataError("data.prompts.path: no such file x"),
    RunLockedError("another run holds the lock"), InputError("the training prompt pool is empty"),
    MissingInputError("data/sft.jsonl: missing"), NonFiniteLossError("loss is nan"), NonFiniteWeightsError("nan"),
    ModelLoadError("no model here"), DamagedFileError("x.json: line 3"), PromptTooLongError("too long"),
    SequenceTooLongError("too long"), LaunchedStageUserError("diverged"),
    OSError(errno.ENOSPC, "No space left on device"), PermissionError(errno.EACCES, "Permission denied"),
    NotADirectoryError(errno.ENOTDIR, "Not a directory"),
], ids=lambda exc: type(exc).__name__)
def test_what_a_person_can_fix_is_a_user_error(exc: BaseException) -> None:
    assert is_user_error(exc)


@pytest.mark.parametrize("exc", [
    ValueError("too many values to unpack"), KeyError("prompt_id"), TypeError("unsupported operand"),
    RuntimeError("stage finished without writing its outputs"), FloatingPointError("a bare one"),
    FileNotFoundError("raised by code, without an errno"), OSError("no errno either"),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),  # a path alignloop computed: its files are checked
    LaunchedStageError("ValueError: boom"), StageError("stage sample (iteration 1) failed"),
], ids=lambda exc: type(exc).__name__)
def test_anything_else_is_a_bug(exc: BaseException) -> None:
    assert not is_user_error(exc)


def test_the_replaced_builtins_still_catch_them() -> None:
    """Code that caught ValueError / FileNotFoundError / FloatingPointError around these still does."""
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, ValueError)
    assert issubclass(MissingInputError, FileNotFoundError) and issubclass(NonFiniteError, FloatingPointError)
    assert all(issubclass(cls, UserError) for cls in (ConfigError, InputError, MissingInputError, NonFiniteError,
                                                      ModelLoadError, LaunchedStageUserError))
