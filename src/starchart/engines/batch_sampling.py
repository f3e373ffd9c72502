"""Per-request sampling inside transformers' continuous batching.

transformers' continuous batching (CB) applies temperature, top-k and top-p per
request, but has no per-request repetition/presence/frequency penalty, min-p,
seed or greedy decoding: those would be one setting for the whole batch (or
dropped). Two processors in CB's own plug-in shape
(``ContinuousBatchingLogitsProcessor``) fill the gap, so every request in a
batch gets exactly the parameters it asked for:

- ``Penalties`` runs first (as ``generate`` orders them): repetition penalty
  over prompt + generated tokens (transformers' definition), presence and
  frequency penalties over generated tokens (OpenAI's definition).
- ``Pick`` runs last, after CB's temperature/top-k/top-p: min-p, then greedy
  (temperature 0) or a draw from the request's own seeded generator. It leaves
  one finite logit, so CB's shared sampler can only take that token.

A third, ``Constrain``, runs before both for requests with a grammar
(``response_format``, forced tool calls): it advances each sequence's
``Constraint`` with the tokens CB sampled since the last step, then masks
that row's logits to the tokens the grammar allows.

They read each row's request through the ``FutureRequestState`` list CB hands
to ``prepare_tensor_args`` (in row order, as CB's own temperature processor
relies on) and keep what they need on the Python side until ``__call__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
)

from starchart.structured.decoding import Constraint

NEG_INF = float("-inf")


@dataclass(frozen=True)
class _PenaltyRow:
    repetition: float
    presence: float
    frequency: float
    context: list[int]
    generated: list[int]


class Penalties(ContinuousBatchingLogitsProcessor):
    # Not a ClassVar (RUF012): the base class declares it per instance.
    supported_kwargs: dict[str, type] = {  # noqa: RUF012
        "repetition_penalty": float, "presence_penalty": float, "frequency_penalty": float}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._rows: list[_PenaltyRow | None] = []

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        rows: list[_PenaltyRow | None] = []
        for future in requests_with_new_token:
            state = future.state
            kw = state.logit_processor_kwargs
            row = _PenaltyRow(kw.get("repetition_penalty", 1.0), kw.get("presence_penalty", 0.0),
                              kw.get("frequency_penalty", 0.0), [], [])
            if row.repetition != 1.0 or row.presence or row.frequency:
                row = _PenaltyRow(row.repetition, row.presence, row.frequency,
                                  state.initial_tokens + state.generated_tokens,
                                  list(state.generated_tokens))
                rows.append(row)
            else:
                rows.append(None)
        self._rows = rows
        return torch.zeros(len(rows), dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(self._rows[: scores.size(0)]):
            if row is None:
                continue
            logits = scores[i]
            if row.repetition != 1.0 and row.context:
                ids = torch.tensor(sorted(set(row.context)), device=scores.device)
                seen = logits[ids]
                logits[ids] = torch.where(seen < 0, seen * row.repetition, seen / row.repetition)
            if (row.presence or row.frequency) and row.generated:
                ids, counts = torch.tensor(row.generated, device=scores.device).unique(
                    return_counts=True)
                logits[ids] -= row.presence + row.frequency * counts.to(logits.dtype)
        return scores


@dataclass(frozen=True)
class _PickRow:
    request_id: str
    greedy: bool
    min_p: float
    seed: int | None


class Pick(ContinuousBatchingLogitsProcessor):
    # Not a ClassVar (RUF012): the base class declares it per instance.
    supported_kwargs: dict[str, type] = {"greedy": bool, "min_p": float, "seed": int}  # noqa: RUF012
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._rows: list[_PickRow] = []
        # One generator per seeded request, advanced token by token.
        self._generators: dict[str, torch.Generator] = {}

    def forget(self, request_id: str) -> None:
        """Drop a finished request's generator (called by the engine)."""
        self._generators.pop(request_id, None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        rows = []
        for future in requests_with_new_token:
            state = future.state
            kw = state.logit_processor_kwargs
            rows.append(_PickRow(state.request_id, kw.get("greedy", False), kw.get("min_p", 0.0),
                                 kw.get("seed")))
        self._rows = rows
        return torch.zeros(len(rows), dtype=torch.int32)

    def _generator(self, request_id: str, seed: int, device: torch.device) -> torch.Generator:
        generator = self._generators.get(request_id)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
            self._generators[request_id] = generator
        return generator

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(self._rows[: scores.size(0)]):
            if not (row.greedy or row.min_p > 0 or row.seed is not None):
                continue
            logits = scores[i]
            if row.greedy:
                chosen = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits, dim=-1)
                if row.min_p > 0:
                    probs = torch.where(probs < row.min_p * probs.max(), 0.0, probs)
                if row.seed is None:
                    logits.masked_fill_(probs == 0, NEG_INF)
                    continue
                chosen = int(torch.multinomial(probs, 1, generator=self._generator(
                    row.request_id, row.seed, scores.device)))
            picked = logits[chosen].clone()
            logits.fill_(NEG_INF)
            logits[chosen] = picked
        return scores


class _Tracked:
    """A request's constraint and how many of its generated tokens it has seen."""

    def __init__(self, constraint: Constraint) -> None:
        self.constraint = constraint
        self.seen = 0

    def catch_up(self, generated: list[int]) -> None:
        for token in generated[self.seen:]:
            self.constraint.advance(token)
        self.seen = len(generated)


class Constrain(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {}  # noqa: RUF012 - the base declares it per instance
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._tracked: dict[str, _Tracked] = {}
        self._rows: list[_Tracked | None] = []

    def add(self, request_id: str, constraint: Constraint) -> None:
        """Constrain a request (called by the engine before it adds the request to CB)."""
        self._tracked[request_id] = _Tracked(constraint)

    def forget(self, request_id: str) -> None:
        self._tracked.pop(request_id, None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        rows: list[_Tracked | None] = []
        for future in requests_with_new_token:
            tracked = self._tracked.get(future.state.request_id)
            if tracked is not None:
                tracked.catch_up(future.state.generated_tokens)
            rows.append(tracked)
        self._rows = rows
        return torch.zeros(len(rows), dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(self._rows[: scores.size(0)]):
            if row is not None:
                row.constraint.mask_logits(scores[i])
        return scores


def install(manager: Any) -> tuple[Pick, Constrain]:
    """Put the processors into a CB manager's list; call before ``manager.start()``.

    Returns ``Pick`` and ``Constrain`` (the engine tells them about its requests).
    """
    processors = manager.logit_processor
    pick = Pick()
    constrain = Constrain()
    processors.logits_processor.insert(0, Penalties())
    processors.logits_processor.insert(0, constrain)
    processors.logits_processor.append(pick)
    processors.tensors_required += 3
    processors.supported_keys.update(Penalties.supported_kwargs)
    processors.supported_keys.update(Pick.supported_kwargs)
    processors.do_processing = True
    return pick, constrain
