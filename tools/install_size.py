"""Installed size of relation-warehouse's dependencies, read from this environment.

    python tools/install_size.py                 # the base install
    python tools/install_size.py report http     # what each extra adds on top of the base

Walks the requirements of the installed `relation-warehouse` (with the extras named) through
the installed distributions' metadata, and adds up the files each one's RECORD lists (what
pip would remove on uninstall: code, compiled libraries, data). The project itself is not
counted. Sizes are of the packages installed here: torch is the CPU build when this
environment has it (PyPI's Linux default, the CUDA build, is several GB more).
"""

from __future__ import annotations

import argparse
import os
import re
from importlib.metadata import Distribution, PackageNotFoundError, distribution

from packaging.requirements import Requirement

PROJECT = "relation-warehouse"


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(extras: set[str]) -> dict[str, Distribution]:
    """name -> distribution of every package that the project with `extras` needs."""
    found: dict[str, Distribution] = {}
    todo = [(PROJECT, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        dist = distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            env = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(e) for e in env):
                continue
            key = _name(req.name)
            if key == PROJECT:  # an extra that names other extras: relation-warehouse[http]
                todo.append((PROJECT, frozenset(req.extras)))
                continue
            if key in found:
                continue
            try:
                found[key] = distribution(req.name)
            except PackageNotFoundError:
                raise SystemExit(f"{req.name} is not installed here: install the extra") from None
            todo.append((req.name, frozenset(req.extras)))
    return found


def size(dist: Distribution) -> int:
    total = 0
    for f in dist.files or []:
        path = f.locate()
        if os.path.isfile(path) and not os.path.islink(path):
            total += os.path.getsize(path)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("extras", nargs="*", help="extras to measure on top of the base")
    ap.add_argument("--top", type=int, default=6, help="largest packages to name")
    args = ap.parse_args()
    base = closure(set())
    sizes = {k: size(d) for k, d in base.items()}
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[: args.top]
    print(
        f"base: {sum(sizes.values()) / 1e9:.2f} GB in {len(base)} packages; largest: "
        + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in largest)
    )
    for extra in args.extras:
        more = {k: d for k, d in closure({extra}).items() if k not in base}
        added = sum(size(d) for d in more.values())
        print(
            f"[{extra}] adds {added / 1e6:.0f} MB in {len(more)} packages: "
            + ", ".join(sorted(more))
        )


if __name__ == "__main__":
    main()
