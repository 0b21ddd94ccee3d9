/*
 * create.c - pprocess's create(): the caller forked at that point as one
 * more job of a collector.
 *
 * The child keeps the caller's memory (copy-on-write) and the shared
 * segment (MAP_SHARED), but no thread of the library: it talks to the
 * collector through a pipe of its own.  Frames on it:
 *
 *   u32 kind, u32 len, then len bytes       (CH_DATA: len <= PP_INLINE_MAX)
 *   u32 kind, u32 16, u64 offset, u64 len   (CH_BLOCK: a page-heap block)
 *   u32 kind, u32 0                         (CH_EXIT: pp_channel_exit)
 *
 * Large messages go in a page-heap block of the segment (the heap's lock
 * is process-shared and robust), so the parent reads them in place.
 *
 * One watcher thread per collector (started by its first create) polls
 * every child's pipe and pidfd, turns frames into messages, reaps each
 * child once its pidfd says it ended and its pipe is drained, and adds its
 * last message: nothing after CH_EXIT, else -ECHILD with how it ended.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "collect.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { CH_DATA = 1, CH_BLOCK = 2, CH_EXIT = 3 };
#define FRAME_HDR 8u
#define BUF_MAX (FRAME_HDR + PP_INLINE_MAX + 16u)

struct pp_channel {
    int fd;                      /* the pipe's write end */
    struct pp_server *s;         /* its segment: the page heap */
};

struct child {
    pid_t pid;
    int fd, pidfd;               /* pipe read end; -1 at EOF */
    struct cjob *j;
    bool exited_in_order;        /* CH_EXIT seen */
    unsigned char buf[BUF_MAX];
    size_t len;
    struct child *next;
};

struct watcher {
    pthread_t thread;
    int efd;                     /* wakes it: a new child, or stop */
    pthread_mutex_t lock;        /* children list, stop */
    struct child *children;
    bool stop;
};

/* ---------------------------------------------------------------- */
/* The child's side                                                   */
/* ---------------------------------------------------------------- */

int pp__write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

PP_EXPORT int pp_channel_send(pp_channel *ch, const void *data, size_t len)
{
    if (!ch || (!data && len))
        return -EINVAL;
    if (len > PP_MAX_PAYLOAD)
        return -E2BIG;
    unsigned char f[BUF_MAX];
    uint32_t h[2];
    if (len <= PP_INLINE_MAX) {
        h[0] = CH_DATA;
        h[1] = (uint32_t)len;
        memcpy(f, h, sizeof(h));
        if (len)
            memcpy(f + FRAME_HDR, data, len);
        return pp__write_all(ch->fd, f, FRAME_HDR + len);
    }
    struct pp_shared *sh = ch->s->sh;
    uint64_t off = pp_pages_alloc(&sh->pages, &ch->s->seg, len, NULL);
    if (!off)
        return -ENOMEM;
    memcpy(pp_seg_ptr(&ch->s->seg, off), data, len);
    uint64_t ref[2] = { off, len };
    h[0] = CH_BLOCK;
    h[1] = sizeof(ref);
    memcpy(f, h, sizeof(h));
    memcpy(f + FRAME_HDR, ref, sizeof(ref));
    int r = pp__write_all(ch->fd, f, FRAME_HDR + sizeof(ref));
    if (r < 0)
        pp_pages_free(&sh->pages, &ch->s->seg, off, len);
    return r;
}

PP_EXPORT void pp_channel_exit(pp_channel *ch)
{
    if (ch) {
        uint32_t h[2] = { CH_EXIT, 0 };
        (void)pp__write_all(ch->fd, h, sizeof(h));
    }
    _exit(0);
}

/* ---------------------------------------------------------------- */
/* The watcher                                                        */
/* ---------------------------------------------------------------- */

