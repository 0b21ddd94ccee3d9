/*
 * conf.c - ppserver's command line, its INI config file, secret files.
 *
 * Every setting has one id (enum opt), and one function, set_value(),
 * turns text into that setting for both the command line and the config
 * file, so "-w abc" and "workers = abc" are checked by the same code and
 * fail with the same words.
 *
 * The command line is scanned into a second struct pp_srvconf (with a
 * bit per setting it gives) before the config file is read, then laid
 * over it: flags win over the file wherever they appear in argv.  The
 * scanner is ours rather than getopt's: getopt keeps global state, prints
 * its own messages and permutes argv, and we must find every -s value
 * and wipe it even when some other word is wrong.
 */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/****  Messages  ****/

/*
 * A sink for the first error only: the argv scanner goes on after an
 * error (to wipe every -s), and the first problem is the one to report.
 */
struct errbuf {
    char *buf;
    size_t len;
    int rc;                   /* 0, or the first -errno */
};

static int fail(struct errbuf *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct errbuf *e, int rc, const char *fmt, ...)
{
    if (e->rc)
        return rc;
    e->rc = rc;
    if (e->buf && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->buf, e->len, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/****  Settings  ****/

enum opt {
    OPT_WORKERS, OPT_PORT, OPT_INTERFACE, OPT_BROADCAST, OPT_AUTODISCOVERY,
    OPT_RESTART, OPT_DEBUG, OPT_HELP, OPT_LOG_FORMAT, OPT_PROTO, OPT_TIMEOUT,
    OPT_SOCKET_TIMEOUT, OPT_PID_FILE, OPT_CACHE_DIR, OPT_SECRET_FILE,
    OPT_CONFIG, OPT_MAX_CONNS, OPT_MAX_PENDING, OPT_SECRET, OPT_SLURM,
    OPT_COUNT
};

enum kind { K_FLAG, K_BOOL, K_INT, K_UINT, K_STR, K_PATH, K_SECRET };

struct optdef {
    enum kind kind;
    long min, max;            /* K_INT, K_UINT */
    bool empty_ok;            /* K_STR, K_PATH: "" is a valid value (unset) */
    const char *range;        /* K_INT, K_UINT: the range, for messages */
};

static const struct optdef opts[OPT_COUNT] = {
    [OPT_WORKERS]        = { K_INT, 1, PP_SRVCONF_WORKERS_MAX, false,
                             "1..256, or autodetect" },
    [OPT_PORT]           = { K_INT, 0, 65535, false, "0..65535" },
    [OPT_INTERFACE]      = { K_STR, 0, 0, false, NULL },
    [OPT_BROADCAST]      = { K_STR, 0, 0, true, NULL },
    [OPT_AUTODISCOVERY]  = { K_BOOL, 0, 0, false, NULL },
    [OPT_RESTART]        = { K_BOOL, 0, 0, false, NULL },
    [OPT_DEBUG]          = { K_BOOL, 0, 0, false, NULL },
    [OPT_HELP]           = { K_FLAG, 0, 0, false, NULL },
    [OPT_LOG_FORMAT]     = { K_STR, 0, 0, true, NULL },
    [OPT_PROTO]          = { K_INT, -1, 255, false, "-1..255" },
    [OPT_TIMEOUT]        = { K_UINT, 0, PP_SRVCONF_TIMEOUT_MAX, false,
                             "0..2147483 seconds" },
    [OPT_SOCKET_TIMEOUT] = { K_UINT, 0, PP_SRVCONF_TIMEOUT_MAX, false,
                             "0..2147483 seconds" },
    [OPT_PID_FILE]       = { K_PATH, 0, 0, true, NULL },
    [OPT_CACHE_DIR]      = { K_PATH, 0, 0, false, NULL },
    [OPT_SECRET_FILE]    = { K_PATH, 0, 0, false, NULL },
    [OPT_CONFIG]         = { K_PATH, 0, 0, false, NULL },
    [OPT_MAX_CONNS]      = { K_UINT, 1, 65536, false, "1..65536" },
    [OPT_MAX_PENDING]    = { K_UINT, 1, 65536, false, "1..65536" },
    [OPT_SECRET]         = { K_SECRET, 0, 0, false, NULL },
    [OPT_SLURM]          = { K_FLAG, 0, 0, false, NULL },
};

/* The string field of a K_STR / K_PATH setting, and its capacity. */
static char *str_field(struct pp_srvconf *c, enum opt id, size_t *ret_cap)
{
    switch (id) {
    case OPT_INTERFACE:   *ret_cap = sizeof(c->interface);   return c->interface;
    case OPT_BROADCAST:   *ret_cap = sizeof(c->broadcast);   return c->broadcast;
    case OPT_LOG_FORMAT:  *ret_cap = sizeof(c->log_format);  return c->log_format;
    case OPT_PID_FILE:    *ret_cap = sizeof(c->pid_file);    return c->pid_file;
    case OPT_CACHE_DIR:   *ret_cap = sizeof(c->cache_dir);   return c->cache_dir;
    case OPT_SECRET_FILE: *ret_cap = sizeof(c->secret_file); return c->secret_file;
    case OPT_CONFIG:      *ret_cap = sizeof(c->config_file); return c->config_file;
    default:              *ret_cap = 0;                      return NULL;
    }
}

/* The bool field of a K_FLAG / K_BOOL setting. */
static bool *bool_field(struct pp_srvconf *c, enum opt id)
{
    switch (id) {
    case OPT_AUTODISCOVERY: return &c->autodiscovery;
    case OPT_RESTART:       return &c->restart;
    case OPT_DEBUG:         return &c->debug;
    case OPT_HELP:          return &c->help;
    case OPT_SLURM:         return &c->slurm;
    default:                return NULL;
    }
}

/*
 * Base-10 digits with an optional leading '-', nothing else (no blanks,
 * no '+', no "0x": a port of " 1" or "1e3" is a typo, not a number).
 * Returns 0 and *ret, -EINVAL (not a number) or -ERANGE.
 */
static int parse_long(const char *s, long *ret)
{
    const char *p = s + (*s == '-');
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
            return -EINVAL;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno == ERANGE)
        return -ERANGE;
    *ret = v;
    return 0;
}

/* Returns 1, 0, or -1 for text that is no boolean. */
static int parse_bool(const char *s)
{
    static const char *const yes[] = { "true", "yes", "on", "1" };
    static const char *const no[] = { "false", "no", "off", "0" };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!strcasecmp(s, yes[i]))
            return 1;
        if (!strcasecmp(s, no[i]))
            return 0;
    }
    return -1;
}

