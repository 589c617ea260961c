"""Share versions through the Hugging Face Hub: `builder push` and `builder pull`.

A pushed dataset repo holds one version per commit, its files at the root exactly as they are in the store:
the parquet tables, the card (README.md, whose YAML `configs` make every non-empty table a `load_dataset`
config, `pairs` the default) and manifest.json. Each version's commit is tagged with the version id, so the
repo's tags are its history, and a parent named on a card is a tag of the same repo when it was pushed
there. Because the bytes are the store's own, a pull checks every file against the manifest's sha256.
"""

import json
import re
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    get_token,
    snapshot_download,
)
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.stage import identity_problem
from builder.core.store import Store, Version

REPO_TYPE = "dataset"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")  # a file, or a table's part


@dataclass(frozen=True)
class HubRef:
    """`user/name` or `user/name@revision` (a tag, branch or commit)."""

    repo_id: str
    revision: str | None = None

    @property
    def duckdb_url(self) -> str:
        return f"hf://datasets/{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    tag: str
    commit_url: str | None  # None when the tag was already there and nothing was sent
    already_pushed: bool


def parse_hub_ref(text: str) -> HubRef:
    repo_id, _, revision = text.partition("@")
    check_repo_id(repo_id)
    if "@" in text and not revision:
        raise BuilderError(f"expected user/name[@tag], got {text!r}")
    return HubRef(repo_id, revision or None)


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
        valid = "/" in repo_id
    except HFValidationError:
        valid = False
    if not valid:
        raise BuilderError(f"expected a Hub dataset repo as user/name, got {repo_id!r}")


def push_operations(version: Version, files_in_repo: Iterable[str] = ()) -> list[CommitOperationAdd | CommitOperationDelete]:
    """The commit that makes a repo hold exactly this version: every file the manifest lists and the manifest,
    and a delete for anything else already there (a previous version's plots), except .gitattributes."""
    names = [*sorted(version.manifest.files), "manifest.json"]
    stale = sorted(set(files_in_repo) - set(names) - {".gitattributes"})
    return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(version.folder / name)) for name in names] + [
        CommitOperationDelete(path_in_repo=name) for name in stale
    ]


def commit_message(version: Version) -> tuple[str, str]:
    manifest = version.manifest
    counts = ", ".join(f"{name} {rows}" for name, rows in manifest.counts.items())
    parent = f"; parent {manifest.parent}" if manifest.parent else ""
    return f"Add {version.id}", f"{manifest.kind} {version.id}{parent}. Rows: {counts}."


def push_version(store: Store, version_id: str, repo_id: str, private: bool = False, branch: str | None = None) -> PushResult:
    """Create the repo if needed, commit the version and tag the commit with the version id. The token is
    huggingface_hub's own (HF_TOKEN or the stored login); it is only ever passed to the Hub."""
    version = store.load(version_id)
    check_repo_id(repo_id)
    if get_token() is None:
        raise BuilderError("push needs a Hugging Face token: log in with `hf auth login` or set HF_TOKEN")
    damaged = store.verify(version)
    if damaged:
        raise BuilderError(f"{version.id}: checksum mismatch in {', '.join(damaged)}; a damaged version is not pushed")
    title, description = commit_message(version)
    api = HfApi()
    with hub_errors(f"push to {repo_id}"):
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        if version.id in {tag.name for tag in api.list_repo_refs(repo_id, repo_type=REPO_TYPE).tags}:
            return PushResult(repo_id, version.id, None, already_pushed=True)
        if branch:
            api.create_branch(repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
        in_repo = api.list_repo_files(repo_id, repo_type=REPO_TYPE, revision=branch)
        commit = api.create_commit(
            repo_id, push_operations(version, in_repo), commit_message=title, commit_description=description,
            repo_type=REPO_TYPE, revision=branch,
        )
        api.create_tag(repo_id, tag=version.id, tag_message=description, revision=commit.oid, repo_type=REPO_TYPE)
    return PushResult(repo_id, version.id, commit.commit_url, already_pushed=False)


def pull_version(ref: HubRef, store: Store) -> tuple[Version, bool]:
    """Download into huggingface_hub's cache, then verify and install. Returns (version, installed_now)."""
    with hub_errors(f"pull {ref}"):
        folder = snapshot_download(ref.repo_id, repo_type=REPO_TYPE, revision=ref.revision)
    return install_version(Path(folder), store)


def install_version(folder: Path, store: Store) -> tuple[Version, bool]:
    """Check a downloaded version's files against its own manifest, then copy it into the store."""
    manifest = read_manifest(folder)
    downloaded = Version(manifest["id"], folder, Manifest.from_json(manifest))
    if problem := identity_problem(downloaded, in_store=False):
        raise BuilderError(f"{downloaded.id}: {problem}; nothing was installed")
    damaged = store.verify(downloaded)
    if damaged:
        raise BuilderError(f"{downloaded.id}: checksum mismatch in {', '.join(damaged)}; nothing was installed")
    if store.exists(downloaded.id):
        return store.load(downloaded.id), False
    return store.add_copy(folder, manifest), True


def read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuilderError(f"{folder} has no manifest.json: it is not a dataset version") from None
    except (OSError, ValueError) as error:
        raise BuilderError(f"cannot read {path}: {error}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    # the names become paths in the store: a manifest from elsewhere must not reach outside its folder
    if not isinstance(files, dict) or not all(_PLAIN_NAME.fullmatch(str(name)) for name in [manifest.get("id"), *files]):
        raise BuilderError(f"{path} is not a dataset version's manifest (needs an id and plain file names)")
    return manifest


@contextmanager
def hub_errors(action: str):
    """Whatever the Hub or the network answers (not found, no access, offline, refused) becomes one line."""
    try:
        yield
    except Exception as error:  # noqa: BLE001
        message = str(error).strip().splitlines()
        raise BuilderError(f"{action} failed: {type(error).__name__}: {message[0] if message else ''}") from None
