/*
 * loop.c - the event loop behind loop.h: a common core and two backends
 * (loop_uring.c, loop_epoll.c; loop_int.h is what they share).
 *
 * The core owns everything both backends share: the connection state
 * machine, the two-buffer out-queue, deferred on_close delivery, deferred
 * frees, the tick and the deadlines (graceful-close linger, epoll connect
 * timeouts, paused listeners).  A backend (struct backend) only moves
 * bytes and reports what happened through the core's conn_* functions.
 *
 * Lifetime.  A connection is never freed while anything can still name it:
 * not while the kernel holds an SQE for it (c->nops), not before its
 * on_close has run, and not while it sits on the dirty list.  Dead
 * connections wait on loop->dead and are freed by loop_reap() at the end
 * of a turn, so a callback may close any connection, its own included.
 *
 * Turn.  pp_loop_run: deliver queued on_close, flush dirty connections
 * (io_uring: prepare their sends; epoll: write them), wait and dispatch,
 * fire the tick and the deadlines, deliver on_close again, reap.
 */
#define _GNU_SOURCE /* EAI_NODATA */
#include "loop_int.h"
#include "msg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define OUT_MIN 4096            /* first out-buffer allocation */
#define OUT_KEEP (1u << 20)     /* a drained out-buffer larger than this is freed */
#define ACCEPT_PAUSE_MS 100     /* listener backoff when out of fds */

/****  Small helpers  ****/

static void list_init(struct list *h)
{
    h->prev = h->next = h;
}

static bool list_empty(const struct list *h)
{
    return h->next == h;
}

