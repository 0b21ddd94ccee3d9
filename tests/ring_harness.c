/* Description: multi-process stress and crash repair of the shm rings. */
#define _GNU_SOURCE
#include "ring_harness.h"
#include "bring.h"
#include "ring.h"

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int ring_check_semantics(void)
{
    size_t bytes = pp_ring_bytes(8);
    struct pp_ring *r = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    uint64_t v;
    int fail = 0;

    if (!r)
        return 100;
    if (pp_ring_init(r, 6) != -EINVAL || pp_ring_init(r, 1) != -EINVAL)
        fail = 1;
    else if (pp_ring_init(r, 8) != 0)
        fail = 2;
    else if (pp_ring_dequeue_mc(r, &v, NULL))
        fail = 3; /* empty */
    for (uint64_t i = 0; !fail && i < 8; i++)
        if (!pp_ring_enqueue_mp(r, 100 + i))
            fail = 4;
    if (!fail && pp_ring_enqueue_mp(r, 999))
        fail = 5; /* full */
    if (!fail && pp_ring_count(r) != 8)
        fail = 6;
    for (uint64_t i = 0; !fail && i < 8; i++)
        if (!pp_ring_dequeue_mc(r, &v, NULL) || v != 100 + i)
            fail = 7; /* FIFO */
    /* Burst: takes what fits, in order, across the wrap. */
    uint64_t in[12] = { 0 };
    for (int i = 0; i < 12; i++)
        in[i] = 1000 + (uint64_t)i;
    if (!fail && pp_ring_enqueue_burst_mp(r, in, 5) != 5)
        fail = 8;
    if (!fail && pp_ring_enqueue_burst_mp(r, in + 5, 7) != 3)
        fail = 9;
    for (int i = 0; !fail && i < 8; i++)
        if (!pp_ring_dequeue_mc(r, &v, NULL) || v != 1000 + (uint64_t)i)
            fail = 10;
    /* A claim records what was taken until the consumer says done. */
    struct pp_ring_claim c = { 0, 0 };
    pp_ring_enqueue_mp(r, 77);
    if (!fail && (!pp_ring_dequeue_mc(r, &v, &c) || v != 77 ||
                  pp_load_relaxed(&c.taken) != 78 || pp_load_relaxed(&c.pos) != 0))
        fail = 11;
    uint64_t got = 0;
    if (!fail && (pp_ring_repair(r, &c, NULL, 0, &got) != 1 || got != 77))
        fail = 12;
    if (!fail && pp_ring_repair(r, &c, NULL, 0, &got) != 0)
        fail = 13; /* cleared */
    free(r);
    return fail;
}

int spsc_check_semantics(void)
{
    struct pp_spsc *r = aligned_alloc(64, (pp_spsc_bytes(4) + 63) & ~(size_t)63);
    uint64_t out[8];
    int fail = 0;

    if (!r)
        return 100;
    if (pp_spsc_init(r, 3) != -EINVAL || pp_spsc_init(r, 4) != 0)
        fail = 1;
    for (uint64_t i = 0; !fail && i < 4; i++)
        if (!pp_spsc_push(r, i))
            fail = 2;
    if (!fail && pp_spsc_push(r, 9))
        fail = 3;
    if (!fail && pp_spsc_pop_burst(r, out, 8) != 4)
        fail = 4;
    for (uint64_t i = 0; !fail && i < 4; i++)
        if (out[i] != i)
            fail = 5;
    if (!fail && pp_spsc_pop_burst(r, out, 8) != 0)
        fail = 6;
    free(r);
    return fail;
}

/* The byte ring: entries in order, a filler at the wrap, full when full,
 * and a drain that stops before the entry its callback refuses (that
 * entry stays first for the next drain: the collectors' bound). */
struct bring_seen {
    uint64_t tags[64];
    unsigned n, stop_at; /* refuse the entry with this tag (0: none) */
    bool bad;
};

