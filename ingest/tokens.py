"""Tokenize prompts once, up front: the token counts fix every row offset of the warehouse,
so arrays can be created at their final shape and a resumed run knows where each batch goes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from warehouse.ingest.datasets import Prompt
from warehouse.store.format import PROMPT_SCHEMA, TOKEN_SCHEMA
from warehouse.store.tables import numpy_columns, table_of


@dataclass(frozen=True)
class Encoded:
    """Each prompt's token ids and their character spans in its text."""

    ids: list[list[int]]
    spans: list[list[tuple[int, int]]]

    def take(self, rows: Iterable[int]) -> Encoded:
        rows = list(rows)
        return Encoded([self.ids[i] for i in rows], [self.spans[i] for i in rows])


def encode_prompts(tokenizer, prompts: Sequence[Prompt]) -> Encoded:
    enc = tokenizer([p.text for p in prompts], add_special_tokens=True, return_offsets_mapping=True)
    return Encoded(enc["input_ids"], enc["offset_mapping"])


def tokenize_prompts(
    tokenizer, prompts: Sequence[Prompt], encoded: Encoded | None = None
) -> tuple[pa.Table, pa.Table]:
    """The `prompts` and `tokens` tables for these prompts, in this order (`encoded`: theirs
    from encode_prompts, if the caller has it)."""
    if encoded is None:
        encoded = encode_prompts(tokenizer, prompts)
    ids = encoded.ids
    n_tokens = np.array([len(x) for x in ids], dtype=np.int64)
    if len(prompts) and n_tokens.min() == 0:
        empty = prompts[int(np.argmin(n_tokens))]
        raise ValueError(f"prompt {empty.prompt_id} tokenizes to no tokens: {empty.text!r}")
    offsets = np.concatenate([[0], np.cumsum(n_tokens)[:-1]]) if len(ids) else n_tokens
    flat_ids = [t for x in ids for t in x]
    vocab_text = {t: token_text(tokenizer, t) for t in set(flat_ids)}
    is_subject: list[bool] = []
    for p, spans in zip(prompts, encoded.spans, strict=True):
        # A token is part of the subject when its characters overlap the subject's span;
        # special tokens have the empty span (0, 0) and never are.
        is_subject += [a < p.subject_end and b > p.subject_start and b > a for a, b in spans]
    prompt_rows = np.repeat(np.arange(len(ids)), n_tokens)
    positions = np.concatenate([np.arange(n) for n in n_tokens]) if len(ids) else n_tokens
    prompt_ids = np.array([p.prompt_id for p in prompts], dtype=np.int64)
    tokens = table_of(
        {
            "token_row": np.arange(len(flat_ids), dtype=np.int64),
            "prompt_id": prompt_ids[prompt_rows] if len(ids) else prompt_ids,
            "prompt_row": prompt_rows.astype(np.int64),
            "position": positions.astype(np.int32),
            "token_id": np.array(flat_ids, dtype=np.int32),
            "token": [vocab_text[t] for t in flat_ids],
            "is_subject": is_subject,
            "is_last": (positions == n_tokens[prompt_rows] - 1) if len(ids) else [],
        },
        TOKEN_SCHEMA,
    )
    table = table_of(
        {
            "prompt_row": np.arange(len(prompts), dtype=np.int64),
            "prompt_id": prompt_ids,
            "relation": [p.relation for p in prompts],
            "language": [p.language for p in prompts],
            "split": [p.split for p in prompts],
            "subject": [p.subject for p in prompts],
            "subject_id": [p.subject_id for p in prompts],
            "object": [p.object for p in prompts],
            "aliases": [list(p.aliases) for p in prompts],
            "template": [p.template for p in prompts],
            "text": [p.text for p in prompts],
            "n_tokens": n_tokens.astype(np.int32),
            "token_offset": offsets.astype(np.int64),
        },
        PROMPT_SCHEMA,
    )
    return table, tokens


def token_text(tokenizer, token_id: int) -> str:
    """What a token is, as text. Decoding the id alone shows it (" Paris"), unlike the raw BPE
    piece ("ĠParis"), except where the token holds part of a multi-byte UTF-8 character
    (Chinese and Japanese often): alone that decodes to "\ufffd". Such a token shows its
    bytes instead, the incomplete ones as <0xNN> (as SentencePiece names its byte tokens):
    "<0xE5><0xB7>", or "是<0xE6>" where a whole character comes first."""
    text = tokenizer.decode([token_id])
    if "\ufffd" not in text:
        return text
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str) or any(c not in _UNICODE_TO_BYTE for c in piece):
        return text  # not a byte-level BPE piece: keep what decoding gives
    raw = bytes(_UNICODE_TO_BYTE[c] for c in piece)
    return raw.decode("utf-8", errors="surrogateescape").translate(_BYTE_NAMES)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (printable character -> byte), which byte-level
    tokenizers (SmolLM2, Llama 3, Qwen, GPT-2) spell their pieces in."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in keep}
    for n, b in enumerate(b for b in range(256) if b not in chars):
        chars[b] = chr(256 + n)
    return {c: b for b, c in chars.items()}


_UNICODE_TO_BYTE = _byte_level_alphabet()
# surrogateescape decodes an undecodable byte 0xNN to U+DCNN.
_BYTE_NAMES = {0xDC00 + b: f"<0x{b:02X}>" for b in range(128, 256)}


def token_ids_by_prompt(tokens: pa.Table, n_prompts: int) -> list[list[int]]:
    """Input ids of each prompt, read back from the stored tokens table."""
    ids, rows = numpy_columns(tokens, ["token_id", "prompt_row"])
    bounds = np.searchsorted(rows, np.arange(n_prompts + 1))
    return [ids[bounds[i] : bounds[i + 1]].tolist() for i in range(n_prompts)]
