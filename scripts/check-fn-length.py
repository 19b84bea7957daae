#!/usr/bin/env python3
"""Fails when a function in the given directories is longer than a limit (in lines,
from its `fn` line to its closing brace).

The request path must read as a list of short phases (ARCHITECTURE.md, "The request
lifecycle"); `make lint` runs this on node/src/proxy with a limit of 80 lines. Strings,
char literals and line comments are blanked before braces are counted, which is enough
for this code base (no braces inside raw strings or block comments on the request path).

usage: check-fn-length.py LIMIT DIR...
"""
import os
import re
import sys

FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def blank(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//")[0]


def long_functions(path, limit):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            text = blank(lines[j])
            if not started and ";" in text and "{" not in text:
                break  # a declaration without a body
            for c in text:
                if c == "{":
                    depth, started = depth + 1, True
                elif c == "}":
                    depth -= 1
            if started and depth == 0:
                if j - i + 1 > limit:
                    yield i + 1, m.group(6), j - i + 1
                break


def main():
    limit, dirs = int(sys.argv[1]), sys.argv[2:]
    found = 0
    for d in dirs:
        for root, _, files in sorted(os.walk(d)):
            for f in sorted(files):
                if f.endswith(".rs"):
                    path = os.path.join(root, f)
                    for line, name, n in long_functions(path, limit):
                        print(f"{path}:{line}: fn {name} is {n} lines (limit {limit}): split it into steps")
                        found += 1
    print(f"functions over {limit} lines: {found}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
