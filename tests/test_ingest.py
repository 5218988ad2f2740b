"""Ingest: stored values equal a plain forward hook, padding does not matter, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import zarr
from conftest import LRE, ingest_cfg

from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.arrays import open_array
from warehouse.store.checksums import verify
from warehouse.store.derived_pooling import readable_specs
from warehouse.store.errors import WarehouseError
from warehouse.store.manifest import load_manifest

FACTS = [
    (
        "country_capital",
        "en",
        "France",
        "Paris",
        ["The capital city of {subject} is", "{subject}'s capital is"],
    ),
    (
        "country_capital",
        "en",
        "Japan",
        "Tokyo",
        ["The capital city of {subject} is", "{subject}'s capital is"],
    ),
    (
        "country_capital",
        "en",
        "Germany",
        "Berlin",
        ["The capital city of {subject} is", "{subject}'s capital is"],
    ),
    ("country_capital", "de", "Frankreich", "Paris", ["Die Hauptstadt von {subject} ist"]),
    ("person_mother", "en", "Barack Obama", "Ann Dunham", ["The mother of {subject} is"]),
    (
        "person_mother",
        "en",
        "Queen Elizabeth II",
        "Elizabeth Bowes-Lyon",
        ["The mother of {subject} is"],
    ),
    (
        "person_mother",
        "en",
        "Ada Lovelace",
        "Anne Isabella Milbanke",
        ["Who is the mother of {subject}? It is"],
    ),
]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    with open(path, "w") as f:
        for rel, lang, s, o, templates in FACTS:
            f.write(
                json.dumps(
                    {
                        "relation": rel,
                        "language": lang,
                        "subject": s,
                        "object": o,
                        "templates": templates,
                    }
                )
                + "\n"
            )
    return path


def _cfg(tmp: Path, model: Path, data: Path, **kw) -> IngestConfig:
    sites = "ffn.act,ffn.gate,ffn.up,ffn.down"
    return ingest_cfg(tmp, model, data, **{"sites": sites, "batch_size": 3, **kw})


def _plain_capture(model_dir: Path, text_ids: list[int]) -> dict[str, np.ndarray]:
    """Independent reference: run one prompt alone with plain PyTorch hooks on the MLPs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    got: dict[str, list[torch.Tensor]] = {
        "ffn.act": [],
        "ffn.gate": [],
        "ffn.up": [],
        "ffn.down": [],
    }
    handles = []
    for layer in model.model.layers:
        mlp = layer.mlp
        handles.append(
            mlp.down_proj.register_forward_pre_hook(
                lambda m, a: got["ffn.act"].append(a[0][0].clone())
            )
        )
        handles.append(
            mlp.down_proj.register_forward_hook(
                lambda m, a, o: got["ffn.down"].append(o[0].clone())
            )
        )
        handles.append(
            mlp.gate_proj.register_forward_hook(
                lambda m, a, o: got["ffn.gate"].append(o[0].clone())
            )
        )
        handles.append(
            mlp.up_proj.register_forward_hook(lambda m, a, o: got["ffn.up"].append(o[0].clone()))
        )
    with torch.no_grad():
        model(torch.tensor([text_ids]))
    for h in handles:
        h.remove()
    return {k: torch.stack(v, 1).numpy() for k, v in got.items()}  # (tokens, layers, units)


@pytest.fixture(scope="module")
def warehouse_right(tmp_path_factory, tiny_llama_dir, tiny_dataset) -> Path:
    out = tmp_path_factory.mktemp("w") / "right"
    ingest(_cfg(out, tiny_llama_dir, tiny_dataset), show_progress=False)
    return out


def test_values_equal_plain_hooks(warehouse_right: Path, tiny_llama_dir: Path):
    prompts = pq.read_table(warehouse_right / "prompts.parquet").to_pylist()
    tokens = pq.read_table(warehouse_right / "tokens.parquet")
    ids = tokens.column("token_id").to_numpy()
    assert len(prompts) == 10
    for p in prompts:
        rows = slice(p["token_offset"], p["token_offset"] + p["n_tokens"])
        ref = _plain_capture(tiny_llama_dir, ids[rows].tolist())
        for site, want in ref.items():
            act = zarr.open_array(warehouse_right / "activations.zarr" / site, mode="r")[rows]
            np.testing.assert_allclose(act.astype(np.float32), want, rtol=1e-3, atol=1e-3)
            for pool, ref_pool in (
                ("mean", want.mean(0)),
                ("max", want.max(0)),
                ("last", want[-1]),
            ):
                resp = _responses(warehouse_right, site, pool)
                np.testing.assert_allclose(
                    resp[p["prompt_row"]].astype(np.float32), ref_pool, rtol=1e-3, atol=1e-3
                )


