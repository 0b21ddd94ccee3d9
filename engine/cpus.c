/*
 * cpus.c - how many processors this process may really use.
 *
 * "Effective processors", as pp's autodetect means it: the CPUs in our
 * affinity mask, capped by the cgroup CPU quota (a container limited to
 * 1.5 CPUs gets 2 workers, not one per host core).
 *
 * The quota is the tightest one on the path from our own cgroup up to the
 * root of its mount, not just the root's: systemd CPUQuota=, Slurm steps
 * and containers without a cgroup namespace all put the limit on a nested
 * cgroup.  /proc/self/cgroup names our cgroup in each hierarchy and
 * /proc/self/mountinfo says where those hierarchies are mounted.
 *
 * Everything here uses fixed buffers and read(2), not malloc or stdio
 * streams (which allocate), and an over-long line or file is skipped,
 * never truncated into something that parses.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "cpus.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Longest line of /proc/self/{cgroup,mountinfo} we look at; longer ones
 * (overlayfs option lists, say) are skipped whole. */
#define CG_LINE_MAX (2 * PATH_MAX + 512)

/* ---------------------------------------------------------------- */
/* Bounded reading                                                    */
/* ---------------------------------------------------------------- */

struct line_reader {
    int fd;
    size_t start, end;   /* unread bytes are buf[start, end) */
    bool eof;
    bool skipping;       /* inside a line too long for buf */
    int err;             /* -errno of a failed read, else 0 */
    char buf[CG_LINE_MAX + 1];
};

/*
 * Sets *ret_line to the next line (NUL-terminated, without '\n').
 * Returns 1, or 0 at the end of the file or after a read error (r->err).
 */
static int next_line(struct line_reader *r, char **ret_line)
{
    for (;;) {
        char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
        if (nl) {
            char *line = r->buf + r->start;
            bool skip = r->skipping;
            *nl = '\0';
            r->start = (size_t)(nl - r->buf) + 1;
            r->skipping = false;
            if (skip)
                continue;
            *ret_line = line;
            return 1;
        }
        if (r->eof) {
            /* A last line without '\n' still counts, unless a read failed. */
            if (r->end > r->start && !r->skipping && !r->err) {
                r->buf[r->end] = '\0';
                *ret_line = r->buf + r->start;
                r->start = r->end;
                return 1;
            }
            return 0;
        }
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        if (r->end == CG_LINE_MAX) { /* no '\n' in a full buffer */
            r->skipping = true;
            r->end = 0;
        }
        ssize_t n = read(r->fd, r->buf + r->end, CG_LINE_MAX - r->end);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            r->err = -errno;
        if (n <= 0)
            r->eof = true;
        else
            r->end += (size_t)n;
    }
}

/*
 * Reads the whole of a small file into buf (NUL-terminated).  Returns its
 * length, -EFBIG when it does not fit in size - 1 bytes, or -errno.
 */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;

    if (fd < 0)
        return -errno;
    for (;;) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == size - 1) {
            char extra;
            ssize_t m;
            do
                m = read(fd, &extra, 1);
            while (m < 0 && errno == EINTR);
            if (m != 0) {
                close(fd);
                return m < 0 ? -errno : -EFBIG;
            }
            break;
        }
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* ---------------------------------------------------------------- */
/* Parsing                                                            */
/* ---------------------------------------------------------------- */

/* A decimal long long spanning the whole of [s, end): 0, or -EINVAL. */
static int parse_ll(const char *s, const char *end, long long *ret)
{
    char num[24];
    size_t len = (size_t)(end - s);
    char *stop;

    if (len == 0 || len >= sizeof(num))
        return -EINVAL;
    memcpy(num, s, len);
    num[len] = '\0';
    errno = 0;
    long long v = strtoll(num, &stop, 10);
    if (errno != 0 || *stop != '\0' || !(num[0] == '-' || (num[0] >= '0' && num[0] <= '9')))
        return -EINVAL;
    *ret = v;
    return 0;
}

/* ceil(quota / period), clamped to INT_MAX; 0 when either is not > 0. */
static int quota_ncpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = quota / period + (quota % period != 0);
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* Whether the comma-separated list s has the item word. */
static bool list_has(const char *s, const char *word)
{
    size_t wl = strlen(word);

    while (*s) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (len == wl && memcmp(s, word, wl) == 0)
            return true;
        if (!comma)
            break;
        s = comma + 1;
    }
    return false;
}

/* The next space-separated field of *p, NUL-terminated in place, or NULL. */
static char *next_field(char **p)
{
    char *s = *p;

    while (*s == ' ')
        s++;
    if (*s == '\0')
        return NULL;
    char *e = strchr(s, ' ');
    if (e) {
        *e = '\0';
        *p = e + 1;
    } else {
        *p = s + strlen(s);
    }
    return s;
}

