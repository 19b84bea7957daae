#!/usr/bin/env python3
"""Find import cycles between the source *files* of each raftgate crate.

The module tree says which file contains which; this checks which file needs which. Files in a
cycle cannot be read, tested, moved or split out without each other, so cycles are reported.

Nodes: each .rs file under <crate>/src. src/lib.rs (else src/main.rs) is the crate root, src/a.rs
and src/a/mod.rs are `a`, src/a/b.rs is `a::b`. With both lib.rs and main.rs, main.rs is a root
of its own that reaches the lib through the lib's crate name (`node::run::Args`). `#[path]`,
src/bin/, tests/ and benches/ are not handled (none exist today).

Edge A -> B: code in A (comments and string/char literals stripped) names a path that resolves
into B. Counted paths start with `crate::`, `self::`, `super::`, the lib's crate name (main.rs
only), a child module of the current module (`mod body;` then `body::X`), a name that a `use`
bound to a module (`use crate::proxy;` then `proxy::body::X`), or one visible through a glob
import (`use super::*`). `use` trees (nested groups too) and paths in expressions and types both
count. A path goes to its longest prefix that is a file module, so `super::Thing` defined or
re-exported in mod.rs is an edge to mod.rs, and `crate::Thing` one to lib.rs. Not edges:
`mod x;` (a parent declaring a child does not use it), `pub(in path)`, attributes, self-edges.
Inline modules (`mod tests { .. }`) are followed by brace depth: `super::` inside one is the
enclosing file's module.

Test code does not count: an item under `#[cfg(test)]` (inline test module, `#[cfg(test)] mod
x;` file, or any other item) never exists in a real build, so it is not architecture. With
--include-tests its edges are listed, with the extra cycles they would close; the exit status
ignores them either way. Exit status: 1 if a crate has a cycle (an SCC of >1 file), else 0.
"""
import argparse, re, sys, tomllib
from collections import defaultdict
from pathlib import Path

# Every workspace member (folder = crate).
CRATES = tomllib.loads((Path(__file__).resolve().parent.parent / "Cargo.toml").read_text())["workspace"]["members"]
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TOKEN = re.compile(r"""(?P<ws>\s+) | (?P<line>//[^\n]*) | (?P<block>/\*)
    | (?P<raw>[bc]?r(?P<h>\#*)".*?"(?P=h))                  # r"..", r#".."#, br#".."#
    | (?P<str>[bc]?"(?:\\.|[^"\\])*") | (?P<chr>b?'(?:\\(?:u\{\w*\}|x\w\w|.)|[^\\'])')
    | (?P<life>'[A-Za-z_]\w*)                                 # lifetime or label, not a char
    | (?P<id>(?:r\#)?[A-Za-z_]\w*) | (?P<num>\d\w*) | (?P<p>::|.)""", re.X | re.S)


def tokenize(src):
    """(token, line) pairs; comments dropped, literals replaced by 'LIT', `r#x` read as `x`."""
    toks, i, line = [], 0, 1
    while i < len(src):
        m = TOKEN.match(src, i)
        kind, text = m.lastgroup, m.group()
        if kind == "block":  # block comments nest in Rust
            depth, j = 1, m.end()
            while depth and j < len(src):
                two = src[j:j + 2]
                if two in ("/*", "*/"): depth, j = depth + (1 if two == "/*" else -1), j + 2
                else: j += 1
            text = src[i:j]
        elif kind in ("raw", "str", "chr", "num"): toks.append(("LIT", line))
        elif kind in ("id", "p"): toks.append((text.removeprefix("r#"), line))
        line, i = line + text.count("\n"), i + len(text)
    return toks


def is_ident(t): return IDENT.fullmatch(t) is not None


def match_close(toks, i):
    """Index of the bracket closing the one at toks[i]."""
    depth, close = 0, {"(": ")", "[": "]", "{": "}"}[toks[i][0]]
    for j in range(i, len(toks)):
        depth += (toks[j][0] == toks[i][0]) - (toks[j][0] == close)
        if depth == 0: return j
    return len(toks) - 1


def parse_use(toks, i, prefix):
    """Parse a use tree at toks[i]; returns (next index, [(segs, bound name, line)])."""
    segs, out = list(prefix), []
    if toks[i][0] == "::" and not segs: segs.append("::"); i += 1
    while i < len(toks):
        t, line = toks[i]
        if t == "{":
            i += 1
            while i < len(toks) and toks[i][0] != "}":
                i, sub = parse_use(toks, i, segs); out += sub
                if toks[i][0] == ",": i += 1
            return i + 1, out
        if t == "*": return i + 1, out + [(segs + ["*"], None, line)]
        if not is_ident(t): return i, out
        if t == "self" and segs:
            i, name = i + 1, segs[-1]
        else:
            segs.append(t); i += 1
            if toks[i][0] == "::": i += 1; continue
            name = t
        if toks[i][0] == "as": name, i = toks[i + 1][0], i + 2
        return i, out + [(segs, name, line)]
    return i, out


