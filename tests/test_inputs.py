"""Commands never write into their inputs, never read or copy through links or special
files, and `verify` tells the truth about locks, derived folders, read-only copies and the
temp folders of killed export/merge runs.

Every refusal is one `error:` line with exit code 2, and the source's files are hashed before
and after: not one byte (nor one entry) changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import fsspec
import pytest
from conftest import ingest_cfg, run_cli

from warehouse.analysis.findings import compute
from warehouse.api import Warehouse
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.checksums import verify
from warehouse.store.errors import FormatError, WarehouseError
from warehouse.store.export import ExportOptions, export
from warehouse.store.files import REPORT_MARKER, claim_output_folder
from warehouse.store.location import Location, require_regular
from warehouse.store.lock import UNLOCKED_CREATION_GRACE_S

EXIT_ERROR = 2  # the CLI's exit code for a refused command (one `error:` line)
EXIT_PROBLEMS = 1  # verify's exit code when it finds problems


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    rows = [
        {"relation": r, "language": "en", "subject": s, "object": f"{o}{i}", "templates": [t]}
        for r, o, t in (
            ("capital", "City", "The capital of {subject} is"),
            ("coin", "Coin", "{subject} pays in"),
        )
        for i, s in enumerate(("Peru", "Chile", "Kenya", "Japan"))
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _cfg(out: Path, model: Path, data: Path, shard=None) -> IngestConfig:
    return ingest_cfg(out, model, data, prompt_chunk=2, shard=shard)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_llama_dir, data, module_cache) -> Path:
    """A complete warehouse with stats and a selection."""
    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats

    out = tmp_path_factory.mktemp("built") / "w"
    ingest(_cfg(out, tiny_llama_dir, data), show_progress=False)
    run_stats(out, split="all", show_progress=False)
    select(out, "cap", "capital", top=4)
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_llama_dir, data, module_cache) -> tuple[Path, Path]:
    """The two shards of one ingest: inputs `merge` accepts."""
    tmp = tmp_path_factory.mktemp("parts")
    for i in (1, 2):
        ingest(_cfg(tmp / f"p{i}", tiny_llama_dir, data, (i, 2)), show_progress=False)
    return tmp / "p1", tmp / "p2"


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture
def w(built, tmp_path) -> Path:
    return _copy(built, tmp_path / "w")


def _state(root: Path) -> dict[str, str]:
    """Every entry under `root` with its sha256 (links: their target; others: their kind)."""
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        for n in [*dirnames, *names]:
            p = Path(dirpath) / n
            mode = os.lstat(p).st_mode
            rel = p.relative_to(root).as_posix()
            if stat.S_ISREG(mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                out[rel] = "link -> " + os.readlink(p)
            else:
                out[rel] = stat.filemode(mode)[0]
    return out


def _refused(capsys, args: list[str], fragment: str, *sources: Path) -> str:
    """Run the CLI; it must print exactly one `error:` line holding `fragment`, exit with
    EXIT_ERROR, and leave every source folder (and what lies beside it) as it was."""
    before = {s: _state(s.parent) for s in sources}
    code, out, err = run_cli(capsys, *args)
    assert code == EXIT_ERROR, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    for s in sources:
        assert _state(s.parent) == before[s]
    return lines[0]


def _subprocess_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (for cases that would hang a broken reader)."""
    return subprocess.run(
        [sys.executable, "-m", "warehouse", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


# ----------------------------------------------------------------- links and special files


def test_require_regular_names_what_a_path_is(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    assert require_regular(tmp_path / "f").st_size == 1
    (tmp_path / "l").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "p")
    (tmp_path / "d").mkdir()
    for name, kind in (("l", "a symbolic link"), ("p", "a FIFO"), ("d", "a folder")):
        with pytest.raises(FormatError, match=f"is {kind}, not a plain file"):
            require_regular(tmp_path / name)
    with pytest.raises(FormatError, match="is missing"):
        require_regular(tmp_path / "nothing")


@pytest.mark.parametrize("as_zip", [False, True])
def test_export_refuses_a_link_to_a_private_file(w, tmp_path, capsys, as_zip):
    private = tmp_path / "private.parquet"
    private.write_bytes((w / "prompts.parquet").read_bytes())  # a valid table, not theirs
    (w / "stats" / "leak.parquet").symlink_to(private)
    dest = tmp_path / ("share.zip" if as_zip else "share")
    args = ["export", str(w), str(dest), "--quiet", *(["--zip"] if as_zip else [])]
    _refused(capsys, args, "stats/leak.parquet is a symbolic link", w)
    assert not dest.exists()


def test_export_refuses_a_linked_folder(w, tmp_path, capsys):
    """A derived folder replaced by a link to one elsewhere: its files are not followed."""
    elsewhere = _copy(w / "selections", tmp_path / "elsewhere")
    import shutil

    shutil.rmtree(w / "selections")
    (w / "selections").symlink_to(elsewhere)
    with pytest.raises(FormatError, match="selections is a symbolic link, not a folder"):
        Location.of(w).read_bytes("selections/cap.json")
    # Export reads the selections it lists through the link's place: refused, not followed.
    _refused(capsys, ["export", str(w), str(tmp_path / "s"), "--quiet"], "selections", w)


def test_export_refuses_a_linked_chunk(w, tmp_path, capsys):
    chunk = w / "responses.zarr/ffn.act/mean/c/0/0/0"
    copy = tmp_path / "chunk"
    copy.write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(copy)
    _refused(
        capsys,
        ["export", str(w), str(tmp_path / "s"), "--quiet"],
        "c/0/0/0 is a symbolic link",
        w,
    )


@pytest.mark.parametrize("special", ["fifo", "socket"])
def test_special_files_are_reported_and_refused_without_blocking(w, tmp_path, special):
    target = w / "stats" / "x.parquet"
    if special == "fifo":
        os.mkfifo(target)
        kind = "a FIFO"
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
        kind = "a socket"
    before = _state(w)
    out = _subprocess_cli("verify", str(w), timeout=60)
    assert out.returncode == EXIT_PROBLEMS, out
    assert out.stdout.count("PROBLEM ") == 1, out.stdout
    assert f"PROBLEM special file stats/x.parquet ({kind})" in out.stdout
    out = _subprocess_cli("export", str(w), str(tmp_path / "s"), "--quiet", timeout=60)
    assert out.returncode == EXIT_ERROR and f"stats/x.parquet is {kind}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "s").exists() and _state(w) == before


def test_merge_refuses_a_linked_chunk(parts, tmp_path, capsys):
    a, b = _copy(parts[0], tmp_path / "a"), _copy(parts[1], tmp_path / "b")
    chunk = a / "activations.zarr/ffn.act/c/0/0/0"
    copy = tmp_path / "outside"
    copy.write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(copy)
    out = tmp_path / "m"
    _refused(capsys, ["merge", str(a), str(b), "--out", str(out), "--quiet"], "symbolic link", a)
    assert not out.exists()


def _zip_with(tmp_path: Path, share: Path, name: str, data: bytes, mode: int | None) -> Path:
    bad = tmp_path / f"bad-{len(list(tmp_path.glob('bad-*')))}.zip"
    bad.write_bytes(share.read_bytes())
    with zipfile.ZipFile(bad, "a") as zf:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return bad


@pytest.mark.parametrize(
    ("name", "mode", "fragment"),
    [
        ("stats/leak.parquet", stat.S_IFLNK | 0o777, "is a symbolic link"),
        ("stats/fifo.parquet", stat.S_IFIFO | 0o644, "is a FIFO"),
        ("../outside.txt", None, "not a relative path inside"),
        ("/etc/evil.txt", None, "not a relative path inside"),
        ("stats/../../evil.txt", None, "not a relative path inside"),
    ],
)
def test_zips_with_links_or_escaping_names_are_refused(
    built, tmp_path, capsys, name, mode, fragment
):
    share = tmp_path / "share.zip"
    export(built, share, ExportOptions(zip=True), show_progress=False)
    bad = _zip_with(tmp_path, share, name, b"/etc/passwd", mode)
    for args in (
        ["verify", str(bad)],
        ["export", str(bad), str(tmp_path / "copy"), "--quiet"],
        ["query", str(bad), "select count(*) from prompts"],
    ):
        _refused(capsys, args, fragment, bad)
    with pytest.raises(FormatError, match=fragment):
        Warehouse.open(bad)
    assert not (tmp_path / "copy").exists()


def test_report_reads_no_link(w, tmp_path, capsys):
    """The study record a report reads, linked to a file outside: refused, and no report."""
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"finished": True}))
    (w / "study").mkdir()
    (w / "study" / "study.json").symlink_to(private)
    with pytest.raises(FormatError, match="study/study.json is a symbolic link"):
        compute(w)
    out = tmp_path / "r"
    _refused(capsys, ["report", str(w), "--out", str(out)], "symbolic link", w)
    assert not out.exists()


