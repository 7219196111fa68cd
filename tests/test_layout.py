"""The package's shape: a TensorFlow-free core, no module cycle, `tfrecords_builder` importing only `ivus_tf.core`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ivus_tf", "tfrecords_builder")


def module_files() -> dict[str, Path]:
    """{dotted module name: file} of both packages (a package is named by its `__init__.py`)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(with_packages: bool = False) -> dict[str, set[str]]:
    """{module: modules of both packages it imports}, function-level (lazy) imports included: a lazy import is a
    dependency too. `from pkg import name` points at `pkg.name` when that is a module, else at `pkg`.
    `with_packages`: importing `a.b.c` also runs the `__init__` of `a` and `a.b`, so those count as imported too
    (except the packages the importing module itself belongs to, which are initialised before it)."""
    modules = module_files()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
                while with_packages and "." in target:
                    target = target.rpartition(".")[0]
                    if not name.startswith(f"{target}."):
                        graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_and_cycles():
    graph = import_graph()
    assert "ivus_tf.core.errors" in graph["tfrecords_builder.index"]
    assert "ivus_tf.models.deeplabv3" in graph["ivus_tf.models.build"]  # from ivus_tf.models import deeplabv3
    assert "tfrecords_builder.index" in graph["ivus_tf.splits"]  # a function-level import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    packaged = import_graph(with_packages=True)["tfrecords_builder.writer"]
    assert {"ivus_tf", "ivus_tf.core", "ivus_tf.core.atomic"} <= packaged and "tfrecords_builder" not in packaged


def test_no_module_imports_itself_back():
    assert cycles(import_graph(with_packages=True)) == []  # a package's __init__ importing its module counts


def test_builder_and_core_import_nothing_else_from_ivus_tf():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("tfrecords_builder") or name.startswith("ivus_tf.core"):
            outside = sorted(t for t in targets if t.startswith("ivus_tf") and not t.startswith("ivus_tf.core"))
            assert outside == [], f"{name} imports {outside}"
        if name.startswith("ivus_tf.core"):
            assert not any(t.startswith("tfrecords_builder") for t in targets), name


def test_core_and_builder_import_without_tensorflow():
    code = ("import sys, ivus_tf, ivus_tf.core, tfrecords_builder\n"
            "import ivus_tf.core.atomic, ivus_tf.core.config, ivus_tf.core.errors, ivus_tf.core.progress\n"
            "import ivus_tf.core.tf_import, ivus_tf.core.version, ivus_tf.core.vocab\n"
            "import tfrecords_builder.build, tfrecords_builder.cli, tfrecords_builder.miccai2011\n"
            "import tfrecords_builder.phantom.cli, tfrecords_builder.writer, tfrecords_builder.features\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "print(heavy[:3])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
