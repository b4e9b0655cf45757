"""Record the ORIGINAL PairRM implementation's logits on a tiny random checkpoint (run by hand, not in CI).

tests/test_pairrm.py proves alignloop/models/pairrm.py equal to llm-blender's `DebertaV2PairRM` through this
script's output. It installs nothing; make llm-blender 0.0.2 (its last release) importable first:

    .venv/bin/python -m pip install --no-deps --target /tmp/blender llm-blender==0.0.2
    PYTHONPATH=/tmp/blender .venv/bin/python scripts/pairrm_reference.py

The package's __init__ fails on transformers 5 (it imports the removed TRANSFORMERS_CACHE), so only the file
llm_blender/pair_ranker/pairrm.py is imported, by path. The script writes
  tests/data/pairrm_tiny/           a tiny DeBERTa-v3-style PairRM in the PairRM-hf format (config, safetensors,
                                    fast tokenizer with the prefix tokens added after [MASK], as pairrm_to_hf.ipynb)
  tests/data/pairrm_tiny_logits.json  inputs, their ids from the model card's `tokenize_pair`, original logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import string
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import DebertaV2Config, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR, OUT_JSON = ROOT / "tests/data/pairrm_tiny", ROOT / "tests/data/pairrm_tiny_logits.json"
PREFIXES = ["<|source|>", "<|candidate1|>", "<|candidate2|>", "<|candidate|>"]  # ids V..V+3, as in PairRM-hf
WORDS = ("the a an is are was what how why who of to in and or not it this that you i we they be do does can "
         "will hello hi love hate too thanks good bad answer question river long short name paris france capital "
         "two four plus minus times equal sure yes no maybe please help me explain write poem code python").split()

# (prompt, A, B) cases; long ones exercise the model card's truncation at its own defaults (1224 / 412)
CASES = [("hello!", "hi!", "f**k off!"), ("I love you!", "I hate you!", "I love you, too!"),
         ("what is two plus two?", "four", "two plus two is four."), ("name a long river", "the Nile", ""),
         ("", "yes", "no"), ("explain python", "python is a code language", "i do not know"),
         ("write a poem", "roses are red", "roses are red, violets are blue"),
         ("what is the capital of france?", "Paris", "paris, sure"), ("why?", "because", "why not"),
         ("help me", "sure, how can i help?", "no."),
         ("Ünïcödé ✓ text", "émoji 🙂", "plain"), ("hi", "hello " * 30, "hi " * 5)]
LONG = [("question " * 1400, "a short answer", "another answer"),
        ("what is this? " * 300, "answer " * 600, "no " * 700)]


def load_original():
    """llm_blender/pair_ranker/pairrm.py from the installed 0.0.2 wheel, without the package __init__."""
    spec = importlib.util.find_spec("llm_blender")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_blender is not importable; see this script's docstring")
    path = Path(list(spec.submodule_search_locations)[0]) / "pair_ranker" / "pairrm.py"
    module_spec = importlib.util.spec_from_file_location("original_pairrm", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, path


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A DeBERTa-v3-like fast tokenizer: Unigram over ▁-prefixed words and single characters, [CLS] x [SEP]."""
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    pieces = [(token, 0.0) for token in specials] + [("▁" + word, -2.0) for word in WORDS]
    pieces += [("▁", -4.0)] + [(char, -6.0) for char in string.printable[:94]] + [("[MASK]", 0.0)]
    backend = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", unk_token="[UNK]", mask_token="[MASK]",
                                        model_max_length=512)
    tokenizer.add_tokens(PREFIXES)  # plain added tokens, as pairrm_to_hf.ipynb did on deberta-v3-large
    return tokenizer


def tokenize_pair(tokenizer, sources, candidate1s, candidate2s, source_max_length=1224, candidate_max_length=412):
    """The PairRM-hf model card's formatting function, unchanged in behaviour."""
    ids = []
    max_length = source_max_length + 2 * candidate_max_length
    for source, cand1, cand2 in zip(sources, candidate1s, candidate2s):
        source_ids = tokenizer.encode("<|source|>" + source, max_length=source_max_length, truncation=True)
        candidate_max_length = (max_length - len(source_ids)) // 2
        candidate1_ids = tokenizer.encode("<|candidate1|>" + cand1, max_length=candidate_max_length, truncation=True)
        candidate2_ids = tokenizer.encode("<|candidate2|>" + cand2, max_length=candidate_max_length, truncation=True)
        ids.append(source_ids + candidate1_ids + candidate2_ids)
    return tokenizer.pad({"input_ids": ids}, return_tensors="pt", padding="max_length", max_length=max_length)


def main() -> None:
    original, original_path = load_original()
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    # deberta-v3-large's architecture switches, shrunk: relative attention with p2c/c2p, no absolute positions
    config = DebertaV2Config(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
        layer_norm_eps=1e-7, max_relative_positions=-1, pad_token_id=0, initializer_range=0.2)
    config.n_tasks, config.drop_out, config.sep_token_id = 1, 0.05, 2
    ids = tokenizer.convert_tokens_to_ids(PREFIXES)
    config.source_prefix_id, config.cand1_prefix_id, config.cand2_prefix_id, config.cand_prefix_id = ids
    torch.manual_seed(0)
    model = original.DebertaV2PairRM(config)
    with torch.no_grad():  # spread the head so logits are O(1), not ~1e-3
        for layer in (model.head_layer[1], model.head_layer[4]):
            layer.weight.normal_(0.0, 0.5)
            layer.bias.normal_(0.0, 0.1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    tokenizer.save_pretrained(OUT_DIR)

    reloaded, info = original.DebertaV2PairRM.from_pretrained(OUT_DIR, output_loading_info=True)
    if any(info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        sys.exit(f"the original class does not reload the checkpoint cleanly: {info}")
    reloaded.eval()
    loaded_tokenizer = transformers.AutoTokenizer.from_pretrained(OUT_DIR)
    records = []
    for cases, limits in ((CASES, (1224, 412)), (CASES, (10, 5)), (LONG, (1224, 412))):
        prompts, a, b = (list(column) for column in zip(*cases))
        encodings = tokenize_pair(loaded_tokenizer, prompts, a, b, *limits)
        with torch.no_grad():
            logits = reloaded(**encodings, return_dict=True).logits.tolist()
        for row, (prompt, first, second) in enumerate(cases):
            kept = encodings["input_ids"][row][encodings["attention_mask"][row].bool()].tolist()
            records.append({"prompt": prompt, "a": first, "b": second, "source_max_length": limits[0],
                            "max_length": limits[0] + 2 * limits[1], "input_ids": kept, "logit": logits[row]})
    source = {"package": "llm-blender==0.0.2", "file": "llm_blender/pair_ranker/pairrm.py",
              "sha256": hashlib.sha256(original_path.read_bytes()).hexdigest(),
              "transformers": transformers.__version__, "torch": torch.__version__}
    OUT_JSON.write_text(json.dumps({"source": source, "cases": records}, ensure_ascii=False, indent=1) + "\n")
    size = sum(path.stat().st_size for path in OUT_DIR.iterdir())
    print(f"{len(records)} cases -> {OUT_JSON.name}; checkpoint {size / 1024:.0f} KiB; "
          f"logits {min(r['logit'] for r in records):.3f}..{max(r['logit'] for r in records):.3f}")


if __name__ == "__main__":
    main()
