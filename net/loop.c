/*
 * loop.c - the event loop behind loop.h: a common core and two backends.
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
#define _GNU_SOURCE /* accept4 */
#include "loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SQ_ENTRIES 256          /* submissions per io_uring_enter, at most */
#define CQ_ENTRIES 4096         /* multishot recv can post many CQEs per turn */
#define BUF_COUNT 64            /* provided receive buffers; a power of two */
#define BUF_SIZE (32u * 1024)   /* each; loopback hands out up to 64 KiB skbs */
#define BGID 0                  /* the loop's one buffer group */
#define READ_BUF_SIZE (64u * 1024) /* epoll: the loop's one read buffer */
#define READS_PER_EVENT 4       /* epoll: level-triggered, so yield to others */
#define ACCEPTS_PER_EVENT 32
#define EPOLL_BATCH 64
#define OUT_MIN 4096            /* first out-buffer allocation */
#define OUT_KEEP (1u << 20)     /* a drained out-buffer larger than this is freed */
#define ACCEPT_PAUSE_MS 100     /* listener backoff when out of fds */
#define FREE_WAIT_MS 1000       /* pp_loop_free: wait for the kernel at most */

/****  Small helpers  ****/

struct list {
    struct list *prev, *next;
};

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

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/****  Data structures  ****/

/* First byte of every object epoll's data.ptr can name. */
enum kind { K_CONN = 1, K_LISTENER, K_WAKE };

enum conn_state {
    CS_CONNECTING,  /* pp_loop_connect, before on_connect */
    CS_OPEN,
    CS_DRAINING,    /* graceful close: flushing the out-queue, input discarded */
    CS_LINGER,      /* write side shut, on_close(0) queued: awaiting the peer's EOF */
    CS_DEAD,        /* all I/O stopped; freed once nops == 0 and on_close ran */
};

/* Bytes [off, len) of data are still to send; fill buffers keep off 0. */
struct outbuf {
    uint8_t *data;
    size_t off, len, cap;
};

struct pp_conn {
    uint8_t kind;               /* K_CONN */
    enum conn_state state;
    struct pp_loop *loop;
    struct list node;           /* loop->conns, or loop->dead once CS_DEAD */
    int fd;
    struct pp_conn_ops ops;
    void *ctx;
    struct outbuf send;         /* being sent: the kernel may be reading it */
    struct outbuf fill;         /* new writes land here; swapped in when send drains */
    size_t reserved;            /* pp_conn_reserve's len, until commit */
    bool sending;               /* io_uring: a send SQE in flight; epoll: waiting for EPOLLOUT */
    bool peer_eof;
    bool dirty;                 /* on loop->dirty */
    struct pp_conn *dirty_next;
    bool notify_queued;         /* on_close queued (close_err fixed) */
    bool notified;              /* on_close has run */
    int close_err;
    struct pp_conn *notify_next;
    struct pp_conn *expire_next; /* loop_deadlines' private list */
    uint64_t deadline;          /* ms; 0 = none (linger, epoll connect) */
    struct sockaddr_storage addr; /* connect target; lives until the CQE */
    socklen_t addrlen;
    /* io_uring */
    unsigned nops;              /* SQEs whose final CQE is still to come */
    bool recv_armed;
    struct __kernel_timespec ts; /* the connect's linked timeout */
    /* epoll */
    bool ep_registered;
    uint32_t ep_events;
    int connect_err;            /* a synchronous connect() failure */
};

struct pp_listener {
    uint8_t kind;               /* K_LISTENER */
    bool closed;
    bool armed;                 /* io_uring: an accept is in flight */
    bool ep_registered;
    struct pp_loop *loop;
    struct list node;           /* loop->listeners, or loop->dead_listeners */
    int fd;
    uint16_t port;
    pp_loop_accept_fn on_accept;
    void *ctx;
    unsigned nops;
    uint64_t deadline;          /* paused until then (ms); 0 = accepting */
};

struct uring_state {
    struct io_uring ring;
    struct io_uring_buf_ring *br; /* page 0 of the mapping: the ring entries */
    uint8_t *bufs;              /* then BUF_COUNT buffers of BUF_SIZE */
    size_t map_size;
    unsigned inflight;          /* SQEs (all objects) whose final CQE is still to come */
    uint64_t wake_val;          /* the eventfd READ's target */
    bool wake_armed;
};

struct epoll_state {
    int epfd;
    uint8_t *rbuf;
};

struct backend;

