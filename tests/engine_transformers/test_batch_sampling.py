"""Our per-request processors inside transformers' continuous batching, fed the
same transformers ``RequestState`` objects the batch processor hands them."""

from __future__ import annotations

import torch
from transformers.generation.continuous_batching.requests import (
    FutureRequestState,
    RequestState,
)

from starchart.engines.batch_sampling import Penalties, Pick


def row(request_id: str, prompt: list[int], generated: list[int], **kwargs: object
        ) -> FutureRequestState:
    state = RequestState(request_id=request_id, initial_tokens=prompt,
                         logit_processor_kwargs=dict(kwargs))
    state.generated_tokens = list(generated)
    return FutureRequestState(state, has_new_token=True, complete_blocks={}, query_length=1)


def apply(processor: Penalties | Pick, rows: list[FutureRequestState], scores: torch.Tensor
          ) -> torch.Tensor:
    arg = processor.prepare_tensor_args(rows)
    return processor(scores.clone(), arg)


def test_penalties_apply_per_row() -> None:
    scores = torch.tensor([[2.0, -2.0, 1.0, 0.5]] * 3)
    rows = [
        row("plain", [0, 1], [2]),
        row("repeat", [0, 1], [2], repetition_penalty=2.0),
        row("openai", [0], [2, 2, 3], presence_penalty=0.5, frequency_penalty=0.25),
    ]
    out = apply(Penalties(), rows, scores)
    assert out[0].tolist() == [2.0, -2.0, 1.0, 0.5]
    # Over prompt + generated: positive logits divided, negative ones multiplied.
    assert out[1].tolist() == [1.0, -4.0, 0.5, 0.5]
    # Over generated tokens only: presence once, frequency per occurrence.
    assert out[2].tolist() == [2.0, -2.0, 1.0 - 0.5 - 0.5, 0.5 - 0.5 - 0.25]


def test_pick_greedy_leaves_only_the_best_token() -> None:
    scores = torch.tensor([[0.5, 3.0, 2.0], [0.5, 3.0, 2.0]])
    out = apply(Pick(), [row("g", [0], [], greedy=True), row("s", [0], [])], scores)
    assert out[0].tolist() == [float("-inf"), 3.0, float("-inf")]
    assert out[1].tolist() == [0.5, 3.0, 2.0]  # a sampled row is left to CB's sampler


def test_pick_min_p_drops_unlikely_tokens() -> None:
    scores = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    out = apply(Pick(), [row("m", [0], [], min_p=0.25)], scores)
    assert torch.isfinite(out[0]).tolist() == [True, True, False]


def test_a_seed_makes_a_request_reproducible_whatever_else_is_in_the_batch() -> None:
    def draws(seed: int, batch_size: int) -> list[int]:
        pick = Pick()
        out = []
        for _ in range(20):
            rows = [row("me", [0], [], seed=seed)]
            rows += [row(f"other{i}", [0], [], seed=1000 + i) for i in range(batch_size - 1)]
            scores = apply(pick, rows, torch.zeros(batch_size, 50))
            out.append(int(torch.argmax(scores[0])))
            assert torch.isfinite(scores[0]).sum() == 1
        return out

    first = draws(7, 1)
    assert first == draws(7, 4)
    assert first != draws(8, 1)
    assert len(set(first)) > 5  # a real draw, not a constant