# ------------------------------------------------------------------ export checks derived


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-20])


def _edit_size(p: Path) -> None:
    side = json.loads(p.read_text())
    side["size"] += 1
    p.write_text(json.dumps(side))


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda w: _truncate(next((w / "stats").glob("*.parquet"))), "not a readable Parquet"),
        (lambda w: _edit_size(w / "selections" / "cap.json"), "has 4 rows, its sidecar says 5"),
        (lambda w: (w / "selections" / "cap.json").unlink(), "has no sidecar cap.json"),
    ],
    ids=["truncated_stats", "sidecar_rows", "no_sidecar"],
)
@pytest.mark.parametrize("as_zip", [False, True])
def test_export_refuses_a_damaged_derived_file(w, tmp_path, capsys, damage, fragment, as_zip):
    damage(w)
    dest = tmp_path / ("share.zip" if as_zip else "share")
    args = ["export", str(w), str(dest), "--quiet", *(["--zip"] if as_zip else [])]
    line = _refused(capsys, args, fragment, w)
    assert "nothing was exported" in line
    assert not dest.exists() and not list(tmp_path.glob(".share*"))


# ------------------------------------------------------------------ outputs outside inputs


def _dest_cases(w: Path, other: Path) -> dict[str, tuple[list[str], str]]:
    return {
        "export_into_itself": (["export", str(w), str(w / "share"), "--quiet"], "inside it"),
        "export_into_stats": (["export", str(w), str(w / "stats" / "x"), "--quiet"], "inside"),
        "export_zip_into_itself": (
            ["export", str(w), str(w / "s.zip"), "--zip", "--quiet"],
            "inside it",
        ),
        "export_through_dotdot": (
            ["export", str(w), str(w / "stats" / ".." / "s"), "--quiet"],
            "inside it",
        ),
        "query_output_into_itself": (
            ["query", str(w), "select 1 as x", "--format", "csv", "--output", str(w / "x.csv")],
            "inside it",
        ),
        "report_into_itself": (["report", str(w), "--out", str(w)], "inside it"),
        "report_into_stats": (["report", str(w), "--out", str(w / "stats")], "inside it"),
        "report_around_itself": (
            ["report", str(w), "--out", str(w.parent), "--overwrite"],
            "does not hold the warehouse",
        ),
        "study_report_into_evals": (
            ["study", "--out", str(w), "--report", str(w / "evals"), "--quiet"],
            "inside it",
        ),
        "demo_report_into_itself": (
            ["demo", "--out", str(w), "--report", str(w), "--quiet"],
            "inside it",
        ),
        "report_into_a_user_folder": (
            ["report", str(w), "--out", str(other)],
            "holds other files and is not a folder a report was drawn into",
        ),
        "study_report_into_a_user_folder": (
            ["study", "--out", str(w), "--report", str(other), "--quiet"],
            "holds other files",
        ),
    }