struct pp_loop {
    const struct backend *be;
    uint8_t wake_kind;          /* K_WAKE: epoll data.ptr for the eventfd */
    bool running;
    bool freeing;
    bool drained;               /* an out-queue emptied this turn (see pp_loop_run) */
    int events;                 /* callbacks made this turn */
    uint64_t now;
    struct list conns, dead, listeners, dead_listeners;
    struct pp_conn *dirty;      /* writes to flush at the next turn */
    struct pp_conn *notify_head, *notify_tail; /* on_close to deliver, FIFO */
    uint64_t next_deadline;     /* lower bound of every deadline; UINT64_MAX = none */
    int wake_fd;
    atomic_int wake_pending;
    pp_loop_fn on_wake;
    void *wake_ctx;
    unsigned tick_ms;
    uint64_t tick_next;
    pp_loop_fn on_tick;
    void *tick_ctx;
    struct uring_state u;
    struct epoll_state e;
};

/*
 * What a backend does.  The core calls these; they report back through
 * conn_deliver / conn_eof / conn_kill / conn_sent / connect_done /
 * listener_accepted / loop_woken.
 */
struct backend {
    const char *name;
    int (*init)(struct pp_loop *l);
    void (*destroy)(struct pp_loop *l);     /* every conn and listener is dead */
    void (*abandon)(struct pp_loop *l);     /* after fork: no syscalls but close/munmap */
    int (*wait)(struct pp_loop *l, int timeout_ms);
    int (*conn_start)(struct pp_conn *c);   /* connected: start receiving */
    int (*conn_connect)(struct pp_conn *c, int timeout_ms);
    void (*conn_flush)(struct pp_conn *c);  /* queued bytes and not sending */
    void (*conn_stop)(struct pp_conn *c);   /* now CS_DEAD: stop all I/O */
    int (*listen_start)(struct pp_listener *ls);
    void (*listen_pause)(struct pp_listener *ls);
    void (*listen_stop)(struct pp_listener *ls);
};

static const struct backend uring_backend, epoll_backend;

/****  Out-queue  ****/

static size_t conn_queued(const struct pp_conn *c)
{
    return c->send.len - c->send.off + c->fill.len;
}

/* The send buffer is fully sent: reuse it, unless a big transfer left it huge. */
static void outbuf_reset(struct outbuf *b)
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
static void out_swap(struct pp_conn *c)
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

static void set_deadline(struct pp_loop *l, uint64_t *field, uint64_t t)
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
static void conn_kill(struct pp_conn *c, int err)
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
        conn_kill(c, 0);
        return;
    }
    if (shutdown(c->fd, SHUT_WR) < 0) {
        conn_kill(c, -errno);
        return;
    }
    conn_notify(c, 0);
    c->state = CS_LINGER;
    set_deadline(l, &c->deadline, clock_ms() + PP_LOOP_LINGER_MS);
}

static void conn_drain_start(struct pp_conn *c)
{
    c->state = CS_DRAINING;
    if (conn_queued(c) && !c->sending)
        conn_mark_dirty(c);
    conn_linger(c);
}

/* Bytes received; dropped unless the connection is open. */
static void conn_deliver(struct pp_conn *c, const uint8_t *p, size_t n)
{
    if (c->state != CS_OPEN)
        return;
    c->loop->events++;
    int r = c->ops.on_data(c->ctx, p, n);
    if (r < 0)
        conn_kill(c, r);
}

/* The peer's orderly EOF: flush what is queued for it, then close with 0. */
static void conn_eof(struct pp_conn *c)
{
    c->peer_eof = true;
    switch (c->state) {
    case CS_OPEN:
        if (conn_queued(c) || c->sending)
            conn_drain_start(c);
        else
            conn_kill(c, 0);
        break;
    case CS_DRAINING:
        conn_linger(c);
        break;
    case CS_LINGER:
        conn_kill(c, 0);
        break;
    default:
        break;
    }
}

