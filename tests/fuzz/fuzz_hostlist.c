/*
 * Description: libFuzzer target for net/hostlist.c (Slurm hostlist
 * expansion).  The input's bytes after a two-byte header are the list.
 *
 * Input layout (missing bytes read as zero):
 *   [0]  mode  bit 7 clear: small, max_hosts = (mode & 0x7f) * 4 (0..508),
 *              and the result is compared with a second, deliberately
 *              naive expander in this file (a recursive one, written
 *              from hostlist.h's grammar, not from hostlist.c);
 *              bit 7 set: large, max_hosts = UINT_MAX, only the first
 *              stop (<= 1024) names are walked
 *   [1]  stop  small: stop the walk at this name (0: never); large:
 *              walk stop * 4 + 1 names
 *   then the list (up to MAX_LIST bytes; a NUL ends it early).
 *
 * Properties checked (a violation aborts):
 *   - the result is a count, -EINVAL, -E2BIG or fn's own value; counting
 *     only (fn = NULL) gives the same result; a count is <= max_hosts and
 *     equals the number of callbacks; a refused list gets no callback;
 *   - every name is non-empty, at most PP_HOSTLIST_NAME_MAX bytes, and
 *     made only of printable ASCII other than ",[]";
 *   - small mode: the names (or the error) are those of the naive
 *     expander, in the same order; a stopping fn stops the walk exactly
 *     there, with its value, after the same first names;
 *   - large mode: however many names the list makes (up to 2^31 - 1),
 *     a walk stopped after a few returns at once.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostlist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                         \
        }                                                                    \
    } while (0)

#define MAX_LIST  4096u
#define REF_MAX   508u                  /* small mode's largest max_hosts */
#define STOP_CODE (-4242)               /* fn's stopping value */

static char list[MAX_LIST + 1];

/****  What fn sees  ****/

struct walk {
    char names[REF_MAX][PP_HOSTLIST_NAME_MAX + 1];  /* the first REF_MAX */
    unsigned calls;
    unsigned stop_at;                   /* 0: never */
};

static struct walk w1, w2;

static bool namechar(char c)
{
    unsigned char u = (unsigned char)c;
    return u > 0x20 && u < 0x7f && c != ',' && c != '[' && c != ']';
}

static int on_name(void *ctx, const char *host)
{
    struct walk *w = ctx;
    size_t len = strnlen(host, PP_HOSTLIST_NAME_MAX + 1);
    CHECK(len >= 1 && len <= PP_HOSTLIST_NAME_MAX);
    for (size_t i = 0; i < len; i++)
        CHECK(namechar(host[i]));
    if (w->calls < REF_MAX)
        memcpy(w->names[w->calls], host, len + 1);
    w->calls++;
    return w->calls == w->stop_at ? STOP_CODE : 0;
}

/****  The naive expander  ****/

/* Names in the order the grammar gives, or an error, built by recursion
 * over an item's groups with snprintf doing the padding. */
struct ref {
    char names[REF_MAX][PP_HOSTLIST_NAME_MAX + 1];
    unsigned n, max;
    int err;
};

static struct ref ref;

static bool sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The grammar as a state machine, numbers checked on the side. */
static bool ref_syntax(const char *s)
{
    enum { TEXT, NEED_LO, LO, NEED_HI, HI } st = TEXT;
    uint64_t lo = 0, v = 0;

    for (;; s++) {
        char c = *s;
        bool digit = c >= '0' && c <= '9';
        if (digit && st != TEXT) {
            v = v * 10 + (uint64_t)(c - '0');
            if (v > UINT32_MAX)
                return false;
        }
        switch (st) {
        case TEXT:
            if (c == '\0')
                return true;
            if (c == '[')
                st = NEED_LO, v = 0;
            else if (!sep(c) && !namechar(c))
                return false;
            break;
        case NEED_LO:
        case NEED_HI:
            if (!digit)
                return false;
            st = st == NEED_LO ? LO : HI;
            break;
        case LO:
        case HI:
            if (digit)
                break;
            if (st == HI && v < lo)
                return false;
            if (st == LO && c == '-') {
                lo = v, v = 0, st = NEED_HI;
            } else if (c == ',') {
                v = 0, st = NEED_LO;
            } else if (c == ']') {
                st = TEXT;
            } else {
                return false;
            }
            break;
        }
    }
}

static void ref_emit(const char *buf, size_t len)
{
    if (ref.n >= ref.max) {
        ref.err = -E2BIG;
        return;
    }
    memcpy(ref.names[ref.n], buf, len);
    ref.names[ref.n][len] = '\0';
    ref.n++;
}

