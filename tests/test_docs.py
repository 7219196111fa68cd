"""The README and docs/ as a newcomer meets them: every link resolves, every command they name exists with the
flags they give it, every file they name is there, and the README fits a few screens."""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import re
import runpy
import shlex
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_CHARS = 12_000
OUR_PACKAGES = ("ivus_tf", "tfrecords_builder")

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\]\(([^()\s]+)\)")  # [text](target) and ![alt](target), also nested in [![..](..)](..)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
FLAG = re.compile(r"^\[*(--[a-z0-9][a-z0-9-]*)")
NAMED_FILE = re.compile(r"(?<![\w./-])((?:configs|bench|tools|tests|results)/[\w./-]*\w\.(?:yaml|py|md|jsonl|csv|png)"
                        r"|(?:ivus_tf|tfrecords_builder)/[\w/.-]*\w)")
DOTTED = re.compile(r"(?<![\w./-])((?:ivus_tf|tfrecords_builder)(?:\.\w+)+)")
SUBCOMMANDS = re.compile(r"(\{[\w,-]+\}|COMMAND) \.\.\.")  # argparse's usage of a subcommand positional
MAKE = re.compile(r"(?<![\w-])make ([a-z][a-z-]*)")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The page without fenced code blocks and HTML comments."""
    return COMMENT.sub("", FENCE.sub("", text))


def _code(text: str) -> list[str]:
    """Shell-like snippets: each fenced block's lines (backslash continuations joined) and each inline code span."""
    snippets = []
    for block in FENCE.findall(COMMENT.sub("", text)):
        body = block.split("\n", 1)[1].rsplit("```", 1)[0]
        snippets.extend(body.replace("\\\n", " ").splitlines())
    snippets.extend(span.replace("\n", " ") for span in INLINE_CODE.findall(_prose(text)))
    return snippets


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", _text(page))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def python_commands(snippet: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) of each `python -m MODULE ...` in a snippet, arguments up to a shell separator."""
    commands = []
    for match in re.finditer(r"(?:^|[\s(/])python3? -m ([\w.]+)(.*)", snippet):
        rest = re.split(r"\s(?:&&|\|\||;|\||>|#)\s|\s#|\)$", match.group(2) + " ")[0]
        try:
            args = shlex.split(rest)
        except ValueError:  # an unbalanced quote in prose: take the words as they are
            args = rest.split()
        commands.append((match.group(1), [arg for arg in args if arg not in ("...", "[...]")]))
    return commands


@functools.cache
def cli_help(module: str, subcommand: str | None = None) -> tuple[int, str]:
    """(exit status, output) of `python -m module [subcommand] --help`, run in this process."""
    argv = [module, *([subcommand] if subcommand else []), "--help"]
    out, saved = io.StringIO(), sys.argv
    sys.argv = argv
    try:
        with redirect_stdout(out), redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved
    return status, out.getvalue()


def subcommand_of(module: str, args: list[str]) -> str | None:
    """The first argument when `module` takes it as a subcommand (its own --help says `python -m module word`)."""
    if not args or args[0].startswith(("-", "[")):
        return None
    status, text = cli_help(module, args[0])
    return args[0] if status == 0 and f"python -m {module} {args[0]}" in text.split("\n\n")[0] else None


def all_commands() -> list[tuple[str, str, list[str]]]:
    return [(page.relative_to(ROOT).as_posix(), module, args)
            for page in PAGES for snippet in _code(_text(page)) for module, args in python_commands(snippet)]


def test_readme_fits_a_few_screens():
    size = len(_text(README))
    assert size < README_MAX_CHARS, f"README.md has {size} characters; move details to docs/ (limit {README_MAX_CHARS})"


