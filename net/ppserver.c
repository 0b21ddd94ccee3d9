/*
 * ppserver.c - the node daemon.
 *
 * The daemon itself only accepts connections: each accepted socket gets
 * a session process of its own (fork), so that nothing a client sends,
 * before or after authentication, is parsed by the process that serves
 * everyone else.  The session process
 *   1. runs the handshake (secure.h) under a deadline: nothing but the
 *      three handshake messages is read before the client has proved it
 *      knows the secret;
 *   2. then, sealed: says what this host is (INFO), reads what the client
 *      is and runs (SESSION), refuses an incompatible client, and fetches
 *      the client's program into the code cache unless it is there
 *      already (CODE_REQUEST / CODE, checked against its hash, written
 *      under a temporary name and renamed);
 *   3. execs that program in agent mode (PP_AGENT, msg.h): the agent is a
 *      local pp engine whose workers run the client's functions, and it
 *      takes over the socket and the session's keys.
 * The daemon keeps a table of its sessions, passes SIGUSR1 on to them
 * (each prints its stats table), and on SIGTERM/SIGINT or after -t
 * seconds without a client stops accepting, asks every session to end
 * (they hand their jobs back to the client: the client runs them
 * elsewhere), waits for them and exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <sodium.h>

#include "chan.h"
#include "conf.h"
#include "disc.h"
#include "loop.h"
#include "msg.h"
#include "secure.h"
#include "wire.h"

extern char **environ;

#define HANDSHAKE_MS 5000   /* a client must prove itself this fast */
#define TICK_MS 100
#define DRAIN_MS 10000      /* sessions get this long to end on SIGTERM */

static struct pp_srvconf conf;
static struct pp_sec_psk psk;
static bool debug_on;

static void plog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void plog(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int n = snprintf(buf, sizeof(buf), "ppserver[%d]: ", (int)getpid());
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(buf);
    if (len < sizeof(buf) - 1)
        buf[len++] = '\n';
    (void)!write(2, buf, len);
}
#define dlog(...) do { if (debug_on) plog(__VA_ARGS__); } while (0)

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
    }
    snprintf(out, n, "%s:%u", ip, port);
}

/* ================================================================ */
/* The session process                                                */
/* ================================================================ */

/* S_EXEC: the agent starts once the current read is consumed; a frame
 * after the last one the client may send before READY is an error. */
enum { S_HELLO, S_AUTH, S_SESSION, S_CODE, S_EXEC, S_DEAD };

struct session {
    struct pp_loop *loop;
    struct pp_conn *conn;
    struct pp_chan ch;
    struct pp_sec_hs hs;
    struct pp_sec_dir tx, rx;
    int state;
    char peer[64];
    uint64_t deadline;
    _Atomic uint32_t *authed;     /* the daemon's pending-handshake count */
    /* the program to run */
    uint8_t exe_hash[PP_HASH_LEN];
    uint64_t exe_size;
    char exe_path[PATH_MAX];      /* in the cache */
    struct pp_code_rx code;       /* the program, while it arrives */
    bool code_started;
    int exit_code;
};

static void sess_end(struct session *s, int code, const char *why)
{
    if (why)
        plog("session %s: %s", s->peer, why);
    s->state = S_DEAD;
    s->exit_code = code;
}

static void start_agent(struct session *s);

static int on_session_frame(struct session *s, const struct pp_wire_frame *f)
{
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    struct pp_host_info client, self;
    char why[160];

    if (f->hdr.type != PP_WIRE_SESSION)
        return -EPROTO;
    pp_rd_u32(&rd); /* max_body: both sides use PP_WIRE_MAX_BODY for now */
    const uint8_t *h = pp_rd_take(&rd, PP_HASH_LEN);
    s->exe_size = pp_rd_u64(&rd);
    pp_rd_str(&rd, client.machine, sizeof(client.machine));
    pp_rd_str(&rd, client.libc, sizeof(client.libc));
    char path[256];
    pp_rd_str(&rd, path, sizeof(path));
    if (rd.err)
        return -EPROTO;
    memcpy(s->exe_hash, h, PP_HASH_LEN);
    pp_host_info_self(&self);
    if (pp_host_info_compatible(&client, &self, why, sizeof(why)) < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "incompatible node: %s", why);
        pp_chan_send_error(&s->ch, 0, -ENOEXEC, msg);
        pp_chan_flush(&s->ch);
        pp_conn_close(s->conn, 0);
        sess_end(s, 0, msg);
        return 0;
    }
    plog("session %s: program %s", s->peer, path);
    pp_cache_path(s->exe_path, sizeof(s->exe_path), conf.cache_dir, "exe", s->exe_hash);
    if (pp_cache_ok(s->exe_path, s->exe_hash)) {
        s->state = S_EXEC;
        return 0;
    }
    if (access(s->exe_path, F_OK) == 0)
        plog("cache: %s does not match its hash: fetching it again", s->exe_path);
    /* Fetch it: the client sends nothing else until READY, so the CODE
     * frames are all that comes. */
    if (s->exe_size > (1ull << 32)) {
        sess_end(s, 0, "program too large");
        return -EFBIG;
    }
    s->state = S_CODE;
    return pp_chan_send(&s->ch, PP_WIRE_CODE_REQUEST, 0, 0, s->exe_hash, PP_HASH_LEN);
}

