"""GGUF models through llama-cpp-python's low-level API.

One model, one context, ``parallel`` sequences decoded together by a
``BatchScheduler`` (``llama_batching.py``): requests join the running batch
between decode steps, each with its own sampler chain (``llama_sampling.py``),
and a conversation's next turn reuses the KV cells of the previous one.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starchart.chat.templates import ChatTemplate
from starchart.doctor.gguf import file_type_name
from starchart.engines.base import (
    Engine,
    ModelInfo,
    SamplingParams,
    StreamEvent,
)
from starchart.errors import BadRequest, Unavailable
from starchart.structured.decoding import Constraint, StructuredDecoder

if TYPE_CHECKING:
    from llama_cpp._internals import LlamaModel

    from starchart.engines.llama_batching import BatchScheduler

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
                 threads: int | None = None, parallel: int = 8, max_queue: int = 64,
                 prefill_chunk: int = 128, n_gpu_layers: int = 0,
                 tensor_split: list[float] | None = None) -> None:
        super().__init__()
        self.n_gpu_layers = n_gpu_layers
        self.tensor_split = tensor_split
        self.path = path
        self.n_threads = threads or default_threads()
        self.info = ModelInfo(id=model_id, engine="llamacpp", path=str(path), n_ctx=n_ctx,
                              format="gguf", weight_bytes=path.stat().st_size)
        # Imported here, not at the top: llama.cpp's library must load after the
        # OpenMP setting below is in the environment.
        from starchart.engines.llama_batching import BatchConfig

        self.config = BatchConfig(parallel=parallel, max_queue=max_queue, n_ctx=n_ctx,
                                  n_batch=max(512, prefill_chunk + parallel),
                                  prefill_chunk=prefill_chunk)
        self._model: LlamaModel | None = None
        self._ctx: ctypes.c_void_p | None = None
        self._scheduler: BatchScheduler | None = None
        self._pieces: dict[int, bytes] = {}
        self._add_bos = False
        self._bos_text = ""

    @property
    def loaded(self) -> bool:
        return self._scheduler is not None

    @property
    def queued(self) -> int:
        """Requests running or waiting."""
        s = self._scheduler
        return 0 if s is None else s.running + s.queued

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens whose KV cells were reused from an earlier request (prefix reuse)."""
        return 0 if self._scheduler is None else self._scheduler.reused_tokens

    def batch_stats(self) -> dict[str, int]:
        s = self._scheduler
        return {"running": s.running if s else 0, "queued": s.queued if s else 0,
                "parallel": self.config.parallel, "reused_tokens": self.reused_tokens}

    def resident_tokens(self) -> list[int]:
        """KV cells each sequence id holds (tests look at a cancelled sequence's)."""
        s = self._require()
        return [s.resident_tokens(i) for i in range(self.config.parallel)]

    def load(self) -> None:
        import llama_cpp
        from llama_cpp._internals import LlamaModel

        from starchart.engines.llama_batching import BatchScheduler

        # llama-cpp-python prints llama.cpp's log unless its logger says otherwise.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = self.n_gpu_layers
        if self.tensor_split:
            split = self.tensor_split
            # Kept on self: llama.cpp reads the array while it loads.
            self._split = (ctypes.c_float * llama_cpp.LLAMA_MAX_DEVICES)(*split)
            params.tensor_split = self._split
        from starchart.models.integrity import check_gguf

        try:
            # A truncated or corrupt file is named with what is wrong; llama.cpp
            # itself may crash on one, or fail without saying why.
            check_gguf(self.path)
        except BadRequest as exc:
            raise Unavailable(f"llama.cpp cannot load it: {exc.message}") from None
        try:
            model = LlamaModel(path_model=str(self.path), params=params, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise Unavailable(f"llama.cpp could not load {self.path}: {exc}") from None
        cparams = llama_cpp.llama_context_default_params()
        config = self.config
        # One stream of n_ctx cells per sequence (kv_unified off): every request
        # keeps the whole context window, and attends only to its own cells.
        cparams.n_ctx = self.info.n_ctx * config.parallel
        cparams.n_seq_max = config.parallel
        cparams.kv_unified = False
        cparams.n_batch = cparams.n_ubatch = config.n_batch
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model.model, cparams)
        if not ctx:
            model.close()
            raise Unavailable(f"llama.cpp could not create a context of {cparams.n_ctx} tokens"
                              f" for {self.path} (try a smaller --n-ctx or --parallel)")
        meta = model.metadata()
        vocab = model.vocab
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        bos_id, eos_id = model.token_bos(), model.token_eos()
        bos = model.token_get_text(bos_id) if bos_id >= 0 else ""
        eos = model.token_get_text(eos_id) if eos_id >= 0 else ""
        eog = [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        template = ChatTemplate(
            source=meta.get("tokenizer.chat_template") or CHATML,
            bos_token=bos,
            eos_token=eos,
            stop_strings=tuple(dict.fromkeys(model.token_get_text(t) for t in eog)),
        )
        template.check()
        self.chat_template = template
        self._add_bos = bool(model.add_bos_token()) and bos_id >= 0
        self._bos_text = bos
        self.info.quantization = meta.get("general.file_type_name") or _file_type(meta)
        self.info.extra = {
            "architecture": meta.get("general.architecture"),
            "n_ctx_train": model.n_ctx_train(),
            "threads": self.n_threads,
            "parallel": config.parallel,
        }
        self._model, self._ctx = model, ctx
        self.structured = StructuredDecoder(lambda: _llguidance_tokenizer(model, eog), n_vocab)
        self._scheduler = BatchScheduler(
            self.info.id, ctx, config, n_vocab=n_vocab, eog=frozenset(eog), piece=self._piece,
            on_token=self._count_token)

    def _count_token(self) -> None:
        self.tokens_generated += 1

    def _piece(self, token: int) -> bytes:
        """A token's bytes (cached: the per-token path runs once per token per stream)."""
        piece = self._pieces.get(token)
        if piece is None:
            import llama_cpp

            assert self._model is not None  # the scheduler runs only while loaded
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, -n, 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def close(self) -> None:
        import llama_cpp

        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None

    def _require(self) -> BatchScheduler:
        if self._scheduler is None:
            raise Unavailable("the model is not loaded yet")
        return self._scheduler

    def tokenize(self, prompt: str) -> list[int]:
        self._require()
        assert self._model is not None  # loaded together with the scheduler
        # The chat template may already have written the BOS token as text.
        add_bos = self._add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        tokens: list[int] = self._model.tokenize(prompt.encode("utf-8"), add_bos=add_bos,
                                                 special=True)
        return tokens

    def stream_tokens(self, prompt_tokens: list[int],
                      params: SamplingParams) -> AsyncIterator[StreamEvent]:
        scheduler = self._require()
        scheduler.check_room()  # a 429 before the response starts, not mid-stream
        # The grammar is compiled (or taken from the cache) here, so a grammar that
        # cannot compile fails before the stream starts, and never on the decode thread.
        return scheduler.stream(prompt_tokens, params, constraint=self._constraint(params))

    def _constraint(self, params: SamplingParams) -> Constraint | None:
        """This sequence's grammar state, if the request constrains its output."""
        if params.grammar is None or self.structured is None:
            return None
        return self.structured.start(params.grammar)


def _llguidance_tokenizer(model: LlamaModel, eog: list[int]) -> Any:
    """llguidance's view of a llama.cpp vocabulary; any end-of-generation token ends."""
    import warnings

    from llguidance.llamacpp import lltokenizer_from_vocab

    with warnings.catch_warnings():  # it calls a deprecated llama.cpp name once per token
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(model.vocab, eos_token=eog or None)


def _file_type(meta: dict[str, str]) -> str | None:
    """GGUF ``general.file_type`` number -> its llama.cpp name."""
    value = meta.get("general.file_type")
    return None if value is None else file_type_name(int(value))