def test_pages_found():
    names = {page.name for page in PAGES}
    assert {"README.md", "data.md", "training.md", "grid_and_report.md", "serving.md", "predict.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    dead = []
    for target in LINK.findall(_prose(_text(page))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            dead.append(f"{target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            dead.append(f"{target} (no heading #{fragment} in {resolved.name})")
    assert not dead, f"{page.name}: dead links: {'; '.join(dead)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_files_exist(page):
    text = _text(page)
    named = set(NAMED_FILE.findall("\n".join(_code(text)))) | set(NAMED_FILE.findall(_prose(text)))
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, f"{page.name} names files that do not exist: {', '.join(missing)}"


@functools.cache
def top_level_names(path: str) -> frozenset:
    """Names a module's source defines or imports at top level, plus its `__all__` (lazy attributes)."""
    names = set()
    for node in ast.parse(Path(path).read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                if isinstance(target, ast.Name) and target.id == "__all__" and node.value is not None:
                    names.update(ast.literal_eval(node.value))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


def dotted_name_exists(name: str) -> bool:
    """`ivus_tf.core.errors.InputError`: the longest module prefix exists and defines the next part."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:i]))
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            break
    else:
        return False
    if i == len(parts):
        return True
    return spec.origin is not None and parts[i] in top_level_names(spec.origin)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_modules_exist(page):
    missing = sorted({name for name in DOTTED.findall(_text(page)) if not dotted_name_exists(name)})
    assert not missing, f"{page.name} names modules or attributes that do not exist: {', '.join(missing)}"


def test_make_targets_exist():
    makefile = _text(ROOT / "Makefile")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set(MAKE.findall(_text(README)))
    assert named, "the README names no make target"
    assert named <= targets, f"README.md names make targets the Makefile lacks: {sorted(named - targets)}"


def test_python_commands_exist_with_their_flags():
    commands = all_commands()
    assert len(commands) > 30, "the docs should show the commands they describe"
    problems = []
    for page, module, args in commands:
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            problems.append(f"{page}: python -m {module}: no such module")
            continue
        if not module.startswith(OUR_PACKAGES):
            continue
        status, text = cli_help(module)
        if status != 0 or "usage:" not in text:
            problems.append(f"{page}: python -m {module}: no command-line interface (--help exits {status})")
            continue
        subcommand = subcommand_of(module, args)
        if subcommand:
            text = cli_help(module, subcommand)[1]
        elif SUBCOMMANDS.search(text.split("\n\n")[0]):
            if args and not args[0].startswith(("-", "[")):
                problems.append(f"{page}: python -m {module} {args[0]}: no such subcommand")
                continue
        for arg in args:
            flag = FLAG.match(arg)
            if flag and not re.search(rf"(?<![\w-]){re.escape(flag.group(1))}(?![\w-])", text):
                problems.append(f"{page}: python -m {module}{' ' + subcommand if subcommand else ''}: "
                                f"no option {flag.group(1)}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_checks_catch_what_they_should(tmp_path):
    """The helpers find a wrong flag, a wrong subcommand and a dead anchor (so the tests above can fail)."""
    assert python_commands("python -m ivus_tf.train --scheme x && ls") == [("ivus_tf.train", ["--scheme", "x"])]
    assert python_commands(".venv/bin/python -m ivus_tf.export RUN --out D  # note")[0][1] == ["RUN", "--out", "D"]
    assert subcommand_of("tfrecords_builder", ["phantom", "--out", "x"]) == "phantom"
    assert subcommand_of("tfrecords_builder", ["phantasm"]) is None
    assert subcommand_of("ivus_tf.report", ["runs/paper"]) is None
    assert "--no-such-flag" not in cli_help("ivus_tf.train")[1] and "--scheme" in cli_help("ivus_tf.train")[1]
    assert slug("Clean masks (`ivus_tf/postprocess.py`)") == "clean-masks-ivus_tfpostprocesspy"
    assert slug("Used by `python -m ivus_tf.predict`") == "used-by-python--m-ivus_tfpredict"
    assert dotted_name_exists("ivus_tf.core.errors.InputError") and dotted_name_exists("ivus_tf.export.load_exported")
    assert not dotted_name_exists("ivus_tf.errors") and not dotted_name_exists("ivus_tf.metrics.no_such_function")
    page = tmp_path / "p.md"
    page.write_text("# A title\n\n## A title\n\n```\n# not a heading\n```\n", encoding="utf-8")
    assert anchors(page) == {"a-title", "a-title-1"}