CASES = sorted(_dest_cases(Path("w"), Path("o")))


@pytest.mark.parametrize("case", CASES)
def test_no_command_writes_into_its_input(w, tmp_path, capsys, case):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "index.html").write_text("my own page")
    args, fragment = _dest_cases(w, other)[case]
    if "around" in case:  # the warehouse is inside the folder: name it like a report file
        w = _copy(w, tmp_path / "index.html")
        args = ["report", str(w), "--out", str(tmp_path), "--overwrite"]
    before = _state(other)
    _refused(capsys, args, fragment, w)
    assert _state(other) == before


def test_merge_into_an_input_is_refused(parts, tmp_path, capsys):
    a, b = _copy(parts[0], tmp_path / "a"), _copy(parts[1], tmp_path / "b")
    args = ["merge", str(a), str(b), "--out", str(a / "merged"), "--quiet"]
    _refused(capsys, args, "inside it", a, b)
    args = ["merge", str(a), str(b), "--out", str(b / "x" / ".." / "m"), "--quiet"]
    _refused(capsys, args, "inside it", a, b)


def test_report_may_draw_into_the_warehouse_report_folder(w, tmp_path, capsys):
    """W/report is the report's own place (the demo draws there): not refused as inside."""
    code, _, err = run_cli(capsys, "report", str(w), "--out", str(w / "report"))
    assert code == EXIT_ERROR and "no finished study" in err and "inside" not in err


