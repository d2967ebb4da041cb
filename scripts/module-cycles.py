#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a loop.

For every folder of modules (a crate's `src/`, or a module with children)
it draws an edge from sibling A to sibling B when any file in A names a
path in B (`crate::b::…`, `super::b::…`, `use crate::{b, …}`), then looks
for strongly connected components. A parent naming its children, or a
child naming its parent's own items, is not a loop between siblings.

Usage: scripts/module-cycles.py [CRATE_DIR…]   (default: every crates/*)
"""
import pathlib
import re
import sys


def module_path(src: pathlib.Path, file: pathlib.Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def parse_tree(text: str, i: int, prefix: tuple, out: list) -> int:
    """Parses a use tree at text[i:]; appends every path it names."""
    path = list(prefix)
    while i < len(text):
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*|\{|\*)", text[i:])
        if not m:
            break
        tok = m.group(1)
        i += m.end()
        if tok == "{":
            while True:
                i = parse_tree(text, i, tuple(path), out)
                m = re.match(r"\s*([,}])", text[i:])
                if not m:
                    return i
                i += m.end()
                if m.group(1) == "}":
                    return i
                if re.match(r"\s*}", text[i:]):
                    i += re.match(r"\s*}", text[i:]).end()
                    return i
        if tok == "*":
            break
        path.append(tok)
        sep = re.match(r"\s*::", text[i:])
        if not sep:
            break
        i += sep.end()
    out.append(tuple(path))
    return i


def references(me: tuple, text: str) -> list:
    out = []
    for m in re.finditer(r"\b(crate|super|self)\s*::", text):
        start = m.group(1)
        if start == "crate":
            base = ()
        elif start == "self":
            base = me
        else:
            base = me[:-1]
            j = m.end()
            while True:
                n = re.match(r"\s*super\s*::", text[j:])
                if not n:
                    break
                base = base[:-1]
                j += n.end()
            parse_tree(text, j, base, out)
            continue
        parse_tree(text, m.end(), base, out)
    return out


def sccs(nodes, edges):
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(comp)

    for v in nodes:
        if v not in index:
            visit(v)
    return result


def check(crate: pathlib.Path) -> list:
    src = crate / "src"
    modules = {}
    for file in sorted(src.rglob("*.rs")):
        if file.parts[-2:] == ("src", "main.rs") and (src / "lib.rs").exists():
            continue
        modules.setdefault(module_path(src, file), []).append(file)
    known = set(modules)
    edges = {}  # (from, to) -> example file
    for me, files in modules.items():
        for file in files:
            for path in references(me, strip(file.read_text())):
                # The longest known module the path lies in.
                target = max(
                    (m for m in known if path[: len(m)] == m), key=len, default=None
                )
                if target is None or target == me:
                    continue
                # The sibling pair under their deepest common parent.
                k = 0
                while k < min(len(me), len(target)) and me[k] == target[k]:
                    k += 1
                if k == len(me) or k == len(target):
                    continue  # parent and descendant
                a, b = me[: k + 1], target[: k + 1]
                edges.setdefault((a, b), f"{file.relative_to(crate)} -> {'::'.join(target)}")
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    problems = []
    for comp in sccs(sorted(graph), {k: sorted(v) for k, v in graph.items()}):
        if len(comp) > 1:
            names = sorted("::".join(c) for c in comp)
            why = sorted(
                f"    {edges[(a, b)]}"
                for (a, b) in edges
                if a in comp and b in comp
            )
            problems.append(f"{crate.name}: modules in a loop: {', '.join(names)}\n" + "\n".join(why))
    return problems


def main() -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    crates = [pathlib.Path(a) for a in sys.argv[1:]] or sorted(
        p for p in (root / "crates").iterdir() if (p / "src").is_dir()
    )
    problems = [p for crate in crates for p in check(crate)]
    for p in problems:
        print(p)
    if not problems:
        print(f"no module loops in {len(crates)} crates")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
