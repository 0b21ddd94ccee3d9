/*
 * background.c - pprocess's BackgroundCallable, BackgroundQueue and
 * PersistentQueue: a job run in a detached process that serves its
 * messages on a UNIX socket until a reader has read them all.
 *
 * The background process (double fork, its own session, standard input,
 * output and error on /dev/null, no other descriptor of the caller's)
 * binds the socket with umask 0177 (mode
 * 0600 from the start: no window where others may connect), forks the
 * job's process and tells the caller it listens.  The job's process runs
 * fn with a pp_job of its own (job->bg: pp_job_send writes a frame to a
 * pipe; fn may create a pp_server of its own); the background process
 * keeps each message in a list, so a job that crashes loses nothing it
 * sent, and its end is reported (-ECHILD) as a last message.  One poll
 * loop (no thread: the process is a fork of a threaded one) takes the
 * job's frames, accepts one reader at a time and sends it every message
 * from the first one not yet acknowledged, at most BG_WINDOW ahead.  Frames, both ways in host byte order
 * (same host), the same on the job's pipe:
 *
 *   process -> reader: u32 kind, i32 status, u64 len, then len bytes
 *   reader -> process: u64 messages read so far (sent as each is read)
 *
 * A message is dropped only once a reader said it read it, so a reader
 * that goes away leaves the rest to the next one: each message is read
 * once over all readers.  After the last message is acknowledged the
 * process removes the socket and exits.
 *
 * The reader side is a collector (s = NULL) whose job i is paths[i]; a
 * thread polls the connections and adds what arrives (collect.h).
 */
#define _GNU_SOURCE
#include "internal.h"
#include "collect.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

enum { BG_DATA = 1, BG_RESULT = 2, BG_FAIL = 3, BG_NONE = 4 };
#define BG_WINDOW 256u   /* messages sent and not acknowledged, at most */
#define BG_DRAIN_MS 2000 /* a reader closing waits this long for the process's end */

struct bg_frame {
    uint32_t kind;
    int32_t status;
    uint64_t len;
};

/* ================================================================ */
/* The background process                                            */
/* ================================================================ */

struct bg_msg {
    struct bg_msg *next;
    struct bg_frame f;
    unsigned char data[];
};

/* The background process's state (one thread: a poll loop), or in the
 * job's process only job_fd. */
struct pp_bg {
    struct bg_msg *head, *tail;  /* messages not acknowledged yet */
    uint64_t base;               /* the number of head (messages dropped before it) */
    uint64_t count;              /* messages added */
    bool ended;                  /* the last one is among them */
    /* the reader connected now */
    int cfd;                     /* -1: none */
    uint64_t start, sent;        /* base when it came; messages sent to it */
    struct bg_msg *last;         /* the last one sent to it, while kept */
    int job_fd;                  /* the job's pipe (-1 at its end); in the job: its write end */
    struct bg_msg *reserve;      /* room for a last message when memory runs out */
};

/* ---- the job's process ---- */

static int frame_out(int fd, uint32_t kind, int status, const void *data, size_t len)
{
    struct bg_frame f = { kind, status, len };
    int r = pp__write_all(fd, &f, sizeof(f));
    return r == 0 && len ? pp__write_all(fd, data, len) : r;
}

int pp__bg_send(struct pp_job *job, const void *data, size_t len)
{
    return frame_out(job->bg->job_fd, BG_DATA, 0, data, len);
}

void *pp__bg_result(struct pp_job *job, size_t len)
{
    void *p = realloc(job->res, len ? len : 1);
    if (!p) {
        job->alloc_err = -ENOMEM;
        return NULL;
    }
    job->res = p;
    job->res_len = len;
    job->alloc_err = 0;
    return p;
}

/* fn with a pp_job of its own; every message and the last one go to the
 * background process through the pipe. */
static void job_main(pp_fn *fn, const void *arg, size_t len, int fd)
{
    struct pp_bg b = { .job_fd = fd, .cfd = -1 };
    char err[PP_ERRMSG_MAX] = "";
    uint32_t err_len = 0;
    struct pp_job job = { .bg = &b, .arg = arg ? arg : "", .arg_len = len, .err = err,
                          .err_len = &err_len };
    int status = fn(&job);
    if (job.fail_code)
        status = job.fail_code;
    else if (job.alloc_err && status >= 0)
        status = job.alloc_err;
    if (status < 0) {
        if (!err_len)
            err_len = (uint32_t)snprintf(err, sizeof(err), "%s", strerror(-status));
        frame_out(fd, BG_FAIL, status, err, err_len);
    } else if (job.res) {
        frame_out(fd, BG_RESULT, status, job.res, job.res_len);
    } else {
        frame_out(fd, BG_NONE, status, NULL, 0);
    }
    _exit(0);
}

