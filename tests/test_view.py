"""`builder view` on a store with every kind of version, made with the tiny model: in-process HTTP tests of the
pages and filters against the tables themselves, and a real browser (headless Chromium through Playwright)
against the real server process on 127.0.0.1. Browsing must leave every file of the store as it was."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import duckdb
import markupsafe
import polars as pl
import pytest
from conftest import run_builder
from view_store import build_every_kind

pytest.importorskip("starlette", reason="builder view needs the view extra: pip install -e '.[view]'")
from starlette.testclient import TestClient

from builder.app.view import data
from builder.app.view.app import create_app
from builder.core.store import Store


@pytest.fixture(scope="module")
def every_kind(tiny_model, two_versions, tmp_path_factory):
    pairs_store, _, child = two_versions
    folder = tmp_path_factory.mktemp("view")
    ids = build_every_kind(tiny_model, pairs_store, child, folder)
    return folder / "store", ids


@pytest.fixture(scope="module")
def client(every_kind):
    return TestClient(create_app(Store(every_kind[0])))


def fingerprint(root) -> dict[str, str]:
    """Every file under the store (cache and models included) by its content hash."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def table(store, version: str, name: str) -> pl.DataFrame:
    return pl.read_parquet(store / version / f"{name}.parquet")


def every_url(store) -> list[str]:
    urls = ["/", "/models", "/?kind=pairs"]
    for version in Store(store).versions():
        base = f"/v/{version.id}"
        urls += [base, f"{base}/manifest"]
        tables = [n.removesuffix(".parquet") for n in version.manifest.files if n.endswith(".parquet")]
        urls += [f"{base}/t/{t}" for t in tables] + [f"{base}/t/{t}?sort={'prompt_id'}&desc=1&page=2" for t in tables]
        urls += [f"{base}/file/{n}" for n in version.manifest.files if n.endswith(".png")]
        if {"prompts", "candidates", "judgments"} <= set(tables):
            urls += [f"{base}/prompts", f"{base}/prompts?spread_min=0&status=dropped_reason&q=a&page=2"]
        if version.manifest.kind == "pairs":
            urls += [f"{base}/prompts?score_min=1&score_max=5&spread_min=0&tokens_min=0&tokens_max=100&status=paired&q=a&page=1"]
        if "verdicts" in tables:
            urls += [f"{base}/verdicts", f"{base}/verdicts?outcome=unparsed&flipped=1"]
    return urls


def test_every_page_of_every_kind_loads_and_the_store_is_unchanged(every_kind, client):
    store, ids = every_kind
    kinds = {v.manifest.kind for v in Store(store).versions()}
    assert kinds == {"pairs", "seed", "eft", "sft", "prompts", "rm", "h2h"}
    before = fingerprint(store)
    for url in every_url(store):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:500])
    assert client.get("/v/pairs-nosuchversion").status_code == 404
    assert client.get(f"/v/{ids['pairs']}/t/no_such_table").status_code == 404
    assert client.get(f"/v/{ids['pairs']}/file/manifest.json").status_code == 404
    assert client.get(f"/v/{ids['seed']}/prompts").status_code == 404
    assert fingerprint(store) == before, "browsing changed or created files in the store"


def test_versions_list_links_lineage_and_counts(every_kind, client):
    store, ids = every_kind
    page = client.get("/").text
    parent = Store(store).load(ids["pairs"]).manifest.parent
    row = re.search(rf'<tr>\s*<td><a class="id" href="/v/{ids["pairs"]}">.*?</tr>', page, re.DOTALL).group(0)
    assert f'href="/v/{parent}"' in row and "candidates <b>24</b>" in row
    assert f'href="/v/{ids["pairs"]}"' in re.search(rf'<tr>\s*<td><a class="id" href="/v/{parent}">.*?</tr>', page, re.DOTALL).group(0)
    assert client.get("/?kind=h2h").text.count('<span class="kind">') == 1
    models = client.get("/models").text
    assert re.search(r"M1</a> → <a[^>]*>M2</a>", models) and f'href="/v/{ids["sft"]}"' in models and f'href="/v/{ids["pairs"]}"' in models