/* Undoes mountinfo's \ooo escapes (space, tab, newline, backslash) in place. */
static void unescape_octal(char *s)
{
    char *w = s;

    for (const char *r = s; *r; ) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            int c = (r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0');
            if (c != 0) { /* a NUL would cut the path short */
                *w++ = (char)c;
                r += 4;
                continue;
            }
        }
        *w++ = *r++;
    }
    *w = '\0';
}

/* Whether a cgroup path is absolute and has no "." or ".." component (a
 * cgroup namespace shows outside cgroups as "/.."; we must not walk there). */
static bool path_is_plain(const char *p)
{
    if (p[0] != '/')
        return false;
    for (const char *c = p + 1; *c; ) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        if (!slash)
            break;
        c = slash + 1;
    }
    return true;
}

/* ---------------------------------------------------------------- */
/* Hierarchies                                                        */
/* ---------------------------------------------------------------- */

/* One hierarchy that can carry a CPU limit: v1 "cpu" or v2. */
struct cg_hier {
    bool is_v2;
    bool have_path;      /* path came from /proc/self/cgroup */
    bool have_dir;       /* dir is set: a mount matched */
    size_t base_len;     /* strlen(prefix + mount point) */
    char path[PATH_MAX]; /* our cgroup, as /proc/self/cgroup names it */
    char dir[PATH_MAX];  /* prefix + mount point + path below the mount root */
};

/* Takes one line of /proc/self/cgroup ("id:controllers:path"). */
static void take_cgroup_line(char *line, struct cg_hier *v1, struct cg_hier *v2)
{
    char *c1 = strchr(line, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    struct cg_hier *h;

    if (!c2)
        return;
    *c1 = '\0';
    *c2 = '\0';
    if (strcmp(line, "0") == 0 && c1[1] == '\0')
        h = v2;
    else if (list_has(c1 + 1, "cpu"))
        h = v1;
    else
        return;
    size_t len = strlen(c2 + 1);
    if (h->have_path || len >= sizeof(h->path) || !path_is_plain(c2 + 1))
        return;
    memcpy(h->path, c2 + 1, len + 1);
    h->have_path = true;
}

/*
 * Sets h->dir from a mount of h's hierarchy, if our cgroup lies below the
 * mount's root (a container's bind mount has root "/docker/<id>" and shows
 * only that subtree).  The first mount that fits wins.
 */
static void take_mount(struct cg_hier *h, char *root, char *mnt, const char *prefix)
{
    const char *rel;
    size_t rl;

    if (!h->have_path || h->have_dir)
        return;
    unescape_octal(root);
    unescape_octal(mnt);
    rl = strlen(root);
    while (rl > 0 && root[rl - 1] == '/')
        rl--;
    if (strncmp(h->path, root, rl) != 0 || (h->path[rl] != '/' && h->path[rl] != '\0'))
        return;
    rel = h->path + rl;
    size_t ml = strlen(mnt);
    while (ml > 0 && mnt[ml - 1] == '/')
        ml--;
    size_t rel_len = strlen(rel);
    while (rel_len > 0 && rel[rel_len - 1] == '/')
        rel_len--;
    int n = snprintf(h->dir, sizeof(h->dir), "%s%.*s%.*s", prefix, (int)ml, mnt,
                     (int)rel_len, rel);
    if (n < 0 || (size_t)n >= sizeof(h->dir))
        return;
    h->base_len = (size_t)n - rel_len;
    h->have_dir = true;
}

/* Takes one line of /proc/self/mountinfo:
 * "id parent maj:min root mountpoint opts [optional...] - fstype source superopts". */
static void take_mount_line(char *line, struct cg_hier *v1, struct cg_hier *v2,
                            const char *prefix)
{
    char *p = line, *f[5], *fs, *super;

    for (int i = 0; i < 5; i++)
        if (!(f[i] = next_field(&p)))
            return;
    do
        fs = next_field(&p);
    while (fs && strcmp(fs, "-") != 0);
    if (!fs || !(fs = next_field(&p)) || !next_field(&p) || !(super = next_field(&p)))
        return;
    if (strcmp(fs, "cgroup2") == 0)
        take_mount(v2, f[3], f[4], prefix);
    else if (strcmp(fs, "cgroup") == 0 && list_has(super, "cpu"))
        take_mount(v1, f[3], f[4], prefix);
}

/* Reads dir/name (a small file) into buf without its trailing newline
 * and spaces, NUL-terminated.  Returns its length, or -1. */
static ssize_t read_value(const char *dir, const char *name, char *buf, size_t size)
{
    char path[PATH_MAX];
    ssize_t n;

    int l = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (l < 0 || (size_t)l >= sizeof(path) || (n = read_small(path, buf, size)) < 0)
        return -1;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        n--;
    buf[n] = '\0';
    return n;
}

/* The limit set in one v1 cgroup directory, 0 if none. */
static int level_v1(const char *dir)
{
    char buf[64];
    long long q, p;
    ssize_t n;

    if ((n = read_value(dir, "cpu.cfs_quota_us", buf, sizeof(buf))) < 0 ||
        parse_ll(buf, buf + n, &q) < 0 || q <= 0)
        return 0;
    if ((n = read_value(dir, "cpu.cfs_period_us", buf, sizeof(buf))) < 0 ||
        parse_ll(buf, buf + n, &p) < 0)
        return 0;
    return quota_ncpus(q, p);
}

/* The limit set in one v2 cgroup directory ("max 100000" or "150000 100000"),
 * 0 if none.  cpu.max exists only where the parent enabled the cpu
 * controller, so its absence is the check for it. */
static int level_v2(const char *dir)
{
    char buf[64];
    long long q, p;
    ssize_t n;

    if ((n = read_value(dir, "cpu.max", buf, sizeof(buf))) < 0)
        return 0;
    char *sp = strchr(buf, ' ');
    if (!sp || parse_ll(buf, sp, &q) < 0 || parse_ll(sp + 1, buf + n, &p) < 0)
        return 0; /* "max ...", a lone word or garbage */
    return quota_ncpus(q, p);
}

/* The smallest limit from h->dir up to its mount root, 0 if none.  Edits h->dir. */
static int hier_quota(struct cg_hier *h)
{
    size_t len;
    int best = 0;

    if (!h->have_dir)
        return 0;
    len = strlen(h->dir);
    for (;;) {
        int n = h->is_v2 ? level_v2(h->dir) : level_v1(h->dir);
        if (n > 0 && (best == 0 || n < best))
            best = n;
        if (len <= h->base_len)
            break;
        while (len > h->base_len && h->dir[len - 1] != '/')
            len--;
        if (len > h->base_len)
            len--; /* the '/' before the component */
        h->dir[len] = '\0';
    }
    return best;
}

/* Feeds every line of path to take(); 0, or -errno. */
static int read_lines(const char *path, struct line_reader *r,
                      void (*take)(char *, struct cg_hier *, struct cg_hier *, const char *),
                      struct cg_hier *v1, struct cg_hier *v2, const char *prefix)
{
    char *line;

    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0)
        return -errno;
    r->start = r->end = 0;
    r->eof = r->skipping = false;
    r->err = 0;
    while (next_line(r, &line))
        take(line, v1, v2, prefix);
    close(r->fd);
    return r->err;
}

