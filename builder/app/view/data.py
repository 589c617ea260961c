"""What the viewer reads, always through DuckDB and always read-only.

Rules:
- Each request opens its own in-memory DuckDB whose only readable files are the parquet files one version's
  manifest lists (`allowed_paths`), with external access off and the configuration locked, so no query it
  runs can read elsewhere or write anywhere; nothing is written to the store, not even a spill file.
- A page never loads a whole table: every listing is a filtered `LIMIT/OFFSET` query plus a count, and the
  figures are `GROUP BY` aggregates.
"""

import math
from dataclasses import dataclass, field

import duckdb

from builder.app.query import sql_list, sql_string
from builder.core.store import Version

PROMPTS_PER_PAGE = 20
ROWS_PER_PAGE = 50


@dataclass(frozen=True)
class Page:
    rows: list[dict]
    total: int
    number: int  # 1-based
    size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))


def open_tables(version: Version) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with one view per parquet table of the version, able to read those files only."""
    tables = {
        name: [str(path.resolve()) for path in version.files_of(name)]
        for name in version.table_names()
        if name.isidentifier() and all(path.is_file() for path in version.files_of(name))
    }
    connection = duckdb.connect(":memory:")
    allowed = "[" + ", ".join(sql_string(path) for paths in tables.values() for path in paths) + "]::VARCHAR[]"
    connection.execute(f"SET allowed_paths = {allowed}")
    connection.execute("SET temp_directory = ''")  # never spill to disk (DuckDB's default is a .tmp folder in the cwd)
    connection.execute("SET enable_external_access = false")
    connection.execute("SET autoinstall_known_extensions = false")
    connection.execute("SET lock_configuration = true")
    for table, paths in tables.items():
        connection.execute(f'CREATE VIEW "{table}" AS SELECT * FROM read_parquet({sql_list(paths)})')
    return connection


def table_names(connection: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def columns_of(connection: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in connection.execute(f'DESCRIBE "{table}"').fetchall()]


def dicts(connection: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cursor = connection.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def scalar(connection: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    return connection.execute(sql, params or []).fetchone()[0]


def table_page(connection: duckdb.DuckDBPyConnection, table: str, number: int, sort: str | None, descending: bool) -> Page:
    """Any table, a page at a time; `sort` must be one of its columns (else the file's order is kept)."""
    order = f'ORDER BY "{sort}" {"DESC" if descending else "ASC"} NULLS LAST' if sort in columns_of(connection, table) else ""
    rows = dicts(connection, f'SELECT * FROM "{table}" {order} LIMIT ? OFFSET ?', [ROWS_PER_PAGE, (number - 1) * ROWS_PER_PAGE])
    return Page(rows, scalar(connection, f'SELECT count(*) FROM "{table}"'), number, ROWS_PER_PAGE)


# --- prompts with their candidates and judgments (pairs, and rm/eft versions that have the same tables)


@dataclass(frozen=True)
class PromptFilter:
    """Candidate filters select prompts that have at least one candidate meeting all of them at once;
    `status` is `paired`, `unpaired` or a drop reason recorded at any level for the prompt."""

    score_min: float | None = None
    score_max: float | None = None
    spread_min: float | None = None  # judge disagreement: max − min of a candidate's parsed scores
    tokens_min: int | None = None
    tokens_max: int | None = None
    status: str = ""
    text: str = ""

    @classmethod
    def from_query(cls, query) -> "PromptFilter":
        """From URL parameters; a value that is not a number raises ValueError with the parameter's name."""
        return cls(
            score_min=_number(query, "score_min", float),
            score_max=_number(query, "score_max", float),
            spread_min=_number(query, "spread_min", float),
            tokens_min=_number(query, "tokens_min", int),
            tokens_max=_number(query, "tokens_max", int),
            status=query.get("status", "").strip(),
            text=query.get("q", "").strip(),
        )

    def candidate_conditions(self) -> list[tuple[str | None, str, float]]:
        """(the candidates column it needs, SQL, value) for each bound that is set; the spread comes from judgments."""
        bounds = [
            ("score_mean", "c.score_mean >= ?", self.score_min),
            ("score_mean", "c.score_mean <= ?", self.score_max),
            (None, "s.spread >= ?", self.spread_min),
            ("n_tokens", "c.n_tokens >= ?", self.tokens_min),
            ("n_tokens", "c.n_tokens <= ?", self.tokens_max),
        ]
        return [bound for bound in bounds if bound[2] is not None]

    def where(self, tables: set[str], candidate_columns: set[str]) -> tuple[str, list]:
        """SQL conditions on `prompts`; a bound on a column the version's candidates lack raises ValueError."""
        conditions, params = [], []
        bounds = self.candidate_conditions()
        for column, _, _ in bounds:
            if column and column not in candidate_columns:
                raise ValueError(f"this version's candidates have no {column} column to filter on")
        if bounds:
            conditions.append(
                "prompt_id IN (SELECT c.prompt_id FROM candidates c LEFT JOIN "
                "(SELECT candidate_id, max(score) - min(score) AS spread FROM judgments GROUP BY candidate_id) s "
                "USING (candidate_id) WHERE " + " AND ".join(sql for _, sql, _ in bounds) + ")"
            )
            params += [value for _, _, value in bounds]
        if self.status == "paired" and "pairs" in tables:
            conditions.append("prompt_id IN (SELECT prompt_id FROM pairs)")
        elif self.status == "unpaired" and "pairs" in tables:
            conditions.append("prompt_id NOT IN (SELECT prompt_id FROM pairs)")
        elif self.status and "dropped" in tables:
            conditions.append("prompt_id IN (SELECT prompt_id FROM dropped WHERE reason = ?)")
            params.append(self.status)
        if self.text:
            conditions.append("prompt ILIKE ?")
            params.append(f"%{self.text}%")
        return ("WHERE " + " AND ".join(conditions)) if conditions else "", params

    def matches_candidate(self, candidate: dict) -> bool:
        """The same candidate conditions in Python, to mark which candidates of a shown prompt matched."""
        score, spread, tokens = candidate.get("score_mean"), candidate.get("spread"), candidate.get("n_tokens")
        checks = [
            (self.score_min, lambda: score is not None and score >= self.score_min),
            (self.score_max, lambda: score is not None and score <= self.score_max),
            (self.spread_min, lambda: spread is not None and spread >= self.spread_min),
            (self.tokens_min, lambda: tokens is not None and tokens >= self.tokens_min),
            (self.tokens_max, lambda: tokens is not None and tokens <= self.tokens_max),
        ]
        active = [check for bound, check in checks if bound is not None]
        return bool(active) and all(check() for check in active)


def _number(query, name: str, kind):
    text = query.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None


def can_browse_prompts(tables: set[str]) -> bool:
    return {"prompts", "candidates", "judgments"} <= tables


def status_options(connection: duckdb.DuckDBPyConnection, tables: set[str]) -> list[tuple[str, int]]:
    """(status, prompts with it): paired and unpaired, then every drop reason of a prompt in the prompts table."""
    options = []
    if "pairs" in tables:
        paired = scalar(connection, "SELECT count(DISTINCT prompt_id) FROM pairs")
        options += [("paired", paired), ("unpaired", scalar(connection, "SELECT count(*) FROM prompts") - paired)]
    if "dropped" in tables:
        options += [
            tuple(row) for row in connection.execute(
                "SELECT reason, count(DISTINCT prompt_id) FROM dropped WHERE prompt_id IN (SELECT prompt_id FROM prompts) "
                "GROUP BY reason ORDER BY reason"
            ).fetchall()
        ]
    return options


@dataclass
class PromptView:
    prompt_id: str
    prompt: str
    candidates: list[dict] = field(default_factory=list)  # each with its judgments, spread, mark and drops
    drops: list[dict] = field(default_factory=list)  # drops at the prompt level
    pair: dict | None = None


def prompt_page(connection: duckdb.DuckDBPyConnection, chosen: PromptFilter, number: int) -> Page:
    """Raises ValueError for a filter this version cannot answer."""
    tables = table_names(connection)
    where, params = chosen.where(tables, set(columns_of(connection, "candidates")))
    total = scalar(connection, f"SELECT count(*) FROM prompts {where}", params)
    heads = dicts(
        connection,
        f"SELECT prompt_id, prompt FROM prompts {where} ORDER BY prompt_id LIMIT ? OFFSET ?",
        [*params, PROMPTS_PER_PAGE, (number - 1) * PROMPTS_PER_PAGE],
    )
    return Page(prompt_views(connection, heads, tables, chosen), total, number, PROMPTS_PER_PAGE)


def prompt_views(connection: duckdb.DuckDBPyConnection, heads: list[dict], tables: set[str], chosen: PromptFilter) -> list[PromptView]:
    """The shown prompts' candidates, judgments, pair and drops: four queries for the whole page."""
    ids = [h["prompt_id"] for h in heads]
    views = {h["prompt_id"]: PromptView(h["prompt_id"], h["prompt"]) for h in heads}
    within = "WHERE prompt_id IN (SELECT unnest(?::VARCHAR[]))"
    candidates = dicts(connection, f"SELECT * FROM candidates {within} ORDER BY prompt_id, sample_index", [ids])
    judgments = dicts(
        connection,
        f"SELECT judgment_id, candidate_id, sample_index, score, rationale, raw, parse_error, finish_reason FROM judgments {within} "
        "ORDER BY candidate_id, sample_index",
        [ids],
    )
    pairs = dicts(connection, f"SELECT prompt_id, chosen_id, rejected_id, score_margin FROM pairs {within}", [ids]) if "pairs" in tables else []
    drops = dicts(connection, f"SELECT * FROM dropped {within}", [ids]) if "dropped" in tables else []
    by_candidate = {}
    for judgment in judgments:
        by_candidate.setdefault(judgment["candidate_id"], []).append(judgment)
    for pair in pairs:
        views[pair["prompt_id"]].pair = pair
    drops_of_candidate = {}
    for drop in drops:
        if drop.get("level") == "prompt" or not drop.get("candidate_id"):
            views[drop["prompt_id"]].drops.append(drop)
        else:
            drops_of_candidate.setdefault(drop["candidate_id"], []).append(drop)
    for candidate in candidates:
        view = views[candidate["prompt_id"]]
        own = by_candidate.get(candidate["candidate_id"], [])
        parsed = [j["score"] for j in own if j["score"] is not None]
        candidate |= {
            "judgments": own,
            "spread": max(parsed) - min(parsed) if parsed else None,
            "drops": drops_of_candidate.get(candidate["candidate_id"], []),
            "mark": _mark(candidate["candidate_id"], view.pair),
        }
        candidate["matched"] = chosen.matches_candidate(candidate)
        view.candidates.append(candidate)
    return [views[i] for i in ids]


def _mark(candidate_id: str, pair: dict | None) -> str | None:
    if pair and candidate_id == pair["chosen_id"]:
        return "chosen"
    if pair and candidate_id == pair["rejected_id"]:
        return "rejected"
    return None


# --- head-to-head verdicts


@dataclass(frozen=True)
class VerdictFilter:
    match: str = ""
    outcome: str = ""
    flipped: bool = False  # only pairs whose per-order verdicts disagree

    @classmethod
    def from_query(cls, query) -> "VerdictFilter":
        return cls(query.get("match", ""), query.get("outcome", ""), query.get("flipped", "") in ("1", "on", "true"))

    def where(self) -> tuple[str, list]:
        conditions, params = [], []
        if self.match:
            conditions.append('"match" = ?')
            params.append(self.match)
        if self.outcome:
            conditions.append("outcome = ?")
            params.append(self.outcome)
        if self.flipped:
            conditions.append("position_flip")
        return ("WHERE " + " AND ".join(conditions)) if conditions else "", params


def verdict_page(connection: duckdb.DuckDBPyConnection, chosen: VerdictFilter, number: int) -> Page:
    where, params = chosen.where()
    rows = dicts(
        connection,
        f'SELECT * FROM verdicts {where} ORDER BY "match", prompt_id LIMIT ? OFFSET ?',
        [*params, PROMPTS_PER_PAGE, (number - 1) * PROMPTS_PER_PAGE],
    )
    return Page(rows, scalar(connection, f"SELECT count(*) FROM verdicts {where}", params), number, PROMPTS_PER_PAGE)


def verdict_options(connection: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, int]]]:
    return {
        name: [tuple(row) for row in connection.execute(f'SELECT "{name}", count(*) FROM verdicts GROUP BY 1 ORDER BY 1').fetchall()]
        for name in ("match", "outcome")
    }