static void set_int(struct pp_srvconf *c, enum opt id, long v)
{
    switch (id) {
    case OPT_WORKERS:        c->workers = (int)v; break;
    case OPT_PORT:           c->port = (int)v; break;
    case OPT_PROTO:          c->proto = (int)v; break;
    case OPT_TIMEOUT:        c->timeout_s = (unsigned)v; break;
    case OPT_SOCKET_TIMEOUT: c->socket_timeout_s = (unsigned)v; break;
    case OPT_MAX_CONNS:      c->max_conns = (unsigned)v; break;
    case OPT_MAX_PENDING:    c->max_pending = (unsigned)v; break;
    default:                 break;
    }
}

static int set_number(struct pp_srvconf *c, enum opt id, const char *v,
                      const char *what, struct errbuf *e)
{
    const struct optdef *d = &opts[id];
    long n = 0;

    if (id == OPT_WORKERS && !strcasecmp(v, "autodetect")) {
        c->workers = PP_SRVCONF_AUTODETECT;
        return 0;
    }
    int r = parse_long(v, &n);
    if (r == -EINVAL)
        return fail(e, -EINVAL, "ppserver: %s: not a number: '%.64s'", what, v);
    if (id == OPT_WORKERS && n == PP_SRVCONF_AUTODETECT) {
        c->workers = PP_SRVCONF_AUTODETECT;
        return 0;
    }
    if (r < 0 || n < d->min || n > d->max)
        return fail(e, -EINVAL, "ppserver: %s: %sout of range (%s): '%.64s'",
                    what, id == OPT_PORT ? "port " : "", d->range, v);
    set_int(c, id, n);
    return 0;
}

/*
 * Store v[0..len) as setting id.  v is NUL-terminated at len; what names
 * the source in messages ("-w", "FILE:3: workers").  A secret's value is
 * never echoed.  Returns 0 or -EINVAL.
 */
static int set_value(struct pp_srvconf *c, enum opt id, const char *v, size_t len,
                     const char *what, struct errbuf *e)
{
    const struct optdef *d = &opts[id];
    size_t cap;
    char *dst;
    int b;

    switch (d->kind) {
    case K_FLAG:
        *bool_field(c, id) = true;
        return 0;
    case K_BOOL:
        if ((b = parse_bool(v)) < 0)
            return fail(e, -EINVAL, "ppserver: %s: not a boolean (true/false, "
                        "yes/no, on/off, 1/0): '%.64s'", what, v);
        *bool_field(c, id) = b;
        return 0;
    case K_INT:
    case K_UINT:
        return set_number(c, id, v, what, e);
    case K_STR:
    case K_PATH:
        dst = str_field(c, id, &cap);
        if (len == 0 && !d->empty_ok)
            return fail(e, -EINVAL, "ppserver: %s: empty value", what);
        if (len >= cap)
            return fail(e, -EINVAL, "ppserver: %s: longer than %zu bytes", what, cap - 1);
        memcpy(dst, v, len + 1);
        return 0;
    case K_SECRET:
        if (len == 0)
            return fail(e, -EINVAL, "ppserver: %s: the secret is empty", what);
        if (len > PP_SRVCONF_SECRET_MAX)
            return fail(e, -EINVAL, "ppserver: %s: the secret is longer than %u bytes",
                        what, PP_SRVCONF_SECRET_MAX);
        sodium_memzero(c->secret, sizeof(c->secret));
        memcpy(c->secret, v, len);
        c->secret_len = len;
        return 0;
    }
    return fail(e, -EINVAL, "ppserver: %s: no such setting", what);
}

