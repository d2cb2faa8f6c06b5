#!/usr/bin/python3
"""Dataset for scripts/bench.sh: builds it once, switches it between `tree` and `v2`.

    dataset.py build DATA_DIR TREE_GB BIG_GB   # data/tree, data/big/big.bin, data/v2delta
    dataset.py apply-v2 DATA_DIR               # turn data/tree into v2 (in place)
    dataset.py revert-v2 DATA_DIR              # and back
    dataset.py stats DIR                       # JSON: files, bytes, dirs, symlinks, median

Why v2 is applied in place: a backup tool recognises an unchanged file by its path, size,
mtime, ctime and inode.  A full copy of `tree` changes every inode and ctime (every tool
would re-read everything), and a hard-linked copy turns every file into a hard link.  So
`v2` is stored as a delta (data/v2delta: ~3% of the files modified, ~2% new files) that
is moved into data/tree for the incremental backup and moved out again afterwards; the
untouched 95% keep their inode and ctime, as they would on a real machine.
"""

import json
import os
import random
import shutil
import stat
import subprocess
import sys

SOURCES = ["/usr/lib", "/usr/share", "/usr/include", "/usr/bin", "/usr/sbin",
           "/usr/libexec", "/usr/local", "/usr/lib64", "/usr/games", "/usr/src"]
LARGE = 1 << 20            # files above this are sampled separately (by bytes)
FILES_PER_GB = 45_000      # the peers' tree: 87k files in 2.0 GB
MODIFIED_SHARE = 0.03
ADDED_SHARE = 0.02


