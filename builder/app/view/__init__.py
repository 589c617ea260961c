"""`builder view`: a local, read-only web viewer of the store (Starlette + Jinja2, DuckDB underneath)."""