static int on_code_frame(struct session *s, const struct pp_wire_frame *f)
{
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    int r;

    if (f->hdr.type == PP_WIRE_CODE && !s->code_started) {
        uint64_t total = f->hdr.flags & PP_WIRE_F_CHUNKED ? pp_rd_u64(&rd) : 0;
        const uint8_t *h = pp_rd_take(&rd, PP_HASH_LEN);
        if (rd.err || sodium_memcmp(h, s->exe_hash, PP_HASH_LEN) != 0)
            return -EPROTO;
        if (!(f->hdr.flags & PP_WIRE_F_CHUNKED))
            total = pp_rd_left(&rd);
        if (total != s->exe_size)
            return -EPROTO;
        if ((r = pp_code_rx_begin(&s->code, conf.cache_dir, "exe", s->exe_hash, total)) < 0) {
            plog("cache: cannot create %s: %s", s->code.tmp, strerror(-r));
            return r;
        }
        s->code_started = true;
        if ((r = pp_code_rx_add(&s->code, rd.p, pp_rd_left(&rd))) < 0)
            return r;
    } else if (f->hdr.type == PP_WIRE_CHUNK && s->code_started) {
        if ((r = pp_code_rx_add(&s->code, f->body, f->hdr.len)) < 0)
            return r;
    } else {
        return -EPROTO;
    }
    if (!pp_code_rx_complete(&s->code))
        return 0;
    if ((r = pp_code_rx_end(&s->code)) < 0) {
        sess_end(s, 1, r == -EBADMSG ? "the program sent does not match its hash: refused"
                                     : "cannot store the program in the cache");
        return r;
    }
    dlog("session %s: cached %s (%llu bytes)", s->peer, s->exe_path,
         (unsigned long long)s->exe_size);
    s->state = S_EXEC;
    return 0;
}

static int sess_frame(void *ctx, const struct pp_wire_frame *f)
{
    struct session *s = ctx;
    uint8_t m2[PP_SEC_M2_LEN];
    int r;

    if (f->hdr.type == PP_WIRE_ERROR && f->hdr.len >= 4) {
        if (s->state == S_AUTH && (int32_t)pp_wire_get_u32(f->body) == -EACCES)
            plog("session %s: authentication failed: the client rejected our proof "
                 "(its secret differs)", s->peer);
        else
            plog("session %s: the client gave up: %.*s", s->peer, (int)(f->hdr.len - 4),
                 (const char *)f->body + 4);
        sess_end(s, 0, NULL);
        return -ECONNABORTED;
    }
    switch (s->state) {
    case S_HELLO:
        if (f->hdr.type != PP_WIRE_HELLO)
            return -EPROTO;
        if ((r = pp_sec_node_reply(&s->hs, &psk, f->body, f->hdr.len, m2)) < 0)
            return r;
        s->state = S_AUTH;
        return pp_chan_send(&s->ch, PP_WIRE_HELLO_ACK, 0, 0, m2, sizeof(m2));
    case S_AUTH:
        if (f->hdr.type != PP_WIRE_AUTH)
            return -EPROTO;
        if ((r = pp_sec_node_finish(&s->hs, f->body, f->hdr.len)) < 0) {
            sess_end(s, 0, "authentication failed: the client does not know our secret");
            return -EACCES;
        }
        if (s->authed)
            atomic_fetch_add(s->authed, 1);
        pp_sec_hs_split(&s->hs, &s->tx, &s->rx);
        if ((r = pp_chan_seal_rx(&s->ch, &s->rx)) < 0 || (r = pp_chan_seal_tx(&s->ch, &s->tx)) < 0)
            return r;
        s->state = S_SESSION;
        s->deadline = pp_loop_now_ms(s->loop) + (conf.socket_timeout_s ? conf.socket_timeout_s * 1000u : 30000u);
        plog("session %s: authenticated", s->peer);
        {
            struct pp_host_info self;
            uint8_t buf[256];
            struct pp_wr w = pp_wr_of(buf, sizeof(buf));
            pp_host_info_self(&self);
            pp_wr_u32(&w, PP_WIRE_MAX_BODY);
            pp_wr_str(&w, self.machine);
            pp_wr_str(&w, self.libc);
            pp_wr_u32(&w, (uint32_t)conf.workers);
            return pp_chan_send(&s->ch, PP_WIRE_INFO, 0, 0, buf, (size_t)(w.p - buf));
        }
    case S_SESSION:
        return on_session_frame(s, f);
    case S_CODE:
        return on_code_frame(s, f);
    default:
        return -EPROTO;
    }
}

