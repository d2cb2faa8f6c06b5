#!/usr/bin/env python3
"""python_tar.py FORMAT SRC OUT: archives the tree SRC (as ".") into OUT with Python's
tarfile in FORMAT (ustar, gnu or pax). Members a format cannot hold (ustar: long names)
are left out, one line on stderr each, as GNU tar does."""

import os
import sys
import tarfile

fmt = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}[
    sys.argv[1]
]
src, out = sys.argv[2], sys.argv[3]
with tarfile.open(out, "w", format=fmt) as t:
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in [""] + sorted(dirs + files) if root == src else sorted(dirs + files):
            path = os.path.join(root, name) if name else root
            arc = "." if path == src else "./" + os.path.relpath(path, src)
            try:
                t.add(path, arcname=arc, recursive=False)
            except (ValueError, OSError) as e:
                print(f"left out {arc!r}: {e}", file=sys.stderr)
