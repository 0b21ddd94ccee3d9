/*
 * peer_common.c - the jobs, the command line and the JSON line shared by
 * every C peer (see peer_common.h for the contract).
 *
 * peer_mp.py re-implements the same definitions in Python; a change to a
 * job, the payload pattern, the LCG or a JSON field here must be made
 * there too, or ppbench compares different work.
 */
#define _GNU_SOURCE
#include "peer_common.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

static const char *const workload_names[PEER_NWORKLOADS] = {
    [PEER_OVERHEAD] = "overhead",   [PEER_MAP] = "map",
    [PEER_LATENCY] = "latency",     [PEER_PAYLOAD] = "payload",
    [PEER_SCALING] = "scaling",     [PEER_IMBALANCE] = "imbalance",
    [PEER_STREAM] = "stream",
    [PEER_REMOTE_OVERHEAD] = "remote-overhead",
    [PEER_REMOTE_LATENCY] = "remote-latency",
    [PEER_REMOTE_PAYLOAD] = "remote-payload",
};

const char *peer_workload_name(enum peer_workload w)
{
    return (unsigned)w < PEER_NWORKLOADS ? workload_names[w] : "?";
}

enum peer_workload peer_workload_base(enum peer_workload w)
{
    switch (w) {
    case PEER_REMOTE_OVERHEAD:
        return PEER_OVERHEAD;
    case PEER_REMOTE_LATENCY:
        return PEER_LATENCY;
    case PEER_REMOTE_PAYLOAD:
        return PEER_PAYLOAD;
    default:
        return w;
    }
}

uint64_t peer_remote_window(enum peer_workload w, size_t payload)
{
    if (w == PEER_REMOTE_LATENCY)
        return 1;
    if (w != PEER_REMOTE_PAYLOAD || payload == 0)
        return PEER_REMOTE_WINDOW;
    uint64_t n = PEER_REMOTE_INFLIGHT_BYTES / payload;
    return n < 2 ? 2 : (n > PEER_REMOTE_WINDOW ? PEER_REMOTE_WINDOW : n);
}

static int usage(const char *why, const char *arg)
{
    fprintf(stderr,
            "%s: %s%s%s\n"
            "usage: %s --workload W --workers N --jobs J [--payload B] "
            "[--echo] [--work-us U] [--seed S] [--variant V]\n",
            program_invocation_short_name, why, arg ? ": " : "",
            arg ? arg : "", program_invocation_short_name);
    return -PEER_EXIT_USAGE;
}

/* strtoull that rejects signs, junk and values above max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
    char *end;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -EINVAL;
    *ret = v;
    return 0;
}

static int parse_workload(const char *s, enum peer_workload *ret)
{
    for (int w = 0; w < PEER_NWORKLOADS; w++) {
        if (strcmp(s, workload_names[w]) == 0) {
            *ret = (enum peer_workload)w;
            return 0;
        }
    }
    return -EINVAL;
}

enum { OPT_WORKLOAD = 256, OPT_WORKERS, OPT_JOBS, OPT_PAYLOAD, OPT_ECHO,
       OPT_WORK_US, OPT_SEED, OPT_VARIANT };

static const struct option long_opts[] = {
    { "workload", required_argument, NULL, OPT_WORKLOAD },
    { "workers", required_argument, NULL, OPT_WORKERS },
    { "jobs", required_argument, NULL, OPT_JOBS },
    { "payload", required_argument, NULL, OPT_PAYLOAD },
    { "echo", no_argument, NULL, OPT_ECHO },
    { "work-us", required_argument, NULL, OPT_WORK_US },
    { "seed", required_argument, NULL, OPT_SEED },
    { "variant", required_argument, NULL, OPT_VARIANT },
    { NULL, 0, NULL, 0 },
};

/* Applies one option to *a; returns 0, -PEER_EXIT_USAGE or, for an
 * unknown workload, -PEER_EXIT_UNSUPPORTED. */
