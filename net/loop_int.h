/*
 * loop_int.h - what the event loop's core (loop.c) and its two backends
 * (loop_uring.c, loop_epoll.c) share: the structs, the backend operations
 * table, and the core functions a backend reports through.  Internal: not
 * installed, included only by net/loop*.c.  Nothing here is exported:
 * net/ builds with -fvisibility=hidden.
 */
#ifndef PP_NET_LOOP_INT_H
#define PP_NET_LOOP_INT_H

#include "loop.h"

#include <liburing.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/****  Small helpers  ****/

struct list {
    struct list *prev, *next;
};

/* CLOCK_MONOTONIC in ms.  Inline: the core and both backends read it. */
static inline uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/****  Data structures  ****/

/* First byte of every object epoll's data.ptr can name. */
enum kind { K_CONN = 1, K_LISTENER, K_WAKE, K_WATCH };

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

/* A readiness watch on a caller's fd (a UDP socket): never closes it. */
struct pp_watch {
    uint8_t kind;               /* K_WATCH */
    bool closed;
    bool armed;                 /* io_uring: a multishot poll is in flight */
    bool ep_registered;
    struct pp_loop *loop;
    struct list node;           /* loop->watches, or loop->dead_watches */
    int fd;                     /* the caller's */
    void (*on_readable)(void *ctx);
    void *ctx;
    unsigned nops;
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
    struct list conns, dead, listeners, dead_listeners, watches, dead_watches;
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
 * pp__loop_conn_deliver / pp__loop_conn_eof / pp__loop_conn_kill / pp__loop_conn_sent / pp__loop_connect_done /
 * pp__loop_listener_accepted / pp__loop_woken.
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
    int (*watch_start)(struct pp_watch *w);
    void (*watch_stop)(struct pp_watch *w); /* closed: no callback after this */
};

/* The two tables, in loop_uring.c and loop_epoll.c; pp_loop_new picks one. */
extern const struct backend pp__loop_uring_backend, pp__loop_epoll_backend;

/****  The core's functions the backends call (loop.c)  ****/

/* Bytes written but not yet taken by the kernel: the send buffer's rest
 * plus the fill buffer (pp_conn_queued). */
static inline size_t conn_queued(const struct pp_conn *c)
{
    return c->send.len - c->send.off + c->fill.len;
}

/* Out-queue: recycle a fully sent buffer; swap the fill buffer in (no send
 * in flight only). */
void pp__loop_outbuf_reset(struct outbuf *b);
void pp__loop_out_swap(struct pp_conn *c);

/* Set a deadline field (0 = none) and lower l->next_deadline to match. */
void pp__loop_set_deadline(struct pp_loop *l, uint64_t *field, uint64_t t);

/* What happened on a connection: close it now with err; bytes received;
 * the peer's EOF; the out-queue emptied; a connect's outcome (0 or -errno). */
void pp__loop_conn_kill(struct pp_conn *c, int err);
void pp__loop_conn_deliver(struct pp_conn *c, const uint8_t *p, size_t n);
void pp__loop_conn_eof(struct pp_conn *c);
void pp__loop_conn_sent(struct pp_conn *c);
void pp__loop_connect_done(struct pp_conn *c, int err);

/* What happened on a listener: an accepted fd (peer NULL: ask the socket);
 * a failed accept (true: retry at once, else it paused). */
void pp__loop_listener_accepted(struct pp_listener *ls, int fd,
                       const struct sockaddr_storage *peer);
bool pp__loop_listener_error(struct pp_listener *ls, int err);

/* A watched fd is readable: run on_readable unless the watch is closed. */
void pp__loop_watch_ready(struct pp_watch *w);

/* The eventfd fired and its counter was read: clear the flag, run on_wake. */
void pp__loop_woken(struct pp_loop *l);

#endif /* PP_NET_LOOP_INT_H */
