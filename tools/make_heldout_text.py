#!/usr/bin/env python3
"""Makes held-out text for tiny-trained "like" its 32 evaluation windows (docs/quality.md).

tiny-trained was trained on the Python sources of a site-packages tree with sympy held out,
and on Debian documentation with the last 10% of each file held out; its evaluation windows
come from sympy's sources and from those last tenths. This script takes the same kinds of text
from the machine it runs on:

  heldout-sympy.txt   whole sympy source files of 3-12 KB (the installed sympy, any version),
                      chosen by a hash of their path inside the package, about --bytes bytes
  heldout-debian.txt  the last 10% (from a line start) of README / NEWS / FAQ / TODO / *.txt /
                      *.md files under /usr/share/doc (gzipped ones read too), chosen the same
                      way, about --bytes bytes
  calibration.txt     text for `fp6serve quantize --calibration` that is not held out: Python
                      files of the site-packages tree sympy is in (sympy excluded) and the first
                      90% of those documents, half of --bytes each

Files are separated by a blank line. `fp6serve perplexity --text FILE --ctx 512` cuts a file's
tokens into windows of 512. sympy was held out of the training set, so the first file cannot
overlap it unless another package there vendors sympy code; the second can, where this
machine's copy of a document differs from the one the model was trained on (or shares
boilerplate with other documents). Standard library only.
"""

import argparse
import gzip
import hashlib
import os
import sys

DOC_ROOT = "/usr/share/doc"
DOC_PREFIXES = ("README", "NEWS", "FAQ", "TODO")
DOC_SUFFIXES = (".txt", ".md", ".txt.gz", ".md.gz")


def key(name):
    return hashlib.sha256(name.encode()).hexdigest()


def text_of(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return text.replace("\r\n", "\n")


def collect(chunks, limit):
    out, size = [], 0
    for _, chunk in sorted(chunks):
        if size >= limit:
            break
        out.append(chunk.strip("\n") + "\n")
        size += len(out[-1].encode()) + 1
    return "\n".join(out)


def python_sources(root, skip_dir=None):
    """(key, text) of the .py files of 3-12 kB under root, skipping folders named skip_dir."""
    chunks = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != skip_dir]
        for f in files:
            path = os.path.join(d, f)
            if not f.endswith(".py") or not 3000 <= os.path.getsize(path) <= 12000:
                continue
            text = text_of(path)
            if text:
                chunks.append((key(os.path.relpath(path, root)), text))
    return chunks


def sympy_text(limit):
    import sympy

    return collect(python_sources(os.path.dirname(sympy.__file__)), limit)


def python_text(limit):
    import sympy

    return collect(python_sources(os.path.dirname(os.path.dirname(sympy.__file__)), skip_dir="sympy"), limit)


def debian_text(limit, head=False):
    chunks = []
    for d, _, files in os.walk(DOC_ROOT):
        for f in files:
            path = os.path.join(d, f)
            if os.path.islink(path) or not (f.startswith(DOC_PREFIXES) or f.endswith(DOC_SUFFIXES)):
                continue
            text = text_of(path)
            if not text:
                continue
            start = text.find("\n", len(text) * 9 // 10)
            part = (text[:start] if head else text[start + 1 :]) if start >= 0 else ""
            if len(part) >= 1000:
                chunks.append((key(os.path.relpath(path, DOC_ROOT)), part[:12000]))
    return collect(chunks, limit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--bytes", type=int, default=110000, help="about this many bytes per file")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    makers = (
        ("heldout-sympy.txt", sympy_text),
        ("heldout-debian.txt", debian_text),
        ("calibration.txt", lambda n: python_text(n // 2) + "\n" + debian_text(n // 2, head=True)),
    )
    for name, make in makers:
        text = make(a.bytes)
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{name}: {len(text.encode())} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