static int apply_opt(int opt, const char *arg, struct peer_args *a)
{
    uint64_t v = 0;

    switch (opt) {
    case OPT_WORKLOAD:
        /* A workload newer than this peer is "not supported", not a
         * usage error: ppbench then reports the peer as skipped. */
        if (parse_workload(arg, &a->workload) == 0)
            return 0;
        fprintf(stderr, "%s: workload %s not supported\n",
                program_invocation_short_name, arg);
        return -PEER_EXIT_UNSUPPORTED;
    case OPT_WORKERS:
        if (parse_u64(arg, 4096, &v) || v == 0)
            return usage("--workers wants 1..4096", arg);
        a->workers = (int)v;
        return 0;
    case OPT_JOBS:
        if (parse_u64(arg, UINT64_C(1) << 40, &v) || v == 0)
            return usage("--jobs wants a positive count", arg);
        a->jobs = v;
        return 0;
    case OPT_PAYLOAD:
        /* 1 GiB is far past any useful point and keeps B*N in memory. */
        if (parse_u64(arg, UINT64_C(1) << 30, &v) || v == 0)
            return usage("--payload wants 1..2^30 bytes", arg);
        a->payload = (size_t)v;
        return 0;
    case OPT_ECHO:
        a->echo = true;
        return 0;
    case OPT_WORK_US:
        if (parse_u64(arg, 60u * 1000 * 1000, &v) || v == 0)
            return usage("--work-us wants 1..60000000", arg);
        a->work_us = (unsigned)v;
        return 0;
    case OPT_SEED:
        if (parse_u64(arg, UINT64_MAX, &v))
            return usage("--seed wants an unsigned integer", arg);
        a->seed = v;
        return 0;
    case OPT_VARIANT:
        a->variant = arg;
        return 0;
    default:
        return usage("bad option", NULL);
    }
}

int peer_args_parse(int argc, char **argv, struct peer_args *ret)
{
    struct peer_args a = {
        .workload = PEER_NWORKLOADS, /* "not given" */
        .payload = 4096,
        .work_us = 100,
        .seed = 1,
    };
    int opt;

    opterr = 0; /* usage() says what was wrong, once */
    while ((opt = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        int rc = apply_opt(opt, optarg, &a);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return usage("unexpected argument", argv[optind]);
    if (a.workload == PEER_NWORKLOADS || a.workers == 0 || a.jobs == 0)
        return usage("--workload, --workers and --jobs are required", NULL);
    if (a.workload == PEER_REMOTE_PAYLOAD)
        a.echo = true; /* the remote payload job returns its argument */
    *ret = a;
    return 0;
}

const struct peer_variant *peer_variant_find(const struct peer_variant *table,
                                             size_t n,
                                             const struct peer_args *a)
{
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        if (table[i].workload != a->workload)
            continue;
        any = true;
        if (!a->variant || strcmp(a->variant, table[i].name) == 0)
            return &table[i];
    }
    fprintf(stderr, "%s: %s%s%s not supported\n", program_invocation_short_name,
            peer_workload_name(a->workload), any ? " variant " : "",
            any ? a->variant : "");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The jobs                                                            */
/* ------------------------------------------------------------------ */

/* Words go through memcpy: arguments may sit at any offset inside a
 * message buffer, and the compiler turns this into plain loads. */
static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, sizeof(w));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

uint64_t peer_checksum(const void *buf, size_t n)
{
    const unsigned char *p = buf;
    uint64_t sum = 0;
    size_t i = 0;

    for (; i + 8 <= n; i += 8)
        sum += load_le64(p + i);
    for (; i < n; i++)
        sum += p[i];
    return sum;
}

void peer_payload_fill(void *buf, size_t n)
{
    unsigned char *p = buf;

    /* A byte pattern with a long period, so a shifted or truncated copy
     * changes the checksum. */
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131 + (i >> 8) * 7 + 1);
}

void peer_payload_stamp(void *buf, size_t n, uint64_t i)
{
    unsigned char le[8];

    for (int k = 0; k < 8; k++)
        le[k] = (unsigned char)(i >> (8 * k));
    memcpy(buf, le, n < 8 ? n : 8);
}