static bool bring_take(void *ctx, const struct pp_bring_hdr *h, const unsigned char *p)
{
    struct bring_seen *s = ctx;
    if (s->stop_at && h->tag == s->stop_at)
        return false;
    for (uint32_t i = 0; i < h->len; i++)
        if (p[i] != (unsigned char)(h->tag + i))
            s->bad = true;
    if (s->n < 64)
        s->tags[s->n++] = h->tag;
    return true;
}

int bring_check_semantics(void)
{
    const uint64_t cap = 256;
    struct pp_bring *b = aligned_alloc(64, (pp_bring_bytes(cap) + 63) & ~(size_t)63);
    unsigned char buf[64];
    struct bring_seen s = { .n = 0 };
    int fail = 0;

    if (!b)
        return 100;
    pp_bring_init(b, cap);
    /* 48-byte entries (16 + 32): five fit, the sixth does not. */
    for (uint64_t t = 1; !fail && t <= 6; t++) {
        for (unsigned i = 0; i < 32; i++)
            buf[i] = (unsigned char)(t + i);
        bool ok = pp_bring_put(b, 0, 0, t, buf, 32);
        if (ok != (t <= 5))
            fail = 1;
    }
    s.stop_at = 3;
    if (!fail && pp_bring_drain(b, bring_take, &s) != 2)
        fail = 2;
    if (!fail && (s.n != 2 || s.tags[0] != 1 || s.tags[1] != 2 || s.bad))
        fail = 3;
    /* Still refused: nothing taken, it stays first. */
    if (!fail && pp_bring_drain(b, bring_take, &s) != 0)
        fail = 4;
    /* Room for two more now (they wrap: a filler goes first). */
    for (uint64_t t = 6; !fail && t <= 7; t++) {
        for (unsigned i = 0; i < 32; i++)
            buf[i] = (unsigned char)(t + i);
        if (!pp_bring_put(b, 0, 0, t, buf, 32))
            fail = 5;
    }
    s.stop_at = 0;
    s.n = 0;
    if (!fail && pp_bring_drain(b, bring_take, &s) != 5)
        fail = 6;
    for (unsigned i = 0; !fail && i < 5; i++)
        if (s.tags[i] != 3 + i)
            fail = 7;
    if (!fail && (s.bad || !pp_bring_empty(b)))
        fail = 8;
    free(b);
    return fail;
}

/* ---------------------------------------------------------------- */
/* Multi-process stress                                               */
/* ---------------------------------------------------------------- */

#define MAX_CONS 16

struct shared {
    _Atomic uint32_t stop;   /* parent: producers done and ring empty */
    _Atomic uint64_t dups;
    struct pp_ring_claim claims[MAX_CONS];
    /* then the seen bitmap, then the ring */
};

static uint64_t value_of(unsigned p, uint64_t i)
{
    return ((uint64_t)p << 40) | i;
}

/* Marks v seen (one atomic step, so a kill cannot leave it half done);
 * counts a duplicate if it was seen before.  Returns true when new. */
static bool record(struct shared *sh, _Atomic uint64_t *seen, uint64_t per_prod, uint64_t v)
{
    uint64_t idx = (v >> 40) * per_prod + (v & ((1ull << 40) - 1));
    uint64_t bit = 1ull << (idx % 64);
    if (atomic_fetch_or(&seen[idx / 64], bit) & bit) {
        atomic_fetch_add(&sh->dups, 1);
        return false;
    }
    return true;
}

static void consumer(struct shared *sh, _Atomic uint64_t *seen, struct pp_ring *r,
                     uint64_t per_prod, unsigned slot)
{
    struct pp_ring_claim *c = &sh->claims[slot];
    uint64_t v;
    while (!atomic_load(&sh->stop)) {
        if (!pp_ring_dequeue_mc(r, &v, c)) {
            sched_yield();
            continue;
        }
        record(sh, seen, per_prod, v);
        pp_ring_claim_done(c);
    }
    _exit(0);
}

