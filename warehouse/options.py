"""The CLI's options, each declared once as an annotated type that every command taking it
reuses (`def eval_(..., device: Device = "cpu")`). A command states only its default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

WHERE_HELP = (
    "Warehouse folder, .zip file or fsspec URL (http(s)://, s3://, gs://, memory://, zip://)."
)


def _local_folder(command: str):
    """A parser for the warehouse a command writes into: a local folder; a URL or a zip file
    is refused, since remote warehouses are read-only."""

    def parse(value: str) -> Path:
        from warehouse.store.location import local_folder

        return local_folder(value, f"`warehouse {command}`")

    return parse


def local_warehouse(command: str) -> object:
    """The warehouse argument of a command that writes into it (`warehouse stats W`)."""
    return Annotated[Path, typer.Argument(help="Warehouse folder.", parser=_local_folder(command))]


def local_out(command: str, help: str = "Warehouse folder to create or resume.") -> object:
    """The --out folder a command creates or resumes."""
    return Annotated[Path, typer.Option(help=help, parser=_local_folder(command))]


# --- where the data is
Where = Annotated[str, typer.Argument(help=WHERE_HELP)]
Folder = Annotated[Path, typer.Argument(help="Warehouse folder.")]
Dataset = Annotated[
    str | None, typer.Option(help="Dataset file (jsonl/csv/parquet) or LRE folder.")
]
Model = Annotated[
    str,
    typer.Option(help="smollm2-135m, gemma3-270m, a local HF folder, a .gguf file or a hub id."),
]

# --- which prompts and neurons
Relations = Annotated[str | None, typer.Option(help="Comma-separated relations.")]
Languages = Annotated[str | None, typer.Option(help="Comma-separated languages.")]
Split = Annotated[str, typer.Option(help="Prompts used: identify, test or all.")]
Site = Annotated[
    str | None, typer.Option(help="Site (default: every captured site, or the only one).")
]
Pooling = Annotated[str, typer.Option(help="Pooled response: mean, max, last.")]
Negatives = Annotated[
    str, typer.Option(help="all, or ratio:K (K x positives sampled from other relations).")
]
Templates = Annotated[
    list[str] | None,
    typer.Option(help="Only prompts of this template: stats of their own (repeat)."),
]
Sample = Annotated[
    int | None,
    typer.Option(help="At most N eval prompts per relation x language x split (fixed choice)."),
]
Controls = Annotated[int, typer.Option(help="Random neuron sets per controlled condition.")]
Seed = Annotated[
    int, typer.Option(help="Seed: splits, negative sampling, ties, controls (control i: seed + i).")
]

# --- how it runs
BatchSize = Annotated[int, typer.Option(help="Prompts per forward pass.")]
StackRows = Annotated[
    int,
    typer.Option(
        help="Rows of one eval forward pass: the neuron sets of a prompt batch run stacked "
        "up to this many rows (1: one set per pass)."
    ),
]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")]
ModelDtype = Annotated[str, typer.Option(help="Model weights dtype.")]
Shard = Annotated[
    str | None,
    typer.Option(help="Only shard i/n (e.g. 2/4); join the parts (merge, or the last eval shard)."),
]
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run the shards as Ray tasks, then join them: 'local' (start a 2-CPU Ray), "
        "'auto' (the running cluster) or an address.",
    ),
]
Shards = Annotated[
    int | None, typer.Option(help="Shards for --ray (default: GPUs, else CPUs, of Ray).")
]
Force = Annotated[bool, typer.Option(help="Recompute even when up to date.")]
Overwrite = Annotated[bool, typer.Option(help="Replace what is there of that name.")]
Quiet = Annotated[bool, typer.Option(help="No progress lines.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Report = Annotated[Path | None, typer.Option(help="Also write the HTML report here.")]

# --- options of one command each
Sites = Annotated[str, typer.Option(help="ffn.act, ffn.gate, ffn.up, ffn.down, paper.")]
Layers = Annotated[str | None, typer.Option(help="Layers, e.g. 0,3,10-12 (default all).")]
Capture = Annotated[str, typer.Option(help="tokens (per-token + pooled) or pooled.")]
Poolings = Annotated[str, typer.Option(help="Poolings: mean,max,last.")]
StorageDtype = Annotated[str, typer.Option(help="Storage dtype: float16, bfloat16, float32.")]
MaxPrompts = Annotated[int | None, typer.Option(help="Keep a fixed sample of N prompts.")]
TokenChunk = Annotated[int, typer.Option(help="Rows per chunk of per-token arrays.")]
PromptChunk = Annotated[int, typer.Option(help="Rows per chunk of response arrays.")]
OnNonfinite = Annotated[
    str,
    typer.Option(
        help="A NaN or infinity to store (e.g. a float16 overflow): 'warn' (store it, "
        "count it in the manifest) or 'error' (stop before that batch)."
    ),
]
SharedPrefix = Annotated[
    bool | None,
    typer.Option(
        "--shared-prefix/--no-shared-prefix",
        help="Run each distinct token prefix of a batch once, the batch's prefix tree packed "
        "into one sequence (default for a new warehouse; values equal one plain forward per "
        "batch within float rounding). --no-shared-prefix: one plain forward per batch. "
        "Unset: as the warehouse was planned.",
        show_default=False,
    ),
]
EvalSharedPrefix = Annotated[
    bool,
    typer.Option(
        "--shared-prefix/--no-shared-prefix",
        help="Run each distinct token prefix of a prompt batch once per neuron set, the "
        "batch's prefix tree packed into one sequence (answers equal one plain forward's "
        "but at near-ties).",
    ),
]
Selection = Annotated[
    str | None, typer.Option(help="Selection to deactivate (none: baseline only).")
]
TopCounts = Annotated[
    str | None, typer.Option(help="Sweep over the top-k by rank, e.g. 10,50,200.")
]
Fractions = Annotated[
    str | None, typer.Option(help="Sweep over shares of the site's neurons, e.g. 0.001,0.01.")
]
MaxNewTokens = Annotated[int, typer.Option(help="Greedy tokens generated.")]
Match = Annotated[
    str,
    typer.Option(
        help="Scoring: prefix (carries the answer: whole, or 3+ characters of it), "
        "paper-prefix (any non-empty prefix), starts-with or contains."
    ),
]
ModelCopy = Annotated[
    str | None, typer.Option(help="A copy of the manifest's model (hash must match).")
]
Baseline = Annotated[bool, typer.Option(help="Compute the baseline answers of every prompt.")]
AccuraciesJson = Annotated[bool, typer.Option("--json", help="Print accuracies as JSON.")]
StudyOut = Annotated[Path, typer.Option(help="Warehouse folder to create or resume.")]
IdentifyLanguage = Annotated[
    str, typer.Option(help="Language whose prompts the neurons are found on.")
]
StudySite = Annotated[str, typer.Option(help="ffn.act, ffn.gate, ffn.up or ffn.down.")]
TopK = Annotated[
    int | None,
    typer.Option(help="Neurons per relation (default: the paper's 3,000/835,584 scaled)."),
]
Sweep = Annotated[
    str | None,
    typer.Option(help="Counts deactivated in the sweep (default: the paper's, scaled)."),
]
OthersSample = Annotated[
    int, typer.Option(help="Prompts per other relation in the sweep's 'others' curve.")
]
MinCorrect = Annotated[
    int, typer.Option(help="Skip relations with fewer correct identification prompts.")
]
MinSubjects = Annotated[
    int, typer.Option(help="Skip relations whose correct ones have fewer subjects.")
]
Sentences = Annotated[
    str | None, typer.Option(help="Neutral sentences for perplexity (default: built-in).")
]