def test_pairs_page_shows_candidates_side_by_side_with_every_judgment_and_the_marks(every_kind, client):
    store, ids = every_kind
    version = ids["pairs"]
    page = client.get(f"/v/{version}/prompts").text
    prompts, candidates, judgments, pairs = (table(store, version, n) for n in ("prompts", "candidates", "judgments", "pairs"))
    assert page.count('class="prompt"') == prompts.height
    assert page.count("data-candidate-id=") == candidates.height
    assert len(re.findall(r'<span class="badge chosen">chosen</span>', page)) == pairs.height
    assert len(re.findall(r'<span class="badge rejected">rejected</span>', page)) == pairs.height
    for pair in pairs.iter_rows(named=True):
        assert re.search(rf'class="candidate chosen[^"]*" data-candidate-id="{re.escape(pair["chosen_id"])}"', page)
        assert re.search(rf'class="candidate rejected[^"]*" data-candidate-id="{re.escape(pair["rejected_id"])}"', page)
    for judgment in judgments.iter_rows(named=True):  # every rationale, raw judgment and score is on the page
        assert str(markupsafe.escape(judgment["raw"])) in page
        if judgment["score"] is not None:
            assert f"Score {judgment['score']:g}</span>" in page
    # drop reasons, on the version with drops
    dropped = table(store, ids["pairs_drops"], "dropped")
    with_drops = client.get(f"/v/{ids['pairs_drops']}/prompts").text
    for reason in set(dropped.filter(pl.col("level") != "prompt")["reason"]) | {"duplicate_prompt"}:
        assert reason in with_drops


def matching_count(client, version: str, **params) -> int:
    response = client.get(f"/v/{version}/prompts", params=params)
    assert response.status_code == 200, response.text
    return int(re.search(r'<p id="count"><b>(\d+)</b>', response.text).group(1))


def test_prompt_filters_select_what_the_tables_say(every_kind, client):
    store, ids = every_kind
    version = ids["pairs"]
    candidates, judgments = table(store, version, "candidates"), table(store, version, "judgments")
    spreads = judgments.group_by("candidate_id").agg((pl.col("score").max() - pl.col("score").min()).alias("spread"))
    scored = candidates.join(spreads, on="candidate_id", how="left")

    def prompts_where(condition) -> int:
        return scored.filter(condition)["prompt_id"].n_unique()

    assert matching_count(client, version) == table(store, version, "prompts").height
    assert matching_count(client, version, score_min="3.5") == prompts_where(pl.col("score_mean") >= 3.5)
    assert matching_count(client, version, score_max="2") == prompts_where(pl.col("score_mean") <= 2)
    assert matching_count(client, version, spread_min="3") == prompts_where(pl.col("spread") >= 3)
    assert matching_count(client, version, tokens_min="6") == prompts_where(pl.col("n_tokens") >= 6)
    both = (pl.col("score_mean") >= 3) & (pl.col("n_tokens") <= 5)
    assert matching_count(client, version, score_min="3", tokens_max="5") == prompts_where(both)
    assert matching_count(client, version, status="paired") == table(store, version, "pairs").height
    assert matching_count(client, version, q="number 3") == 1
    # the candidates that met the filter are outlined
    shown = client.get(f"/v/{version}/prompts", params={"score_min": "3.5"}).text
    assert shown.count(" matched\"") == scored.filter(pl.col("score_mean") >= 3.5).height
    # drop reasons, recorded at any level
    drops = ids["pairs_drops"]
    dropped = table(store, drops, "dropped")
    for reason in dropped["reason"].unique():
        kept = set(table(store, drops, "prompts")["prompt_id"])
        assert matching_count(client, drops, status=reason) == len(set(dropped.filter(pl.col("reason") == reason)["prompt_id"]) & kept)
    bad = client.get(f"/v/{version}/prompts", params={"score_min": "high"})
    assert bad.status_code == 400 and "score_min must be a number" in bad.text
    unknown = client.get(f"/v/{ids['eft']}/prompts", params={"tokens_max": "5"})  # EFT candidates have no token counts
    assert unknown.status_code == 400 and "no n_tokens column" in unknown.text