/* Expand s..end after buf[0..len): text up to the next group, then each
 * of the group's numbers followed by the rest, recursively. */
static void ref_rec(const char *s, const char *end, char *buf, size_t len)
{
    while (s < end && *s != '[') {
        if (len + 1 > PP_HOSTLIST_NAME_MAX) {
            ref.err = -E2BIG;
            return;
        }
        buf[len++] = *s++;
    }
    if (s == end) {
        ref_emit(buf, len);
        return;
    }
    const char *close = memchr(s, ']', (size_t)(end - s));
    for (const char *e = s + 1; e < close && !ref.err; e++) {
        char *after;
        unsigned long lo = strtoul(e, &after, 10), hi = lo;
        int width = (int)(after - e);
        if (*after == '-')
            hi = strtoul(after + 1, &after, 10);
        for (unsigned long v = lo; v <= hi && !ref.err; v++) {
            char num[PP_HOSTLIST_NAME_MAX + 16];
            if (width > (int)PP_HOSTLIST_NAME_MAX) {
                ref.err = -E2BIG;
                return;
            }
            int k = snprintf(num, sizeof(num), "%0*lu", width, v);
            if (len + (size_t)k > PP_HOSTLIST_NAME_MAX) {
                ref.err = -E2BIG;
                return;
            }
            memcpy(buf + len, num, (size_t)k);
            ref_rec(close + 1, end, buf, len + (size_t)k);
        }
        e = after;  /* at ',' or ']' */
    }
}

static void ref_expand(const char *s, unsigned max)
{
    static char buf[PP_HOSTLIST_NAME_MAX + 16];

    ref.n = 0;
    ref.max = max;
    ref.err = 0;
    if (!ref_syntax(s)) {
        ref.err = -EINVAL;
        return;
    }
    while (!ref.err) {
        while (sep(*s))
            s++;
        if (!*s)
            return;
        const char *end = s;
        unsigned groups = 0;
        for (bool in = false; *end && (in || !sep(*end)); end++) {
            groups += *end == '[';
            in = *end == '[' ? true : *end == ']' ? false : in;
        }
        if (groups > PP_HOSTLIST_GROUPS_MAX)
            ref.err = -E2BIG;
        else
            ref_rec(s, end, buf, 0);
        s = end;
    }
}

/****  The target  ****/

static int walk(struct walk *w, unsigned stop_at, unsigned max)
{
    w->calls = 0;
    w->stop_at = stop_at;
    return pp_hostlist_expand(list, on_name, w, max);
}

static void small(unsigned max, unsigned stop)
{
    int r = walk(&w1, 0, max);
    CHECK(r == pp_hostlist_expand(list, NULL, NULL, max));
    CHECK(r >= 0 || r == -EINVAL || r == -E2BIG);
    if (r < 0)
        CHECK(w1.calls == 0);
    else
        CHECK((unsigned)r <= max && (unsigned)r == w1.calls);

    ref_expand(list, max);
    CHECK(r == (ref.err ? ref.err : (int)ref.n));
    for (int i = 0; i < r; i++)
        CHECK(strcmp(w1.names[i], ref.names[i]) == 0);

    if (stop == 0 || r < 0)
        return;
    int s = walk(&w2, stop, max);
    if (stop <= (unsigned)r)
        CHECK(s == STOP_CODE && w2.calls == stop);
    else
        CHECK(s == r && w2.calls == (unsigned)r);
    for (unsigned i = 0; i < w2.calls; i++)
        CHECK(strcmp(w1.names[i], w2.names[i]) == 0);
}

static void large(unsigned stop)
{
    int r = pp_hostlist_expand(list, NULL, NULL, UINT_MAX);
    CHECK(r >= 0 || r == -EINVAL || r == -E2BIG);
    int s = walk(&w1, stop, UINT_MAX);
    if (r < 0)
        CHECK(s == r && w1.calls == 0);
    else if (stop <= (unsigned)r)
        CHECK(s == STOP_CODE && w1.calls == stop);
    else
        CHECK(s == r && w1.calls == (unsigned)r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t mode = size > 0 ? data[0] : 0, stop = size > 1 ? data[1] : 0;
    size_t n = size > 2 ? size - 2 : 0;
    if (n > MAX_LIST)
        n = MAX_LIST;
    if (n)
        memcpy(list, data + 2, n);
    list[n] = '\0';

    if (mode & 0x80)
        large((unsigned)stop * 4 + 1);
    else
        small((unsigned)(mode & 0x7f) * 4, stop);
    return 0;
}
