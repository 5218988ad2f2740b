"""Model loading: the first load of a model and every later one, each in a fresh process.

    python bench/load.py [--model smollm2-135m] [--repeats 3]

The first load runs with an empty WAREHOUSE_CACHE, so the embedded GGUF model is de-quantized
into a float32 safetensors folder and its weights hashed; the later loads find both in that
cache. Each run is a new Python process that imports transformers before its clock starts, so
the figures are `load_model` alone; the imports are printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import transformers.models.llama.modeling_llama  # noqa: F401
from warehouse.ingest.models import load_model
t1 = time.perf_counter()
load_model(sys.argv[1])
print(json.dumps({"imports_s": t1 - t0, "load_s": time.perf_counter() - t1}))
"""


def one_load(model: str, cache: str) -> dict[str, float]:
    env = {**os.environ, "WAREHOUSE_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first = one_load(args.model, cache)
        print(f"first load (convert + hash): {first['load_s']:6.2f} s")
        later = [one_load(args.model, cache) for _ in range(args.repeats)]
    loads = ", ".join(f"{r['load_s']:.2f}" for r in later)
    imports = ", ".join(f"{r['imports_s']:.2f}" for r in later)
    print(f"later loads (cached):        {min(r['load_s'] for r in later):6.2f} s best ({loads})")
    print(f"imports before each load:    {imports} s")


if __name__ == "__main__":
    main()
