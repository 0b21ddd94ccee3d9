/*
 * loop.h - a small single-threaded event loop for TCP connections.
 *
 * Used by the client's net thread (one connection per node, many small
 * frames pipelined, and a UDP socket for discovery: pp_loop_watch), by ppserver (accepting; one forked child per
 * connection, which abandons the parent's loop and makes its own) and by
 * the session agent (one connection).  DESIGN.md "Many hosts".
 *
 * Backends.  io_uring by default: multishot recv into a provided-buffer
 * ring, one send in flight per socket carrying every byte queued since the
 * last one, multishot accept, linked timeouts for connect, and
 * io_uring_submit_and_wait_timeout as the only blocking call.  epoll when
 * the ring cannot be set up (seccomp, kernel.io_uring_disabled, a kernel
 * older than 6.0) or when the environment has PP_NET_EPOLL=1 (tests force
 * it that way).  Both backends keep the same contract; pp_loop_backend()
 * says which one a loop got.
 *
 * Threads.  A loop belongs to the thread that created it: with
 * IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN the kernel only lets the
 * creating thread submit and reap, so create the loop on the thread that
 * will run it.  Every function here must be called on that thread, except
 * pp_loop_wake(), which any thread (or a signal handler) may call.
 *
 * Callbacks run inside pp_loop_run() (on_close also inside pp_loop_free())
 * on the loop's thread, never inside the call that caused them: a
 * pp_conn_close() only queues the on_close.  A callback may call any
 * pp_conn_* / pp_loop_* function of the same loop, including closing the
 * connection it is called for or another one, except pp_loop_run,
 * pp_loop_free and pp_loop_abandon.  Memory is released when the turn
 * ends, so a pointer stays safe to pass to these functions until its
 * on_close has returned; after that it is gone.
 *
 * Sending.  pp_conn_write() copies into the connection's out-queue and
 * returns at once; the bytes are handed to the kernel at the start of the
 * next pp_loop_run(), all of them in one send per connection, so frames
 * written between two turns are coalesced.  The out-queue is two buffers
 * that swap (one being sent, one filling): steady-state traffic does not
 * allocate.  A connection queues at most PP_LOOP_OUT_MAX bytes.
 *
 * Receiving.  on_data gets the bytes in order, in slices of any size (no
 * framing here); the pointer is valid only until the callback returns.
 *
 * Errors.  Functions return 0 (or a count) on success and -errno on
 * failure; output parameters are ret_*, written only on success.  A call
 * that fails never invokes the callbacks it was given.
 */
#ifndef PP_NET_LOOP_H
#define PP_NET_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PP_LOOP_OUT_MAX  (256u << 20)  /* out-queue cap per connection */
#define PP_LOOP_LINGER_MS 2000u        /* graceful close: wait this long for the peer's EOF */

struct pp_loop;
struct pp_conn;
struct pp_listener;
struct pp_watch;

/*
 * Per-connection callbacks, all called on the loop's thread with the ctx
 * given to pp_loop_add / pp_loop_connect.  The struct is copied.
 *
 * on_data     required.  len > 0 bytes received, in order.  Return 0 to go
 *             on, or a negative errno to close the connection with it (as
 *             pp_conn_close(c, err) would).  Not called once the
 *             connection is closing.
 * on_connect  optional; pp_loop_connect only.  0 when connected, else
 *             -errno (-ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH ...); after
 *             a failure on_close(err) follows.  Not called if the
 *             connection is closed before the attempt finishes.
 * on_drain    optional.  The out-queue became empty: every byte written so
 *             far has been handed to the kernel.  Good place to write more
 *             under backpressure.
 * on_close    optional.  Exactly once per connection, last: 0 after the
 *             peer's orderly EOF or a pp_conn_close(c, 0) that flushed,
 *             else -errno (-ECONNRESET, -EPIPE, the connect error, the
 *             error given to pp_conn_close or returned by on_data,
 *             -ECANCELED from pp_loop_free).  After it returns the
 *             connection is gone; ctx is not used again.
 */
struct pp_conn_ops {
    int (*on_data)(void *ctx, const uint8_t *data, size_t len);
    void (*on_connect)(void *ctx, int err);
    void (*on_drain)(void *ctx);
    void (*on_close)(void *ctx, int err);
};

/*
 * on_accept - a new connection on a listener.  fd is connected, blocking,
 * close-on-exec, and owned by the callback from here on: close it, fork
 * with it, or hand it to pp_loop_add.  peer is valid during the call.
 */
typedef void (*pp_loop_accept_fn)(void *ctx, int fd,
                                  const struct sockaddr_storage *peer);

typedef void (*pp_loop_fn)(void *ctx);

/****  The loop  ****/

