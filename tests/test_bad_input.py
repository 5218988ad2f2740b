"""Bad input, through the real command line and the Python API.

Every case in CASES runs `warehouse ...` (cli.main, as the console script does) next to a
copy of a finished warehouse (ingested, scored, one selection) and asserts: a non-zero exit,
exactly one line on stderr that starts with "error: " and names the problem (a usage error:
click's form, ending in one "Error: " line that names it), no traceback,
and not one byte changed in any file that existed before. docs/errors.md lists the cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import conftest
import pytest
import torch

from warehouse.store.errors import WarehouseError

SUBJECTS = ["France", "Japan", "Peru", "Chile", "Kenya", "Nepal"]


def _row(relation: str, language: str, subject: str, obj: str, template: str) -> str:
    return json.dumps(
        {
            "relation": relation,
            "language": language,
            "subject": subject,
            "object": obj,
            "templates": [template],
        }
    )


def _dataset_lines() -> list[str]:
    lines = []
    for s in SUBJECTS:
        lines.append(_row("capital", "en", s, f"{s}ville", "The capital of {subject} is"))
        lines.append(_row("capital", "de", s, f"{s}stadt", "Die Hauptstadt von {subject} ist"))
        lines.append(_row("currency", "en", s, f"{s} coin", "The currency of {subject} is"))
    return lines


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    path.write_text("\n".join(_dataset_lines()) + "\n")
    return path


def _build(out: Path, model: Path, data: Path, selection: str) -> Path:
    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats
    from warehouse.ingest.run import IngestConfig, ingest

    ingest(
        IngestConfig(out=out, model=str(model), dataset=str(data), batch_size=4),
        show_progress=False,
    )
    run_stats(out, split="all", show_progress=False)
    select(out, selection, "capital", top=5)
    return out


@pytest.fixture(scope="module")
def other_model_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama's architecture and tokenizer with other random weights."""
    from conftest import tiny_llama_config
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(1)
    model = LlamaForCausalLM(tiny_llama_config(len(tok))).eval()
    path = tmp_path_factory.mktemp("other-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama_dir, dataset, module_cache) -> Path:
    return _build(tmp_path_factory.mktemp("built") / "w", tiny_llama_dir, dataset, "cap")


@pytest.fixture(scope="module")
def built_other(tmp_path_factory, other_model_dir, dataset, module_cache) -> Path:
    return _build(tmp_path_factory.mktemp("other") / "w", other_model_dir, dataset, "cap_other")


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (links by target), for "nothing changed"."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    return conftest.run_cli(capsys, *args)


# ---------------------------------------------------------------------------- the cases
# Each case gets a Ctx (a copy of the built warehouse in tmp, the tiny models, a dataset
# writer) and returns the argv and a fragment the one-line message must contain.


class Ctx:
    def __init__(self, tmp: Path, w: Path, model: Path, other_model: Path, other_w: Path):
        self.tmp, self.w, self.model, self.other_model, self.other_w = (
            tmp,
            w,
            model,
            other_model,
            other_w,
        )

    def data(self, text: str, name: str = "d.jsonl") -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)

    def good_data(self) -> str:
        return self.data("\n".join(_dataset_lines()) + "\n", "good.jsonl")

    def ingest(self, *extra: str, data: str | None = None, out: str | None = None) -> list[str]:
        return [
            "ingest",
            "--out",
            out or str(self.tmp / "new"),
            "--model",
            str(self.model),
            "--dataset",
            data or self.good_data(),
            "--quiet",
            *extra,
        ]

    def edit_manifest(self, edit: Callable[[dict], None]) -> None:
        path = self.w / "manifest.json"
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))


