"""Screenshot a rendered study report with headless Chromium, to look at its layout.

    python bench/report_screenshot.py REPORT_DIR [--summary summary.json] [--out shot.png]
                                      [--width 1280] [--height 4000]

With `--summary`, first renders that summary JSON into REPORT_DIR (`analysis.report.render`);
otherwise REPORT_DIR must already hold an `index.html`. Then runs

    chromium --headless --no-sandbox --disable-gpu --screenshot=OUT --window-size=W,H \
        file:///.../index.html

and checks that the screenshot is a PNG of the requested size. Exits 2 when no Chromium
binary (`chromium`, `chromium-browser`, `google-chrome`) is on PATH. The page is loaded from
disk with no network: a report that needed one would show broken images here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    report_dir: Path, out: Path, *, width: int = 1280, height: int = 4000, timeout: float = 120.0
) -> Path:
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"none of {', '.join(BROWSERS)} is on PATH")
    index = (report_dir / "index.html").resolve()
    if not index.is_file():
        raise FileNotFoundError(f"{index} does not exist; render the report first")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # A throwaway profile: no state from (or into) a user's browser profile.
    with tempfile.TemporaryDirectory(prefix="report-shot-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            index.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    with open(out, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"{out} is not a PNG")
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if (w, h) != (width, height):
        raise RuntimeError(f"{out} is {w}×{h}, expected {width}×{height}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("--summary", type=Path, help="render this summary JSON into REPORT_DIR first")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "report.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    args = ap.parse_args(argv)
    if find_browser() is None:
        print(f"no browser: none of {', '.join(BROWSERS)} is on PATH", file=sys.stderr)
        return 2
    if args.summary is not None:
        from warehouse.analysis.report import render

        render(json.loads(args.summary.read_text()), args.report_dir)
    try:
        shot = screenshot(args.report_dir, args.out, width=args.width, height=args.height)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(shot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
