"""`builder view`'s pages: a Starlette app over one store, server-rendered with Jinja2, read-only.

Every route is a GET that reads manifests (the store's own listing) and parquet tables (data.py's locked
DuckDB); none writes anything. Pages:

    /                          every version: kind, id, parent and children, counts
    /models                    registered models with their lineage
    /v/{id}                    one version: provenance, files, judge health and label-quality figures
    /v/{id}/prompts            prompts with candidates side by side, judgments, marks, drops; filters
    /v/{id}/verdicts           head-to-head verdicts in both orders with the outcome; filters
    /v/{id}/t/{table}          any table, paginated, sortable by a column
    /v/{id}/manifest           the manifest as it is
    /v/{id}/file/{name}        a PNG plot the version carries
"""

import json
import math
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from builder.app.view import data
from builder.app.view.charts import bar_chart
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.registry import ancestry, final_metrics, registered_models
from builder.core.store import Store, Version
from builder.judging.health import warnings_for


def create_app(store: Store) -> Starlette:
    environment = Environment(loader=PackageLoader("builder.app.view", "templates"), autoescape=select_autoescape(["html"]))
    environment.filters |= {"cell": cell_text, "number": number_text}
    environment.globals |= {"url_with": url_with, "models_used": models_used, "store_root": str(store.root)}
    templates = Jinja2Templates(env=environment)

    def render(request: Request, name: str, status: int = 200, **context) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def versions_page(request: Request) -> Response:
        versions = store.versions()
        kinds = sorted({v.manifest.kind for v in versions})
        kind = request.query_params.get("kind", "")
        known = {v.id for v in versions}
        children = children_of(versions)
        shown = [v for v in versions if not kind or v.manifest.kind == kind]
        return render(request, "versions.html", versions=shown, kinds=kinds, kind=kind, known=known, children=children,
                      parents_of=parents_of, models=len(registered_models(store)))

    def models_page(request: Request) -> Response:
        models = registered_models(store)
        by_name = {m["name"]: m for m in models}
        known = {v.id for v in store.versions()}
        rows = [m | {"chain": ancestry(m, by_name), "figures": final_metrics(m.get("metrics", {}))} for m in models]
        return render(request, "models.html", models=rows, known=known, registered=set(by_name))

    def version_page(request: Request) -> Response:
        version = find_version(store, request.path_params["vid"])
        connection = data.open_tables(version)
        tables = data.table_names(connection)
        versions = store.versions()
        kind = version.manifest.kind
        health = version.manifest.health or {}
        stats = version.manifest.stats or {}
        charts = figures(connection, tables, kind)
        return render(
            request, "version.html", version=version, kind=kind, tables=sorted(tables), manifest=version.manifest,
            parents=parents_of(version), children=children_of(versions).get(version.id, []), known={v.id for v in versions},
            warnings=warnings_for(health | {"matches": stats.get("matches") or []}),
            figures_shown=any(isinstance(v, (dict, str, int, float)) or v is None for v in stats.values()),
            health=health, charts=charts, trained=[m["name"] for m in registered_models(store) if m.get("data", {}).get("version") == version.id], browse=data.can_browse_prompts(tables), verdicts="verdicts" in tables,
            plots=[name for name in version.manifest.files if name.endswith(".png")],
            summary=data.dicts(connection, "SELECT * FROM summary") if kind == "h2h" and "summary" in tables else [],
        )

    def prompts_page(request: Request) -> Response:
        version = find_version(store, request.path_params["vid"])
        connection = data.open_tables(version)
        tables = data.table_names(connection)
        if not data.can_browse_prompts(tables):
            raise HTTPException(404, f"{version.id} has no prompts, candidates and judgments tables")
        try:
            chosen = data.PromptFilter.from_query(request.query_params)
            page = data.prompt_page(connection, chosen, page_number(request))
        except ValueError as error:
            return render(request, "error.html", status=400, message=str(error))
        return render(request, "prompts.html", version=version, page=page, filter=chosen,
                      statuses=data.status_options(connection, tables), columns=set(data.columns_of(connection, "candidates")))

    def verdicts_page(request: Request) -> Response:
        version = find_version(store, request.path_params["vid"])
        connection = data.open_tables(version)
        if "verdicts" not in data.table_names(connection):
            raise HTTPException(404, f"{version.id} has no verdicts table")
        chosen = data.VerdictFilter.from_query(request.query_params)
        page = data.verdict_page(connection, chosen, page_number(request))
        return render(request, "verdicts.html", version=version, page=page, filter=chosen, options=data.verdict_options(connection))

    def table_page(request: Request) -> Response:
        version = find_version(store, request.path_params["vid"])
        connection = data.open_tables(version)
        table = request.path_params["table"]
        if table not in data.table_names(connection):
            raise HTTPException(404, f"{version.id} has no table {table!r}")
        sort = request.query_params.get("sort")
        descending = request.query_params.get("desc") == "1"
        page = data.table_page(connection, table, page_number(request), sort, descending)
        return render(request, "table.html", version=version, table=table, columns=data.columns_of(connection, table),
                      page=page, sort=sort, descending=descending)

    def manifest_page(request: Request) -> Response:
        version = find_version(store, request.path_params["vid"])
        return render(request, "manifest.html", version=version, text=(version.folder / "manifest.json").read_text(encoding="utf-8"))

    def plot_file(request: Request) -> Response:
        version = find_version(store, request.path_params["vid"])
        name = request.path_params["name"]
        if not name.endswith(".png") or name not in version.manifest.files or "/" in name:
            raise HTTPException(404, f"{version.id} has no plot {name!r}")
        return Response((version.folder / name).read_bytes(), media_type="image/png")

    async def not_found(request: Request, error: HTTPException) -> Response:
        return render(request, "error.html", status=error.status_code, message=error.detail)

    routes = [
        Route("/", versions_page),
        Route("/models", models_page),
        Route("/v/{vid}", version_page),
        Route("/v/{vid}/prompts", prompts_page),
        Route("/v/{vid}/verdicts", verdicts_page),
        Route("/v/{vid}/t/{table}", table_page),
        Route("/v/{vid}/manifest", manifest_page),
        Route("/v/{vid}/file/{name}", plot_file),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def find_version(store: Store, version_id: str) -> Version:
    try:
        folder = store.find(version_id)
    except BuilderError as error:
        raise HTTPException(404, str(error)) from None
    return Version(folder.name, folder, Manifest.from_json(json.loads((folder / "manifest.json").read_text())))


def parents_of(version: Version) -> list[str]:
    return version.manifest.all_parents()


def models_used(manifest: Manifest) -> list[tuple[str, str]]:
    """(role, model spec) for every model a version names, and a head-to-head's contestants."""
    found = [(role, manifest.model_spec(role)) for role in manifest.models]
    found += [("contestant", c.get("label")) for c in manifest.extra.get("contestants") or []]
    return [(role, spec) for role, spec in found if spec]


def children_of(versions: list[Version]) -> dict[str, list[str]]:
    children = {}
    for version in versions:
        for parent in parents_of(version):
            children.setdefault(parent, []).append(version.id)
    return children


def figures(connection, tables: set[str], kind: str | None) -> list:
    """Judge health and label quality, as far as the version's tables allow."""
    charts = []
    if {"judgments"} <= tables and "score" in data.columns_of(connection, "judgments"):
        histogram = data.score_histogram(connection)
        charts.append(bar_chart("judgment scores", [s for s, _ in histogram], {"judgments": [n for _, n in histogram]}, "score", "judgments"))
        spreads = data.spread_histogram(connection)
        charts.append(bar_chart("judge disagreement (max − min of a candidate's scores)", [s for s, _ in spreads],
                                {"candidates": [n for _, n in spreads]}, "spread", "candidates"))
    if "candidates" in tables and {"score_mean", "n_tokens"} <= set(data.columns_of(connection, "candidates")):
        means = data.score_by_length(connection)
        charts.append(bar_chart("mean score by response length", [b for b, _ in means], {"mean score": [m for _, m in means]}, "tokens", "mean score"))
    if "pairs" in tables and {"chosen_tokens", "rejected_tokens"} <= set(data.columns_of(connection, "pairs")):
        labels, series = data.length_bins(connection)
        charts.append(bar_chart("chosen and rejected lengths", labels, series, "tokens", "pairs"))
    if kind == "h2h" and "verdicts" in tables:
        matches, series = data.outcome_counts(connection)
        charts.append(bar_chart("outcomes per match", matches, series, "", "pairs"))
    return charts


def page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def url_with(request: Request, **changes) -> str:
    """This page's URL with some parameters changed (None removes one)."""
    params = dict(request.query_params)
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = str(value)
    query = urlencode(params)
    return request.url.path + ("?" + query if query else "")


def cell_text(value) -> str:
    """A table cell as text: nested values as JSON, floats to 4 decimals, nothing cut."""
    if value is None:
        return ""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return number_text(value) if isinstance(value, float) else str(value)


def number_text(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)
