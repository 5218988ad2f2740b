"""The tokens table's text of each token: decoded text, or bytes where a token splits a
character; the tables' builder, and an ingest and eval that never import pandas."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from conftest import tiny_tokenizer

from warehouse.ingest.tokens import token_text
from warehouse.store.tables import numpy_columns, table_of

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


def test_table_of_gives_the_schema_and_the_values() -> None:
    schema = pa.schema([("row", pa.int64()), ("n", pa.int32()), ("names", pa.list_(pa.string()))])
    table = table_of({"row": np.arange(2), "n": [3, 4], "names": [[], ["a", "b"]]}, schema)
    assert table.schema == schema
    assert table.to_pylist() == [
        {"row": 0, "n": 3, "names": []},
        {"row": 1, "n": 4, "names": ["a", "b"]},
    ]
    empty = table_of({"row": [], "n": [], "names": []}, schema)
    assert (empty.schema, empty.num_rows) == (schema, 0)


def test_table_of_refuses_a_value_its_column_cannot_hold() -> None:
    schema = pa.schema([("n", pa.int32())])
    with pytest.raises(pa.ArrowInvalid):
        table_of({"n": ["three"]}, schema)


# An ingest and a baseline eval in a fresh process, reporting whether anything imported
# pandas: pyarrow's table constructors and `to_numpy` do (0.3-0.4 s), and neither needs them.
_INGEST = """
import sys
from warehouse.analysis.evaluate import EvalConfig, run_eval
from warehouse.ingest.run import IngestConfig, ingest
ingest(IngestConfig(out=sys.argv[1], model=sys.argv[2], dataset=sys.argv[3]), False)
run_eval(sys.argv[1], EvalConfig(split="all", baseline=True), False)
print("pandas" in sys.modules)
"""


def test_an_ingest_and_an_eval_import_no_pandas(tmp_path, tiny_llama_dir) -> None:
    pytest.importorskip("pandas")  # where it is not installed, nothing could import it
    data = tmp_path / "d.jsonl"
    row = {"relation": "capital", "language": "en", "subject": "Peru", "object": "Lima"}
    data.write_text(json.dumps({**row, "templates": ["The capital of {subject} is"]}))
    argv = [str(tmp_path / "w"), str(tiny_llama_dir), str(data)]
    done = subprocess.run(
        [sys.executable, "-c", _INGEST, *argv], capture_output=True, text=True, timeout=300
    )
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr[-2000:]


def test_numpy_columns_are_writable_arrays_of_the_columns() -> None:
    table = pa.table({"a": pa.array([1, 2], pa.int32()), "b": pa.array([3.5, 4.5])})
    b, a = numpy_columns(table, ["b", "a"])
    assert (a.dtype, a.tolist(), b.dtype, b.tolist()) == (np.int32, [1, 2], np.float64, [3.5, 4.5])
    a[0] = 7  # a caller may edit them in place
    assert a.tolist() == [7, 2]
