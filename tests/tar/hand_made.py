#!/usr/bin/env python3
"""Writes hand-made tar archives, damaged and hostile, into the directory argv[1].

valid-*.tar: GNU tar 1.34 extracts them (sometimes with warnings); an ingest must give
the same tree. invalid-*.tar: GNU tar cannot extract them faithfully, or what it would
make cannot be restored; an ingest must refuse them, with a message containing the text
of the sidecar file <name>.expect. No tool but Python is needed: every header is built
here, byte by byte.
"""

import os
import sys

OUT = sys.argv[1]
MTIME = 1_000_000_000  # 2001-09-09


def num(width, value):
    return b"%0*o\0" % (width - 1, value)


def header(name, typ=b"0", size=0, mode=0o644, uid=0, gid=0, mtime=MTIME, link=b"",
           magic=b"ustar\x0000", fields=(), signed=False, checksum=None):
    """One 512-byte header; `fields` overrides raw byte ranges (offset, bytes)."""
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = num(8, mode)
    h[108:116] = num(8, uid)
    h[116:124] = num(8, gid)
    h[124:136] = num(12, size)
    h[136:148] = num(12, mtime)
    h[156:157] = typ
    h[157:157 + len(link)] = link
    h[257:265] = magic
    for off, raw in fields:
        h[off:off + len(raw)] = raw
    h[148:156] = b" " * 8
    if checksum is None:
        checksum = sum((b - 256 if b > 127 else b) for b in h) if signed else sum(h)
    h[148:156] = b"%06o\0 " % checksum
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def member(name, data=b"", **kw):
    return header(name, size=len(data), **kw) + pad(data)


def record(key, value):
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax(records, typ=b"x", name=b"PaxHeaders/x"):
    data = b"".join(record(k, v) for k, v in records)
    return header(name, typ, size=len(data)) + pad(data)


def longname(name, typ=b"L"):
    return header(b"././@LongLink", typ, size=len(name), magic=b"ustar  \0") + pad(name)


END = b"\0" * 1024
cases = {}


def valid(name, data):
    cases["valid-" + name] = (data, None)


def invalid(name, data, expect):
    cases["invalid-" + name] = (data, expect)


V7 = b"\0" * 8
# Pre-POSIX directories: a name ending in '/' with type '0', one with a size.
valid("v7-old-style-dirs",
      header(b"top/", b"0", mode=0o750, uid=12, magic=V7)
      + header(b"top/sized/", b"0", size=512, mode=0o700, magic=V7)
      + member(b"top/sized/file", b"in the dir\n", magic=V7) + END)
# Directory, link and device headers with a size: they have no data (GNU tar).
valid("sized-non-files",
      header(b"d", b"5", size=1024, mode=0o711)
      + member(b"d/f", b"data\n")
      + header(b"d/hard", b"1", size=5, link=b"d/f")
      + header(b"d/sym", b"2", size=700, link=b"f")
      + header(b"d/fifo", b"6", size=3)
      + member(b"after", b"still here\n") + END)
# Numeric fields empty, blank or all NUL (every .crate has an all-NUL uid).
valid("blank-numeric-fields",
      member(b"nul-owner", b"x\n", fields=[(108, b"\0" * 8), (116, b"\0" * 8)])
      + member(b"blank-owner", b"y\n", fields=[(108, b"       \0"), (116, b"       \0")])
      + member(b"nul-mode", b"z\n", fields=[(100, b"\0" * 8)])
      + member(b"space-padded", b"w\n", fields=[(100, b"  644 \0\0"), (108, b"17 \0    ")])
      + END)
# Repeated meta headers for one member: the last one wins.
valid("repeated-long-names",
      longname(b"first-long-name\0") + longname(b"second-long-name-" + b"n" * 120 + b"\0")
      + member(b"named-by-the-long-name") + member(b"short") + longname(b"link-target-first\0", b"K")
      + longname(b"short\0", b"K") + header(b"hl", b"1", link=b"ignored") + END)
valid("repeated-pax-headers",
      pax([(b"path", b"lost-name"), (b"mtime", b"5")])
      + pax([(b"path", b"kept-name"), (b"uid", b"77"), (b"mtime", b"1000000000.25")])
      + member(b"stored-name", b"pax\n") + END)
# A GNU long name padded with NULs beyond its terminator.
valid("long-name-nul-padded",
      longname(b"padded-" + b"p" * 150 + b"\0" * 40) + member(b"x", b"long\n") + END)
# Binary xattr values (newlines, NUL, '=').
valid("pax-binary-xattr",
      pax([(b"SCHILY.xattr.user.bin", b"\n\0=\xff\n"), (b"SCHILY.xattr.user.text", b"a=b")])
      + member(b"xattrs", b"x\n") + END)
# Sun's 'X' extended header.
valid("sun-x-header",
      pax([(b"path", b"sun-name"), (b"mtime", b"1000000000.5")], typ=b"X")
      + member(b"old", b"sun\n") + END)
# A checksum over signed bytes (historic Sun and BSD tars), with high bytes in names.
valid("signed-checksum",
      member(b"caf\xe9-\xff\xfe", b"signed\n", signed=True, magic=V7) + END)