def _responses(w: Path, site: str, pool: str) -> np.ndarray:
    """A pooled response array as readers see it, stored or derived."""
    key = f"responses/{site}/{pool}"
    return np.asarray(open_array(w, readable_specs(load_manifest(w))[key])[:])


def test_a_batch_gives_each_prompt_the_values_it_gets_alone(tiny_llama_dir):
    """A batch of equal-length prompts stores for each what it gets alone; a batch of mixed
    lengths (which would need padding) is refused."""
    from transformers import AutoModelForCausalLM

    from warehouse.ingest.capture import Capturer, CaptureSpec

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = [[5, 9, 13], [7, 8, 2], [100, 3, 4]]
    spec = CaptureSpec(
        {"ffn.act": [0, 1], "ffn.down": [0, 1]}, True, ["mean", "max", "last"], "float32"
    )
    alone = [Capturer(model, 1, spec).run([x]) for x in ids]
    got = Capturer(model, 1, spec).run(ids)
    for key, value in got.items():
        want = np.concatenate([a[key] for a in alone])
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="prompts of one length"):
        Capturer(model, 1, spec).run([[5, 9, 13], [7, 8]])


def test_forward_stops_after_the_last_captured_site(tiny_llama_dir):
    """Nothing after the last captured site runs, and what is captured does not change."""
    from transformers import AutoModelForCausalLM

    from warehouse.ingest.capture import POOLINGS, Capturer, CaptureSpec

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ran: list[str] = []
    hooks = [
        model.model.layers[1].register_forward_pre_hook(lambda m, a: ran.append("layer 1")),
        model.model.norm.register_forward_hook(lambda m, a, o: ran.append("final norm")),
    ]
    ids = [[5, 9, 13, 40, 41], [7, 8, 2, 4, 6]]
    both = {"ffn.act": [0, 1], "ffn.down": [0, 1]}
    full = Capturer(model, 1, CaptureSpec(both, True, POOLINGS, "float32")).run(ids)
    assert ran == ["layer 1"]  # ffn.down of layer 1 is last: the final norm never runs
    ran.clear()
    part = Capturer(model, 1, CaptureSpec({"ffn.act": [0]}, True, POOLINGS, "float32")).run(ids)
    assert ran == []  # layer 0's down_proj input is all it needs
    for h in hooks:
        h.remove()
    for key, value in part.items():
        np.testing.assert_array_equal(value, full[key][:, :1], err_msg=key)


def test_ingest_batches_never_pad(warehouse_right):
    """Ingest orders prompts by length and never mixes lengths in a batch (no padding at all)."""
    from warehouse.ingest.run import batch_ranges

    n = pq.read_table(warehouse_right / "prompts.parquet").column("n_tokens").to_numpy()
    assert (np.diff(n) >= 0).all()
    batches = batch_ranges(n, 3)
    assert batches[0][0] == 0 and batches[-1][1] == len(n)
    for s, e in batches:
        assert e - s <= 3 and len(set(n[s:e])) == 1


def test_tables_and_manifest(warehouse_right: Path):
    m = json.loads((warehouse_right / "manifest.json").read_text())
    assert m["state"]["status"] == "complete"
    assert m["counts"]["prompts"] == 10
    con = duckdb.connect()
    n_tok = con.execute(f"select count(*) from '{warehouse_right}/tokens.parquet'").fetchone()[0]
    assert n_tok == m["counts"]["tokens"]
    # token offsets tile the token rows with no gap, and is_last marks each prompt's end
    bad = con.execute(
        f"""select count(*) from '{warehouse_right}/prompts.parquet' p
            join '{warehouse_right}/tokens.parquet' t on t.prompt_id = p.prompt_id
            where t.token_row <> p.token_offset + t.position
               or t.is_last <> (t.position = p.n_tokens - 1)"""
    ).fetchone()[0]
    assert bad == 0
    subj = con.execute(
        f"""select string_agg(t.token, '' order by t.position)
            from '{warehouse_right}/tokens.parquet' t
            join '{warehouse_right}/prompts.parquet' p using (prompt_id)
            where p.subject = 'Barack Obama' and t.is_subject"""
    ).fetchone()[0]
    assert subj.strip() == "Barack Obama"
    for entry in m["tables"].values():
        assert not Path(entry["path"]).is_absolute()
    for a in m["arrays"].values():
        assert a["path"].startswith(("activations.zarr/", "responses.zarr/"))
    assert verify(warehouse_right).ok


