"""`Warehouse.array` (labelled arrays, locally and zipped) and the self-describing files:
coordinate arrays, array attributes and Parquet provenance, read with plain libraries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import xarray as xr
from conftest import ingest_cfg

from warehouse.api import Warehouse, to_numpy, to_torch
from warehouse.ingest.run import IngestConfig, ingest
from warehouse.store.checksums import verify
from warehouse.store.errors import SiteError, WarehouseError
from warehouse.store.export import ExportOptions, export
from warehouse.store.merge import merge

FACTS = [
    ("capital", "en", "France", "Paris", ["The capital of {subject} is"]),
    ("capital", "en", "Japan", "Tokyo", ["The capital of {subject} is", "{subject}'s capital:"]),
    ("capital", "en", "Italy", "Rome", ["The capital of {subject} is"]),
    ("language", "en", "Brazil", "Portuguese", ["In {subject} people speak"]),
    ("language", "en", "Peru", "Spanish", ["In {subject} people speak"]),
]


@pytest.fixture(scope="module")
def tiny_facts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "facts.jsonl"
    rows = [
        {"relation": r, "language": lang, "subject": s, "object": o, "templates": t}
        for r, lang, s, o, t in FACTS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(out: Path, model: Path, data: Path, **kw) -> IngestConfig:
    return ingest_cfg(
        out, model, data, **{"sites": "ffn.act,ffn.down", "pooling": ["mean", "last"], **kw}
    )


@pytest.fixture(scope="module")
def wh(tmp_path_factory, tiny_llama_dir, tiny_facts) -> Path:
    out = tmp_path_factory.mktemp("w") / "w"
    ingest(_cfg(out, tiny_llama_dir, tiny_facts), show_progress=False)
    return out


def old_compressors(spec):
    """The codecs of warehouses written before blosc: activations zstd -10 with its
    checksum, responses raw with a crc32c."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    if spec.key.startswith("activations/"):
        return [ZstdCodec(level=-10, checksum=True)]
    return [Crc32cCodec()]


@pytest.fixture(scope="module")
def old_wh(tmp_path_factory, tiny_llama_dir, tiny_facts) -> Path:
    """The `wh` warehouse as earlier builds wrote it (their codec chain)."""
    from warehouse.store import arrays

    out = tmp_path_factory.mktemp("old") / "w"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(arrays, "compressors", old_compressors)
        ingest(_cfg(out, tiny_llama_dir, tiny_facts), show_progress=False)
    return out


def _codecs(w: Path, path: str) -> list[dict]:
    """The codec chain of each chunk of an array, from its zarr.json."""
    meta = json.loads((w / path / "zarr.json").read_text())
    return meta["codecs"][0]["configuration"]["codecs"]


def test_arrays_are_blosc_then_crc32c(wh: Path):
    """Every chunk: blosc (zstd level 1 after a byte shuffle of 2-byte values, the whole
    chunk one block), then its crc32c."""
    for path, chunk in (
        ("activations.zarr/ffn.act", (8, 1, 48)),  # 8 tokens x 1 layer x 48 neurons
        ("responses.zarr/ffn.down/mean", (4, 1, 32)),  # 4 prompts x 1 layer x d_model 32
    ):
        meta = json.loads((wh / path / "zarr.json").read_text())
        assert tuple(meta["codecs"][0]["configuration"]["chunk_shape"]) == chunk
        blosc = dict(typesize=2, cname="zstd", clevel=1, shuffle="shuffle")
        assert _codecs(wh, path) == [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "blosc", "configuration": {**blosc, "blocksize": int(np.prod(chunk)) * 2}},
            {"name": "crc32c"},
        ]