/* Copy setting id from src to dst (the command line over the file). */
static void copy_setting(struct pp_srvconf *dst, const struct pp_srvconf *src, enum opt id)
{
    size_t cap;
    char *d;

    switch (opts[id].kind) {
    case K_FLAG:
    case K_BOOL:
        *bool_field(dst, id) = *bool_field((struct pp_srvconf *)src, id);
        break;
    case K_INT:
    case K_UINT:
        switch (id) {
        case OPT_WORKERS:        dst->workers = src->workers; break;
        case OPT_PORT:           dst->port = src->port; break;
        case OPT_PROTO:          dst->proto = src->proto; break;
        case OPT_TIMEOUT:        dst->timeout_s = src->timeout_s; break;
        case OPT_SOCKET_TIMEOUT: dst->socket_timeout_s = src->socket_timeout_s; break;
        case OPT_MAX_CONNS:      dst->max_conns = src->max_conns; break;
        case OPT_MAX_PENDING:    dst->max_pending = src->max_pending; break;
        default:                 break;
        }
        break;
    case K_STR:
    case K_PATH:
        d = str_field(dst, id, &cap);
        memcpy(d, str_field((struct pp_srvconf *)src, id, &cap), cap);
        break;
    case K_SECRET:
        memcpy(dst->secret, src->secret, sizeof(dst->secret));
        dst->secret_len = src->secret_len;
        break;
    }
}

/****  Defaults  ****/

/* dst = a + b if it fits.  Returns true if it did. */
static bool join(char *dst, size_t cap, const char *a, const char *b)
{
    int n = snprintf(dst, cap, "%s%s", a, b);
    return n >= 0 && (size_t)n < cap;
}

void pp_srvconf_defaults(struct pp_srvconf *out)
{
    memset(out, 0, sizeof(*out));
    out->workers = PP_SRVCONF_AUTODETECT;
    out->port = PP_SRVCONF_PORT;
    strcpy(out->interface, "127.0.0.1");
    out->proto = 2;           /* pp's default; meaningless here */
    out->socket_timeout_s = PP_SRVCONF_SOCKET_TIMEOUT;
    out->max_conns = PP_SRVCONF_MAX_CONNS;
    out->max_pending = PP_SRVCONF_MAX_PENDING;

    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    char *dir = out->cache_dir;
    size_t cap = sizeof(out->cache_dir);
    if (xdg && xdg[0] == '/' && join(dir, cap, xdg, "/pp/ppserver"))
        return;
    if (home && home[0] == '/' && join(dir, cap, home, "/.cache/pp/ppserver"))
        return;
    strcpy(dir, "/var/cache/pp/ppserver");
}

/****  The INI file  ****/

struct inikey {
    const char *section;
    const char *key;
    enum opt id;
};

/* pp's keys (ppserver's parse_config), plus cache_dir and the limits. */
static const struct inikey inikeys[] = {
    { "general", "secret",         OPT_SECRET },
    { "general", "workers",        OPT_WORKERS },
    { "general", "restart",        OPT_RESTART },
    { "general", "debug",          OPT_DEBUG },
    { "general", "proto",          OPT_PROTO },
    { "general", "pid_file",       OPT_PID_FILE },
    { "general", "cache_dir",      OPT_CACHE_DIR },
    { "network", "interface",      OPT_INTERFACE },
    { "network", "port",           OPT_PORT },
    { "network", "broadcast",      OPT_BROADCAST },
    { "network", "autodiscovery",  OPT_AUTODISCOVERY },
    { "network", "timeout",        OPT_TIMEOUT },
    { "network", "socket_timeout", OPT_SOCKET_TIMEOUT },
    { "network", "max_conns",      OPT_MAX_CONNS },
    { "network", "max_pending",    OPT_MAX_PENDING },
};
#define N_INIKEYS (sizeof(inikeys) / sizeof(inikeys[0]))