/* The out-queue just became empty. */
static void conn_sent(struct pp_conn *c)
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
static void connect_done(struct pp_conn *c, int err)
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
        conn_kill(c, err);
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
static void listener_accepted(struct pp_listener *ls, int fd,
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
static bool listener_error(struct pp_listener *ls, int err)
{
    struct pp_loop *l = ls->loop;
    if (ls->closed || err == -ECANCELED)
        return false;
    if (err == -ECONNABORTED || err == -EINTR || err == -EAGAIN ||
        err == -EPROTO || err == -EPERM)
        return true;
    set_deadline(l, &ls->deadline, clock_ms() + ACCEPT_PAUSE_MS);
    l->be->listen_pause(ls);
    return false;
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
                set_deadline(l, &ls->deadline, l->now + ACCEPT_PAUSE_MS);
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
            connect_done(c, -ETIMEDOUT);
        else if (c->state == CS_LINGER)
            conn_kill(c, 0);
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
static void loop_woken(struct pp_loop *l)
{
    /* W1: clear before calling, so a wake during on_wake is not lost;
     * acq_rel pairs with W0 in pp_loop_wake, so on_wake sees what the
     * waker published before waking. */
    atomic_exchange_explicit(&l->wake_pending, 0, memory_order_acq_rel);
    l->events++;
    if (l->on_wake)
        l->on_wake(l->wake_ctx);
}

/****  io_uring backend  ****/

/* user_data = object pointer | tag; calloc'ed objects are 16-byte aligned. */
enum tag { T_IGNORE = 0, T_RECV, T_SEND, T_CONNECT, T_TIMEOUT, T_ACCEPT, T_WAKE };
#define TAG_MASK 7u

/* An SQE, submitting what is queued first if the SQ is full. */
static struct io_uring_sqe *ur_sqe(struct pp_loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->u.ring);
    if (!sqe) {
        io_uring_submit(&l->u.ring);
        sqe = io_uring_get_sqe(&l->u.ring);
    }
    return sqe;
}

/* Tag a prepared SQE; every tagged SQE gets a final CQE we count down. */
static void ur_tag(struct pp_loop *l, struct io_uring_sqe *sqe, void *obj,
                   enum tag t)
{
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)obj | t);
    l->u.inflight++;
}

static uint8_t *ur_buf(struct pp_loop *l, unsigned bid)
{
    return l->u.bufs + (size_t)bid * BUF_SIZE;
}