static int sess_data(void *ctx, const uint8_t *data, size_t len)
{
    struct session *s = ctx;
    int r = pp_chan_data(&s->ch, data, len);
    if (r == 0 && s->state == S_EXEC) {
        start_agent(s); /* returns only on failure */
        return -ECONNABORTED;
    }
    if (r < 0 && s->state != S_DEAD) {
        const char *why = pp_chan_error(&s->ch);
        plog("session %s: closing: %s", s->peer, why ? why : strerror(-r));
        s->state = S_DEAD;
        s->exit_code = 0;
    }
    return s->state == S_DEAD ? (r < 0 ? r : -ECONNABORTED) : 0;
}

static void sess_close(void *ctx, int err)
{
    struct session *s = ctx;
    s->conn = NULL;
    if (s->state != S_DEAD && s->state != S_EXEC) {
        if (s->state <= S_AUTH)
            plog("session %s: handshake abandoned by the client%s%s", s->peer,
                 err ? ": " : "", err ? strerror(-err) : "");
        else
            plog("session %s: connection lost%s%s", s->peer, err ? ": " : "",
                 err ? strerror(-err) : "");
        s->state = S_DEAD;
    }
}

static void sess_tick(void *ctx)
{
    struct session *s = ctx;
    if (s->state != S_DEAD && s->state != S_EXEC && pp_loop_now_ms(s->loop) > s->deadline) {
        sess_end(s, 0, s->state <= S_AUTH ? "handshake deadline passed: closing"
                                          : "client silent too long: closing");
        if (s->conn)
            pp_conn_close(s->conn, -ETIMEDOUT);
    }
}

/* Hands the socket and the keys to the client's program in agent mode. */
static void start_agent(struct session *s)
{
    struct pp_agent_state st;
    int pfd[2] = { -1, -1 }, sock = -1;

    memset(&st, 0, sizeof(st));
    if (pp_chan_flush(&s->ch) < 0 || pp_chan_export(&s->ch, &st.tx, &st.rx) < 0) {
        sess_end(s, 1, "cannot hand the session over (bytes in flight)");
        return;
    }
    /* What is queued must be on the wire before this process becomes the
     * agent: let the loop send it. */
    for (int i = 0; i < 100 && s->conn && pp_conn_queued(s->conn); i++)
        pp_loop_run(s->loop, 10);
    st.magic = PP_AGENT_MAGIC;
    st.workers = conf.workers;
    st.restart = conf.restart;
    st.debug = conf.debug;
    st.socket_timeout_ms = conf.socket_timeout_s * 1000u;
    memcpy(st.exe_hash, s->exe_hash, PP_HASH_LEN);
    snprintf(st.cache_dir, sizeof(st.cache_dir), "%s", conf.cache_dir);
    snprintf(st.peer, sizeof(st.peer), "%s", s->peer);

    if (!s->conn || (sock = dup(pp_conn_fd(s->conn))) < 0 || pipe(pfd) < 0) {
        sess_end(s, 1, "cannot hand the session over");
        return;
    }
    ssize_t w = write(pfd[1], &st, sizeof(st));
    sodium_memzero(&st, sizeof(st));
    close(pfd[1]);
    if (w != (ssize_t)sizeof(st)) {
        sess_end(s, 1, "cannot hand the session over (pipe)");
        return;
    }
    pp_chan_exit(&s->ch);
    pp_loop_abandon(s->loop); /* its socket copy and ring go; ours stays */
    s->loop = NULL;
    s->conn = NULL;
    pp_sec_psk_wipe(&psk);
    pp_srvconf_wipe(&conf);

    char env[64];
    snprintf(env, sizeof(env), PP_AGENT_ENV "=%d,%d", sock, pfd[0]);
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 2, sizeof(char *));
    if (!envp)
        _exit(1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], PP_AGENT_ENV "=", sizeof(PP_AGENT_ENV)) != 0)
            envp[k++] = environ[i];
    envp[k++] = env;
    char *argv[] = { (char *)"pp-agent", NULL };
    execve(s->exe_path, argv, envp);
    plog("session %s: cannot start the agent %s: %s", s->peer, s->exe_path, strerror(errno));
    _exit(1);
}