def test_report_folder_is_marked_and_can_be_drawn_again(tmp_path):
    new = tmp_path / "r"
    claim_output_folder(new)
    assert sorted(p.name for p in new.iterdir()) == [REPORT_MARKER]
    (new / "index.html").write_text("an earlier report")
    claim_output_folder(new)  # a report folder: drawn again without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(WarehouseError, match="pass --overwrite"):
        claim_output_folder(mine)
    with pytest.raises(WarehouseError, match="holds other files"):
        claim_output_folder(mine, create=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    claim_output_folder(mine, overwrite=True)
    assert sorted(p.name for p in mine.iterdir()) == [REPORT_MARKER, "notes.txt"]
    claim_output_folder(mine)  # now marked
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_output_folder(empty)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WarehouseError, match="is not a folder"):
        claim_output_folder(tmp_path / "file", overwrite=True)


# ------------------------------------------------------------------ verify tells the truth


def _verify_cli(capsys, w: Path) -> tuple[int, list[str]]:
    code, out, _ = run_cli(capsys, "verify", str(w))
    return code, [line for line in out.splitlines() if line.startswith("PROBLEM ")]


def _lock_folder(w: Path) -> None:
    (w / ".lock").mkdir()


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda w: (w / ".lock").write_bytes(b""), "empty or not a writer lock's JSON"),
        (lambda w: (w / ".lock").write_bytes(b"\x00garbage{"), "empty or not a writer lock's JSON"),
        (lambda w: (w / ".lock").write_text('{"pid": 1}'), "empty or not a writer lock's JSON"),
        (_lock_folder, "a folder"),
    ],
    ids=["empty", "garbage", "incomplete", "folder"],
)
def test_an_unreadable_lock_is_a_problem_and_hides_no_temp_file(w, capsys, make, what):
    make(w)
    (w / "stats" / "x.parquet.tmp-0123abcd").write_bytes(b"half")
    code, problems = _verify_cli(capsys, w)
    assert code == EXIT_PROBLEMS
    assert problems == [
        f"PROBLEM writer lock .lock is unreadable ({what}): no writer can be told from it, "
        "and writers refuse to start; if no warehouse command runs, delete .lock",
        "PROBLEM leftover temp file: stats/x.parquet.tmp-0123abcd",
    ]


