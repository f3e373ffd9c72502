"""Which default system prompt should the embedded model get? Measure, don't guess.

Asks factual questions at temperature 0 (server defaults otherwise) under each
candidate system prompt and counts the answers containing the expected word.

    .venv/bin/python benchmarks/system_prompt_eval.py
"""

from __future__ import annotations

import asyncio

from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.services.chat import collect, default_params
from starchart.settings import Settings

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("What is the chemical symbol for water?", "H2O"),
    ("How many days are in a week?", "seven|7"),
    ("What color is the sky on a clear day?", "blue"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is the opposite of hot?", "cold"),
]
CANDIDATES: dict[str, str | None] = {
    "no system message (template's built-in)": None,
    "empty system message": "",
    "'You are a helpful assistant.'": "You are a helpful assistant.",
    "'You are a helpful AI assistant named SmolLM, trained by Hugging Face'":
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
}


async def main() -> None:
    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=2048)
    engine.load()
    params = default_params(Settings()).replace(temperature=0, max_tokens=64)
    print("| default system prompt | correct answers |")
    print("|---|---|")
    for label, system in CANDIDATES.items():
        right = 0
        for question, expected in QUESTIONS:
            messages = [{"role": "user", "content": question}]
            if system is not None:
                messages.insert(0, {"role": "system", "content": system})
            text = (await collect(engine.stream_chat(messages, params))).text
            right += any(word.lower() in text.lower() for word in expected.split("|"))
        print(f"| {label} | {right}/{len(QUESTIONS)} |")
    engine.close()


if __name__ == "__main__":
    asyncio.run(main())