static void frames(struct pp_collector *c, struct child *ch)
{
    size_t at = 0;
    while (ch->len - at >= FRAME_HDR) {
        uint32_t h[2];
        memcpy(h, ch->buf + at, sizeof(h));
        uint32_t kind = h[0], n = h[1];
        bool bad = (kind == CH_DATA && n > PP_INLINE_MAX) || (kind == CH_BLOCK && n != 16) ||
                   (kind == CH_EXIT && n != 0) || kind < CH_DATA || kind > CH_EXIT;
        if (bad) { /* not our frames: stop reading this child */
            ch->len = 0;
            close(ch->fd);
            ch->fd = -1;
            return;
        }
        if (ch->len - at < FRAME_HDR + n)
            break;
        const unsigned char *p = ch->buf + at + FRAME_HDR;
        if (kind == CH_DATA) {
            struct item it = { .len = n, .kind = IT_DATA };
            pp__coll_add(c, ch->j, &it, p);
        } else if (kind == CH_BLOCK) {
            uint64_t ref[2];
            memcpy(ref, p, sizeof(ref));
            struct item it = { .len = (uint32_t)ref[1], .kind = IT_BLOCK,
                               .slot = (uint16_t)PP_RES_OWNER_HEAP, .ref = ref[0] };
            if (ref[1] && ref[1] <= PP_MAX_PAYLOAD)
                pp__coll_add(c, ch->j, &it, NULL);
        } else {
            ch->exited_in_order = true;
        }
        at += FRAME_HDR + n;
    }
    memmove(ch->buf, ch->buf + at, ch->len - at);
    ch->len -= at;
}

/* Reads what the pipe has; false at EOF (or an error). */
static bool read_child(struct pp_collector *c, struct child *ch)
{
    while (ch->fd >= 0) {
        ssize_t n = read(ch->fd, ch->buf + ch->len, sizeof(ch->buf) - ch->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n <= 0) {
            close(ch->fd);
            ch->fd = -1;
            return false;
        }
        ch->len += (size_t)n;
        frames(c, ch);
    }
    return false;
}

/* The child ended: what it left in the pipe, its status, its last message. */
static void child_ended(struct pp_collector *c, struct child *ch)
{
    /* Everything it wrote is in the pipe now (a process it forked may
     * still hold the write end: no blocking read). */
    read_child(c, ch);
    int st = 0;
    pid_t p;
    while ((p = waitpid(ch->pid, &st, 0)) < 0 && errno == EINTR)
        ;
    char msg[PP_ERRMSG_MAX];
    struct item it = { .flags = IT_F_FINAL };
    if (ch->exited_in_order) {
        it.kind = IT_NOTHING;
    } else {
        if (p < 0)
            snprintf(msg, sizeof(msg), "created process %d ended without pp_channel_exit "
                     "(its status was reaped elsewhere)", (int)ch->pid);
        else if (WIFSIGNALED(st))
            snprintf(msg, sizeof(msg), "created process %d killed by signal %d (%s)",
                     (int)ch->pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
            snprintf(msg, sizeof(msg), "created process %d exited with status %d without "
                     "pp_channel_exit", (int)ch->pid, WEXITSTATUS(st));
        it.kind = IT_DATA;
        it.flags |= IT_F_FAIL;
        it.status = -ECHILD;
        it.len = (uint32_t)strlen(msg);
    }
    pp__coll_add(c, ch->j, &it, msg);
    if (ch->fd >= 0)
        close(ch->fd);
    close(ch->pidfd);
}

static void *watch_main(void *arg)
{
    struct pp_collector *c = arg;
    struct watcher *w = c->create;
    pp__block_signals();
    for (;;) {
        pthread_mutex_lock(&w->lock);
        unsigned n = 0;
        for (struct child *ch = w->children; ch; ch = ch->next)
            n++;
        bool stop = w->stop && n == 0;
        struct pollfd *p = stop ? NULL : calloc(2 * n + 1, sizeof(*p));
        struct child **who = stop ? NULL : calloc(n ? n : 1, sizeof(*who));
        unsigned k = 0;
        if (p && who) {
            for (struct child *ch = w->children; ch; ch = ch->next, k++) {
                who[k] = ch;
                p[2 * k] = (struct pollfd){ ch->fd, POLLIN, 0 };
                p[2 * k + 1] = (struct pollfd){ ch->pidfd, POLLIN, 0 };
            }
            p[2 * n] = (struct pollfd){ w->efd, POLLIN, 0 };
        }
        pthread_mutex_unlock(&w->lock);
        if (stop)
            break;
        if (!p || !who) { /* out of memory: try again soon */
            free(p), free(who);
            usleep(10000);
            continue;
        }
        poll(p, 2 * n + 1, -1);
        uint64_t v;
        if (p[2 * n].revents)
            (void)!read(w->efd, &v, sizeof(v));
        for (unsigned i = 0; i < n; i++) {
            struct child *ch = who[i];
            if (p[2 * i].revents)
                read_child(c, ch);
            if (p[2 * i + 1].revents) { /* ended */
                child_ended(c, ch);
                pthread_mutex_lock(&w->lock);
                for (struct child **q = &w->children; *q; q = &(*q)->next)
                    if (*q == ch) {
                        *q = ch->next;
                        break;
                    }
                pthread_mutex_unlock(&w->lock);
                free(ch);
            }
        }
        free(p);
        free(who);
    }
    return NULL;
}

static int watcher_start(struct pp_collector *c)
{
    struct watcher *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->efd < 0) {
        int r = -errno;
        free(w);
        return r;
    }
    pthread_mutex_init(&w->lock, NULL);
    c->create = w;
    int r = pthread_create(&w->thread, NULL, watch_main, c);
    if (r) {
        close(w->efd);
        pthread_mutex_destroy(&w->lock);
        free(w);
        c->create = NULL;
        return -r;
    }
    return 0;
}

