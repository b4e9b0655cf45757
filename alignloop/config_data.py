"""The `data:` section of params.yaml: prompt sets read from files or datasets (the testbed when absent)."""

from __future__ import annotations

from pydantic import Field, model_validator

from alignloop.config_base import Section


class PromptSetConfig(Section):
    """A set of prompts read with `datasets.load_dataset`: a local .jsonl/.json/.parquet/.csv file or a dataset name."""

    path: str
    """A local file, or a dataset name (downloaded by `prepare` only)."""
    split: str = "train"
    """The split to read (a local file is read as this split)."""
    prompt_column: str = "prompt"
    """Column holding the prompt: text, or a list of chat messages (its first user message is the prompt)."""
    messages_column: str | None = None
    """Take the prompt from this chat-messages column instead (its first user message), e.g. `messages`."""
    response_column: str | None = None
    """SFT demonstrations only: the response (text, or chat messages whose last assistant message is the response);
    null takes the assistant message after the prompt in `messages_column`."""
    max_rows: int | None = Field(None, ge=1)
    """Read at most this many rows (the first ones)."""


class DataConfig(Section):
    """Where prompts come from. Without `train`, the testbed generates everything (the default)."""

    train: PromptSetConfig | None = None
    """Training prompts; each iteration takes the next `sample.num_prompts` of them."""
    eval: dict[str, PromptSetConfig] = {}
    """Named evaluation sets (at least one with `train`); their prompts are removed from the training pool."""
    sft: PromptSetConfig | None = None
    """Demonstrations for SFT (prompt + response); needed when `sft.enabled` and `train` is set."""

    @model_validator(mode="after")
    def _sets_complete(self) -> DataConfig:
        if self.train is None and (self.eval or self.sft):
            raise ValueError("train: required when data.eval or data.sft is given (the testbed makes its own)")
        if self.train is not None and not self.eval:
            raise ValueError("eval: give at least one evaluation set with data.train (benchmarks need one)")
        for name in self.eval:
            if not name.isidentifier():
                raise ValueError(f"eval: set name {name!r} must be a plain identifier (it names files and metrics)")
        return self

    @property
    def is_testbed(self) -> bool:
        return self.train is None
