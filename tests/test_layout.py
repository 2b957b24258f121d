"""Layout rules for the package source, checked on the syntax tree of every module under stream_relu/.

(a) A function or method holds at most MAX_LINES lines of code: physical lines
    with a token other than a comment or layout (NL, NEWLINE, INDENT, DEDENT),
    between its ``def`` and its last line, its docstring not counted.  A
    nested function counts inside its parent too (each ``def`` is measured
    whole).
(b) No function returns an anonymous tuple of more than MAX_TUPLE items
    (``return a, b, c``): return a named tuple or a dataclass instead.
"""

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stream_relu"
MAX_LINES = 60
MAX_TUPLE = 2

# Functions exempt from rule (a), by "path relative to the repository root:qualified name".
LONG_FUNCTION_ALLOWLIST = {
    "stream_relu/cli.py:build_parser": "argument parsers are data tables: one add_argument line per option",
}

_LAYOUT_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def code_lines(source):
    """The set of physical line numbers that hold a token other than comments and layout."""
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _LAYOUT_TOKENS:
            lines.update(range(tok.start[0], tok.end[0] + 1))  # a multi-line string covers its lines
    return lines


def _functions(tree):
    """Yield ``(qualified_name, node)`` for every function and method, nested ones included."""

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, _FUNCTIONS):
                name = prefix + child.name
                yield name, child
                yield from walk(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, prefix + child.name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _docstring_lines(node):
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            return set(range(body[0].lineno, body[0].end_lineno + 1))
    return set()


def _own_returns(func):
    """The ``return`` statements of ``func`` itself, not of functions or lambdas nested in it."""
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            yield node
        if not isinstance(node, (*_FUNCTIONS, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def layout_violations(source, filename, allowlist=()):
    """Every breach of rules (a) and (b) in ``source``, as ``"file:qualified name: ..."`` strings."""
    tree = ast.parse(source, filename)
    code = code_lines(source)
    found = []
    for name, func in _functions(tree):
        where = f"{filename}:{name}"
        n_lines = len((code & set(range(func.lineno, func.end_lineno + 1))) - _docstring_lines(func))
        if n_lines > MAX_LINES and where not in allowlist:
            found.append(f"{where}: {n_lines} lines of code (at most {MAX_LINES})")
        for ret in sorted(_own_returns(func), key=lambda r: r.lineno):
            if isinstance(ret.value, ast.Tuple) and len(ret.value.elts) > MAX_TUPLE:
                found.append(
                    f"{where}: returns an anonymous tuple of {len(ret.value.elts)} items at line {ret.lineno} "
                    f"(at most {MAX_TUPLE}; return a named tuple or a dataclass)"
                )
    return found


def test_package_layout():
    root = PACKAGE.parent
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10, files  # the walk found the package
    found = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        found += layout_violations(path.read_text(encoding="utf-8"), rel, LONG_FUNCTION_ALLOWLIST)
    assert not found, f"{len(found)} layout violation(s):\n" + "\n".join(found)


def test_allowlist_names_existing_functions():
    root = PACKAGE.parent
    for entry in LONG_FUNCTION_ALLOWLIST:
        rel, name = entry.split(":")
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        assert name in {qualified for qualified, _ in _functions(tree)}, f"stale allowlist entry {entry}"


# ---------------------------------------------------------------- the checker itself


def _long_function(n_code):
    body = "".join(f"    x{i} = {i}\n" for i in range(n_code - 2))
    # a docstring, comments and blank lines do not count; the def and the return line do
    return f'def long():\n    """Doc\n\n    string."""\n    # comment\n\n{body}\n    return x0\n'


LONG_61 = _long_function(61)
LONG_60 = _long_function(60)
TRIPLE = "def f(a, b, c):\n    return a, b, c\n"
PAIR = "def f(a, b, c):\n    return a, (b, c)\n"
NESTED = (
    "class K:\n"
    "    def m(self):\n"
    "        def inner():\n"
    "            return 1, 2, 3\n"
    "        return inner, 2\n"
)
STARRED_LAMBDA = "def f(a):\n    g = lambda: (1, 2, 3)\n    return [a, a, a]\n"


@pytest.mark.parametrize(
    "source,expected",
    [
        (LONG_61, ["t.py:long: 61 lines of code"]),
        (LONG_60, []),
        (TRIPLE, ["t.py:f: returns an anonymous tuple of 3 items at line 2"]),
        (PAIR, []),
        (NESTED, ["t.py:K.m.<locals>.inner: returns an anonymous tuple of 3 items at line 4"]),
        (STARRED_LAMBDA, []),
        (LONG_61 + TRIPLE, ["t.py:long: 61 lines of code", "t.py:f: returns an anonymous tuple of 3 items"]),
    ],
    ids=["61-lines", "60-lines", "triple", "pair", "nested-method", "lambda-and-list", "both"],
)
def test_checker_on_planted_sources(source, expected):
    found = layout_violations(source, "t.py")
    assert len(found) == len(expected), found
    for got, want in zip(found, expected):
        assert got.startswith(want), (got, want)


def test_allowlist_exempts_only_long_functions():
    source = LONG_61.replace("    return x0\n", "    return x0, x1, x2\n")
    found = layout_violations(source, "t.py", {"t.py:long": "test"})
    assert len(found) == 1 and "anonymous tuple" in found[0], found
