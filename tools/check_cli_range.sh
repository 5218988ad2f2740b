#!/usr/bin/env bash
# The command line on the oldest and the newest typer that pyproject.toml allows: for each,
# a throw-away venv sees this environment (torch, the project, ...) behind its own typer,
# then tests/test_cli_usage.py runs on it (usage errors in click's form, --version,
# `python -m warehouse.cli`). Needs PyPI; ~30 s a release.
#
#   tools/check_cli_range.sh            # oldest and newest typer of the pins
#   tools/check_cli_range.sh 0.20.0     # one release
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
spec=$(grep -o '"typer[^"]*"' "$root/pyproject.toml" | tr -d '"')  # e.g. typer>=0.27,<0.30
low=${spec#*>=}; low=${low%%,*}
if [ $# -gt 0 ]; then wanted=("typer==$1"); else wanted=("typer==$low" "$spec"); fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for want in "${wanted[@]}"; do
    venv="$tmp/venv-$(echo "$want" | tr -c 'a-z0-9.' _)"
    "$py" -m venv "$venv"
    # The parent's site folders come after the venv's own (so its typer wins), with their
    # .pth files processed (the editable install of the project among them).
    "$py" -c 'import site, sys; print("".join(f"import site; site.addsitedir({p!r})\n" for p in sys.path if p.endswith("-packages")))' \
        > "$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/zz_parent.pth"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$want" 2>/dev/null
    got=$("$venv/bin/python" -c 'from importlib.metadata import version as v; print("typer", v("typer"), "click", v("click"))')
    echo "== $want: $got"
    (cd "$root" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_cli_usage.py) \
        || status=1
done
exit $status
