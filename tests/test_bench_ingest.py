"""bench/ingest.py's peak-RSS prompt sets: the longest quarter makes the same largest batch
as all the prompts, so the two runs' peaks differ only by what the run's length adds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from warehouse.ingest.datasets import load_dataset
from warehouse.ingest.models import load_model
from warehouse.ingest.run import batch_ranges, order_by_length, select_prompts

PATH = Path(__file__).resolve().parents[1] / "bench" / "ingest.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ingest_bench", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ingest_bench"] = mod
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["ingest_bench"]


def _batches(bench, loaded, args, languages: list[str]) -> tuple[list, list[tuple[int, int]]]:
    """(prompts, each batch's (prompts, tokens)) of an ingest of `args`, as ingest orders them."""
    cfg = bench._config(Path("."), args, "tokens", languages)
    prompts, encoded = order_by_length(
        loaded.tokenizer, select_prompts(cfg, load_dataset(cfg.dataset))
    )
    lengths = np.array([len(x) for x in encoded.ids])
    return prompts, [(e - s, int(lengths[s])) for s, e in batch_ranges(lengths, args.batch_size)]


# 100_000: one batch per length, and the largest lies below the longest quarter.
@pytest.mark.parametrize("batch_size", [4, 32, 100_000])
def test_the_longest_quarter_makes_the_largest_batch_of_all_prompts(
    bench, tiny_llama_dir: Path, tmp_path: Path, batch_size: int
):
    loaded = load_model(str(tiny_llama_dir))
    args = bench._parser().parse_args(["--batch-size", str(batch_size)])
    longest = tmp_path / "longest.jsonl"
    kept, total, biggest, languages = bench._longest_prompts(loaded, args, longest)

    every, all_batches = _batches(bench, loaded, args, list(bench.RSS_LANGUAGES))
    args.dataset = str(longest)
    some, some_batches = _batches(bench, loaded, args, languages.split(","))
    assert (len(some), len(every)) == (kept, total)
    assert 4 * kept >= total
    assert max(n * w for n, w in some_batches) == max(n * w for n, w in all_batches) == biggest
    # The longest prompts, word for word: the file holds no prompt the run would not make.
    key = lambda p: (p.relation, p.language, p.subject_id, p.template)  # noqa: E731
    assert sorted(map(key, some)) == sorted(map(key, every[total - kept :]))
