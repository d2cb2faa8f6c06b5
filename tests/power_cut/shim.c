/*
 * An LD_PRELOAD shim for the power-cut tests (tests/reliability_power.rs).
 *
 * For paths under $VAULTFS_POWER_ROOT it appends every durability-relevant call to the
 * journal $VAULTFS_POWER_JOURNAL, in the order their effects happened, and passes the
 * call through: opens for writing (with O_CREAT / O_TRUNC), write / pwrite / writev
 * (with the bytes and the offset), ftruncate, fsync / fdatasync of files and
 * directories, rename / renameat / renameat2, link / linkat, unlink / unlinkat, mkdir /
 * mkdirat, rmdir. Each record has a sequence number: an fsync takes its number before
 * the call (whatever completed before that is covered by it), every other call after it
 * completed, so that sorting by number never makes an operation look durable when it
 * was not. A call that fails is journaled as failed, so that the n-th record is the n-th
 * call. With $VAULTFS_POWER_CUT_AT=n the process SIGKILLs itself on entry to the n-th
 * journaled call (the power cut: that call and everything after it never happen).
 *
 * Record: u64 seq, u32 op, u32 flags, u64 ino, u64 off, u64 len, u32 path_len,
 * u32 path2_len, then the paths (relative to the root, no NUL) and `len` data bytes
 * for a write. Little endian, native layout (the reader is on the same machine).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    OP_OPEN = 1,   /* path, ino, flags = open flags (a write open) */
    OP_WRITE = 2,  /* ino, off, len, data */
    OP_TRUNC = 3,  /* ino, len */
    OP_FSYNC = 4,  /* ino */
    OP_RENAME = 5, /* path -> path2, flags = renameat2 flags */
    OP_LINK = 6,   /* path -> path2 */
    OP_UNLINK = 7, /* path */
    OP_MKDIR = 8,  /* path, ino */
    OP_RMDIR = 9,  /* path */
    OP_BAD = 10,   /* a call the model cannot follow (path: what) */
    OP_FAILED = 11, /* a journaled call that failed (nothing changed) */
};

struct rec {
    uint64_t seq;
    uint32_t op;
    uint32_t flags;
    uint64_t ino;
    uint64_t off;
    uint64_t len;
    uint32_t path_len;
    uint32_t path2_len;
};

#define MAX_FD 65536
static uint64_t fd_ino[MAX_FD]; /* 0: not under the root */