def test_prompts_are_paginated_and_pages_cover_every_prompt_once(every_kind, client, monkeypatch):
    store, ids = every_kind
    monkeypatch.setattr(data, "PROMPTS_PER_PAGE", 4)
    seen = []
    for number in (1, 2):
        page = client.get(f"/v/{ids['pairs']}/prompts", params={"page": number}).text
        assert f"page {number} of 2" in page
        seen += re.findall(r'<section class="prompt" data-prompt-id="([^"]+)"', page)
    assert seen == sorted(table(store, ids["pairs"], "prompts")["prompt_id"])


def test_verdicts_show_both_orders_and_the_outcome(every_kind, client):
    store, ids = every_kind
    verdicts = table(store, ids["h2h"], "verdicts")
    page = client.get(f"/v/{ids['h2h']}/verdicts").text
    assert page.count('class="prompt verdict"') == verdicts.height
    for row in verdicts.iter_rows(named=True):
        assert str(markupsafe.escape(row["raw_ab"])) in page and str(markupsafe.escape(row["raw_ba"])) in page
        assert f'<span class="badge {row["outcome"]}">{row["outcome"]}</span>' in page
    outcome = verdicts["outcome"][0]
    filtered = client.get(f"/v/{ids['h2h']}/verdicts", params={"outcome": outcome}).text
    assert f"<b>{(verdicts['outcome'] == outcome).sum()}</b> pair" in filtered
    assert "<b>0</b> pairs match" in client.get(f"/v/{ids['h2h']}/verdicts", params={"outcome": "no-such-outcome"}).text


def test_version_pages_carry_the_health_figures_as_inline_svg(every_kind, client):
    _, ids = every_kind
    pairs = client.get(f"/v/{ids['pairs']}").text
    for title in ("judgment scores", "judge disagreement", "mean score by response length", "chosen and rejected lengths"):
        assert re.search(rf"<svg [^>]*><title>{title}", pairs), title
    assert "<script" not in pairs and "http://" not in pairs.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<svg" in client.get(f"/v/{ids['h2h']}").text and "<svg" in client.get(f"/v/{ids['rm']}").text


def test_generic_table_view_sorts_and_pages(every_kind, client):
    store, ids = every_kind
    judgments = table(store, ids["pairs"], "judgments")
    page = client.get(f"/v/{ids['pairs']}/t/judgments", params={"sort": "judgment_id", "desc": "1"}).text
    rows = re.findall(r"<tr><td>([^<]+)</td>", page)
    assert rows == sorted(judgments["judgment_id"], reverse=True)[: data.ROWS_PER_PAGE]
    assert f"page 1 of {-(-judgments.height // data.ROWS_PER_PAGE)}" in page


def test_the_connection_reads_only_the_versions_files_and_writes_nothing(every_kind):
    store, ids = every_kind
    version = Store(store).load(ids["pairs"])
    connection = data.open_tables(version)
    assert connection.execute("SELECT count(*) FROM pairs").fetchone()[0] == version.manifest.counts["pairs"]
    other = Store(store).load(ids["h2h"]).folder / "verdicts.parquet"
    for statement in (
        f"COPY (SELECT 1) TO '{version.folder / 'x.parquet'}'",
        f"SELECT * FROM read_parquet('{other}')",
        "SET enable_external_access = true",
        f"ATTACH '{store / 'x.duckdb'}'",
    ):
        with pytest.raises(duckdb.Error):
            connection.execute(statement)
    assert not (version.folder / "x.parquet").exists() and not (store / "x.duckdb").exists()