/* A slice of the text: [p, p + n). */
struct span {
    const char *p;
    size_t n;
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static struct span trim(struct span s)
{
    while (s.n && is_blank(s.p[0]))
        s.p++, s.n--;
    while (s.n && is_blank(s.p[s.n - 1]))
        s.n--;
    return s;
}

static bool span_is(struct span s, const char *word)
{
    return strlen(word) == s.n && !memcmp(s.p, word, s.n);
}

/* Empty, or a comment: what may follow a section header or a quoted value. */
static bool only_comment(struct span s)
{
    s = trim(s);
    return s.n == 0 || s.p[0] == '#' || s.p[0] == ';';
}

struct iniline {
    const char *name;         /* the file, for messages */
    unsigned lineno;
    struct errbuf *e;
};

static int ini_fail(const struct iniline *l, const char *what)
{
    return fail(l->e, -EINVAL, "ppserver: %.512s:%u: %s", l->name, l->lineno, what);
}

/*
 * The value part of "key = value": a quoted string as written, else the
 * text up to an inline comment (a '#' or ';' at the start or after a
 * blank), trimmed.  Returns 0 and *ret, or -EINVAL.
 */
static int ini_value(struct span s, const struct iniline *l, struct span *ret)
{
    s = trim(s);
    if (s.n && (s.p[0] == '"' || s.p[0] == '\'')) {
        const char *end = memchr(s.p + 1, s.p[0], s.n - 1);
        if (!end)
            return ini_fail(l, "unterminated quote");
        struct span rest = { end + 1, (size_t)(s.p + s.n - end - 1) };
        if (!only_comment(rest))
            return ini_fail(l, "text after the closing quote");
        *ret = (struct span){ s.p + 1, (size_t)(end - s.p - 1) };
        return 0;
    }
    for (size_t i = 0; i < s.n; i++) {
        if ((s.p[i] == '#' || s.p[i] == ';') && (i == 0 || is_blank(s.p[i - 1]))) {
            s.n = i;
            break;
        }
    }
    *ret = trim(s);
    return 0;
}

/* Find the setting for key in section.  Returns its index, or -1. */
static int ini_lookup(const char *section, struct span key)
{
    for (size_t i = 0; i < N_INIKEYS; i++)
        if (!strcmp(inikeys[i].section, section) && span_is(key, inikeys[i].key))
            return (int)i;
    return -1;
}

static int ini_key(struct pp_srvconf *out, const char *section, struct span line,
                   const struct iniline *l)
{
    /* The value holds at most a path or a secret; one more byte tells
     * "too long" apart.  It may be the secret: wiped on the way out. */
    char val[PP_SRVCONF_PATH_MAX + 1];
    char what[600];
    const char *eq = memchr(line.p, '=', line.n);
    struct span key, v = { NULL, 0 };
    int r;

    if (!eq)
        return ini_fail(l, "expected 'key = value', '[section]' or a comment");
    key = trim((struct span){ line.p, (size_t)(eq - line.p) });
    if (key.n == 0)
        return ini_fail(l, "a value without a key");
    if (!section) {
        snprintf(what, sizeof(what), "'%.*s' outside a section ([general] or [network])",
                 (int)(key.n > 64 ? 64 : key.n), key.p);
        return ini_fail(l, what);
    }
    int k = ini_lookup(section, key);
    if (k < 0) {
        const char *other = strcmp(section, "general") ? "general" : "network";
        bool there = ini_lookup(other, key) >= 0;
        snprintf(what, sizeof(what), "unknown key '%.*s' in [%s]%s%s%s",
                 (int)(key.n > 64 ? 64 : key.n), key.p, section,
                 there ? " (it belongs in [" : "", there ? other : "", there ? "])" : "");
        return ini_fail(l, what);
    }
    if ((r = ini_value((struct span){ eq + 1, (size_t)(line.p + line.n - eq - 1) }, l, &v)))
        return r;
    if (v.n >= sizeof(val)) {
        snprintf(what, sizeof(what), "%s: value longer than %u bytes", inikeys[k].key,
                 PP_SRVCONF_PATH_MAX);
        return ini_fail(l, what);
    }
    memcpy(val, v.p, v.n);
    val[v.n] = '\0';
    snprintf(what, sizeof(what), "%.512s:%u: %s", l->name, l->lineno, inikeys[k].key);
    r = set_value(out, inikeys[k].id, val, v.n, what, l->e);
    if (r == 0 && inikeys[k].id == OPT_SECRET)
        out->secret_src = PP_SECRET_CONFIG;
    sodium_memzero(val, sizeof(val));
    return r;
}

static int ini_section(struct span line, const struct iniline *l, const char **section)
{
    const char *close = memchr(line.p, ']', line.n);
    if (!close)
        return ini_fail(l, "a section header without ']'");
    if (!only_comment((struct span){ close + 1, (size_t)(line.p + line.n - close - 1) }))
        return ini_fail(l, "text after the section header");
    struct span name = trim((struct span){ line.p + 1, (size_t)(close - line.p - 1) });
    if (span_is(name, "general") || span_is(name, "network")) {
        *section = span_is(name, "general") ? "general" : "network";
        return 0;
    }
    char what[128];
    snprintf(what, sizeof(what), "unknown section '[%.*s]' (ppserver has [general] "
             "and [network])", (int)(name.n > 64 ? 64 : name.n), name.p);
    return ini_fail(l, what);
}

int pp_srvconf_parse_ini(const char *text, size_t len, const char *name,
                         struct pp_srvconf *out, char *err, size_t errlen)
{
    struct errbuf e = { err, errlen, 0 };
    struct iniline l = { name ? name : "(config)", 0, &e };
    const char *section = NULL;
    const char *end = text + len;
    int r = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!out || (len && !text))
        return fail(&e, -EINVAL, "ppserver: pp_srvconf_parse_ini: bad arguments");
    for (const char *p = text; p < end && r == 0; ) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        struct span line = { p, (size_t)((nl ? nl : end) - p) };
        p = nl ? nl + 1 : end;
        l.lineno++;
        if (memchr(line.p, '\0', line.n)) {
            r = ini_fail(&l, "a NUL byte in the line");
            break;
        }
        line = trim(line);
        if (line.n == 0 || line.p[0] == '#' || line.p[0] == ';')
            continue;
        if (line.p[0] == '[')
            r = ini_section(line, &l, &section);
        else
            r = ini_key(out, section, line, &l);
    }
    return r;
}

