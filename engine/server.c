/*
 * server.c - creating and destroying a job server, the worker count, and
 * the statistics.
 *
 * Segment layout (offsets from its base, each page aligned):
 *   struct pp_shared | submit ring | one done ring per worker slot |
 *   job-record chunks and large results (page heap) | jemalloc range
 * The page heap and the jemalloc range split what is left in two halves.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static uint64_t page_up(uint64_t x)
{
    return (x + PP_PAGE - 1) & ~(uint64_t)(PP_PAGE - 1);
}

PP_EXPORT void pp_config_init(struct pp_config *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof(*cfg));
    cfg->ncpus = PP_AUTODETECT;
    cfg->pin = true;
    cfg->spin_us = 20;
    cfg->shm_size = PP_DEFAULT_SHM;
}

static int check_config(const struct pp_config *c)
{
    if (c->ncpus < PP_AUTODETECT || c->ncpus > PP_MAX_WORKERS)
        return -EINVAL;
    if (c->spin_us > 1000000)
        return -EINVAL;
    if (c->shm_size < (256ull << 20))
        return -EINVAL;
    /* Nodes need a secret: there is no default ("slurm" makes one). */
    bool secret = (c->secret && c->secret[0]) || c->secret_file;
    for (const char *const *p = c->ppservers; p && *p && !secret; p++) {
        if (strcmp(*p, "slurm") != 0) {
            if (c->error)
                snprintf(c->error, PP_ERRMSG_MAX, "ppservers \"%.64s\" needs a secret "
                         "(secret or secret_file): there is no default", *p);
            return -EINVAL;
        }
    }
    return 0;
}

static void allowed_cpus(struct pp_server *s)
{
    cpu_set_t set;
    s->ncpus_allowed = 0;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return;
    for (int c = 0; c < CPU_SETSIZE && s->ncpus_allowed < PP_MAX_WORKERS; c++)
        if (CPU_ISSET(c, &set))
            s->cpus_allowed[s->ncpus_allowed++] = c;
}

/* Lays out the segment and initialises everything in it. */
static int setup_segment(struct pp_server *s)
{
    uint64_t off = page_up(sizeof(struct pp_shared));
    int r = pp_segment_create(&s->seg, s->cfg.shm_size);
    if (r < 0)
        return r;
    struct pp_shared *sh = s->sh = (struct pp_shared *)s->seg.base;
    sh->engine_efd = -1; /* until init_host opens it: destroy closes only that */
    sh->magic = PP_MAGIC;
    sh->seg_size = s->seg.size;
    sh->ring_off = off;
    s->ring = pp_seg_ptr(&s->seg, off);
    pp_ring_init(s->ring, PP_SUBMIT_RING_CAP);
    off = page_up(off + pp_ring_bytes(PP_SUBMIT_RING_CAP));
    sh->done_off = off;
    sh->done_stride = page_up(pp_spsc_bytes(PP_DONE_RING_CAP));
    for (int i = 0; i < PP_MAX_SLOTS; i++)
        pp_spsc_init(pp_seg_ptr(&s->seg, off + (uint64_t)i * sh->done_stride),
                     PP_DONE_RING_CAP);
    off += (uint64_t)PP_MAX_SLOTS * sh->done_stride;
    sh->ret_off = off;
    sh->ret_stride = page_up(pp_ring_bytes(PP_RET_RING_CAP));
    for (uint32_t i = 0; i < PP_MAX_SLOTS; i++)
        pp_ring_init(pp__ret_ring(sh, i), PP_RET_RING_CAP);
    off += (uint64_t)PP_MAX_SLOTS * sh->ret_stride;
    sh->msg_off = off;
    sh->msg_stride = page_up(pp_bring_bytes(PP_MSG_RING_CAP));
    for (uint32_t i = 0; i < PP_MAX_SLOTS; i++)
        pp_bring_init(pp__msg_ring(sh, i), PP_MSG_RING_CAP);
    off += (uint64_t)PP_MAX_SLOTS * sh->msg_stride;
    if (off >= s->seg.size / 2)
        return -EINVAL;
    uint64_t half = page_up(off + (s->seg.size - off) / 2);
    r = pp_pages_init(&sh->pages, off, half);
    if (r < 0)
        return r;
    r = pp_arena_create(&s->seg, half, s->seg.size, &s->arena);
    if (r < 0)
        return r;
    pp_event_init(&sh->space);
    for (int g = 0; g < PP_MAX_GROUPS; g++)
        pp_event_init(&sh->groups[g].ev);
    for (unsigned b = 0; b < PP_NBELLS; b++)
        pp_event_init(&sh->bells[b].ev);
    strcpy(sh->groups[0].name, "default");
    sh->busy_poll = s->cfg.busy_poll;
    sh->spin_ns = (uint64_t)s->cfg.spin_us * 1000u;
    sh->max_queued_set = s->cfg.max_queued != 0;
    for (int i = 0; i < PP_MAX_SLOTS; i++)
        atomic_init(&s->sh->wcb[i].cpu, -1);
    return 0;
}

static int init_host(struct pp_server *s)
{
    pthread_mutex_init(&s->fn_lock, NULL);
    pthread_mutex_init(&s->group_lock, NULL);
    for (int g = 0; g < PP_MAX_GROUPS; g++)
        pthread_mutex_init(&s->wait_lock[g], NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_mutex_init(&s->ovf_lock, NULL);
    pthread_mutex_init(&s->ctl_lock, NULL);
    pthread_mutex_init(&s->coll_lock, NULL);
    pthread_cond_init(&s->ctl_cond, NULL);
    atomic_init(&s->free_head, 0xffffffffull);
    atomic_init(&s->ngroups, 1);
    atomic_init(&s->spin_ns, (uint64_t)s->cfg.spin_us * 1000u);
    s->created_ns = pp_now_ns();
    s->tsc0 = pp__ticks();
    s->ns0 = pp_now_ns();
    allowed_cpus(s);
    int n = s->cfg.ncpus == PP_AUTODETECT ? pp_detect_ncpus() : s->cfg.ncpus;
    atomic_init(&s->target, n);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
        return -errno;
    s->sh->engine_efd = efd;
    return 0;
}

/* Waits (bounded) until the initial workers have started, so the first
 * jobs do not pay for fork and so spawn errors surface here. */
static int wait_workers_up(struct pp_server *s)
{
    struct timespec ts;
    int n = pp_load_relaxed(&s->target);

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&s->ctl_lock);
    for (;;) {
        if (s->nlive >= n || s->spawn_errno)
            break;
        if (pthread_cond_timedwait(&s->ctl_cond, &s->ctl_lock, &ts) == ETIMEDOUT)
            break;
    }
    int r = s->spawn_errno ? -s->spawn_errno : 0;
    pthread_mutex_unlock(&s->ctl_lock);
    return r;
}

PP_EXPORT int pp_server_new(const struct pp_config *cfg, pp_server **ret)
{
    struct pp_server *s;
    int r;

    if (!ret)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->owner = getpid();
    s->zsock = -1; /* so that a failed start closes nothing it did not open */
    s->seg.fd = -1;
    if (cfg)
        s->cfg = *cfg;
    else
        pp_config_init(&s->cfg);
    if ((r = check_config(&s->cfg)) < 0)
        goto err;
    if ((r = setup_segment(s)) < 0)
        goto err;
    if ((r = init_host(s)) < 0)
        goto err;
    if ((r = pp__engine_start(s)) < 0)
        goto err;
    if ((r = wait_workers_up(s)) < 0)
        goto err;
    if ((r = pp__net_init(s)) < 0)
        goto err;
    *ret = s;
    return 0;
err:
    pp_server_destroy(s);
    return r;
}

PP_EXPORT void pp_server_destroy(pp_server *s)
{
    if (!s)
        return;
    if (s->owner != getpid()) {
        /* A forked child of the host: the engine thread, the zygote and
         * the workers belong to the parent.  Only drop this process's
         * mappings and memory; the parent's server is untouched. */
        if (s->sh && s->sh->engine_efd >= 0)
            close(s->sh->engine_efd);
        if (s->zsock >= 0)
            close(s->zsock);
        pp__net_free(s, true);
        pp_segment_destroy(&s->seg);
        pp__pool_fini(s);
        free(s);
        return;
    }
    pp__net_stop(s);    /* jobs in flight on nodes cancelled, handed over */
    pp__engine_stop(s); /* workers, zygote gone; every task finished */
    pp__net_free(s, false);
    pp_arena_destroy(s->arena);
    if (s->sh && s->sh->engine_efd >= 0)
        close(s->sh->engine_efd);
    pp__pool_fini(s);
    if (s->zsock >= 0)
        close(s->zsock);
    pp_segment_destroy(&s->seg);
    pthread_mutex_destroy(&s->fn_lock);
    pthread_mutex_destroy(&s->group_lock);
    for (int g = 0; g < PP_MAX_GROUPS; g++)
        pthread_mutex_destroy(&s->wait_lock[g]);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_mutex_destroy(&s->ovf_lock);
    pthread_mutex_destroy(&s->ctl_lock);
    pthread_mutex_destroy(&s->coll_lock);
    pthread_cond_destroy(&s->ctl_cond);
    free(s);
}

PP_EXPORT int pp_get_ncpus(pp_server *s)
{
    return s ? pp_load_acquire(&s->target) : -EINVAL;
}

PP_EXPORT int pp_set_ncpus(pp_server *s, int n)
{
    if (!s || n < PP_AUTODETECT || n > PP_MAX_WORKERS)
        return -EINVAL;
    if (pp__in_engine(s))
        return -EDEADLK;
    if (n == PP_AUTODETECT)
        n = pp_detect_ncpus();
    pp_store_release(&s->target, n);
    pp_store_release(&s->ctl_dirty, 1);
    pp__engine_kick(s);
    return 0;
}

/* ---------------------------------------------------------------- */
/* Statistics                                                         */
/* ---------------------------------------------------------------- */

PP_EXPORT int pp_get_stats(pp_server *s, struct pp_stats *st)
{
    if (!s || !st)
        return -EINVAL;
    memset(st, 0, sizeof(*st));
    uint64_t now = pp_now_ns();
    uint64_t ticks = pp__ticks() - s->tsc0;
    double ns_per_tick = ticks ? (double)(now - s->ns0) / (double)ticks : 1.0;
    uint64_t busy = 0;
    unsigned used = pp_load_acquire(&s->sh->slots_used);

    for (unsigned i = 0; i < used; i++) {
        st->njobs += pp_load_relaxed(&pp__cons_at(s->sh, i)->njobs);
        busy += pp_load_relaxed(&pp__cons_at(s->sh, i)->busy_ticks);
    }
    uint32_t ng = pp_load_acquire(&s->ngroups);
    for (uint32_t g = 0; g < ng; g++)
        st->active_tasks += pp__group_pending(s, PP_CI(g, 0)) +
                            pp__group_pending(s, PP_CI(g, 1));
    st->elapsed_s = (double)(now - s->created_ns) / 1e9;
    st->ncpus = pp_load_acquire(&s->target);
    st->worker_deaths = pp_load_relaxed(&s->deaths);
    st->workers_started = pp_load_relaxed(&s->started_workers);
    st->nnodes = 1;
    strcpy(st->nodes[0].name, "local");
    st->nodes[0].njobs = st->njobs;
    st->nodes[0].time_sum_s = (double)busy * ns_per_tick / 1e9;
    st->nodes[0].ncpus = st->ncpus;
    pp__net_stats(s, st);
    return 0;
}

PP_EXPORT int pp_print_stats(pp_server *s, FILE *out)
{
    struct pp_stats st;
    int r;

    if (!out)
        return -EINVAL;
    if ((r = pp_get_stats(s, &st)) < 0)
        return r;
    fprintf(out, "Job execution statistics:\n");
    fprintf(out, " job count | %% of all jobs | job time sum | time per job | job server\n");
    for (unsigned i = 0; i < st.nnodes; i++) {
        const struct pp_node_stats *n = &st.nodes[i];
        double pct = st.njobs ? 100.0 * (double)n->njobs / (double)st.njobs : 0.0;
        double per = n->njobs ? n->time_sum_s / (double)n->njobs : 0.0;
        fprintf(out, " %9llu | %13.2f | %12.4f | %12.6f | %s\n",
                (unsigned long long)n->njobs, pct, n->time_sum_s, per, n->name);
    }
    fprintf(out, "Time elapsed since server creation %.6f\n", st.elapsed_s);
    fprintf(out, "%llu active tasks, %d cores\n", (unsigned long long)st.active_tasks,
            st.ncpus);
    return ferror(out) ? -EIO : 0;
}