static void take_cgroup(char *line, struct cg_hier *v1, struct cg_hier *v2, const char *prefix)
{
    (void)prefix;
    take_cgroup_line(line, v1, v2);
}

PP_HIDDEN int pp__cgroup_ncpus(const char *proc_cgroup, const char *mountinfo,
                               const char *prefix)
{
    struct {
        struct line_reader r;
        struct cg_hier v1, v2;
    } st; /* ~25 KiB of stack rather than the heap */
    int rc;

    if (!proc_cgroup || !mountinfo || !prefix)
        return -EINVAL;
    st.v1.is_v2 = false;
    st.v2.is_v2 = true;
    st.v1.have_path = st.v1.have_dir = st.v2.have_path = st.v2.have_dir = false;
    rc = read_lines(proc_cgroup, &st.r, take_cgroup, &st.v1, &st.v2, prefix);
    if (rc < 0)
        return rc;
    if (!st.v1.have_path && !st.v2.have_path)
        return 0;
    rc = read_lines(mountinfo, &st.r, take_mount_line, &st.v1, &st.v2, prefix);
    if (rc < 0)
        return rc;
    /* Hybrid systems have both; the cpu controller sits in one of them,
     * and the other has no quota files, so the smaller limit is the one. */
    int a = hier_quota(&st.v1), b = hier_quota(&st.v2);
    if (a == 0 || (b > 0 && b < a))
        a = b;
    return a;
}

/* ---------------------------------------------------------------- */
/* Effective processors                                               */
/* ---------------------------------------------------------------- */

/* The CPUs of our affinity mask, capped by the cgroup quota (>= 1). */
static int effective_cpus(void)
{
    cpu_set_t set;
    int n = 0;

    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n == 0)
        n = 1;
    int q = pp__cgroup_ncpus("/proc/self/cgroup", "/proc/self/mountinfo", "");
    if (q > 0 && q < n)
        n = q;
    return n;
}

PP_EXPORT int pp_detect_ncpus(void)
{
    return effective_cpus();
}
