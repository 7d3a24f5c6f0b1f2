"""Module and function sizes: every module's line count, and every function over a limit.

    .venv/bin/python scripts/sizes.py [--max-function 60] [--max-module 400] [PATH ...]

PATHs default to ``bot`` and ``cogs``. A function's size is its lines from ``def`` (decorators
included) to its last line, nested functions counted in their parent too. Modules over
``--max-module`` are marked ``*``. Exit status is always 0: this is a report, not a gate.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

Function = ast.FunctionDef | ast.AsyncFunctionDef


def modules(paths: list[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)


def functions(tree: ast.AST) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, size) for every function and method in ``tree``."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                last = child.end_lineno or child.lineno
                yield f"{prefix}{child.name}", child.lineno, last - first + 1
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["bot", "cogs"])
    parser.add_argument("--max-function", type=int, default=60)
    parser.add_argument("--max-module", type=int, default=400)
    args = parser.parse_args(argv)
    long: list[tuple[int, str]] = []
    print("lines  module")
    for path in modules(args.paths):
        text = path.read_text(encoding="utf-8")
        count = len(text.splitlines())
        mark = " *" if count > args.max_module else ""
        print(f"{count:5d}  {path}{mark}")
        for name, line, size in functions(ast.parse(text, filename=str(path))):
            if size > args.max_function:
                long.append((size, f"{path}:{line} {name}"))
    print(f"\nfunctions over {args.max_function} lines: {len(long)}")
    for size, where in sorted(long, reverse=True):
        print(f"{size:5d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
