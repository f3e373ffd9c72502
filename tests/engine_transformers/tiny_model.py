"""A tiny Llama whose next token is a lookup table, built in code (no download).

Every layer's output projections are zero, so the residual stream is just the
current token's embedding; embeddings are one-hot and ``lm_head`` maps each
token to the one that follows it in ``CHAINS``. Greedy or not (the winning
logit is ~200 above the rest), generation walks those chains, which lets tests
script exactly what the model says. Tokens outside a chain are followed by
``END``. The tokenizer is byte-level BPE with no merges: one token per byte,
so a Chinese character spans three tokens and an emoji four.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

END = "<|end|>"
SPECIALS = ["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", END,
            "<|im_start|>", "<|im_end|>"]
# After the starchat generation prompt ("<|assistant|>\n") the model says this, then END.
ANSWER = "OK 你🙂"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def build_tokenizer(specials: list[str] = SPECIALS) -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")


def chains(tokenizer: PreTrainedTokenizerFast) -> dict[int, int]:
    """token id -> the id that follows it."""
    end = tokenizer.convert_tokens_to_ids(END)
    table: dict[int, int] = {}
    answer = tokenizer.encode("\n" + ANSWER, add_special_tokens=False)
    letters = tokenizer.encode(LETTERS, add_special_tokens=False)
    for seq in (answer, letters):
        for a, b in zip(seq, [*seq[1:], end], strict=True):
            table[a] = b
    return table


def build(folder: Path) -> Path:
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    hidden = vocab + (-vocab % 8)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=16,
                         num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                         head_dim=8, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    end = tokenizer.convert_tokens_to_ids(END)
    table = chains(tokenizer)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab].copy_(torch.eye(vocab))
        model.model.norm.weight.fill_(1.0)
        head = torch.zeros(vocab, hidden)
        for token in range(vocab):
            head[table.get(token, end), token] = 10.0
        model.lm_head.weight.copy_(head)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
