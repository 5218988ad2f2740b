"""Shared fixtures: tiny random-weight models, saved once per test run, and an isolated cache.

`tiny_llama_dir` is a Hugging Face folder (config.json, model.safetensors, tokenizer files) of
a 2-layer Llama with a 320-token byte-level BPE tokenizer trained here in ~20 ms, so no test
needs the internet. `tiny_llama_gguf` holds the same weights and tokenizer as a GGUF file
written with the `gguf` package. `tiny_gemma3_dir` is a Gemma 3 text model of the same size
and tokenizer, for the `gemma3_text` family.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# The LRE data set (Hernandez et al.; README "Set up"), never copied into the project: the
# `data/` folder of a clone of evandez/relations, named by $WAREHOUSE_LRE, by default
# ../shared/data/lre beside the checkout. Tests that need it skip when it is not there.
LRE = Path(
    os.environ.get("WAREHOUSE_LRE")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lre"
)


# The user's cache as it was before any test ran: only the embedded-model test may use it, so
# that the ~25 s de-quantization of SmolLM2 happens once per machine, not once per run.
USER_WAREHOUSE_CACHE = os.environ.get("WAREHOUSE_CACHE")

TINY_CORPUS = [
    "The capital city of France is Paris.",
    "The mother of Barack Obama is Ann Dunham.",
    "The father of Queen Elizabeth II is George VI.",
    "Die Hauptstadt von Frankreich ist Paris.",
    "La capitale de la France est Paris.",
    "Tokyo is the capital of Japan.",
]


@pytest.fixture(autouse=True)
def _isolated_warehouse_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Every test gets its own WAREHOUSE_CACHE, so no test writes to or reads from ~/.cache."""
    cache = tmp_path_factory.mktemp("warehouse-cache")
    monkeypatch.setenv("WAREHOUSE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory):
    """WAREHOUSE_CACHE for module-scoped fixtures (the autouse one is per test)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WAREHOUSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def user_warehouse_cache(monkeypatch) -> Path:
    """Point WAREHOUSE_CACHE back at the user's own cache, for the embedded SmolLM2 only."""
    if USER_WAREHOUSE_CACHE is None:
        monkeypatch.delenv("WAREHOUSE_CACHE")
    else:
        monkeypatch.setenv("WAREHOUSE_CACHE", USER_WAREHOUSE_CACHE)
    from warehouse.ingest.models import cache_dir

    return cache_dir()


def tiny_tokenizer():
    """A byte-level BPE tokenizer (any text encodes, no unknowns) with <s> and </s>, no pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TINY_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


def tiny_llama_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query, so the GGUF k-permutation is exercised
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )


# Scope "package": every test sits in this one folder, so each of these models is built
# once per test run.
@pytest.fixture(scope="package")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Llama (2 layers, d_model 32, FFN 48, vocab 320) with its tokenizer."""
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer))).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="package")
def strong_llama_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with its MLPs scaled up (down x5, gate and up x sqrt 5): at random init
    the residual stream hardly feels the MLPs, so zeroing units would change few answers."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.mul_(5.0)
            layer.mlp.gate_proj.weight.mul_(5.0**0.5)
            layer.mlp.up_proj.weight.mul_(5.0**0.5)
    path = tmp_path_factory.mktemp("strong-mlp")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(path)
    return path


def tiny_gemma3_config(vocab_size: int):
    """Gemma 3's text model in miniature: gated GELU-tanh MLP, q/k norms, scaled and tied
    embeddings, and one sliding-window layer (window 4) beside a global one."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=128,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


@pytest.fixture(scope="package")
def tiny_gemma3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random Gemma 3 text model (2 layers, d_model 32, FFN 48, vocab 320) with
    its MLPs scaled up as in `strong_llama_dir`, so zeroing units changes answers."""
    from transformers import Gemma3ForCausalLM

    path = tmp_path_factory.mktemp("tiny-gemma3")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(tiny_gemma3_config(len(tokenizer))).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.mul_(5.0)
            layer.mlp.gate_proj.weight.mul_(5.0**0.5)
            layer.mlp.up_proj.weight.mul_(5.0**0.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="package")