static void list_del(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Append n at the tail of h (n must not be on a list). */
static void list_add(struct list *h, struct list *n)
{
    n->next = h;
    n->prev = h->prev;
    h->prev->next = n;
    h->prev = n;
}

static void list_move(struct list *h, struct list *n)
{
    list_del(n);
    list_add(h, n);
}

#define container_of(p, T, m) ((T *)(void *)((char *)(p) - offsetof(T, m)))

/****  Out-queue  ****/

/* The send buffer is fully sent: reuse it, unless a big transfer left it huge. */
void pp__loop_outbuf_reset(struct outbuf *b)
{
    b->off = b->len = 0;
    if (b->cap > OUT_KEEP) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

/*
 * If the send buffer is empty, the fill buffer becomes the send buffer (a
 * swap, no copy) and the old send buffer, with its capacity, becomes the
 * fill buffer.  Called only when no send is in flight: the kernel never
 * reads a buffer that writes are landing in or that realloc may move.
 */
void pp__loop_out_swap(struct pp_conn *c)
{
    if (c->send.off < c->send.len || c->fill.len == 0)
        return;
    struct outbuf t = c->send;
    c->send = c->fill;
    c->fill = t;
    c->fill.off = c->fill.len = 0;
}

/* Queue c for the next flush.  LIFO is fine: order only matters within a
 * connection, and each connection has one queue. */
static void conn_mark_dirty(struct pp_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = true;
    c->dirty_next = c->loop->dirty;
    c->loop->dirty = c;
}

/* Make room for len more bytes in the fill buffer.  Returns 0 or -errno. */
static int out_reserve(struct pp_conn *c, size_t len, uint8_t **ret)
{
    if (c->state != CS_OPEN && c->state != CS_CONNECTING)
        return -EPIPE;
    size_t q = conn_queued(c);
    if (len > PP_LOOP_OUT_MAX || q > PP_LOOP_OUT_MAX - len)
        return -ENOBUFS;
    struct outbuf *b = &c->fill;
    if (b->cap - b->len < len || !b->data) {  /* never NULL, even for len 0 */
        size_t cap = b->cap ? b->cap : OUT_MIN;
        while (cap - b->len < len)
            cap *= 2;   /* len + b->len <= 2 * OUT_MAX: cannot overflow */
        uint8_t *p = realloc(b->data, cap);
        if (!p)
            return -ENOMEM;
        b->data = p;
        b->cap = cap;
    }
    *ret = b->data + b->len;
    return 0;
}

/****  Connection state machine (shared by both backends)  ****/

void pp__loop_set_deadline(struct pp_loop *l, uint64_t *field, uint64_t t)
{
    *field = t;
    if (t && t < l->next_deadline)
        l->next_deadline = t;
}

/* Queue on_close(err) once; the first reason wins. */
static void conn_notify(struct pp_conn *c, int err)
{
    struct pp_loop *l = c->loop;
    if (c->notify_queued)
        return;
    c->notify_queued = true;
    c->close_err = err;
    c->notify_next = NULL;
    if (l->notify_tail)
        l->notify_tail->notify_next = c;
    else
        l->notify_head = c;
    l->notify_tail = c;
}

/* Immediate close: on_close(err) is queued, I/O stops, the memory waits for reap. */
void pp__loop_conn_kill(struct pp_conn *c, int err)
{
    struct pp_loop *l = c->loop;
    if (c->state == CS_DEAD)
        return;
    conn_notify(c, err);
    c->state = CS_DEAD;
    c->deadline = 0;
    list_move(&l->dead, &c->node);
    l->be->conn_stop(c);
}

/*
 * A graceful close has nothing left to send: shut the write side (the FIN
 * follows every queued byte), report on_close(0), and linger until the
 * peer's EOF.  Closing while unread input sits in our receive queue would
 * send an RST that can destroy data the peer has not read yet.
 */
static void conn_linger(struct pp_conn *c)
{
    struct pp_loop *l = c->loop;
    if (c->state != CS_DRAINING || c->sending || conn_queued(c))
        return;
    if (c->peer_eof) {
        pp__loop_conn_kill(c, 0);
        return;
    }
    if (shutdown(c->fd, SHUT_WR) < 0) {
        pp__loop_conn_kill(c, -errno);
        return;
    }
    conn_notify(c, 0);
    c->state = CS_LINGER;
    pp__loop_set_deadline(l, &c->deadline, clock_ms() + PP_LOOP_LINGER_MS);
}

static void conn_drain_start(struct pp_conn *c)
{
    c->state = CS_DRAINING;
    if (conn_queued(c) && !c->sending)
        conn_mark_dirty(c);
    conn_linger(c);
}

/* Bytes received; dropped unless the connection is open. */
void pp__loop_conn_deliver(struct pp_conn *c, const uint8_t *p, size_t n)
{
    if (c->state != CS_OPEN)
        return;
    c->loop->events++;
    int r = c->ops.on_data(c->ctx, p, n);
    if (r < 0)
        pp__loop_conn_kill(c, r);
}

/* The peer's orderly EOF: flush what is queued for it, then close with 0. */
void pp__loop_conn_eof(struct pp_conn *c)
{
    c->peer_eof = true;
    switch (c->state) {
    case CS_OPEN:
        if (conn_queued(c) || c->sending)
            conn_drain_start(c);
        else
            pp__loop_conn_kill(c, 0);
        break;
    case CS_DRAINING:
        conn_linger(c);
        break;
    case CS_LINGER:
        pp__loop_conn_kill(c, 0);
        break;
    default:
        break;
    }
}

/* The out-queue just became empty. */
void pp__loop_conn_sent(struct pp_conn *c)
{
    c->loop->drained = true;
    if (c->state == CS_OPEN) {
        if (c->ops.on_drain) {
            c->loop->events++;
            c->ops.on_drain(c->ctx);
        }
    } else if (c->state == CS_DRAINING) {
        conn_linger(c);
    }
}

/* A connect finished (err 0) or failed; on failure on_close(err) follows. */
void pp__loop_connect_done(struct pp_conn *c, int err)
{
    struct pp_loop *l = c->loop;
    c->deadline = 0;
    if (err == 0) {
        c->state = CS_OPEN;
        err = l->be->conn_start(c);
        if (err == 0 && conn_queued(c))
            conn_mark_dirty(c);  /* written while connecting */
    }
    if (err)
        pp__loop_conn_kill(c, err);
    l->events++;
    if (c->ops.on_connect)
        c->ops.on_connect(c->ctx, err);
}

static struct pp_conn *conn_new(struct pp_loop *l, int fd,
                                const struct pp_conn_ops *ops, void *ctx)
{
    struct pp_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = K_CONN;
    c->loop = l;
    c->fd = fd;
    c->ops = *ops;
    c->ctx = ctx;
    list_init(&c->node);
    list_add(&l->conns, &c->node);
    return c;
}

static void conn_free(struct pp_conn *c)
{
    list_del(&c->node);
    if (c->fd >= 0)
        close(c->fd);
    free(c->send.data);
    free(c->fill.data);
    free(c);
}

/****  Listeners (shared)  ****/

static void listener_free(struct pp_listener *ls)
{
    list_del(&ls->node);
    if (ls->fd >= 0)
        close(ls->fd);
    free(ls);
}

/* A new connection; peer NULL means ask the socket. */
void pp__loop_listener_accepted(struct pp_listener *ls, int fd,
                              const struct sockaddr_storage *peer)
{
    struct sockaddr_storage ss;
    if (ls->closed) {
        close(fd);
        return;
    }
    if (!peer) {
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
            ss.ss_family = AF_UNSPEC;
        peer = &ss;
    }
    ls->loop->events++;
    ls->on_accept(ls->ctx, fd, peer);
}

/*
 * An accept failed.  Returns true when the listener should retry at once
 * (the failed connection is gone, others may wait); otherwise it pauses
 * for ACCEPT_PAUSE_MS, since retrying on EMFILE and friends would spin.
 */
bool pp__loop_listener_error(struct pp_listener *ls, int err)
{
    struct pp_loop *l = ls->loop;
    if (ls->closed || err == -ECANCELED)
        return false;
    if (err == -ECONNABORTED || err == -EINTR || err == -EAGAIN ||
        err == -EPROTO || err == -EPERM)
        return true;
    pp__loop_set_deadline(l, &ls->deadline, clock_ms() + ACCEPT_PAUSE_MS);
    l->be->listen_pause(ls);
    return false;
}

/****  Watches (shared)  ****/

static void watch_free(struct pp_watch *w)
{
    list_del(&w->node);
    free(w);  /* the fd is the caller's */
}

void pp__loop_watch_ready(struct pp_watch *w)
{
    if (w->closed)
        return;
    w->loop->events++;
    w->on_readable(w->ctx);
}

/****  Turn machinery  ****/

/* Deliver queued on_close callbacks, including any queued by them. */
static void loop_notify(struct pp_loop *l)
{
    struct pp_conn *c;
    while ((c = l->notify_head)) {
        l->notify_head = c->notify_next;
        if (!l->notify_head)
            l->notify_tail = NULL;
        c->notified = true;
        l->events++;
        if (c->ops.on_close)
            c->ops.on_close(c->ctx, c->close_err);
    }
}

/* Hand every dirty connection's bytes to the backend. */
static void loop_flush(struct pp_loop *l)
{
    struct pp_conn *c = l->dirty;
    l->dirty = NULL;  /* epoll's on_drain may make some dirty again */
    while (c) {
        struct pp_conn *next = c->dirty_next;
        c->dirty = false;
        if ((c->state == CS_OPEN || c->state == CS_DRAINING) && !c->sending &&
            conn_queued(c))
            l->be->conn_flush(c);
        c = next;
    }
}

static void loop_tick(struct pp_loop *l)
{
    if (!l->tick_ms || l->now < l->tick_next)
        return;
    l->tick_next += l->tick_ms;
    if (l->tick_next <= l->now)
        l->tick_next = l->now + l->tick_ms;  /* late: skip, do not burst */
    l->events++;
    l->on_tick(l->tick_ctx);
}

/*
 * Fire expired deadlines.  next_deadline is only a lower bound (cleared
 * deadlines are not removed), so when it passes, scan and recompute.
 * Expired connections are collected first and handled after the walk,
 * because handling one may move others between lists.
 */
static void loop_deadlines(struct pp_loop *l)
{
    if (l->now < l->next_deadline)
        return;
    uint64_t next = UINT64_MAX;
    struct pp_conn *expired = NULL;
    l->next_deadline = UINT64_MAX;
    for (struct list *n = l->conns.next; n != &l->conns; n = n->next) {
        struct pp_conn *c = container_of(n, struct pp_conn, node);
        if (!c->deadline)
            continue;
        if (c->deadline <= l->now) {
            c->expire_next = expired;
            expired = c;
        } else if (c->deadline < next) {
            next = c->deadline;
        }
    }
    for (struct list *n = l->listeners.next; n != &l->listeners; n = n->next) {
        struct pp_listener *ls = container_of(n, struct pp_listener, node);
        if (ls->deadline && ls->deadline <= l->now) {
            ls->deadline = 0;
            if (l->be->listen_start(ls) < 0)
                pp__loop_set_deadline(l, &ls->deadline, l->now + ACCEPT_PAUSE_MS);
        } else if (ls->deadline && ls->deadline < next) {
            next = ls->deadline;
        }
    }
    if (next < l->next_deadline)
        l->next_deadline = next;
    while (expired) {
        struct pp_conn *c = expired;
        expired = c->expire_next;
        c->deadline = 0;
        if (c->state == CS_CONNECTING)
            pp__loop_connect_done(c, -ETIMEDOUT);
        else if (c->state == CS_LINGER)
            pp__loop_conn_kill(c, 0);
    }
}

/* Free what nothing names any more. */
static void loop_reap(struct pp_loop *l)
{
    struct list *n = l->dead.next;
    while (n != &l->dead) {
        struct pp_conn *c = container_of(n, struct pp_conn, node);
        n = n->next;
        if (c->nops == 0 && c->notified && !c->dirty)
            conn_free(c);
    }
    n = l->dead_listeners.next;
    while (n != &l->dead_listeners) {
        struct pp_listener *ls = container_of(n, struct pp_listener, node);
        n = n->next;
        if (ls->nops == 0)
            listener_free(ls);
    }
    n = l->dead_watches.next;
    while (n != &l->dead_watches) {
        struct pp_watch *w = container_of(n, struct pp_watch, node);
        n = n->next;
        if (w->nops == 0)
            watch_free(w);
    }
}

/* How long the backend may block: the caller's limit, cut by timers. */
static int loop_wait_ms(const struct pp_loop *l, int timeout_ms)
{
    uint64_t next = l->next_deadline;
    if (l->tick_ms && l->tick_next < next)
        next = l->tick_next;
    if (next == UINT64_MAX)
        return timeout_ms;
    uint64_t d = next > l->now ? next - l->now : 0;
    if (timeout_ms >= 0 && (uint64_t)timeout_ms < d)
        return timeout_ms;
    return d > INT_MAX ? INT_MAX : (int)d;
}

/* The eventfd fired (its counter already read). */
void pp__loop_woken(struct pp_loop *l)
{
    /* W1: clear before calling, so a wake during on_wake is not lost;
     * acq_rel pairs with W0 in pp_loop_wake, so on_wake sees what the
     * waker published before waking. */
    atomic_exchange_explicit(&l->wake_pending, 0, memory_order_acq_rel);
    l->events++;
    if (l->on_wake)
        l->on_wake(l->wake_ctx);
}
/****  Public: the loop  ****/

/* The eventfd is shared by both backends: pp_loop_wake need not know which. */
int pp_loop_new(struct pp_loop **ret)
{
    if (!ret)
        return -EINVAL;
    struct pp_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->wake_kind = K_WAKE;
    l->now = clock_ms();
    l->next_deadline = UINT64_MAX;
    list_init(&l->conns);
    list_init(&l->dead);
    list_init(&l->listeners);
    list_init(&l->dead_listeners);
    list_init(&l->watches);
    list_init(&l->dead_watches);
    atomic_init(&l->wake_pending, 0);
    l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->wake_fd < 0) {
        int r = -errno;
        free(l);
        return r;
    }
    const char *env = getenv("PP_NET_EPOLL");
    bool force_epoll = env && *env && strcmp(env, "0") != 0;
    int r = -ENOSYS;
    if (!force_epoll) {
        l->be = &pp__loop_uring_backend;
        r = l->be->init(l);
    }
    if (r < 0) {
        /* Any io_uring failure (EPERM from seccomp or io_uring_disabled,
         * ENOSYS, an old kernel) leaves the loop usable on epoll. */
        memset(&l->u, 0, sizeof(l->u));
        l->be = &pp__loop_epoll_backend;
        r = l->be->init(l);
    }
    if (r < 0) {
        close(l->wake_fd);
        free(l);
        return r;
    }
    *ret = l;
    return 0;
}

const char *pp_loop_backend(const struct pp_loop *l)
{
    return l ? l->be->name : NULL;
}

/* Order matters: on_close runs while every object is still allocated, the
 * backend then lets go of the kernel's references, and only then is
 * anything freed. */
void pp_loop_free(struct pp_loop *l)
{
    if (!l)
        return;
    l->freeing = true;
    l->events = 0;
    while (!list_empty(&l->conns))
        pp__loop_conn_kill(container_of(l->conns.next, struct pp_conn, node), -ECANCELED);
    while (!list_empty(&l->listeners))
        pp_listener_close(container_of(l->listeners.next, struct pp_listener, node));
    while (!list_empty(&l->watches))
        pp_watch_close(container_of(l->watches.next, struct pp_watch, node));
    loop_notify(l);  /* callbacks find every pp_loop_* refusing with -ESHUTDOWN */
    l->be->destroy(l);
    while (!list_empty(&l->dead))
        conn_free(container_of(l->dead.next, struct pp_conn, node));
    while (!list_empty(&l->dead_listeners))
        listener_free(container_of(l->dead_listeners.next, struct pp_listener, node));
    while (!list_empty(&l->dead_watches))
        watch_free(container_of(l->dead_watches.next, struct pp_watch, node));
    close(l->wake_fd);
    free(l);
}

/* conn_free and listener_free only close(): no shutdown, no callback. */
void pp_loop_abandon(struct pp_loop *l)
{
    if (!l)
        return;
    while (!list_empty(&l->conns))
        conn_free(container_of(l->conns.next, struct pp_conn, node));
    while (!list_empty(&l->dead))
        conn_free(container_of(l->dead.next, struct pp_conn, node));
    while (!list_empty(&l->listeners))
        listener_free(container_of(l->listeners.next, struct pp_listener, node));
    while (!list_empty(&l->dead_listeners))
        listener_free(container_of(l->dead_listeners.next, struct pp_listener, node));
    while (!list_empty(&l->watches))
        watch_free(container_of(l->watches.next, struct pp_watch, node));
    while (!list_empty(&l->dead_watches))
        watch_free(container_of(l->dead_watches.next, struct pp_watch, node));
    l->be->abandon(l);
    close(l->wake_fd);
    free(l);
}

/* One turn; the order is described at the top of this file. */
int pp_loop_run(struct pp_loop *l, int timeout_ms)
{
    if (!l || l->freeing)
        return -EINVAL;
    if (l->running)
        return -EBUSY;
    l->running = true;
    l->events = 0;
    l->drained = false;
    l->now = clock_ms();
    loop_notify(l);
    loop_flush(l);
    /* Something already happened: only poll.  That includes epoll's flush
     * emptying an out-queue by itself, which is the event a writer under
     * backpressure waits for (on io_uring the send's CQE ends the wait). */
    int wait = (l->events || l->drained || l->dirty || l->notify_head) ? 0
             : loop_wait_ms(l, timeout_ms);
    int r = l->be->wait(l, wait);
    l->now = clock_ms();
    loop_tick(l);
    loop_deadlines(l);
    loop_notify(l);
    loop_reap(l);
    l->running = false;
    return r < 0 ? r : l->events;
}

void pp_loop_wake(struct pp_loop *l)
{
    /* W0: release publishes the waker's writes; pairs with W1 in
     * pp__loop_woken.  Only the first waker since the loop's last W1 writes
     * the eventfd, so a storm of wakes costs one syscall. */
    if (atomic_exchange_explicit(&l->wake_pending, 1, memory_order_acq_rel) == 0) {
        int saved = errno;  /* async-signal-safe: leave errno as found */
        uint64_t one = 1;
        while (write(l->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
        errno = saved;
    }
}

void pp_loop_set_wake(struct pp_loop *l, pp_loop_fn on_wake, void *ctx)
{
    if (!l)
        return;
    l->on_wake = on_wake;
    l->wake_ctx = ctx;
}

int pp_loop_set_tick(struct pp_loop *l, unsigned ms, pp_loop_fn on_tick, void *ctx)
{
    if (!l || (ms && !on_tick))
        return -EINVAL;
    l->tick_ms = ms;
    l->on_tick = on_tick;
    l->tick_ctx = ctx;
    l->tick_next = clock_ms() + ms;
    return 0;
}

uint64_t pp_loop_now_ms(const struct pp_loop *l)
{
    return l ? l->now : 0;
}

/****  Public: listeners  ****/

int pp_loop_listen(struct pp_loop *l, const char *ip, uint16_t port, int backlog,
                   pp_loop_accept_fn on_accept, void *ctx, struct pp_listener **ret)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, zero = 0, r;
    if (!l || !on_accept || !ret)
        return -EINVAL;
    if (l->freeing)
        return -ESHUTDOWN;
    if (pp_net_addr(ip ? ip : "127.0.0.1", port, &ss, &len) < 0)
        return -EINVAL;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)  /* "::" takes IPv4 too */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        r = -errno;
        goto err;
    }
    struct pp_listener *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        r = -ENOMEM;
        goto err;
    }
    ls->kind = K_LISTENER;
    ls->loop = l;
    ls->fd = fd;
    ls->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port);
    ls->on_accept = on_accept;
    ls->ctx = ctx;
    list_init(&ls->node);
    list_add(&l->listeners, &ls->node);
    r = l->be->listen_start(ls);
    if (r < 0) {
        listener_free(ls);  /* closes fd */
        return r;
    }
    *ret = ls;
    return 0;