/* Give a provided buffer back to the kernel. */
static void ur_buf_put(struct pp_loop *l, unsigned bid)
{
    io_uring_buf_ring_add(l->u.br, ur_buf(l, bid), BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    /* B0: the store-release of the tail publishes the entry just written;
     * pairs with the kernel's load-acquire of the tail when it picks one. */
    io_uring_buf_ring_advance(l->u.br, 1);
}

/*
 * Map and register the provided-buffer ring by hand (liburing 2.3 has no
 * io_uring_setup_buf_ring): one anonymous mapping, the ring entries in its
 * first page, BUF_COUNT page-aligned buffers after them.
 */
static int ur_bufs_init(struct pp_loop *l)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t ring_sz = BUF_COUNT * sizeof(struct io_uring_buf);
    ring_sz = (ring_sz + page - 1) / page * page;
    l->u.map_size = ring_sz + (size_t)BUF_COUNT * BUF_SIZE;
    void *m = mmap(NULL, l->u.map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    l->u.br = m;
    l->u.bufs = (uint8_t *)m + ring_sz;
    io_uring_buf_ring_init(l->u.br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)m,
        .ring_entries = BUF_COUNT,
        .bgid = BGID,
    };
    int r = io_uring_register_buf_ring(&l->u.ring, &reg, 0);
    if (r < 0) {
        munmap(m, l->u.map_size);
        l->u.br = NULL;
        return r;
    }
    for (unsigned i = 0; i < BUF_COUNT; i++)
        io_uring_buf_ring_add(l->u.br, ur_buf(l, i), BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(l->u.br, BUF_COUNT);  /* B0 for all of them */
    return 0;
}

/*
 * Multishot recv and IORING_OP_SEND_ZC both arrived in 6.0.  The probe
 * has no bit for the former, so the latter stands in for it: without it
 * the epoll backend is the better choice.
 */
static int ur_probe(struct pp_loop *l)
{
    static const int need[] = { IORING_OP_SEND, IORING_OP_RECV, IORING_OP_ACCEPT,
                                IORING_OP_CONNECT, IORING_OP_READ,
                                IORING_OP_LINK_TIMEOUT, IORING_OP_ASYNC_CANCEL,
                                IORING_OP_SEND_ZC };
    struct io_uring_probe *p = io_uring_get_probe_ring(&l->u.ring);
    if (!p)
        return -ENOSYS;
    int r = 0;
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
        if (!io_uring_opcode_supported(p, need[i]))
            r = -ENOSYS;
    io_uring_free_probe(p);
    return r;
}

/* One READ on the eventfd at a time; its CQE is the wakeup. */
static void ur_arm_wake(struct pp_loop *l)
{
    struct io_uring_sqe *sqe;
    if (l->u.wake_armed || l->freeing || !(sqe = ur_sqe(l)))
        return;
    io_uring_prep_read(sqe, l->wake_fd, &l->u.wake_val, sizeof(l->u.wake_val), 0);
    ur_tag(l, sqe, l, T_WAKE);
    l->u.wake_armed = true;
}

static int ur_init(struct pp_loop *l)
{
    /* Best first; each step drops what an older kernel rejects with EINVAL.
     * SINGLE_ISSUER + DEFER_TASKRUN: completions are processed only when
     * this thread enters the kernel to wait, i.e. in batches, in our turn. */
    static const unsigned ladder[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    struct io_uring_params p;
    int r = -EINVAL;
    for (size_t i = 0; i < sizeof(ladder) / sizeof(ladder[0]) && r == -EINVAL; i++) {
        memset(&p, 0, sizeof(p));
        p.flags = ladder[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = CQ_ENTRIES;
        r = io_uring_queue_init_params(SQ_ENTRIES, &l->u.ring, &p);
    }
    if (r < 0)
        return r;
    r = ur_probe(l);
    if (r == 0)
        r = ur_bufs_init(l);
    if (r < 0) {
        io_uring_queue_exit(&l->u.ring);
        return r;
    }
    ur_arm_wake(l);
    return 0;
}

static void ur_arm_recv(struct pp_conn *c)
{
    struct pp_loop *l = c->loop;
    struct io_uring_sqe *sqe;
    if (c->recv_armed || c->peer_eof || c->state == CS_DEAD ||
        c->state == CS_CONNECTING)
        return;
    if (!(sqe = ur_sqe(l))) {
        conn_kill(c, -EBUSY);
        return;
    }
    /* len 0 + BUFFER_SELECT: the kernel picks a buffer from BGID per CQE. */
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    ur_tag(l, sqe, c, T_RECV);
    c->recv_armed = true;
    c->nops++;
}

/* Adopted or just connected: receiving starts with the first multishot. */
static int ur_conn_start(struct pp_conn *c)
{
    ur_arm_recv(c);
    return c->state == CS_DEAD ? -EBUSY : 0;
}

/*
 * Start the one send for this connection: the rest of the send buffer, or
 * (when it is empty) everything written since, swapped in whole.
 * MSG_WAITALL lets the kernel retry a partial send itself; ur_on_send
 * still handles a short one.
 */
static void ur_flush(struct pp_conn *c)
{
    struct pp_loop *l = c->loop;
    struct io_uring_sqe *sqe;
    if (c->sending)
        return;
    out_swap(c);
    size_t n = c->send.len - c->send.off;
    if (n == 0)
        return;
    if (!(sqe = ur_sqe(l))) {
        conn_kill(c, -EBUSY);
        return;
    }
    io_uring_prep_send(sqe, c->fd, c->send.data + c->send.off, n,
                       MSG_NOSIGNAL | MSG_WAITALL);
    ur_tag(l, sqe, c, T_SEND);
    c->sending = true;
    c->nops++;
}

/* Connect with a linked timeout: one chain, so both must go in one submit. */
static int ur_connect(struct pp_conn *c, int timeout_ms)
{
    struct pp_loop *l = c->loop;
    struct io_uring *ring = &l->u.ring;
    if (io_uring_sq_space_left(ring) < 2)
        io_uring_submit(ring);
    if (io_uring_sq_space_left(ring) < 2)
        return -EBUSY;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_connect(sqe, c->fd, (const struct sockaddr *)&c->addr, c->addrlen);
    ur_tag(l, sqe, c, T_CONNECT);
    c->nops++;
    if (timeout_ms > 0) {
        sqe->flags |= IOSQE_IO_LINK;
        c->ts.tv_sec = timeout_ms / 1000;
        c->ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
        struct io_uring_sqe *t = io_uring_get_sqe(ring);
        io_uring_prep_link_timeout(t, &c->ts, 0);
        ur_tag(l, t, c, T_TIMEOUT);
        c->nops++;
    }
    return 0;
}

/*
 * Dead: cancel whatever the kernel still holds for this socket.  The fd
 * stays open until the last CQE (cancel-by-fd needs it, and a recycled fd
 * number must not be confused with this one); loop_reap closes it.
 */
static void ur_conn_stop(struct pp_conn *c)
{
    struct io_uring_sqe *sqe;
    if (c->nops == 0 || !(sqe = ur_sqe(c->loop)))
        return;
    io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, T_IGNORE);
}

static void ur_on_recv(struct pp_conn *c, const struct io_uring_cqe *cqe)
{
    struct pp_loop *l = c->loop;
    int res = cqe->res;
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        c->recv_armed = false;  /* multishot ended: re-arm below if it should go on */
        c->nops--;
    }
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0)
            conn_deliver(c, ur_buf(l, bid), (size_t)res);
        ur_buf_put(l, bid);  /* at once, so a burst rarely hits -ENOBUFS */
    }
    if (res > 0 || res == -ENOBUFS)
        ur_arm_recv(c);  /* no-op while the multishot is still armed */
    else if (res == 0)
        conn_eof(c);
    else
        conn_kill(c, res);
}