static void __attribute__((noreturn)) run_session(int fd, const char *peer,
                                                  _Atomic uint32_t *authed)
{
    static struct session s;
    static const struct pp_conn_ops ops = {
        .on_data = sess_data,
        .on_close = sess_close,
    };

    memset(&s, 0, sizeof(s));
    s.code.fd = -1;
    s.authed = authed;
    snprintf(s.peer, sizeof(s.peer), "%s", peer);
    if (pp_loop_new(&s.loop) < 0 || pp_chan_init(&s.ch, NULL, sess_frame, &s) < 0 ||
        pp_loop_add(s.loop, fd, &ops, &s, &s.conn) < 0)
        _exit(1);
    s.ch.conn = s.conn;
    s.deadline = pp_loop_now_ms(s.loop) + HANDSHAKE_MS;
    pp_loop_set_tick(s.loop, TICK_MS, sess_tick, &s);
    while (s.state != S_DEAD) {
        if (pp_chan_flush(&s.ch) < 0)
            break;
        if (pp_loop_run(s.loop, -1) < 0)
            break;
    }
    pp_code_rx_abort(&s.code);
    if (s.conn) {
        pp_chan_flush(&s.ch);
        pp_conn_close(s.conn, 0);
        for (int i = 0; i < 50 && s.conn; i++)
            pp_loop_run(s.loop, 10);
    }
    pp_chan_exit(&s.ch);
    pp_sec_hs_wipe(&s.hs);
    sodium_memzero(&s.tx, sizeof(s.tx));
    sodium_memzero(&s.rx, sizeof(s.rx));
    pp_loop_free(s.loop);
    pp_sec_psk_wipe(&psk);
    _exit(s.exit_code);
}

/* ================================================================ */
/* The daemon                                                         */
/* ================================================================ */

struct child {
    pid_t pid;
    char peer[64];
    uint64_t started_ms;
};

static struct pp_loop *loop;
static struct pp_listener *lst;
static struct child *children;   /* conf.max_conns entries */
static unsigned nchildren;
static _Atomic uint32_t *authed_count; /* shared page: sessions past the handshake */
static uint32_t authed_seen;
static volatile sig_atomic_t sig_term, sig_usr1, sig_chld;
static bool stopping;
static uint64_t last_client_ms, stop_ms;

#define BEACON_MS 10000     /* -b: a beacon this often */
#define DISC_LOG_MS 1000    /* at most one debug line per second for dropped datagrams */

static struct {
    struct pp_disc_key key;     /* derived where the psk is made */
    struct pp_disc_node node;
    int fd;
    struct pp_watch *watch;
    uint16_t port;              /* ours, TCP = UDP */
    uint32_t workers;           /* announced; 0: autodetected by the agent */
    struct sockaddr_storage bcast;  /* -b at our port; ss_family 0 = no beacons */
    socklen_t bcast_len;
    uint64_t next_beacon, last_log;
    unsigned dropped;
} disc = { .fd = -1 };

static void disc_beacon(uint64_t now);
static void disc_stop(void);

static void on_signal(int sig)
{
    int e = errno;
    if (sig == SIGTERM || sig == SIGINT)
        sig_term = 1;
    else if (sig == SIGUSR1)
        sig_usr1 = 1;
    else if (sig == SIGCHLD)
        sig_chld = 1;
    if (loop)
        pp_loop_wake(loop);
    errno = e;
}