def test_view_refuses_a_taken_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = run_builder("view", "--store", tmp_path, "--port", taken.getsockname()[1], timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "cannot listen on 127.0.0.1:" in result.stderr


# --- a real browser against the real server


def chromium() -> str | None:
    return os.environ.get("BUILDER_CHROMIUM") or next(
        (found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable") if (found := shutil.which(name))), None
    )


@pytest.fixture(scope="module")
def server(every_kind):
    """`builder view --port 0` as a user runs it; stopped with Ctrl-C (SIGINT), which must end it cleanly."""
    store, _ = every_kind
    process = subprocess.Popen(
        [sys.executable, "-c", "from builder.app.cli import main; main()", "view", "--store", str(store), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        process.kill()
        pytest.fail(f"no URL from builder view: {line!r} {process.stderr.read()}")
    before = fingerprint(store)
    yield match.group(0).rstrip("/")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    assert fingerprint(store) == before, "the server changed or created files in the store"


@pytest.fixture(scope="module")
def browser():
    """Skips where no browser is installed, except in CI (CI=true), where the browser tests must run."""
    executable = chromium()
    missing = "no chromium found (apt-get install chromium, or set BUILDER_CHROMIUM)" if executable is None else None
    try:
        from playwright import sync_api
    except ImportError:
        missing = missing or "playwright is not installed (pip install -e '.[test]')"
    if missing:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(missing)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


def test_pages_load_in_a_real_browser_and_a_filter_works(every_kind, server, browser, tmp_path_factory):
    store, ids = every_kind
    shots = tmp_path_factory.mktemp("screenshots")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    pages = {
        "versions": ("/", "versions"),
        "models": ("/models", "registered models"),
        "pairs": (f"/v/{ids['pairs']}", ids["pairs"]),
        "prompts": (f"/v/{ids['pairs']}/prompts", "prompts"),
        "drops": (f"/v/{ids['pairs_drops']}/prompts", "prompts"),
        "h2h": (f"/v/{ids['h2h']}", ids["h2h"]),
        "verdicts": (f"/v/{ids['h2h']}/verdicts", "verdicts"),
        "rm": (f"/v/{ids['rm']}", ids["rm"]),
        "table": (f"/v/{ids['pairs']}/t/judgments", "judgments"),
        **{kind: (f"/v/{ids[kind]}", ids[kind]) for kind in ("seed", "eft", "sft", "prompts")},
    }
    for name, (path, heading) in pages.items():
        response = page.goto(server + path)
        assert response.status == 200, path
        assert heading in page.inner_text("h1"), (path, page.inner_text("h1"))
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    # the lineage link from the child pairs version to its parent works
    page.goto(server + "/")
    parent = Store(store).load(ids["pairs"]).manifest.parent
    page.locator(f'a[href="/v/{parent}"]').first.click()
    page.wait_for_url(f"**/v/{parent}")
    # a filter through the form, as a user sets it
    candidates = table(store, ids["pairs"], "candidates")
    expected = candidates.filter(pl.col("score_mean") >= 3.5)["prompt_id"].n_unique()
    page.goto(server + f"/v/{ids['pairs']}/prompts")
    page.fill('input[name="score_min"]', "3.5")
    page.click('button[type="submit"]')
    page.wait_for_url("**score_min=3.5**")
    assert page.inner_text("#count").startswith(f"{expected} prompt")
    assert page.locator(".candidate.matched").count() == candidates.filter(pl.col("score_mean") >= 3.5).height
    page.screenshot(path=shots / "prompts-filtered.png", full_page=True)
    page.select_option('select[name="status"]', "paired")
    page.click('button[type="submit"]')
    page.wait_for_url("**status=paired**")
    paired = set(table(store, ids["pairs"], "pairs")["prompt_id"])
    both = set(candidates.filter(pl.col("score_mean") >= 3.5)["prompt_id"]) & paired
    assert page.locator("section.prompt").count() == len(both)
    assert not errors
    assert all(url.startswith(server) for url in requested), "the pages asked for something outside the local server"
    assert len(list(shots.glob("*.png"))) == len(pages) + 1