/*
 * pp_loop_new - create a loop on the calling thread (which must be the one
 * that runs it).  Tries io_uring first unless PP_NET_EPOLL is set to
 * anything but "0"; falls back to epoll if the ring cannot be set up.
 * Returns 0 and *ret, or -ENOMEM / -EMFILE / the epoll error.  Free with
 * pp_loop_free (or pp_loop_abandon in a forked child).
 */
int pp_loop_new(struct pp_loop **ret);

/* pp_loop_backend - "io_uring" or "epoll"; a static string. */
const char *pp_loop_backend(const struct pp_loop *loop);

/*
 * pp_loop_free - close every connection, listener and watch (not the
 * watched fds: those are the caller's) and free the loop.
 * Each connection whose on_close has not run yet gets it now, with
 * -ECANCELED (or the error it was already closing with); queued bytes are
 * dropped.  Waits (briefly, bounded) for the kernel to finish with the
 * loop's buffers.  Not from a callback.  NULL is a no-op.
 */
void pp_loop_free(struct pp_loop *loop);

/*
 * pp_loop_abandon - in a child after fork(): free this process's copy of
 * the loop and close its copies of the fds (ring, epoll, eventfd,
 * sockets, listeners) without submitting anything, shutting any socket
 * down or calling any callback, so the parent's loop goes on unharmed.
 * The parent's connections stay open: only the last close of a socket
 * ends it.  May be called in a child forked from inside one of this
 * loop's callbacks (ppserver forks in on_accept), as long as the child
 * never returns into the loop.  Watches are freed; their fds stay open
 * (the caller's to close).  NULL is a no-op.
 */
void pp_loop_abandon(struct pp_loop *loop);

/*
 * pp_loop_run - one turn: deliver pending on_close, hand queued bytes to
 * the kernel, wait up to timeout_ms (-1 forever, 0 poll) for events or
 * the next tick, dispatch them, fire the tick, deliver on_close for what
 * closed, and free what is dead.  The wait is cut short by events, by
 * pp_loop_wake, by the tick, by internal deadlines (linger, connect
 * timeouts on epoll), and by an out-queue draining (a send's completion
 * on io_uring; on epoll a flush that emptied a queue makes the turn only
 * poll), so a writer under backpressure can loop on pp_conn_queued.
 * Returns the number of callbacks made (0 on a timeout, a signal, or
 * progress without a callback), or -EBUSY (called from a callback),
 * -EINVAL, or the backend's error (-EEXIST: not the creating thread).
 */
int pp_loop_run(struct pp_loop *loop, int timeout_ms);

/*
 * pp_loop_wake - make a blocked (or the next) pp_loop_run return soon and
 * call on_wake on the loop's thread.  Any thread; async-signal-safe (one
 * atomic exchange and at most one eventfd write).  Wakes are coalesced:
 * several before the loop notices give one on_wake.  Whatever the waker
 * published before calling is visible to on_wake (the exchange is
 * acq_rel).  The loop must outlive the call.
 */
void pp_loop_wake(struct pp_loop *loop);

/* pp_loop_set_wake - the on_wake callback (NULL: wakes only unblock). */
void pp_loop_set_wake(struct pp_loop *loop, pp_loop_fn on_wake, void *ctx);

/*
 * pp_loop_set_tick - call on_tick every ms milliseconds (first one ms from
 * now), from pp_loop_run; ms 0 turns it off.  A late loop skips missed
 * ticks rather than firing them in a burst.  Returns 0 or -EINVAL (ms > 0
 * with no callback).
 */
int pp_loop_set_tick(struct pp_loop *loop, unsigned ms, pp_loop_fn on_tick,
                     void *ctx);

/* pp_loop_now_ms - CLOCK_MONOTONIC in ms, as of the current turn. */
uint64_t pp_loop_now_ms(const struct pp_loop *loop);

/****  Listeners  ****/

/*
 * pp_loop_listen - listen on ip:port and call on_accept for each new
 * connection.  ip is numeric: NULL means 127.0.0.1, "0.0.0.0" all IPv4,
 * "::" all addresses (dual stack).  port 0 picks an ephemeral port (see
 * pp_listener_port).  SO_REUSEADDR is set; backlog <= 0 means SOMAXCONN.
 * When accept fails for lack of resources (EMFILE, ENFILE, ENOBUFS,
 * ENOMEM; any error but ECONNABORTED, EINTR, EPROTO, EPERM) the listener
 * pauses for 100 ms instead of spinning.  Returns 0 and *ret, or
 * -EINVAL (bad ip), -EADDRINUSE, -ESHUTDOWN (loop being freed), -errno.
 */
int pp_loop_listen(struct pp_loop *loop, const char *ip, uint16_t port,
                   int backlog, pp_loop_accept_fn on_accept, void *ctx,
                   struct pp_listener **ret);

/* pp_listener_port - the bound port, in host order. */
uint16_t pp_listener_port(const struct pp_listener *ls);

/*
 * pp_listener_close - stop accepting and close the socket; no on_accept
 * after this returns (a connection the kernel had already accepted is
 * closed).  The pointer is invalid afterwards.  NULL is a no-op.
 */