def test_gemma3_values_equal_plain_hooks(tmp_path, tiny_gemma3_dir, tiny_dataset):
    """Gemma 3 (sliding-window and global layers, scaled embeddings): every site of every
    token of a padded batched ingest equals one prompt run alone under plain hooks."""
    out = tmp_path / "gemma3"
    ingest(_cfg(out, tiny_gemma3_dir, tiny_dataset), show_progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "gemma3_text"
    prompts = pq.read_table(out / "prompts.parquet").to_pylist()
    ids = pq.read_table(out / "tokens.parquet").column("token_id").to_numpy()
    assert len(prompts) == 10 and max(p["n_tokens"] for p in prompts) > 4  # past the window
    for p in prompts:
        rows = slice(p["token_offset"], p["token_offset"] + p["n_tokens"])
        for site, want in _plain_capture(tiny_gemma3_dir, ids[rows].tolist()).items():
            act = zarr.open_array(out / "activations.zarr" / site, mode="r")[rows]
            np.testing.assert_allclose(act.astype(np.float32), want, rtol=1e-3, atol=1e-3)


def test_plain_zarr_and_duckdb_open_it(warehouse_right: Path):
    """The format needs no project code: zarr + duckdb answer a question on their own."""
    con = duckdb.connect()
    row = con.execute(
        f"select prompt_row, n_tokens from '{warehouse_right}/prompts.parquet' "
        "where subject='Japan' "
        "order by prompt_row limit 1"
    ).fetchone()
    group = zarr.open_group(str(warehouse_right / "responses.zarr"), mode="r")
    mean = group["ffn.act"]["mean"]
    assert mean.shape[0] == 10 and mean.dtype == np.float16
    assert mean.attrs["layers"] == [0, 1]
    assert np.isfinite(mean[row[0]]).all()


def test_array_checksums_recompute_without_project_code(warehouse_right: Path):
    """docs/format.md's recipe: crc32c over zarr.json and the shard files by grid index, each
    as its path, a NUL, its bytes, gives the manifest's checksum of every array."""
    import google_crc32c

    m = json.loads((warehouse_right / "manifest.json").read_text())
    assert len(m["arrays"]) >= 4
    for entry in m["arrays"].values():
        root = warehouse_right / entry["path"]
        shards = sorted(
            (p for p in (root / "c").rglob("*") if p.is_file()),
            key=lambda p: [int(x) for x in p.relative_to(root / "c").parts],
        )
        crc = 0
        for f in [root / "zarr.json", *shards]:
            rel = f.relative_to(warehouse_right).as_posix()
            crc = google_crc32c.extend(crc, rel.encode() + b"\0" + f.read_bytes())
        assert entry["checksum"] == f"crc32c:{crc:08x}", entry["path"]


def test_pooled_only_and_refusal(tmp_path, tiny_llama_dir, tiny_dataset, warehouse_right):
    out = tmp_path / "pooled"
    ingest(
        _cfg(
            out, tiny_llama_dir, tiny_dataset, capture="pooled", sites="ffn.act", pooling=["mean"]
        ),
        show_progress=False,
    )
    assert not (out / "activations.zarr").exists()
    a = zarr.open_array(out / "responses.zarr/ffn.act/mean", mode="r")[:]
    b = zarr.open_array(warehouse_right / "responses.zarr/ffn.act/mean", mode="r")[:]
    np.testing.assert_array_equal(a, b)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(WarehouseError, match="other inputs.*dtype"):
        ingest(
            _cfg(
                out,
                tiny_llama_dir,
                tiny_dataset,
                capture="pooled",
                sites="ffn.act",
                pooling=["mean"],
                dtype="float32",
            ),
            show_progress=False,
        )
    assert (out / "manifest.json").read_bytes() == before


def test_a_batch_is_let_go_once_written(tmp_path, tiny_llama_dir, tiny_dataset, monkeypatch):
    """Once the writer has taken a batch's rows, nothing holds them while the next batch is
    captured (neither the loop's variables nor the writer waiting for more): memory holds
    the batches in flight, not one more."""
    import time
    import weakref

    from warehouse.ingest.capture import Capturer

    earlier: list[list[weakref.ref]] = []
    held: list[int] = []
    run = Capturer.run

    def watched(self, ids):
        if earlier:  # the previous batch: give the writer time to take it, then look
            deadline = time.monotonic() + 5
            while any(r() is not None for r in earlier[-1]) and time.monotonic() < deadline:
                time.sleep(0.01)
            held.append(sum(r() is not None for r in earlier[-1]))
        rows = run(self, ids)
        earlier.append([weakref.ref(v) for v in rows.values()])
        return rows

    monkeypatch.setattr(Capturer, "run", watched)
    ingest(_cfg(tmp_path / "w", tiny_llama_dir, tiny_dataset), show_progress=False)
    assert len(held) > 3 and held == [0] * len(held)


@pytest.mark.parametrize("caller_froze", [False, True])
def test_collector_skips_older_objects_during_the_batches(
    tmp_path, tiny_llama_dir, tiny_dataset, monkeypatch, caller_froze
):
    """The objects alive before the batches are frozen while they run (a full collection
    would scan them all), and unfrozen after; a caller's own freeze is left as it was."""
    import gc

    from warehouse.ingest.capture import Capturer

    seen = []
    run = Capturer.run
    monkeypatch.setattr(
        Capturer, "run", lambda self, ids: seen.append(gc.get_freeze_count()) or run(self, ids)
    )
    if caller_froze:
        gc.freeze()
    try:
        before = gc.get_freeze_count()
        cfg = _cfg(tmp_path / "w", tiny_llama_dir, tiny_dataset, capture="pooled", sites="ffn.act")
        ingest(cfg, show_progress=False)
        after = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert len(seen) > 1
    if caller_froze:
        # (frozen objects that die leave the count: it can only fall)
        assert before > 0 and max(seen) <= before and 0 < after <= before
    else:
        assert before == 0 and min(seen) > 100_000 and after == 0


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def test_resume_after_crash_is_identical(
    tmp_path, tiny_llama_dir, tiny_dataset, warehouse_right, monkeypatch
):
    from warehouse.ingest import capture as capture_mod
    from warehouse.ingest.run import batch_ranges

    out = tmp_path / "crash"
    n_tokens = pq.read_table(warehouse_right / "prompts.parquet").column("n_tokens").to_numpy()
    batches = batch_ranges(n_tokens, 3)
    die_at = len(batches)  # the last batch: earlier ones are done, some on disk, some queued
    calls = {"n": 0}
    real_run = capture_mod.Capturer.run

    def dying_run(self, ids):
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KeyboardInterrupt  # stands in for a kill in the middle of the run
        return real_run(self, ids)

    monkeypatch.setattr(capture_mod.Capturer, "run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        ingest(_cfg(out, tiny_llama_dir, tiny_dataset), show_progress=False)
    state = json.loads((out / "manifest.json").read_text())["state"]
    done = batches[-1][0]
    assert state["status"] == "ingesting"
    assert state["prompts_committed"] == done - done % 4  # whole chunks only
    assert state["tokens_committed"] == int(n_tokens[:done].sum()) // 8 * 8
    report = verify(out)  # intact up to the last committed batch: a note, not a problem
    assert report.ok and report.notes[0].startswith("ingest not finished"), report
    # What a kill leaves mid-write, at any depth: a chunk's temp file, a temp folder.
    leftovers = [out / "activations.zarr/ffn.act/c/0.tmp-0123abcd", out / ".stats.tmp-4567/x"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    monkeypatch.setattr(capture_mod.Capturer, "run", real_run)
    ingest(_cfg(out, tiny_llama_dir, tiny_dataset), show_progress=False)
    assert not any(p.exists() for p in [*leftovers, leftovers[1].parent])
    assert _snapshot(out) == _snapshot(warehouse_right)
    assert verify(out).ok


@pytest.mark.parametrize("version", [1, 2])
def test_older_formats_are_refused_in_one_line(
    tmp_path, tiny_llama_dir, tiny_dataset, warehouse_right, capsys, version
):
    """A warehouse of format 1 (a file per chunk) or 2 (sha256 array checksums) is not read,
    verified, resumed or merged: every command says in one line that its format is older, exits
    2, and changes no byte."""
    import shutil

    from conftest import run_cli

    from warehouse.api import Warehouse
    from warehouse.store.merge import merge

    old = Path(shutil.copytree(warehouse_right, tmp_path / "old"))
    m = json.loads((old / "manifest.json").read_text())
    m["format_version"] = version
    (old / "manifest.json").write_text(json.dumps(m, indent=2))

    def snapshot() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(old.rglob("*")) if p.is_file()}

    before = snapshot()
    said = f"{old}: format version {version} is an older format; this tool reads format 3 only"
    for call in (
        lambda: Warehouse.open(old),
        lambda: verify(old),
        lambda: ingest(_cfg(old, tiny_llama_dir, tiny_dataset), show_progress=False),
        lambda: merge([old, warehouse_right], tmp_path / "merged", show_progress=False),
    ):
        with pytest.raises(WarehouseError) as e:
            call()
        assert str(e.value).startswith(said)
    for args in (["info", str(old)], ["verify", str(old)], ["query", str(old), "select 1"]):
        code, out, err = run_cli(capsys, *args)
        assert (code, out) == (2, "")
        assert err.startswith(f"error: {said}") and err.count("\n") == 1, err
    assert snapshot() == before and not (tmp_path / "merged").exists()


def test_the_typed_manifest_writes_back_what_ingest_wrote(tmp_path, warehouse_right):
    """Manifest.load then save gives the manifest.json bytes ingest wrote."""
    from warehouse.store.manifest import Manifest

    m = Manifest.load(warehouse_right)
    assert m.complete and m.computed_fingerprint() == m.fingerprint and m.extra == {}
    m.save(tmp_path)
    assert (tmp_path / "manifest.json").read_bytes() == (
        warehouse_right / "manifest.json"
    ).read_bytes()


def test_verify_finds_damage(tmp_path, warehouse_right):
    import shutil

    w = tmp_path / "w"
    shutil.copytree(warehouse_right, w)
    chunk = w / "activations.zarr/ffn.act/c/1/0/0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (w / "responses.zarr/ffn.up/mean/c/0/0/0").unlink()
    trunc = w / "responses.zarr/ffn.down/mean/c/1/0/0"
    trunc.write_bytes(trunc.read_bytes()[:5])
    (w / "stray.txt").write_text("x")
    problems = verify(w).problems
    assert any(
        "activations/ffn.act: chunk activations.zarr/ffn.act/c/1/0/0 is corrupt" in p
        for p in problems
    )
    assert any("chunk responses.zarr/ffn.up/mean/c/0/0/0 is missing" in p for p in problems)
    assert any("responses.zarr/ffn.down/mean/c/1/0/0 is corrupt" in p for p in problems)
    assert any("unexpected file: stray.txt" in p for p in problems)
    assert len(problems) == 4


@pytest.mark.skipif(not LRE.is_dir(), reason="LRE data set not present")
def test_lre_relation_values_equal_plain_hooks(tmp_path, tiny_llama_dir):
    src = LRE / "factual" / "country_capital_city.json"
    out = tmp_path / "lre"
    ingest(
        IngestConfig(
            out=out, model=str(tiny_llama_dir), dataset=str(src), max_prompts=12, batch_size=4
        ),
        show_progress=False,
    )
    prompts = pq.read_table(out / "prompts.parquet").to_pylist()
    assert {p["relation"] for p in prompts} == {"country_capital_city"}
    ids = pq.read_table(out / "tokens.parquet").column("token_id").to_numpy()
    acts = zarr.open_array(out / "activations.zarr" / "ffn.act", mode="r")
    for p in prompts:
        rows = slice(p["token_offset"], p["token_offset"] + p["n_tokens"])
        want = _plain_capture(tiny_llama_dir, ids[rows].tolist())["ffn.act"]
        np.testing.assert_allclose(acts[rows].astype(np.float32), want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("per_group", [2, 5], ids=["pairs-of-layers", "all-layers"])
def test_layers_stored_in_groups_equal_layer_by_layer(per_group):
    """On a GPU a site's layers are stored and pooled a group at a time (fewer kernels to
    launch). Forced here on the CPU: the same values as layer by layer, for every pooling,
    a group cut short by the last layer, and a site listed out of order."""
    import torch
    from conftest import tiny_llama_config
    from transformers import LlamaForCausalLM

    from warehouse.ingest.capture import POOLINGS, Capturer, CaptureSpec

    config = tiny_llama_config(128)
    config.num_hidden_layers = 5
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    sites = {"ffn.act": [0, 1, 2, 3, 4], "ffn.up": [3, 1, 0], "ffn.down": [1, 4]}
    batches = ([[5, 9, 13, 40, 41], [7, 8, 1, 2, 3], [100, 3, 4, 5, 6]], [[5, 9, 13], [7, 8, 2]])
    for ids in batches:
        layer_bytes = len(ids) * len(ids[0]) * config.intermediate_size * 4
        spec = CaptureSpec(sites, True, POOLINGS, "float32")
        one = Capturer(model, 1, spec).run(ids)
        grouped = Capturer(model, 1, spec, group_bytes=per_group * layer_bytes).run(ids)
        assert grouped.keys() == one.keys()
        for key, value in grouped.items():
            np.testing.assert_allclose(value, one[key], rtol=1e-6, atol=1e-7, err_msg=key)


# ------------------------------------------------------------------- non-finite values


@pytest.fixture(scope="module")
def nonfinite_llama_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """The tiny Llama with ffn.act unit 7 of layer 0 far beyond float16 (finite in float32;
    its down_proj column is zeroed, so nothing after it sees it) and unit 3 of layer 1 NaN
    (the forward stops at layer 1's ffn.act, before the NaN could spread)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        first, second = model.model.layers[0].mlp, model.model.layers[1].mlp
        first.up_proj.weight[7] *= 1e9
        first.down_proj.weight[:, 7] = 0
        second.up_proj.weight[3] = float("nan")
    path = tmp_path_factory.mktemp("nonfinite-llama")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def nonfinite_warehouse(nonfinite_llama_dir, tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nf") / "w"
    ingest(_cfg(out, nonfinite_llama_dir, tiny_dataset, sites="ffn.act"), show_progress=False)
    return out


def _expected_nonfinite(w: Path, model_dir: Path) -> dict:
    """The manifest's counts, recomputed from the stored arrays with numpy, and the overflows
    from an independent float32 forward pass per prompt (plain hooks)."""
    prompts = pq.read_table(w / "prompts.parquet").to_pylist()
    ids = pq.read_table(w / "tokens.parquet").column("token_id").to_numpy()
    ref_tokens = np.zeros((len(ids), 2, 48), dtype=np.float32)
    ref = {pool: np.zeros((len(prompts), 2, 48), dtype=np.float32) for pool in POOLS}
    for p in prompts:
        rows = slice(p["token_offset"], p["token_offset"] + p["n_tokens"])
        act = _plain_capture(model_dir, ids[rows].tolist())["ffn.act"]
        ref_tokens[rows] = act
        for pool, value in (("mean", act.mean(0)), ("max", act.max(0)), ("last", act[-1])):
            ref[pool][p["prompt_row"]] = value
    sources = {"activations/ffn.act": ref_tokens}
    sources |= {f"responses/ffn.act/{pool}": ref[pool] for pool in POOLS}
    out = {}
    for key, source in sources.items():
        if key not in load_manifest(w).arrays:  # derived, not stored: nothing counted
            continue
        stored = zarr.open_array(w / key.replace("/", ".zarr/", 1), mode="r")[:]
        layers = {}
        for i in range(2):
            s, src = stored[:, i].astype(np.float32), source[:, i]
            counts = {
                "nan": int(np.isnan(s).sum()),
                "posinf": int((s == np.inf).sum()),
                "neginf": int((s == -np.inf).sum()),
                "overflow": int((np.isinf(s) & np.isfinite(src)).sum()),
            }
            if any(counts.values()):
                layers[str(i)] = counts
        bad = ~np.isfinite(stored.astype(np.float32))
        over = np.isinf(stored.astype(np.float32)) & np.isfinite(source)
        neurons = {
            f"{la}:{u}": [int(bad[:, la, u].sum()), int(over[:, la, u].sum())]
            for la, u in zip(*np.nonzero(bad.any(0)), strict=True)
        }
        out[key] = {"layers": layers, "neurons": neurons, "truncated": False}
    return out


POOLS = ("mean", "max", "last")


def test_nonfinite_values_are_counted(nonfinite_warehouse, nonfinite_llama_dir, caplog):
    m = json.loads((nonfinite_warehouse / "manifest.json").read_text())
    assert m["state"]["status"] == "complete"
    want = _expected_nonfinite(nonfinite_warehouse, nonfinite_llama_dir)
    assert m["nonfinite"] == want
    # Both neurons, in every array: unit 7 of layer 0 overflowed float16 in most tokens (not
    # all), unit 3 of layer 1 is NaN everywhere.
    tokens = want["activations/ffn.act"]
    assert set(tokens["neurons"]) == {"0:7", "1:3"}
    assert tokens["neurons"]["1:3"] == [m["counts"]["tokens"], 0]
    assert 0 < tokens["layers"]["0"]["overflow"] == tokens["neurons"]["0:7"][1]
    assert tokens["layers"]["1"] == {
        "nan": m["counts"]["tokens"],
        "posinf": 0,
        "neginf": 0,
        "overflow": 0,
    }
    assert verify(nonfinite_warehouse).ok


def test_info_shows_nonfinite_counts(nonfinite_warehouse, capsys):
    from conftest import run_cli

    code, out, _ = run_cli(capsys, "info", str(nonfinite_warehouse))
    m = json.loads((nonfinite_warehouse / "manifest.json").read_text())
    entry = m["nonfinite"]["responses/ffn.act/mean"]["layers"]
    line = next(x for x in out.splitlines() if x.startswith("nonfinite   responses/ffn.act/mean"))
    assert code == 0
    assert line == (
        f"nonfinite   responses/ffn.act/mean: {entry['1']['nan']} NaN, "
        f"{entry['0']['posinf']} +inf, {entry['0']['neginf']} -inf "
        f"({entry['0']['overflow']} overflowed float16) in 2 neuron(s) (layer:unit 0:7, 1:3)"
    )


def test_clean_warehouse_has_no_nonfinite_field(warehouse_right):
    assert "nonfinite" not in json.loads((warehouse_right / "manifest.json").read_text())


def test_stats_names_and_skips_nonfinite_neurons(nonfinite_warehouse, tmp_path, caplog):
    import shutil

    from warehouse.analysis.stats import run_stats

    w = shutil.copytree(nonfinite_warehouse, tmp_path / "w")
    with caplog.at_level("WARNING"):
        (path,) = run_stats(w, split="all", show_progress=False)
    assert (
        "warning: stats ffn.act/mean: 2 neuron(s) have NaN or infinite responses and get no "
        "rank (layer:unit 0:7, 1:3)" in caplog.text
    )
    import polars as pl

    table = pl.read_parquet(path)
    assert json.loads(path.with_suffix(".json").read_text())["skipped_neurons"] == [
        [0, 7],
        [1, 3],
    ]
    groups = table.partition_by(["relation", "language"])
    assert len(groups) >= 3
    for group in groups:
        assert sorted(group["neuron_id"]) == [n for n in range(96) if n not in (7, 48 + 3)]
        assert sorted(group["rank"]) == list(range(1, 95))
        assert group["ap"].is_finite().all()


def _nan_for_long_prompts(model, n_tokens: int):
    """A model that returns NaN in unit 3 of layer 1's ffn.act for prompts of n_tokens or
    more (ingest orders prompts by length, so only the last batches)."""

    def hook(module, args):
        (x,) = args
        if x.shape[1] >= n_tokens:
            x = x.clone()
            x[..., 3] = float("nan")
        return (x,)

    return model.model.layers[1].mlp.down_proj.register_forward_pre_hook(hook)


def test_on_nonfinite_error_stops_before_the_batch_and_resumes(
    tmp_path, tiny_llama_dir, tiny_dataset, warehouse_right
):
    from warehouse.ingest.models import load_model
    from warehouse.ingest.run import batch_ranges

    loaded = load_model(str(tiny_llama_dir))
    n_tokens = pq.read_table(warehouse_right / "prompts.parquet").column("n_tokens").to_numpy()
    longest = int(n_tokens.max())
    bad_start = next(s for s, _ in batch_ranges(n_tokens, 3) if n_tokens[s] >= longest)
    handle = _nan_for_long_prompts(loaded.model, longest)
    try:
        out = tmp_path / "w"
        cfg = _cfg(out, tiny_llama_dir, tiny_dataset, sites="ffn.act", on_nonfinite="error")
        with pytest.raises(WarehouseError) as err:
            ingest(cfg, show_progress=False, loaded=loaded)
        assert "\n" not in str(err.value)
        assert str(err.value).startswith(
            f"{out}: prompt rows {bad_start}..{len(n_tokens) - 1} would store non-finite "
            "values (activations/ffn.act: "
        )
        m = json.loads((out / "manifest.json").read_text())
        assert m["state"]["status"] == "ingesting" and "nonfinite" not in m
        assert 0 < m["state"]["prompts_committed"] <= bad_start
        # Resumed with warn, the run ends as one uninterrupted warn run: same bytes, and each
        # batch counted once.
        cfg.on_nonfinite = "warn"
        resumed = ingest(cfg, show_progress=False, loaded=loaded)
        fresh = ingest(
            _cfg(tmp_path / "fresh", tiny_llama_dir, tiny_dataset, sites="ffn.act"),
            show_progress=False,
            loaded=loaded,
        )
    finally:
        handle.remove()
    assert resumed.nonfinite == fresh.nonfinite
    rows = len(n_tokens) - bad_start
    assert fresh.nonfinite["responses/ffn.act/mean"]["neurons"] == {"1:3": [rows, 0]}
    assert _snapshot(out) == _snapshot(tmp_path / "fresh")


def test_on_nonfinite_is_checked(tmp_path, tiny_llama_dir, tiny_dataset):
    with pytest.raises(WarehouseError, match="--on-nonfinite must be 'warn' or 'error'"):
        ingest(_cfg(tmp_path / "w", tiny_llama_dir, tiny_dataset, on_nonfinite="ignore"), False)


def test_merged_shards_add_up_their_nonfinite_counts(
    nonfinite_warehouse, nonfinite_llama_dir, tiny_dataset, tmp_path
):
    from warehouse.store.merge import merge

    parts = []
    for i in (1, 2):
        part = tmp_path / f"part{i}"
        cfg = _cfg(part, nonfinite_llama_dir, tiny_dataset, sites="ffn.act", shard=(i, 2))
        ingest(cfg, show_progress=False)
        parts.append(str(part))
    merged = merge(parts, tmp_path / "merged", show_progress=False)
    whole = json.loads((nonfinite_warehouse / "manifest.json").read_text())
    assert merged.nonfinite == whole["nonfinite"]


def test_held_batches_as_on_a_gpu_store_the_same(
    nonfinite_warehouse, nonfinite_llama_dir, tiny_dataset, tmp_path, monkeypatch
):
    """With a CUDA-like event per batch, ingest hands a batch over after the next one is
    captured (and checks it then): the warehouse and its counts are the same."""
    from warehouse.ingest import capture as capture_mod
    from warehouse.ingest.run import batch_ranges

    class Event:
        waits = 0

        def synchronize(self) -> None:
            Event.waits += 1

    real_run = capture_mod.Capturer.run

    def run(self, ids, counts=None):
        rows = real_run(self, ids, counts)
        self.ready = Event()
        return rows

    monkeypatch.setattr(capture_mod.Capturer, "run", run)
    out = tmp_path / "w"
    m = ingest(_cfg(out, nonfinite_llama_dir, tiny_dataset, sites="ffn.act"), False)
    whole = json.loads((nonfinite_warehouse / "manifest.json").read_text())
    assert m.nonfinite == whole["nonfinite"]
    assert _snapshot(out) == _snapshot(nonfinite_warehouse)
    # Each batch's event is waited on by the hand-over and by the writer.
    n_tokens = pq.read_table(out / "prompts.parquet").column("n_tokens").to_numpy()
    assert Event.waits >= 2 * len(batch_ranges(n_tokens, 3))


def test_a_warehouse_keeps_the_prefix_method_it_was_planned_with(
    tmp_path, tiny_llama_dir, tiny_dataset, warehouse_right, monkeypatch
):
    """A new warehouse shares prefixes; one planned without the key (as every warehouse
    written before it existed) resumes with one plain forward a batch, to the bytes of an
    uninterrupted plain run; an explicit option that contradicts the plan is refused."""
    from warehouse.ingest import capture as capture_mod

    assert json.loads((warehouse_right / "manifest.json").read_text())["capture"]["prefix"] == (
        "tree"
    )
    plain = tmp_path / "plain"
    ingest(_cfg(plain, tiny_llama_dir, tiny_dataset, shared_prefix=False), show_progress=False)
    assert "prefix" not in json.loads((plain / "manifest.json").read_text())["capture"]
    # The default shares, and shared values are not plain values bit for bit: the resume
    # below must pick the plain method from the manifest to reproduce `plain`.
    assert _snapshot(plain) != _snapshot(warehouse_right)
    out, methods = tmp_path / "resumed", []
    real_run = capture_mod.Capturer.run

    def run(self, ids, counts=None):
        methods.append(self.shared_prefix)
        if len(methods) == 2:
            raise KeyboardInterrupt  # a kill after the first batch
        return real_run(self, ids, counts)

    monkeypatch.setattr(capture_mod.Capturer, "run", run)
    with pytest.raises(KeyboardInterrupt):
        ingest(_cfg(out, tiny_llama_dir, tiny_dataset, shared_prefix=False), show_progress=False)
    with pytest.raises(WarehouseError, match=r"capture.prefix \(None -> 'tree'\)"):
        ingest(_cfg(out, tiny_llama_dir, tiny_dataset, shared_prefix=True), show_progress=False)
    ingest(_cfg(out, tiny_llama_dir, tiny_dataset), show_progress=False)  # option unset
    assert set(methods) == {False} and len(methods) > 2
    assert _snapshot(out) == _snapshot(plain)


@pytest.mark.parametrize("method", ["shared", "packed"])
def test_a_warehouse_begun_with_another_prefix_method_is_not_resumed(
    method, tmp_path, tiny_llama_dir, tiny_dataset, monkeypatch
):
    """Earlier builds ran a shared prefix as two passes ("shared") or packed one prefix
    length per batch ("packed"): other float rounding, so a resume would not reproduce an
    uninterrupted run's bytes. It is refused with the way out, and nothing in the folder
    changes."""
    from warehouse.ingest import capture as capture_mod
    from warehouse.ingest import run as run_mod

    out, real_run, calls = tmp_path / "w", capture_mod.Capturer.run, []

    def run(self, ids, counts=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, ids, counts)

    monkeypatch.setattr(capture_mod.Capturer, "run", run)
    with monkeypatch.context() as old_build, pytest.raises(KeyboardInterrupt):
        old_build.setattr(run_mod, "PACKED", method)  # as the earlier builds
        ingest(_cfg(out, tiny_llama_dir, tiny_dataset), show_progress=False)
    assert json.loads((out / "manifest.json").read_text())["capture"]["prefix"] == method
    before = _snapshot(out)
    with pytest.raises(WarehouseError, match=rf"prefix method '{method}', which this version"):
        ingest(_cfg(out, tiny_llama_dir, tiny_dataset), show_progress=False)
    assert _snapshot(out) == before and len(calls) == 2
