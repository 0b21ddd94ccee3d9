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

uint64_t pp__group_pending(struct pp_server *s, uint32_t g)
{
    uint64_t done = pp_load_acquire(&s->sh->groups[g].engine_done);
    unsigned nslots = pp_load_acquire(&s->slots_used);
    for (unsigned w = 0; w < nslots; w++)
        done += pp_load_acquire(&s->sh->wcb[w].group_done[g]);
    uint64_t sub = pp_load_acquire(&s->submitted[g]);
    return sub > done ? sub - done : 0;
}

void pp__group_engine_done(struct pp_server *s, uint32_t g)
{
    atomic_fetch_add_explicit(&s->sh->groups[g].engine_done, 1,
                              memory_order_release);
    pp_event_signal(&s->sh->groups[g].ev, INT_MAX);
}

/* Waits for one group to have nothing pending. */
static int wait_group(struct pp_server *s, uint32_t g, const struct timespec *dl,
                      int timeout_ms)
{
    struct pp_group *grp = &s->sh->groups[g];
    uint64_t spin_end = pp_now_ns() + s->sh->spin_ns;

    while (pp__group_pending(s, g) != 0) {
        if (timeout_ms == 0)
            return -ETIMEDOUT;
        if (s->sh->busy_poll || pp_now_ns() < spin_end) {
            pp_cpu_relax();
            if (dl && pp_now_ns() >= (uint64_t)dl->tv_sec * 1000000000ull + (uint64_t)dl->tv_nsec)
                return -ETIMEDOUT;
            continue;
        }
        uint32_t seq = pp_event_prepare(&grp->ev);
        if (pp__group_pending(s, g) == 0) {
            pp_event_cancel(&grp->ev);
            break;
        }
        int r = pp_event_wait(&grp->ev, seq, dl);
        pp_event_cancel(&grp->ev);
        if (r == -ETIMEDOUT)
            return pp__group_pending(s, g) == 0 ? 0 : -ETIMEDOUT;
    }
    return 0;
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
        r = pp__group_index(s, group, false, &g);
        if (r < 0)
            return r == -ENOENT && strcmp(group, "default") == 0 ? 0 : r;
        return wait_group(s, g, dl, timeout_ms);
    }
    /* All groups: wait for each in turn, then check all are still idle. */
    for (;;) {
        uint32_t n = pp_load_acquire(&s->ngroups);
        bool idle = true;
        for (g = 0; g < n; g++) {
            if (pp__group_pending(s, g) == 0)
                continue;
            idle = false;
            r = wait_group(s, g, dl, timeout_ms);
            if (r < 0)
                return r;
        }
        if (idle)
            return 0;
    }
}