void pp_listener_close(struct pp_listener *ls);

/****  Watches (datagram sockets)  ****/

/*
 * pp_loop_watch - call on_readable(ctx) from pp_loop_run whenever fd (a
 * non-blocking UDP socket, or any pollable fd that is not one of this
 * loop's connections) is readable.  The loop never reads, writes or
 * closes fd: the callback drains it itself, with recvfrom(MSG_DONTWAIT)
 * until EAGAIN.  Drain it fully: epoll reports a readable fd again at the
 * next turn, but io_uring (multishot poll) reports new arrivals, so data
 * left behind may wait for the next datagram.  The callback may call
 * pp_watch_close on its own watch.  Returns 0 and *ret, or -EINVAL,
 * -ENOMEM, -ESHUTDOWN, -EBUSY, or epoll_ctl's error (-EEXIST: fd watched
 * already, -EPERM: not pollable).
 */
int pp_loop_watch(struct pp_loop *loop, int fd, void (*on_readable)(void *ctx), void *ctx,
                  struct pp_watch **ret);

/*
 * pp_watch_close - stop watching: no on_readable after this returns.  The
 * fd stays the caller's; it may be closed right after this call.  The
 * pointer is invalid afterwards.  pp_loop_free and pp_loop_abandon close
 * (free) the watches still open, never their fds.  NULL is a no-op.
 */
void pp_watch_close(struct pp_watch *w);

/****  Connections  ****/

/*
 * pp_loop_add - adopt a connected stream socket: sets O_NONBLOCK and
 * TCP_NODELAY, starts receiving.  On success the loop owns fd and closes
 * it when the connection ends; on failure fd is still the caller's.
 * Returns 0 and *ret, or -EINVAL, -ENOMEM, -ESHUTDOWN, -errno.
 */
int pp_loop_add(struct pp_loop *loop, int fd, const struct pp_conn_ops *ops,
                void *ctx, struct pp_conn **ret);

/*
 * pp_loop_connect - start a TCP connection to host:port.  host is a
 * numeric IPv4/IPv6 address or a name (getaddrinfo, which may block; the
 * first address is used).  timeout_ms <= 0 leaves it to the kernel's SYN
 * retries.  on_connect reports the outcome; bytes may be written before
 * it (they go out once connected).  TCP_NODELAY is set.  Returns 0 and
 * *ret, or an error found before any packet is sent: -EINVAL,
 * -EHOSTUNREACH (name not found), -EAGAIN (resolver busy), -ENOMEM,
 * -ESHUTDOWN, -errno from socket().
 */
int pp_loop_connect(struct pp_loop *loop, const char *host, uint16_t port,
                    int timeout_ms, const struct pp_conn_ops *ops, void *ctx,
                    struct pp_conn **ret);

/*
 * pp_conn_write - copy len bytes to the tail of the out-queue.  Returns 0,
 * or -EINVAL, -EPIPE (the connection is closing or closed), -ENOBUFS (the
 * queue would exceed PP_LOOP_OUT_MAX), -ENOMEM.  Nothing is queued on
 * failure.
 */
int pp_conn_write(struct pp_conn *c, const void *data, size_t len);

/*
 * pp_conn_reserve / pp_conn_commit - build bytes in place: reserve returns
 * len writable bytes at the tail of the out-queue (NULL with errno
 * EPIPE, ENOBUFS or ENOMEM), commit(n) queues the first n <= len of them.
 * One reservation at a time, and nothing else may touch the connection
 * between the two calls (a write or a turn of the loop invalidates the
 * pointer).  commit with n larger than reserved is ignored.
 */
uint8_t *pp_conn_reserve(struct pp_conn *c, size_t len);
void pp_conn_commit(struct pp_conn *c, size_t len);

/* pp_conn_queued - bytes written but not yet taken by the kernel. */
size_t pp_conn_queued(const struct pp_conn *c);

/*
 * pp_conn_close - close a connection.  err == 0 is graceful: on_data
 * stops, the queued bytes are sent, then the write side is shut down and
 * on_close(0) runs (or on_close(-errno) if sending failed); the socket
 * then lingers internally, discarding input, until the peer's EOF or
 * PP_LOOP_LINGER_MS, so that a late peer byte cannot turn the close into
 * an RST that loses the tail.  err < 0 is immediate: queued bytes are
 * dropped and on_close(err) runs.  A pending graceful close can be made
 * immediate by calling again with err < 0.  A connection still connecting
 * closes at once (err 0 becomes -ECANCELED).  on_close always runs later,
 * from the loop, never inside this call.  A positive err is negated.
 */
void pp_conn_close(struct pp_conn *c, int err);

/* pp_conn_fd - the socket, or -1 once closed.  Do not read or write it. */
int pp_conn_fd(const struct pp_conn *c);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_LOOP_H */
