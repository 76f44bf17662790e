"""Config is not ambient: below the edges, ``core`` receives its ``Lake`` and ``Settings``.

Only the edges resolve them from the environment and ``lakeops.toml``: the CLI, the serving factory
and ``core.connect`` (notebooks) inside ``core``; ``jobs/``, ``pages/`` and ``app.py`` outside it.
This walks ``core/`` with ``ast`` and fails on a ``load_settings()`` call (or a call of the old
``core.lake.resolve``) in any other function, and on a ``lake``/``settings`` parameter that may be
None (a None that would be filled from the environment). The allow-lists name functions, not
modules, so an edge module cannot hide a non-edge function beside its edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (module path under the repository, function): the only places in core that resolve config
EDGES = {
    ("core/__init__.py", "connect"),  # notebooks and scripts: lake, settings = core.connect()
    ("core/cli/_common.py", "_loaded"),  # the CLI: --lake / --config, once per command
    ("core/serving/app.py", "create_app"),  # the serving factory (uvicorn calls it with no arguments)
}

# (module, function, parameter) whose None means something other than "read the environment"
OPTIONAL_OK = {
    ("core/tracking/_writer.py", "flush", "lake"),  # None: flush the buffers of every lake this process wrote
    ("core/serving/app.py", "create_app", "lake"),  # the edge: None opens the lake of its settings
    ("core/serving/app.py", "create_app", "settings"),  # the edge: None loads them (uvicorn's factory call)
    ("core/simulate.py", "simulate", "settings"),  # only a feature-view champion needs them; refused without
    ("core/simulate.py", "_usage_for_views", "settings"),  # ... and refused here, never guessed
}

_RESOLVERS = {("core.config", "load_settings"), ("core.lake", "resolve")}


def _enclosing(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node -> the name of its innermost enclosing function ('' at module level)."""
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            here = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else name
            owner[child] = here
            visit(child, here)

    visit(tree, "")
    return owner


def _resolver_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound to a resolver function, and names bound to a module holding one (any import form)."""
    funcs, modules = set(), {"core.config", "core.lake"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if (node.module, a.name) in _RESOLVERS:
                    funcs.add(a.asname or a.name)
                if f"{node.module}.{a.name}" in {m for m, _ in _RESOLVERS}:
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in {m for m, _ in _RESOLVERS} and a.asname:
                    modules.add(a.asname)
    return funcs, modules


def ambient_calls(root: Path) -> list[str]:
    """``path:line function: call`` for every config-resolving call in ``root/core`` outside ``EDGES``."""
    found: list[tuple[str, int, str]] = []
    for path in sorted((root / "core").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owner = _enclosing(tree)
        funcs, modules = _resolver_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            hit = (isinstance(f, ast.Name) and f.id in funcs) or (
                isinstance(f, ast.Attribute)
                and (f.attr == "load_settings" or (f.attr == "resolve" and ast.unparse(f.value) in modules))
            )
            if hit and (rel, owner.get(node, "")) not in EDGES:
                found.append((rel, node.lineno, f"{rel}:{node.lineno} {owner.get(node, '') or '<module>'}: {ast.unparse(f)}()"))
    return [text for *_, text in sorted(found)]


def optional_context(root: Path) -> list[str]:
    """``path:line function(param)`` for every ``lake``/``settings`` parameter that may be None, outside ``OPTIONAL_OK``."""
    found = []
    for path in sorted((root / "core").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs:
                if arg.arg not in ("lake", "settings") or arg.annotation is None:
                    continue
                text = ast.unparse(arg.annotation)
                if ("None" in text or "Optional" in text) and (rel, node.name, arg.arg) not in OPTIONAL_OK:
                    found.append(f"{rel}:{node.lineno} {node.name}({arg.arg}: {text})")
    return found


def test_no_function_below_the_edges_resolves_config():
    assert ambient_calls(ROOT) == []


def test_lake_and_settings_parameters_are_required_below_the_edges():
    assert optional_context(ROOT) == []


def test_the_allow_lists_name_functions_that_exist():
    """An entry for a function renamed or removed would silently allow its successor: none is stale."""
    for rel, func, *_ in EDGES | OPTIONAL_OK:
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in ast.walk(tree)), (rel, func)


def test_the_check_can_fail(tmp_path):
    """Each import form of a resolver is caught below the edges; an edge module's other functions are not spared."""
    flows = tmp_path / "core" / "flows"
    flows.mkdir(parents=True)
    (flows / "bad.py").write_text(
        "import core.lake as L\n"
        "from core import config as c\n"
        "from core.config import load_settings as ls\n"
        "from core.lake import Lake\n\n\n"
        "def direct():\n    return ls()\n\n\n"
        "def via_module():\n    return c.load_settings().actor\n\n\n"
        "def old_default(lake: Lake | None = None):\n    return L.resolve(lake)\n\n\n"
        "def fine(lake: Lake, path):\n    return path.resolve()\n"
    )
    cli = tmp_path / "core" / "cli"
    cli.mkdir()
    (cli / "_common.py").write_text(
        "from core.config import load_settings\n\n\n"
        "def _loaded(args):\n    return load_settings()\n\n\n"
        "def sneaky():\n    return load_settings()\n"
    )
    assert ambient_calls(tmp_path) == [
        "core/cli/_common.py:9 sneaky: load_settings()",
        "core/flows/bad.py:8 direct: ls()",
        "core/flows/bad.py:12 via_module: c.load_settings()",
        "core/flows/bad.py:16 old_default: L.resolve()",
    ]
    assert optional_context(tmp_path) == ["core/flows/bad.py:15 old_default(lake: Lake | None)"]


def test_connect_is_the_notebook_edge(tmp_path, monkeypatch):
    """``core.connect`` reads the environment once per call and opens each lake once per process."""
    import core

    monkeypatch.chdir(tmp_path)  # no ./lakeops.toml
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    monkeypatch.setenv("LAKEOPS_LAKE", str(tmp_path / "env-lake"))
    lake, settings = core.connect(actor="ana")
    assert (lake.uri, settings.lake_uri, settings.actor) == (str(tmp_path / "env-lake"), str(tmp_path / "env-lake"), "ana")
    assert core.connect()[0] is lake  # the same handle: an s3:// root's write probe is not repeated
    other, other_settings = core.connect(str(tmp_path / "other"))
    assert other is not lake and other.uri == other_settings.lake_uri == str(tmp_path / "other")
    (tmp_path / "team.toml").write_text('[lake]\nuri = "ignored-by-env"\n[datasets]\nmax_file_mb = 7\n')
    assert core.connect(config=tmp_path / "team.toml")[1].section("datasets") == {"max_file_mb": 7}
