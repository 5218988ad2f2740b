"""Perplexity of relation-neutral text, with and without a neuron set deactivated.

The paper's specificity check (its Table 2): deactivating a relation's neurons should hurt
that relation's facts, not language modelling in general. The perplexity is
exp(total negative log-likelihood / predicted tokens) over all sentences. Sentences run in
right-padded batches: with causal attention a real token never sees the padding after it,
so a sentence's value does not depend on its batch beyond float rounding.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from warehouse.analysis.ablation import Neurons, ablate_rows
from warehouse.ingest.batching import pad_batch
from warehouse.ingest.models import LoadedModel
from warehouse.store.errors import DatasetError
from warehouse.store.fingerprint import CacheKey

STEP = "perplexity"  # the step name of its cache key


def read_sentences(path: str | Path | None = None) -> list[str]:
    """One sentence per line ('#' starts a comment line); None: the built-in English set."""
    if path is None:
        text = resources.files("warehouse.ingest").joinpath("data/neutral.txt").read_text("utf-8")
        where = "built-in neutral.txt"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read sentences from {path}: {e}") from e
        where = str(path)
    lines = [ln.strip() for ln in text.splitlines()]
    sentences = [ln for ln in lines if ln and not ln.startswith("#")]
    if not sentences:
        raise DatasetError(f"{where} holds no sentences (one per line; '#' lines are comments)")
    return sentences


def sentences_hash(sentences: Sequence[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sentences).encode()).hexdigest()


def perplexity_key(
    parent: str, sentences: Sequence[str], selections: dict[str, str], control_seeds: list[int]
) -> CacheKey:
    """The cache key of the study's perplexity table: derived from the warehouse (its model,
    at its dtype), with the sentences, each relation's selection (by its file's sha256) and
    the control seeds."""
    options = {
        "sentences": sentences_hash(sentences),
        "selections": selections,
        "control_seeds": control_seeds,
    }
    return CacheKey(parent, STEP, options)


def perplexity(
    loaded: LoadedModel,
    sentences: Sequence[str],
    neurons: Neurons | None = None,
    batch_size: int = 16,
) -> float:
    """exp(mean NLL) of every next token of every sentence, with `neurons` zeroed."""
    return perplexities(loaded, sentences, [neurons or {}], batch_size)[0]


@torch.no_grad()
def perplexities(
    loaded: LoadedModel,
    sentences: Sequence[str],
    ablations: Sequence[Neurons],
    batch_size: int = 16,
    logits_bytes: int = 256 << 20,
) -> list[float]:
    """`perplexity` under each ablation. The ablations of one batch run stacked: one forward
    over the batch repeated (`ablate_rows`), as many times as keep its float32 logits (every
    position x the vocabulary) within `logits_bytes`; each block of rows is computed as it is
    alone, so each value equals its own run's."""
    tok = loaded.tokenizer
    encoded = [tok(text)["input_ids"] for text in sentences]
    encoded = [ids for ids in encoded if len(ids) >= 2]
    if not encoded:
        raise DatasetError("the sentences are too short to score (need >= 2 tokens each)")
    nll, count = [0.0] * len(ablations), 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        ids, mask, _ = pad_batch(batch, tok.pad_token_id, "right", loaded.device)
        per = max(1, logits_bytes // (ids.numel() * loaded.model.config.vocab_size * 4))
        for first in range(0, len(ablations), per):
            group = ablations[first : first + per]
            with ablate_rows(loaded.model, group):
                stacked = ids.repeat(len(group), 1), mask.repeat(len(group), 1)
                blocks = _nll(loaded, *stacked, rows=ids.shape[0])
            for k, value in enumerate(blocks):
                nll[first + k] += value
        count += int(mask[:, 1:].sum())
    return [math.exp(x / count) for x in nll]


def _nll(loaded: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, rows: int) -> list[float]:
    """Negative log-likelihood of the real next tokens of each block of `rows` rows."""
    logits = loaded.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)  # (rows, width-1, vocab)
    token_logp = logp.gather(2, ids[:, 1:, None])[..., 0]  # (rows, width-1)
    keep = mask[:, 1:].bool()  # a target token is real
    pairs = zip(token_logp.split(rows), keep.split(rows), strict=True)
    return [-t[k].sum().item() for t, k in pairs]
