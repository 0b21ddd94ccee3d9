/*
 * loop_epoll.c - the event loop's epoll backend (loop.c is the core,
 * loop_int.h the interface between them): the fallback when io_uring
 * cannot be set up, or when PP_NET_EPOLL asks for it.
 *
 * Level-triggered, non-blocking sockets: input is polled until EOF, output
 * only while a send hit EAGAIN; one read buffer serves every connection.
 */
#define _GNU_SOURCE /* accept4 */
#include "loop_int.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF_SIZE (64u * 1024) /* epoll: the loop's one read buffer */
#define READS_PER_EVENT 4       /* epoll: level-triggered, so yield to others */
#define ACCEPTS_PER_EVENT 32
#define EPOLL_BATCH 64

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
        pp__loop_out_swap(c);
        size_t n = c->send.len - c->send.off;
        if (n == 0)
            break;
        ssize_t w = send(c->fd, c->send.data + c->send.off, n,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            c->send.off += (size_t)w;
            if (c->send.off == c->send.len)
                pp__loop_outbuf_reset(&c->send);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            c->sending = true;
            int r = ep_update(c);
            if (r < 0)
                pp__loop_conn_kill(c, r);
            return;
        }
        pp__loop_conn_kill(c, w < 0 ? -errno : -EIO);
        return;
    }
    c->sending = false;
    int r = ep_update(c);
    if (r < 0)
        pp__loop_conn_kill(c, r);
    else
        pp__loop_conn_sent(c);
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
            pp__loop_conn_deliver(c, l->e.rbuf, (size_t)n);
            if ((size_t)n < READ_BUF_SIZE)
                return;  /* drained; level-triggered epoll tells us of more */
        } else if (n == 0) {
            pp__loop_conn_eof(c);
            return;
        } else if (errno == EAGAIN || errno == EINTR) {
            return;
        } else {
            pp__loop_conn_kill(c, -errno);
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
        pp__loop_connect_done(c, err);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (!c->peer_eof) {
            ep_read(c);
        } else if (ev & (EPOLLERR | EPOLLHUP)) {
            /* Input is over and the socket failed: nothing more will flush. */
            int err = sock_error(c->fd);
            pp__loop_conn_kill(c, err ? err : -EPIPE);
        }
    }
    if ((ev & EPOLLOUT) && c->sending && c->state != CS_DEAD) {
        c->sending = false;
        ep_flush(c);
    }
    if (c->state != CS_DEAD) {
        int r = ep_update(c);  /* EOF seen: stop polling input */
        if (r < 0)
            pp__loop_conn_kill(c, r);
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
            pp__loop_listener_accepted(ls, fd, &peer);
        else if (errno == EAGAIN || !pp__loop_listener_error(ls, -errno))
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
    pp__loop_woken(l);
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
        case K_WATCH:
            pp__loop_watch_ready((struct pp_watch *)(void *)kind);
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
        pp__loop_set_deadline(l, &c->deadline, clock_ms() + (uint64_t)timeout_ms);
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

/* Watches: EPOLLIN, level-triggered; the fd stays the caller's. */
static int ep_watch_start(struct pp_watch *w)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = w };
    if (epoll_ctl(w->loop->e.epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0)
        return -errno;
    w->ep_registered = true;
    return 0;
}

static void ep_watch_stop(struct pp_watch *w)
{
    if (w->ep_registered)
        epoll_ctl(w->loop->e.epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->ep_registered = false;
}

static void ep_destroy(struct pp_loop *l)
{
    close(l->e.epfd);
    free(l->e.rbuf);
}

const struct backend pp__loop_epoll_backend = {
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
    .watch_start = ep_watch_start,
    .watch_stop = ep_watch_stop,
};