class Crate:
    def __init__(self, root, name):
        self.root = root
        cargo = tomllib.loads((root / name / "Cargo.toml").read_text())
        self.libname = cargo.get("lib", {}).get("name", cargo["package"]["name"]).replace("-", "_")
        self.files = {}                        # rel path -> (tree, modpath)
        self.modules = defaultdict(dict)       # tree -> modpath -> rel path (file modules)
        self.inline = set()                    # (tree, modpath) of inline modules
        self.children, self.aliases, self.globs = defaultdict(set), defaultdict(dict), defaultdict(list)
        self.test_files, self.refs = set(), []  # refs: (file, tree, scope, segs, line, test, is_use)
        src = root / name / "src"
        has_lib = (src / "lib.rs").exists()
        for p in sorted(src.rglob("*.rs")):
            rel = p.relative_to(src)
            if rel.parts[0] == "bin": print(f"warning: {p} skipped (src/bin)", file=sys.stderr); continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "mod" or rel.as_posix() in ("lib.rs", "main.rs"): parts.pop()
            tree = "bin" if rel.as_posix() == "main.rs" or not has_lib else "lib"
            f = p.relative_to(root).as_posix()
            self.files[f] = (tree, tuple(parts)); self.modules[tree][tuple(parts)] = f
        for f, (tree, mp) in self.files.items(): self.scan(f, tree, mp)
        for f, (tree, mp) in self.files.items():
            if mp and mp[-1] not in self.children[(tree, mp[:-1])]:
                print(f"warning: {f} is not declared by any `mod`", file=sys.stderr)

    def scan(self, f, tree, modpath):
        toks = tokenize((self.root / f).read_text()) + [("EOF", 0)] * 3
        scopes = [[modpath, False, -1, 0, "file"]]  # [modpath, test, start depth, paren depth, kind]
        depth = pdepth = 0; pending_test = False; i = 0
        while i < len(toks) - 3:
            t, line = toks[i]; prev = toks[i - 1][0] if i else ""
            if t == "#" and "[" in (toks[i + 1][0], toks[i + 2][0]) and toks[i + 1][0] in ("[", "!"):
                inner = toks[i + 1][0] == "!"; j = i + 1 + inner; k = match_close(toks, j)
                body = " ".join(x for x, _ in toks[j + 1:k])
                if re.match(r"cfg \(", body) and re.search(r"\btest\b", body) and "not ( test" not in body:
                    if inner: scopes[-1][1] = True
                    else: pending_test = True
                i = k + 1; continue
            if pending_test:  # the item after #[cfg(test)] gets its own test-only scope
                scopes.append([scopes[-1][0], True, depth, pdepth, "item"]); pending_test = False
            scope, test = scopes[-1][0], scopes[-1][1]
            if t == "pub" and toks[i + 1][0] == "(":   # pub(crate), pub(in crate::x): visibility
                i = match_close(toks, i + 1) + 1; continue
            if t == "mod" and is_ident(toks[i + 1][0]) and toks[i + 2][0] in (";", "{"):
                name = toks[i + 1][0]; self.children[(tree, scope)].add(name)
                if toks[i + 2][0] == ";":
                    if test: self.test_files.add((tree, scope + (name,)))
                    i += 2; continue
                self.inline.add((tree, scope + (name,)))
                scopes.append([scope + (name,), test, depth, pdepth, "mod"]); depth += 1; i += 3; continue
            if t == "use":
                i, leaves = parse_use(toks, i + 1, [])
                for segs, name, ln in leaves:
                    if segs[-1] == "*": self.globs[(tree, scope)].append(segs[:-1]); segs = segs[:-1]
                    elif name and name != "_": self.aliases[(tree, scope)][name] = segs
                    if segs: self.refs.append((f, tree, scope, tuple(segs), ln, test, True))
                continue
            lead = t == "::" and not (is_ident(prev) or prev in (">", ")", "]")) and is_ident(toks[i + 1][0])
            if lead or (is_ident(t) and toks[i + 1][0] == "::" and prev not in ("::", ".")):
                segs = ["::", toks[i + 1][0]] if lead else [t]; i += 1 + lead
                while toks[i][0] == "::" and is_ident(toks[i + 1][0]): segs.append(toks[i + 1][0]); i += 2
                if len(segs) > 1: self.refs.append((f, tree, scope, tuple(segs), line, test, False))
                continue
            pdepth += (t in ("(", "[")) - (t in (")", "]"))
            if t == "{": depth += 1
            elif t == "}":
                depth -= 1
                while len(scopes) > 1 and scopes[-1][2] >= depth: scopes.pop()
            elif t == ";" and scopes[-1][4] == "item" and scopes[-1][2:4] == [depth, pdepth]: scopes.pop()
            i += 1

    def lookup(self, tree, scope, name, seen):
        """The module that `name` denotes inside module `scope`, or None."""
        key = (tree, scope, name)
        if key in seen: return None
        seen = seen | {key}
        if name in self.children[(tree, scope)]: return tree, scope + (name,)
        if name in self.aliases[(tree, scope)]:
            r = self.resolve(tree, scope, self.aliases[(tree, scope)][name], seen)
            if r and self.is_module(*r): return r
        for g in self.globs[(tree, scope)]:
            r = self.resolve(tree, scope, g, seen)
            if r and self.is_module(*r) and (hit := self.lookup(*r, name, seen)): return hit
        return None

    def is_module(self, tree, modpath): return modpath in self.modules[tree] or (tree, modpath) in self.inline

    def resolve(self, tree, scope, segs, seen=frozenset()):
        """(tree, absolute module path + item names) for a crate-local path, or None."""
        head, rest = segs[0], tuple(segs[1:])
        uses_lib = tree == "bin" and "lib" in self.modules
        if head == "::":
            return ("lib", rest[1:]) if uses_lib and rest and rest[0] == self.libname else None
        if head == "crate": return tree, rest  # also `$crate`: `$` is a token of its own
        if head in ("self", "super"):
            base, k = list(scope), 0
            while k < len(segs) and segs[k] in ("self", "super"):
                if segs[k] == "super":
                    if not base: return None
                    base.pop()
                k += 1
            return tree, tuple(base) + tuple(segs[k:])
        if hit := self.lookup(tree, scope, head, seen): return hit[0], hit[1] + rest
        if uses_lib and head == self.libname: return "lib", rest
        return None

    def edges(self):
        """{(src, dst): [(line, text, test)]} over files."""
        out = defaultdict(list)
        for f, tree, scope, segs, line, test, is_use in self.refs:
            r = self.resolve(tree, scope, segs)
            if not r: continue
            t2, full = r
            dst = next(self.modules[t2][full[:n]] for n in range(len(full), -1, -1)
                       if full[:n] in self.modules[t2])  # longest file-module prefix; () is the root
            if dst == f: continue
            test = test or self.files[f] in self.test_files or self.files[dst] in self.test_files
            entry = (line, ("use " if is_use else "") + "::".join(segs).replace("::::", "::"), test)
            if entry not in out[(f, dst)]: out[(f, dst)].append(entry)
        return out


