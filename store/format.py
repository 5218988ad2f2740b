"""The warehouse format in one place: the name of every file and folder a warehouse holds,
every Arrow schema of its tables, and the constants the stages share.

A warehouse folder:

    manifest.json              what it holds and how it was made (store/manifest.py)
    prompts.parquet            PROMPT_SCHEMA, one row per prompt, in length order
    tokens.parquet             TOKEN_SCHEMA, one row per token (absent for --capture pooled)
    activations.zarr/<site>    per-token values [token_row, layer, unit]
    responses.zarr/<site>/<pooling>   pooled per-prompt values [prompt_row, layer, unit]
                               (a per-token warehouse stores `mean` only: DERIVED_POOLING_RULES)
    stats/*.parquet            STATS_SCHEMA (`warehouse stats`), each with a .json sidecar
    selections/<name>.parquet  SELECTION_SCHEMA (`warehouse select`), with <name>.json
    evals/*.parquet            EVAL_SCHEMA (`warehouse eval`): baseline.parquet and results
    evals/parts/<request>/     a sharded eval's parts (EVAL_PART_SCHEMA) until they are joined
    study/study.json           the record of `warehouse study`
    study/perplexity.parquet   PERPLEXITY_SCHEMA
    report/                    `warehouse report --out W/report` (an output, not data)
    .lock                      the writer lock (store/lock.py)

This module imports nothing of the warehouse's own: every folder may import it.
"""

from __future__ import annotations

import pyarrow as pa

# ------------------------------------------------------------------------------- manifest

FORMAT_NAME = "relation-warehouse"
# 3: arrays stored as zarr shards (a file per row of chunks) with crc32c checksums. Older
# formats (1: a file per chunk; 2: sha256 array checksums) are refused with a message.
FORMAT_VERSION = 3
MANIFEST = "manifest.json"

# ------------------------------------------------------------------------- tables, arrays

PROMPTS = "prompts"  # keys of Manifest.tables
TOKENS = "tokens"
PROMPTS_FILE = "prompts.parquet"
TOKENS_FILE = "tokens.parquet"

ACTIVATIONS = "activations"  # the two kinds of arrays: first part of an array key
RESPONSES = "responses"
ARRAY_KINDS = (ACTIVATIONS, RESPONSES)
# The row axis of each kind of array, and the table whose rows it counts.
ROW_DIMS = {ACTIVATIONS: "token_row", RESPONSES: "prompt_row"}
ROW_TABLES = {ACTIVATIONS: TOKENS_FILE, RESPONSES: PROMPTS_FILE}
# Poolings a per-token warehouse does not store, because its per-token rows give them bit for
# bit: pooling -> its rule over `activations/<site>` and the prompt's row of prompts.parquet
# (the manifest's capture.derived_pooling lists them; store/derived_pooling.py derives them).
# `mean` is not among them: ingest sums the unrounded values, which are not stored.
DERIVED_POOLING_RULES = {
    "max": "max(activations[token_offset : token_offset + n_tokens])",
    "last": "activations[token_offset + n_tokens - 1]",
}

# Sites whose units are the residual stream's (d_model wide), not the FFN's inner width: their
# unit axis is named `d_model` in the stored arrays (ingest/sites.py's table agrees; a test
# checks it).
RESIDUAL_SITES = frozenset({"ffn.down"})


def array_key(kind: str, site: str, pooling: str | None = None) -> str:
    """The manifest key of an array: `activations/<site>` or `responses/<site>/<pooling>`."""
    return f"{kind}/{site}" if pooling is None else f"{kind}/{site}/{pooling}"


def array_path(key: str) -> str:
    """The folder of an array in a warehouse: `<kind>.zarr/<site>[/<pooling>]`."""
    kind, rest = key.split("/", 1)
    return f"{kind}.zarr/{rest}"


def unit_dim(site: str) -> str:
    """Name of a site's unit axis in the stored arrays: `neuron` for the FFN's inner width,
    `d_model` for a residual-width site, so that arrays of both widths can share one Zarr
    group with a coordinate array of each."""
    return "d_model" if site in RESIDUAL_SITES else "neuron"


# ---------------------------------------------------------------------- derived folders

STATS_DIR = "stats"
SELECTIONS_DIR = "selections"
EVALS_DIR = "evals"
STUDY_DIR = "study"
REPORT_DIR = "report"
# The folders later stages write, each to the `warehouse` command that writes it.
DERIVED_DIRS = {STATS_DIR: "stats", SELECTIONS_DIR: "select", EVALS_DIR: "eval", STUDY_DIR: "study"}
# The derived folders of Parquet tables of one schema, each read as one SQL view.
DERIVED_VIEWS = (STATS_DIR, SELECTIONS_DIR, EVALS_DIR)
# Folders of outputs drawn from a warehouse (not checked by verify).
OUTPUT_DIRS = (REPORT_DIR,)
# Files of derived folders that are not a table with its sidecar, and sub-folders of parts.
DERIVED_FILES = {STUDY_DIR: ("study.json",)}
EVAL_PARTS = "parts"
DERIVED_PARTS = {EVALS_DIR: EVAL_PARTS}
STUDY_FILE = f"{STUDY_DIR}/study.json"
PERPLEXITY_FILE = f"{STUDY_DIR}/perplexity.parquet"