void peer_payload_ref_init(struct peer_payload_ref *ref,
                           const void *tmpl, size_t n)
{
    ref->tmpl = tmpl;
    ref->n = n;
    ref->sum = peer_checksum(tmpl, n);
    ref->word0 = n >= 8 ? load_le64(tmpl) : 0;
}

uint64_t peer_payload_expect(const struct peer_payload_ref *ref, uint64_t i)
{
    unsigned char small[8];

    if (ref->n >= 8)
        return ref->sum - ref->word0 + i; /* only word 0 differs */
    memcpy(small, ref->tmpl, ref->n);
    peer_payload_stamp(small, ref->n, i);
    return peer_checksum(small, ref->n);
}

bool peer_payload_echo_ok(const struct peer_payload_ref *ref, uint64_t i,
                          const void *echo)
{
    unsigned char head[8];
    size_t h = ref->n < 8 ? ref->n : 8;

    memcpy(head, ref->tmpl, h);
    peer_payload_stamp(head, h, i);
    return memcmp(echo, head, h) == 0 &&
           memcmp((const unsigned char *)echo + h, ref->tmpl + h, ref->n - h) == 0;
}

uint64_t peer_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The clock, not an iteration count, bounds the spin: a job then lasts
 * U us on any CPU and under any compiler, which efficiency relies on. */
void peer_spin_us(unsigned us)
{
    uint64_t end = peer_now_ns() + (uint64_t)us * 1000;

    while (peer_now_ns() < end)
        ;
}

/* One LCG step (Knuth's MMIX constants) and the skewed duration it
 * draws: 90% short, 9% medium, 1% very long jobs. */
static uint32_t imbalance_next(uint64_t *x)
{
    *x = *x * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    unsigned r = (unsigned)((*x >> 33) % 100);
    return r < 90 ? 10 : (r < 99 ? 200 : 2000);
}

/* The durations are drawn before timing starts, so the submitter's
 * LCG steps do not count as overhead. */
int peer_plan_init(const struct peer_args *a, struct peer_plan *ret)
{
    struct peer_plan p = { 0 };
    uint64_t x = a->seed, sum = 0, max = 0;

    if (a->workload == PEER_SCALING)
        p.ideal_ns = (double)a->jobs * a->work_us * 1000.0 / a->workers;
    if (a->workload != PEER_IMBALANCE) {
        *ret = p;
        return 0;
    }
    p.durations = malloc(a->jobs * sizeof(*p.durations));
    if (!p.durations)
        return -ENOMEM;
    for (uint64_t i = 0; i < a->jobs; i++) {
        uint32_t d = imbalance_next(&x);
        p.durations[i] = d;
        sum += d;
        max = d > max ? d : max;
    }
    double even = (double)sum / a->workers;
    p.ideal_ns = (even > (double)max ? even : (double)max) * 1000.0;
    *ret = p;
    return 0;
}

void peer_plan_free(struct peer_plan *p)
{
    free(p->durations);
    p->durations = NULL;
}

uint64_t peer_u64_arg(const struct peer_args *a, const struct peer_plan *p,
                      uint64_t i)
{
    switch (a->workload) {
    case PEER_SCALING:
        return a->work_us;
    case PEER_IMBALANCE:
        return p->durations[i];
    default:
        return i;
    }
}

uint64_t peer_u64_job(enum peer_workload w, uint64_t arg)
{
    if (w == PEER_SCALING || w == PEER_IMBALANCE) {
        peer_spin_us((unsigned)arg);
        return arg;
    }
    return peer_trivial(arg);
}

/* Written out rather than calling peer_trivial(), so a broken job
 * function cannot vouch for itself. */
uint64_t peer_u64_expect(enum peer_workload w, uint64_t arg)
{
    return (w == PEER_SCALING || w == PEER_IMBALANCE) ? arg : arg * 2 + 1;
}

bool peer_u64_check(const struct peer_args *a, const struct peer_plan *p,
                    uint64_t i, uint64_t result)
{
    uint64_t want = peer_u64_expect(a->workload, peer_u64_arg(a, p, i));

    if (result == want)
        return true;
    fprintf(stderr, "%s: job %llu returned %llu, want %llu\n",
            program_invocation_short_name, (unsigned long long)i,
            (unsigned long long)result, (unsigned long long)want);
    return false;
}