/****  Files  ****/

/* read() all of fd into buf[0..cap), retrying on EINTR.  Returns the
 * bytes read (cap means "maybe more"), or -errno. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    while (have < cap) {
        ssize_t n = read(fd, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        have += (size_t)n;
    }
    return (ssize_t)have;
}

/*
 * Open path for reading, never blocking on a FIFO and never becoming a
 * controlling terminal.  follow=false refuses a symlink as the last
 * component.  Returns the fd, or -errno with the message in e.
 */
static int open_checked(const char *path, bool follow, const char *what,
                        struct errbuf *e, struct stat *ret_st)
{
    int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW);
    int fd = open(path, flags);
    if (fd < 0) {
        int err = errno;
        struct stat st;
        if (err == ELOOP && !follow && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
            return fail(e, -EACCES, "%s %.1024s: is a symbolic link; give the file "
                        "itself", what, path);
        return fail(e, -err, "%s %.1024s: %s", what, path, strerror(err));
    }
    if (fstat(fd, ret_st) < 0) {
        int err = errno;
        close(fd);
        return fail(e, -err, "%s %.1024s: %s", what, path, strerror(err));
    }
    if (!S_ISREG(ret_st->st_mode)) {
        close(fd);
        return fail(e, -EACCES, "%s %.1024s: not a regular file", what, path);
    }
    return fd;
}

/* The private-file rule for anything that holds the secret. */
static int check_private(const struct stat *st, const char *path, const char *what,
                         struct errbuf *e)
{
    if (st->st_uid != geteuid())
        return fail(e, -EACCES, "%s %.1024s: owned by uid %u, not by you (uid %u); "
                    "a file that holds the secret must be yours", what, path,
                    (unsigned)st->st_uid, (unsigned)geteuid());
    if (st->st_mode & 077)
        return fail(e, -EACCES, "%s %.1024s: group or others may access it (mode "
                    "%04o) and it holds the secret; chmod 600 it", what, path,
                    (unsigned)(st->st_mode & 07777));
    return 0;
}

/* Byte i of the concatenation a[0..na) b[..]. */
static char at2(const char *a, size_t na, const char *b, size_t i)
{
    return i < na ? a[i] : b[i - na];
}

int pp_read_secret_file(const char *path, char *buf, size_t cap, size_t *ret_len,
                        char *err, size_t errlen)
{
    struct errbuf e = { err, errlen, 0 };
    const char *what = "secret file";
    char tail[3];
    struct stat st;
    ssize_t n, t = 0;
    int r = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!path || !*path || !buf || cap < 2 || !ret_len)
        return fail(&e, -EINVAL, "pp_read_secret_file: bad arguments");
    int fd = open_checked(path, /* follow= */ false, what, &e, &st);
    if (fd < 0)
        return fd;
    if ((r = check_private(&st, path, what, &e)))
        goto out;
    /* The secret, then up to 3 more bytes: a "\r\n" beyond cap - 1 is
     * still a secret that fits, a fourth byte is not. */
    n = read_all(fd, buf, cap - 1);
    if (n == (ssize_t)(cap - 1))
        t = read_all(fd, tail, sizeof(tail));
    if (n < 0 || t < 0) {
        r = fail(&e, n < 0 ? (int)n : (int)t, "%s %.1024s: %s", what, path,
                 strerror(-(n < 0 ? (int)n : (int)t)));
        goto out;
    }
    size_t len = (size_t)n + (size_t)t;
    if (len && at2(buf, (size_t)n, tail, len - 1) == '\n') {
        len--;
        if (len && at2(buf, (size_t)n, tail, len - 1) == '\r')
            len--;
    }
    if (len > cap - 1 || t == (ssize_t)sizeof(tail)) {
        r = fail(&e, -EFBIG, "%s %.1024s: longer than %zu bytes", what, path, cap - 1);
        goto out;
    }
    if (len == 0) {
        r = fail(&e, -EINVAL, "%s %.1024s: is empty", what, path);
        goto out;
    }
    if (memchr(buf, '\0', len)) {
        r = fail(&e, -EINVAL, "%s %.1024s: contains a NUL byte", what, path);
        goto out;
    }
    buf[len] = '\0';
    *ret_len = len;