/* Enqueues n values of producer p, alternating single and burst
 * enqueues to cover both paths. */
static void produce(struct pp_ring *r, unsigned p, uint64_t n)
{
    uint64_t batch[8];
    for (uint64_t i = 0; i < n;) {
        unsigned k = 0;
        unsigned want = (i & 1) ? 1 : 8;
        while (k < want && i + k < n) {
            batch[k] = value_of(p, i + k);
            k++;
        }
        unsigned done = pp_ring_enqueue_burst_mp(r, batch, k);
        if (done == 0)
            sched_yield();
        i += done;
    }
}

static void producer(struct pp_ring *r, unsigned p, uint64_t n)
{
    produce(r, p, n);
    _exit(0);
}

static pid_t spawn_consumer(struct shared *sh, _Atomic uint64_t *seen, struct pp_ring *r,
                            uint64_t per_prod, unsigned slot)
{
    pid_t pid = fork();
    if (pid == 0)
        consumer(sh, seen, r, per_prod, slot);
    return pid;
}

/* Counts what the consumers saw: every value once, none twice. */
static void tally(struct shared *sh, _Atomic uint64_t *seen, unsigned nprod,
                  uint64_t per_prod, struct ring_report *out)
{
    out->duplicates = atomic_load(&sh->dups);
    for (unsigned p = 0; p < nprod; p++)
        for (uint64_t i = 0; i < per_prod; i++) {
            uint64_t idx = p * per_prod + i;
            if (atomic_load(&seen[idx / 64]) & (1ull << (idx % 64))) {
                out->consumed++;
                out->sum += value_of(p, i);
            } else {
                out->missing++;
            }
        }
}

/* Repairs dead consumer `slot`'s claim against the live ones. */
static void repair_slot(struct shared *sh, _Atomic uint64_t *seen, struct pp_ring *r,
                        uint64_t per_prod, unsigned slot, unsigned ncons,
                        struct ring_report *out)
{
    struct pp_ring_claim *live[MAX_CONS];
    unsigned n = 0;
    for (unsigned i = 0; i < ncons; i++)
        if (i != slot)
            live[n++] = &sh->claims[i];
    uint64_t v;
    int rr;
    while ((rr = pp_ring_repair(r, &sh->claims[slot], live, n, &v)) == -EAGAIN)
        sched_yield();
    if (rr == 1) {
        /* Taken but maybe not recorded: record unless it already was. */
        uint64_t idx = (v >> 40) * per_prod + (v & ((1ull << 40) - 1));
        if (!(atomic_load(&seen[idx / 64]) & (1ull << (idx % 64))) &&
            record(sh, seen, per_prod, v))
            out->repaired++;
    }
}

void ring_stress(unsigned nprod, unsigned ncons, uint64_t per_prod, uint64_t cap,
                 unsigned kills, struct ring_report *out)
{
    memset(out, 0, sizeof(*out));
    if (ncons == 0 || ncons > MAX_CONS || nprod == 0) {
        out->error = -EINVAL;
        return;
    }
    uint64_t total = nprod * per_prod;
    size_t seen_bytes = ((total + 63) / 64) * 8;
    size_t off_seen = (sizeof(struct shared) + 63) & ~(size_t)63;
    size_t off_ring = (off_seen + seen_bytes + 4095) & ~(size_t)4095;
    size_t bytes = off_ring + pp_ring_bytes(cap);
    char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        out->error = -errno;
        return;
    }
    struct shared *sh = (struct shared *)m;
    _Atomic uint64_t *seen = (_Atomic uint64_t *)(m + off_seen);
    struct pp_ring *r = (struct pp_ring *)(m + off_ring);
    pp_ring_init(r, cap);
    for (unsigned p = 0; p < nprod; p++)
        for (uint64_t i = 0; i < per_prod; i++)
            out->expect_sum += value_of(p, i);

    pid_t prods[64], cons[MAX_CONS];
    for (unsigned p = 0; p < nprod; p++) {
        prods[p] = fork();
        if (prods[p] == 0)
            producer(r, p, per_prod);
    }
    for (unsigned c = 0; c < ncons; c++)
        cons[c] = spawn_consumer(sh, seen, r, per_prod, c);

    /* Kill consumers at pseudo-random moments while values flow. */
    unsigned seed = 12345;
    for (unsigned k = 0; k < kills; k++) {
        struct timespec ts = { 0, (long)(rand_r(&seed) % 300) * 1000 };
        nanosleep(&ts, NULL);
        unsigned c = (unsigned)rand_r(&seed) % ncons;
        kill(cons[c], SIGKILL);
        waitpid(cons[c], NULL, 0);
        out->kills++;
        repair_slot(sh, seen, r, per_prod, c, ncons, out);
        cons[c] = spawn_consumer(sh, seen, r, per_prod, c);
    }
    for (unsigned p = 0; p < nprod; p++)
        waitpid(prods[p], NULL, 0);
    while (pp_ring_count(r) != 0)
        sched_yield();
    atomic_store(&sh->stop, 1);
    for (unsigned c = 0; c < ncons; c++)
        waitpid(cons[c], NULL, 0);

    tally(sh, seen, nprod, per_prod, out);
    munmap(m, bytes);
}