def walk_sources():
    """(path, size, kind) of every regular file and symlink under SOURCES, sorted."""
    out = []
    for top in SOURCES:
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        dev = os.lstat(top).st_dev
        for dp, dns, fns in os.walk(top):
            dns[:] = sorted(d for d in dns
                            if os.lstat(os.path.join(dp, d)).st_dev == dev)
            for f in sorted(fns):
                p = os.path.join(dp, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.append((p, st.st_size, "f"))
                elif stat.S_ISLNK(st.st_mode):
                    out.append((p, 0, "l"))
    return out


def tar_copy(paths, dest):
    """Copy absolute paths (keeping their /usr/... layout) under dest with tar."""
    os.makedirs(dest, exist_ok=True)
    lst = dest.rstrip("/") + ".list"
    with open(lst, "wb") as f:
        for p in paths:
            f.write(p.lstrip("/").encode() + b"\0")
    subprocess.run(f"tar -C / --null --no-recursion -T '{lst}' -cf - 2>/dev/null"
                   f" | tar -C '{dest}' -xpf -", shell=True, check=True)
    os.unlink(lst)


def build(data, tree_gb, big_gb):
    rng = random.Random(20261123)
    tree = os.path.join(data, "tree")
    files = walk_sources()
    target_bytes = tree_gb * 1e9
    target_files = FILES_PER_GB * tree_gb
    small = [x for x in files if x[1] < LARGE]
    large = [x for x in files if x[1] >= LARGE]
    p_small = min(1.0, target_files / max(1, len(small)))
    chosen, rest = [], []
    for x in small:
        (chosen if rng.random() < p_small else rest).append(x)
    small_bytes = sum(x[1] for x in chosen)
    large_total = sum(x[1] for x in large)
    p_large = min(1.0, max(0.0, target_bytes - small_bytes) / max(1, large_total))
    for x in large:
        (chosen if rng.random() < p_large else rest).append(x)
    chosen.sort()
    if not os.path.isdir(tree):
        tar_copy([x[0] for x in chosen], tree + ".tmp")
        os.rename(tree + ".tmp", tree)

    # v2 delta: modify ~3% of the regular files, add ~2% unsampled real files.
    delta = os.path.join(data, "v2delta")
    if not os.path.isdir(delta):
        tmp = delta + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        regs = []
        for dp, _, fns in os.walk(tree):
            for f in fns:
                p = os.path.join(dp, f)
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode) and st.st_size > 0 and st.st_nlink == 1:
                    regs.append(os.path.relpath(p, tree))
        regs.sort()
        modified = sorted(rng.sample(regs, int(len(regs) * MODIFIED_SHARE)))
        for rel in modified:
            src = os.path.join(tree, rel)
            dst = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
            size = os.path.getsize(dst)
            # An edit: overwrite up to 4 KiB somewhere in the file, append a line.
            n = min(4096, max(1, size // 10))
            off = rng.randrange(0, max(1, size - n))
            with open(dst, "r+b") as f:
                f.seek(off)
                f.write(rng.randbytes(n))
                f.seek(0, 2)
                f.write(b"\n# vaultfs-bench v2 edit\n")
            st = os.stat(src)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        cands = [x for x in rest if x[2] == "f" and x[1] < LARGE]
        n_add = min(len(cands), int(len(regs) * ADDED_SHARE))
        added = sorted(x[0] for x in rng.sample(cands, n_add))
        tar_copy(added, tmp + ".add")
        added_rel = []
        for dp, _, fns in os.walk(tmp + ".add"):
            for f in fns:
                p = os.path.join(dp, f)
                rel = os.path.relpath(p, tmp + ".add")
                if os.path.lexists(os.path.join(tree, rel)):
                    continue
                dst = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.rename(p, dst)
                added_rel.append(rel)
        shutil.rmtree(tmp + ".add")
        with open(os.path.join(data, "v2-modified.list"), "w") as f:
            f.write("".join(r + "\n" for r in modified))
        with open(os.path.join(data, "v2-added.list"), "w") as f:
            f.write("".join(r + "\n" for r in sorted(added_rel)))
        os.rename(tmp, delta)

    # big: concatenated binaries from /usr (compressible, real code and data).
    bigdir = os.path.join(data, "big")
    big = os.path.join(bigdir, "big.bin")
    want = int(big_gb * (1 << 30))
    if not (os.path.exists(big) and os.path.getsize(big) == want):
        os.makedirs(bigdir, exist_ok=True)
        parts = [x for x in files if x[2] == "f" and x[1] >= 64 << 10
                 and x[0].startswith(("/usr/bin/", "/usr/lib/", "/usr/sbin/",
                                      "/usr/libexec/"))]
        done = 0
        with open(big + ".tmp", "wb") as out:
            while done < want:
                for p, size, _ in parts:
                    try:
                        with open(p, "rb") as f:
                            buf = f.read(want - done)
                    except OSError:
                        continue
                    out.write(buf)
                    done += len(buf)
                    if done >= want:
                        break
        os.rename(big + ".tmp", big)


def read_list(data, name):
    with open(os.path.join(data, name)) as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def apply_v2(data):
    tree, delta, stash = (os.path.join(data, d) for d in ("tree", "v2delta", "v2stash"))
    marker = os.path.join(data, "V2_APPLIED")
    if os.path.exists(marker):
        return
    open(marker, "w").close()
    for rel in read_list(data, "v2-modified.list"):
        os.makedirs(os.path.dirname(os.path.join(stash, rel)), exist_ok=True)
        os.rename(os.path.join(tree, rel), os.path.join(stash, rel))
        shutil.copy2(os.path.join(delta, rel), os.path.join(tree, rel))
    created = []
    for rel in read_list(data, "v2-added.list"):
        dst = os.path.join(tree, rel)
        d = os.path.dirname(dst)
        missing = []
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        created += reversed(missing)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(delta, rel), dst)
    with open(os.path.join(data, "v2-created-dirs.list"), "w") as f:
        f.write("".join(os.path.relpath(d, tree) + "\n" for d in created))


def revert_v2(data):
    tree, stash = os.path.join(data, "tree"), os.path.join(data, "v2stash")
    marker = os.path.join(data, "V2_APPLIED")
    if not os.path.exists(marker):
        return
    for rel in read_list(data, "v2-added.list"):
        try:
            os.unlink(os.path.join(tree, rel))
        except FileNotFoundError:
            pass
    for rel in read_list(data, "v2-modified.list"):
        s = os.path.join(stash, rel)
        if os.path.exists(s):
            os.replace(s, os.path.join(tree, rel))
    created = os.path.join(data, "v2-created-dirs.list")
    if os.path.exists(created):
        for rel in reversed(read_list(data, "v2-created-dirs.list")):
            try:
                os.rmdir(os.path.join(tree, rel))
            except OSError:
                pass
        os.unlink(created)
    shutil.rmtree(stash, ignore_errors=True)
    os.unlink(marker)


def stats(top):
    sizes, dirs, links, other = [], 0, 0, 0
    for dp, dns, fns in os.walk(top):
        dirs += 1
        for f in fns:
            st = os.lstat(os.path.join(dp, f))
            if stat.S_ISREG(st.st_mode):
                sizes.append(st.st_size)
            elif stat.S_ISLNK(st.st_mode):
                links += 1
            else:
                other += 1
    sizes.sort()
    return {"files": len(sizes), "bytes": sum(sizes), "dirs": dirs, "symlinks": links,
            "median_file": sizes[len(sizes) // 2] if sizes else 0,
            "largest_file": sizes[-1] if sizes else 0}


def main():
    cmd = sys.argv[1]
    if cmd == "build":
        build(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "apply-v2":
        apply_v2(sys.argv[2])
    elif cmd == "revert-v2":
        revert_v2(sys.argv[2])
    elif cmd == "stats":
        print(json.dumps(stats(sys.argv[2])))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