void pp__create_fini(struct pp_collector *c)
{
    struct watcher *w = c->create;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_mutex_unlock(&w->lock);
    uint64_t one = 1;
    (void)!write(w->efd, &one, sizeof(one));
    pthread_join(w->thread, NULL);
    close(w->efd);
    pthread_mutex_destroy(&w->lock);
    free(w);
    c->create = NULL;
}

/* ---------------------------------------------------------------- */
/* create()                                                           */
/* ---------------------------------------------------------------- */

/* A created process ends with its channel: pp_channel_exit.  Not a
 * library thread: no server call may be made from it. */
PP_EXPORT int pp_collector_create(pp_collector *c, pp_channel **ret)
{
    if (!c || !c->s || !ret)
        return -EINVAL;
    static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&start_lock);
    int r = c->create ? 0 : watcher_start(c);
    pthread_mutex_unlock(&start_lock);
    if (r < 0)
        return r;
    struct child *ch = calloc(1, sizeof(*ch));
    pp_channel *chan = malloc(sizeof(*chan));
    int fds[2];
    if (!ch || !chan || pipe2(fds, O_CLOEXEC) < 0) {
        r = ch && chan ? -errno : -ENOMEM;
        free(ch), free(chan);
        return r;
    }
    struct cjob *j = pp__coll_reserve(c);
    if (!j) {
        close(fds[0]), close(fds[1]);
        free(ch), free(chan);
        return -ENOMEM;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        signal(SIGPIPE, SIG_IGN); /* a gone collector: -EPIPE from send */
        free(ch);
        chan->fd = fds[1];
        chan->s = c->s;
        *ret = chan;
        return 0;
    }
    r = pid < 0 ? -errno : 0;
    close(fds[1]);
    free(chan);
    int pidfd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (r == 0 && pidfd < 0) { /* no pidfd (kernel < 5.3): cannot watch it; end it */
        r = -errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (r < 0) {
        close(fds[0]);
        free(ch);
        pp__coll_unreserve(c, j);
        return r;
    }
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    ch->pid = pid;
    ch->fd = fds[0];
    ch->pidfd = pidfd;
    ch->j = j;
    struct watcher *w = c->create;
    pthread_mutex_lock(&w->lock);
    ch->next = w->children;
    w->children = ch;
    pthread_mutex_unlock(&w->lock);
    uint64_t one = 1;
    (void)!write(w->efd, &one, sizeof(one));
    *ret = NULL;
    return 0;
}
