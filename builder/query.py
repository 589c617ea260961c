"""DuckDB over the whole store: one view per table, the union of every version's rows with a `version`
column, plus a `versions` view of the manifests."""

import json

import duckdb
import polars as pl

from builder.card import TABLES
from builder.errors import BuilderError
from builder.store import Store


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    versions = store.versions()
    if not versions:
        raise BuilderError(f"store {store.root} has no versions yet")
    connection = duckdb.connect()
    for table in TABLES:
        files = [str(v.folder / f"{table}.parquet") for v in versions if (v.folder / f"{table}.parquet").exists()]
        if files:
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            connection.execute(
                f"CREATE VIEW {table} AS SELECT parse_dirpath(filename).split('/')[-1] AS version, * EXCLUDE (filename) "
                f"FROM read_parquet([{listed}], filename = true, union_by_name = true)"
            )
    connection.register("versions_frame", versions_frame(versions))
    connection.execute("CREATE VIEW versions AS SELECT * FROM versions_frame")
    return connection


def versions_frame(versions) -> pl.DataFrame:
    rows = [
        {
            "version": v.id,
            "kind": v.manifest.get("kind"),
            "created_at": v.manifest.get("created_at"),
            "parent": v.manifest.get("parent"),
            "policy": v.manifest.get("policy", {}).get("model", {}).get("spec"),
            "judge": v.manifest.get("judge", {}).get("model", {}).get("spec"),
            "seed": v.manifest.get("seed"),
            "manifest": json.dumps(v.manifest),
        }
        for v in versions
    ]
    return pl.DataFrame(rows)


def run_query(store: Store, sql: str) -> pl.DataFrame:
    connection = connect(store)
    try:
        return connection.sql(sql).pl()
    except duckdb.Error as error:
        raise BuilderError(f"query failed: {str(error).splitlines()[0]}") from None
    except AttributeError:  # a statement with no result set
        return pl.DataFrame()