out:
    close(fd);
    sodium_memzero(tail, sizeof(tail));
    if (r)
        sodium_memzero(buf, cap);
    return r;
}

/*
 * Read and apply the -c file.  Anyone's config file may be read, but it
 * must not be writable by group or others (they could point pid_file or
 * cache_dir anywhere), must be ours or root's, and must be private if it
 * holds the secret.
 */
static int load_config(const char *path, struct pp_srvconf *out, struct errbuf *e)
{
    const char *what = "ppserver: config file";
    struct stat st;
    char *text = NULL;
    ssize_t n = 0;
    int r;

    int fd = open_checked(path, /* follow= */ true, what, e, &st);
    if (fd < 0)
        return fd;
    if (st.st_mode & 022) {
        r = fail(e, -EACCES, "%s %.1024s: group or others may write it (mode %04o); "
                 "chmod go-w it", what, path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        r = fail(e, -EACCES, "%s %.1024s: owned by uid %u, neither you (uid %u) nor "
                 "root", what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        goto out;
    }
    if (st.st_size > (off_t)PP_SRVCONF_FILE_MAX) {
        r = fail(e, -EFBIG, "%s %.1024s: larger than %u bytes", what, path,
                 PP_SRVCONF_FILE_MAX);
        goto out;
    }
    if (!(text = malloc(PP_SRVCONF_FILE_MAX + 1))) {
        r = fail(e, -ENOMEM, "%s %.1024s: out of memory", what, path);
        goto out;
    }
    /* One byte more than the limit tells a file that grew apart. */
    n = read_all(fd, text, PP_SRVCONF_FILE_MAX + 1);
    if (n < 0) {
        r = fail(e, (int)n, "%s %.1024s: %s", what, path, strerror(-(int)n));
        goto out;
    }
    if (n > (ssize_t)PP_SRVCONF_FILE_MAX) {
        r = fail(e, -EFBIG, "%s %.1024s: larger than %u bytes", what, path,
                 PP_SRVCONF_FILE_MAX);
        goto out;
    }
    enum pp_secret_src before = out->secret_src;
    out->secret_src = PP_SECRET_NONE;
    if ((r = pp_srvconf_parse_ini(text, (size_t)n, path, out, e->buf, e->len))) {
        e->rc = r;
        goto out;
    }
    if (out->secret_src == PP_SECRET_CONFIG)
        r = check_private(&st, path, what, e);
    else
        out->secret_src = before;
out:
    if (text) {
        sodium_memzero(text, (size_t)(n > 0 ? n : 0));
        free(text);
    }
    close(fd);
    return r;
}

/****  The command line  ****/

struct flagdef {
    char short_name;          /* 0: long only */
    const char *long_name;    /* NULL: short only */
    enum opt id;
};

static const struct flagdef flags[] = {
    { 'h', "help",        OPT_HELP },
    { 'd', NULL,          OPT_DEBUG },
    { 'a', NULL,          OPT_AUTODISCOVERY },
    { 'r', NULL,          OPT_RESTART },
    { 'f', NULL,          OPT_LOG_FORMAT },
    { 'n', NULL,          OPT_PROTO },
    { 'c', NULL,          OPT_CONFIG },
    { 'i', NULL,          OPT_INTERFACE },
    { 'b', NULL,          OPT_BROADCAST },
    { 'p', NULL,          OPT_PORT },
    { 'w', NULL,          OPT_WORKERS },
    { 's', NULL,          OPT_SECRET },
    { 't', NULL,          OPT_TIMEOUT },
    { 'k', NULL,          OPT_SOCKET_TIMEOUT },
    { 'P', NULL,          OPT_PID_FILE },
    { 0,   "cache-dir",   OPT_CACHE_DIR },
    { 0,   "secret-file", OPT_SECRET_FILE },
    { 0,   "max-conns",   OPT_MAX_CONNS },
    { 0,   "max-pending", OPT_MAX_PENDING },
    { 0,   "slurm",       OPT_SLURM },
};
#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

/* The command line's settings, and which of them it gave. */
struct cli {
    struct pp_srvconf c;
    uint32_t given;           /* bit (1 << enum opt) */
};

static bool takes_value(enum opt id)
{
    return opts[id].kind != K_FLAG && opts[id].kind != K_BOOL;
}

/* Apply flag f with value v (NULL for a switch).  Returns 0 or -EINVAL. */
static int cli_set(struct cli *cli, const struct flagdef *f, const char *v,
                   struct errbuf *e)
{
    char what[64];
    if (f->short_name)
        snprintf(what, sizeof(what), "-%c", f->short_name);
    else
        snprintf(what, sizeof(what), "--%s", f->long_name);
    cli->given |= 1u << f->id;
    if (!v)
        return set_value(&cli->c, f->id, "true", 4, what, e);
    return set_value(&cli->c, f->id, v, strlen(v), what, e);
}

/* Copy a -s value, then overwrite it in argv so ps no longer shows it. */
static int cli_secret(struct cli *cli, const struct flagdef *f, char *v, struct errbuf *e)
{
    int r = cli_set(cli, f, v, e);
    sodium_memzero(v, strlen(v));
    return r;
}

static int cli_long(struct cli *cli, int argc, char **argv, int *i, struct errbuf *e)
{
    char *name = argv[*i] + 2;
    char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    const struct flagdef *f = NULL;

    for (size_t k = 0; k < N_FLAGS && !f; k++)
        if (flags[k].long_name && strlen(flags[k].long_name) == nlen &&
            !memcmp(flags[k].long_name, name, nlen))
            f = &flags[k];
    if (!f)
        return fail(e, -EINVAL, "ppserver: unknown option '--%.*s' (see --help)",
                    (int)(nlen > 64 ? 64 : nlen), name);
    if (!takes_value(f->id)) {
        if (eq)
            return fail(e, -EINVAL, "ppserver: --%s takes no value", f->long_name);
        return cli_set(cli, f, NULL, e);
    }
    if (eq)
        return cli_set(cli, f, eq + 1, e);
    if (*i + 1 >= argc)
        return fail(e, -EINVAL, "ppserver: --%s: needs a value", f->long_name);
    return cli_set(cli, f, argv[++*i], e);
}

/* One word of short flags ("-dar", "-p60000", "-p" + next word). */
static void cli_short(struct cli *cli, int argc, char **argv, int *i, struct errbuf *e)
{
    for (char *p = argv[*i] + 1; *p; p++) {
        const struct flagdef *f = NULL;
        for (size_t k = 0; k < N_FLAGS && !f; k++)
            if (flags[k].short_name == *p)
                f = &flags[k];
        if (!f) {
            fail(e, -EINVAL, "ppserver: unknown option '-%c' (see --help)", *p);
            continue;
        }
        if (!takes_value(f->id)) {
            cli_set(cli, f, NULL, e);
            continue;
        }
        char *v = p[1] ? p + 1 : NULL;
        if (!v && *i + 1 < argc)
            v = argv[++*i];
        if (!v)
            fail(e, -EINVAL, "ppserver: -%c: needs a value", *p);
        else if (f->id == OPT_SECRET)
            cli_secret(cli, f, v, e);
        else
            cli_set(cli, f, v, e);
        return;               /* the value ended this word */
    }
}

/*
 * Scan all of argv into cli, going on after errors so that every -s is
 * wiped; e keeps the first error.
 */
static void cli_scan(struct cli *cli, int argc, char **argv, struct errbuf *e)
{
    bool opts_done = false;

    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!a)
            break;
        if (!opts_done && !strcmp(a, "--"))
            opts_done = true;
        else if (opts_done || a[0] != '-' || a[1] == '\0')
            fail(e, -EINVAL, "ppserver: unexpected argument '%.64s' (ppserver takes "
                 "options only; see --help)", a);
        else if (a[1] == '-')
            cli_long(cli, argc, argv, &i, e);
        else
            cli_short(cli, argc, argv, &i, e);
    }
}

