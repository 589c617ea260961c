"""The architecture, enforced: imports run one way, core ← engines ← judging ← stages ← evaluators/trainers ← app,
with no import cycle, and one place computes a version id. Read from the source with ast, so imports inside
functions count too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {  # package prefix → rank; a module may import its own rank (same package) or lower
    "builder.core": 0,
    "builder.engines": 1,
    "builder.judging": 2,
    "builder.stages": 3,
    "evaluators": 4,
    "trainers": 4,
    "builder.app": 5,
    "builder": 5,  # builder/__init__.py and __main__.py: the entry point
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def project_modules() -> dict[str, Path]:
    return {module_name(f): f for package in ("builder", "evaluators", "trainers") for f in (ROOT / package).rglob("*.py")}


def layer_of(module: str) -> str:
    return max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)


def imports(path: Path, known: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(path, set(modules)) - {name} for name, path in modules.items()}


def test_imports_run_one_way():
    upward = []
    for module, targets in import_graph().items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if target in ("builder",):  # the package itself (its version and location) is below everything
                continue
            same_rank_other_package = LAYERS[theirs] == LAYERS[mine] and theirs != mine and "builder" not in (mine, theirs)
            if LAYERS[theirs] > LAYERS[mine] or same_rank_other_package:
                upward.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = import_graph()
    done, on_path, cycles = set(), [], []

    def visit(module):
        if module in on_path:
            cycles.append(on_path[on_path.index(module):] + [module])
            return
        if module in done:
            return
        on_path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        on_path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not cycles, "\n".join(" → ".join(cycle) for cycle in cycles)


def calls_of(name: str) -> list[str]:
    return [
        module
        for module, path in project_modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def test_one_seam_names_and_writes_versions():
    """Every stage goes through builder.core.stage.build_version, which alone asks for a new version's id
    and writes it (a download is installed by the store's add_copy, not built)."""
    assert set(calls_of("expected_id")) == {"builder.core.stage"}, calls_of("expected_id")
    assert set(calls_of("write_version")) == {"builder.core.stage"}, calls_of("write_version")
    assert len(calls_of("version_id")) <= 1
