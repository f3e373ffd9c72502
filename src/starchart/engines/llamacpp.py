"""GGUF models through llama-cpp-python.

One llama.cpp context cannot run two generations at once, so requests go
through a ``SerialWorker``: served one after another, in order. Our own token
loop on ``Llama.generate`` (rather than ``create_completion``) decodes each
token once, checks cancellation at every token and counts tokens exactly.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np

from starchart.chat.templates import ChatTemplate
from starchart.doctor.gguf import file_type_name
from starchart.engines.base import (
    Engine,
    Finish,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TextDelta,
    Usage,
)
from starchart.engines.textstream import TextStream
from starchart.engines.worker import SerialWorker
from starchart.errors import Unavailable
from starchart.structured.decoding import Constraint, StructuredDecoder

# llama.cpp's OpenMP threads spin while they wait for work. When anything else
# wants a core (a browser, another process) long spinning collapses decoding;
# never spinning costs most of the speed on an idle machine. Measured on 2
# cores, 2 threads, tokens/s idle / with two busy processes beside it:
# default spin 119 / 7, passive 29 / 50, GOMP_SPINCOUNT=1000 95-113 / 30.
# A short spin is the default unless the user chose an OpenMP wait policy; it
# must be in the environment before llama.cpp's library is loaded.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

# Used only when a GGUF carries no chat template of its own.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


class LlamaCppEngine(Engine):
    def __init__(self, model_id: str, path: Path, *, n_ctx: int = 4096,
                 threads: int | None = None, n_gpu_layers: int = 0,
                 tensor_split: list[float] | None = None) -> None:
        super().__init__()
        self.gpu = {"n_gpu_layers": n_gpu_layers, "tensor_split": tensor_split}
        self.path = path
        self.n_threads = threads or default_threads()
        self.info = ModelInfo(id=model_id, engine="llamacpp", path=str(path), n_ctx=n_ctx,
                              format="gguf", weight_bytes=path.stat().st_size)
        self._llama = None
        self._worker = SerialWorker(f"llamacpp-{model_id}")
        self._eog = np.zeros(0, dtype=np.intc)
        self._eog_set: frozenset[int] = frozenset()
        self._add_bos = False

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    @property
    def queued(self) -> int:
        return self._worker.queued

    def load(self) -> None:
        import llama_cpp

        try:
            llama = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self.info.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                verbose=False,
                **self.gpu,
            )
        except (ValueError, RuntimeError) as exc:
            raise Unavailable(f"llama.cpp could not load {self.path}: {exc}") from None
        meta = llama.metadata
        model = llama._model
        bos_id, eos_id = llama.token_bos(), llama.token_eos()
        bos = model.token_get_text(bos_id) if bos_id >= 0 else ""
        eos = model.token_get_text(eos_id) if eos_id >= 0 else ""
        vocab = model.vocab
        eog = [t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        template = ChatTemplate(
            source=meta.get("tokenizer.chat_template") or CHATML,
            bos_token=bos,
            eos_token=eos,
            stop_strings=tuple(dict.fromkeys(model.token_get_text(t) for t in eog)),
        )
        template.check()
        self.chat_template = template
        self._eog = np.array(eog, dtype=np.intc)
        self._eog_set = frozenset(eog)
        self._add_bos = bool(model.add_bos_token()) and bos_id >= 0
        self._bos_text = bos
        self.info.quantization = meta.get("general.file_type_name") or _file_type(meta)
        self.info.extra = {
            "architecture": meta.get("general.architecture"),
            "n_ctx_train": llama._model.n_ctx_train(),
            "threads": self.n_threads,
        }
        self.structured = StructuredDecoder(lambda: _llguidance_tokenizer(llama, eog),
                                            llama.n_vocab())
        self._llama = llama

    def close(self) -> None:
        self._worker.close()
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def _require(self):  # -> llama_cpp.Llama
        if self._llama is None:
            raise Unavailable("the model is not loaded yet")
        return self._llama

    def tokenize(self, prompt: str) -> list[int]:
        llama = self._require()
        # The chat template may already have written the BOS token as text.
        add_bos = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        return llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def stream_tokens(self, prompt_tokens: list[int],
                      params: SamplingParams) -> AsyncIterator[StreamEvent]:
        llama = self._require()

        def job(cancel: threading.Event) -> Iterator[StreamEvent]:
            return self._generate(llama, prompt_tokens, params, cancel)

        return self._worker.stream(job)

    def _generate(self, llama, prompt: list[int], params: SamplingParams,
                  cancel: threading.Event) -> Iterator[StreamEvent]:
        llama.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        processors = []
        if params.ignore_eos:
            eog = self._eog

            def mask_eog(_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
                scores[eog] = -np.inf
                return scores

            processors.append(mask_eog)
        constraint = self._constraint(params)
        if constraint is not None:
            processors.append(_masking(constraint))
        budget = min(params.max_tokens, self.info.n_ctx - len(prompt))
        text = TextStream(params.stop)
        produced: list[int] = []
        reason = "length"
        if budget > 0:
            for token in llama.generate(
                prompt,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                temp=params.temperature,
                repeat_penalty=params.repetition_penalty,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                logits_processor=processors or None,
            ):
                if cancel.is_set():
                    reason = "stop"
                    break
                if not params.ignore_eos and token in self._eog_set:
                    reason = "stop"
                    break
                if constraint is not None:
                    constraint.advance(token)
                produced.append(token)
                self.tokens_generated += 1
                piece = text.feed(llama.detokenize([token]))
                if piece:
                    yield TextDelta(piece)
                if text.stopped:
                    reason = "stop"
                    break
                if len(produced) >= budget:
                    break
        tail = text.flush()
        if tail:
            yield TextDelta(tail)
        yield Finish(reason, Usage(len(prompt), len(produced)))

    def _constraint(self, params: SamplingParams) -> Constraint | None:
        """This sequence's grammar state, if the request constrains its output.

        The sampling-path hook (a batched scheduler calls the same per sequence):
        ``constraint.mask_logits(row)`` before a token is drawn from ``row``,
        ``constraint.advance(token)`` once it is chosen.
        """
        if params.grammar is None or self.structured is None:
            return None
        return self.structured.start(params.grammar)


def _masking(constraint: Constraint):  # -> a llama-cpp-python logits processor
    def mask(_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        constraint.mask_logits(scores)
        return scores

    return mask


def _llguidance_tokenizer(llama, eog: list[int]):  # noqa: ANN001 - llama_cpp.Llama
    """llguidance's view of a llama.cpp vocabulary; any end-of-generation token ends."""
    import warnings

    from llguidance.llamacpp import lltokenizer_from_vocab

    with warnings.catch_warnings():  # it calls a deprecated llama.cpp name once per token
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(llama._model.vocab, eos_token=eog or None)


def _file_type(meta: dict[str, str]) -> str | None:
    """GGUF ``general.file_type`` number -> its llama.cpp name."""
    value = meta.get("general.file_type")
    return None if value is None else file_type_name(int(value))