static char root[PATH_MAX];
static size_t root_len;
static int journal = -1;
static long cut_at = -1;
static long calls;
static uint64_t seq;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define REAL(name) real_##name
#define DECLARE(ret, name, ...)                                                        \
    static ret (*real_##name)(__VA_ARGS__);
DECLARE(int, open, const char *, int, ...)
DECLARE(int, open64, const char *, int, ...)
DECLARE(int, openat, int, const char *, int, ...)
DECLARE(int, openat64, int, const char *, int, ...)
DECLARE(int, creat, const char *, mode_t)
DECLARE(int, creat64, const char *, mode_t)
DECLARE(int, close, int)
DECLARE(ssize_t, write, int, const void *, size_t)
DECLARE(ssize_t, pwrite, int, const void *, size_t, off_t)
DECLARE(ssize_t, pwrite64, int, const void *, size_t, off_t)
DECLARE(ssize_t, writev, int, const struct iovec *, int)
DECLARE(int, ftruncate, int, off_t)
DECLARE(int, ftruncate64, int, off_t)
DECLARE(int, fsync, int)
DECLARE(int, fdatasync, int)
DECLARE(int, rename, const char *, const char *)
DECLARE(int, renameat, int, const char *, int, const char *)
DECLARE(int, renameat2, int, const char *, int, const char *, unsigned int)
DECLARE(int, link, const char *, const char *)
DECLARE(int, linkat, int, const char *, int, const char *, int)
DECLARE(int, unlink, const char *)
DECLARE(int, unlinkat, int, const char *, int)
DECLARE(int, mkdir, const char *, mode_t)
DECLARE(int, mkdirat, int, const char *, mode_t)
DECLARE(int, rmdir, const char *)

static void init(void) {
#define LOAD(name) real_##name = dlsym(RTLD_NEXT, #name);
    LOAD(open) LOAD(open64) LOAD(openat) LOAD(openat64) LOAD(creat) LOAD(creat64)
    LOAD(close) LOAD(write) LOAD(pwrite) LOAD(pwrite64) LOAD(writev) LOAD(ftruncate)
    LOAD(ftruncate64) LOAD(fsync) LOAD(fdatasync) LOAD(rename) LOAD(renameat)
    LOAD(renameat2) LOAD(link) LOAD(linkat) LOAD(unlink) LOAD(unlinkat) LOAD(mkdir)
    LOAD(mkdirat) LOAD(rmdir)
    const char *r = getenv("VAULTFS_POWER_ROOT");
    const char *j = getenv("VAULTFS_POWER_JOURNAL");
    const char *c = getenv("VAULTFS_POWER_CUT_AT");
    if (!r || !j || strlen(r) >= sizeof root)
        return;
    strcpy(root, r);
    root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/')
        root[--root_len] = 0;
    if (c)
        cut_at = atol(c);
    journal = (int)syscall(SYS_openat, AT_FDCWD, j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                           0600);
}

static int active(void) {
    pthread_once(&once, init);
    return journal >= 0;
}

/* The path of `name` relative to the root in `out`, or 0 when it is not under it. */
static int under_root(int dirfd, const char *name, char *out) {
    char full[2 * PATH_MAX];
    if (!name)
        return 0;
    if (name[0] == '/') {
        snprintf(full, sizeof full, "%s", name);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base))
                return 0;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof base - 1);
            if (n < 0)
                return 0;
            base[n] = 0;
        }
        snprintf(full, sizeof full, "%s/%s", base, name);
    }
    /* Lexical normalisation: drop "." and empty components, apply "..". */
    char norm[2 * PATH_MAX];
    size_t n = 0;
    const char *p = full;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0)
            break;
        if (len == 1 && p[0] == '.') {
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && norm[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
        } else {
            norm[n++] = '/';
            memcpy(norm + n, p, len);
            n += len;
        }
        p += len;
    }
    norm[n] = 0;
    if (n == 0)
        strcpy(norm, "/");
    if (strncmp(norm, root, root_len) != 0)
        return 0;
    if (norm[root_len] == 0) {
        out[0] = 0;
        return 1;
    }
    if (norm[root_len] != '/')
        return 0;
    strcpy(out, norm + root_len + 1);
    return 1;
}

static void put_all(const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = syscall(SYS_write, journal, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort();
        p += n;
        len -= (size_t)n;
    }
}

/* Counts a journaled call on entry; the cut. */
static void enter(void) {
    long n = __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST);
    if (cut_at > 0 && n >= cut_at)
        syscall(SYS_kill, getpid(), SIGKILL);
}

static uint64_t next_seq(void) { return __atomic_add_fetch(&seq, 1, __ATOMIC_SEQ_CST); }

static void emit(uint64_t s, uint32_t op, uint32_t flags, uint64_t ino, uint64_t off,
                 const char *path, const char *path2, const struct iovec *data, int nvec,
                 uint64_t len) {
    struct rec r = {s, op, flags, ino, off, len, path ? (uint32_t)strlen(path) : 0,
                    path2 ? (uint32_t)strlen(path2) : 0};
    int saved = errno;
    pthread_mutex_lock(&lock);
    put_all(&r, sizeof r);
    if (path)
        put_all(path, r.path_len);
    if (path2)
        put_all(path2, r.path2_len);
    uint64_t left = len;
    for (int i = 0; i < nvec && left > 0; i++) {
        size_t take = data[i].iov_len < left ? data[i].iov_len : left;
        put_all(data[i].iov_base, take);
        left -= take;
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
}

static void failed(void) { emit(next_seq(), OP_FAILED, 0, 0, 0, NULL, NULL, NULL, 0, 0); }

static uint64_t ino_of(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static int writes(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }

/* Every open: fds under the root are remembered (for writes and fsyncs); opens for
 * writing are journaled. */
static int do_open(int dirfd, const char *path, int flags, mode_t mode,
                   int (*call)(int, const char *, int, mode_t)) {
    char rel[PATH_MAX];
    if (!active() || !under_root(dirfd, path, rel))
        return call(dirfd, path, flags, mode);
    int w = writes(flags);
    if (w)
        enter();
    int fd = call(dirfd, path, flags, mode);
    if (fd >= 0 && fd < MAX_FD) {
        fd_ino[fd] = ino_of(fd);
        if (w)
            emit(next_seq(), OP_OPEN, (uint32_t)flags, fd_ino[fd], 0, rel, NULL, NULL, 0, 0);
    } else if (w) {
        failed();
    }
    return fd;
}

static int call_openat(int dirfd, const char *p, int f, mode_t m) {
    return REAL(openat64) ? REAL(openat64)(dirfd, p, f, m) : REAL(openat)(dirfd, p, f, m);
}

#define MODE_ARG                                                                       \
    mode_t mode = 0;                                                                   \
    if (flags & (O_CREAT | O_TMPFILE)) {                                               \
        va_list ap;                                                                    \
        va_start(ap, flags);                                                           \
        mode = va_arg(ap, mode_t);                                                     \
        va_end(ap);                                                                    \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG
    pthread_once(&once, init);
    return do_open(AT_FDCWD, path, flags, mode, call_openat);
}
int open64(const char *path, int flags, ...) {
    MODE_ARG
    pthread_once(&once, init);
    return do_open(AT_FDCWD, path, flags, mode, call_openat);
}
int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG
    pthread_once(&once, init);
    return do_open(dirfd, path, flags, mode, call_openat);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG
    pthread_once(&once, init);
    return do_open(dirfd, path, flags, mode, call_openat);
}
int creat(const char *path, mode_t mode) {
    pthread_once(&once, init);
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, call_openat);
}
int creat64(const char *path, mode_t mode) {
    pthread_once(&once, init);
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, call_openat);
}

