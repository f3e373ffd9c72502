"""Hugging Face models through transformers, batched by transformers' own
continuous batching.

One ``ContinuousBatchingManager`` runs for the engine's life on its own thread:
every request is added to it and streams back token by token, so concurrent
requests share each forward pass. Per-request sampling inside a batch comes
from CB's temperature/top-k/top-p processors plus ours (``batch_sampling``).
A request whose consumer goes away is cancelled in the manager and leaves
the batch at its next step.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from starchart.chat import named
from starchart.chat.system_slot import fold_system, has_system_slot
from starchart.chat.templates import ChatTemplate, Message
from starchart.engines import batch_sampling, logprobs, transformers_logprobs
from starchart.engines.base import (
    Engine,
    Finish,
    FinishReason,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    Usage,
)
from starchart.engines.detokenize import IncrementalDecoder
from starchart.engines.hf_loading import (
    Source,
    check_quantization,
    choose_device,
    choose_dtype,
    dtype_name,
    load_failure,
    locate,
    multiple_gpus,
    quantization_config,
)
from starchart.engines.textstream import TextStream
from starchart.errors import StarchartError, Unavailable
from starchart.registry import model_id
from starchart.structured.decoding import StructuredDecoder

log = logging.getLogger("starchart.transformers")

# KV-cache page size (tokens): small pages keep a short chat's cache small on CPU.
PAGE_SIZE = 64
# How long a waiting stream sleeps before checking that the batching thread is alive.
_POLL_SECONDS = 1.0


def batching_config(n_ctx: int, max_sequences: int, device: str) -> Any:
    """The continuous-batching setup: a KV cache sized for ``max_sequences`` full
    contexts (CB would otherwise size it from free memory: gigabytes on a CPU box)."""
    from transformers import ContinuousBatchingConfig

    return ContinuousBatchingConfig(
        per_request_processors=True, page_size=PAGE_SIZE,
        num_blocks=-(-n_ctx // PAGE_SIZE) * max_sequences,
        max_batch_tokens=min(n_ctx, 512),
        # On CUDA, CB moves to flash attention when its kernels are installed.
        auto_switch_to_flash=device == "cuda",
    )


class TransformersEngine(Engine):
    def __init__(self, model: str, *, n_ctx: int = 4096, device: str = "auto",
                 dtype: str = "auto", quantize: str = "none", chat_template: str | None = None,
                 trust_remote_code: bool = False, threads: int | None = None,
                 max_sequences: int = 8, home: Path | None = None) -> None:
        """``max_sequences``: how many full-context sequences the KV cache holds at once;
        more concurrent requests wait in the batch queue. ``home``: where the model names
        of ``starchart models`` are (default: the settings' home)."""
        super().__init__()
        self.model_name = model
        self.home = home
        self.requested = {"device": device, "dtype": dtype, "quantize": quantize}
        self.chat_template_name = chat_template
        self.trust_remote_code = trust_remote_code
        self.max_sequences = max_sequences
        self.threads = threads
        # Checked now, not at load: `serve` then refuses to start instead of serving 503s.
        self.device = choose_device(device)
        check_quantization(quantize, self.device)
        self.info = ModelInfo(id=model_id(model), engine="transformers", path=model, n_ctx=n_ctx,
                              format="transformers")
        self.source: Source | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._manager: Any = None
        self._pick: batch_sampling.Pick | None = None
        self._constrain: batch_sampling.Constrain | None = None
        self._distributions: transformers_logprobs.Distributions | None = None
        self._token_bytes: Callable[[int], bytes] | None = None
        self._fold_system = False
        self._stop_ids: list[int] = []

    # -- loading --------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._manager is not None

    def load(self) -> None:
        if self.threads:
            import torch

            # Process-wide: torch has one intra-op thread pool.
            torch.set_num_threads(self.threads)
        device = self.device
        dtype = choose_dtype(device, self.requested["dtype"])
        if self.trust_remote_code:
            log.warning("--trust-remote-code: running Python code shipped with %s; only do this"
                        " for models whose code you trust", self.model_name)
        source = locate(self.model_name, trust_remote_code=self.trust_remote_code,
                        home=self.home)
        self.source = source
        tokenizer, model = self._load_weights(source, device, dtype)
        template, template_name = self._template(tokenizer)
        self._fold_system = not has_system_slot(template)
        if self._fold_system:
            log.info("the chat template has no system slot: the system prompt goes in front of"
                     " the first user turn")
        self._tokenizer, self._model, self.chat_template = tokenizer, model, template
        self._token_bytes = transformers_logprobs.token_bytes(tokenizer)
        self._stop_ids = self._end_token_ids(template.stop_strings)
        self.info = self._describe(source, model, device, dtype, template_name)
        self._start_batching(device)
        if getattr(tokenizer, "is_fast", False):  # llguidance reads fast tokenizers only
            self.structured = StructuredDecoder(self._llguidance_tokenizer, self._n_logits())

    def _n_logits(self) -> int:
        return int(self._model.get_output_embeddings().weight.shape[0])

    def _llguidance_tokenizer(self) -> Any:
        from llguidance.hf import from_tokenizer

        return from_tokenizer(self._tokenizer, n_vocab=self._n_logits(),
                              eos_token=list(self._stop_ids) or None)

    def _load_weights(self, source: Source, device: str, dtype: Any) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        common: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if source.gguf_file:
            common["gguf_file"] = source.gguf_file
        quantization = quantization_config(self.requested["quantize"], dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.folder, **common)
        except Exception as exc:  # noqa: BLE001 - reported as one line, not a traceback
            raise load_failure(f"the tokenizer of {source.model_id}", exc) from None
        # Several GPUs: accelerate splits the layers over all of them (what `plan` assumes).
        placement = "auto" if device == "cuda" and multiple_gpus() else device
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source.folder, dtype=dtype, device_map=placement,
                quantization_config=quantization, **common)
        except Exception as exc:  # noqa: BLE001
            raise load_failure(source.model_id, exc) from None
        return tokenizer, model.eval()

    def _template(self, tokenizer: Any) -> tuple[ChatTemplate, str]:
        own = tokenizer.chat_template
        if isinstance(own, dict):  # several named templates: the default one chats
            own = own.get("default")
        end_of_turn: tuple[str, ...] = ()
        if self.chat_template_name:
            chosen = named.load(self.chat_template_name)
            if own:
                log.info("using --chat-template %s instead of the tokenizer's own template",
                         chosen.name)
            source, name, end_of_turn = chosen.source, chosen.name, chosen.end_of_turn
        elif own:
            source, name = own, "tokenizer"
        else:
            guess = named.detect(tokenizer.get_vocab())
            if guess is None:
                raise Unavailable(
                    f"{self.model_name} has no chat template (a base model, or from before"
                    " templates were shipped): start with --chat-template NAME, one of"
                    f" {', '.join(named.names())}, or a path to a .jinja file")
            log.info("%s has no chat template; its special tokens match %r: using that",
                     self.model_name, guess)
            chosen = named.load(guess)
            source, name, end_of_turn = chosen.source, chosen.name, chosen.end_of_turn
        eos = tokenizer.eos_token or ""
        template = ChatTemplate(source=source, bos_token=tokenizer.bos_token or "",
                                eos_token=eos,
                                stop_strings=tuple(dict.fromkeys(s for s in (*end_of_turn, eos)
                                                                 if s)))
        template.check()
        return template, name

    def _end_token_ids(self, stop_strings: Sequence[str]) -> list[int]:
        """EOS ids plus every end-of-turn text that is a single token."""
        ids: list[int] = []
        for source in (self._model.generation_config.eos_token_id,
                       self._tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.append(source)
            elif source:
                ids.extend(source)
        vocab = self._tokenizer.get_vocab()
        ids.extend(vocab[s] for s in stop_strings if s in vocab)
        return sorted({i for i in ids if i is not None and i >= 0})

    def _describe(self, source: Source, model: Any, device: str, dtype: Any,
                  template_name: str) -> ModelInfo:
        config = model.config.get_text_config()
        n_ctx_train = getattr(config, "max_position_embeddings", None)
        n_ctx = min(self.info.n_ctx, n_ctx_train) if n_ctx_train else self.info.n_ctx
        quantize = self.requested["quantize"]
        return ModelInfo(
            id=self.info.id, engine="transformers",
            path=str(source.folder / source.gguf_file) if source.gguf_file else str(source.folder),
            n_ctx=n_ctx, format="gguf" if source.gguf_file else "transformers",
            dtype=dtype_name(dtype),
            quantization={"8bit": "bitsandbytes-int8", "4bit": "bitsandbytes-nf4"}.get(quantize),
            # Measured on the loaded model (parameters + buffers), not read from file sizes.
            weight_bytes=int(model.get_memory_footprint()),
            extra={"device": device,
                   "architecture": (getattr(config, "architectures", None) or [None])[0]
                   or type(model).__name__,
                   "n_ctx_train": n_ctx_train, "chat_template": template_name,
                   "system_prompt": "folded into first user turn" if self._fold_system
                   else "system turn",
                   "batching": "transformers continuous batching",
                   "max_sequences": self.max_sequences},
        )

    def _start_batching(self, device: str) -> None:
        from transformers import GenerationConfig

        # CB logs every start, cache size and stop at INFO on its own stderr handler,
        # which `chat` would print over the conversation: kept for --log-level debug.
        logging.getLogger("ContinuousBatchingLogger").setLevel(
            logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)

        # Temperature != 1, top_k > 0 and top_p < 1 make CB build its per-request versions
        # of those three processors; every request then passes its own values.
        generation = GenerationConfig(
            do_sample=True, temperature=0.7, top_k=50, top_p=0.9,
            max_new_tokens=self.info.n_ctx, eos_token_id=self._stop_ids or None,
            pad_token_id=self._tokenizer.pad_token_id if self._tokenizer.pad_token_id
            is not None else (self._stop_ids[0] if self._stop_ids else 0),
        )
        batching = batching_config(self.info.n_ctx, self.max_sequences, device)
        try:
            manager = self._model.init_continuous_batching(
                generation_config=generation, continuous_batching_config=batching)
            self._pick, self._constrain = batch_sampling.install(manager)
            self._distributions = transformers_logprobs.install(manager)
            if device == "cuda":
                manager.warmup()
            manager.start()
        except Exception as exc:  # noqa: BLE001
            raise load_failure(f"continuous batching for {self.info.id}", exc) from None
        self._manager = manager

    def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.stop(block=True, timeout=10)
            manager.destroy()
        self._model = None

    # -- generation -----------------------------------------------------------------------

    def _require(self) -> Any:
        if self._manager is None:
            raise Unavailable("the model is not loaded yet")
        return self._manager

    def render_chat(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] | None = None) -> str:
        return self.chat_template.render(fold_system(messages) if self._fold_system
                                         else messages, tools=tools)

    def tokenize(self, prompt: str) -> list[int]:
        self._require()
        bos = self._tokenizer.bos_token
        # The chat template may already have written the BOS token as text.
        add_special = not (bos and prompt.startswith(bos))
        return list(self._tokenizer(prompt, add_special_tokens=add_special)["input_ids"])

    def request_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        """``params`` as the per-request arguments of the CB processors."""
        kwargs: dict[str, Any] = {
            # Greedy is ``Pick``'s job; CB's temperature processor divides by this.
            "temperature": float(params.temperature) if params.temperature > 0 else 1.0,
            "greedy": params.temperature <= 0,
            "top_k": int(params.top_k) if params.top_k > 0 else len(self._tokenizer),
            "top_p": float(params.top_p),
            "min_p": float(params.min_p),
            "repetition_penalty": float(params.repetition_penalty),
            "presence_penalty": float(params.presence_penalty),
            "frequency_penalty": float(params.frequency_penalty),
        }
        if params.seed is not None:
            kwargs["seed"] = int(params.seed)
        if params.logprobs is not None:
            kwargs[transformers_logprobs.KWARG] = True
        return kwargs

    def stream_tokens(self, prompt_tokens: list[int],
                      params: SamplingParams) -> AsyncIterator[StreamEvent]:
        self._require()
        return self._stream(prompt_tokens, params)

    async def _stream(self, prompt: list[int], params: SamplingParams
                      ) -> AsyncIterator[StreamEvent]:
        manager = self._require()
        budget = min(params.max_tokens, self.info.n_ctx - len(prompt))
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        request_id = f"starchart-{uuid.uuid4().hex}"
        if params.grammar is not None and self.structured is not None and self._constrain:
            # Off the event loop: the first constrained request builds llguidance's vocabulary.
            constraint = await asyncio.to_thread(self.structured.start, params.grammar)
            self._constrain.add(request_id, constraint)
        manager.register_result_handler(request_id, outputs.put_nowait)
        manager.add_request(
            prompt, request_id=request_id, max_new_tokens=budget, streaming=True,
            eos_token_id=-1 if params.ignore_eos else list(self._stop_ids),
            **self.request_kwargs(params),
        )
        decoder = IncrementalDecoder(self._tokenizer)
        text = TextStream(params.stop)
        stop_ids = frozenset(() if params.ignore_eos else self._stop_ids)
        produced = unsent = 0  # unsent: tokens whose text is held back (a stop string?)
        entries: list[TokenLogprob] = []  # their logprobs, when asked for
        reason: FinishReason | None = None
        running = True
        try:
            while reason is None:
                output = await self._next_output(manager, outputs)
                running = not output.is_finished()
                if output.error:
                    raise StarchartError(f"generation failed: {output.error}")
                for token in output.generated_tokens[produced:]:
                    entry = self._logprob(request_id, token, params.logprobs)
                    if token in stop_ids:
                        reason = "stop"
                        break
                    produced += 1
                    unsent += 1
                    self.tokens_generated += 1
                    if entry is not None:
                        entries.append(entry)
                    piece = text.feed(decoder.add(token).encode("utf-8"))
                    if piece:
                        yield TextDelta(piece, tokens=unsent, logprobs=tuple(entries))
                        unsent = 0
                        entries = []
                    if text.stopped:
                        reason = "stop"
                        break
                if reason is None and output.is_finished():
                    reason = "length"
            tail = text.feed(decoder.flush().encode("utf-8")) + text.flush()
            if tail:
                yield TextDelta(tail, tokens=unsent, logprobs=tuple(entries))
            yield Finish(reason, Usage(len(prompt), produced))
        finally:
            self._forget(manager, request_id, cancel=running)

    def _logprob(self, request_id: str, token: int, top: int | None) -> TokenLogprob | None:
        if top is None or self._distributions is None or self._token_bytes is None:
            return None
        row = self._distributions.take(request_id)
        return None if row is None else logprobs.entry(row, token, top, self._token_bytes)

    async def _next_output(self, manager: Any, outputs: asyncio.Queue[Any]) -> Any:
        while True:
            try:
                # Not wait_for: on Python 3.11 it returns an output that arrives as the
                # task is cancelled, and the cancellation is lost.
                async with asyncio.timeout(_POLL_SECONDS):
                    return await outputs.get()
            except TimeoutError:
                if not manager.is_running():
                    error = manager.background_thread_status.fatal_error
                    raise Unavailable(f"the batching thread stopped ({error or 'shut down'})"
                                      ) from None

    def _forget(self, manager: Any, request_id: str, *, cancel: bool) -> None:
        """Drop a request from our tables and, if it still runs, from the batch."""
        if cancel:
            manager.cancel_request(request_id)
        router = manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)
        if self._pick is not None:
            self._pick.forget(request_id)
        if self._constrain is not None:
            self._constrain.forget(request_id)
        if self._distributions is not None:
            self._distributions.forget(request_id)

    @property
    def active_requests(self) -> int:
        """Requests the batch scheduler holds (running or waiting); 0 when idle."""
        processor = getattr(self._manager, "batch_processor", None)
        if processor is None:
            return 0
        scheduler = processor.scheduler
        return len(scheduler.active_requests) + len(scheduler.waiting_requests)