/****  All of it  ****/

static int secret_from_env(struct pp_srvconf *out, struct errbuf *e)
{
    const char *v = getenv("PP_SECRET");
    int r = 0;

    if (v && *v) {
        r = set_value(out, OPT_SECRET, v, strlen(v), "PP_SECRET", e);
        if (r == 0)
            out->secret_src = PP_SECRET_ENV;
    }
    /* Session agents run clients' code: they must not inherit it. */
    if (v)
        unsetenv("PP_SECRET");
    return r;
}

static int apply(struct pp_srvconf *out, struct cli *cli, struct errbuf *e)
{
    int r;

    if ((r = secret_from_env(out, e)))
        return r;
    if (cli->given & (1u << OPT_CONFIG)) {
        copy_setting(out, &cli->c, OPT_CONFIG);
        if ((r = load_config(out->config_file, out, e)))
            return r;
    }
    for (int id = 0; id < OPT_COUNT; id++)
        if ((cli->given & (1u << id)) && id != OPT_SECRET)
            copy_setting(out, &cli->c, (enum opt)id);
    if (cli->given & (1u << OPT_SECRET_FILE)) {
        char msg[1200];
        size_t len = 0;
        r = pp_read_secret_file(out->secret_file, out->secret, sizeof(out->secret),
                                &len, msg, sizeof(msg));
        if (r)
            return fail(e, r, "ppserver: --secret-file: %s", msg);
        out->secret_len = len;
        out->secret_src = PP_SECRET_FILE;
    }
    if (cli->given & (1u << OPT_SECRET)) {
        copy_setting(out, &cli->c, OPT_SECRET);
        out->secret_src = PP_SECRET_ARGV;
    }
    if (out->secret_len == 0)
        return fail(e, -EINVAL, "ppserver: no secret: give -s, --secret-file, a config "
                    "file with secret=, or PP_SECRET; there is no default");
    return 0;
}