def tiny_llama_gguf(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of `tiny_llama_dir` as an F32 GGUF file with tokenizer metadata."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    tokenizer_json = json.loads((tiny_llama_dir / "tokenizer.json").read_text())
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf"
    write_llama_gguf(model, tokenizer_json, path)
    return path


def write_llama_gguf(model, tokenizer_json: dict, path: Path) -> None:
    """Write a Llama model and its byte-level BPE tokenizer the way llama.cpp's converter does."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)

    vocab = tokenizer_json["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    specials = {added["content"] for added in tokenizer_json["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges([" ".join(pair) for pair in tokenizer_json["model"]["merges"]])
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        data = tensor.detach().to(torch.float32).numpy()
        # llama.cpp interleaves the rotary halves of q and k; transformers undoes it on load.
        if base.endswith("self_attn.q_proj"):
            data = _llama_cpp_permute(data, config.num_attention_heads)
        elif base.endswith("self_attn.k_proj"):
            data = _llama_cpp_permute(data, config.num_key_value_heads)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", np.ascontiguousarray(data))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`warehouse ARGS` in this process: (exit code, stdout, stderr)."""
    import sys

    from warehouse import cli

    old = sys.argv
    sys.argv = ["warehouse", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err


def shard_chunks(shard: Path) -> dict[tuple[int, int], tuple[int, int]]:
    """(layer, neuron block) -> (offset, length) of each chunk in a warehouse's shard file
    from its index; the array's zarr.json (two folders up from c/i/0/0's
    folder) gives the grid."""
    folder = shard.parents[3]
    meta = json.loads((folder / "zarr.json").read_text())
    codec = meta["codecs"][0]["configuration"]
    shards = meta["chunk_grid"]["configuration"]
    grid = [s // c for s, c in zip(shards["chunk_shape"], codec["chunk_shape"], strict=True)]
    n = grid[1] * grid[2]
    data = shard.read_bytes()
    table = np.frombuffer(data[-(16 * n + 4) : -4], dtype="<u8").reshape(n, 2)
    return {divmod(i, grid[2]): (int(o), int(ln)) for i, (o, ln) in enumerate(table)}


def ingest_cfg(out: Path, model: Path, data: Path, **kw):
    """An ingest of a tiny test model with small chunks (many chunk files, many commits per
    run); each test module passes what it does differently (sites, batch, chunk sizes)."""
    from warehouse.ingest.run import IngestConfig

    base = dict(out=out, model=str(model), dataset=str(data), batch_size=2, token_chunk=8)
    return IngestConfig(**{**base, "prompt_chunk": 4, **kw})


def small_warehouse(tmp_path_factory, model_dir: Path) -> Path:
    """Two relations × three subjects ingested with `model_dir`, stats over all prompts and a
    selection `cap` of the top 4: the warehouse the hostile and security tests attack."""
    from warehouse.analysis.selections import select
    from warehouse.analysis.stats import run_stats
    from warehouse.ingest.run import IngestConfig, ingest

    data = tmp_path_factory.mktemp("data") / "d.jsonl"
    rows = [
        {"relation": r, "language": "en", "subject": s, "object": o, "templates": [t]}
        for r, t in (("capital", "The capital of {subject} is"), ("coin", "{subject} pays in"))
        for s, o in (("Peru", "Lima"), ("Chile", "Santiago"), ("Kenya", "Nairobi"))
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path_factory.mktemp("w") / "w"
    ingest(IngestConfig(out=out, model=str(model_dir), dataset=str(data)), False)
    run_stats(out, split="all", show_progress=False)
    select(out, "cap", "capital", top=4)
    return out
