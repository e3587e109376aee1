"""The shape of the code: imports flow one way (no circles, gpt2core never imports tasks), gpt2core and the
suite's Python name no task, and no module grows past the size a reader takes in."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("gpt2core", "tasks")
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module of ours that `path` imports, anywhere in the file (inside functions too)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            # the deepest module of ours that the name points into
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in known:
                    if candidate != module:
                        found.add(candidate)
                    break
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(p, m, known) for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None. A package's __init__ importing its own submodules is
    not counted as the submodules importing the package (Python resolves those without a cycle)."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def edges(m: str) -> set[str]:
        # a submodule importing its parent package only reaches the package's __init__: keep that edge, but
        # the package __init__'s edges to its own children are what re-exports are made of; drop child->parent.
        return {d for d in graph[m] if not m.startswith(d + ".")}

    def visit(m: str) -> list[str] | None:
        color[m] = 1
        stack.append(m)
        for d in sorted(edges(m)):
            if color.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in color:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[m] = 2
        return None

    for m in sorted(graph):
        if m not in color:
            found = visit(m)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tasks.data import registry\n    import gpt2core.io\n")
    known = {"tasks.data.registry", "tasks.data", "gpt2core.io"}
    assert _imports(f, "x.m", known) == {"tasks.data", "tasks.data.registry", "gpt2core.io"}


def test_no_import_circles():
    cycle = _cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_gpt2core_never_imports_tasks():
    bad = {m: sorted(d for d in deps if d.startswith("tasks")) for m, deps in import_graph().items()
           if m.startswith("gpt2core")}
    assert not {m: d for m, d in bad.items() if d}


def _task_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "tasks" / "specs").glob("*.yaml"))


def _code_words(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every identifier and every string literal that is not a docstring: what the code does,
    not what its comments and docstrings cite (they may name the dataset a reference implementation came from)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                docstrings.add(id(body[0].value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            out.append((node.lineno, node.arg))
        elif isinstance(node, ast.alias):
            out.append((node.lineno, node.asname or node.name))
    return out


def test_no_task_name_in_python():
    names = _task_names()
    assert "sst2" in names  # the specs are where task names live
    words = names + [n.replace("-", "_") for n in names] + ["bbc", "multi30k", "scitldr", "wikitext"]
    pattern = re.compile("|".join(re.escape(n) for n in sorted(set(words))), re.I)
    hits = []
    for m, path in _modules().items():
        for lineno, text in _code_words(path):
            if pattern.search(text):
                hits.append(f"{path.relative_to(REPO)}:{lineno}: {text[:80]!r}")
    assert not hits, "task names in Python code:\n" + "\n".join(hits)


def test_the_name_check_sees_strings_and_names_but_not_docstrings(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""About sst2."""\n# sst2 here\nX = "trec"\ndef squad_f1(): pass\n')
    assert [t for _, t in _code_words(f)] .count("trec") == 1
    assert "squad_f1" in [t for _, t in _code_words(f)]
    assert not any("sst2" in t for _, t in _code_words(f))


def test_no_kind_tests_outside_the_kinds():
    # task kinds (spec.kind / task.kind) are classes that own their behaviour; a leaderboard cell's own kind
    # (baseline, fewshot, ...) is not a task kind
    pattern = re.compile(r"\b(spec|task|task_spec)\.kind\s*(==|!=|in\b|not in\b)|\bkind\s*==\s*['\"](classification|qa|extractive_qa|generation|conditional_generation|language_modelling)")
    hits = []
    for m, path in _modules().items():
        if m.startswith("tasks.kinds") or not m.startswith("tasks"):
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not hits, "task-kind tests outside tasks/kinds:\n" + "\n".join(hits)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_size(module):
    n = len(_modules()[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines (over {MAX_LINES}): split it by job"
