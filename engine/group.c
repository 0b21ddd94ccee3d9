/*
 * group.c - job groups and pp_wait.
 *
 * A group's jobs pending = submitted (host counter) - finished, where
 * finished is the sum of one counter per worker slot (each written only by
 * its worker, so completing a job costs no contended atomic) plus the
 * engine's counter (jobs with a callback, and failures it reports).
 *
 * pp_wait reads every finished counter (acquire) before the submitted
 * counter: a finished job's submission happened before it, so the
 * estimate is never below the true pending count, and 0 is exact.
 * Counters come in two banks per group so that pp_wait waits only for
 * jobs submitted before it (see wait_group).
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

int pp__group_index(struct pp_server *s, const char *name, bool create,
                    uint32_t *ret)
{
    uint32_t n;
    int r = -ENOENT;

    if (name == NULL || strcmp(name, "default") == 0) {
        *ret = 0;
        return 0;
    }
    if (strlen(name) > PP_GROUP_NAME_MAX)
        return -EINVAL;
    n = pp_load_acquire(&s->ngroups);
    for (uint32_t i = 1; i < n; i++)
        if (strcmp(s->sh->groups[i].name, name) == 0) {
            *ret = i;
            return 0;
        }
    if (!create)
        return -ENOENT;
    pthread_mutex_lock(&s->group_lock);
    n = pp_load_relaxed(&s->ngroups);
    for (uint32_t i = 1; i < n; i++)
        if (strcmp(s->sh->groups[i].name, name) == 0) {
            *ret = i;
            r = 0;
            goto out;
        }
    if (n >= PP_MAX_GROUPS) {
        r = -ENOSPC;
        goto out;
    }
    strcpy(s->sh->groups[n].name, name);
    pp_store_release(&s->ngroups, n + 1); /* name written before it shows */
    *ret = n;
    r = 0;
out:
    pthread_mutex_unlock(&s->group_lock);
    return r;
}

/* Jobs of counter index ci (a group's bank) not finished yet. */
uint64_t pp__group_pending(struct pp_server *s, uint32_t ci)
{
    uint64_t done = pp__done_sum(s->sh, ci);
    uint64_t sub = pp_load_acquire(&s->submitted[ci]);
    return sub > done ? sub - done : 0;
}

void pp__group_engine_done(struct pp_server *s, uint32_t ci)
{
    struct pp_group *grp = &s->sh->groups[PP_CI_GROUP(ci)];
    atomic_fetch_add_explicit(&grp->engine_done[ci & 1], 1, memory_order_release);
    pp__group_signal(s->sh, ci);
}

static uint64_t ns_of(const struct timespec *dl)
{
    return dl ? (uint64_t)dl->tv_sec * 1000000000ull + (uint64_t)dl->tv_nsec : UINT64_MAX;
}

/* Waits until counter index ci has nothing pending. */
static int wait_ci(struct pp_server *s, uint32_t ci, const struct timespec *dl)
{
    struct pp_group *grp = &s->sh->groups[PP_CI_GROUP(ci)];
    uint64_t spin_end = pp_now_ns() + pp_load_relaxed(&s->spin_ns);

    while (pp__group_pending(s, ci) != 0) {
        uint64_t now = pp_now_ns();
        if (now >= ns_of(dl))
            return -ETIMEDOUT;
        if (s->sh->busy_poll || now < spin_end) {
            pp_cpu_relax();
            continue;
        }
        /* The bank waited on gets no new jobs (wait_group), so its
         * submitted count is final: wake me only when all are done. */
        pp_store_release(&grp->wake_at[ci & 1], pp_load_acquire(&s->submitted[ci]));
        pp__before_block(s);
        uint32_t seq = pp_event_prepare(&grp->ev);
        if (pp__group_pending(s, ci) == 0) {
            pp_event_cancel(&grp->ev);
            break;
        }
        int r = pp_event_wait(&grp->ev, seq, dl);
        pp_event_cancel(&grp->ev);
        if (r == -ETIMEDOUT)
            return pp__group_pending(s, ci) == 0 ? 0 : -ETIMEDOUT;
    }
    return 0;
}

/*
 * Waits for the jobs of group g submitted before the call, not for those
 * submitted meanwhile (a steady stream of submissions cannot starve it).
 * Jobs are counted in two banks; new jobs go to the bank of the group's
 * epoch.  With epoch e, bank e&1 holds the jobs of epoch e and the other
 * bank the rest of epoch e-1.  So: let epoch e-1 drain, flip the epoch so
 * new jobs use the drained bank, then drain bank e&1, which receives
 * nothing new.  One waiter per group at a time (wait_lock).
 */
static int wait_group(struct pp_server *s, uint32_t g, const struct timespec *dl,
                      int timeout_ms)
{
    int r;

    if (timeout_ms == 0) /* just test */
        return pp__group_pending(s, PP_CI(g, 0)) || pp__group_pending(s, PP_CI(g, 1))
                   ? -ETIMEDOUT : 0;
    pthread_mutex_lock(&s->wait_lock[g]);
    uint32_t e = pp_load_relaxed(&s->epoch[g]);
    r = wait_ci(s, PP_CI(g, e + 1), dl);
    if (r == 0) {
        pp_store_release(&s->epoch[g], e + 1);
        r = wait_ci(s, PP_CI(g, e), dl);
    }
    pthread_mutex_unlock(&s->wait_lock[g]);
    return r;
}

PP_EXPORT int pp_wait(pp_server *s, const char *group, int timeout_ms)
{
    struct timespec ts, *dl;
    uint32_t g;
    int r;

    if (!s || timeout_ms < -1)
        return -EINVAL;
    if (pp__in_engine(s) && timeout_ms != 0)
        return -EDEADLK;
    dl = pp_deadline(&ts, timeout_ms);
    if (group) {
        if ((r = pp__group_index(s, group, false, &g)) < 0)
            return r;
        return wait_group(s, g, dl, timeout_ms);
    }
    /* All groups that exist now, one after the other. */
    uint32_t n = pp_load_acquire(&s->ngroups);
    for (g = 0; g < n; g++)
        if ((r = wait_group(s, g, dl, timeout_ms)) < 0)
            return r;
    return 0;
}