/*
 * The one send finished.  res is what the kernel took (MSG_WAITALL makes a
 * short count rare: a signal, or an error after some bytes).  Whatever is
 * left, or was written meanwhile, goes out in the next single send.
 */
static void ur_on_send(struct pp_conn *c, int res)
{
    c->sending = false;
    c->nops--;
    if (c->state == CS_DEAD)
        return;
    if (res <= 0) {
        conn_kill(c, res < 0 ? res : -EIO);
        return;
    }
    c->send.off += (size_t)res;
    if (c->send.off == c->send.len)
        outbuf_reset(&c->send);
    if (conn_queued(c))
        ur_flush(c);  /* a short send's rest, or what was written meanwhile */
    else
        conn_sent(c);
}

static void ur_on_connect(struct pp_conn *c, int res)
{
    c->nops--;
    if (c->state != CS_CONNECTING)
        return;
    /* -ECANCELED here means the linked timeout fired (a close would have
     * left CS_CONNECTING already). */
    connect_done(c, res == -ECANCELED ? -ETIMEDOUT : res);
}

static int ur_listen_start(struct pp_listener *ls)
{
    struct pp_loop *l = ls->loop;
    struct io_uring_sqe *sqe;
    if (ls->armed)
        return 0;
    if (!(sqe = ur_sqe(l)))
        return -EBUSY;
    /* No address buffer: with multishot every accept would overwrite it
     * before we read the CQE; listener_accepted asks getpeername. */
    io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
    ur_tag(l, sqe, ls, T_ACCEPT);
    ls->armed = true;
    ls->nops++;
    return 0;
}

static void ur_listen_pause(struct pp_listener *ls)
{
    (void)ls;  /* the failed multishot has ended; we just do not re-arm */
}

static void ur_listen_stop(struct pp_listener *ls)
{
    struct io_uring_sqe *sqe;
    if (!ls->armed || !(sqe = ur_sqe(ls->loop)))
        return;
    io_uring_prep_cancel_fd(sqe, ls->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, T_IGNORE);
}

/* Each CQE is one accepted fd (or an error, which ends the multishot). */
static void ur_on_accept(struct pp_listener *ls, const struct io_uring_cqe *cqe)
{
    bool retry = true;
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        ls->armed = false;
        ls->nops--;
    }
    if (cqe->res >= 0)
        listener_accepted(ls, cqe->res, NULL);
    else
        retry = listener_error(ls, cqe->res);
    if (retry && !ls->armed && !ls->closed && !ls->deadline)
        ur_listen_start(ls);
}

/* The eventfd READ completed (it also reset the counter): re-arm first, so
 * a wake during on_wake completes the new READ. */
static void ur_on_wake(struct pp_loop *l, int res)
{
    l->u.wake_armed = false;
    if (l->freeing)
        return;
    ur_arm_wake(l);
    if (res > 0)
        loop_woken(l);
}

/* Route one CQE by its tag.  Objects named by a CQE are still allocated:
 * loop_reap frees nothing with nops > 0. */
static void ur_cqe(struct pp_loop *l, const struct io_uring_cqe *cqe)
{
    uint64_t d = io_uring_cqe_get_data64(cqe);
    void *p = (void *)(uintptr_t)(d & ~(uint64_t)TAG_MASK);
    enum tag t = (enum tag)(d & TAG_MASK);
    if (t != T_IGNORE && !(cqe->flags & IORING_CQE_F_MORE))
        l->u.inflight--;
    switch (t) {
    case T_IGNORE:
        break;
    case T_RECV:
        ur_on_recv(p, cqe);
        break;
    case T_SEND:
        ur_on_send(p, cqe->res);
        break;
    case T_CONNECT:
        ur_on_connect(p, cqe->res);
        break;
    case T_TIMEOUT:
        ((struct pp_conn *)p)->nops--;  /* -ETIME: fired; -ECANCELED: connect won */
        break;
    case T_ACCEPT:
        ur_on_accept(p, cqe);
        break;
    case T_WAKE:
        ur_on_wake(l, cqe->res);
        break;
    }
}