/* ------------------------------------------------------------------ */
/* Measuring                                                           */
/* ------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

const double peer_pct_levels[PEER_NPCT] = PEER_PCT_LEVELS;

/* Nearest rank rather than interpolation: the reported value is a
 * round trip that really happened, and peer_mp.py computes the same. */
uint64_t peer_percentile(uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_u64);
    /* nearest rank, 1-based; the epsilon keeps 0.999 * 5000 at 4995 when
     * p came out a hair above (99.9 / 100 does) */
    size_t rank = (size_t)ceil(p * (double)n - 1e-9);
    if (rank < 1)
        rank = 1;
    return v[(rank > n ? n : rank) - 1];
}

/* Counts through the allowed set, not CPU numbers, so a peer started
 * under taskset or in a cpuset still spreads over the CPUs it has. */
int peer_pin_self(int idx)
{
    cpu_set_t allowed, one;
    int count, seen = 0;

    if (sched_getaffinity(0, sizeof(allowed), &allowed))
        return -errno;
    count = CPU_COUNT(&allowed);
    if (count == 0)
        return -EINVAL;
    idx %= count;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed) || seen++ != idx)
            continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        return sched_setaffinity(0, sizeof(one), &one) ? -errno : 0;
    }
    return -EINVAL;
}

int peer_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int peer_allowed_cpus(void)
{
    cpu_set_t allowed;

    if (sched_getaffinity(0, sizeof(allowed), &allowed))
        return peer_online_cpus();
    return CPU_COUNT(&allowed);
}

/* ------------------------------------------------------------------ */
/* Reporting                                                           */
/* ------------------------------------------------------------------ */

/* Everything starts as null: a field a workload does not measure must
 * read "not meaningful" to ppbench, never 0. */
void peer_result_init(struct peer_result *r, const struct peer_args *a,
                      const char *system, const char *variant)
{
    *r = (struct peer_result){
        .workload = peer_workload_name(a->workload),
        .system = system,
        .variant = variant,
        .workers = a->workers,
        .jobs = a->jobs,
        .payload_bytes = peer_workload_base(a->workload) == PEER_PAYLOAD
                             ? (double)a->payload : NAN,
        .ns_per_job = NAN, .jobs_per_s = NAN,
        .p50_ns = NAN, .p99_ns = NAN, .p999_ns = NAN,
        .gbps = NAN, .first_call_ns = NAN, .repeat_call_ns = NAN,
        .efficiency = NAN,
        .version = "unknown",
    };
    for (int k = 0; k < PEER_NPCT; k++)
        r->pct_ns[k] = NAN;
}

/* ns_per_job and jobs_per_s of n jobs that took ns in all. */
static void result_rate(struct peer_result *r, uint64_t n, uint64_t ns)
{
    if (ns == 0)
        ns = 1; /* a run shorter than a clock tick: avoid inf */
    r->ns_per_job = (double)ns / (double)n;
    r->jobs_per_s = (double)n * 1e9 / (double)ns;
}

void peer_result_wall(struct peer_result *r, const struct peer_args *a,
                      const struct peer_plan *p, uint64_t wall_ns)
{
    result_rate(r, a->jobs, wall_ns);
    if (peer_workload_base(a->workload) == PEER_PAYLOAD) {
        /* remote-payload: bytes each way (see peer_common.h) */
        bool both = a->echo && !peer_workload_remote(a->workload);
        double bytes = (double)a->jobs * a->payload * (both ? 2 : 1);
        r->gbps = bytes / ((double)wall_ns / 1e9) / 1e9;
    }
    if (a->workload == PEER_SCALING || a->workload == PEER_IMBALANCE)
        r->efficiency = p->ideal_ns / (double)(wall_ns ? wall_ns : 1);
}

