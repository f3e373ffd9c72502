"""Which constrained-decoding library: llguidance, xgrammar or llama.cpp's own grammar.

On the embedded model's vocabulary (SmolLM2, 49152 tokens), side by side in one run:

1. compile time of a 20-field JSON schema (schema -> a matcher ready for its first
   mask; the median of a few fresh compiles, caches off);
2. per-token cost of the constraint along a fixed valid 20-field document: compute
   the next-token mask, apply it to a logits row, advance with the token; for 1
   sequence and for 8 sequences at once (each library's batch path);
3. end-to-end decode tokens/s on the embedded model through llama-cpp-python at
   1 stream: no constraint / llguidance as a logits processor / llama.cpp's
   grammar sampler (``LlamaGrammar.from_json_schema``);
4. JSON-schema keywords: for each, is a violating document rejected and a valid
   one accepted (``enforced``), accepted without enforcement (``IGNORED``), or the
   schema refused at compile time (``refused``).

    .venv/bin/python benchmarks/bench_structured_libraries.py [--rounds 3]

xgrammar and llguidance are not starchart dependencies: `pip install xgrammar` to
run the xgrammar columns (they are skipped when it is missing).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from starchart.engines.llamacpp import default_threads  # sets llama.cpp's OpenMP policy
from starchart.registry import embedded_gguf

PROMPT = ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nDescribe a person as JSON."
          "<|im_end|>\n<|im_start|>assistant\n")


def schema_with(n: int) -> dict[str, Any]:
    kinds = [
        {"type": "string", "maxLength": 12},
        {"type": "integer", "minimum": 0, "maximum": 1000},
        {"type": "boolean"},
        {"enum": ["red", "green", "blue"]},
        {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
    ]
    props = {f"field_{i}": kinds[i % len(kinds)] for i in range(n)}
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def document(n: int) -> str:
    values = ["abc", 42, True, "green", [1, 2]]
    return json.dumps({f"field_{i}": values[i % len(values)] for i in range(n)},
                      separators=(",", ":"))


# Keyword -> (schema, a valid instance, an instance that only that keyword forbids).
KEYWORDS: dict[str, tuple[dict[str, Any], Any, Any]] = {
    "required": ({"type": "object", "properties": {"a": {"type": "integer"}},
                  "required": ["a"]}, {"a": 1}, {}),
    "additionalProperties": ({"type": "object", "properties": {"a": {"type": "integer"}},
                              "additionalProperties": False}, {"a": 1}, {"a": 1, "b": 2}),
    "enum": ({"enum": ["x", "y"]}, "x", "z"),
    "const": ({"const": "x"}, "x", "y"),
    "minimum/maximum": ({"type": "integer", "minimum": 5, "maximum": 9}, 7, 12),
    "exclusiveMaximum": ({"type": "number", "exclusiveMaximum": 5}, 4.5, 5),
    "multipleOf": ({"type": "integer", "multipleOf": 5}, 10, 7),
    "minLength": ({"type": "string", "minLength": 3}, "abcd", "ab"),
    "maxLength": ({"type": "string", "maxLength": 3}, "ab", "abcd"),
    "pattern": ({"type": "string", "pattern": "^[a-z]+$"}, "abc", "ab1"),
    "format: date": ({"type": "string", "format": "date"}, "2024-01-31", "tuesday"),
    "minItems": ({"type": "array", "items": {"type": "integer"}, "minItems": 2}, [1, 2], [1]),
    "maxItems": ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [1], [1, 2, 3]),
    "uniqueItems": ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
                    [1, 2], [1, 1]),
    "$ref/$defs": ({"$defs": {"n": {"type": "integer"}}, "type": "object",
                    "properties": {"a": {"$ref": "#/$defs/n"}}, "required": ["a"]},
                   {"a": 1}, {"a": "s"}),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, True, "s"),
    "oneOf": ({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, 3, "s"),
    "allOf": ({"allOf": [{"type": "integer"}, {"minimum": 3}]}, 4, 1),
    "not": ({"not": {"type": "integer"}}, "s", 3),
    "minProperties": ({"type": "object", "minProperties": 1}, {"a": 1}, {}),
    "patternProperties": ({"type": "object", "patternProperties": {"^x": {"type": "integer"}},
                           "additionalProperties": False}, {"x1": 1}, {"x1": "s"}),
}


def median_time(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mask_logits(logits: np.ndarray, bitmask: np.ndarray) -> None:
    """A 32-bit-word token bitmask applied to one logits row (bit set = allowed)."""
    allowed = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: logits.shape[0]]
    logits[allowed == 0] = -np.inf


# -- llguidance ---------------------------------------------------------------------------

class Llg:
    name = "llguidance"

    def __init__(self, llama: Any) -> None:
        import llguidance
        import llguidance.llamacpp

        self.llg = llguidance
        start = time.perf_counter()
        self.tok = llguidance.llamacpp.lltokenizer_from_vocab(llama._model.vocab)
        self.tokenizer_seconds = time.perf_counter() - start
        self.n_vocab = llama.n_vocab()

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema)
        matcher = self.llg.LLMatcher(self.tok, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def fresh_compile(self, schema: dict[str, Any]) -> None:
        matcher = self.compile(schema)
        mask = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)
        matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)

    def walk(self, matchers: list[Any], tokens: list[int]) -> float:
        """Seconds per token, constraint only, for len(matchers) sequences at once."""
        from llguidance.numpy import fill_next_token_bitmask_par

        executor = self.llg.LLExecutor()
        masks = np.zeros((len(matchers), (self.n_vocab + 31) // 32), dtype=np.int32)
        logits = np.zeros((len(matchers), self.n_vocab), dtype=np.float32)
        start = time.perf_counter()
        for token in tokens:
            fill_next_token_bitmask_par(executor, [(m, i) for i, m in enumerate(matchers)],
                                        masks)
            for i, matcher in enumerate(matchers):
                mask_logits(logits[i], masks[i])
                assert matcher.consume_token(token), matcher.get_error()
        return (time.perf_counter() - start) / len(tokens)

    def verdict(self, schema: dict[str, Any], tokens_of: Callable[[Any], list[int]],
                good: Any, bad: Any) -> str:
        try:
            self.compile(schema)
        except ValueError as exc:
            return "refused: " + str(exc).splitlines()[0][:60]

        def accepts(value: Any) -> bool:
            matcher = self.compile(schema)
            return matcher.consume_tokens(tokens_of(value)) and matcher.is_accepting()

        return _verdict(accepts(good), accepts(bad))


def _verdict(good: bool, bad: bool) -> str:
    if not good:
        return "BROKEN (valid rejected)"
    return "enforced" if not bad else "IGNORED"


# -- xgrammar -----------------------------------------------------------------------------

class Xgr:
    name = "xgrammar"

    def __init__(self, llama: Any) -> None:
        import xgrammar
        from transformers import AutoTokenizer

        self.xgr = xgrammar
        path = embedded_gguf()
        hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        start = time.perf_counter()
        self.info = xgrammar.TokenizerInfo.from_huggingface(
            hf, vocab_size=llama.n_vocab(), stop_token_ids=[llama.token_eos()])
        self.tokenizer_seconds = time.perf_counter() - start
        self.n_vocab = llama.n_vocab()

    def compiler(self) -> Any:
        return self.xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.xgr.GrammarMatcher(self.compiler().compile_json_schema(json.dumps(schema)))

    def fresh_compile(self, schema: dict[str, Any]) -> None:
        matcher = self.compile(schema)
        mask = self.xgr.allocate_token_bitmask(1, self.n_vocab)
        matcher.fill_next_token_bitmask(mask)

    def walk(self, matchers: list[Any], tokens: list[int]) -> float:
        masks = self.xgr.allocate_token_bitmask(len(matchers), self.n_vocab)
        logits = np.zeros((len(matchers), self.n_vocab), dtype=np.float32)
        batch = self.xgr.BatchGrammarMatcher(max_threads=2)
        start = time.perf_counter()
        for token in tokens:
            if len(matchers) == 1:
                matchers[0].fill_next_token_bitmask(masks)
            else:
                batch.batch_fill_next_token_bitmask(matchers, masks)
            rows = masks.numpy()
            for i, matcher in enumerate(matchers):
                mask_logits(logits[i], rows[i])
                assert matcher.accept_token(token)
        return (time.perf_counter() - start) / len(tokens)

    def verdict(self, schema: dict[str, Any], tokens_of: Callable[[Any], list[int]],
                good: Any, bad: Any) -> str:
        try:
            self.compile(schema)
        except Exception as exc:  # noqa: BLE001 - any refusal is the answer
            return "refused: " + str(exc).splitlines()[0][:60]

        def accepts(value: Any) -> bool:
            matcher = self.compile(schema)
            return all(matcher.accept_token(t) for t in tokens_of(value)) and \
                matcher.accept_token(self.info.stop_token_ids[0])

        return _verdict(accepts(good), accepts(bad))


# -- llama.cpp's grammar sampler ----------------------------------------------------------

class LlamaGbnf:
    name = "llama.cpp GBNF"

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.tokenizer_seconds = 0.0

    def compile(self, schema: dict[str, Any]) -> Any:
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        grammar = LlamaGrammar.from_json_schema(json.dumps(schema))
        sampler = llama_cpp.llama_sampler_init_grammar(
            self.llama._model.vocab, grammar._grammar.encode(), b"root")
        if not sampler:
            raise ValueError("llama.cpp refused the grammar")
        return sampler

    def fresh_compile(self, schema: dict[str, Any]) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(self.compile(schema))

    def allowed(self, sampler: Any, token: int) -> bool:
        """Whether the grammar lets ``token`` through (one-candidate array)."""
        import llama_cpp

        data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        array = llama_cpp.llama_token_data_array(data, 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return data[0].logit != -np.inf

    def verdict(self, schema: dict[str, Any], tokens_of: Callable[[Any], list[int]],
                good: Any, bad: Any) -> str:
        import llama_cpp

        try:
            self.compile(schema)
        except Exception as exc:  # noqa: BLE001
            return "refused: " + str(exc).splitlines()[0][:60]

        def accepts(value: Any) -> bool:
            sampler = self.compile(schema)
            try:
                for token in tokens_of(value):
                    if not self.allowed(sampler, token):
                        return False
                    llama_cpp.llama_sampler_accept(sampler, token)
                return self.allowed(sampler, self.llama.token_eos())
            finally:
                llama_cpp.llama_sampler_free(sampler)

        return _verdict(accepts(good), accepts(bad))


# -- end to end ---------------------------------------------------------------------------

def decode_rate(llama: Any, max_tokens: int, **constraint: Any) -> tuple[float, int]:
    """Decode tokens/s (after the first token) and tokens produced."""
    prompt = llama.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llama.set_seed(7)
    eos = llama.token_eos()
    n, first = 0, None
    for token in llama.generate(prompt, temp=0.2, top_k=50, top_p=0.95, min_p=0.0,
                                repeat_penalty=1.0, **constraint.get("kwargs", {})):
        if first is None:
            first = time.perf_counter()
        if token == eos or n >= max_tokens:
            break
        n += 1
        advance = constraint.get("advance")
        if advance:
            advance(token)
    assert first is not None
    return (n - 1) / (time.perf_counter() - first), n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    import llama_cpp

    path = embedded_gguf()
    llama = llama_cpp.Llama(str(path), n_ctx=1024, n_threads=default_threads(),
                            n_threads_batch=default_threads(), verbose=False)

    def tokens_of(value: Any) -> list[int]:
        return llama.tokenize(json.dumps(value, separators=(",", ":")).encode(),
                              add_bos=False, special=False)

    libraries: list[Any] = [Llg(llama)]
    try:
        libraries.append(Xgr(llama))
    except ImportError:
        print("xgrammar not installed: its columns are skipped")
    libraries.append(LlamaGbnf(llama))

    schema20 = schema_with(20)
    doc_tokens = llama.tokenize(document(20).encode(), add_bos=False, special=False)
    print(f"vocabulary {llama.n_vocab()} tokens; 20-field document = {len(doc_tokens)} tokens")
    print("\n| library | tokenizer setup (once) | compile 20 fields | per token, 1 seq |"
          " per token, 8 seqs |")
    print("|---|---|---|---|---|")
    for lib in libraries:
        compile_s = median_time(lambda lib=lib: lib.fresh_compile(schema20), args.rounds)
        if hasattr(lib, "walk"):
            one = lib.walk([lib.compile(schema20)], doc_tokens)
            eight = lib.walk([lib.compile(schema20) for _ in range(8)], doc_tokens)
            per = f"{one * 1e3:.3f} ms | {eight * 1e3:.3f} ms"
        else:
            per = "(inside llama.cpp's sampler: see end to end) | -"
        print(f"| {lib.name} | {lib.tokenizer_seconds:.2f} s | {compile_s * 1e3:.1f} ms | {per} |")

    # End to end, 1 stream, a 10-field schema, the three ways alternating per round.
    import llguidance
    import llguidance.llamacpp

    from starchart.engines.base import SamplingParams  # noqa: F401 - same sampler defaults
    schema10 = schema_with(10)
    llg_tok = libraries[0].tok
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema10)

    def with_llg() -> tuple[float, int]:
        matcher = llguidance.LLMatcher(llg_tok, grammar, log_level=0)
        mask = np.zeros((llama.n_vocab() + 31) // 32, dtype=np.int32)

        def processor(_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
            mask_logits(scores, mask)
            return scores

        return decode_rate(llama, args.max_tokens,
                           kwargs={"logits_processor": [processor]},
                           advance=matcher.consume_token)

    def with_gbnf() -> tuple[float, int]:
        from llama_cpp.llama_grammar import LlamaGrammar

        gbnf = LlamaGrammar.from_json_schema(json.dumps(schema10))
        return decode_rate(llama, args.max_tokens, kwargs={"grammar": gbnf})

    def plain() -> tuple[float, int]:
        return decode_rate(llama, args.max_tokens)

    runs: dict[str, list[tuple[float, int]]] = {"none": [], "llguidance": [], "llama.cpp GBNF": []}
    for _ in range(args.rounds):
        runs["none"].append(plain())
        runs["llguidance"].append(with_llg())
        runs["llama.cpp GBNF"].append(with_gbnf())
    base = statistics.median(r for r, _ in runs["none"])
    print("\n| 10-field schema, 1 stream, llama.cpp | decode tokens/s | vs none | tokens |")
    print("|---|---|---|---|")
    for name, results in runs.items():
        rate = statistics.median(r for r, _ in results)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} | {results[0][1]} |")

    print("\n| keyword | " + " | ".join(lib.name for lib in libraries) + " |")
    print("|---|" + "---|" * len(libraries))
    for keyword, (schema, good, bad) in KEYWORDS.items():
        cells = [lib.verdict(schema, tokens_of, good, bad) for lib in libraries]
        print(f"| {keyword} | " + " | ".join(cells) + " |")
    llama.close()


if __name__ == "__main__":
    main()