/* Dispatch every CQE there is.  Handlers may add SQEs (and even submit
 * when the SQ fills); the tail is re-read each step, so CQEs posted
 * meanwhile are handled in this batch too. */
static void ur_reap(struct pp_loop *l)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&l->u.ring, head, cqe) {
        ur_cqe(l, cqe);
        n++;
    }
    io_uring_cq_advance(&l->u.ring, n);
}

/*
 * The only blocking call: submit everything prepared this turn and wait
 * for one CQE (or the timeout) in a single io_uring_enter.  With
 * DEFER_TASKRUN, completions are processed right here, in this thread.
 */
static int ur_wait(struct pp_loop *l, int timeout_ms)
{
    struct io_uring *ring = &l->u.ring;
    struct io_uring_cqe *cqe;
    int r;
    ur_arm_wake(l);  /* in case an SQE shortage left it unarmed */
    if (timeout_ms == 0) {
        /* Submit and run deferred task work, without waiting. */
        r = io_uring_submit_and_get_events(ring);
    } else {
        struct __kernel_timespec ts, *tsp = NULL;
        if (timeout_ms > 0) {
            ts.tv_sec = timeout_ms / 1000;
            ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
            tsp = &ts;
        }
        r = io_uring_submit_and_wait_timeout(ring, &cqe, 1, tsp, NULL);
    }
    ur_reap(l);
    /* Timeout, signal, or a CQ overflow backlog the reap just eased. */
    if (r == -ETIME || r == -EINTR || r == -EAGAIN || r == -EBUSY)
        r = 0;
    return r < 0 ? r : 0;
}

/*
 * pp_loop_free: every object is dead.  Cancel everything still in flight
 * and wait (bounded) for the final CQEs, so that the kernel has let go of
 * our send buffers and provided buffers before they are freed.
 */
static void ur_destroy(struct pp_loop *l)
{
    struct io_uring *ring = &l->u.ring;
    struct io_uring_sqe *sqe = ur_sqe(l);
    if (sqe) {
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(sqe, T_IGNORE);
    }
    uint64_t end = clock_ms() + FREE_WAIT_MS;
    while (l->u.inflight > 0 && clock_ms() < end) {
        struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000000 };
        struct io_uring_cqe *cqe;
        int r = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
        ur_reap(l);
        if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
            break;
    }
    io_uring_queue_exit(ring);
    munmap(l->u.br, l->u.map_size);
}

/* After fork: unmap our copies and close our ring fd.  io_uring_queue_exit
 * submits nothing (munmap + close); the ring lives on in the parent. */
static void ur_abandon(struct pp_loop *l)
{
    io_uring_queue_exit(&l->u.ring);
    munmap(l->u.br, l->u.map_size);
}

static const struct backend uring_backend = {
    .name = "io_uring",
    .init = ur_init,
    .destroy = ur_destroy,
    .abandon = ur_abandon,
    .wait = ur_wait,
    .conn_start = ur_conn_start,
    .conn_connect = ur_connect,
    .conn_flush = ur_flush,
    .conn_stop = ur_conn_stop,
    .listen_start = ur_listen_start,
    .listen_pause = ur_listen_pause,
    .listen_stop = ur_listen_stop,
};

/****  epoll backend  ****/

/* The socket's pending error as -errno (0 if none); reading clears it. */
static int sock_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return -errno;
    return -err;
}

/* Level-triggered interest: input until EOF, output only while blocked. */
static int ep_update(struct pp_conn *c)
{
    uint32_t want = 0;
    if (c->state == CS_DEAD)
        return 0;
    if (c->state == CS_CONNECTING)
        want = EPOLLOUT;
    else {
        if (!c->peer_eof)
            want |= EPOLLIN;
        if (c->sending)
            want |= EPOLLOUT;
    }
    if (c->ep_registered && want == c->ep_events)
        return 0;
    struct epoll_event ev = { .events = want, .data.ptr = c };
    int op = c->ep_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(c->loop->e.epfd, op, c->fd, &ev) < 0)
        return -errno;
    c->ep_registered = true;
    c->ep_events = want;
    return 0;
}

