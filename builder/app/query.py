"""DuckDB over the whole store: one view per table, the union of every version's rows with a `version`
column, plus a `versions` view of the manifests.

Versions kept elsewhere can join them (`--attach`): another version folder, or a version pushed to the Hub,
which DuckDB reads itself through its `hf://datasets/user/name@tag/...` paths.

The connection is sealed before the user's SQL runs: only SELECT (and EXPLAIN) statements are accepted, as
DuckDB's own parser types them; DuckDB may open only the files the versions' manifests list (and the
attached Hub versions' folders); external access is otherwise off and the configuration is locked, so no
statement can write a file, attach a database, load an extension or read anything else on the machine."""

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.store import Store, table_files


@dataclass(frozen=True)
class LocatedVersion:
    """A version's manifest and the folder or URL its files are read from."""

    id: str
    manifest: Manifest
    location: str

    def has(self, name: str) -> bool:
        return name in self.manifest.files

    def file(self, name: str) -> str:
        return f"{self.location}/{name}"

    def tables(self) -> dict[str, list[str]]:
        """Table name → the paths of its files (one, or its parts)."""
        return {name: [self.file(f) for f in files] for name, files in table_files(self.manifest.files).items()}


def connect(store: Store, attach: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    located = [LocatedVersion(v.id, v.manifest, str(v.folder.resolve())) for v in store.versions()]
    for location in attach:
        version = attached_version(connection, location)
        if version.id in {v.id for v in located}:
            raise BuilderError(f"{version.id} from {location} is already in the query (store {store.root} or an earlier --attach)")
        located.append(version)
    if not located:
        raise BuilderError(f"store {store.root} has no versions yet")
    # every table any version has becomes a view, pairs and evaluation versions alike; an attached manifest
    # comes from elsewhere, so only plain names become SQL identifiers
    names = {name for v in located for name in v.tables()}
    tables = sorted(name for name in names if name.isidentifier())
    for table in tables:
        parts = [
            f"SELECT {sql_string(v.id)} AS version, * FROM read_parquet({sql_list(v.tables()[table])})"
            for v in located
            if table in v.tables()
        ]
        if parts:
            connection.execute(f'CREATE VIEW "{table}" AS ' + " UNION ALL BY NAME ".join(parts))
    connection.register("versions_frame", versions_frame(located))
    connection.execute("CREATE VIEW versions AS SELECT * FROM versions_frame")
    seal(connection, located)
    return connection


READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def seal(connection: duckdb.DuckDBPyConnection, located: list[LocatedVersion]) -> None:
    """From here on DuckDB reads the versions' own files and nothing else, and no setting can change that."""
    files = [v.file(name) for v in located if not v.location.startswith("hf://") for name in [*v.manifest.files, "manifest.json"]]
    folders = [f"{v.location}/" for v in located if v.location.startswith("hf://")]
    connection.execute(f"SET allowed_paths = [{', '.join(map(sql_string, files))}]")
    connection.execute(f"SET allowed_directories = [{', '.join(map(sql_string, folders))}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")


def check_read_only(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as error:
        raise BuilderError(f"query failed: {str(error).splitlines()[0]}") from None
    refused = [s.type.name for s in statements if s.type not in READ_ONLY_STATEMENTS]
    if refused:
        raise BuilderError(f"query refused: only SELECT statements read the store (found {', '.join(refused)})")
    if not statements:
        raise BuilderError("query is empty")


def attached_version(connection: duckdb.DuckDBPyConnection, location: str) -> LocatedVersion:
    """A version folder, or a Hub dataset `user/name[@tag]` read through DuckDB's hf:// paths."""
    from builder.app.hub import parse_hub_ref

    if Path(location).is_dir():
        base = str(Path(location).resolve())
    elif "/" in location:
        base = parse_hub_ref(location).duckdb_url
        use_hub_token(connection)
    else:
        raise BuilderError(f"cannot attach {location!r}: not a version folder, nor a Hub dataset user/name[@tag]")
    try:
        found = connection.execute("SELECT content FROM read_text(?)", [f"{base}/manifest.json"]).fetchall()
        manifest = json.loads(found[0][0]) if found else None
    except (duckdb.Error, ValueError) as error:
        raise BuilderError(f"cannot read {base}/manifest.json: {str(error).splitlines()[0]}") from None
    if not isinstance(manifest, dict) or "id" not in manifest:
        raise BuilderError(f"{location} is not a dataset version: no manifest.json with an id")
    return LocatedVersion(manifest["id"], Manifest.from_json(manifest), base)


def use_hub_token(connection: duckdb.DuckDBPyConnection) -> None:
    """Private repos need the token; a DuckDB secret created this way lives in memory only."""
    from huggingface_hub import get_token

    token = get_token()
    if token:
        try:
            connection.execute(f"CREATE OR REPLACE SECRET hub (TYPE huggingface, TOKEN {sql_string(token)})")
        except duckdb.Error as error:
            raise BuilderError(f"cannot give DuckDB the Hub token: {str(error).splitlines()[0]}") from None


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_list(texts: list[str]) -> str:
    """A table's files for read_parquet: one path, or the list of its parts."""
    return sql_string(texts[0]) if len(texts) == 1 else "[" + ", ".join(map(sql_string, texts)) + "]"


def versions_frame(versions: list[LocatedVersion]) -> pl.DataFrame:
    rows = [
        {
            "version": v.id,
            "kind": v.manifest.kind,
            "created_at": v.manifest.created_at,
            "parent": v.manifest.parent,
            "policy": v.manifest.model_spec("policy") or v.manifest.model_spec("generator"),
            "judge": v.manifest.model_spec("judge"),
            "seed": v.manifest.seed,
            "location": v.location,
            "manifest": json.dumps(v.manifest.to_json()),
        }
        for v in versions
    ]
    return pl.DataFrame(rows)


def run_query(store: Store, sql: str, attach: tuple[str, ...] = ()) -> pl.DataFrame:
    connection = connect(store, attach)
    check_read_only(connection, sql)
    try:
        return connection.sql(sql).pl()
    except duckdb.Error as error:
        raise BuilderError(f"query failed: {str(error).splitlines()[0]}") from None
    except AttributeError:  # a statement with no result set
        return pl.DataFrame()