void peer_result_latency(struct peer_result *r, uint64_t *rtt, uint64_t n,
                         uint64_t first_ns)
{
    uint64_t total = 0;

    for (uint64_t i = 0; i < n; i++)
        total += rtt[i];
    result_rate(r, n, total);
    r->p50_ns = (double)peer_percentile(rtt, n, 0.50);
    r->p99_ns = (double)peer_percentile(rtt, n, 0.99);
    r->p999_ns = (double)peer_percentile(rtt, n, 0.999);
    for (int k = 0; k < PEER_NPCT; k++)
        r->pct_ns[k] = (double)peer_percentile(rtt, n, peer_pct_levels[k] / 100.0);
    r->first_call_ns = (double)first_ns;
    r->repeat_call_ns = r->ns_per_job;
}

/* Writes s as a JSON string (quotes included).  Machine and version
 * strings come from outside (cpuinfo, the libraries), so they are
 * escaped rather than trusted. */
static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* Integral values (counts, ns) print whole, so a long run's p99 keeps
 * every digit; fractions keep ten significant digits. */
static void json_number(FILE *f, double v)
{
    if (!isfinite(v))
        fputs("null", f);
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53 */
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.10g", v);
}

static void json_field_str(FILE *f, const char *key, const char *v, bool last)
{
    fprintf(f, "\"%s\": ", key);
    json_string(f, v);
    fputs(last ? "" : ", ", f);
}

static void json_field_num(FILE *f, const char *key, double v)
{
    fprintf(f, "\"%s\": ", key);
    json_number(f, v);
    fputs(", ", f);
}

/* "percentiles": [[level, ns], ...], or null when not measured. */
static void json_field_pcts(FILE *f, const double *pct)
{
    bool any = false;
    for (int k = 0; k < PEER_NPCT; k++)
        any |= isfinite(pct[k]);
    fputs("\"percentiles\": ", f);
    if (!any) {
        fputs("null, ", f);
        return;
    }
    fputc('[', f);
    for (int k = 0; k < PEER_NPCT; k++) {
        fprintf(f, "%s[%g, ", k ? ", " : "", peer_pct_levels[k]);
        json_number(f, pct[k]);
        fputc(']', f);
    }
    fputs("], ", f);
}

/* The field order is fixed and identical in peer_mp.py, so lines from
 * different peers diff cleanly. */
int peer_result_print(const struct peer_result *r)
{
    FILE *f = stdout;

    fputc('{', f);
    json_field_str(f, "workload", r->workload, false);
    json_field_str(f, "system", r->system, false);
    json_field_str(f, "variant", r->variant, false);
    json_field_num(f, "workers", r->workers);
    json_field_num(f, "jobs", (double)r->jobs);
    json_field_num(f, "payload_bytes", r->payload_bytes);
    json_field_num(f, "ns_per_job", r->ns_per_job);
    json_field_num(f, "jobs_per_s", r->jobs_per_s);
    json_field_num(f, "p50_ns", r->p50_ns);
    json_field_num(f, "p99_ns", r->p99_ns);
    json_field_num(f, "p999_ns", r->p999_ns);
    json_field_num(f, "gbps", r->gbps);
    json_field_num(f, "first_call_ns", r->first_call_ns);
    json_field_num(f, "repeat_call_ns", r->repeat_call_ns);
    json_field_num(f, "efficiency", r->efficiency);
    json_field_pcts(f, r->pct_ns);
    json_field_str(f, "machine", peer_machine(), false);
    json_field_str(f, "version", r->version, true);
    fputs("}\n", f);
    return fflush(f) == 0 && !ferror(f) ? 0 : -EIO;
}

/* Copies the value of cpuinfo's "model name" line into buf. */
static bool cpu_model(char *buf, size_t len)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    char line[512];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon)
            continue;
        colon += 1 + strspn(colon + 1, " \t");
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, len, "%s", colon);
        found = true;
    }
    fclose(f);
    return found;
}

const char *peer_machine(void)
{
    static char machine[320];
    char model[256];

    if (!cpu_model(model, sizeof(model)))
        snprintf(model, sizeof(model), "unknown CPU");
    snprintf(machine, sizeof(machine), "%s, %d cores", model, peer_online_cpus());
    return machine;
}

int peer_fail(const char *what, int err)
{
    fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
            strerror(err < 0 ? -err : err));
    return PEER_EXIT_FAIL;
}