err:
    close(fd);
    return r;
}

uint16_t pp_listener_port(const struct pp_listener *ls)
{
    return ls ? ls->port : 0;
}

void pp_listener_close(struct pp_listener *ls)
{
    if (!ls || ls->closed)
        return;
    struct pp_loop *l = ls->loop;
    ls->closed = true;
    ls->deadline = 0;
    list_move(&l->dead_listeners, &ls->node);
    l->be->listen_stop(ls);
}

/****  Public: watches  ****/

int pp_loop_watch(struct pp_loop *l, int fd, void (*on_readable)(void *ctx), void *ctx,
                  struct pp_watch **ret)
{
    if (!l || fd < 0 || !on_readable || !ret)
        return -EINVAL;
    if (l->freeing)
        return -ESHUTDOWN;
    struct pp_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->kind = K_WATCH;
    w->loop = l;
    w->fd = fd;
    w->on_readable = on_readable;
    w->ctx = ctx;
    list_init(&w->node);
    list_add(&l->watches, &w->node);
    int r = l->be->watch_start(w);
    if (r < 0) {
        watch_free(w);
        return r;
    }
    *ret = w;
    return 0;
}

void pp_watch_close(struct pp_watch *w)
{
    if (!w || w->closed)
        return;
    struct pp_loop *l = w->loop;
    w->closed = true;
    list_move(&l->dead_watches, &w->node);
    l->be->watch_stop(w);
}

