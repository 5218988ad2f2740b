"""Habits the project's own files keep: they speak of versions, not of dated work logs; they
cite no file the repository lacks; tests, benchmarks and tools name no path of one machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".toml", ".txt", ".sh", ".cfg", ".json", ".yml", ".yaml")
# Uses of the word that are names from other code: pytest's fixture scope, aiohttp's client.
LIBRARY_SESSION = re.compile(r'scope="session"|ClientSession|set_session\(|\bsession(\.| =)')
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|home|root|Users|mnt)/")


def tracked_text_files() -> list[Path]:
    """The project's text files as git tracks them; outside a git checkout, every text file
    under the repository but hidden folders and virtual environments."""
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if done.returncode == 0 and done.stdout:
        paths = [REPO / p for p in done.stdout.split("\0") if p]
    else:
        skip = {"venv", "env", "build", "dist"}
        paths = [
            p
            for p in REPO.rglob("*")
            if not any(part.startswith(".") or part in skip for part in p.relative_to(REPO).parts)
        ]
    return [p for p in paths if p.suffix in TEXT and p.is_file()]


def lines_matching(pattern: re.Pattern[str], files: list[Path], allow=None) -> list[str]:
    out = []
    for path in files:
        for i, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line) and not (allow and allow.search(line)):
                out.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    return out


def test_no_file_keeps_a_work_log():
    files = [p for p in tracked_text_files() if p != Path(__file__)]
    found = lines_matching(re.compile(r"session", re.I), files, allow=LIBRARY_SESSION)
    assert found == []


def test_no_file_cites_the_design_outside_the_repo():
    files = [p for p in tracked_text_files() if p != Path(__file__)]
    assert lines_matching(re.compile(r"DESIGN\.md"), files) == []


def test_tests_bench_and_tools_name_no_machine_path():
    folders = ("tests", "bench", "tools", ".ci")
    files = [
        p
        for p in tracked_text_files()
        if p.relative_to(REPO).parts[0] in folders and p != Path(__file__)
    ]
    assert len(files) > 20
    assert lines_matching(MACHINE_PATH, files) == []


def test_the_patterns_find_what_they_look_for():
    assert MACHINE_PATH.search('LRE = Path("/work/shared/data/lre")')
    assert not MACHINE_PATH.search("url = 'https://example.org/work/x'")
    assert LIBRARY_SESSION.search('@pytest.fixture(scope="session")')
    assert not LIBRARY_SESSION.search("measured in session 11")


def commit_msg_hook(tmp_path: Path, message: str) -> subprocess.CompletedProcess:
    path = tmp_path / "COMMIT_EDITMSG"
    path.write_text(message, encoding="utf-8")
    hook = REPO / "tools" / "hooks" / "commit-msg"
    return subprocess.run([sys.executable, hook, path], capture_output=True, text=True)


def test_the_commit_msg_hook_wants_a_short_subject_and_a_body(tmp_path):
    ok = "Stats rank ties by AUROC\n\nEqual APs were ordered by neuron id.\n# a comment\n"
    assert commit_msg_hook(tmp_path, ok).returncode == 0
    assert commit_msg_hook(tmp_path, "é" * 72 + "\n\nWhy.\n").returncode == 0
    long = commit_msg_hook(tmp_path, "x" * 73 + "\n\nWhy.\n")
    assert (long.returncode, long.stderr) == (
        1,
        "error: the subject is 73 characters; keep it to 72\n",
    )
    for bad in ("Subject only\n", "Subject\nno blank line\n", "Subject\n\n   \n"):
        done = commit_msg_hook(tmp_path, bad)
        assert (done.returncode, done.stderr) == (
            1,
            "error: after the subject, a blank line and a body that says why\n",
        ), bad