def _stray_parquet(w: Path) -> None:
    stats = next((w / "stats").glob("*.parquet"))
    (w / "stats" / "extra.parquet").write_bytes(stats.read_bytes())


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            _stray_parquet,
            "stats/extra.parquet has no sidecar extra.json, yet the `stats` view would read it",
        ),
        (lambda w: (w / "stats" / "notes.txt").write_text("x"), "unexpected file: stats/notes.txt"),
        (lambda w: (w / "selections" / "sub").mkdir(), "unexpected folder: selections/sub"),
        (
            lambda w: ((w / "study").mkdir(), (w / "study" / "notes.txt").write_text("x")),
            "unexpected file: study/notes.txt",
        ),
        (
            lambda w: ((w / "study").mkdir(), (w / "study" / "study.json").write_text("[1]")),
            "study/study.json is not a readable JSON object",
        ),
        (
            lambda w: ((w / "evals" / "parts" / "r1").mkdir(parents=True), _stray_pair(w)),
            "evals/parts/r1/1-of-2.parquet has no sidecar 1-of-2.json",
        ),
    ],
    ids=["parquet_no_sidecar", "stray_file", "stray_folder", "study_stray", "study_json", "parts"],
)
def test_a_stray_in_a_derived_folder_is_a_problem(w, capsys, make, expected):
    assert verify(w).ok
    make(w)
    code, problems = _verify_cli(capsys, w)
    assert code == EXIT_PROBLEMS and len(problems) == 1, problems
    assert problems[0].startswith(f"PROBLEM {expected}"), problems


def _stray_pair(w: Path) -> None:
    stats = next((w / "stats").glob("*.parquet"))
    (w / "evals" / "parts" / "r1" / "1-of-2.parquet").write_bytes(stats.read_bytes())


def test_a_zipped_export_gains_no_derived_file(built, tmp_path, capsys):
    share = tmp_path / "share.zip"
    m = export(built, share, ExportOptions(zip=True), show_progress=False)
    assert verify(share).ok
    stats = next(f for f in m.files if f.startswith("stats/") and f.endswith(".parquet"))
    with zipfile.ZipFile(share) as zf:
        table, side = zf.read(stats), zf.read(stats.removesuffix(".parquet") + ".json")
    added = share.with_name("added.zip")
    added.write_bytes(share.read_bytes())
    with zipfile.ZipFile(added, "a") as zf:
        zf.writestr("stats/extra.parquet", table)
        zf.writestr("stats/extra.json", side)
    code, problems = _verify_cli(capsys, added)
    assert code == EXIT_PROBLEMS
    assert problems == [
        f"PROBLEM stats/{n} is not listed in the manifest's files: it was added after the "
        "export (a read-only copy gains no files)"
        for n in ("extra.json", "extra.parquet")
    ]


def test_remote_checks_cover_the_derived_files_local_checks_do(built, tmp_path):
    """The same damage in a local folder and in a memory:// copy: the same problems."""
    local = _copy(built, tmp_path / "w")
    _stray_parquet(local)
    _truncate(local / "selections" / "cap.parquet")
    (local / "stats" / "x.parquet.tmp-1").write_bytes(b"half")
    fs = fsspec.filesystem("memory")
    for path in local.rglob("*"):
        if path.is_file():
            fs.pipe(f"/inputs/w/{path.relative_to(local).as_posix()}", path.read_bytes())
    try:
        remote = verify("memory://inputs/w")
    finally:
        fs.rm("/inputs", recursive=True)
    here = verify(local)
    assert len(here.problems) == 3, here.problems
    assert sorted(remote.problems) == sorted(here.problems)
    assert remote.checked_files == here.checked_files


# ------------------------------------------------------------------ killed export and merge

SLOW = """
import sys, time
import warehouse.store.{module} as m
real = m.{func}
def slow(*a, **kw):
    time.sleep({delay})
    return real(*a, **kw)
m.{func} = slow
from warehouse import cli
sys.argv = ["warehouse", *sys.argv[1:]]
cli.main()
"""


def _kill_mid_copy(dest: Path, module: str, func: str, delay: float, *args: str) -> Path:
    """Start the command with `func` slowed down, SIGKILL it once its temp folder holds its
    lock and a copied file, and return that temp folder."""
    code = SLOW.format(module=module, func=func, delay=delay)
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE)
    deadline = time.time() + 90
    try:
        while time.time() < deadline:
            temps = list(dest.parent.glob(f".{dest.name}.tmp-*"))
            if temps and (temps[0] / ".lock").is_file():
                files = [p for p in temps[0].rglob("*") if p.is_file() and p.name != ".lock"]
                if files:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        else:
            raise AssertionError("the command never started copying")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return temps[0]


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_killed_export_is_reported_and_cleaned_by_the_next(built, tmp_path, capsys, as_zip):
    w = _copy(built, tmp_path / "w")
    before = _state(w)
    dest = tmp_path / ("share.zip" if as_zip else "share")
    extra = ["--zip"] if as_zip else []
    temp = _kill_mid_copy(dest, "export", "_pump", 0.1, "export", str(w), str(dest), *extra)
    assert not dest.exists() and _state(w) == before
    code, problems = _verify_cli(capsys, dest)
    assert code == EXIT_PROBLEMS
    assert problems[0] == f"PROBLEM {dest}: no warehouse here"
    assert problems[1].startswith(f"PROBLEM leftover temp folder {temp.name} beside {dest.name}")
    assert "of a killed `warehouse export`: the next `warehouse export`" in problems[1]
    assert len(problems) == 2
    code, _, err = run_cli(capsys, "export", str(w), str(dest), "--quiet", *extra)
    assert code == 0, err
    assert not temp.exists() and not list(tmp_path.glob(f".{dest.name}.tmp-*"))
    assert verify(dest).ok and _state(w) == before


def test_a_killed_merge_is_reported_and_cleaned_by_the_next(parts, tmp_path, capsys):
    a, b = parts
    before = (_state(a), _state(b))
    out = tmp_path / "m"
    temp = _kill_mid_copy(out, "merge", "_fill", 0.5, "merge", str(a), str(b), "--out", str(out))
    assert (_state(a), _state(b)) == before
    code, problems = _verify_cli(capsys, out)
    assert code == EXIT_PROBLEMS and len(problems) == 2, problems
    assert "of a killed `warehouse merge`" in problems[1]
    code, _, err = run_cli(capsys, "merge", str(a), str(b), "--out", str(out), "--quiet")
    assert code == 0, err
    assert not temp.exists() and verify(out).ok
    assert (_state(a), _state(b)) == before


def test_old_unlocked_temp_folders_are_reported_and_cleaned(parts, tmp_path, capsys):
    """A temp folder without a lock (a kill between its mkdtemp and its lock, or an older
    version of this tool) counts as dead after UNLOCKED_CREATION_GRACE_S."""
    out = tmp_path / "m"
    old, young = tmp_path / ".m.tmp-old", tmp_path / ".m.tmp-young"
    for folder in (old, young):
        folder.mkdir()
        (folder / "prompts.parquet").write_bytes(b"x" * 1000)
    t = time.time() - 2 * UNLOCKED_CREATION_GRACE_S
    os.utime(old, (t, t))
    code, out_text, _ = run_cli(capsys, "verify", str(out))
    assert code == EXIT_PROBLEMS
    assert (
        "PROBLEM leftover temp folder .m.tmp-old beside m (1,000 bytes) of a killed "
        "`warehouse ingest, export or merge`"
    ) in out_text
    assert "NOTE .m.tmp-young: `warehouse ingest, export or merge` is making m" in out_text
    code, _, err = run_cli(capsys, "merge", *map(str, parts), "--out", str(out), "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.tmp-young", "m"]