int close(int fd) {
    pthread_once(&once, init);
    if (fd >= 0 && fd < MAX_FD)
        fd_ino[fd] = 0;
    return REAL(close)(fd);
}

static uint64_t tracked(int fd) {
    return active() && fd >= 0 && fd < MAX_FD ? fd_ino[fd] : 0;
}

static ssize_t do_write(int fd, const struct iovec *iov, int n, off_t off, int positional) {
    uint64_t ino = tracked(fd);
    ssize_t r;
    off_t at = off;
    if (ino) {
        enter();
        if (!positional)
            at = lseek(fd, 0, SEEK_CUR);
    }
    if (positional)
        r = REAL(pwrite64) ? REAL(pwrite64)(fd, iov[0].iov_base, iov[0].iov_len, off)
                           : REAL(pwrite)(fd, iov[0].iov_base, iov[0].iov_len, off);
    else if (n == 1)
        r = REAL(write)(fd, iov[0].iov_base, iov[0].iov_len);
    else
        r = REAL(writev)(fd, iov, n);
    if (ino && r > 0) {
        if (at < 0)
            emit(next_seq(), OP_BAD, 0, ino, 0, "write at an unknown offset", NULL, NULL, 0, 0);
        else
            emit(next_seq(), OP_WRITE, 0, ino, (uint64_t)at, NULL, NULL, iov, n, (uint64_t)r);
    } else if (ino) {
        failed();
    }
    return r;
}

ssize_t write(int fd, const void *buf, size_t len) {
    pthread_once(&once, init);
    struct iovec v = {(void *)buf, len};
    return do_write(fd, &v, 1, 0, 0);
}
ssize_t pwrite(int fd, const void *buf, size_t len, off_t off) {
    pthread_once(&once, init);
    struct iovec v = {(void *)buf, len};
    return do_write(fd, &v, 1, off, 1);
}
ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) {
    pthread_once(&once, init);
    struct iovec v = {(void *)buf, len};
    return do_write(fd, &v, 1, off, 1);
}
ssize_t writev(int fd, const struct iovec *iov, int n) {
    pthread_once(&once, init);
    return do_write(fd, iov, n, 0, 0);
}

static int do_truncate(int fd, off_t len, int (*call)(int, off_t)) {
    uint64_t ino = tracked(fd);
    if (ino)
        enter();
    int r = call(fd, len);
    if (ino && r == 0)
        emit(next_seq(), OP_TRUNC, 0, ino, 0, NULL, NULL, NULL, 0, (uint64_t)len);
    else if (ino)
        failed();
    return r;
}
int ftruncate(int fd, off_t len) {
    pthread_once(&once, init);
    return do_truncate(fd, len, REAL(ftruncate));
}
int ftruncate64(int fd, off_t len) {
    pthread_once(&once, init);
    return do_truncate(fd, len, REAL(ftruncate64) ? REAL(ftruncate64) : REAL(ftruncate));
}

static int do_sync(int fd, int (*call)(int)) {
    uint64_t ino = tracked(fd);
    uint64_t s = 0;
    if (ino) {
        enter();
        s = next_seq(); /* before: what completed until now is covered */
    }
    int r = call(fd);
    if (ino && r == 0)
        emit(s, OP_FSYNC, 0, ino, 0, NULL, NULL, NULL, 0, 0);
    else if (ino)
        emit(s, OP_FAILED, 0, 0, 0, NULL, NULL, NULL, 0, 0);
    return r;
}
int fsync(int fd) {
    pthread_once(&once, init);
    return do_sync(fd, REAL(fsync));
}
int fdatasync(int fd) {
    pthread_once(&once, init);
    return do_sync(fd, REAL(fdatasync));
}

