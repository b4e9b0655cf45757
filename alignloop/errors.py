"""The errors a person can act on, as one family: whatever raises a `UserError` has found a mistake in what it was
given (params, a file, a model, a value that diverged) and says what to change. Every command prints a `UserError` as
one line, `error: ...`. Anything else that ends a command is a bug in alignloop: `alignloop: unexpected error: ...`,
with its traceback in the log (`cli_errors`). A plain `ValueError` is a bug too, wherever it comes from.

Each class keeps the built-in exception it replaced as a second base, so code that catches `ValueError` or
`FileNotFoundError` around one still catches it. This module imports nothing: any module may raise these.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A mistake in what alignloop was given, phrased as one line a person can act on."""


class InputError(UserError, ValueError):
    """A stage's input cannot be used as it is (an empty prompt pool, too few pairs, a prompt without constraints)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file a stage or command needs is not there (the message names the stage or step that writes it)."""


class NonFiniteError(UserError, FloatingPointError):
    """Training or scoring produced NaN or infinity (a loss, weights, scores, a metric): the message names what to
    lower or check."""


class StageError(RuntimeError):
    """A stage of `alignloop run` failed; the message names the stage, the iteration and the cause (`__cause__`),
    which decides whether the run ends as a user error or as a bug."""


# Errors the operating system raises about the machine or a path the person gave, not about alignloop's logic.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                       errno.EISDIR, errno.EEXIST}


def is_user_error(exc: BaseException) -> bool:
    """A `UserError`, or an `OSError` the operating system raised about the machine or a path (a full disk, no
    permission, a file where a directory should be): what a person fixes, not alignloop."""
    if isinstance(exc, UserError):
        return True
    return isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS
