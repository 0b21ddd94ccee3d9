/*
 * engine.c - the engine thread: callbacks, worker supervision, overflow.
 *
 * One thread per server, with every signal blocked.  It
 *   - drains the per-worker "done" rings: runs callbacks, finishes
 *     server-owned tasks, frees records released early;
 *   - keeps the pool at the wanted size: asks the zygote for workers, asks
 *     surplus workers to stop;
 *   - handles worker deaths: repairs the submit ring, fails the job the
 *     worker was running (-ECHILD, naming the signal or exit status) or
 *     requeues the one it had taken but not started, and replaces it;
 *   - moves jobs from the overflow queue into the ring when workers made
 *     room.
 * It sleeps in poll() on an eventfd (workers and the API kick it, only when
 * it announced it sleeps) and on the zygote socket: no timed wake-ups.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define DONE_BATCH 64u

void pp__engine_kick(struct pp_server *s)
{
    uint64_t one = 1;
    (void)!write(s->sh->engine_efd, &one, sizeof(one));
}

bool pp__in_engine(struct pp_server *s)
{
    return s->engine_started && pthread_equal(pthread_self(), s->engine);
}

/* ---------------------------------------------------------------- */
/* Finished jobs                                                      */
/* ---------------------------------------------------------------- */

/* A token a consumer handed over.  One whose generation is gone (never
 * produced by a correct consumer) is ignored rather than acted on. */
void pp__handle_done(struct pp_server *s, uint64_t tok)
{
    /* Acquire: pairs with the release of nrecs in pool.c grow(), so the
     * task chunk is visible to this thread (the token came through
     * another process, which ThreadSanitizer cannot follow). */
    if (pp_tok_idx(tok) >= pp_load_acquire(&s->sh->nrecs))
        return;
    struct pp_task *t = pp__task_of(s, pp_tok_idx(tok));
    uint64_t st = pp_load_acquire(&t->rec->state); /* D2 */

    if (pp_st_gen(st) != pp_tok_gen(tok))
        return;
    if (pp_st_phase(st) == PP_ST_EXECUTED)
        pp__finish_by_engine(s, t);
    else if (pp_st_phase(st) == PP_ST_DONE && (st & PP_ST_ORPHAN))
        pp__task_free(s, t);
}

unsigned pp__drain_slot(struct pp_server *s, int slot)
{
    uint64_t toks[DONE_BATCH];
    unsigned k, total = 0;

    for (;;) {
        k = pp_spsc_pop_burst(pp__done_ring(s->sh, (uint32_t)slot), toks, DONE_BATCH);
        /* The messages of the jobs just taken were sent before they were
         * handed over (the pop's acquire makes them visible): they go to
         * their collectors before the jobs' callbacks add the results. */
        pp__coll_drain(s, (uint32_t)slot, false);
        if (!k)
            break;
        for (unsigned i = 0; i < k; i++)
            pp__handle_done(s, toks[i]);
        total += k;
    }
    return total;
}

static unsigned drain_all(struct pp_server *s)
{
    unsigned n = 0;
    PP_FOR_EACH_SLOT(s->sh, i)
        n += pp__drain_slot(s, (int)i);
    return n;
}

static bool any_done_pending(struct pp_server *s)
{
    PP_FOR_EACH_SLOT(s->sh, i) {
        struct pp_spsc *d = pp__done_ring(s->sh, i);
        if (pp_load_acquire(&d->tail) != pp_load_relaxed(&d->head))
            return true;
    }
    return pp__coll_pending(s);
}

/* ---------------------------------------------------------------- */
/* Worker pool                                                        */
/* ---------------------------------------------------------------- */

static void spawn_slot(struct pp_server *s, int i)
{
    struct pp_wcb *w = &s->sh->wcb[i];

    pp_store_relaxed(&w->stop, 0);
    pp_store_relaxed(&w->pid, 0);
    pp__cons_reset(s, (uint32_t)i);
    s->slots[i].last_msg_blk = 0;
    w->restart = s->cfg.restart;
    /* Worker 0 gets the last allowed CPU, and so on downwards: the host's
     * main thread usually runs on the first, and with one worker fewer
     * than CPUs it keeps a core of its own. */
    int na = s->ncpus_allowed;
    pp_store_relaxed(&w->cpu, s->cfg.pin && na > 0 ? s->cpus_allowed[na - 1 - i % na] : -1);
    if ((unsigned)i + 1 > pp_load_relaxed(&s->sh->slots_used))
        pp_store_release(&s->sh->slots_used, (unsigned)i + 1);
    pp__set_live(s->sh, (uint32_t)i, true); /* awake from its start */
    if (pp__zygote_spawn(s, i) < 0) {
        pp__set_live(s->sh, (uint32_t)i, false);
        return; /* zygote gone: handled when its socket reports EOF */
    }
    s->slots[i].state = PP_SLOT_SPAWNING;
}

/* Brings the pool to the target: spawn into empty slots below it, stop
 * workers at or above it. */
static void reconcile(struct pp_server *s)
{
    int target = pp_load_acquire(&s->target);

    if (pp_load_relaxed(&s->shutdown) || s->zsock < 0)
        return;
    for (int i = 0; i < PP_MAX_WORKERS; i++) {
        struct pp_slot *sl = &s->slots[i];
        if (i < target) {
            /* After a failed fork, wait for a change (a worker exit or
             * pp_set_ncpus) rather than retry in a tight loop. */
            if (sl->state == PP_SLOT_EMPTY && !sl->repair_pending && !s->spawn_blocked)
                spawn_slot(s, i);
        } else if (sl->state == PP_SLOT_LIVE || sl->state == PP_SLOT_SPAWNING) {
            pp_store_release(&s->sh->wcb[i].stop, 1);
            sl->state = PP_SLOT_STOPPING;
            pp__wake_slot(s->sh, (uint32_t)i); /* a sleeper must see it */
        }
    }
    pthread_mutex_lock(&s->ctl_lock);
    pthread_cond_broadcast(&s->ctl_cond);
    pthread_mutex_unlock(&s->ctl_lock);
}

static void describe_death(int wstatus, int slot, pid_t pid, char *buf, size_t n)
{
    if (WIFSIGNALED(wstatus)) {
        int sig = WTERMSIG(wstatus);
        snprintf(buf, n, "worker %d (pid %d) killed by signal %d (%s) while running the job",
                 slot, (int)pid, sig, strsignal(sig));
    } else if (WIFEXITED(wstatus)) {
        snprintf(buf, n, "worker %d (pid %d) exited with status %d while running the job",
                 slot, (int)pid, WEXITSTATUS(wstatus));
    } else {
        snprintf(buf, n, "worker %d (pid %d) vanished while running the job", slot,
                 (int)pid);
    }
}

/* Settles the dead worker's job and blocks.  Returns false to retry later. */
static bool repair(struct pp_server *s, int i)
{
    struct pp_slot *sl = &s->slots[i];
    char msg[PP_ERRMSG_MAX];

    describe_death(sl->wstatus, i, sl->pid, msg, sizeof(msg));
    if (!pp__cons_repair(s, (uint32_t)i, msg))
        return false;
    sl->repair_pending = false;
    sl->state = PP_SLOT_EMPTY;
    sl->pid = 0;
    return true;
}

static void on_exit_msg(struct pp_server *s, const struct pp_zmsg *m)
{
    struct pp_slot *sl = &s->slots[m->slot];
    struct pp_wcb *w = &s->sh->wcb[m->slot];
    bool clean = WIFEXITED(m->status) && WEXITSTATUS(m->status) == 0 &&
                 pp_load_relaxed(&w->cons.claim.taken) == 0 &&
                 pp_load_relaxed(&w->cons.claim.pos) == 0;
    /* Asked to stop, or restart mode after a job: a clean exit is normal. */
    if (!(clean && (sl->state == PP_SLOT_STOPPING || s->cfg.restart)))
        atomic_fetch_add(&s->deaths, 1);
    sl->wstatus = m->status;
    sl->pid = m->pid;
    sl->repair_pending = true;
    repair(s, m->slot); /* false: a live worker is mid-dequeue; retried */
}

static void zygote_msgs(struct pp_server *s)
{
    struct pp_zmsg m;

    for (;;) {
        ssize_t k = recv(s->zsock, &m, sizeof(m), MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
            s->zygote_lost = true; /* EOF: the zygote is gone */
            return;
        }
        if (k != (ssize_t)sizeof(m))
            return;
        if (m.slot < 0 || m.slot >= PP_MAX_WORKERS)
            continue;
        struct pp_slot *sl = &s->slots[m.slot];
        switch (m.type) {
        case PP_Z_SPAWNED:
            sl->pid = m.pid;
            if (sl->state == PP_SLOT_SPAWNING)
                sl->state = PP_SLOT_LIVE;
            atomic_fetch_add(&s->started_workers, 1); /* really started */
            break;
        case PP_Z_SPAWN_FAILED:
            sl->state = PP_SLOT_EMPTY;
            pp__set_live(s->sh, (uint32_t)m.slot, false);
            s->spawn_blocked = true;
            pthread_mutex_lock(&s->ctl_lock);
            s->spawn_errno = m.status;
            pthread_mutex_unlock(&s->ctl_lock);
            break;
        case PP_Z_EXITED:
            on_exit_msg(s, &m);
            s->spawn_blocked = false;
            break;
        }
        int live = 0;
        for (int i = 0; i < PP_MAX_WORKERS; i++)
            live += s->slots[i].state == PP_SLOT_LIVE;
        pthread_mutex_lock(&s->ctl_lock);
        s->nlive = live;
        pthread_cond_broadcast(&s->ctl_cond);
        pthread_mutex_unlock(&s->ctl_lock);
    }
}

/*
 * The zygote died (killed from outside): every worker got SIGKILL from
 * PR_SET_PDEATHSIG.  Wait until each is really gone (a pidfd turns
 * readable when the process ends; they are no longer our grandchildren to
 * reap), settle each one's job as a crash, then start a new zygote; the
 * pool refills on the next reconcile.
 */
static void recover_zygote(struct pp_server *s)
{
    while (waitpid(s->zygote, NULL, 0) < 0 && errno == EINTR)
        ;
    s->zygote = 0;
    close(s->zsock);
    s->zsock = -1;
    for (int i = 0; i < PP_MAX_WORKERS; i++) {
        struct pp_slot *sl = &s->slots[i];
        if (sl->state == PP_SLOT_EMPTY)
            continue;
        pid_t pid = sl->pid ? sl->pid : pp_load_relaxed(&s->sh->wcb[i].pid);
        if (pid > 0) {
            int fd = (int)syscall(SYS_pidfd_open, pid, 0);
            if (fd >= 0) {
                struct pollfd p = { fd, POLLIN, 0 };
                if (poll(&p, 1, 5000) == 0) {
                    kill(pid, SIGKILL);
                    poll(&p, 1, -1);
                }
                close(fd);
            }
        }
        atomic_fetch_add(&s->deaths, 1);
        sl->wstatus = SIGKILL; /* as waitpid reports a SIGKILL death */
        sl->pid = pid;
        sl->repair_pending = true;
        repair(s, i);
    }
    if (pp__zygote_start(s) < 0)
        pp_store_release(&s->zygote_failed, 1);
    pp_store_relaxed(&s->ctl_dirty, 1);
}

static bool retry_repairs(struct pp_server *s)
{
    bool pending = false;
    unsigned used = pp_load_relaxed(&s->sh->slots_used);
    for (unsigned i = 0; i < used; i++)
        if (s->slots[i].repair_pending && !repair(s, (int)i))
            pending = true;
    return pending;
}

/* ---------------------------------------------------------------- */
/* Shutdown                                                           */
/* ---------------------------------------------------------------- */

/* After every worker is gone: finish what was handed over, cancel the rest. */
static void cancel_everything(struct pp_server *s)
{
    drain_all(s);
    uint32_t nch = pp_load_acquire(&s->nchunks);
    for (uint32_t c = 0; c < nch; c++)
        for (uint32_t i = 0; i < PP_REC_CHUNK; i++) {
            struct pp_task *t = &s->tchunks[c][i];
            switch (pp_st_phase(pp_load_acquire(&t->rec->state))) {
            case PP_ST_QUEUED:
                pp__fail_task(s, t, -ECANCELED, "cancelled: the server was destroyed");
                break;
            case PP_ST_EXECUTED:
                pp__finish_by_engine(s, t);
                break;
            }
        }
}

/* ---------------------------------------------------------------- */
/* The loop                                                           */
/* ---------------------------------------------------------------- */

static void sleep_until_kicked(struct pp_server *s, bool repairs_pending)
{
    struct pollfd pfd[2] = { { s->sh->engine_efd, POLLIN, 0 }, { s->zsock, POLLIN, 0 } };
    uint64_t v;
    int n = s->zsock >= 0 ? 2 : 1;

    if (repairs_pending) {
        sched_yield(); /* a live worker finishes its dequeue in a moment */
        return;
    }
    pp_store_relaxed(&s->sh->engine_sleeping, 1);
    /* Pairs with the fence in the workers' to_engine(). */
    pp_fence_seq_cst();
    if (!any_done_pending(s) && pp_load_relaxed(&s->sh->overflow_waiting) != 2 &&
        !pp_load_relaxed(&s->ctl_dirty) && !pp_load_relaxed(&s->shutdown))
        poll(pfd, n, -1); /* a dead zygote's socket polls as readable (EOF) */
    pp_store_relaxed(&s->sh->engine_sleeping, 0);
    while (read(s->sh->engine_efd, &v, sizeof(v)) == sizeof(v))
        ;
}

static void *engine_main(void *arg)
{
    struct pp_server *s = arg;
    int r = pp__zygote_start(s);

    pthread_mutex_lock(&s->ctl_lock);
    s->engine_ready = r == 0 ? 1 : r;
    pthread_cond_broadcast(&s->ctl_cond);
    pthread_mutex_unlock(&s->ctl_lock);
    if (r < 0)
        return NULL;

    pp_store_relaxed(&s->ctl_dirty, 1);
    for (;;) {
        unsigned n = drain_all(s);
        if (s->zsock >= 0)
            zygote_msgs(s);
        if (s->zygote_lost) {
            s->zygote_lost = false;
            recover_zygote(s);
        }
        bool pend = retry_repairs(s);
        if (atomic_exchange(&s->ctl_dirty, 0)) {
            s->spawn_blocked = false; /* pp_set_ncpus: try again */
            reconcile(s);
        } else if (!pend) {
            reconcile(s);
        }
        if (pp_load_relaxed(&s->sh->overflow_waiting))
            pp__overflow_drain(s);
        if (pp_load_relaxed(&s->shutdown))
            break;
        if (n == 0)
            sleep_until_kicked(s, pend);
    }
    pp__zygote_shutdown(s); /* kills and reaps every worker */
    cancel_everything(s);
    return NULL;
}

void pp__block_signals(void)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
}

int pp__engine_start(struct pp_server *s)
{
    sigset_t all, old;
    int r;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits it */
    r = pthread_create(&s->engine, NULL, engine_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r)
        return -r;
    s->engine_started = true;
    pthread_mutex_lock(&s->ctl_lock);
    while (s->engine_ready == 0)
        pthread_cond_wait(&s->ctl_cond, &s->ctl_lock);
    r = s->engine_ready < 0 ? s->engine_ready : 0;
    pthread_mutex_unlock(&s->ctl_lock);
    if (r < 0) {
        pthread_join(s->engine, NULL);
        s->engine_started = false;
    }
    return r;
}

void pp__engine_stop(struct pp_server *s)
{
    if (!s->engine_started)
        return;
    pp_store_release(&s->shutdown, 1);
    /* A submitter blocked on a full queue (block_when_full) sees the
     * shutdown and returns -ESHUTDOWN. */
    pp_event_signal(&s->sh->space, INT_MAX);
    pp__engine_kick(s);
    pthread_join(s->engine, NULL);
    s->engine_started = false;
}