def sccs(nodes, adj):
    """Tarjan's algorithm (recursive: a crate has tens of files); components of >1 file."""
    index, low, stack, out = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index); stack.append(v)
        for w in sorted(adj[v]):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in stack: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            k = stack.index(v); comp = stack[k:]; del stack[k:]
            if len(comp) > 1: out.append(sorted(comp))
    for v in nodes:
        if v not in index: visit(v)
    return sorted(out)


def report(name, comps, edges, label):
    for comp in comps:
        print(f"{name}: {label}cycle of {len(comp)} files: {', '.join(comp)}")
        for (a, b), lines in sorted(edges.items()):
            if a in comp and b in comp:
                print(f"  {a} -> {b}")
                for line, text, test in lines: print(f"    {a}:{line}: {text}{' [test]' if test else ''}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="workspace root")
    ap.add_argument("--crate", metavar="NAME", help=f"check only this crate directory (default: {' '.join(CRATES)})")
    ap.add_argument("--include-tests", action="store_true",
                    help="also list #[cfg(test)] edges and the cycles they would close")
    ap.add_argument("--graph", action="store_true", help="print every edge with its lines")
    args = ap.parse_args()
    names, cycles, nfiles, nedges = [args.crate] if args.crate else CRATES, 0, 0, 0
    for name in names:
        crate = Crate(args.root, name)
        every = crate.edges()
        real = {k: kept for k, v in every.items() if (kept := [x for x in v if not x[2]])}
        nfiles, nedges = nfiles + len(crate.files), nedges + len(real)
        if args.graph:
            for (a, b), lines in sorted((every if args.include_tests else real).items()):
                shown = sorted({(line, test) for line, _, test in lines})
                print(f"{a} -> {b}  (lines {', '.join(str(line) + ' test' * test for line, test in shown)})")
        adj = defaultdict(set)
        for a, b in real: adj[a].add(b)
        comps = sccs(sorted(crate.files), adj)
        cycles += len(comps)
        report(name, comps, real, "")
        if args.include_tests:
            for (a, b), lines in sorted(every.items()):
                for line, text, _ in (x for x in lines if x[2]):
                    print(f"{name}: test-only edge {a} -> {b}: {a}:{line}: {text}")
            for a, b in every: adj[a].add(b)
            report(name, [c for c in sccs(sorted(crate.files), adj) if c not in comps], every, "test-only ")
    print(f"module cycles: {cycles} in {len(names)} crate{'s' * (len(names) != 1)} ({nfiles} files, {nedges} edges)")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