/* ---------------------------------------------------------------- */
/* The same stress with threads, so ThreadSanitizer sees every access */
/* ---------------------------------------------------------------- */

#include <pthread.h>

struct tctx {
    struct pp_ring *r;
    struct shared *sh;
    _Atomic uint64_t *seen;
    uint64_t per_prod;
    unsigned id;
    struct pp_ring_claim claim;
};

static void *tproducer(void *arg)
{
    struct tctx *c = arg;
    produce(c->r, c->id, c->per_prod);
    return NULL;
}

static void *tconsumer(void *arg)
{
    struct tctx *c = arg;
    uint64_t v;
    while (!atomic_load(&c->sh->stop)) {
        if (!pp_ring_dequeue_mc(c->r, &v, &c->claim)) {
            sched_yield();
            continue;
        }
        record(c->sh, c->seen, c->per_prod, v);
        pp_ring_claim_done(&c->claim);
    }
    return NULL;
}

void ring_stress_threads(unsigned nprod, unsigned ncons, uint64_t per_prod, uint64_t cap,
                         struct ring_report *out)
{
    memset(out, 0, sizeof(*out));
    if (nprod == 0 || nprod > 16 || ncons == 0 || ncons > 16) {
        out->error = -EINVAL;
        return;
    }
    uint64_t total = nprod * per_prod;
    struct shared *sh = calloc(1, sizeof(*sh));
    _Atomic uint64_t *seen = calloc((total + 63) / 64, sizeof(*seen));
    struct pp_ring *r = aligned_alloc(64, (pp_ring_bytes(cap) + 63) & ~(size_t)63);
    struct tctx ctx[32];
    pthread_t th[32];
    if (!sh || !seen || !r) {
        out->error = -ENOMEM;
        goto done;
    }
    pp_ring_init(r, cap);
    for (unsigned i = 0; i < nprod + ncons; i++) {
        ctx[i] = (struct tctx){ r, sh, seen, per_prod, i < nprod ? i : i - nprod, { 0, 0 } };
        pthread_create(&th[i], NULL, i < nprod ? tproducer : tconsumer, &ctx[i]);
    }
    for (unsigned i = 0; i < nprod; i++)
        pthread_join(th[i], NULL);
    while (pp_ring_count(r) != 0)
        sched_yield();
    atomic_store(&sh->stop, 1);
    for (unsigned i = nprod; i < nprod + ncons; i++)
        pthread_join(th[i], NULL);
    for (unsigned p = 0; p < nprod; p++)
        for (uint64_t i = 0; i < per_prod; i++)
            out->expect_sum += value_of(p, i);
    tally(sh, seen, nprod, per_prod, out);
done:
    free(sh);
    free(seen);
    free(r);
}
