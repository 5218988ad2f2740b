"""The sections of manifest.json, typed: `model`, `dataset`, `capture`, `counts`, `state`.

Each section is a dataclass with one attribute per key docs/format.md lists. It reads and
writes its JSON object exactly: a key absent from the file stays absent when the section is
written back (it reads as the attribute's default, None unless stated, but no null is
invented), and a key this tool does not know is kept in `extra`. So `to_json` of a loaded
section is the object it was loaded from, and the fingerprint, which hashes the `model`,
`dataset` and `capture` objects as stored (store/fingerprint.py), stays that of every
existing warehouse. Values are kept as the file holds them (no conversion): a manifest
whose values have the wrong types is refused, or reported, where they are used, as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Self

# The values of State.status.
INGESTING = "ingesting"
COMPLETE = "complete"


class _Absent:
    """The default of a key not given: the key is absent from the section's JSON."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def key(default: Any = None) -> Any:
    """A section key, absent unless given; read while absent, it is `default` (a value, or a
    callable that makes a fresh one)."""
    return field(default=ABSENT, metadata={"absent": default})


@dataclass(eq=False, kw_only=True)
class Section:
    """The base of every section: JSON in and out, keys absent stay absent, unknown kept."""

    extra: dict[str, Any] = field(default_factory=dict)  # keys this tool does not know

    def __post_init__(self) -> None:
        absent = set()
        for f in self.key_fields():
            if getattr(self, f.name) is ABSENT:
                absent.add(f.name)
                default = f.metadata["absent"]
                object.__setattr__(self, f.name, default() if callable(default) else default)
        object.__setattr__(self, "_absent", absent)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        self.__dict__.get("_absent", set()).discard(name)  # a key set is a key written

    def __eq__(self, other: object) -> bool:
        """Sections are equal when their JSON is (an absent key differs from a null)."""
        if not isinstance(other, Section) or type(other) is not type(self):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable

    @classmethod
    def key_fields(cls) -> tuple[Any, ...]:
        """The dataclass fields that are JSON keys (all but `extra`)."""
        return tuple(f for f in fields(cls) if f.name != "extra")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        """The section of a JSON object (as manifest.json holds it)."""
        if not isinstance(d, dict):
            raise TypeError(f"a manifest {cls.__name__} section is a JSON object, not {d!r}")
        names = {f.name for f in cls.key_fields()}
        return cls(
            **{k: v for k, v in d.items() if k in names},
            extra={k: v for k, v in d.items() if k not in names},
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object: every key given or loaded (absent ones left out), then `extra`."""
        absent = self.__dict__["_absent"]
        out = {f.name: getattr(self, f.name) for f in self.key_fields() if f.name not in absent}
        out.update(self.extra)
        return out

    @classmethod
    def of(cls, x: Section | dict[str, Any]) -> Self:
        """`x` if it is this section already, else the section of the JSON object `x`."""
        return x if isinstance(x, cls) else cls.from_json(x)  # type: ignore[arg-type]

    def has(self, name: str) -> bool:
        """The key `name` is in the section's JSON (given, loaded or set since)."""
        return name not in self.__dict__["_absent"] and name in {f.name for f in self.key_fields()}

    def updated(self, **changes: Any) -> Self:
        """A copy with `changes` set (keys this section knows only); absent keys stay absent."""
        unknown = sorted(set(changes) - {f.name for f in self.key_fields()})
        if unknown:
            raise TypeError(f"{type(self).__name__} has no key(s) {unknown}")
        return type(self).from_json({**self.to_json(), **changes})


@dataclass(eq=False, kw_only=True)
class ModelInfo(Section):
    """`model`: the model an ingest ran, and its units per layer of each captured site."""

    name: str | None = key()  # as given: smollm2-135m, a path, a hub id
    source: str | None = key()  # where the weights were read from
    weights_hash: str | None = key()  # sha256: over the state dict
    architecture: str | None = key()  # llama, gemma3_text, ...
    n_layers: int | None = key()
    d_model: int | None = key()
    units: dict[str, int] = key(dict)  # site -> units per layer


@dataclass(eq=False, kw_only=True)
class DatasetInfo(Section):
    """`dataset`: the facts and the selection of prompts an ingest captured."""

    name: str | None = key()
    hash: str | None = key()  # sha256: of the facts
    relations: list[str] | None = key()  # None: all
    languages: list[str] | None = key()  # None: all
    split: str | None = key()
    seed: int | None = key()
    max_prompts: int | None = key()


@dataclass(eq=False, kw_only=True)
class Capture(Section):
    """`capture`: what an ingest stored of each prompt, and how."""

    sites: list[str] = key(list)
    layers: list[int] = key(list)  # model layer numbers on the layer axis
    mode: str | None = key()  # "tokens" (every token, and pooled) or "pooled"
    pooling: list[str] = key(list)  # every pooling readable, stored or derived
    # pooling -> rule (format.DERIVED_POOLING_RULES): not stored, derived from the per-token
    # activations when read. Absent in warehouses that store every pooling.
    derived_pooling: dict[str, str] = key(dict)
    dtype: str | None = key()  # the storage dtype
    batch_size: int | None = key()
    batching: str | None = key()
    # "tree": each distinct token prefix of a batch runs once, the batch's prefix tree
    # packed into one sequence (ingest/prefix.py); "packed" (0.x builds before "tree"): one
    # prefix length per batch, packed; "shared" (builds before "packed"): that in two
    # passes; absent: one plain forward pass per batch, as every warehouse written before
    # the key existed.
    prefix: str | None = key()
    model_dtype: str | None = key()
    token_chunk: int | None = key()
    prompt_chunk: int | None = key()

    @property
    def per_token(self) -> bool:
        """Every token's activations are stored (mode "tokens"), not only the pooled ones."""
        return self.mode == "tokens"

    @property
    def stored_pooling(self) -> list[str]:
        """The poolings stored as response arrays: those not derived when read."""
        return [p for p in self.pooling if p not in self.derived_pooling]


@dataclass(eq=False, kw_only=True)
class Counts(Section):
    """`counts`: rows of the prompts and tokens tables."""

    prompts: int | None = key()
    tokens: int | None = key()


@dataclass(eq=False, kw_only=True)
class State(Section):
    """`state`: how far the ingest got. Rows below the committed marks are on disk."""

    status: str | None = key()  # INGESTING or COMPLETE
    prompts_committed: int = key(0)  # responses rows on disk
    tokens_committed: int = key(0)  # activations rows on disk
    finished: str | None = key()  # UTC time the ingest completed

    @classmethod
    def new(cls) -> State:
        """The state of a warehouse just created: nothing committed."""
        return cls(status=INGESTING, prompts_committed=0, tokens_committed=0)

    @property
    def complete(self) -> bool:
        """The ingest finished: every table and array is written and checksummed."""
        return self.status == COMPLETE

    def committed(self, kind: str) -> int:
        """Rows on disk of `kind`: "tokens" (activations) or "prompts" (responses)."""
        if kind not in ("tokens", "prompts"):
            raise ValueError(f"committed rows are of 'tokens' or 'prompts', not {kind!r}")
        return int(getattr(self, f"{kind}_committed") or 0)

    def rows_on_disk(self, array_key: str, rows: int) -> int:
        """Of an array of `rows` rows (`activations/...` or `responses/...`), those on disk:
        all of them once complete, else up to its kind's committed mark."""
        if self.complete:
            return rows
        kind = "tokens" if array_key.startswith("activations/") else "prompts"
        return min(rows, self.committed(kind))

    def commit(self, *, tokens: int, prompts: int) -> None:
        """Record new committed marks (a batch is safely on disk)."""
        self.tokens_committed = tokens
        self.prompts_committed = prompts

    def mark_complete(self, finished: str | None = None) -> None:
        """The ingest is finished: status complete, `finished` now (UTC) unless given."""
        self.status = COMPLETE
        self.finished = finished or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