static unsigned pending_handshakes(uint64_t now)
{
    /* Sessions younger than the deadline that have not said they are
     * authenticated: the count in the shared page says how many did. */
    unsigned young = 0;
    for (unsigned i = 0; i < nchildren; i++)
        young += now - children[i].started_ms < HANDSHAKE_MS;
    uint32_t a = atomic_load(authed_count) - authed_seen;
    return young > a ? young - a : 0;
}

static void on_accept(void *ctx, int fd, const struct sockaddr_storage *peer)
{
    (void)ctx;
    char name[64];
    uint64_t now = pp_loop_now_ms(loop);

    peer_name(peer, name, sizeof(name));
    if (stopping) {
        close(fd);
        return;
    }
    if (nchildren >= conf.max_conns) {
        plog("refusing %s: %u sessions already (--max-conns)", name, nchildren);
        close(fd);
        return;
    }
    if (pending_handshakes(now) >= conf.max_pending) {
        plog("refusing %s: %u handshakes in progress (--max-pending)", name, conf.max_pending);
        close(fd);
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        plog("refusing %s: fork: %s", name, strerror(errno));
        close(fd);
        return;
    }
    if (pid == 0) {
        /* A session ends with its daemon (also a kill -9 of it): the
         * agent then hands its jobs back, as on SIGTERM.  Kept across
         * the exec of the agent. */
        pid_t daemon_pid = getppid();
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != daemon_pid)
            _exit(0);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGUSR1, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        disc.watch = NULL; /* freed with the loop's copy; the fd is ours */
        pp_loop_abandon(loop);
        loop = NULL;
        disc_stop();
        run_session(fd, name, authed_count);
    }
    close(fd);
    children[nchildren].pid = pid;
    snprintf(children[nchildren].peer, sizeof(children[nchildren].peer), "%s", name);
    children[nchildren].started_ms = now;
    nchildren++;
    last_client_ms = now;
    dlog("session %s: pid %d", name, (int)pid);
}

static void reap(void)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (unsigned i = 0; i < nchildren; i++) {
            if (children[i].pid != pid)
                continue;
            if (WIFSIGNALED(st))
                plog("session %s (pid %d) killed by signal %d (%s)", children[i].peer,
                     (int)pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
            else
                dlog("session %s (pid %d) ended, status %d", children[i].peer, (int)pid,
                     WEXITSTATUS(st));
            children[i] = children[--nchildren];
            break;
        }
    }
    last_client_ms = nchildren ? pp_loop_now_ms(loop) : last_client_ms;
}

static void begin_stop(const char *why)
{
    if (stopping)
        return;
    stopping = true;
    stop_ms = pp_loop_now_ms(loop);
    plog("%s: no more connections; ending %u sessions", why, nchildren);
    if (lst) {
        pp_listener_close(lst);
        lst = NULL;
    }
    disc_stop();
    for (unsigned i = 0; i < nchildren; i++)
        kill(children[i].pid, SIGTERM);
}

static void on_tick(void *ctx)
{
    (void)ctx;
    uint64_t now = pp_loop_now_ms(loop);
    if (conf.timeout_s && !stopping && nchildren == 0 &&
        now - last_client_ms >= (uint64_t)conf.timeout_s * 1000u)
        begin_stop("-t: no client for that long");
    if (stopping && nchildren && now - stop_ms > DRAIN_MS) {
        for (unsigned i = 0; i < nchildren; i++)
            kill(children[i].pid, SIGKILL);
    }
    disc_beacon(now);
}

/* ---------------------------------------------------------------- */
/* Discovery (-a): disc.h                                             */
/* ---------------------------------------------------------------- */

/* A datagram we do not answer: say so in debug mode, once a second at most. */
static void disc_drop(const char *why, int err)
{
    uint64_t now = pp_loop_now_ms(loop);
    disc.dropped++;
    if (!debug_on || now - disc.last_log < DISC_LOG_MS)
        return;
    disc.last_log = now;
    plog("discovery: %u datagram(s) ignored, the last: %s (%s)", disc.dropped, why,
         strerror(-err));
    disc.dropped = 0;
}