# --- figures: small aggregates for the charts


def score_histogram(connection: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    """Parsed judgment scores 0–5 (every score shown, zeros included), then the unparsed ones."""
    counts = dict(connection.execute("SELECT score, count(*) FROM judgments WHERE score IS NOT NULL GROUP BY score").fetchall())
    bars = [(f"{s:g}", counts.pop(float(s), 0)) for s in range(6)]
    bars += [(f"{s:g}", n) for s, n in sorted(counts.items())]  # a custom template's other scores
    return bars + [("unparsed", scalar(connection, "SELECT count(*) FROM judgments WHERE score IS NULL"))]


def spread_histogram(connection: duckdb.DuckDBPyConnection) -> list[tuple[str, int]]:
    """Candidates by the spread of their parsed scores (judge disagreement)."""
    rows = connection.execute(
        "SELECT max(score) - min(score) AS spread, count(*) FROM judgments WHERE score IS NOT NULL "
        "GROUP BY candidate_id HAVING count(*) >= 2"
    ).fetchall()
    counts = {}
    for spread, _ in rows:
        counts[spread] = counts.get(spread, 0) + 1
    return [(f"{s:g}", n) for s, n in sorted(counts.items())]


def length_bins(connection: duckdb.DuckDBPyConnection, bins: int = 12) -> tuple[list[str], dict[str, list[int]]]:
    """Chosen and rejected responses' lengths in tokens, on the same bins."""
    low, high = connection.execute(
        "SELECT min(least(chosen_tokens, rejected_tokens)), max(greatest(chosen_tokens, rejected_tokens)) FROM pairs"
    ).fetchone()
    if low is None:
        return [], {}
    width = _bin_width(low, high, bins)
    series = {}
    for side in ("chosen", "rejected"):
        counts = dict(connection.execute(f"SELECT ({side}_tokens - ?) // ?, count(*) FROM pairs GROUP BY 1", [low, width]).fetchall())
        series[side] = [counts.get(i, 0) for i in range((high - low) // width + 1)]
    return [_bin_label(low, i, width) for i in range((high - low) // width + 1)], series


def score_by_length(connection: duckdb.DuckDBPyConnection, bins: int = 10) -> list[tuple[str, float]]:
    """Mean candidate score per length bin (tokens): a rising line is length bias."""
    low, high = connection.execute("SELECT min(n_tokens), max(n_tokens) FROM candidates WHERE score_mean IS NOT NULL").fetchone()
    if low is None:
        return []
    width = _bin_width(low, high, bins)
    rows = connection.execute(
        "SELECT (n_tokens - ?) // ? AS bin, avg(score_mean) FROM candidates WHERE score_mean IS NOT NULL GROUP BY bin ORDER BY bin",
        [low, width],
    ).fetchall()
    return [(_bin_label(low, b, width), round(mean, 2)) for b, mean in rows]


def _bin_width(low: int, high: int, bins: int) -> int:
    return max(1, math.ceil((high - low + 1) / bins))


def _bin_label(low: int, index: int, width: int) -> str:
    start = low + index * width
    return str(start) if width == 1 else f"{start}–{start + width - 1}"


def outcome_counts(connection: duckdb.DuckDBPyConnection) -> tuple[list[str], dict[str, list[int]]]:
    """Per match: how many pairs ended in each outcome."""
    rows = connection.execute('SELECT "match", outcome, count(*) FROM verdicts GROUP BY 1, 2').fetchall()
    matches = sorted({m for m, _, _ in rows})
    found = {(m, o): n for m, o, n in rows}
    return matches, {o: [found.get((m, o), 0) for m in matches] for o in ("win", "tie", "loss", "unparsed")}
