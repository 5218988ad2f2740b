"""Greedy accuracy of a model on a relation dataset, per relation × language (and template).

    python bench/dataset_accuracy.py [--dataset builtin] [--model smollm2-135m]
        [--relations R ...] [--languages L ...] [--sample N] [--rules prefix paper-prefix]
        [--batch-size 48] [--max-new-tokens 2] [--by-template] [--json out.json]
    python bench/dataset_accuracy.py --rescore out.json --rules prefix paper-prefix

A prompt is correct when its greedy continuation (2 new tokens by default) passes the scoring
rule of `warehouse eval --match` (`warehouse.ingest.scoring.score`; default `prefix`, see
docs/eval.md). With several `--rules` every continuation is scored by each, so the tables
compare the rules on the same generated text; `--rescore` reads the continuations of an
earlier `--json` and scores them again without a model. `--sample N` keeps at most N prompts
per relation × language × split, the ones `warehouse eval --sample N` chooses. Prints Markdown
tables for docs/datasets.md and docs/eval.md. Decoding is `warehouse eval`'s own (greedy, KV
cache, left-padded batches, logits of the last position only) on the token ids an ingest
stores; prompts are sorted by length so that a batch pads little.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch

from warehouse.analysis.evaluate import sample_prompts
from warehouse.ingest.datasets import Dataset, Prompt, build_prompts, load_dataset
from warehouse.ingest.generation import answer
from warehouse.ingest.scoring import MATCHES, score
from warehouse.ingest.tokens import encode_prompts


@dataclass
class Result:
    prompt: Prompt
    continuation: str
    correct: dict[str, bool]  # by match mode (scoring rule)


def load(spec: str):
    """The `LoadedModel` of a model spec, as `warehouse ingest --model` takes it."""
    from warehouse.ingest.models import load_model

    return load_model(spec)


def sample(prompts: list[Prompt], n: int) -> list[Prompt]:
    """At most n prompts per relation × language × split, as `warehouse eval --sample n`."""
    frame = pl.DataFrame(
        {
            "prompt_id": [p.prompt_id for p in prompts],
            "relation": [p.relation for p in prompts],
            "language": [p.language for p in prompts],
            "split": [p.split for p in prompts],
        },
        schema_overrides={"prompt_id": pl.Int64},
    )
    keep = set(sample_prompts(frame, n)["prompt_id"].to_list())
    return [p for p in prompts if p.prompt_id in keep]


def scored(prompts: list[Prompt], continuations: list[str], rules: list[str]) -> list[Result]:
    """Each continuation scored by every rule."""
    return [
        Result(p, c, {r: score(c, p.object, p.aliases, r) for r in rules})
        for p, c in zip(prompts, continuations, strict=True)
    ]


def generate(loaded, prompts: list[Prompt], batch_size: int, max_new_tokens: int) -> list[str]:
    """The greedy continuation of every prompt, in `prompts` order: `warehouse eval`'s decoding
    (`warehouse.ingest.generation.answer`) of the ids an ingest stores (`encode_prompts`)."""
    ids = encode_prompts(loaded.tokenizer, prompts).ids
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
    continuations: dict[int, str] = {}
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        if start and start % (20 * batch_size) == 0:
            elapsed = time.perf_counter() - started
            print(f"{start}/{len(order)} prompts, {elapsed:.0f} s", file=sys.stderr, flush=True)
        batch = order[start : start + batch_size]
        texts = answer(loaded, [ids[i] for i in batch], max_new_tokens)
        continuations.update(zip(batch, texts, strict=True))
    return [continuations[i] for i in range(len(prompts))]


def accuracy_table(results: list[Result], languages: list[str], rule: str) -> str:
    """Accuracy (%) per relation (rows) × language (columns), then all relations with n."""
    cells: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in results:
        ok = r.correct[rule]
        cells[(r.prompt.relation, r.prompt.language)].append(ok)
        cells[(r.prompt.relation, "all")].append(ok)
        cells[("all", r.prompt.language)].append(ok)
        cells[("all", "all")].append(ok)
    relations = sorted({r.prompt.relation for r in results})
    columns = [*languages, "all"]
    lines = ["| relation | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for rel in relations:
        row = [_pct(cells.get((rel, lang), [])) for lang in columns]
        lines.append(f"| {rel} | " + " | ".join(row) + " |")
    total = [f"{_pct(cells[('all', c)])} (n = {len(cells[('all', c)])})" for c in columns]
    lines.append("| all relations | " + " | ".join(total) + " |")
    return "\n".join(lines)


def rules_table(results: list[Result], languages: list[str], rules: list[str]) -> str:
    """Accuracy (%) under each rule side by side, per relation × language (rows), with the
    number of prompts and how many changed verdict between the first two rules."""
    cells: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        for key in ((r.prompt.relation, r.prompt.language), ("all", r.prompt.language)):
            cells[key].append(r)
    relations = sorted({r.prompt.relation for r in results}) + ["all"]
    head = ["relation", "language", "prompts", *(f"{rule} %" for rule in rules)]
    if len(rules) > 1:
        head.append("changed")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for rel in relations:
        for lang in languages:
            rs = cells.get((rel, lang), [])
            if not rs:
                continue
            row = [rel, lang, str(len(rs)), *(_pct([r.correct[x] for r in rs]) for x in rules)]
            if len(rules) > 1:
                row.append(str(sum(r.correct[rules[0]] != r.correct[rules[1]] for r in rs)))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def template_table(results: list[Result], dataset: Dataset, rule: str) -> str:
    """Accuracy per template pattern: a fact's i-th template, whatever article it was filled
    with ("de la", "du"), counts under the pattern shown by its first example."""
    templates = {(f.relation, f.language, f.subject_id): f.templates for f in dataset.facts}
    cells: dict[tuple[str, str, int], list[bool]] = defaultdict(list)
    example: dict[tuple[str, str, int], str] = {}
    for r in results:
        p = r.prompt
        key = (
            p.relation,
            p.language,
            templates[(p.relation, p.language, p.subject_id)].index(p.template),
        )
        cells[key].append(r.correct[rule])
        example.setdefault(key, p.template)
    lines = ["| relation | language | template | prompts | accuracy |", "|---|---|---|---|---|"]
    for key, correct in sorted(cells.items()):
        rel, lang, _ = key
        lines.append(f"| {rel} | {lang} | `{example[key]}` | {len(correct)} | {_pct(correct)} |")
    return "\n".join(lines)


def _pct(correct: list[bool]) -> str:
    """Percent correct, one decimal below 1 % so that a few right answers do not read as 0."""
    if not correct:
        return "–"
    pct = 100 * sum(correct) / len(correct)
    return f"{pct:.1f}" if 0 < pct < 1 else f"{pct:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="builtin")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--relations", nargs="*")
    parser.add_argument("--languages", nargs="*")
    parser.add_argument("--sample", type=int, help="at most N prompts per relation×language×split")
    parser.add_argument("--rules", nargs="+", choices=MATCHES, default=["prefix"])
    parser.add_argument("--rescore", type=Path, help="score the continuations of this --json")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--by-template", action="store_true", help="also print per template")
    parser.add_argument("--json", type=Path, help="write every prompt's result here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.dataset)
    prompts = build_prompts(dataset, relations=args.relations, languages=args.languages)
    if args.sample is not None:
        prompts = sample(prompts, args.sample)
    started = time.perf_counter()
    if args.rescore:
        rows = json.loads(args.rescore.read_text(encoding="utf-8"))
        said = {row["prompt_id"]: row["continuation"] for row in rows}
        prompts = [p for p in prompts if p.prompt_id in said]
        continuations = [said[p.prompt_id] for p in prompts]
        how = f"rescored from {args.rescore}"
    else:
        loaded = load(args.model)
        continuations = generate(loaded, prompts, args.batch_size, args.max_new_tokens)
        how = f"generated in {time.perf_counter() - started:.0f} s"
    results = scored(prompts, continuations, args.rules)

    languages = [lang for lang in dataset.languages() if lang in {p.language for p in prompts}]
    print(f"{dataset.name} ({dataset.hash[:19]}…): {len(prompts)} prompts {how}\n")
    for rule in args.rules:
        print(f"rule {rule}:\n\n{accuracy_table(results, languages, rule)}\n")
    if len(args.rules) > 1:
        print(rules_table(results, languages, args.rules))
    if args.by_template:
        print()
        print(template_table(results, dataset, args.rules[0]))
    if args.json:
        args.json.write_text(json.dumps(_rows(results), ensure_ascii=False, indent=0), "utf-8")


def _rows(results: list[Result]) -> list[dict]:
    return [
        {
            "prompt_id": r.prompt.prompt_id,
            "relation": r.prompt.relation,
            "language": r.prompt.language,
            "split": r.prompt.split,
            "subject_id": r.prompt.subject_id,
            "template": r.prompt.template,
            "text": r.prompt.text,
            "object": r.prompt.object,
            "aliases": list(r.prompt.aliases),
            "continuation": r.continuation,
            "correct": r.correct,
        }
        for r in results
    ]


if __name__ == "__main__":
    main()