/* ---- the background process ---- */

static void bg_add(struct pp_bg *b, uint32_t kind, int status, const void *data, size_t len)
{
    struct bg_msg *m = malloc(sizeof(*m) + len);
    if (!m && kind != BG_DATA && b->reserve) {
        /* Out of memory: the job's end, at least, gets through. */
        m = b->reserve;
        b->reserve = NULL;
        kind = BG_FAIL;
        status = -ENOMEM;
        len = (size_t)snprintf((char *)m->data, PP_ERRMSG_MAX, "the background process ran "
                               "out of memory");
    } else if (!m) {
        return; /* a value lost: out of memory */
    } else if (len) {
        memcpy(m->data, data, len);
    }
    m->next = NULL;
    m->f = (struct bg_frame){ kind, status, len };
    if (b->tail)
        b->tail->next = m;
    else
        b->head = m;
    b->tail = m;
    b->count++;
    if (kind != BG_DATA)
        b->ended = true;
}

/* Drops the messages a reader read (n counted from the first). */
static void bg_acked(struct pp_bg *b, uint64_t n)
{
    while (b->head && b->base < n) {
        struct bg_msg *m = b->head;
        b->head = m->next;
        if (!b->head)
            b->tail = NULL;
        if (b->last == m)
            b->last = NULL;
        free(m);
        b->base++;
    }
}

static void drop_reader(struct pp_bg *b)
{
    if (b->cfd >= 0)
        close(b->cfd);
    b->cfd = -1;
    b->last = NULL;
}

/* Sends what the window allows to the reader (blocking sends: while it
 * reads slowly, the job's pipe fills and the job waits: backpressure). */
static void send_window(struct pp_bg *b)
{
    while (b->cfd >= 0 && b->sent < b->count && b->sent - b->base < BG_WINDOW) {
        struct bg_msg *m = b->sent == b->base ? b->head : b->last->next;
        /* SIGPIPE is ignored here (bg_main): a gone reader is -EPIPE. */
        if (pp__write_all(b->cfd, &m->f, sizeof(m->f)) < 0 ||
            (m->f.len && pp__write_all(b->cfd, m->data, m->f.len) < 0)) {
            drop_reader(b); /* the next reader gets them */
            return;
        }
        b->last = m;
        b->sent++;
    }
}

/* Reads one frame of the job's (a whole one: the job writes each at once);
 * false at the pipe's end. */
