/*
 * hostlist.c - Slurm hostlist expansion (hostlist.h).
 *
 * Two passes over the list.  The first (list_check) reads every byte
 * once, expands nothing, and works out per item how many names it makes
 * and how long the longest is, in saturating arithmetic, so that any
 * input costs O(its length) before anything is decided.  The second
 * (item_expand) runs only on a list the first accepted: it keeps one
 * cursor per bracket group, writes each name into a stack buffer whose
 * size the first pass already proved enough, and steps the cursors like
 * an odometer.  No allocation anywhere.
 */
#include "hostlist.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One element of a group: "lo" or "lo-hi". */
struct elem {
    uint32_t lo, hi;
    size_t width;            /* digits lo was written with: the padding */
};

/* A group's cursor during expansion. */
struct group {
    const char *first;       /* its first element, just after '[' */
    const char *close;       /* its ']' */
    const char *next;        /* the ',' or ']' after the current element */
    uint32_t val, hi;        /* current number; the current element's hi */
    size_t width;            /* the current element's padding */
};

/* What the first pass learns about one item. */
struct item_info {
    uint64_t hosts;          /* names it makes, saturated at the cap */
    size_t name_len;         /* its longest name */
    unsigned groups;
    bool too_big;            /* a group count over PP_HOSTLIST_GROUPS_MAX */
};

/****  Characters and numbers  ****/

