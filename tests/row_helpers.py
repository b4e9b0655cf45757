"""Stage rows for unit tests that write a stage's inputs by hand: whole rows of alignloop/stage_rows.py's types, with
the fields a test does not care about filled in."""

from __future__ import annotations

from typing import Any

from alignloop.stage_rows import PairRow, SampleRow, ScoreRow


def sample_row(prompt_id: str, sample_index: int, response: str, **fields: Any) -> SampleRow:
    ids = fields.pop("response_ids", [ord(c) for c in response])
    return SampleRow(**{"prompt_id": prompt_id, "sample_index": sample_index, "prompt": "", "response": response,
                        "response_ids": ids, "num_tokens": len(ids), "finished": True, "seed": 0,
                        "policy": "test", **fields})


def score_row(prompt_id: str, sample_index: int, score: float, ranker: str = "gold") -> ScoreRow:
    return ScoreRow(prompt_id=prompt_id, sample_index=sample_index, score=score, ranker=ranker)


def pair_row(pair_id: str, prompt: str, chosen: str, rejected: str, **fields: Any) -> PairRow:
    return PairRow(**{"pair_id": pair_id, "prompt_id": pair_id, "prompt": prompt, "chosen": chosen,
                      "rejected": rejected, "chosen_ids": [ord(c) for c in chosen],
                      "rejected_ids": [ord(c) for c in rejected], "chosen_finished": True, "rejected_finished": True,
                      "chosen_score": 1.0, "rejected_score": 0.0, "chosen_index": 0, "rejected_index": 1, **fields})