int pp_srvconf_parse(int argc, char **argv, struct pp_srvconf *out,
                     char *err, size_t errlen)
{
    struct errbuf e = { err, errlen, 0 };
    struct cli cli;
    int r;

    if (err && errlen)
        err[0] = '\0';
    if (!out || argc < 0 || (argc > 0 && !argv))
        return fail(&e, -EINVAL, "ppserver: pp_srvconf_parse: bad arguments");
    pp_srvconf_defaults(out);
    pp_srvconf_defaults(&cli.c);
    cli.given = 0;
    cli_scan(&cli, argc, argv, &e);
    r = e.rc;
    if (r == 0 && cli.c.help)
        out->help = true;
    else if (r == 0)
        r = apply(out, &cli, &e);
    pp_srvconf_wipe(&cli.c);
    if (r) {
        pp_srvconf_wipe(out);
        memset(out, 0, sizeof(*out));
    }
    return r;
}

void pp_srvconf_wipe(struct pp_srvconf *conf)
{
    if (!conf)
        return;
    sodium_memzero(conf->secret, sizeof(conf->secret));
    conf->secret_len = 0;
    conf->secret_src = PP_SECRET_NONE;
}

/****  --help  ****/

static const char usage[] =
    "Parallel Python Network Server (pp in C)\n"
    "Usage: ppserver [-hdar] [-f format] [-n proto] [-c config_path] [-i interface]\n"
    "                [-b broadcast] [-p port] [-w nworkers] [-s secret] [-t seconds]\n"
    "                [-k seconds] [-P pid_file] [--secret-file FILE] [--cache-dir DIR]\n"
    "                [--max-conns N] [--max-pending N] [--slurm]\n"
    "\n"
    "-h, --help         : this help message\n"
    "-d                 : set log level to debug\n"
    "-f format          : log format (accepted and stored)\n"
    "-a                 : enable auto-discovery service (UDP, same port number)\n"
    "-r                 : restart worker process after each task completion\n"
    "-n proto           : protocol number for pickle module (accepted, ignored)\n"
    "-c path            : path to config file (INI: [general], [network])\n"
    "-i interface       : interface to listen (default 127.0.0.1)\n"
    "-b broadcast       : with -a: send beacons there every 10 s (and answer\n"
    "                     queries on every interface)\n"
    "-p port            : port to listen (default 60000; 0 = any free port)\n"
    "-w nworkers        : number of workers to start (default: the effective CPUs)\n"
    "-s secret          : secret for authentication (prefer --secret-file)\n"
    "-t seconds         : timeout to exit if no connections with clients exist\n"
    "                     (default 0 = never)\n"
    "-k seconds         : socket timeout in seconds: a silent connection is dead\n"
    "                     (default 3)\n"
    "-P pid_file        : file to write PID to\n"
    "--secret-file FILE : read the secret from FILE (mode 0600, yours)\n"
    "--cache-dir DIR    : code cache (default $XDG_CACHE_HOME/pp/ppserver,\n"
    "                     else $HOME/.cache/pp/ppserver)\n"
    "--max-conns N      : client connections at once (default 64)\n"
    "--max-pending N    : handshakes in progress at once (default 16)\n"
    "--slurm            : a task of a Slurm step: -w defaults to the job's CPUs\n"
    "                     on this node, and once listening it prints\n"
    "                     'ppserver: slurm node HOST:PORT step J.S' on stdout\n"
    "\n"
    "To print server stats send SIGUSR1 to its main process.\n"
    "\n"
    "There is no default secret.  It comes from, lowest priority first:\n"
    "PP_SECRET in the environment, secret= in the config file, --secret-file,\n"
    "-s.  A file that holds the secret must be yours and mode 0600.\n";

const char *pp_srvconf_usage(void)
{
    return usage;
}