static int ep_init(struct pp_loop *l)
{
    l->e.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->e.epfd < 0)
        return -errno;
    l->e.rbuf = malloc(READ_BUF_SIZE);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &l->wake_kind };
    int r = !l->e.rbuf ? -ENOMEM
          : epoll_ctl(l->e.epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) < 0 ? -errno : 0;
    if (r < 0) {
        free(l->e.rbuf);
        close(l->e.epfd);
    }
    return r;
}

/* Write until done or EAGAIN (then wait for EPOLLOUT). */
static void ep_flush(struct pp_conn *c)
{
    for (;;) {
        out_swap(c);
        size_t n = c->send.len - c->send.off;
        if (n == 0)
            break;
        ssize_t w = send(c->fd, c->send.data + c->send.off, n,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->send.off += (size_t)w;
            if (c->send.off == c->send.len)
                outbuf_reset(&c->send);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            c->sending = true;
            int r = ep_update(c);
            if (r < 0)
                conn_kill(c, r);
            return;
        }
        conn_kill(c, w < 0 ? -errno : -EIO);
        return;
    }
    c->sending = false;
    int r = ep_update(c);
    if (r < 0)
        conn_kill(c, r);
    else
        conn_sent(c);
}

/*
 * Read into the loop's one buffer (on_data may not keep the pointer, so one
 * buffer serves every connection), at most READS_PER_EVENT times: level
 * triggering brings us back for the rest after the others had their turn.
 */
static void ep_read(struct pp_conn *c)
{
    struct pp_loop *l = c->loop;
    for (int i = 0; i < READS_PER_EVENT && c->state != CS_DEAD; i++) {
        ssize_t n = recv(c->fd, l->e.rbuf, READ_BUF_SIZE, 0);
        if (n > 0) {
            conn_deliver(c, l->e.rbuf, (size_t)n);
            if ((size_t)n < READ_BUF_SIZE)
                return;  /* drained; level-triggered epoll tells us of more */
        } else if (n == 0) {
            conn_eof(c);
            return;
        } else if (errno == EAGAIN || errno == EINTR) {
            return;
        } else {
            conn_kill(c, -errno);
            return;
        }
    }
}

/* One epoll event for a connection: connect outcome, input, output. */
static void ep_on_conn(struct pp_conn *c, uint32_t ev)
{
    if (c->state == CS_DEAD)
        return;
    if (c->state == CS_CONNECTING) {
        int err = c->connect_err ? c->connect_err : sock_error(c->fd);
        connect_done(c, err);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (!c->peer_eof) {
            ep_read(c);
        } else if (ev & (EPOLLERR | EPOLLHUP)) {
            /* Input is over and the socket failed: nothing more will flush. */
            int err = sock_error(c->fd);
            conn_kill(c, err ? err : -EPIPE);
        }
    }
    if ((ev & EPOLLOUT) && c->sending && c->state != CS_DEAD) {
        c->sending = false;
        ep_flush(c);
    }
    if (c->state != CS_DEAD) {
        int r = ep_update(c);  /* EOF seen: stop polling input */
        if (r < 0)
            conn_kill(c, r);
    }
}

/* Accept what is waiting, a bounded number at a time (level-triggered). */
static void ep_on_listener(struct pp_listener *ls)
{
    for (int i = 0; i < ACCEPTS_PER_EVENT && !ls->closed && !ls->deadline; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        memset(&peer, 0, sizeof(peer));
        int fd = accept4(ls->fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd >= 0)
            listener_accepted(ls, fd, &peer);
        else if (errno == EAGAIN || !listener_error(ls, -errno))
            return;
    }
}

/* Reset the eventfd first, then clear the flag (W1): a wake in between
 * finds the flag still set and skips its write, but on_wake runs after. */
