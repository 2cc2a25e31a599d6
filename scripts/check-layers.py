#!/usr/bin/env python3
"""The layer check (docs/ARCHITECTURE.md): fails on an import from a lower layer to a higher one,
between two modules of one layer, and on an import circle through files of different folders.

Layers, from the bottom: sample < model < pipeline < element, eval < cli < the crate root.
A file may use its own layer's module and any lower layer. Imports are read from the source
(`use` trees, `crate::`/`super::` paths in code; comments are skipped), resolved to the file
that defines the module they name. `python3 scripts/check-layers.py` prints every violation
and exits 1 if there is one; `--graph` prints the file-level import graph.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


# Top-level module -> layer. Modules of one layer may not use each other.
LAYERS = {
    "sample": 0,
    "model": 1,
    "pipeline": 2,
    "element": 3,
    "eval": 3,
    "cli": 4,
}
ROOT_FILES = {"lib.rs"}  # the crate root registers the element and declares the modules


def module_of(rel):
    """src-relative file path -> module path (list of names)."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def file_of(mod_path):
    """The file defining the longest prefix of `mod_path` that is a module."""
    best = None
    for n in range(1, len(mod_path) + 1):
        base = os.path.join(ROOT, *mod_path[:n])
        if os.path.isfile(base + ".rs"):
            best = base + ".rs"
        elif os.path.isfile(os.path.join(base, "mod.rs")):
            best = os.path.join(base, "mod.rs")
        else:
            break
    return None if best is None else os.path.relpath(best, ROOT)


def strip_comments(text):
    """The code of a Rust file without comments and with every string and char literal emptied
    (a message can hold `crate::`), in one pass."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and re.match(r"\w", text[i - 1])):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(?:\\.[^']*|[^\\'])'", text[i:]):
            # A char literal ('a', '\n', '\u{1F600}'); a lifetime ('a) has no closing quote.
            m = re.match(r"'(?:\\.[^']*|[^\\'])'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner = tree[:start], tree[start + 1 : i]
                parts, d, last = [], 0, 0
                for j, c in enumerate(inner):
                    if c == "{":
                        d += 1
                    elif c == "}":
                        d -= 1
                    elif c == "," and d == 0:
                        parts.append(inner[last:j])
                        last = j + 1
                parts.append(inner[last:])
                out = []
                for p in parts:
                    if p:
                        out.extend(expand_use(prefix + p))
                return out
    return [re.sub(r"\bas\w+$", "", tree.split(" as ")[0])]


def imports(rel, text):
    """The module paths (absolute, from the crate root) that file `rel` uses."""
    here = module_of(rel)
    # A file's children are its folder's modules (mod.rs/lib.rs) or its own folder (x.rs: x/).
    parent = here
    children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M))
    # Inline modules (`mod tests { ... }`): a `super::` inside one names the file's own module.
    inline = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        inline.append((m.end(), i))

    def nesting(pos):
        return sum(1 for a, b in inline if a <= pos < b)

    paths = []
    for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text, re.M):
        paths.extend((p, m.start()) for p in expand_use(m.group(1)))
    paths.extend((m.group(0), m.start()) for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", text))
    out = []
    for p, pos in paths:
        seg = [s for s in p.split("::") if s]
        if not seg:
            continue
        if seg[0] == "crate":
            out.append(seg[1:])
        elif seg[0] == "super":
            base, skip = list(parent), nesting(pos)
            while seg and seg[0] == "super":
                if skip:
                    skip -= 1
                else:
                    base = base[:-1]
                seg = seg[1:]
            out.append(base + seg)
        elif seg[0] == "self":
            out.append(here + seg[1:])
        elif seg[0] in children:
            out.append(here + seg)
    return [p for p in out if p]


def check(root):
    """The problems of the source tree at `root`, and its file-level import graph."""
    global ROOT
    ROOT = root
    graph = defaultdict(set)
    files = []
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(dirpath, n), ROOT))
    problems = []
    for rel in sorted(files):
        if rel.startswith("bin/"):
            continue  # binaries use the library's public API only
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text = strip_comments(f.read())
        top = module_of(rel)[0] if module_of(rel) else None
        for path in imports(rel, text):
            target = file_of(path)
            if target is None or target == rel:
                continue
            graph[rel].add(target)
            if rel in ROOT_FILES:
                continue
            to = path[0]
            if top not in LAYERS:
                problems.append(f"{rel}: module `{top}` has no layer (add it to LAYERS)")
                continue
            if to not in LAYERS or to == top:
                continue
            if LAYERS[to] > LAYERS[top]:
                problems.append(
                    f"{rel} (layer {LAYERS[top]}, {top}) uses crate::{'::'.join(path)} "
                    f"(layer {LAYERS[to]}, {to}): an import from a lower layer to a higher one"
                )
            elif LAYERS[to] == LAYERS[top]:
                problems.append(
                    f"{rel} ({top}) uses crate::{'::'.join(path)} ({to}): modules of one layer "
                    "are independent"
                )
    # Circles through files of different folders (Tarjan's strongly connected components).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    inside = [c for c in sccs if len({os.path.dirname(f) for f in c}) == 1]
    for comp in sccs:
        if len({os.path.dirname(f) for f in comp}) > 1:
            problems.append(
                "an import circle through files of different folders: " + ", ".join(comp)
            )
    return problems, graph, files, inside


def self_test():
    """The check on a small tree with one of each problem, and on the same tree fixed."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:

        def write(rel, text):
            os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
            with open(os.path.join(d, rel), "w", encoding="utf-8") as f:
                f.write(text)

        write("lib.rs", "pub mod sample;\npub mod model;\n")
        write("sample/mod.rs", "pub mod tiles;\n")
        write(
            "sample/tiles.rs",
            '// crate::model::a in a comment\nfn f() { let _ = "crate::model"; }\n',
        )
        write("model/mod.rs", "pub mod a;\npub mod b;\n")
        write("model/a/mod.rs", "use crate::model::b::Y;\npub struct X;\n")
        write(
            "model/b.rs",
            "use crate::model::a::X;\npub struct Y;\nmod tests {\n    use super::*;\n}\n",
        )
        problems, _, _, _ = check(d)
        assert len(problems) == 1 and "circle" in problems[0], problems
        write("sample/tiles.rs", "use crate::model::b::Y;\n")
        problems, _, _, _ = check(d)
        assert any("lower layer to a higher one" in p for p in problems), problems
        write("sample/tiles.rs", "")
        write("model/a/mod.rs", "pub struct X;\n")
        problems, _, _, _ = check(d)
        assert problems == [], problems
    print("check-layers: self-test ok")


def main():
    self_test()
    problems, graph, files, inside = check(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    )
    if "--graph" in sys.argv:
        for v in sorted(graph):
            print(f"{v} -> {', '.join(sorted(graph[v]))}")
    for p in problems:
        print(p)
    if problems:
        print(f"check-layers: {len(problems)} problem(s)")
        return 1
    by_layer = defaultdict(list)
    for name, layer in LAYERS.items():
        by_layer[layer].append(name)
    order = " < ".join(", ".join(sorted(by_layer[k])) for k in sorted(by_layer))
    print(
        f"check-layers: {len(files)} files, layers {order}: ok "
        f"({len(inside)} circle(s) inside one folder: "
        + ("; ".join(", ".join(c) for c in inside) or "none")
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
