"""The manifest: one typed record, the same fields for every kind of version.

    kind, id, parent, parents   what the version is and which versions it was made from
    inputs      role → where the data came from (spec, fingerprint, limit…): prompts, ranked, seed_prompts, ift, eft
    models      role → {"model": the model reference, "engine": the engine identity}: policy, judge, generator, meta_judge
    sampling    role → sampling parameters (n, temperature, top_p, max_new_tokens): candidates, judgments, generations
    judge       the judge spec: template name, sha256 and text (and whatever else decides how judgments are read)
    seed, identity, stats, health, counts, files, code_version, recipe, created_at, timing_s
    extra       what only one kind has (an agreement rule, the contestants of a head-to-head, plots)

Readers (`ls`, `show`, cards, `diff`, `push`, `query`) use these fields and never the JSON's shape. Versions
written before this record existed had kind-specific layouts; `Manifest.from_json` reads them too.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from builder.core.records import stable_hash


@dataclass
class Manifest:
    kind: str
    id: str = ""
    parent: str | None = None
    parents: list[str] = field(default_factory=list)
    inputs: dict[str, dict] = field(default_factory=dict)
    models: dict[str, dict] = field(default_factory=dict)
    sampling: dict[str, dict] = field(default_factory=dict)
    judge: dict | None = None
    seed: int | None = None
    identity: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    health: dict | None = None
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    code_version: dict = field(default_factory=dict)
    recipe: dict | None = None
    created_at: str = ""
    timing_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    layout: int = 2  # 1: written before the typed manifest (read through `_from_layout_1`)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "Manifest":
        if raw.get("layout") == 2:
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in known})
        return _from_layout_1(raw)

    def expected_id(self) -> str:
        """The version id this identity names: the same configuration (inputs, models, parameters, seed) always
        names the same version, and an edited manifest no longer matches its id."""
        return f"{self.kind}-{stable_hash(self.identity)[:12]}"

    def model_spec(self, role: str) -> str | None:
        return (self.models.get(role) or {}).get("model", {}).get("spec")

    def model_names(self) -> str:
        """The models in a few characters: a local folder by its name, one name when policy and judge agree."""
        names = []
        for role in ("policy", "generator", "judge", "meta_judge"):
            spec = self.model_spec(role)
            if spec:
                short = spec.rstrip("/").rsplit("/", 1)[-1] if spec.startswith(("/", ".", "~")) else spec
                if short not in names:
                    names.append(short)
        return " / ".join(names) or "-"

    def code(self) -> str:
        return self.code_version.get("git") or self.code_version.get("package") or "-"

    def all_parents(self) -> list[str]:
        return self.parents or ([self.parent] if self.parent else [])


# Keys a layout-1 manifest kept at its top level, per role, and where they go now.
_LAYOUT_1_COMMON = {"kind", "id", "parent", "parents", "seed", "identity", "stats", "health", "counts", "files",
                    "code_version", "recipe", "created_at", "timing_s"}


def _from_layout_1(raw: dict) -> Manifest:
    """A manifest as versions before the typed manifest wrote it: the same facts under kind-specific keys."""
    kind = raw.get("kind", "pairs")
    models, sampling, inputs = {}, {}, {}
    for role in ("policy", "judge"):
        if isinstance(raw.get(role), dict) and "model" in raw[role]:
            models[role] = {"model": raw[role]["model"], "engine": raw[role].get("engine", {})}
    if isinstance(raw.get("model"), dict):  # eft, prompts: one model
        role = "generator" if kind == "prompts" else "judge"
        engine = raw.get("engine") or (raw.get("judge") or {}).get("engine", {})
        models[role] = {"model": raw["model"], "engine": engine}
    judge = raw.get("judge") if isinstance(raw.get("judge"), dict) else {}
    if kind == "pairs":
        sampling = {k: v for k, v in raw.get("sampling", {}).items() if k in ("candidates", "judgments")}
    elif "sampling" in judge:
        sampling = {"judgments": judge["sampling"]}
    elif kind == "prompts" and isinstance(raw.get("sampling"), dict):
        sampling = {"generations": raw["sampling"]}
    source = raw.get("input") or {}
    if kind == "sft":
        inputs = raw.get("inputs") or {}
    elif source:
        role = {"pairs": "prompts", "h2h": "prompts", "eft": "ranked", "rm": "ranked", "prompts": "seed_prompts", "seed": "oasst"}.get(kind, "input")
        spec = source.get("spec") or source.get("ranked") or source.get("seed_prompts")
        inputs = {role: {"spec": spec, **source}}
    extra = {k: v for k, v in raw.items()
             if k not in _LAYOUT_1_COMMON and k not in ("policy", "judge", "model", "engine", "sampling", "input", "inputs", "judge_template")}
    common = {k: raw[k] for k in _LAYOUT_1_COMMON if k in raw}
    return Manifest(**common | {"kind": kind, "parents": raw.get("parents") or []}, inputs=inputs, models=models,
                    sampling=sampling, judge=raw.get("judge_template"), extra=extra, layout=1)