SIDECAR_SUFFIX = ".json"  # beside each derived table: what made it

# ------------------------------------------------------------------ names the stages share

SPLITS = ("identify", "test", "all")
ALL = "all"  # the language (stats per_language off) or template_set of every one
BASELINE = "baseline"  # the selection name of evals rows with nothing deactivated
BASELINE_FILE = f"{EVALS_DIR}/{BASELINE}.parquet"
RESERVED_SELECTIONS = frozenset({BASELINE})  # names `warehouse select` refuses

# ------------------------------------------------------------------------------- schemas

PROMPT_SCHEMA = pa.schema(
    [
        ("prompt_row", pa.int64()),
        ("prompt_id", pa.int64()),
        ("relation", pa.string()),
        ("language", pa.string()),
        ("split", pa.string()),
        ("subject", pa.string()),
        ("subject_id", pa.string()),
        ("object", pa.string()),
        ("aliases", pa.list_(pa.string())),
        ("template", pa.string()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("token_offset", pa.int64()),
    ]
)

TOKEN_SCHEMA = pa.schema(
    [
        ("token_row", pa.int64()),
        ("prompt_id", pa.int64()),
        ("prompt_row", pa.int64()),
        ("position", pa.int32()),
        ("token_id", pa.int32()),
        ("token", pa.string()),
        ("is_subject", pa.bool_()),
        ("is_last", pa.bool_()),
    ]
)

STAT_NAMES = ("ap", "auroc", "mean_pos", "std_pos", "mean_neg", "std_neg", "smd")
# AP and AUROC stay float64 so that they equal scikit-learn to the last bits. The moments
# and SMD are stored as float32: responses are float16/bfloat16, so float32 holds them to
# ~1e-7 relative, and it makes the file ~30 % smaller (random floats barely compress).
_FLOAT64_STATS = ("ap", "auroc")
STATS_STRINGS = ("relation", "language", "site", "pooling", "negatives", "split", "template_set")

STATS_SCHEMA = pa.schema(
    [
        *((name, pa.string()) for name in STATS_STRINGS),
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("neuron_id", pa.int64()),
        *((name, pa.float64() if name in _FLOAT64_STATS else pa.float32()) for name in STAT_NAMES),
        ("rank", pa.int32()),
        ("ap_rank", pa.int32()),  # best rank among the neurons of equal AP (1 + # higher AP)
        ("ap_ties", pa.int32()),  # neurons of this (relation, language) with this exact AP
        ("n_pos", pa.int64()),
        ("n_neg", pa.int64()),
    ]
)

SELECTION_SCHEMA = pa.schema(
    [
        ("selection", pa.string()),  # the name: the `selections` view unions every file
        ("neuron_id", pa.int64()),
        ("site", pa.string()),
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("rank", pa.int32()),
        ("score", pa.float64()),
    ]
)

EVAL_SCHEMA = pa.schema(
    [
        ("selection", pa.string()),  # "baseline" for baseline rows
        ("count", pa.int64()),  # neurons deactivated; null for the baseline
        ("fraction", pa.float64()),  # of the site's neurons, when the sweep gave fractions
        ("control_seed", pa.int64()),  # null for the selection's own neurons and the baseline
        ("relation", pa.string()),
        ("language", pa.string()),
        ("split", pa.string()),
        ("prompt_id", pa.int64()),
        ("generated", pa.string()),  # the decoded continuation, as generated
        ("correct", pa.bool_()),
        ("baseline_correct", pa.bool_()),  # the same prompt in evals/baseline.parquet
    ]
)

EVAL_PART_SCHEMA = pa.schema(
    [
        ("condition", pa.int64()),  # -1: the baseline; else the index into `conditions`
        ("prompt_id", pa.int64()),
        ("generated", pa.string()),
    ]
)

PERPLEXITY_SCHEMA = pa.schema(
    [
        ("relation", pa.string()),
        ("selection", pa.string()),
        ("size", pa.int64()),
        ("control_seed", pa.int64()),  # null: the relation's own set
        ("ppl_baseline", pa.float64()),
        ("ppl_ablated", pa.float64()),
    ]
)

# The long views of the arrays (queries/views.py): one row per stored value.
ACTIVATIONS_VIEW_SCHEMA = pa.schema(
    [
        ("token_row", pa.int64()),
        ("site", pa.string()),
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("neuron_id", pa.int64()),
        ("value", pa.float32()),
    ]
)
RESPONSES_VIEW_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.int64()),
        ("prompt_row", pa.int64()),
        ("site", pa.string()),
        ("pooling", pa.string()),
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("neuron_id", pa.int64()),
        ("value", pa.float32()),
    ]
)