/* Answer each QUERY that verifies, once, to its source; ignore the rest. */
static void disc_readable(void *ctx)
{
    (void)ctx;
    uint8_t in[PP_DISC_MAX_LEN], out[PP_DISC_ANSWER_LEN];
    struct sockaddr_storage src;
    for (;;) {
        socklen_t slen = sizeof(src);
        ssize_t n = recvfrom(disc.fd, in, sizeof(in), MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&src, &slen);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* EAGAIN; or an ICMP error from a sendto: nothing to do */
        }
        if ((size_t)n > sizeof(in)) {
            disc_drop("too long", -EMSGSIZE);
            continue;
        }
        size_t len = (size_t)n;
        int t = pp_disc_type(in, len);
        if (t != PP_DISC_QUERY) {
            if (t < 0)
                disc_drop("not a query", t);
            continue; /* answers and beacons are for clients */
        }
        size_t olen = 0;
        int r = pp_disc_answer_build(&disc.key, &disc.node, in, len, pp_wall_ms(), disc.port,
                                     disc.workers, out, sizeof(out), &olen);
        if (r < 0) {
            disc_drop(r == -ETIME ? "query outside the clock window (check NTP)"
                      : "query refused", r);
            continue;
        }
        if (sendto(disc.fd, out, olen, MSG_DONTWAIT, (struct sockaddr *)&src, slen) < 0)
            disc_drop("cannot send the answer", -errno);
    }
}

static void disc_beacon(uint64_t now)
{
    uint8_t out[PP_DISC_BEACON_LEN];
    size_t olen = 0;
    if (disc.fd < 0 || !disc.bcast.ss_family || now < disc.next_beacon)
        return;
    disc.next_beacon = now + BEACON_MS;
    if (pp_disc_beacon_build(&disc.key, &disc.node, pp_wall_ms(), disc.port, disc.workers, out,
                             sizeof(out), &olen) == 0 &&
        sendto(disc.fd, out, olen, MSG_DONTWAIT, (struct sockaddr *)&disc.bcast,
               disc.bcast_len) < 0)
        disc_drop("cannot send a beacon", -errno);
}

/*
 * -a: a UDP socket on our TCP port's number, bound to -i's address, or to
 * the wildcard address of -b's family when -b is given (a socket bound to
 * one address does not receive broadcasts).  Returns 0, or -1 logged.
 */
static int disc_start(void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, zero = 0;
    disc.port = pp_listener_port(lst);
    disc.workers = conf.workers > 0 ? (uint32_t)conf.workers : 0;
    if (conf.broadcast[0]) {
        if (pp_net_addr(conf.broadcast, disc.port, &disc.bcast, &disc.bcast_len) < 0) {
            plog("-b %s: not a numeric address", conf.broadcast);
            return -1;
        }
        pp_net_addr(disc.bcast.ss_family == AF_INET ? "0.0.0.0" : "::", disc.port, &ss, &len);
    } else if (pp_net_addr(conf.interface, disc.port, &ss, &len) < 0) {
        plog("-a: -i %s is not a numeric address", conf.interface);
        return -1;
    }
    if (pp_disc_node_init(&disc.node) < 0) {
        plog("-a: cannot initialise discovery");
        return -1;
    }
    disc.fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (disc.fd < 0) {
        plog("-a: socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(disc.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(disc.fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(disc.fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    int r = bind(disc.fd, (struct sockaddr *)&ss, len) < 0 ? -errno : 0;
    if (r == 0)
        r = pp_loop_watch(loop, disc.fd, disc_readable, NULL, &disc.watch);
    if (r < 0) {
        plog("-a: cannot listen on UDP port %u: %s", disc.port, strerror(-r));
        close(disc.fd);
        disc.fd = -1;
        return -1;
    }
    dlog("discovery: answering on UDP port %u%s%s", disc.port,
         conf.broadcast[0] ? ", beacons to " : "", conf.broadcast);
    return 0;
}

/* Stop answering (on stop), or forget it all in a session process. */
static void disc_stop(void)
{
    if (disc.watch && loop)
        pp_watch_close(disc.watch);
    disc.watch = NULL;
    if (disc.fd >= 0)
        close(disc.fd);
    disc.fd = -1;
    pp_disc_key_wipe(&disc.key);
}

static int make_cache_dir(const char *dir)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct stat sb;
    if (lstat(dir, &sb) < 0)
        return -errno;
    if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid())
        return -EACCES;
    if ((sb.st_mode & 077) && chmod(dir, 0700) < 0)
        return -errno;
    return 0;
}