static bool is_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Printable ASCII but the list's own punctuation (hostlist.h: namechar). */
static bool is_namechar(char c)
{
    unsigned char u = (unsigned char)c;
    return u >= 0x21 && u <= 0x7e && c != ',' && c != '[' && c != ']';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t digits(uint32_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/*
 * num_parse - the decimal number at p.  Leading zeros count toward
 * *ret_width but not the value, so the loop is bounded by the string
 * and the value check only ever sees significant digits.  Returns the
 * byte after the digits, or NULL if there are none or the value is over
 * UINT32_MAX.
 */
static const char *num_parse(const char *p, uint32_t *ret_val, size_t *ret_width)
{
    const char *start = p;
    uint64_t v = 0;

    for (; is_digit(*p); p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return NULL;
    }
    if (p == start)
        return NULL;
    *ret_val = (uint32_t)v;
    *ret_width = (size_t)(p - start);
    return p;
}

/*
 * elem_parse - the element at p, "lo" or "lo-hi" with lo <= hi, which
 * must end at a ',' or the group's ']'.  Anything else there (a blank, a
 * letter, '[', the end of the string) makes the element malformed.
 * Returns the ',' or ']' after it, or NULL.
 */
static const char *elem_parse(const char *p, struct elem *ret)
{
    size_t hi_width;

    p = num_parse(p, &ret->lo, &ret->width);
    if (!p)
        return NULL;
    ret->hi = ret->lo;
    if (*p == '-') {
        p = num_parse(p + 1, &ret->hi, &hi_width);
        if (!p || ret->hi < ret->lo)
            return NULL;
    }
    return *p == ',' || *p == ']' ? p : NULL;
}

/* The longest number an element writes: its padding or hi's digits. */
static size_t elem_len(const struct elem *e)
{
    size_t d = digits(e->hi);
    return e->width > d ? e->width : d;
}

/* a + b and a * b, saturated at cap.  cap <= 2^31 (list_check), a <= cap,
 * and b <= 2^32 for a sum or <= cap for a product, so neither overflows
 * uint64_t before the comparison. */
static uint64_t sat_add(uint64_t a, uint64_t b, uint64_t cap)
{
    return a + b > cap ? cap : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b, uint64_t cap)
{
    return a * b > cap ? cap : a * b;
}

/****  First pass: check and count  ****/

/*
 * group_check - the group whose '[' is at p: adds its names to *info
 * (multiplying: the groups of an item combine) and its longest number
 * to info->name_len.  Returns the byte after its ']', or NULL if it is
 * malformed.
 */
static const char *group_check(const char *p, uint64_t cap, struct item_info *info)
{
    uint64_t n = 0;
    size_t len = 0;

    do {
        struct elem e;
        p = elem_parse(p + 1, &e);   /* p + 1: past the '[' or ',' */
        if (!p)
            return NULL;
        /* hi - lo + 1 <= 2^32: fits before saturating. */
        n = sat_add(n, (uint64_t)e.hi - e.lo + 1, cap);
        if (elem_len(&e) > len)
            len = elem_len(&e);
    } while (*p == ',');

    info->hosts = sat_mul(info->hosts, n, cap);
    info->name_len += len;
    if (++info->groups > PP_HOSTLIST_GROUPS_MAX)
        info->too_big = true;
    return p + 1;
}

/*
 * item_check - the item that starts at p (not a separator, not the end).
 * Fills *ret and returns the byte after the item (a separator or the
 * end), or NULL if it is malformed.
 */
static const char *item_check(const char *p, uint64_t cap, struct item_info *ret)
{
    *ret = (struct item_info){ .hosts = 1 };
    while (*p && !is_sep(*p)) {
        if (*p == '[') {
            p = group_check(p, cap, ret);
            if (!p)
                return NULL;
        } else if (is_namechar(*p)) {
            ret->name_len++;
            p++;
        } else {
            return NULL;  /* ']' outside a group, or a byte no name has */
        }
    }
    return p;
}

/*
 * list_check - the whole list, before any name is handed out.  Every
 * byte is read even after a limit is passed, so that a malformed list
 * always reads -EINVAL, whatever else is wrong with it.  Returns the
 * number of names (<= lim), -EINVAL or -E2BIG.
 */
static int list_check(const char *p, uint64_t lim)
{
    uint64_t cap = lim + 1, total = 0;  /* cap: "more than lim" */
    bool too_big = false;

    for (;;) {
        while (is_sep(*p))
            p++;
        if (!*p)
            break;
        struct item_info info;
        p = item_check(p, cap, &info);
        if (!p)
            return -EINVAL;
        if (info.too_big || info.name_len > PP_HOSTLIST_NAME_MAX)
            too_big = true;
        total = sat_add(total, info.hosts, cap);
    }
    if (too_big || total > lim)
        return -E2BIG;
    return (int)total;
}

/****  Second pass: expand  ****/

/* Point g at the element at p (just after '[' or ','), at its lo. */
static void group_load(struct group *g, const char *p)
{
    struct elem e = { 0, 0, 1 };
    /* Checked by list_check; NULL cannot happen, but stay in bounds. */
    g->next = elem_parse(p, &e);
    if (!g->next)
        g->next = g->close;
    g->val = e.lo;
    g->hi = e.hi;
    g->width = e.width;
}

/* Step g to its next number; false (and g unchanged) when it has none. */
static bool group_step(struct group *g)
{
    if (g->val < g->hi) {
        g->val++;
        return true;
    }
    if (*g->next == ',') {
        group_load(g, g->next + 1);
        return true;
    }
    return false;
}

/* Write v zero-filled to width digits at out; returns the end. */
static char *num_put(char *out, uint32_t v, size_t width)
{
    char d[10];
    size_t n = 0;

    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (; width > n; width--)
        *out++ = '0';
    while (n)
        *out++ = d[--n];
    return out;
}

/*
 * name_put - the item p..end with each group's current number in place
 * of its brackets, NUL-terminated, into out.  list_check proved the
 * longest such name fits PP_HOSTLIST_NAME_MAX.
 */
static void name_put(const char *p, const char *end, const struct group *g, char *out)
{
    while (p < end) {
        if (*p == '[') {
            out = num_put(out, g->val, g->width);
            p = g->close + 1;
            g++;
        } else {
            *out++ = *p++;
        }
    }
    *out = '\0';
}

/*
 * item_expand - hand out every name of the checked item p..end (with
 * ngroups groups), last group fastest.  Adds them to *count.  Returns 0,
 * or fn's negative value.
 */
static int item_expand(const char *p, const char *end, unsigned ngroups,
                       int (*fn)(void *ctx, const char *host), void *ctx, int *count)
{
    struct group g[PP_HOSTLIST_GROUPS_MAX];
    char name[PP_HOSTLIST_NAME_MAX + 1];
    unsigned n = 0;

    for (const char *q = p; q < end && n < ngroups && n < PP_HOSTLIST_GROUPS_MAX; q++) {
        if (*q != '[')
            continue;
        g[n].first = q + 1;
        for (g[n].close = q; *g[n].close != ']'; g[n].close++)
            ;
        group_load(&g[n], g[n].first);
        q = g[n++].close;
    }

    for (;;) {
        name_put(p, end, g, name);
        int r = fn(ctx, name);
        if (r < 0)
            return r;
        (*count)++;
        /* The odometer: the last group that can step does; every group
         * after it starts over.  None can: the item is done. */
        unsigned i = n;
        while (i > 0 && !group_step(&g[i - 1]))
            i--;
        if (i == 0)
            return 0;
        for (unsigned j = i; j < n; j++)
            group_load(&g[j], g[j].first);
    }
}

int pp_hostlist_expand(const char *list, int (*fn)(void *ctx, const char *host), void *ctx,
                       unsigned max_hosts)
{
    /* The count comes back as an int. */
    uint64_t lim = max_hosts > INT_MAX ? INT_MAX : max_hosts;
    int count = 0;

    if (!list)
        return -EINVAL;
    int total = list_check(list, lim);
    if (total <= 0 || !fn)
        return total;

    const char *p = list;
    for (;;) {
        while (is_sep(*p))
            p++;
        if (!*p)
            break;
        struct item_info info;
        const char *end = item_check(p, lim + 1, &info);
        if (!end)
            return -EINVAL;  /* not after list_check; defensive */
        int r = item_expand(p, end, info.groups, fn, ctx, &count);
        if (r < 0)
            return r;
        p = end;
    }
    return count;
}
