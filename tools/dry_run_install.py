"""What a fresh install of relation-warehouse resolves to, without installing anything.

    python tools/dry_run_install.py              # the README's demo install: .[report]
    python tools/dry_run_install.py test         # the test suite's: .[test]

Runs `pip install --dry-run --ignore-installed --report` on this checkout and compares each
resolved release with the one installed here (the releases the test suite runs on). It
fails (exit 1) when the pins resolve to a release not installed here, or to a CUDA build
(an `nvidia-*` package); it needs PyPI, and takes a minute or two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The project itself, and installers that a venv brings in its own release.
NOT_COMPARED = {"relation-warehouse", "setuptools", "pip", "wheel"}


def resolve(extra: str) -> dict[str, str]:
    """name -> version pip would install for `.[extra]` in an empty environment."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{ROOT}[{extra}]",
        ]
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        items = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("extra", nargs="?", default="report")
    resolved = resolve(ap.parse_args().extra)
    problems = []
    for name, got in sorted(resolved.items()):
        try:
            here = version(name)
        except PackageNotFoundError:
            here = "not installed"
        mark = "" if got == here else f"   (here: {here})"
        if name.startswith("nvidia-") or (mark and name not in NOT_COMPARED):
            problems.append(name)
        print(f"{name:<28} {got}{mark}")
    print(
        f"{len(resolved)} packages; {len(problems)} differ from this environment"
        + (f": {', '.join(problems)}" if problems else "")
    )
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
