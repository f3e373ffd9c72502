"""What do durable conversations and API keys cost? Ratios against plain chat.

One model, one process, real HTTP on loopback. Each round runs a
conversation of --turns turns three ways, alternating so machine noise hits
all of them:

- chat: /v1/chat/completions, the client resending the whole history (the
  user's document kept it in a dict; this is the no-storage baseline);
- stored: /v1/conversations/{id}/messages, history kept server-side in SQLite,
  user turn committed before generation, reply flushed while it streams;
- stored+key: the same with an API key required (hash check per request).

Replies are exactly --max-tokens long (end-of-sequence masked, temperature 0)
so all three decode the same tokens from the same prompts. Then 16
conversations are driven at once (16 threads) against 16 sequential
conversations, to show that concurrent conversations are not slowed by the
store (the engine serialises generation either way).

    .venv/bin/python benchmarks/bench_conversations.py [--rounds 5] [--turns 4] [--threads N]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from starchart.api.app import create_app
from starchart.engines.llamacpp import LlamaCppEngine
from starchart.registry import EMBEDDED_NAME, embedded_gguf
from starchart.settings import Settings
from starchart.store import Store

QUESTIONS = ["Tell me about lighthouses.", "Why are they tall?", "Who keeps them?",
             "Are there any left?", "What replaced them?", "Thank you."]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(settings: Settings, engine: LlamaCppEngine) -> tuple[str, uvicorn.Server]:
    port = _port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engines=[engine]),
                                           host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/ready").status_code == 200:
                return url, server
        except httpx.HTTPError:
            time.sleep(0.05)


def chat_conversation(client: httpx.Client, turns: int, sampling: dict) -> None:
    messages = [{"role": "system", "content": ""}]
    for question in QUESTIONS[:turns]:
        messages.append({"role": "user", "content": question})
        reply = client.post("/v1/chat/completions", json={"messages": messages, **sampling})
        reply.raise_for_status()
        messages.append(reply.json()["choices"][0]["message"])


def stored_conversation(client: httpx.Client, turns: int, sampling: dict) -> None:
    conv = client.post("/v1/conversations", json={"system_prompt": ""}).json()
    for question in QUESTIONS[:turns]:
        reply = client.post(f"/v1/conversations/{conv['id']}/messages",
                            json={"content": question, "stream": False, **sampling})
        reply.raise_for_status()


def timed(fn, *args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def at_once(url: str, headers: dict, fn, n: int, turns: int, sampling: dict) -> float:
    def one() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            fn(client, turns, sampling)

    threads = [threading.Thread(target=one) for _ in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=4, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp threads (default: the engine's)")
    args = parser.parse_args()
    sampling = {"temperature": 0, "max_tokens": args.max_tokens, "ignore_eos": True}

    engine = LlamaCppEngine(EMBEDDED_NAME, embedded_gguf(), n_ctx=2048, threads=args.threads)
    engine.load()
    with tempfile.TemporaryDirectory() as tmp:
        open_settings = Settings(home=Path(tmp) / "open", n_ctx=2048)
        keyed_settings = Settings(home=Path(tmp) / "keyed", n_ctx=2048)
        store = Store.open(keyed_settings)
        key = store.keys.create("bench")[1]
        store.close()
        open_url, open_server = serve(open_settings, engine)
        keyed_url, keyed_server = serve(keyed_settings, engine)
        plain = httpx.Client(base_url=open_url, timeout=600)
        keyed = httpx.Client(base_url=keyed_url, timeout=600,
                             headers={"Authorization": f"Bearer {key}"})
        chat_conversation(plain, 1, sampling)  # warm-up
        runs: dict[str, list[float]] = {"chat": [], "stored": [], "stored+key": []}
        for _ in range(args.rounds):
            runs["chat"].append(timed(chat_conversation, plain, args.turns, sampling))
            runs["stored"].append(timed(stored_conversation, plain, args.turns, sampling))
            runs["stored+key"].append(timed(stored_conversation, keyed, args.turns, sampling))
        base = statistics.median(runs["chat"])
        print(f"\n{args.turns}-turn conversation, {args.max_tokens} tokens per reply,"
              f" median of {args.rounds} rounds\n")
        print("| path | seconds per conversation | ratio to chat |")
        print("|---|---|---|")
        for name, times in runs.items():
            median = statistics.median(times)
            print(f"| {name} | {median:.3f} | {median / base:.3f} |")

        n = args.concurrent
        many: dict[str, list[float]] = {"plain chat, one after another": [],
                                         "stored, one after another": [],
                                         f"stored, {n} at once": []}
        for _ in range(args.rounds):  # interleaved, like the first table
            many["plain chat, one after another"].append(timed(
                lambda: [chat_conversation(plain, args.turns, sampling) for _ in range(n)]))
            many["stored, one after another"].append(timed(
                lambda: [stored_conversation(plain, args.turns, sampling) for _ in range(n)]))
            many[f"stored, {n} at once"].append(
                at_once(open_url, {}, stored_conversation, n, args.turns, sampling))
        base = statistics.median(many["plain chat, one after another"])
        print(f"\n{n} conversations of {args.turns} turns, median of {args.rounds} rounds\n")
        print("| run | seconds | ratio to plain chat one after another |")
        print("|---|---|---|")
        for name, times in many.items():
            median = statistics.median(times)
            print(f"| {name} | {median:.2f} | {median / base:.3f} |")
        for server in (open_server, keyed_server):
            server.should_exit = True
    engine.close()


if __name__ == "__main__":
    main()