/* A call on two paths: journaled when both are under the root, refused by the model
 * (OP_BAD) when only one is. */
static int two_paths(uint32_t op, int d1, const char *p1, int d2, const char *p2,
                     unsigned flags, int (*call)(int, const char *, int, const char *, unsigned)) {
    char a[PATH_MAX], b[PATH_MAX];
    if (!active())
        return call(d1, p1, d2, p2, flags);
    int ia = under_root(d1, p1, a), ib = under_root(d2, p2, b);
    if (!ia && !ib)
        return call(d1, p1, d2, p2, flags);
    enter();
    int r = call(d1, p1, d2, p2, flags);
    if (r == 0) {
        if (ia && ib)
            emit(next_seq(), op, flags, 0, 0, a, b, NULL, 0, 0);
        else
            emit(next_seq(), OP_BAD, 0, 0, 0, "a rename or link across the root", NULL, NULL,
                 0, 0);
    } else {
        failed();
    }
    return r;
}

static int call_rename(int d1, const char *p1, int d2, const char *p2, unsigned flags) {
    if (flags)
        return REAL(renameat2)(d1, p1, d2, p2, flags);
    return REAL(renameat)(d1, p1, d2, p2);
}
static int call_link(int d1, const char *p1, int d2, const char *p2, unsigned flags) {
    return REAL(linkat)(d1, p1, d2, p2, (int)flags);
}

int rename(const char *a, const char *b) {
    pthread_once(&once, init);
    return two_paths(OP_RENAME, AT_FDCWD, a, AT_FDCWD, b, 0, call_rename);
}
int renameat(int d1, const char *a, int d2, const char *b) {
    pthread_once(&once, init);
    return two_paths(OP_RENAME, d1, a, d2, b, 0, call_rename);
}
int renameat2(int d1, const char *a, int d2, const char *b, unsigned int flags) {
    pthread_once(&once, init);
    return two_paths(OP_RENAME, d1, a, d2, b, flags, call_rename);
}
int link(const char *a, const char *b) {
    pthread_once(&once, init);
    return two_paths(OP_LINK, AT_FDCWD, a, AT_FDCWD, b, 0, call_link);
}
int linkat(int d1, const char *a, int d2, const char *b, int flags) {
    pthread_once(&once, init);
    return two_paths(OP_LINK, d1, a, d2, b, (unsigned)flags, call_link);
}

static int one_path(uint32_t op, int dirfd, const char *path, int flags, mode_t mode) {
    char rel[PATH_MAX];
    int in = active() && under_root(dirfd, path, rel);
    if (in)
        enter();
    int r;
    switch (op) {
    case OP_MKDIR:
        r = REAL(mkdirat)(dirfd, path, mode);
        break;
    case OP_RMDIR:
        r = REAL(unlinkat)(dirfd, path, AT_REMOVEDIR);
        break;
    default:
        r = REAL(unlinkat)(dirfd, path, flags);
        break;
    }
    if (in && r == 0) {
        uint64_t ino = 0;
        if (op == OP_MKDIR) {
            struct stat st;
            if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
                ino = (uint64_t)st.st_ino;
        }
        emit(next_seq(), op, 0, ino, 0, rel, NULL, NULL, 0, 0);
    } else if (in) {
        failed();
    }
    return r;
}

int unlink(const char *p) {
    pthread_once(&once, init);
    return one_path(OP_UNLINK, AT_FDCWD, p, 0, 0);
}
int unlinkat(int d, const char *p, int flags) {
    pthread_once(&once, init);
    return one_path((flags & AT_REMOVEDIR) ? OP_RMDIR : OP_UNLINK, d, p, flags, 0);
}
int mkdir(const char *p, mode_t mode) {
    pthread_once(&once, init);
    return one_path(OP_MKDIR, AT_FDCWD, p, 0, mode);
}
int mkdirat(int d, const char *p, mode_t mode) {
    pthread_once(&once, init);
    return one_path(OP_MKDIR, d, p, 0, mode);
}
int rmdir(const char *p) {
    pthread_once(&once, init);
    return one_path(OP_RMDIR, AT_FDCWD, p, 0, 0);
}