static bool job_frame(struct pp_bg *b, unsigned char **buf)
{
    struct bg_frame f;
    size_t have = 0;
    ssize_t n;
    while (have < sizeof(f)) {
        n = read(b->job_fd, (char *)&f + have, sizeof(f) - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    if (f.kind < BG_DATA || f.kind > BG_NONE || f.len > PP_MAX_PAYLOAD)
        return false;
    unsigned char *p = realloc(*buf, f.len ? f.len : 1);
    if (!p)
        return false;
    *buf = p;
    for (have = 0; have < f.len;) {
        n = read(b->job_fd, p + have, f.len - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    bg_add(b, f.kind, f.status, p, f.len);
    return f.kind == BG_DATA;
}

/* The job's pipe ended: reap it; one that sent no last message failed. */
static void job_ended(struct pp_bg *b, pid_t pid)
{
    close(b->job_fd);
    b->job_fd = -1;
    int st = 0;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    if (b->ended)
        return;
    char msg[PP_ERRMSG_MAX];
    int n;
    if (r > 0 && WIFSIGNALED(st))
        n = snprintf(msg, sizeof(msg), "the background job (process %d) was killed by signal "
                     "%d (%s)", (int)pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        n = snprintf(msg, sizeof(msg), "the background job (process %d) exited with status "
                     "%d before its last message", (int)pid, r > 0 ? WEXITSTATUS(st) : -1);
    bg_add(b, BG_FAIL, -ECHILD, msg, (size_t)n);
}

/* Until every message was read by some reader. */
static void serve(struct pp_bg *b, int lfd, pid_t job)
{
    unsigned char *buf = NULL;
    while (!(b->ended && b->base == b->count && b->job_fd < 0)) {
        struct pollfd p[3] = { { b->cfd >= 0 ? -1 : lfd, POLLIN, 0 },
                               { b->cfd, POLLIN, 0 },
                               { b->job_fd, POLLIN, 0 } };
        if (poll(p, 3, -1) < 0 && errno != EINTR)
            break;
        if (p[2].revents && !job_frame(b, &buf))
            job_ended(b, job); /* its last frame came, or its end */
        if (p[0].revents) {
            b->cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            b->start = b->sent = b->base;
            b->last = NULL;
        }
        if (p[1].revents) {
            uint64_t n;
            ssize_t r = recv(b->cfd, &n, sizeof(n), MSG_WAITALL);
            if (r == (ssize_t)sizeof(n)) /* it counts what it read on this connection */
                bg_acked(b, b->start + n < b->sent ? b->start + n : b->sent);
            else
                drop_reader(b); /* gone: the next one gets the rest */
        }
        send_window(b);
    }
    free(buf);
    drop_reader(b);
}

/* The socket at path, mode 0600 (umask set by the caller); a stale one
 * (a socket nobody listens on) is replaced. */
static int bg_listen(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int e = errno;
        struct stat st;
        if (e != EADDRINUSE || lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) {
            close(fd);
            return e == EADDRINUSE ? -EEXIST : -e;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (probe >= 0)
            close(probe);
        if (live || unlink(path) < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            close(fd);
            return live ? -EADDRINUSE : -errno;
        }
    }
    if (listen(fd, 8) < 0) {
        int e = -errno;
        close(fd);
        unlink(path);
        return e;
    }
    return fd;
}

/* Closes every descriptor but stdio and keep[0..n): a detached process
 * must not hold the caller's (its pp_server's zygote socket and segment,
 * a test harness's pipes), or their other ends never see it go. */
static void close_others(const int *keep, int n)
{
    int lo = 3;
    for (;;) {
        int next = -1; /* the lowest kept fd >= lo */
        for (int i = 0; i < n; i++)
            if (keep[i] >= lo && (next < 0 || keep[i] < next))
                next = keep[i];
        if (next < 0) {
            close_range((unsigned)lo, ~0u, 0);
            return;
        }
        if (next > lo)
            close_range((unsigned)lo, (unsigned)next - 1, 0);
        lo = next + 1;
    }
}

static void stdio_null(void)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0)
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
}

static void bg_main(const char *path, pp_fn *fn, const void *arg, size_t len, int status_fd)
{
    umask(0177); /* the socket is made 0600: nobody else may connect, ever */
    signal(SIGPIPE, SIG_IGN);
    int lfd = bg_listen(path);
    int said = lfd < 0 ? lfd : 0;
    int jp[2];
    pid_t job = -1;
    if (lfd >= 0 && pipe2(jp, O_CLOEXEC) < 0)
        said = -errno;
    if (lfd >= 0 && said == 0 && (job = fork()) < 0)
        said = -errno;
    if (job == 0) { /* the job's process */
        close_others(&jp[1], 1);
        stdio_null();
        job_main(fn, arg, len, jp[1]);
    }
    (void)!write(status_fd, &said, sizeof(said));
    close(status_fd);
    if (said < 0) {
        if (lfd >= 0)
            unlink(path);
        _exit(1);
    }
    close(jp[1]);
    close_others((int[]){ lfd, jp[0] }, 2);
    stdio_null();
    struct pp_bg b = { .cfd = -1, .job_fd = jp[0],
                       .reserve = malloc(sizeof(struct bg_msg) + PP_ERRMSG_MAX) };
    serve(&b, lfd, job);
    free(b.reserve);
    close(lfd);
    unlink(path);
    _exit(0);
}

PP_EXPORT int pp_background_start(const char *path, pp_fn *fn, const void *arg, size_t len)
{
    if (!path || !*path || !fn || (!arg && len))
        return -EINVAL;
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    int st[2];
    if (pipe2(st, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(st[0]), close(st[1]);
        return r;
    }
    if (pid == 0) {
        /* Detached: a session of its own, and not our child (so neither
         * our exit nor our terminal's signals end it, and nobody here
         * has to reap it). */
        close(st[0]);
        setsid();
        pid_t bg = fork();
        if (bg != 0)
            _exit(bg < 0 ? 1 : 0);
        bg_main(path, fn, arg, len, st[1]);
    }
    close(st[1]);
    int wst;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR)
        ;
    int said = 0;
    ssize_t n;
    while ((n = read(st[0], &said, sizeof(said))) < 0 && errno == EINTR)
        ;
    close(st[0]);
    if (n != (ssize_t)sizeof(said))
        return -ECHILD; /* it died before it listened */
    return said;
}

/* ================================================================ */
/* The reader: a collector of background sockets                     */
/* ================================================================ */

struct source {
    const char *path;            /* copied */
    int fd;                      /* -1: closed */
    struct cjob *j;
    bool ended;                  /* its last message arrived */
    uint64_t nread;              /* messages read by the user (acked) */
    unsigned char *buf;          /* a frame being received */
    size_t have, cap;
};

struct bgc {
    pthread_t thread;
    bool started;
    int efd;
    bool stop;
    unsigned n;
    struct source src[];
};

static void fail_source(struct pp_collector *c, struct source *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_source(struct pp_collector *c, struct source *s, int err, const char *fmt, ...)
{
    char msg[PP_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* The fd stays until pp__bg_fini: the reader's acks (pp__bg_read)
     * may still be sent on it, from another thread. */
    s->ended = true;
    struct item it = { .len = (uint32_t)strlen(msg), .kind = IT_DATA,
                       .flags = IT_F_FINAL | IT_F_FAIL, .status = err };
    pp__coll_add(c, s->j, &it, msg);
}

/* Complete frames in s->buf become messages. */
static void source_frames(struct pp_collector *c, struct source *s)
{
    size_t at = 0;
    while (s->have - at >= sizeof(struct bg_frame) && !s->ended) {
        struct bg_frame f;
        memcpy(&f, s->buf + at, sizeof(f));
        if (f.kind < BG_DATA || f.kind > BG_NONE || f.len > PP_MAX_PAYLOAD) {
            fail_source(c, s, -EPROTO, "background socket %s: not a background job", s->path);
            return;
        }
        if (s->have - at < sizeof(f) + f.len)
            break;
        struct item it = { .len = (uint32_t)f.len, .kind = IT_DATA, .status = f.status };
        if (f.kind != BG_DATA)
            it.flags = IT_F_FINAL;
        if (f.kind == BG_FAIL)
            it.flags |= IT_F_FAIL;
        if (f.kind == BG_NONE)
            it.kind = IT_NOTHING;
        pp__coll_add(c, s->j, &it, s->buf + at + sizeof(f));
        if (f.kind != BG_DATA)
            s->ended = true;
        at += sizeof(f) + f.len;
    }
    memmove(s->buf, s->buf + at, s->have - at);
    s->have -= at;
}

static void source_read(struct pp_collector *c, struct source *s)
{
    for (;;) {
        if (s->fd < 0 || s->ended)
            return;
        if (s->cap - s->have < 65536) { /* room for a whole frame header and some */
            size_t need = s->have + 65536;
            if (s->have >= sizeof(struct bg_frame)) {
                struct bg_frame f;
                memcpy(&f, s->buf, sizeof(f));
                if (f.len <= PP_MAX_PAYLOAD && sizeof(f) + f.len > need)
                    need = sizeof(f) + f.len;
            }
            unsigned char *p = realloc(s->buf, need);
            if (!p) {
                fail_source(c, s, -ENOMEM, "background socket %s: out of memory", s->path);
                return;
            }
            s->buf = p;
            s->cap = need;
        }
        ssize_t n = recv(s->fd, s->buf + s->have, s->cap - s->have, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            fail_source(c, s, -ECONNRESET, "background job at %s ended before its last "
                        "message (it died?)", s->path);
            return;
        }
        s->have += (size_t)n;
        source_frames(c, s);
    }
}

static void *bgc_main(void *arg)
{
    struct pp_collector *c = arg;
    struct bgc *g = c->bg;
    struct pollfd *p = calloc(g->n + 1, sizeof(*p));
    pp__block_signals();
    while (p) {
        pthread_mutex_lock(&c->lock);
        bool stop = g->stop;
        pthread_mutex_unlock(&c->lock);
        if (stop)
            break;
        for (unsigned i = 0; i < g->n; i++)
            p[i] = (struct pollfd){ g->src[i].ended ? -1 : g->src[i].fd, POLLIN, 0 };
        p[g->n] = (struct pollfd){ g->efd, POLLIN, 0 };
        poll(p, g->n + 1, -1);
        uint64_t v;
        if (p[g->n].revents)
            (void)!read(g->efd, &v, sizeof(v));
        for (unsigned i = 0; i < g->n; i++)
            if (p[i].revents)
                source_read(c, &g->src[i]);
    }
    free(p);
    return NULL;
}

/* Called under the collector's lock when the user read one of its messages. */
void pp__bg_read(struct pp_collector *c, const struct item *it)
{
    struct bgc *g = c->bg;
    if (it->job >= g->n)
        return;
    struct source *s = &g->src[it->job];
    s->nread++;
    if (s->fd >= 0)
        (void)send(s->fd, &s->nread, sizeof(s->nread), MSG_DONTWAIT | MSG_NOSIGNAL);
}

void pp__bg_fini(struct pp_collector *c)
{
    struct bgc *g = c->bg;
    pthread_mutex_lock(&c->lock);
    g->stop = true;
    pthread_mutex_unlock(&c->lock);
    uint64_t one = 1;
    (void)!write(g->efd, &one, sizeof(one));
    if (g->started)
        pthread_join(g->thread, NULL);
    close(g->efd);
    for (unsigned i = 0; i < g->n; i++) {
        struct source *s = &g->src[i];
        if (s->fd >= 0) {
            /* An orderly goodbye: our acks first, then EOF; what it sent
             * meanwhile (unread, so kept there) is drained, not left
             * unread: a close with unread data would reset the
             * connection and could lose acks still in flight. */
            shutdown(s->fd, SHUT_WR);
            char sink[4096];
            struct pollfd p = { s->fd, POLLIN, 0 };
            while (poll(&p, 1, BG_DRAIN_MS) > 0 && recv(s->fd, sink, sizeof(sink), 0) > 0)
                ;
            close(s->fd);
        }
        free(s->buf); /* its job, ended or not, goes with the collector */
        free((void *)s->path);
    }
    /* What was queued and not read is dropped with the collector; the
     * background jobs still hold it (not acknowledged). */
    free(g);
    c->bg = NULL;
}

PP_EXPORT int pp_background_open(const char *const *paths, pp_collector **ret)
{
    if (!paths || !paths[0] || !ret)
        return -EINVAL;
    unsigned n = 0;
    while (paths[n])
        n++;
    pp_collector *c;
    int r = pp__coll_alloc(NULL, PP_ARRIVAL, 0, &c);
    if (r < 0)
        return r;
    struct bgc *g = calloc(1, sizeof(*g) + n * sizeof(struct source));
    if (!g || (g->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        free(g);
        pp_collector_destroy(c);
        return -ENOMEM;
    }
    g->n = n;
    c->bg = g;
    for (unsigned i = 0; i < n; i++) {
        struct source *s = &g->src[i];
        s->fd = -1;
        s->path = strdup(paths[i]);
        s->j = pp__coll_reserve(c);
        if (!s->path || !s->j) {
            free((void *)s->path);
            s->path = NULL;
            g->n = i;
            if (s->j)
                pp__coll_unreserve(c, s->j);
            pp_collector_destroy(c);
            return -ENOMEM;
        }
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        if (strlen(paths[i]) >= sizeof(a.sun_path)) {
            fail_source(c, s, -ENAMETOOLONG, "background socket %.100s...: the path is too long",
                        paths[i]);
            continue;
        }
        memcpy(a.sun_path, paths[i], strlen(paths[i]) + 1);
        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            int e = errno;
            fail_source(c, s, -e, "background socket %s: %s", s->path,
                        e == ECONNREFUSED ? "no background job listens there (it ended or "
                                            "died)"
                        : e == ENOENT ? "no such socket (no background job was started "
                                        "there, or its messages were all read)"
                                      : strerror(e));
        }
    }
    r = pthread_create(&g->thread, NULL, bgc_main, c);
    g->started = r == 0;
    for (unsigned i = 0; r && i < n; i++)
        if (!g->src[i].ended)
            fail_source(c, &g->src[i], -r, "background socket %s: no reader thread: %s",
                        g->src[i].path, strerror(r));
    *ret = c;
    return 0;
}