Case = Callable[[Ctx], tuple[list[str], str]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


# -- datasets and ingest options


@case
def case_unknown_relation(c: Ctx):
    args = c.ingest("--relations", "capital,no_such_relation")
    return args, "unknown relation 'no_such_relation'"


@case
def case_unknown_language(c: Ctx):
    return c.ingest("--languages", "en,xx"), "unknown language 'xx'"


@case
def case_unknown_site(c: Ctx):
    return c.ingest("--sites", "ffn.nope"), "ffn.nope"


@case
def case_layer_out_of_range(c: Ctx):
    return c.ingest("--layers", "0,7"), "out of range; the model has layers 0-1"


@case
def case_unknown_split(c: Ctx):
    return c.ingest("--split", "training"), "unknown split 'training'"


@case
def case_unknown_pooling(c: Ctx):
    return c.ingest("--pooling", "mean,median"), "median"


@case
def case_bad_storage_dtype(c: Ctx):
    return c.ingest("--dtype", "int8"), "--dtype must be one of"


@case
def case_zero_batch_size(c: Ctx):
    return c.ingest("--batch-size", "0"), "--batch-size must be at least 1"


@case
def case_missing_model_path(c: Ctx):
    args = c.ingest()
    args[args.index("--model") + 1] = str(c.tmp / "no-such-model")
    return args, "does not exist"


@case
def case_unreachable_hub_model(c: Ctx):
    # A hub id that is not in the local cache while the hub cannot be reached (offline).
    import huggingface_hub.constants

    c.mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = c.ingest()
    args[args.index("--model") + 1] = "no-such-org/no-such-model"
    return args, "neither a local path nor in the Hugging Face cache, and the hub is off"


@case
def case_model_folder_without_config(c: Ctx):
    (c.tmp / "empty-model").mkdir()
    args = c.ingest()
    args[args.index("--model") + 1] = str(c.tmp / "empty-model")
    return args, "has no config.json"


@case
def case_missing_dataset_file(c: Ctx):
    return c.ingest(data=str(c.tmp / "nope.jsonl")), "no such dataset file"


@case
def case_malformed_dataset_row(c: Ctx):
    lines = _dataset_lines()
    lines[1] = lines[1][:-5]  # cut the JSON short
    return c.ingest(data=c.data("\n".join(lines))), "d.jsonl:2: invalid JSON"


@case
def case_dataset_row_missing_field(c: Ctx):
    lines = _dataset_lines()
    row = json.loads(lines[2])
    del row["object"]
    lines[2] = json.dumps(row)
    return c.ingest(data=c.data("\n".join(lines))), "d.jsonl:3: missing field 'object'"


@case
def case_dataset_field_of_wrong_type(c: Ctx):
    lines = _dataset_lines()
    row = json.loads(lines[0])
    row["subject"] = 42
    lines[0] = json.dumps(row)
    return c.ingest(data=c.data("\n".join(lines))), "field 'subject': expected a string"


@case
def case_empty_dataset(c: Ctx):
    return c.ingest(data=c.data("")), "empty dataset"


@case
def case_template_without_subject(c: Ctx):
    lines = _dataset_lines()
    row = json.loads(lines[0])
    row["templates"] = ["The capital is"]
    lines[0] = json.dumps(row)
    return c.ingest(data=c.data("\n".join(lines))), 'template "The capital is" has no {subject}'


@case
def case_duplicate_fact_conflicts(c: Ctx):
    # The same (relation, language, subject) again -- the same prompt ids -- with another
    # object: merged rows may add templates or aliases, never change the fact.
    lines = _dataset_lines()
    lines.append(_row("capital", "en", "France", "Lyon", "The capital of {subject} is"))
    return c.ingest(data=c.data("\n".join(lines))), "duplicate fact (capital, en, "


@case
def case_csv_unknown_column(c: Ctx):
    text = "relation,language,subject,object,templates,colour\n"
    text += "capital,en,Peru,Lima,{subject} x,red\n"
    return c.ingest(data=c.data(text, "d.csv")), "unknown column 'colour'"


@case
def case_out_is_another_folder(c: Ctx):
    folder = c.tmp / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    return c.ingest(out=str(folder)), "exists and is not a warehouse"


@case
def case_non_utf8_dataset(c: Ctx):
    path = c.tmp / "latin1.jsonl"
    text = "\n".join(_dataset_lines()).replace("Peru", "Per\u00fa")
    path.write_bytes(text.encode("latin-1"))
    return c.ingest(data=str(path)), "latin1.jsonl:7: not UTF-8 text (byte 0xfa)"


@case
def case_truncated_safetensors(c: Ctx):
    folder = shutil.copytree(c.model, c.tmp / "cut-model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    args = c.ingest()
    args[args.index("--model") + 1] = str(folder)
    return args, "cannot load the weights of"


@case
def case_out_is_a_file(c: Ctx):
    (c.tmp / "notes.txt").write_text("precious")
    return c.ingest(out=str(c.tmp / "notes.txt")), "exists and is a file, not a folder"


@case
def case_out_is_a_symlink(c: Ctx):
    (c.tmp / "real").mkdir()
    (c.tmp / "link").symlink_to(c.tmp / "real")
    return c.ingest(out=str(c.tmp / "link")), "is a symbolic link"


@case
def case_ingest_other_options_into_warehouse(c: Ctx):
    return c.ingest("--dtype", "float32", out=str(c.w)), "made with other inputs"


# -- opening warehouses


@case
def case_no_such_warehouse(c: Ctx):
    return ["info", str(c.tmp / "missing")], "no such warehouse folder"


@case
def case_not_a_warehouse(c: Ctx):
    (c.tmp / "plain").mkdir()
    return ["verify", str(c.tmp / "plain")], "not a warehouse (no manifest.json)"


@case
def case_manifest_not_json(c: Ctx):
    (c.w / "manifest.json").write_text("{ half a manifest")
    return ["info", str(c.w)], "not valid JSON"


@case
def case_newer_format_version(c: Ctx):
    c.edit_manifest(lambda m: m.update(format_version=99))
    return ["query", str(c.w), "select 1"], "format version 99 is newer than this tool reads"


@case
def case_older_format_version(c: Ctx):
    c.edit_manifest(lambda m: m.update(format_version=2))
    return ["verify", str(c.w)], "format version 2 is an older format; this tool reads format 3"


@case
def case_manifest_path_escapes(c: Ctx):
    c.edit_manifest(lambda m: m["tables"]["prompts"].update(path="../../etc/passwd"))
    return ["info", str(c.w)], "is not a relative path inside the warehouse"


@case
def case_manifest_absolute_path(c: Ctx):
    c.edit_manifest(lambda m: m["arrays"]["responses/ffn.act/mean"].update(path="/etc"))
    return ["stats", str(c.w), "--quiet", "--force"], "is not a relative path inside"


@case
def case_symlink_out_of_warehouse(c: Ctx):
    outside = c.tmp / "outside.parquet"
    shutil.copy(c.w / "prompts.parquet", outside)
    (c.w / "stats" / "evil.parquet").symlink_to(outside)
    return ["query", str(c.w), "select count(*) from stats"], "leads outside the warehouse"


@case
def case_remote_url(c: Ctx):
    url = "https://example.org/shared/w"
    return ["info", url], f"{url}: not a warehouse or not reachable"


@case
def case_edited_table(c: Ctx):
    p = c.w / "prompts.parquet"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    return ["query", str(c.w), "select count(*) from prompts"], "does not match its checksum"


# -- query


@case
def case_query_output_under_a_file(c: Ctx):
    (c.tmp / "afile").write_text("keep me")
    args = ["query", str(c.w), "select 1 as x", "--format", "csv"]
    return [*args, "--output", str(c.tmp / "afile" / "x.csv")], "its folder " + str(
        c.tmp / "afile"
    ) + " is not a folder"


@case
def case_query_output_in_a_missing_folder(c: Ctx):
    args = ["query", str(c.w), "select 1 as x", "--format", "csv"]
    out = str(c.tmp / "nofolder" / "x.csv")
    return [*args, "--output", out], "nofolder does not exist; create it first"


@case
def case_damaged_stats_in_a_zip(c: Ctx):
    import zipfile

    from warehouse.store.export import ExportOptions, export

    good, bad = c.tmp / "good.zip", c.tmp / "bad.zip"
    export(c.w, good, ExportOptions(zip=True), show_progress=False)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.startswith("stats/") and info.filename.endswith(".parquet"):
                data = data[:100]
            zout.writestr(info, data)
    return ["query", str(bad), "select avg(ap) from stats"], "ffn.act__mean__all.parquet"


@case
def case_sql_syntax_error(c: Ctx):
    return ["query", str(c.w), "selec relation from prompts"], "SQL error"


@case
def case_query_missing_table(c: Ctx):
    return ["query", str(c.w), "select * from neurons"], "unknown table 'neurons'"


@case
def case_query_table_not_made_yet(c: Ctx):
    return ["query", str(c.w), "select * from evals"], "create it with `warehouse eval`"


@case
def case_query_output_exists(c: Ctx):
    (c.tmp / "result.csv").write_text("keep me")
    args = ["query", str(c.w), "select 1 as x", "--format", "csv"]
    return [*args, "--output", str(c.tmp / "result.csv")], "already exists"


@case
def case_query_unknown_format(c: Ctx):
    return ["query", str(c.w), "select 1", "--format", "xml"], "unknown format 'xml'"


@case
def case_query_reads_a_file(c: Ctx):
    return ["query", str(c.w), "select * from read_csv('/etc/hostname')"], "not allowed"


@case
def case_duckdb_copy_to_file(c: Ctx):
    sql = f"copy (select * from prompts) to '{c.tmp / 'leak.csv'}'"
    return ["query", str(c.w), sql, "--engine", "duckdb"], "one SELECT statement"


@case
def case_duckdb_reads_outside(c: Ctx):
    sql = "select * from read_csv('/etc/hostname')"
    return ["query", str(c.w), sql, "--engine", "duckdb"], "reads only this warehouse's tables"


# -- stats and selections


@case
def case_stats_bad_negatives(c: Ctx):
    return ["stats", str(c.w), "--negatives", "ratio:-2", "--quiet"], "--negatives must be"


@case
def case_stats_read_only_folder(c: Ctx):
    stats = c.w / "stats"
    if os.geteuid() == 0:  # root writes anywhere chmod forbids; an immutable folder stops it
        if subprocess.run(["chattr", "+i", str(stats)], capture_output=True).returncode:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        c.cleanup = lambda: subprocess.run(["chattr", "-i", str(stats)], check=True)
    else:
        stats.chmod(0o555)
        c.cleanup = lambda: stats.chmod(0o755)
    return ["stats", str(c.w), "--quiet", "--force"], "stats"


@case
def case_stats_site_not_captured(c: Ctx):
    return ["stats", str(c.w), "--site", "ffn.up", "--quiet"], "site 'ffn.up' is not in"


@case
def case_stats_on_unfinished_ingest(c: Ctx):
    c.edit_manifest(lambda m: m["state"].update(status="ingesting"))
    return ["stats", str(c.w), "--quiet", "--force"], "ingest has not finished"


@case
def case_select_neuron_out_of_range(c: Ctx):
    sql = "select 100000 as neuron_id"
    return ["select", str(c.w), "--name", "big", "--sql", sql], "not neurons of site ffn.act"


@case
def case_select_negative_neuron(c: Ctx):
    sql = "select -3 as neuron_id"
    return ["select", str(c.w), "--name", "neg", "--sql", sql], "-3"


@case
def case_select_top_too_many(c: Ctx):
    args = ["select", str(c.w), "--name", "x", "--relation", "capital", "--top", "100000"]
    return args, "exceeds the site's 96 neurons"


@case
def case_select_unknown_relation(c: Ctx):
    args = ["select", str(c.w), "--name", "x", "--relation", "capitol", "--top", "3"]
    return args, "capitol"


@case
def case_select_name_exists(c: Ctx):
    args = ["select", str(c.w), "--name", "cap", "--relation", "capital", "--top", "3"]
    return args, "already exists"


@case
def case_select_bad_name(c: Ctx):
    args = ["select", str(c.w), "--name", "../escape", "--relation", "capital", "--top", "3"]
    return args, "bad selection name"


@case
def case_overlap_unknown_selection(c: Ctx):
    return ["overlap", str(c.w), "cap", "nope"], "no selection named 'nope'"


# -- eval


@case
def case_eval_unknown_selection(c: Ctx):
    return ["eval", str(c.w), "--selection", "nope", "--quiet"], "no selection named 'nope'"


@case
def case_eval_selection_of_other_model(c: Ctx):
    for ext in ("parquet", "json"):
        shutil.copy(c.other_w / "selections" / f"cap_other.{ext}", c.w / "selections")
    args = ["eval", str(c.w), "--selection", "cap_other", "--quiet"]
    return args, "was made for another model"


@case
def case_eval_with_other_weights(c: Ctx):
    args = ["eval", str(c.w), "--selection", "cap", "--controls", "1", "--quiet"]
    return [*args, "--model", str(c.other_model)], "pass --model with that model"


@case
def case_eval_top_count_too_big(c: Ctx):
    args = ["eval", str(c.w), "--selection", "cap", "--top-counts", "500", "--quiet"]
    return args, "holds only 5 neurons"


@case
def case_eval_unknown_match_mode(c: Ctx):
    args = ["eval", str(c.w), "--selection", "cap", "--match", "fuzzy", "--quiet"]
    return args, "unknown match mode 'fuzzy'"


# -- usage errors (click's, as typer raises them)


@case
def case_missing_argument(c: Ctx):
    return ["query", str(c.w)], "Missing argument"


@case
def case_missing_warehouse_argument(c: Ctx):
    return ["stats"], "Missing argument"


@case
def case_unknown_option(c: Ctx):
    return ["info", str(c.w), "--colour"], "No such option: --colour"


@case
def case_unknown_command(c: Ctx):
    return ["inspect", str(c.w)], "No such command 'inspect'"


@case
def case_eval_top_counts_not_numbers(c: Ctx):
    args = ["eval", str(c.w), "--selection", "cap", "--top-counts", "abc", "--quiet"]
    return args, "--top-counts takes comma-separated whole numbers"


# -- concurrency


@case
def case_writer_lock_held(c: Ctx):
    # A live process (this one) holds the lock: a second writer is turned away.
    from warehouse.store.lock import WriterLock

    lock = WriterLock(c.w, "stats")
    lock.acquire()
    lock.held = False  # leave the file for the command to meet; the test removes it
    c.cleanup = lambda: (c.w / ".lock").unlink()
    c.ignore = "w/.lock"
    return ["stats", str(c.w), "--quiet", "--force"], "is being written by `stats`"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(
    name, capsys, monkeypatch, tmp_path, built, built_other, tiny_llama_dir, other_model_dir
):
    w = tmp_path / "w"
    shutil.copytree(built, w)
    ctx = Ctx(tmp_path, w, tiny_llama_dir, other_model_dir, built_other)
    ctx.mp = monkeypatch
    args, fragment = CASES[name](ctx)
    before = snapshot(tmp_path)
    try:
        code, out, err = run_cli(capsys, *args)
    finally:
        if hasattr(ctx, "cleanup"):
            ctx.cleanup()
    assert code == 2, (out, err)
    message = usage_error(err) if err.startswith("Usage: ") else err
    assert message.startswith(("error: ", "Error: ")) and message.count("\n") <= 1, err
    assert "Traceback" not in err + out
    assert fragment in message, err
    if hasattr(ctx, "ignore"):
        before.pop(ctx.ignore)
    assert snapshot(tmp_path) == before, "existing data changed"
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def usage_error(err: str) -> str:
    """The `Error:` line of click's usage-error form, after checking the form: `Usage: …`,
    `Try 'warehouse [COMMAND] --help' for help.`, a blank line, `Error: …`."""
    lines = err.split("\n")
    assert len(lines) == 5 and lines[4] == "", err
    command = lines[0].removeprefix("Usage: ").split(" [OPTIONS]")[0]
    assert command.startswith("warehouse") and " " not in command.removeprefix("warehouse "), err
    assert lines[1:3] == [f"Try '{command} --help' for help.", ""], err
    assert lines[3].startswith("Error: "), err
    return lines[3]


def test_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("package", ["typer._click", "click"])
def test_usage_errors_of_either_click_in_clicks_form(package, capsys, monkeypatch):
    """typer vendors click from 0.26.0 and raises its copy's exceptions, older typer the
    click package's: either prints click's form. (tools/check_cli_range.sh runs the real CLI
    on the oldest and newest typer the pins allow.)"""
    from warehouse import cli

    core = pytest.importorskip(f"{package}.core")
    exceptions = pytest.importorskip(f"{package}.exceptions")
    import typer.core  # typer's vendored click has no concrete Command of its own

    command = (core.Command if package == "click" else typer.core.TyperCommand)("ingest")
    ctx = core.Context(command, info_name="warehouse ingest")
    error = exceptions.BadParameter("'x' is not a valid integer", ctx, param_hint="'--batch-size'")

    def app(**kwargs):
        raise error

    monkeypatch.setattr(cli, "app", app)
    assert run_cli(capsys, "ingest") == (
        2,
        "",
        "Usage: warehouse ingest [OPTIONS]\n"
        "Try 'warehouse ingest --help' for help.\n\n"
        "Error: Invalid value for '--batch-size': 'x' is not a valid integer\n",
    )


def test_version(capsys):
    from importlib.metadata import version

    assert run_cli(capsys, "--version") == (
        0,
        f"relation-warehouse {version('relation-warehouse')}\n",
        "",
    )


def test_a_huge_negatives_ratio_takes_every_negative(built, tmp_path, capsys):
    """ratio:K with K x positives beyond the other prompts samples them all: the stats equal
    those of ratio:1000, which already takes every candidate here (the old traceback was an
    integer overflow)."""
    import pyarrow.parquet as pq

    w = shutil.copytree(built, tmp_path / "w")
    for ratio in ("ratio:1e308", "ratio:1000"):
        code, _, err = run_cli(capsys, "stats", str(w), "--negatives", ratio, "--quiet")
        assert code == 0 and err == "", err
    cols = ["relation", "language", "neuron_id", "ap", "auroc", "n_neg"]
    huge = pq.read_table(w / "stats" / "ffn.act__mean__ratio-1e+308.parquet", columns=cols)
    every = pq.read_table(w / "stats" / "ffn.act__mean__ratio-1000.parquet", columns=cols)
    assert huge.to_pylist() == every.to_pylist()


# ---------------------------------------------------------------------- real processes


def test_exit_code_and_debug_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = {"capture_output": True, "text": True, "env": env}
    missing = str(tmp_path / "missing")
    cmd = [sys.executable, "-m", "warehouse", "info", missing]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert p.stderr == f"error: {missing}: no such warehouse folder\n"
    p = subprocess.run(
        [sys.executable, "-m", "warehouse", "--debug", "info", missing],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode != 0
    assert "Traceback" in p.stderr and "FormatError" in p.stderr
    # A usage error from typer's click: click's form, exit 2, with --debug too; the same
    # from `python -m warehouse.cli`.
    for start in (["-m", "warehouse"], ["-m", "warehouse", "--debug"], ["-m", "warehouse.cli"]):
        p = subprocess.run([sys.executable, *start, "query", missing], **run)
        assert (p.returncode, p.stdout) == (2, "")
        assert usage_error(p.stderr) == "Error: Missing argument 'sql'."


# ---------------------------------------------------------------------------- the API


def test_api_refusals(built, tmp_path):
    from warehouse.analysis.evaluate import EvalConfig, run_eval
    from warehouse.analysis.selections import select
    from warehouse.api import Warehouse
    from warehouse.store.checksums import verify

    w = tmp_path / "w"
    shutil.copytree(built, w)
    before = snapshot(tmp_path)
    wh = Warehouse.open(w)
    checks: list[tuple[Callable[[], object], str]] = [
        (lambda: Warehouse.open("s3://bucket/w"), "needs the package 's3fs'"),
        (lambda: Warehouse.open(tmp_path / "nothing"), "no such warehouse"),
        (lambda: wh.sql("select * from nowhere"), "unknown table 'nowhere'"),
        (lambda: wh.sql("select relation from prompts where"), "SQL error"),
        (lambda: wh.sql("select * from read_parquet('/x.parquet')"), "not allowed"),
        (lambda: wh.sql("attach 'x.db'", engine="duckdb"), "one SELECT statement"),
        (lambda: wh.sql("select 1", engine="spark"), "unknown engine 'spark'"),
        (lambda: wh.lazy("evals"), "does not exist yet"),
        (lambda: select(w, "x", "capital", top=0), "--top must be a positive integer"),
        (lambda: run_eval(w, EvalConfig(selection="cap", split="dev")), "unknown split 'dev'"),
        (lambda: verify(tmp_path), "not a warehouse"),
    ]
    for fn, fragment in checks:
        with pytest.raises(WarehouseError) as e:
            fn()
        assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert snapshot(tmp_path) == before