def test_a_warehouse_of_the_old_codecs_reads_and_verifies_the_same(wh: Path, old_wh: Path):
    """Arrays written with zstd (activations) and raw + crc32c (responses) read through
    every path as the same values, bit for bit, and verify; the files differ."""
    assert _codecs(old_wh, "activations.zarr/ffn.act")[1]["name"] == "zstd"
    assert [c["name"] for c in _codecs(old_wh, "responses.zarr/ffn.act/mean")] == [
        "bytes",
        "crc32c",
    ]
    assert verify(old_wh).ok and verify(wh).ok
    old, new = Warehouse.open(old_wh), Warehouse.open(wh)
    for site in ("ffn.act", "ffn.down"):
        for pooling in (None, "mean", "last"):
            a, b = old.array(site, pooling=pooling), new.array(site, pooling=pooling)
            assert a.identical(b), (site, pooling)
    for view, order in (("activations", "token_row"), ("responses", "prompt_row")):
        q = f"select * from {view} order by site, layer, neuron, {order}"
        assert old.sql(q).equals(new.sql(q))
    old_bytes = (old_wh / "activations.zarr/ffn.act/c/0/0/0").read_bytes()
    assert old_bytes != (wh / "activations.zarr/ffn.act/c/0/0/0").read_bytes()


def _pivot(w: Warehouse, view: str, where: str, row: str) -> np.ndarray:
    """[row, layer, neuron] from the long-format SQL view (the path `array` replaces)."""
    df = w.sql(f"select {row}, layer, neuron, value from {view} where {where}")
    df = df.sort(row, "layer", "neuron")
    shape = [df[c].n_unique() for c in (row, "layer", "neuron")]
    return df["value"].to_numpy().reshape(shape)


def test_array_is_the_sql_view_labelled(wh: Path):
    w = Warehouse.open(wh)
    m = w.manifest
    da = w.array("ffn.act")
    assert isinstance(da, xr.DataArray) and da.name == "ffn.act"
    n_tok, units = m.counts.tokens, m.model.units["ffn.act"]
    assert da.dims == ("token_row", "layer", "neuron")
    assert da.shape == (n_tok, 2, units) and da.dtype == np.float16
    assert da["token_row"].values.tolist() == list(range(n_tok))
    assert da["layer"].values.tolist() == [0, 1]
    assert da["neuron"].values.tolist() == list(range(units))
    want = _pivot(w, "activations", "site = 'ffn.act'", "token_row")
    np.testing.assert_array_equal(da.values.astype(np.float32), want)
    assert da.attrs["site"] == "ffn.act"
    assert da.attrs["module"] == "model.layers.{layer}.mlp.down_proj"
    assert da.attrs["io"] == "input"
    assert da.attrs["transformer_lens_hook"] == "blocks.{layer}.mlp.hook_post"
    assert da.attrs["weights_hash"] == m.model.weights_hash
    assert da.attrs["row_table"] == "tokens.parquet"

    down = w.array("ffn.down", layer=1, neurons=[3, 0])  # one layer: its axis is dropped
    assert down.dims == ("token_row", "d_model") and int(down["layer"]) == 1
    assert down["d_model"].values.tolist() == [0, 3]
    np.testing.assert_array_equal(down.values, w.array("ffn.down").values[:, 1, [0, 3]])


def test_selections_of_prompts_and_tokens(wh: Path):
    w = Warehouse.open(wh)
    full = w.array("ffn.act").values
    toks = pl.read_parquet(wh / "tokens.parquet")
    prompts = pl.read_parquet(wh / "prompts.parquet")
    japan = prompts.filter(pl.col("subject") == "Japan")
    japan_rows = toks.filter(pl.col("prompt_id").is_in(japan["prompt_id"].to_list()))
    want = np.sort(japan_rows["token_row"].to_numpy())
    for sel in (japan["prompt_id"].to_list(), "subject = 'Japan'", pl.col("subject") == "Japan"):
        da = w.array("ffn.act", prompts=sel)
        assert da["token_row"].values.tolist() == want.tolist()
        np.testing.assert_array_equal(da.values, full[want])
    last = np.sort(toks.filter(pl.col("is_last"))["token_row"].to_numpy())
    both = w.array("ffn.act", tokens="is_last", prompts=japan["prompt_id"].to_numpy())
    assert both["token_row"].values.tolist() == np.intersect1d(last, want).tolist()
    assert w.array("ffn.act", tokens=[5, 2], neurons=7)["token_row"].values.tolist() == [2, 5]

    mean = w.array("ffn.act", pooling="mean", prompts="relation = 'language'")
    lang = prompts.filter(pl.col("relation") == "language").sort("prompt_row")
    assert mean.dims == ("prompt_row", "layer", "neuron")
    assert mean["prompt_row"].values.tolist() == lang["prompt_row"].to_list()
    assert mean["prompt_id"].values.tolist() == lang["prompt_id"].to_list()
    assert mean.attrs["pooling"] == "mean" and mean.attrs["row_table"] == "prompts.parquet"
    want = _pivot(w, "responses", "pooling = 'mean' and site = 'ffn.act'", "prompt_row")
    np.testing.assert_array_equal(mean.values, want[lang["prompt_row"].to_numpy()])


