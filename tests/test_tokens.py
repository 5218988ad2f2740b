"""The tokens table's text of each token: decoded text, or bytes where a token splits a
character."""

from __future__ import annotations

import re

from conftest import tiny_tokenizer

from warehouse.ingest.tokens import token_text

BYTE = re.compile(r"<0x([0-9A-F]{2})>")


def _spelled_bytes(shown: str) -> bytes:
    out = b""
    for part in re.split(r"(<0x[0-9A-F]{2}>)", shown):
        m = BYTE.fullmatch(part)
        out += bytes([int(m[1], 16)]) if m else part.encode()
    return out


def test_split_utf8_tokens_show_their_bytes() -> None:
    tok = tiny_tokenizer()
    text = "巴黎是法国的首都。Tokyo is the capital of Japan. é"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    shown = [token_text(tok, i) for i in ids]
    assert not any("\ufffd" in s for s in shown)
    assert sum(bool(BYTE.search(s)) for s in shown) >= 9  # the Chinese is split into bytes
    # The shown tokens spell the text's bytes exactly, in order.
    assert b"".join(map(_spelled_bytes, shown)) == text.encode()
    # Tokens that are whole text show what decoding gives (leading space included).
    for i, s in zip(ids, shown, strict=True):
        if "\ufffd" not in tok.decode([i]):
            assert s == tok.decode([i])
    assert " capital" in shown or " the" in shown


def test_text_with_a_replacement_character_is_spelled_exactly() -> None:
    # U+FFFD in the text is three bytes; split across tokens, each shows its bytes.
    tok = tiny_tokenizer()
    ids = tok("a\ufffdb", add_special_tokens=False)["input_ids"]
    shown = [token_text(tok, i) for i in ids]
    assert b"".join(map(_spelled_bytes, shown)) == "a\ufffdb".encode()