# GNU dumpdir ('D'): a directory whose data lists its contents.
valid("dumpdir",
      header(b"dd/", b"D", size=10, mode=0o700, uid=42, gid=43, magic=b"ustar  \0")
      + pad(b"Yf\0Nold\0\0\0") + member(b"dd/f", b"in dumpdir\n", magic=b"ustar  \0") + END)
# One zero block then EOF; and trailing garbage after the end-of-archive blocks.
valid("lone-zero-block", member(b"f", b"one zero block\n") + b"\0" * 512)
valid("trailing-garbage", member(b"f", b"garbage after\n") + END + b"not a tar" * 100)
# Members under symlinks: followed inside the tree, skipped when it leaves it.
valid("symlinks-in-the-way",
      header(b"dir/", b"5") + header(b"in", b"2", link=b"dir")
      + member(b"in/through", b"via a symlink\n")
      + header(b"out", b"2", link=b"../escape") + member(b"out/lost", b"skipped\n")
      + header(b"abs", b"2", link=b"/etc") + member(b"abs/passwd", b"skipped\n")
      + member(b"plain", b"f\n") + member(b"plain/under", b"skipped\n")
      + member(b"last", b"still read\n") + END)
# Members whose names hold '..': GNU tar skips each (exit 2) and extracts the rest.
valid("dot-dot",
      member(b"a/../../etc/passwd", b"x") + member(b"kept", b"kept\n")
      + member(b"d/../b", b"inner\n") + header(b"hl", b"1", link=b"../kept")
      + member(b"last", b"last\n") + END)
# Old GNU sparse: a few KB declaring 56 GiB of holes.
GIB = 1 << 30
sparse_fields = [(386, num(12, 0)), (398, num(12, 4096)),
                 (410, num(12, 56 * GIB)), (422, num(12, 0)), (483, num(12, 56 * GIB))]
valid("old-gnu-sparse-56g",
      header(b"huge.img", b"S", size=4096, magic=b"ustar  \0", fields=sparse_fields)
      + b"S" * 4096 + END)
# pax sparse format 0.0 (GNU.sparse.offset / numbytes records).
valid("pax-sparse-0.0",
      pax([(b"GNU.sparse.size", b"3000000"), (b"GNU.sparse.numblocks", b"2"),
           (b"GNU.sparse.offset", b"1000000"), (b"GNU.sparse.numbytes", b"512"),
           (b"GNU.sparse.offset", b"2999996"), (b"GNU.sparse.numbytes", b"4")])
      + member(b"sparse00", b"h" * 512 + b"tail") + END)

# --- invalid ---
invalid("cut-at-member-boundary", member(b"f", b"no end marker\n"),
        "truncated archive")
invalid("cut-in-data", member(b"f", b"x" * 2000)[:1024], "truncated archive")
invalid("cut-in-header", member(b"f", b"x") + header(b"g")[:300], "truncated archive")
invalid("empty", b"", "truncated archive")
invalid("bad-checksum", member(b"f", b"x", checksum=1) + END, "checksum")
invalid("not-a-tar", b"this is not a tar archive at all\n" * 40, "checksum")
invalid("pax-path-with-nul", pax([(b"path", b"a\0b")]) + member(b"x", b"x") + END, "NUL")
invalid("long-name-1mib", longname(b"n/" * (1 << 19) + b"\0") + member(b"x") + END,
        "long")
invalid("pax-path-1mib", pax([(b"path", b"d/" * (1 << 19) + b"f")]) + member(b"x") + END,
        "long")
invalid("component-over-255", pax([(b"path", b"c" * 256)]) + member(b"x") + END, "255")
invalid("hardlink-to-nothing", header(b"l", b"1", link=b"missing") + END,
        "not earlier in the archive")
invalid("sparse-map-too-long",
        pax([(b"GNU.sparse.size", b"100"), (b"GNU.sparse.map", b"0,50")])
        + member(b"s", b"x" * 10) + END, "sparse map")
# A segment that is not the last and does not fill its blocks: GNU tar reads the next
# segment from the next block, libarchive right after it.
invalid("sparse-unaligned-segment",
        pax([(b"GNU.sparse.size", b"3000"), (b"GNU.sparse.map", b"0,5,2996,4")])
        + member(b"s", b"hellotail") + END, "512")
invalid("huge-pax-header", header(b"PaxHeaders/x", b"x", size=1 << 40) + END,
        "pax header")
invalid("bad-pax-record", header(b"PaxHeaders/x", b"x", size=9) + pad(b"9 pathx\n\0")
        + member(b"x") + END, "pax")
invalid("bad-numeric-field", member(b"f", b"x", fields=[(108, b"12x4567\0")]) + END,
        "uid")
invalid("symlink-target-with-nul",
        pax([(b"linkpath", b"a\0b")]) + header(b"s", b"2", link=b"a") + END, "NUL")

os.makedirs(OUT, exist_ok=True)
for name, (data, expect) in cases.items():
    with open(os.path.join(OUT, name + ".tar"), "wb") as f:
        f.write(data)
    if expect is not None:
        with open(os.path.join(OUT, name + ".expect"), "w") as f:
            f.write(expect)