def test_numpy_and_torch_helpers(wh: Path):
    da = Warehouse.open(wh).array("ffn.act", layer=0)
    assert to_numpy(da) is not None and np.array_equal(to_numpy(da), da.values)
    t = to_torch(da, torch.float32)
    assert t.dtype == torch.float32 and tuple(t.shape) == da.shape
    assert torch.equal(t, torch.from_numpy(da.values.astype(np.float32)))


def test_numpy_and_torch_methods(wh: Path):
    da = Warehouse.open(wh).array("ffn.act", layer=0)
    got = da.numpy()
    assert type(got) is np.ndarray and got.dtype == da.dtype
    np.testing.assert_array_equal(got, da.values)
    same = da.torch()  # shares memory with the DataArray's values
    assert same.dtype == torch.float16 and same.data_ptr() == da.values.ctypes.data
    t = da.sel(neuron=[1, 2]).torch(torch.float32)
    assert t.dtype == torch.float32 and tuple(t.shape) == (da.sizes["token_row"], 2)
    assert torch.equal(t, torch.from_numpy(da.values[:, [1, 2]].astype(np.float32)))


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(site="ffn.gate"), SiteError, "no activations array for site 'ffn.gate'"),
        (dict(site="ffn.act", pooling="max"), SiteError, "with pooling 'max'"),
        (dict(site="ffn.act", layer=7), WarehouseError, r"layer 7 is not in this array"),
        (dict(site="ffn.act", neurons=[1, 99]), WarehouseError, "neuron 99 is not in"),
        (dict(site="ffn.act", tokens=[10**6]), WarehouseError, "token row 1000000 is not"),
        (dict(site="ffn.act", prompts=[123]), WarehouseError, "prompt_id 123 is not in"),
        (dict(site="ffn.act", pooling="mean", tokens=[1]), WarehouseError, "pooled responses"),
        (dict(site="ffn.act", prompts="1=1; select 1"), WarehouseError, r"only one\) statement"),
        (
            dict(site="ffn.act", prompts="prompt_row in (select 1 from read_csv('/etc/passwd'))"),
            WarehouseError,
            r"the table function read_csv\(...\) is not allowed",
        ),
    ],
)
def test_bad_selections_are_refused(wh: Path, kw: dict, error: type, match: str):
    with pytest.raises(error, match=match):
        Warehouse.open(wh).array(**kw)


def test_zipped_export_reads_the_same_and_keeps_coordinates(wh: Path, tmp_path: Path):
    z = tmp_path / "w.zip"
    export(wh, z, ExportOptions(zip=True, sites=["ffn.act"]), show_progress=False)
    remote = Warehouse.open(z)
    assert remote.remote
    a = remote.array("ffn.act", layer=1, prompts="subject = 'Peru'")
    b = Warehouse.open(wh).array("ffn.act", layer=1, prompts="subject = 'Peru'")
    assert a.identical(b)
    m = remote.manifest
    # ffn.down was left out: its d_model axis is too, and the rest is verified as copied.
    assert sorted(m.coords) == [
        "activations.zarr/layer",
        "activations.zarr/neuron",
        "activations.zarr/token_row",
        "responses.zarr/ffn.act/layer",
        "responses.zarr/ffn.act/neuron",
        "responses.zarr/ffn.act/prompt_row",
    ]
    assert verify(z).ok, verify(z).problems