static void ep_on_wake(struct pp_loop *l)
{
    uint64_t v;
    if (read(l->wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    loop_woken(l);
}

static int ep_wait(struct pp_loop *l, int timeout_ms)
{
    struct epoll_event evs[EPOLL_BATCH];
    int n = epoll_wait(l->e.epfd, evs, EPOLL_BATCH, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    /* Objects named here stay allocated until loop_reap, so a callback
     * closing a later one in this batch is safe: its state says dead. */
    for (int i = 0; i < n; i++) {
        uint8_t *kind = evs[i].data.ptr;
        switch (*kind) {
        case K_CONN:
            ep_on_conn((struct pp_conn *)(void *)kind, evs[i].events);
            break;
        case K_LISTENER: {
            struct pp_listener *ls = (struct pp_listener *)(void *)kind;
            if (!ls->closed)
                ep_on_listener(ls);
            break;
        }
        case K_WAKE:
            ep_on_wake(l);
            break;
        }
    }
    return 0;
}

static int ep_conn_start(struct pp_conn *c)
{
    return ep_update(c);
}

static int ep_connect(struct pp_conn *c, int timeout_ms)
{
    struct pp_loop *l = c->loop;
    if (connect(c->fd, (const struct sockaddr *)&c->addr, c->addrlen) < 0 &&
        errno != EINPROGRESS)
        c->connect_err = -errno;  /* reported from the loop, like any outcome */
    int r = ep_update(c);         /* an unconnected socket polls as HUP at once */
    if (r < 0)
        return r;
    if (timeout_ms > 0)
        set_deadline(l, &c->deadline, clock_ms() + (uint64_t)timeout_ms);
    return 0;
}

/* Deregister before close: a forked child may hold the same file open, and
 * epoll would keep reporting it with our (freed) pointer. */
static void ep_conn_stop(struct pp_conn *c)
{
    if (c->ep_registered)
        epoll_ctl(c->loop->e.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->ep_registered = false;
    close(c->fd);
    c->fd = -1;
}

static int ep_listen_ctl(struct pp_listener *ls, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = ls };
    int op = ls->ep_registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(ls->loop->e.epfd, op, ls->fd, &ev) < 0)
        return -errno;
    ls->ep_registered = true;
    return 0;
}

static int ep_listen_start(struct pp_listener *ls)
{
    return ep_listen_ctl(ls, EPOLLIN);
}

static void ep_listen_pause(struct pp_listener *ls)
{
    ep_listen_ctl(ls, 0);
}

static void ep_listen_stop(struct pp_listener *ls)
{
    if (ls->ep_registered)
        epoll_ctl(ls->loop->e.epfd, EPOLL_CTL_DEL, ls->fd, NULL);
    ls->ep_registered = false;
    close(ls->fd);
    ls->fd = -1;
}

static void ep_destroy(struct pp_loop *l)
{
    close(l->e.epfd);
    free(l->e.rbuf);
}

static const struct backend epoll_backend = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .abandon = ep_destroy,  /* closing our copy of the epoll fd is harmless */
    .wait = ep_wait,
    .conn_start = ep_conn_start,
    .conn_connect = ep_connect,
    .conn_flush = ep_flush,
    .conn_stop = ep_conn_stop,
    .listen_start = ep_listen_start,
    .listen_pause = ep_listen_pause,
    .listen_stop = ep_listen_stop,
};

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
        l->be = &uring_backend;
        r = l->be->init(l);
    }
    if (r < 0) {
        /* Any io_uring failure (EPERM from seccomp or io_uring_disabled,
         * ENOSYS, an old kernel) leaves the loop usable on epoll. */
        memset(&l->u, 0, sizeof(l->u));
        l->be = &epoll_backend;
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
        conn_kill(container_of(l->conns.next, struct pp_conn, node), -ECANCELED);
    while (!list_empty(&l->listeners))
        pp_listener_close(container_of(l->listeners.next, struct pp_listener, node));
    loop_notify(l);  /* callbacks find every pp_loop_* refusing with -ESHUTDOWN */
    l->be->destroy(l);
    while (!list_empty(&l->dead))
        conn_free(container_of(l->dead.next, struct pp_conn, node));
    while (!list_empty(&l->dead_listeners))
        listener_free(container_of(l->dead_listeners.next, struct pp_listener, node));
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
     * loop_woken.  Only the first waker since the loop's last W1 writes
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

/* Numeric address only.  Returns 0, or -EINVAL. */
static int parse_addr(const char *ip, uint16_t port, struct sockaddr_storage *ss,
                      socklen_t *len)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *len = sizeof(*a6);
        return 0;
    }
    return -EINVAL;
}

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
    if (parse_addr(ip ? ip : "127.0.0.1", port, &ss, &len) < 0)
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
    if (parse_addr(host, port, ss, len) == 0)
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

/* Never calls back: conn_kill and conn_linger only queue the on_close. */
void pp_conn_close(struct pp_conn *c, int err)
{
    if (!c)
        return;
    if (err > 0)
        err = -err;
    switch (c->state) {
    case CS_CONNECTING:
        conn_kill(c, err ? err : -ECANCELED);
        break;
    case CS_OPEN:
        if (err == 0)
            conn_drain_start(c);
        else
            conn_kill(c, err);
        break;
    case CS_DRAINING:
        if (err < 0)
            conn_kill(c, err);  /* escalate a pending graceful close */
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
