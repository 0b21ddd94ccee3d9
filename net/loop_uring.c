/*
 * loop_uring.c - the event loop's io_uring backend (loop.c is the core,
 * loop_int.h the interface between them).
 *
 * Multishot recv into a provided-buffer ring, one send in flight per
 * socket, multishot accept, connect with a linked timeout, and the eventfd
 * read by one READ at a time, multishot poll for watches.  An SQE for a connection or listener counts
 * in its nops until the final CQE, so loop_reap never frees what the
 * kernel can still name; l->u.inflight counts every tagged SQE, for
 * pp_loop_free's bounded wait.
 */
#define _GNU_SOURCE /* the feature set loop.c compiles with */
#include "loop_int.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define SQ_ENTRIES 256          /* submissions per io_uring_enter, at most */
#define CQ_ENTRIES 4096         /* multishot recv can post many CQEs per turn */
#define BUF_COUNT 64            /* provided receive buffers; a power of two */
#define BUF_SIZE (32u * 1024)   /* each; loopback hands out up to 64 KiB skbs */
#define BGID 0                  /* the loop's one buffer group */
#define FREE_WAIT_MS 1000       /* pp_loop_free: wait for the kernel at most */

/****  io_uring backend  ****/

/* user_data = object pointer | tag; calloc'ed objects are 16-byte aligned. */
enum tag { T_IGNORE = 0, T_RECV, T_SEND, T_CONNECT, T_TIMEOUT, T_ACCEPT, T_WAKE, T_POLL };
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
        pp__loop_conn_kill(c, -EBUSY);
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
    pp__loop_out_swap(c);
    size_t n = c->send.len - c->send.off;
    if (n == 0)
        return;
    if (!(sqe = ur_sqe(l))) {
        pp__loop_conn_kill(c, -EBUSY);
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
            pp__loop_conn_deliver(c, ur_buf(l, bid), (size_t)res);
        ur_buf_put(l, bid);  /* at once, so a burst rarely hits -ENOBUFS */
    }
    if (res > 0 || res == -ENOBUFS)
        ur_arm_recv(c);  /* no-op while the multishot is still armed */
    else if (res == 0)
        pp__loop_conn_eof(c);
    else
        pp__loop_conn_kill(c, res);
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
        pp__loop_conn_kill(c, res < 0 ? res : -EIO);
        return;
    }
    c->send.off += (size_t)res;
    if (c->send.off == c->send.len)
        pp__loop_outbuf_reset(&c->send);
    if (conn_queued(c))
        ur_flush(c);  /* a short send's rest, or what was written meanwhile */
    else
        pp__loop_conn_sent(c);
}

static void ur_on_connect(struct pp_conn *c, int res)
{
    c->nops--;
    if (c->state != CS_CONNECTING)
        return;
    /* -ECANCELED here means the linked timeout fired (a close would have
     * left CS_CONNECTING already). */
    pp__loop_connect_done(c, res == -ECANCELED ? -ETIMEDOUT : res);
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
     * before we read the CQE; pp__loop_listener_accepted asks getpeername. */
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
        pp__loop_listener_accepted(ls, cqe->res, NULL);
    else
        retry = pp__loop_listener_error(ls, cqe->res);
    if (retry && !ls->armed && !ls->closed && !ls->deadline)
        ur_listen_start(ls);
}

/* Watches: one multishot poll each, re-armed when the kernel ends it. */
static int ur_watch_start(struct pp_watch *w)
{
    struct pp_loop *l = w->loop;
    struct io_uring_sqe *sqe;
    if (w->armed || w->closed)
        return 0;
    if (!(sqe = ur_sqe(l)))
        return -EBUSY;
    io_uring_prep_poll_multishot(sqe, w->fd, POLLIN);
    ur_tag(l, sqe, w, T_POLL);
    w->armed = true;
    w->nops++;
    return 0;
}

/* Cancel by user_data, not by fd: the caller may close the fd before the
 * cancel is submitted (the poll holds its own reference to the file). */
static void ur_watch_stop(struct pp_watch *w)
{
    struct io_uring_sqe *sqe;
    if (!w->armed || !(sqe = ur_sqe(w->loop)))
        return;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)w | T_POLL, 0);
    io_uring_sqe_set_data64(sqe, T_IGNORE);
}

/* A readiness (res: the poll mask) or the end of the multishot (no
 * IORING_CQE_F_MORE: a CQ overflow, or an error); re-armed after a
 * readiness unless closed. */
static void ur_on_poll(struct pp_watch *w, const struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        w->armed = false;
        w->nops--;
    }
    if (cqe->res > 0)
        pp__loop_watch_ready(w);
    if (!w->armed && !w->closed && cqe->res >= 0)
        ur_watch_start(w);  /* an error (-EBADF ...) would only repeat: stay off */
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
        pp__loop_woken(l);
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
    case T_POLL:
        ur_on_poll(p, cqe);
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

const struct backend pp__loop_uring_backend = {
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
    .watch_start = ur_watch_start,
    .watch_stop = ur_watch_stop,
};