def test_verify_covers_coordinate_arrays(wh: Path, tmp_path: Path):
    import shutil

    w = tmp_path / "w"
    shutil.copytree(wh, w)
    assert verify(w).ok
    chunk = w / "activations.zarr/layer/c/0"
    data = bytearray(chunk.read_bytes())
    data[0] ^= 1
    chunk.write_bytes(bytes(data))
    (problem,) = verify(w).problems  # the chunk's crc32c no longer matches
    assert problem.startswith("coordinate array activations.zarr/layer: unreadable (")
    shutil.rmtree(w / "activations.zarr/layer")
    problems = verify(w).problems
    assert problems == ["coordinate array activations.zarr/layer: a file is missing"]
    m = json.loads((w / "manifest.json").read_text())  # an older warehouse lists none
    del m["coords"]
    (w / "manifest.json").write_text(json.dumps(m))
    shutil.rmtree(w / "activations.zarr/token_row")
    for dim in ("neuron", "d_model"):
        shutil.rmtree(w / "activations.zarr" / dim)
    for site in ("ffn.act", "ffn.down"):
        for dim in ("prompt_row", "layer", "neuron" if site == "ffn.act" else "d_model"):
            shutil.rmtree(w / "responses.zarr" / site / dim)
    assert verify(w).ok, verify(w).problems
    assert Warehouse.open(w).array("ffn.act", layer=0).dims == ("token_row", "neuron")


def test_merge_writes_coordinates(wh: Path, tmp_path: Path, tiny_llama_dir, tiny_facts):
    parts = []
    for i in (1, 2):
        out = tmp_path / f"part{i}"
        ingest(_cfg(out, tiny_llama_dir, tiny_facts, shard=(i, 2)), show_progress=False)
        parts.append(out)
    merged = tmp_path / "merged"
    merge([str(p) for p in parts], merged, show_progress=False)
    m, right = (json.loads((p / "manifest.json").read_text()) for p in (merged, wh))
    assert m["coords"] == right["coords"] and verify(merged).ok
    assert Warehouse.open(merged).array("ffn.act").identical(Warehouse.open(wh).array("ffn.act"))


PLAIN = """
import importlib.util, json, sys
assert importlib.util.find_spec("warehouse") is None, "the project is importable"
import duckdb, numpy as np, polars as pl, pyarrow.parquet as pq, xarray as xr, zarr

W = sys.argv[1]
m = json.load(open(f"{W}/manifest.json"))
out = {}
ds = xr.open_zarr(f"{W}/activations.zarr", consolidated=False)
act = ds["ffn.act"].sel(layer=1, neuron=42)
out["act_dims"] = list(ds["ffn.act"].dims)
out["down_dims"] = list(ds["ffn.down"].dims)
out["act"] = act.values.astype("float32").tolist()
out["attrs"] = dict(ds["ffn.act"].attrs)
mean = xr.open_zarr(f"{W}/responses.zarr/ffn.act", consolidated=False)["mean"]
out["mean"] = mean.sel(layer=0, neuron=[1, 2]).values.astype("float32").tolist()
out["mean_dims"] = list(mean.dims)
# `last` is derived (docs/format.md): each prompt's last token row
p = pq.read_table(f"{W}/prompts.parquet").sort_by("prompt_row")
end = p["token_offset"].to_numpy() + p["n_tokens"].to_numpy()
down = zarr.open_array(f"{W}/activations.zarr/ffn.down", mode="r")
out["last"] = down.get_orthogonal_selection((end - 1, 1, slice(0, 3))).astype("float32").tolist()
arr = zarr.open_array(f"{W}/activations.zarr/layer", mode="r")
out["layer_coord"] = arr[:].tolist()
out["parquet"] = {
    k.decode(): v.decode()
    for k, v in pq.read_schema(f"{W}/prompts.parquet").metadata.items()
    if k.startswith(b"relation-warehouse")
}
out["duckdb"] = duckdb.sql(
    f"select key, value from parquet_kv_metadata('{W}/tokens.parquet') "
    "where key::varchar like 'relation-warehouse%' order by key"
).fetchall()
out["duckdb"] = [[k.decode(), v.decode()] for k, v in out["duckdb"]]
out["polars_rows"] = pl.read_parquet(f"{W}/tokens.parquet").height
meta = pl.read_parquet_metadata(f"{W}/tokens.parquet")
out["polars_meta"] = {k: v for k, v in meta.items() if k.startswith("relation-warehouse")}
print(json.dumps(out, default=str))
"""