/****  Public: connections  ****/

/* O_NONBLOCK for both backends (io_uring arms poll internally, and no
 * request can then block an io-wq worker); TCP_NODELAY for small frames. */
static int sock_prepare(int fd)
{
    int one = 1;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 &&
        errno == ENOTSOCK)
        return -ENOTSOCK;  /* other failures: not TCP (a unix socket); fine */
    return 0;
}

int pp_loop_add(struct pp_loop *l, int fd, const struct pp_conn_ops *ops, void *ctx,
                struct pp_conn **ret)
{
    if (!l || fd < 0 || !ops || !ops->on_data || !ret)
        return -EINVAL;
    if (l->freeing)
        return -ESHUTDOWN;
    int r = sock_prepare(fd);
    if (r < 0)
        return r;
    struct pp_conn *c = conn_new(l, fd, ops, ctx);
    if (!c)
        return -ENOMEM;
    c->state = CS_OPEN;
    r = l->be->conn_start(c);
    if (r < 0) {
        c->fd = -1;  /* still the caller's */
        conn_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

/* getaddrinfo's EAI_* codes as the -errno the header promises. */
static int gai_errno(int e)
{
    switch (e) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
    case EAI_FAMILY:
        return -EHOSTUNREACH;
    case EAI_AGAIN:
        return -EAGAIN;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_SYSTEM:
        return errno ? -errno : -EIO;
    default:
        return -EINVAL;
    }
}

/* A numeric address, or the first getaddrinfo answer. */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss,
                   socklen_t *len)
{
    if (pp_net_addr(host, port, ss, len) == 0)
        return 0;
    struct addrinfo hints, *res;
    char serv[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(serv, sizeof(serv), "%u", (unsigned)port);
    int e = getaddrinfo(host, serv, &hints, &res);
    if (e)
        return gai_errno(e);
    if (res->ai_addrlen > sizeof(*ss)) {
        freeaddrinfo(res);
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int pp_loop_connect(struct pp_loop *l, const char *host, uint16_t port, int timeout_ms,
                    const struct pp_conn_ops *ops, void *ctx, struct pp_conn **ret)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1;
    if (!l || !host || !ops || !ops->on_data || !ret)
        return -EINVAL;
    if (l->freeing)
        return -ESHUTDOWN;
    int r = resolve(host, port, &ss, &len);
    if (r < 0)
        return r;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        return -errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct pp_conn *c = conn_new(l, fd, ops, ctx);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->state = CS_CONNECTING;
    memcpy(&c->addr, &ss, len);
    c->addrlen = len;
    r = l->be->conn_connect(c, timeout_ms);
    if (r < 0) {
        conn_free(c);  /* nothing was submitted; closes fd */
        return r;
    }
    *ret = c;
    return 0;
}

int pp_conn_write(struct pp_conn *c, const void *data, size_t len)
{
    uint8_t *p;
    if (!c || (len && !data))
        return -EINVAL;
    if (len == 0)
        return c->state == CS_OPEN || c->state == CS_CONNECTING ? 0 : -EPIPE;
    int r = out_reserve(c, len, &p);
    if (r < 0)
        return r;
    memcpy(p, data, len);
    c->fill.len += len;
    conn_mark_dirty(c);
    return 0;
}

/* Same checks as pp_conn_write; the bytes count only once committed. */
uint8_t *pp_conn_reserve(struct pp_conn *c, size_t len)
{
    uint8_t *p;
    if (!c) {
        errno = EINVAL;
        return NULL;
    }
    int r = out_reserve(c, len, &p);
    if (r < 0) {
        errno = -r;
        return NULL;
    }
    c->reserved = len;
    return p;
}

void pp_conn_commit(struct pp_conn *c, size_t len)
{
    if (!c || len > c->reserved)
        return;
    c->reserved = 0;
    if (len == 0 || (c->state != CS_OPEN && c->state != CS_CONNECTING))
        return;
    c->fill.len += len;
    conn_mark_dirty(c);
}

size_t pp_conn_queued(const struct pp_conn *c)
{
    return c ? conn_queued(c) : 0;
}

/* Never calls back: pp__loop_conn_kill and conn_linger only queue the on_close. */
void pp_conn_close(struct pp_conn *c, int err)
{
    if (!c)
        return;
    if (err > 0)
        err = -err;
    switch (c->state) {
    case CS_CONNECTING:
        pp__loop_conn_kill(c, err ? err : -ECANCELED);
        break;
    case CS_OPEN:
        if (err == 0)
            conn_drain_start(c);
        else
            pp__loop_conn_kill(c, err);
        break;
    case CS_DRAINING:
        if (err < 0)
            pp__loop_conn_kill(c, err);  /* escalate a pending graceful close */
        break;
    case CS_LINGER:
    case CS_DEAD:
        break;
    }
}

int pp_conn_fd(const struct pp_conn *c)
{
    return c && c->state != CS_DEAD ? c->fd : -1;
}
