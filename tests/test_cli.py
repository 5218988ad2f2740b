"""The command line: every command has help, errors are one line, exit codes mean something."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import conftest
import polars as pl
import pytest


def registered_commands() -> list[str]:
    """Every command the typer app registers, by the name the CLI answers to."""
    import typer

    from warehouse import cli

    return sorted(typer.main.get_command(cli.app).commands)


def run(capsys, *args: str) -> tuple[int, str, str]:
    return conftest.run_cli(capsys, *args)


def test_every_command_is_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names = registered_commands()
    assert {"export", "merge", "verify"} <= set(names)
    assert [n for n in names if not re.search(rf"\bwarehouse {n}\b", readme)] == []


def test_help_lists_every_command_with_a_description(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in registered_commands():
        line = next(ln for ln in out.splitlines() if f" {name} " in ln)
        assert len(line.split(name, 1)[1].strip(" │")) > 10, line
    for name in registered_commands():
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and "Usage" in out


def test_datasets_json(capsys):
    code, out, _ = run(capsys, "datasets", "--json")
    assert code == 0
    info = json.loads(out)
    rels = info["relations"]
    assert len(rels) >= 12
    assert all(set(langs) == {"en", "de", "fr", "es", "zh", "ja"} for langs in rels.values())
    big = [r for r, langs in rels.items() if all(c["facts"] >= 60 for c in langs.values())]
    assert len(big) >= 10
    for langs in rels.values():
        for c in langs.values():
            assert c["identify"] + c["test"] == c["facts"]
            assert c["test"] == min(50, int(c["facts"] * 0.4)) or c["test"] <= 50


def test_ingest_info_verify(capsys, tmp_path, tiny_llama_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(
                {
                    "relation": r,
                    "language": "en",
                    "subject": s,
                    "object": o,
                    "templates": [f"The {r} of {{subject}} is"],
                }
            )
            for r, s, o in [
                ("capital", "France", "Paris"),
                ("capital", "Peru", "Lima"),
                ("currency", "Japan", "yen"),
                ("currency", "Chile", "peso"),
            ]
        )
    )
    w = tmp_path / "w"
    args = [
        "ingest",
        "--out",
        str(w),
        "--model",
        str(tiny_llama_dir),
        "--dataset",
        str(data),
        "--quiet",
    ]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "4 prompts" in out
    code, out, _ = run(capsys, "info", str(w), "--json")
    assert code == 0 and json.loads(out)["state"]["status"] == "complete"
    code, out, _ = run(capsys, "verify", str(w))
    assert code == 0 and "OK" in out
    chunk = next((w / "responses.zarr/ffn.act/mean/c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.write_bytes(chunk.read_bytes()[:-3])
    code, out, _ = run(capsys, "verify", str(w))
    assert code == 1 and "is corrupt" in out
    # stats -> select -> selections -> overlap -> query, through the CLI
    shutil.rmtree(w)
    assert run(capsys, *args)[0] == 0
    code, out, err = run(capsys, "stats", str(w), "--quiet")
    assert code == 0, err
    assert "stats/ffn.act__mean__all.parquet" in out
    code, out, err = run(
        capsys, "select", str(w), "--name", "cap", "--relation", "capital", "--top", "5"
    )
    assert code == 0 and "5 neurons" in out, err
    code, out, err = run(
        capsys, "select", str(w), "--name", "ctl", "--random-like", "cap", "--seed", "1"
    )
    assert code == 0 and "5 neurons" in out, err
    code, out, _ = run(capsys, "selections", str(w), "--json")
    assert [s["name"] for s in json.loads(out)] == ["cap", "ctl"]
    code, out, _ = run(capsys, "overlap", str(w), "cap", "ctl")
    assert code == 0 and "jaccard" in out
    code, out, _ = run(
        capsys,
        "query",
        str(w),
        "select count(*) as n from selections where selection = 'cap'",
        "--format",
        "csv",
    )
    assert code == 0 and out.split() == ["n", "5"]
    code, _, err = run(capsys, "select", str(w), "--name", "x", "--relation", "nope", "--top", "5")
    assert code == 2 and "nope" in err and err.count("\n") == 1
    # the same command again is a no-op; another one is refused and touches nothing
    shutil.rmtree(w)
    assert run(capsys, *args)[0] == 0
    before = (w / "manifest.json").read_bytes()
    code, _, err = run(capsys, *args, "--dtype", "float32")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert (w / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["datasets", "--dataset", "/nonexistent/x.jsonl"], "no such dataset"),
        (["info", "/nonexistent-warehouse"], "no such warehouse"),
        (["verify", "."], "not a warehouse"),
        (
            ["ingest", "--out", "OUT", "--relations", "no_such_relation", "--quiet"],
            "no_such_relation",
        ),
        (["ingest", "--out", "OUT", "--sites", "ffn.nope", "--model", "TINY"], "ffn.nope"),
        (["ingest", "--out", "OUT", "--model", "/no/such/model"], "/no/such/model"),
        (["ingest", "--out", "OUT", "--pooling", "median"], "median"),
    ],
)
def test_bad_input_is_one_line(capsys, tmp_path, tiny_llama_dir, args, fragment):
    args = [
        a.replace("OUT", str(tmp_path / "o")).replace("TINY", str(tiny_llama_dir)) for a in args
    ]
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_info_lists_derived_tables_and_pooled_tokens(capsys, tmp_path, tiny_llama_dir):
    data = tmp_path / "d.jsonl"
    facts = [("capital", "France", "Paris"), ("capital", "Peru", "Lima")]
    facts += [("currency", "Japan", "yen"), ("currency", "Chile", "peso")]
    data.write_text(
        "".join(
            json.dumps(
                {"relation": r, "language": "en", "subject": s, "object": o}
                | {"templates": [f"The {r} of {{subject}} is"]}
            )
            + "\n"
            for r, s, o in facts
        )
    )
    w = tmp_path / "w"
    ingest = ["ingest", "--out", str(w), "--model", str(tiny_llama_dir), "--dataset", str(data)]
    code, _, err = run(capsys, *ingest, "--capture", "pooled", "--pooling", "mean", "--quiet")
    assert code == 0, err
    assert run(capsys, "stats", str(w), "--quiet")[0] == 0
    assert (
        run(capsys, "select", str(w), "--name", "cap", "--relation", "capital", "--top", "5")[0]
        == 0
    )
    code, _, err = run(
        capsys, "eval", str(w), "--selection", "cap", "--controls", "1", "--split", "all", "--quiet"
    )
    assert code == 0, err
    code, out, err = run(capsys, "info", str(w))
    assert code == 0, err
    n_tokens = pl.read_parquet(w / "prompts.parquet")["n_tokens"].sum()
    lines = out.splitlines()
    assert f"state       complete (4 prompts committed, their {n_tokens} tokens pooled)" in lines
    expected = [
        f"{view:<11} {f.stem} ({pl.read_parquet(f).height:,} rows)"
        for view in ("stats", "selections", "evals")
        for f in sorted((w / view).glob("*.parquet"))
    ]
    assert lines[-len(expected) :] == expected
    assert [ln.split()[0] for ln in expected] == ["stats", "selections", "evals", "evals"]
    assert expected[1] == "selections  cap (5 rows)"


def test_a_stage_without_its_extra_is_one_error_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "warehouse.analysis.report", raising=False)
    want = "error: the report needs matplotlib: pip install 'relation-warehouse[report]'"
    for args in (
        ["report", str(tmp_path / "w"), "--out", str(tmp_path / "r")],
        ["study", "--out", str(tmp_path / "w"), "--report", str(tmp_path / "r"), "--quiet"],
    ):
        code, out, err = run(capsys, *args)
        assert (code, out, err) == (2, "", f"{want} (or matplotlib)\n")
    assert list(tmp_path.iterdir()) == []