/* --slurm: the CPUs the job has on this node (the step runs with --whole). */
static int slurm_cpus(void)
{
    const char *v = getenv("SLURM_CPUS_ON_NODE");
    char *end;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || n < 1 || n > PP_SRVCONF_WORKERS_MAX)
        return PP_SRVCONF_AUTODETECT;
    return (int)n;
}

/* --slurm: the line the client's srun pipe waits for (engine/slurm.c):
 * this host by name, as the other nodes of the job reach it. */
static void slurm_announce(unsigned port)
{
    char host[256];
    const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID");
    if (gethostname(host, sizeof(host)) < 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    printf("ppserver: slurm node %s:%u step %s.%s\n", host, port, job ? job : "none",
           step ? step : "none");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char err[512];
    int r = pp_srvconf_parse(argc, argv, &conf, err, sizeof(err));
    if (conf.help) {
        fputs(pp_srvconf_usage(), stdout);
        return 0;
    }
    if (r < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    debug_on = conf.debug;
    if (conf.slurm && conf.workers == PP_SRVCONF_AUTODETECT)
        conf.workers = slurm_cpus();
    if (conf.workers == PP_SRVCONF_AUTODETECT)
        conf.workers = -1; /* the agent's pp_server detects them */
    if (pp_sec_psk_init(&psk, conf.secret, conf.secret_len) < 0 ||
        (conf.autodiscovery && pp_disc_key_init(&disc.key, &psk) < 0)) {
        plog("cannot initialise libsodium");
        return 1;
    }
    if (geteuid() == 0)
        plog("warning: running as root: whoever knows the secret runs code as root here; "
             "run ppserver as an unprivileged user");
    if (conf.secret_len < 16)
        plog("warning: the secret is short (%zu bytes): anyone who can connect can guess it "
             "offline; use e.g. 32 random bytes in base64", conf.secret_len);
    sodium_memzero(conf.secret, sizeof(conf.secret));
    if ((r = make_cache_dir(conf.cache_dir)) < 0) {
        plog("cache directory %s: %s", conf.cache_dir, strerror(-r));
        return 1;
    }
    children = calloc(conf.max_conns ? conf.max_conns : 1, sizeof(*children));
    authed_count = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!children || authed_count == MAP_FAILED) {
        plog("out of memory");
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((r = pp_loop_new(&loop)) < 0) {
        plog("event loop: %s", strerror(-r));
        return 1;
    }
    r = pp_loop_listen(loop, conf.interface, (uint16_t)conf.port, 128, on_accept, NULL, &lst);
    if (r < 0) {
        plog("cannot listen on %s:%d: %s", conf.interface, conf.port, strerror(-r));
        return 1;
    }
    if (conf.autodiscovery && disc_start() < 0)
        return 1;
    if (conf.pid_file[0]) {
        FILE *f = fopen(conf.pid_file, "we");
        if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
            plog("pid file %s: %s", conf.pid_file, strerror(errno));
            return 1;
        }
    }
    pp_loop_set_tick(loop, TICK_MS, on_tick, NULL);
    last_client_ms = pp_loop_now_ms(loop);
    fprintf(stderr, "ppserver: listening on %s:%u\n", conf.interface, pp_listener_port(lst));
    fflush(stderr);
    if (conf.slurm)
        slurm_announce(pp_listener_port(lst));
    dlog("%s event loop, %d workers per session, cache %s", pp_loop_backend(loop),
         conf.workers, conf.cache_dir);

    while (!stopping || nchildren) {
        if (sig_term) {
            sig_term = 0;
            begin_stop("signal");
        }
        if (sig_usr1) {
            sig_usr1 = 0;
            plog("%u sessions; each prints its statistics", nchildren);
            for (unsigned i = 0; i < nchildren; i++)
                kill(children[i].pid, SIGUSR1);
        }
        sig_chld = 0;
        reap();
        if (stopping && !nchildren)
            break;
        if (pp_loop_run(loop, TICK_MS) < 0 && errno != EINTR)
            break;
    }
    reap();
    disc_stop();
    struct pp_loop *l = loop;
    loop = NULL; /* the signal handler wakes it no more */
    pp_loop_free(l);
    if (conf.pid_file[0])
        unlink(conf.pid_file);
    pp_sec_psk_wipe(&psk);
    pp_srvconf_wipe(&conf);
    free(children);
    plog("stopped");
    return 0;
}