@pytest.mark.parametrize("codecs", ["blosc", "old zstd"])
def test_plain_libraries_read_it_without_the_project(
    codecs: str, wh: Path, old_wh: Path, tmp_path: Path
):
    """zarr, xarray, pyarrow, duckdb and polars alone, in a Python that cannot import the
    project: no site processing (so no editable install), the libraries' folders only. Today's
    codec chain and the one earlier builds wrote alike."""
    wh = wh if codecs == "blosc" else old_wh
    dirs = [p for p in sys.path if p.endswith("site-packages") or "/lib/python3" in p]
    script = "import sys\nsys.path[:] = " + repr(dirs) + "\n" + textwrap.dedent(PLAIN)
    run = subprocess.run(
        [sys.executable, "-S", "-c", script, str(wh)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    w = Warehouse.open(wh)
    m = w.manifest
    assert got["act_dims"] == ["token_row", "layer", "neuron"]
    assert got["down_dims"] == ["token_row", "layer", "d_model"]
    want = w.array("ffn.act", layer=1, neurons=42).values.astype(np.float32)
    assert got["act"] == want.tolist()
    want = w.array("ffn.act", pooling="mean", layer=0, neurons=[1, 2]).values
    assert got["mean"] == want.astype(np.float32).tolist()
    assert got["mean_dims"] == ["prompt_row", "layer", "neuron"]
    want = w.array("ffn.down", pooling="last", layer=1, neurons=[0, 1, 2]).values
    assert got["last"] == want.astype(np.float32).tolist()
    assert got["layer_coord"] == [0, 1]
    assert got["attrs"] == {
        "warehouse_dtype": "float16",
        "layers": [0, 1],
        "site": "ffn.act",
        "module": "model.layers.{layer}.mlp.down_proj",
        "io": "input",
        "transformer_lens_hook": "blocks.{layer}.mlp.hook_post",
        "units": m.model.units["ffn.act"],
        "model": m.model.name,
        "weights_hash": m.model.weights_hash,
        "row_table": "tokens.parquet",
        "row_column": "token_row",
    }
    prov = {
        "relation-warehouse.format_version": "3",
        "relation-warehouse.fingerprint": m.fingerprint,
    }
    assert got["parquet"] == prov
    assert got["duckdb"] == [list(kv) for kv in sorted(prov.items())]
    assert got["polars_rows"] == m.counts.tokens and got["polars_meta"] == prov


def test_derived_tables_carry_their_warehouse_provenance(wh: Path, tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from warehouse.store.tables import warehouse_provenance, write_table

    m = json.loads((wh / "manifest.json").read_text())
    prov = {
        b"relation-warehouse.format_version": b"3",
        b"relation-warehouse.fingerprint": m["fingerprint"].encode(),
    }
    (tmp_path / "manifest.json").write_bytes((wh / "manifest.json").read_bytes())
    deep = tmp_path / "evals" / "parts" / "r1" / "1-of-2.parquet"
    deep.parent.mkdir(parents=True)
    write_table(deep, pa.table({"x": [1, 2]}))
    assert pq.read_schema(deep).metadata == prov
    assert warehouse_provenance(tmp_path / "stats" / "s.parquet") == {
        k.decode(): v.decode() for k, v in prov.items()
    }
    outside = _no_warehouse_above(tmp_path) / "t.parquet"
    write_table(outside, pa.table({"x": [1]}))
    assert pq.read_schema(outside).metadata is None


def _no_warehouse_above(tmp_path: Path) -> Path:
    """A folder with no manifest.json in it or in the four folders above it."""
    d = tmp_path / "a" / "b" / "c" / "d" / "e"
    d.mkdir(parents=True)
    return d
