/*
 * net.c - remote nodes on the client: the net thread.
 *
 * One thread per server that has nodes (pp_config.ppservers, pp_connect)
 * owns an event loop (net/loop.h: io_uring, or epoll) with one connection
 * per node.  Each node is a consumer of the submit ring, with a consumer
 * slot of its own after the local workers' (PP_NODE_SLOT0 + i): it takes
 * tokens and owns records exactly as a worker does (consumer.c), sends
 * each job as a JOB frame, writes the RESULT into the record and hands it
 * to the engine through its done ring, so callbacks, groups, pp_wait and
 * stats need nothing new.
 *
 * Local first.  A node takes a job only when no local worker waits for
 * work (or ncpus = 0).  Submitters kick this thread (pp__net_kick) only
 * when no local worker will take their job and this thread said it sleeps
 * (the flag and the ring are checked in Dekker order, as in wake.c).  Each
 * node keeps a window of jobs in flight (DEPTH_*: about 4 ms of its work), so
 * the round trip is hidden and a faster node simply asks for more often:
 * that is the load balancing.
 *
 * Failure.  A connection that drops, a node that closes it, or one silent
 * for node_timeout_ms (heartbeats every third of it, answered by the
 * node's loop thread however long its jobs run) is down: each record in
 * flight there is queued again in a new generation (so no late write for
 * the old one can apply; the connection is closed, so none is read
 * anyway) and runs elsewhere; a record whose nodes died node_retries
 * times fails with -ECHILD naming them.  A node that stops in order (BYE,
 * SIGTERM on ppserver) hands its jobs back without a retry counted.  Down
 * and refused nodes are retried with a doubling backoff.  With no local
 * worker and no node up for node_wait_ms, queued jobs fail with
 * -EHOSTUNREACH (-EACCES when every node refused the secret).
 *
 * Discovery.  A "*" or "*:port" entry makes the thread open two UDP
 * sockets on its loop (pp_loop_watch): an ephemeral one that sends
 * authenticated queries (net/disc.h) to pp_config.broadcast at port, at
 * 0, 250 ms, 1 s and then every 10 s, and gets their answers; and one
 * bound to port itself, where the nodes' beacons arrive (ppserver -a -b),
 * so a node that starts later joins within its first beacon.  Each answer
 * or beacon that passes its check names a node by the datagram's source
 * address and the payload's port; one not known yet is added as if listed
 * (add_node), within pp_disc_limit_allow, and the TCP handshake
 * authenticates it as any other.  Jobs wait for a node meanwhile,
 * node_wait_ms at most, as when every listed node is down.  A found node
 * that goes down is asked again at once (one query); down and unheard for
 * DISC_GONE_MS, it has left: PP_NODE_GONE, no more connection attempts,
 * its row and counts kept.  An answer or beacon from it later brings it
 * back.  Nodes listed by hand are never given up.
 *
 * Slurm.  "slurm" makes this thread start one ppserver per node of the
 * job as a step (slurm.c) before its loop runs, and end it when it stops;
 * "slurm-nodes[:port]" lists the job's nodes (SLURM_JOB_NODELIST).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "chan.h"
#include "conf.h"
#include "disc.h"
#include "loop.h"
#include "msg.h"
#include "secure.h"
#include "slurm.h"

/* Jobs in flight per node worker: enough to hide the round trip and to
 * batch frames into few records and system calls (trivial jobs: the
 * most), few enough that a node does not sit on jobs another worker could
 * start when the queue runs dry (long jobs: the fewest).  The window
 * follows the node's measured completion rate: about WINDOW_MS of its
 * work, between the two bounds. */
#define DEPTH_MIN 4
#define DEPTH_START 128
#define DEPTH_MAX 256
#define WINDOW_MS 4
#define NET_TICK_MS 100
#define CONNECT_MS 3000
#define SETUP_MS 30000           /* handshake, code shipping, agent start */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define INFLIGHT_BYTES (64u << 20) /* stop taking jobs beyond this queued */
#define DISC_EVERY_MS 10000      /* "*": queries at 0, 250 ms, 1 s, then this often */
#define DISC_RECHECK_MS 1000     /* a found node lost: one query at once, at most this often */
#define DISC_GONE_MS 3000        /* lost and not heard from this long: it left */

enum { PH_IDLE, PH_CONNECT, PH_HELLO, PH_INFO, PH_READY, PH_UP };

struct flight {
    uint64_t tok;                 /* 0 = free slot */
    uint64_t sent_ns;
    uint32_t next_free;
    bool map;                     /* a pp_map chunk: outputs go to map_out */
    bool coll;                    /* a collector's job: MESSAGE frames come */
    uint32_t nmsgs;               /* of which this many reached the message ring */
    void *map_out;
    uint64_t map_len, map_first;
};

struct node {
    struct pp_net *net;
    unsigned id;
    struct pp_cons k;
    char name[PP_NODE_NAME_MAX];
    char host[PP_NODE_NAME_MAX];
    uint16_t port;
    /* shown by pp_get_active_nodes (net->lock) */
    enum pp_node_state state;
    int last_error;
    char error[PP_ERRMSG_MAX];
    unsigned workers;
    /* Per job: counters written only by the net thread, read by any
     * (relaxed; a reader that saw a job done, by an acquire of its state,
     * sees the count raised before it was published). */
    _Atomic uint64_t jobs_done;
    _Atomic uint64_t time_ns;
    _Atomic uint64_t nfl;
    /* the connection (net thread only) */
    int phase;
    struct pp_conn *conn;
    struct pp_chan ch;
    bool ch_init;
    struct pp_sec_hs hs;
    unsigned window;
    uint64_t rate_done;           /* jobs_done at the last tick */
    double rate;                  /* jobs per ms, smoothed */
    struct flight *fl;
    uint32_t fl_cap, fl_free;
    uint64_t declared[PP_MAX_MODULES / 64];
    uint64_t last_rx, hb_sent, next_try, backoff;
    bool ever_up;
    bool refused;                 /* the last attempt failed authentication */
    /* discovery (net thread only) */
    bool found;                   /* added because discovery named it */
    bool gone;                    /* PP_NODE_GONE: not retried until heard again */
    uint64_t heard_ms, down_ms;   /* loop clock: last answer or beacon; last down */
    /* messages queued for the engine since on_data last woke it */
    bool msgs_queued;
    /* a chunked RESULT (or, rx_msg, MESSAGE) being received */
    bool rx_active, rx_msg;
    uint32_t rx_fl;
    uint64_t rx_total, rx_have, rx_blk;
    unsigned char *rx_dst;
};

/* "*" in ppservers: discovery (net/disc.h) on a UDP socket of the net
 * thread's loop.  Allocated by pp__net_init (the states are ~60 KiB). */
struct disc {
    struct pp_disc_key key;
    struct pp_disc_client c;
    struct pp_disc_limit lim;
    struct sockaddr_storage dst;  /* broadcast:port */
    socklen_t dst_len;
    /* Made by the net thread; -1 before and after.  fd: an ephemeral
     * port that sends the queries and gets their answers.  bfd: the
     * discovery port itself, where beacons arrive (-1 if it cannot be
     * bound: queries alone then find nodes). */
    int fd, bfd;
    struct pp_watch *watch, *bwatch;
    uint64_t start_ms;            /* loop clock of the first query */
    uint64_t last_ms;             /* and of the latest */
    unsigned sent;                /* queries sent on the schedule */
};

struct pp_net {
    struct pp_server *s;
    struct disc *disc;            /* NULL: no "*" entry */
    pthread_t thread;
    _Atomic bool started;         /* the thread runs (set once) */
    struct pp_loop *loop;
    pthread_mutex_t lock;
    struct node *nodes[PP_MAX_NODES];
    unsigned nnodes;              /* under lock; the thread picks new ones up */
    unsigned nseen;               /* nodes the thread has set up */
    struct pp_sec_psk psk;
    _Atomic uint32_t sleeping;
    _Atomic uint32_t stop;
    _Atomic int ready;            /* 1: the thread made its loop; < 0: failed */
    _Atomic uint32_t kicking;     /* threads inside pp__net_kick */
    struct pp_host_info self;
    /* module hashes, filled on first use (net thread) */
    bool mod_hashed[PP_MAX_MODULES];
    uint8_t mod_hash[PP_MAX_MODULES][PP_HASH_LEN];
    uint64_t mod_size[PP_MAX_MODULES];
    int mod_err[PP_MAX_MODULES];
    uint8_t exe_hash[PP_HASH_LEN];  /* this program, for SESSION */
    uint64_t exe_size;
    int exe_err;
    uint64_t no_capacity_since;
    struct pp_cons drain;         /* check_capacity's consumer when no node exists */
    bool drain_ready;
    unsigned retries, timeout_ms, wait_ms;
    /* "slurm": the step (net thread), and the secret it is given until it starts */
    struct pp_slurm *slurm;
    char *slurm_secret;
    size_t slurm_secret_len;
    char errmsg[PP_ERRMSG_MAX];   /* why the thread did not start (before ready < 0) */
};

static void node_down(struct node *n, int err, const char *why, bool crashed);
static void disc_recheck(struct pp_net *net);
static bool disc_gone(struct node *n, uint64_t now);
static int slurm_add(void *ctx, const char *hp);
static void dispatch(struct pp_net *net);
static void disc_tick(struct pp_net *net, uint64_t now);

/* ---------------------------------------------------------------- */
/* Names, secrets                                                     */
/* ---------------------------------------------------------------- */

static int parse_node(const char *hp, char *host, size_t hn, uint16_t *port)
{
    const char *colon = strrchr(hp, ':');
    size_t len = colon ? (size_t)(colon - hp) : strlen(hp);
    if (len == 0 || len >= hn || strlen(hp) >= PP_NODE_NAME_MAX - 7)
        return -EINVAL;
    memcpy(host, hp, len);
    host[len] = '\0';
    if (!colon) {
        *port = PP_DEFAULT_PORT;
        return 0;
    }
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p == 0 || p > 65535)
        return -EINVAL;
    *port = (uint16_t)p;
    return 0;
}

/* The configured secret's bytes into buf (cap > PP_SRVCONF_SECRET_MAX);
 * with none configured, a fresh random one if make is set ("slurm": the
 * step gets it), else -EINVAL: no default secret, ever. */
static int secret_text(const struct pp_config *cfg, bool make, char *buf, size_t cap,
                       size_t *len, char *err, size_t errlen)
{
    if (cfg->secret && cfg->secret[0]) {
        *len = strlen(cfg->secret);
        if (*len >= cap)
            return -EINVAL;
        memcpy(buf, cfg->secret, *len);
        return 0;
    }
    if (cfg->secret_file)
        return pp_read_secret_file(cfg->secret_file, buf, cap, len, err, errlen);
    if (!make)
        return -EINVAL;
    unsigned char raw[32];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(buf, cap, raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    *len = 2 * sizeof(raw);
    return 0;
}

/* ---------------------------------------------------------------- */
/* Node state seen by users                                           */
/* ---------------------------------------------------------------- */

static void set_state(struct node *n, enum pp_node_state st, int err, const char *msg)
{
    pthread_mutex_lock(&n->net->lock);
    n->state = st;
    if (err) {
        n->last_error = err;
        snprintf(n->error, sizeof(n->error), "%s", msg ? msg : strerror(-err));
    }
    pthread_mutex_unlock(&n->net->lock);
}

/* ---------------------------------------------------------------- */
/* Finishing records                                                  */
/* ---------------------------------------------------------------- */

static struct pp_rec *flight_rec(struct node *n, uint32_t i)
{
    return pp__rec_of(n->k.sh, pp_tok_idx(n->fl[i].tok));
}

static void flight_put(struct node *n, uint32_t i)
{
    n->fl[i].tok = 0;
    n->fl[i].next_free = n->fl_free;
    n->fl_free = i;
    pp_store_relaxed(&n->nfl, pp_load_relaxed(&n->nfl) - 1);
}

/* Writes status and message, then the record is published and handed on
 * exactly as a worker does it.  The result (if any) is already placed. */
static void finish(struct node *n, struct pp_rec *r, uint64_t tok, int status,
                   const char *err, size_t el)
{
    r->status = status;
    if (el) {
        int k = snprintf(r->err, PP_ERRMSG_MAX, "node %s: %.*s", n->name, (int)el, err);
        r->err_len = (uint32_t)(k < 0 ? 0 : k >= (int)PP_ERRMSG_MAX ? PP_ERRMSG_MAX - 1 : k);
    } else {
        r->err_len = 0;
    }
    pp__cons_prepare(&n->k, r, tok);
    pp__cons_complete(&n->k, r, tok);
}

/* Fails a record consumer k owns with status and msg (as written, no
 * node prefix: the message names what it is about), no result. */
static void fail_record(struct pp_cons *k, struct pp_rec *r, uint64_t tok, int status,
                        const char *msg)
{
    size_t ml = strnlen(msg, PP_ERRMSG_MAX - 1);
    r->res_len = 0;
    r->res_where = PP_RES_TINY;
    r->status = status;
    memcpy(r->err, msg, ml);
    r->err[ml] = '\0';
    r->err_len = (uint32_t)ml;
    pp__cons_prepare(k, r, tok);
    pp__cons_complete(k, r, tok);
}

/* Places len result bytes: the record's own lines or a page-heap block
 * of this node's slot.  Returns where to write them, or NULL. */
static unsigned char *result_space(struct node *n, struct pp_rec *r, size_t len,
                                   uint64_t *ret_blk)
{
    *ret_blk = 0;
    r->res_len = (uint32_t)len;
    if (len <= PP_TINY) {
        r->res_where = PP_RES_TINY;
        return r->tiny_res;
    }
    if (len <= PP_INLINE_MAX) {
        r->res_where = PP_RES_INLINE;
        return r->inl_res;
    }
    uint64_t off = pp__cons_block_get(&n->k, len);
    if (!off)
        return NULL;
    *ret_blk = off;
    return pp_seg_ptr(&n->k.seg, off);
}

static void result_settle(struct node *n, struct pp_rec *r, uint64_t blk)
{
    if (blk) {
        r->res_off = blk;
        r->res_slot = n->k.slot;
        r->res_where = PP_RES_BLOCK;
        pp__cons_block_release(&n->k, blk);
    }
}

/* ---------------------------------------------------------------- */
/* Sending jobs                                                       */
/* ---------------------------------------------------------------- */

static int hash_file(const char *path, uint8_t h[PP_HASH_LEN], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int r = fd < 0 ? -errno : pp_hash_fd(fd, h, size);
    if (fd >= 0)
        close(fd);
    return r;
}

/* The file of module m: the main program is read through /proc. */
static const char *module_path(struct pp_net *net, uint32_t m)
{
    const struct pp_module *mod = &net->s->sh->modules[m];
    return mod->is_main ? "/proc/self/exe" : mod->path;
}

static int module_hash(struct pp_net *net, uint32_t m)
{
    if (net->mod_hashed[m])
        return net->mod_err[m];
    struct pp_module *mod = &net->s->sh->modules[m];
    int r;
    if (mod->is_main) {
        memcpy(net->mod_hash[m], net->exe_hash, PP_HASH_LEN);
        net->mod_size[m] = net->exe_size;
        r = net->exe_err;
    } else {
        r = hash_file(mod->path, net->mod_hash[m], &net->mod_size[m]);
    }
    net->mod_hashed[m] = true;
    net->mod_err[m] = r;
    return r;
}

static int declare_module(struct node *n, uint32_t m)
{
    struct pp_net *net = n->net;
    int r = module_hash(net, m);
    if (r < 0)
        return r;
    struct pp_module *mod = &net->s->sh->modules[m];
    uint8_t buf[PP_HASH_LEN + 8 + 4 + 2 + 256];
    struct pp_wr w = pp_wr_of(buf, sizeof(buf));
    pp_wr_bytes(&w, net->mod_hash[m], PP_HASH_LEN);
    pp_wr_u64(&w, net->mod_size[m]);
    pp_wr_u32(&w, mod->is_main);
    char shortp[256];
    snprintf(shortp, sizeof(shortp), "%s", mod->is_main ? "(main program)" : mod->path);
    pp_wr_str(&w, shortp);
    n->declared[m / 64] |= 1ull << (m % 64);
    return pp_chan_send(&n->ch, PP_WIRE_MODULE, 0, m, buf, (size_t)(w.p - buf));
}

/* Sends the file of module m (or the main program) in answer to a
 * CODE_REQUEST: one CODE frame, chunked beyond max_body. */
static int send_file(struct node *n, uint64_t reqid, const char *path, uint64_t size,
                     const uint8_t *want)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = 0;
    uint8_t *hdr = pp_chan_send_begin(&n->ch, PP_WIRE_CODE, PP_WIRE_F_CHUNKED, reqid,
                                      8 + PP_HASH_LEN);
    if (!hdr) {
        close(fd);
        return n->ch.err;
    }
    pp_wire_put_u64(hdr, size);
    memcpy(hdr + 8, want, PP_HASH_LEN);
    for (uint64_t off = 0; off < size && r == 0;) {
        size_t want_n = size - off < PP_WIRE_MAX_BODY ? (size_t)(size - off) : PP_WIRE_MAX_BODY;
        uint8_t *p = pp_chan_send_begin(&n->ch, PP_WIRE_CHUNK, 0, reqid, want_n);
        if (!p) {
            r = n->ch.err;
            break;
        }
        ssize_t got = pread(fd, p, want_n, (off_t)off);
        if (got != (ssize_t)want_n)
            r = -EIO; /* the file changed under us: the node will refuse it */
        off += want_n;
    }
    close(fd);
    return r;
}

static int send_code(struct node *n, uint64_t reqid, uint32_t m, const uint8_t *want)
{
    struct pp_net *net = n->net;
    if (m >= pp_load_acquire(&net->s->sh->nmodules) || module_hash(net, m) < 0 ||
        memcmp(want, net->mod_hash[m], PP_HASH_LEN) != 0)
        return -EPROTO;
    return send_file(n, reqid, module_path(net, m), net->mod_size[m], want);
}

static const void *arg_of(struct pp_net *net, struct pp_rec *r)
{
    if (r->flags & PP_RF_ARG_EXT)
        return pp_seg_ptr(&net->s->seg, r->arg_off);
    return r->arg_len <= PP_TINY ? (const void *)r->tiny_arg : (const void *)r->inl_arg;
}

/* The argument as two pieces (a prefix, then the bytes), in one JOB frame
 * or, beyond max_body, a chunked one. */
static int send_job(struct node *n, uint32_t fi, struct pp_rec *r)
{
    struct pp_shared *sh = n->k.sh;
    if (r->fn_id >= pp_load_acquire(&sh->nfns))
        return -EINVAL;
    const struct pp_fn_entry *fe = &sh->fns[r->fn_id];
    uint32_t m = fe->module;
    int e;
    if (!(n->declared[m / 64] & (1ull << (m % 64))) && (e = declare_module(n, m)) < 0)
        return e;
    uint8_t pre[PP_JOB_MAP_HDR];
    size_t pl = 0;
    const void *arg;
    size_t len;
    uint32_t flags = 0;
    if (r->flags & PP_RF_MAP) {
        struct pp_map_view v;
        pp__map_view(n->net->s, r, &v);
        struct pp_wr pw = pp_wr_of(pre, sizeof(pre));
        pp_wr_u64(&pw, v.in_size);
        pp_wr_u64(&pw, v.out_size);
        pp_wr_u64(&pw, v.count);
        pl = PP_JOB_MAP_HDR;
        arg = v.in;
        len = (size_t)(v.in_size * v.count);
        flags = PP_JOB_F_MAP;
        n->fl[fi].map = true;
        n->fl[fi].map_out = v.out;
        n->fl[fi].map_len = v.out_size * v.count;
        n->fl[fi].map_first = v.first;
    } else {
        arg = arg_of(n->net, r);
        len = r->arg_len;
        n->fl[fi].map = false;
        if (n->fl[fi].coll)
            flags = PP_JOB_F_COLLECT;
    }
    size_t total = pl + len;
    if (PP_JOB_HDR + total <= PP_WIRE_MAX_BODY) {
        uint8_t *p = pp_chan_send_begin(&n->ch, PP_WIRE_JOB, 0, fi, PP_JOB_HDR + total);
        if (!p)
            return n->ch.err;
        struct pp_wr w = pp_wr_of(p, PP_JOB_HDR + total);
        pp_wr_u32(&w, m);
        pp_wr_u32(&w, flags);
        pp_wr_u64(&w, fe->offset);
        pp_wr_bytes(&w, pre, pl);
        pp_wr_bytes(&w, arg, len);
        return 0;
    }
    uint8_t *p = pp_chan_send_begin(&n->ch, PP_WIRE_JOB, PP_WIRE_F_CHUNKED, fi, 8 + PP_JOB_HDR);
    if (!p)
        return n->ch.err;
    struct pp_wr w = pp_wr_of(p, 8 + PP_JOB_HDR);
    pp_wr_u64(&w, total);
    pp_wr_u32(&w, m);
    pp_wr_u32(&w, flags);
    pp_wr_u64(&w, fe->offset);
    for (size_t off = 0; off < total; off += PP_WIRE_MAX_BODY) {
        size_t k = total - off < PP_WIRE_MAX_BODY ? total - off : PP_WIRE_MAX_BODY;
        uint8_t *c = pp_chan_send_begin(&n->ch, PP_WIRE_CHUNK, 0, fi, k);
        if (!c)
            return n->ch.err;
        /* bytes [off, off + k) of prefix | argument */
        size_t from_pre = off < pl ? (pl - off < k ? pl - off : k) : 0;
        memcpy(c, pre + off, from_pre);
        memcpy(c + from_pre, (const char *)arg + (off + from_pre - pl), k - from_pre);
    }
    return 0;
}

static bool flight_room(struct node *n)
{
    if (n->fl_free != UINT32_MAX)
        return true;
    uint32_t cap = n->fl_cap ? n->fl_cap * 2 : 64;
    struct flight *f = realloc(n->fl, cap * sizeof(*f));
    if (!f)
        return false;
    for (uint32_t i = n->fl_cap; i < cap; i++) {
        f[i].tok = 0;
        f[i].next_free = i + 1 < cap ? i + 1 : n->fl_free;
    }
    n->fl_free = n->fl_cap;
    n->fl = f;
    n->fl_cap = cap;
    return true;
}

/* Puts a record this node owns back on the ring, in a new generation. */
static void requeue(struct node *n, struct pp_rec *r, uint64_t tok)
{
    struct pp_server *s = n->net->s;
    uint64_t nt;
    if (!pp__rec_requeue(r, tok, n->k.slot, &nt))
        return;
    struct pp_task *t = pp__task_of(s, pp_tok_idx(nt));
    t->tok = nt;
    pp__enqueue(s, t, -1);
}

static bool local_first_allows(struct pp_net *net)
{
    struct pp_server *s = net->s;
    return pp_load_relaxed(&s->target) == 0 || pp__idle_workers(s->sh) == 0;
}

static void dispatch_node(struct node *n)
{
    struct pp_net *net = n->net;
    while (pp_load_relaxed(&n->nfl) < n->window && pp_chan_pending(&n->ch) < INFLIGHT_BYTES &&
           pp_ring_count(n->k.ring) && local_first_allows(net) && flight_room(n)) {
        uint64_t tok;
        struct pp_rec *r = pp__cons_take(&n->k, &tok);
        if (!r)
            break;
        /* Many records in flight: the claim is for a post-mortem of a
         * dead process, which a node (a thread of this host) never has. */
        pp_ring_claim_done(&n->k.c->claim);
        uint32_t fi = n->fl_free;
        n->fl_free = n->fl[fi].next_free;
        n->fl[fi].tok = tok;
        n->fl[fi].sent_ns = pp_now_ns();
        n->fl[fi].coll = r->flags & PP_RF_COLLECT;
        n->fl[fi].nmsgs = 0;
        pp_store_relaxed(&n->nfl, pp_load_relaxed(&n->nfl) + 1);
        int e = send_job(n, fi, r);
        if (e < 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "cannot send the job: %s", strerror(-e));
            node_down(n, e, msg, false);
            return;
        }
    }
}

static void dispatch(struct pp_net *net)
{
    for (unsigned i = 0; i < net->nseen; i++) {
        struct node *n = net->nodes[i];
        if (n->phase == PH_UP)
            dispatch_node(n);
    }
}

/* ---------------------------------------------------------------- */
/* Receiving results                                                  */
/* ---------------------------------------------------------------- */

/* Counted before the record is published, so that whoever sees the job
 * done also sees it in the node's count. */
static void account(struct node *n, uint32_t fi)
{
    uint64_t dt = pp_now_ns() - n->fl[fi].sent_ns;
    pp_store_relaxed(&n->jobs_done, pp_load_relaxed(&n->jobs_done) + 1);
    pp_store_relaxed(&n->time_ns, pp_load_relaxed(&n->time_ns) + dt);
}

static int on_result(struct node *n, const struct pp_wire_frame *f)
{
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    bool chunked = f->hdr.flags & PP_WIRE_F_CHUNKED;
    bool none = f->hdr.flags & PP_WIRE_F_NONE;
    uint64_t total = chunked ? pp_rd_u64(&rd) : 0;
    int32_t status = (int32_t)pp_rd_u32(&rd);
    uint32_t el = pp_rd_u32(&rd);
    pp_rd_u64(&rd); /* run_ns */
    const uint8_t *err = pp_rd_take(&rd, el);
    uint64_t fi = f->hdr.reqid;
    if (rd.err || fi >= n->fl_cap || !n->fl[fi].tok || n->rx_active ||
        (chunked && (pp_rd_left(&rd) || total > PP_MAX_PAYLOAD)) ||
        (none && (chunked || pp_rd_left(&rd) || !n->fl[fi].coll)))
        return -EPROTO;
    uint64_t tok = n->fl[fi].tok;
    struct pp_rec *r = flight_rec(n, (uint32_t)fi);
    if (n->fl[fi].coll) /* every MESSAGE came before: its end waits for them */
        r->nmsgs = n->fl[fi].nmsgs;
    size_t len = chunked ? (size_t)total : pp_rd_left(&rd);
    uint64_t blk = 0;
    unsigned char *dst;
    if (n->fl[fi].map) {
        /* The outputs go where pp_map reads them; the chunk's own result
         * is its map result (map.c).  A chunk that failed as a whole
         * (status < 0, no bytes) fails its first item. */
        if (len && len != n->fl[fi].map_len)
            return -EPROTO;
        dst = n->fl[fi].map_out;
    } else if (len) {
        dst = result_space(n, r, len, &blk);
    } else {
        r->res_len = 0;
        r->res_where = PP_RES_TINY;
        dst = r->tiny_res;
    }
    if (!dst) {
        /* No room for it here: the job ran, but its result is lost. */
        r->res_len = 0;
        r->res_where = PP_RES_TINY;
        status = -ENOMEM;
        err = (const uint8_t *)"no shared memory for the result";
        el = 31;
        len = 0;
    }
    if (chunked && dst && len) {
        /* The rest comes in CHUNK frames; status and message wait. */
        n->rx_active = true;
        n->rx_fl = (uint32_t)fi;
        n->rx_total = len;
        n->rx_have = 0;
        n->rx_blk = blk;
        n->rx_dst = dst;
        r->status = status;
        size_t k = el < PP_ERRMSG_MAX - 1 ? el : PP_ERRMSG_MAX - 1;
        memcpy(r->err, err, k);
        r->err_len = (uint32_t)k;
        return 0;
    }
    if (len)
        memcpy(dst, rd.p, len);
    if (n->fl[fi].map) {
        pp__map_settle(r, status, n->fl[fi].map_first);
        status = 0; /* item failures travel in the map result */
    }
    if (none)
        r->res_where = PP_RES_NONE; /* its collector shows no result */
    result_settle(n, r, blk);
    account(n, (uint32_t)fi);
    finish(n, r, tok, status, (const char *)err, el);
    flight_put(n, (uint32_t)fi);
    return 0;
}

/* A collector job's message goes to the engine through this node's
 * message ring, as a worker's pp_job_send does (consumer.h): small ones
 * in the ring, larger ones in a page-heap block of this node's slot.  A
 * block that cannot be had is passed on as an empty one, which the
 * engine counts as lost (nmsgs still adds up: its end is not held back). */
static void msg_block(struct node *n, uint32_t fi, uint64_t blk, uint64_t len)
{
    struct pp_msg_block ref = { blk, blk ? len : 0 };
    pp__cons_msg_queue(&n->k, PP_MSG_BLOCK, n->fl[fi].tok, &ref, sizeof(ref));
    if (blk)
        pp__cons_block_release(&n->k, blk); /* the message names it now */
    n->fl[fi].nmsgs++;
    n->msgs_queued = true;
}

_Static_assert(PP_RUN_MSG_MAX <= PP_INLINE_MAX, "a run's messages go in the message ring");

/* A MESSAGE RUN (net/msg.h): checked whole first, so that a bad one
 * (which closes the connection) delivers none of its messages. */
static int on_message_run(struct node *n, uint32_t fi, const struct pp_wire_frame *f)
{
    if ((f->hdr.flags & PP_WIRE_F_CHUNKED) || f->hdr.len == 0)
        return -EPROTO;
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    while (pp_rd_left(&rd) && !rd.err) {
        uint32_t len = pp_rd_u32(&rd);
        if (len > PP_RUN_MSG_MAX)
            return -EPROTO;
        pp_rd_take(&rd, len);
    }
    if (rd.err)
        return -EPROTO;
    rd = pp_rd_of(f->body, f->hdr.len);
    while (pp_rd_left(&rd)) {
        uint32_t len = pp_rd_u32(&rd);
        const uint8_t *p = pp_rd_take(&rd, len);
        pp__cons_msg_queue(&n->k, PP_MSG_DATA, n->fl[fi].tok, p, len);
        n->fl[fi].nmsgs++;
    }
    n->msgs_queued = true;
    return 0;
}

static int on_message(struct node *n, const struct pp_wire_frame *f)
{
    uint64_t fi = f->hdr.reqid;
    bool chunked = f->hdr.flags & PP_WIRE_F_CHUNKED;
    if (fi >= n->fl_cap || !n->fl[fi].tok || !n->fl[fi].coll || n->rx_active)
        return -EPROTO;
    if (f->hdr.flags & PP_WIRE_F_RUN)
        return on_message_run(n, (uint32_t)fi, f);
    if (!chunked && f->hdr.len <= PP_INLINE_MAX) {
        pp__cons_msg_queue(&n->k, PP_MSG_DATA, n->fl[fi].tok, f->body, f->hdr.len);
        n->fl[fi].nmsgs++;
        n->msgs_queued = true;
        return 0;
    }
    struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
    uint64_t len = chunked ? pp_rd_u64(&rd) : f->hdr.len;
    if (chunked && (rd.err || pp_rd_left(&rd) || len <= PP_WIRE_MAX_BODY ||
                    len > PP_MAX_PAYLOAD))
        return -EPROTO;
    uint64_t blk = pp__cons_block_get(&n->k, (size_t)len);
    unsigned char *dst = blk ? pp_seg_ptr(&n->k.seg, blk) : NULL;
    if (!chunked) {
        if (dst)
            memcpy(dst, f->body, f->hdr.len);
        msg_block(n, (uint32_t)fi, blk, len);
        return 0;
    }
    n->rx_active = n->rx_msg = true; /* the bytes follow in CHUNKs */
    n->rx_fl = (uint32_t)fi;
    n->rx_total = len;
    n->rx_have = 0;
    n->rx_blk = blk;
    n->rx_dst = dst; /* NULL: read and dropped */
    return 0;
}

static int on_chunk(struct node *n, const struct pp_wire_frame *f)
{
    if (!n->rx_active || f->hdr.reqid != n->rx_fl || f->hdr.len > n->rx_total - n->rx_have)
        return -EPROTO;
    if (n->rx_dst)
        memcpy(n->rx_dst + n->rx_have, f->body, f->hdr.len);
    n->rx_have += f->hdr.len;
    if (n->rx_have < n->rx_total)
        return 0;
    n->rx_active = false;
    if (n->rx_msg) {
        n->rx_msg = false;
        msg_block(n, n->rx_fl, n->rx_blk, n->rx_total);
        n->rx_blk = 0;
        return 0;
    }
    uint32_t fi = n->rx_fl;
    struct pp_rec *r = flight_rec(n, fi);
    char err[PP_ERRMSG_MAX];
    size_t el = r->err_len;
    memcpy(err, r->err, el);
    if (n->fl[fi].map) {
        pp__map_settle(r, r->status, n->fl[fi].map_first);
        r->status = 0;
    }
    result_settle(n, r, n->rx_blk);
    n->rx_blk = 0;
    account(n, fi);
    finish(n, r, n->fl[fi].tok, r->status, err, el);
    flight_put(n, fi);
    return 0;
}

/* ---------------------------------------------------------------- */
/* The connection                                                     */
/* ---------------------------------------------------------------- */

static int send_session(struct node *n)
{
    struct pp_net *net = n->net;
    if (net->exe_err < 0)
        return net->exe_err;
    uint8_t buf[512];
    struct pp_wr w = pp_wr_of(buf, sizeof(buf));
    pp_wr_u32(&w, PP_WIRE_MAX_BODY);
    pp_wr_bytes(&w, net->exe_hash, PP_HASH_LEN);
    pp_wr_u64(&w, net->exe_size);
    pp_wr_str(&w, net->self.machine);
    pp_wr_str(&w, net->self.libc);
    char exe[256] = "?";
    ssize_t k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[k > 0 ? k : 1] = '\0';
    pp_wr_str(&w, exe);
    return pp_chan_send(&n->ch, PP_WIRE_SESSION, 0, 0, buf, (size_t)(w.p - buf));
}

static int on_frame(void *ctx, const struct pp_wire_frame *f)
{
    struct node *n = ctx;
    struct pp_net *net = n->net;
    int r;

    if (f->hdr.type == PP_WIRE_ERROR) {
        char msg[PP_ERRMSG_MAX];
        int code = f->hdr.len >= 4 ? (int)pp_wire_get_u32(f->body) : -EPROTO;
        snprintf(msg, sizeof(msg), "%.*s", (int)(f->hdr.len - 4), (const char *)f->body + 4);
        node_down(n, code < 0 ? code : -EPROTO, msg, false);
        return -ECONNABORTED;
    }
    switch (n->phase) {
    case PH_HELLO: {
        uint8_t m3[PP_SEC_M3_LEN];
        struct pp_sec_dir tx, rx;
        if (f->hdr.type != PP_WIRE_HELLO_ACK)
            return -EPROTO;
        r = pp_sec_client_finish(&n->hs, f->body, f->hdr.len, m3);
        if (r == -EACCES) {
            pp_chan_send_error(&n->ch, 0, -EACCES, "authentication failed: wrong secret");
            node_down(n, -EACCES, "authentication failed: the node does not know our secret",
                      false);
            return -EACCES;
        }
        if (r < 0)
            return r;
        if ((r = pp_chan_send(&n->ch, PP_WIRE_AUTH, 0, 0, m3, sizeof(m3))) < 0)
            return r;
        pp_sec_hs_split(&n->hs, &tx, &rx);
        r = pp_chan_seal_rx(&n->ch, &rx);
        if (r == 0)
            r = pp_chan_seal_tx(&n->ch, &tx);
        sodium_memzero(&tx, sizeof(tx));
        sodium_memzero(&rx, sizeof(rx));
        n->phase = PH_INFO;
        return r;
    }
    case PH_INFO: {
        struct pp_host_info node;
        char why[128], msg[PP_ERRMSG_MAX];
        if (f->hdr.type != PP_WIRE_INFO)
            return -EPROTO;
        struct pp_rd rd = pp_rd_of(f->body, f->hdr.len);
        pp_rd_u32(&rd);
        pp_rd_str(&rd, node.machine, sizeof(node.machine));
        pp_rd_str(&rd, node.libc, sizeof(node.libc));
        if (rd.err)
            return -EPROTO;
        if (pp_host_info_compatible(&net->self, &node, why, sizeof(why)) < 0) {
            /* Never send code where it cannot run. */
            snprintf(msg, sizeof(msg), "incompatible node: %s", why);
            pp_chan_send(&n->ch, PP_WIRE_BYE, 0, 0, NULL, 0);
            node_down(n, -ENOEXEC, msg, false);
            return -ENOEXEC;
        }
        n->phase = PH_READY;
        return send_session(n);
    }
    case PH_READY:
        if (f->hdr.type == PP_WIRE_CODE_REQUEST && f->hdr.len == PP_HASH_LEN) {
            if (memcmp(f->body, net->exe_hash, PP_HASH_LEN) != 0)
                return -EPROTO;
            return send_file(n, 0, "/proc/self/exe", net->exe_size, net->exe_hash);
        }
        if (f->hdr.type != PP_WIRE_READY || f->hdr.len < 4)
            return -EPROTO;
        unsigned workers = pp_wire_get_u32(f->body);
        n->window = (workers ? workers : 1) * DEPTH_START;
        n->rate = 0;
        n->rate_done = pp_load_relaxed(&n->jobs_done);
        memset(n->declared, 0, sizeof(n->declared));
        n->phase = PH_UP;
        n->backoff = 0;
        n->ever_up = true;
        pthread_mutex_lock(&net->lock); /* pp_get_active_nodes reads these */
        n->workers = workers;
        n->state = PP_NODE_UP;
        n->down_ms = 0;
        n->last_error = 0;
        n->error[0] = '\0';
        pthread_mutex_unlock(&net->lock);
        return 0;
    case PH_UP:
        switch (f->hdr.type) {
        case PP_WIRE_RESULT:
            return on_result(n, f);
        case PP_WIRE_MESSAGE:
            return on_message(n, f);
        case PP_WIRE_CHUNK:
            return on_chunk(n, f);
        case PP_WIRE_HEARTBEAT:
            return 0;
        case PP_WIRE_CODE_REQUEST:
            if (f->hdr.len != PP_HASH_LEN || f->hdr.reqid >= PP_MAX_MODULES)
                return -EPROTO;
            return send_code(n, f->hdr.reqid, (uint32_t)f->hdr.reqid, f->body);
        case PP_WIRE_BYE:
            node_down(n, -ESHUTDOWN, "the node is stopping", false);
            return -ECONNABORTED;
        default:
            return -EPROTO;
        }
    default:
        return -EPROTO;
    }
}

static int on_data(void *ctx, const uint8_t *data, size_t len)
{
    struct node *n = ctx;
    n->last_rx = pp_loop_now_ms(n->net->loop);
    int r = pp_chan_data(&n->ch, data, len);
    if (n->msgs_queued) { /* one wake-up for the frames of this read */
        n->msgs_queued = false;
        pp__cons_msg_wake(&n->k);
    }
    if (r < 0 && n->conn) {
        const char *why = pp_chan_error(&n->ch);
        char msg[PP_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "bad data from the node: %s", why ? why : strerror(-r));
        node_down(n, -EPROTO, msg, true);
    }
    return 0; /* node_down closed it, if it had to */
}

static void on_connect(void *ctx, int err)
{
    struct node *n = ctx;
    uint8_t m1[PP_SEC_M1_LEN];
    char msg[PP_ERRMSG_MAX];

    if (err < 0) {
        snprintf(msg, sizeof(msg), "cannot connect: %s", strerror(-err));
        node_down(n, err == -ETIMEDOUT || err == -ECONNREFUSED ? -EHOSTUNREACH : err, msg, false);
        return;
    }
    n->last_rx = pp_loop_now_ms(n->net->loop);
    memset(&n->hs, 0, sizeof(n->hs));
    if (pp_sec_client_start(&n->hs, &n->net->psk, m1) < 0 ||
        pp_chan_send(&n->ch, PP_WIRE_HELLO, 0, 0, m1, sizeof(m1)) < 0) {
        node_down(n, -EPROTO, "cannot start the handshake", false);
        return;
    }
    n->phase = PH_HELLO;
}

static void on_close(void *ctx, int err)
{
    struct node *n = ctx;
    if (!n->conn)
        return; /* node_down closed it */
    char msg[PP_ERRMSG_MAX];
    if (n->phase == PH_HELLO)
        snprintf(msg, sizeof(msg), "the node closed the connection during the handshake");
    else
        snprintf(msg, sizeof(msg), "connection lost%s%s", err ? ": " : "",
                 err ? strerror(-err) : "");
    n->conn = NULL; /* the loop frees it */
    node_down(n, n->phase == PH_HELLO ? -EACCES : -ECONNRESET, msg, n->phase == PH_UP);
}

static const struct pp_conn_ops node_ops = {
    .on_data = on_data,
    .on_connect = on_connect,
    .on_close = on_close,
};

static void node_connect(struct node *n)
{
    if (n->ch_init)
        pp_chan_exit(&n->ch);
    n->ch_init = pp_chan_init(&n->ch, NULL, on_frame, n) == 0;
    if (!n->ch_init)
        return;
    n->phase = PH_CONNECT;
    if (!n->refused) /* a refused node shows so until it accepts us */
        set_state(n, PP_NODE_CONNECTING, 0, NULL);
    n->last_rx = pp_loop_now_ms(n->net->loop);
    int r = pp_loop_connect(n->net->loop, n->host, n->port, CONNECT_MS, &node_ops, n, &n->conn);
    if (r < 0) {
        n->conn = NULL;
        char msg[PP_ERRMSG_MAX];
        snprintf(msg, sizeof(msg), "cannot connect: %s", strerror(-r));
        node_down(n, r, msg, false);
        return;
    }
    n->ch.conn = n->conn;
}

/*
 * The node is gone (or refused us): every record in flight there goes
 * back on the ring, or fails once its nodes died node_retries times.
 * crashed: the node died or went silent while jobs ran (counts toward
 * the retry cap); not for an orderly stop or a refusal.
 */
static void node_down(struct node *n, int err, const char *why, bool crashed)
{
    struct pp_net *net = n->net;
    struct pp_server *s = net->s;

    if (n->phase == PH_IDLE)
        return;
    if (n->rx_active) {
        n->rx_active = n->rx_msg = false;
        if (n->rx_blk)
            pp__cons_block_put(&n->k, n->rx_blk, (size_t)n->rx_total);
        n->rx_blk = 0;
    }
    for (uint32_t i = 0; i < n->fl_cap; i++) {
        uint64_t tok = n->fl[i].tok;
        if (!tok)
            continue;
        struct pp_rec *r = flight_rec(n, i);
        struct pp_task *t = pp__task_of(s, pp_tok_idx(tok));
        if (crashed && n->id < 64) {
            t->node_fails++;
            t->node_mask |= 1ull << n->id;
        }
        if (n->fl[i].coll)
            r->nmsgs = n->fl[i].nmsgs; /* what reached the ring: its end follows them */
        if (n->fl[i].coll && n->fl[i].nmsgs) {
            /* Run again, it would send its messages again: it fails. */
            char msg[PP_ERRMSG_MAX];
            snprintf(msg, sizeof(msg),
                     "node %s was lost after the job sent %u messages (not run again)",
                     n->name, n->fl[i].nmsgs);
            fail_record(&n->k, r, tok, -ECHILD, msg);
        } else if (t->node_fails >= net->retries) {
            char msg[PP_ERRMSG_MAX];
            int k = snprintf(msg, sizeof(msg), "the job was lost with %u nodes (", t->node_fails);
            for (unsigned j = 0; j < net->nseen && j < 64 && k < (int)sizeof(msg) - 2; j++)
                if (t->node_mask & (1ull << j))
                    k += snprintf(msg + k, sizeof(msg) - (size_t)k, "%s%s",
                                  msg[k - 1] == '(' ? "" : ", ", net->nodes[j]->name);
            if (k < (int)sizeof(msg) - 2)
                snprintf(msg + k, sizeof(msg) - (size_t)k, ")");
            fail_record(&n->k, r, tok, -ECHILD, msg);
        } else {
            requeue(n, r, tok);
        }
        flight_put(n, i);
    }
    if (n->conn) {
        struct pp_conn *c = n->conn;
        n->conn = NULL;
        /* A refusal says why before it closes (the node logs it). */
        pp_conn_close(c, err == -EACCES || err == -ENOEXEC ? 0 : -ECONNABORTED);
    }
    n->refused = err == -EACCES;
    pp_sec_hs_wipe(&n->hs);
    n->phase = PH_IDLE;
    n->backoff = n->backoff ? n->backoff * 2 : BACKOFF_MIN_MS;
    if (n->backoff > BACKOFF_MAX_MS)
        n->backoff = BACKOFF_MAX_MS;
    n->next_try = pp_loop_now_ms(net->loop) + n->backoff;
    set_state(n, err == -EACCES || err == -ENOEXEC ? PP_NODE_REFUSED : PP_NODE_DOWN, err, why);
    if (n->found && !n->down_ms) { /* lost since it was last up (or added) */
        n->down_ms = pp_loop_now_ms(net->loop);
        disc_recheck(net);
    }
}

/* ---------------------------------------------------------------- */
/* The thread                                                         */
/* ---------------------------------------------------------------- */

/* Queued jobs that nothing can run: fail them after node_wait_ms. */
static void check_capacity(struct pp_net *net, uint64_t now)
{
    struct pp_server *s = net->s;
    bool up = false, all_refused = net->nseen > 0;
    for (unsigned i = 0; i < net->nseen; i++) {
        up |= net->nodes[i]->phase == PH_UP;
        all_refused &= net->nodes[i]->refused;
    }
    /* With nodes listed by hand, or found: the wait counts from the moment
     * none of them could take a job.  With only discovery ("*") and no
     * node found yet, it counts as well: nothing waits forever. */
    if (up || pp_load_relaxed(&s->target) > 0 || !pp_ring_count(s->ring) ||
        (!net->nseen && !net->disc)) {
        net->no_capacity_since = 0;
        return;
    }
    if (!net->no_capacity_since) {
        net->no_capacity_since = now;
        return;
    }
    if (now - net->no_capacity_since < net->wait_ms)
        return;
    /* A consumer to take the queued tokens with: the first node's, or the
     * slot after the last node's when discovery has found none. */
    struct pp_cons *kc;
    if (net->nseen) {
        kc = &net->nodes[0]->k;
    } else {
        if (!net->drain_ready) {
            struct pp_shared *sh = s->sh;
            uint32_t slot = PP_NODE_SLOT0 + PP_MAX_NODES - 1;
            pp__cons_reset(s, slot);
            pp__cons_init(&net->drain, sh, (char *)sh, slot);
            pp_store_release(&sh->nodes_used, PP_MAX_NODES); /* the engine drains it */
            net->drain_ready = true;
        }
        kc = &net->drain;
    }
    char msg[PP_ERRMSG_MAX];
    int k = snprintf(msg, sizeof(msg), "no local worker and no node can run the job:%s",
                     net->nseen ? "" : " discovery found no node");
    for (unsigned i = 0; i < net->nseen && k < (int)sizeof(msg); i++) {
        pthread_mutex_lock(&net->lock);
        k += snprintf(msg + k, sizeof(msg) - (size_t)k, " %s: %s;", net->nodes[i]->name,
                      net->nodes[i]->error[0] ? net->nodes[i]->error : "down");
        pthread_mutex_unlock(&net->lock);
    }
    uint64_t tok;
    struct pp_rec *r;
    while ((r = pp__cons_take(kc, &tok)) != NULL) {
        pp_ring_claim_done(&kc->c->claim);
        fail_record(kc, r, tok, all_refused ? -EACCES : -EHOSTUNREACH, msg);
    }
}

static void on_tick(void *ctx)
{
    struct pp_net *net = ctx;
    uint64_t now = pp_loop_now_ms(net->loop);
    for (unsigned i = 0; i < net->nseen; i++) {
        struct node *n = net->nodes[i];
        if (n->phase == PH_IDLE) {
            if (!disc_gone(n, now) && now >= n->next_try)
                node_connect(n);
            continue;
        }
        if (n->phase == PH_CONNECT)
            continue; /* the connect timeout covers it */
        /* Before READY the node may be receiving our program (MiB) and
         * starting its agent: a setup deadline, not the heartbeat one.
         * Nothing is sent before READY but what the session asks for: the
         * node hands the session to the agent between two reads. */
        uint64_t limit = n->phase == PH_UP ? net->timeout_ms : SETUP_MS;
        if (now - n->last_rx > limit) {
            char msg[PP_ERRMSG_MAX];
            snprintf(msg, sizeof(msg), "no answer for %llu ms (%s)",
                     (unsigned long long)(now - n->last_rx),
                     n->phase == PH_UP ? "heartbeat timeout" : "setup timeout");
            node_down(n, -ETIMEDOUT, msg, n->phase == PH_UP);
            continue;
        }
        if (n->phase == PH_UP) {
            /* The window (see DEPTH_*): a busy node's rate over the tick. */
            uint64_t done = pp_load_relaxed(&n->jobs_done), d = done - n->rate_done;
            n->rate_done = done;
            if (pp_load_relaxed(&n->nfl) || d) {
                double r = (double)d / NET_TICK_MS;
                n->rate = n->rate > 0 ? 0.5 * n->rate + 0.5 * r : r;
                unsigned w = n->workers ? n->workers : 1;
                double want = n->rate * WINDOW_MS;
                n->window = want < w * DEPTH_MIN ? w * DEPTH_MIN
                            : want > w * DEPTH_MAX ? w * DEPTH_MAX : (unsigned)want;
            }
        }
        if (n->phase == PH_UP && now - n->hb_sent >= net->timeout_ms / 3) {
            n->hb_sent = now;
            pp_chan_send(&n->ch, PP_WIRE_HEARTBEAT, 0, now, NULL, 0);
        }
    }
    check_capacity(net, now);
    disc_tick(net, now);
}

static void on_wake(void *ctx)
{
    (void)ctx; /* dispatch runs after every turn */
}

static void adopt_new_nodes(struct pp_net *net)
{
    pthread_mutex_lock(&net->lock);
    unsigned n = net->nnodes;
    pthread_mutex_unlock(&net->lock);
    while (net->nseen < n) {
        struct node *nd = net->nodes[net->nseen++];
        node_connect(nd);
    }
}

/* ---------------------------------------------------------------- */
/* Discovery ("*" in ppservers)                                       */
/* ---------------------------------------------------------------- */

static int add_node(struct pp_net *net, const char *hp, bool found);

/* "*" or "*:port": where queries go, and the discovery states. */
static int disc_create(struct pp_net *net, uint16_t port)
{
    const char *b = net->s->cfg.broadcast ? net->s->cfg.broadcast : "255.255.255.255";
    if (net->disc)
        return -EEXIST;
    struct disc *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->fd = d->bfd = -1;
    int r = pp_net_addr(b, port, &d->dst, &d->dst_len); /* broadcast must be numeric */
    if (r == 0)
        r = pp_disc_key_init(&d->key, &net->psk);
    if (r == 0)
        r = pp_disc_client_init(&d->c);
    if (r == 0)
        r = pp_disc_limit_init(&d->lim, PP_DISC_LIMIT_SRC_BURST, PP_DISC_LIMIT_SRC_MS,
                               PP_DISC_LIMIT_ALL_BURST, PP_DISC_LIMIT_ALL_MS);
    if (r < 0) {
        pp_disc_key_wipe(&d->key);
        free(d);
        return r;
    }
    net->disc = d;
    return 0;
}

static void disc_query(struct pp_net *net)
{
    struct disc *d = net->disc;
    uint8_t q[PP_DISC_QUERY_LEN];
    size_t len = 0;
    d->last_ms = pp_loop_now_ms(net->loop);
    if (pp_disc_query_build(&d->key, &d->c, pp_wall_ms(), q, sizeof(q), &len) == 0)
        (void)sendto(d->fd, q, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                     (const struct sockaddr *)&d->dst, d->dst_len); /* lost: the next round */
}

/* From on_tick: the next query when it is due. */
static void disc_tick(struct pp_net *net, uint64_t now)
{
    struct disc *d = net->disc;
    if (!d || d->fd < 0)
        return;
    uint64_t due = d->sent == 1 ? 250 : d->sent == 2 ? 1000
                 : 1000 + (uint64_t)DISC_EVERY_MS * (d->sent - 2);
    if (now - d->start_ms >= due) {
        d->sent++;
        disc_query(net);
    }
}

/* A found node was lost: ask at once whether its daemon still answers
 * (its session may have died, not the host), at most once a second. */
static void disc_recheck(struct pp_net *net)
{
    struct disc *d = net->disc;
    if (d && d->fd >= 0 && pp_loop_now_ms(net->loop) - d->last_ms >= DISC_RECHECK_MS)
        disc_query(net);
}

/* From on_tick, for an idle (down or refused) node: a found node that has
 * been down and unheard for DISC_GONE_MS left the pool.  True: skip it. */
static bool disc_gone(struct node *n, uint64_t now)
{
    if (n->gone)
        return true;
    uint64_t last = n->heard_ms > n->down_ms ? n->heard_ms : n->down_ms;
    if (!n->found || !n->down_ms || now - last < DISC_GONE_MS)
        return false;
    n->gone = true;
    set_state(n, PP_NODE_GONE, 0, NULL);
    return true;
}

/* An accepted answer or beacon names the node at to: a known one is
 * heard (and joins again if it had left), a new one is added unless the
 * limiter says no. */
static void disc_found(struct pp_net *net, const struct sockaddr_storage *to)
{
    char host[INET6_ADDRSTRLEN], hp[INET6_ADDRSTRLEN + 8];
    uint16_t port;
    uint64_t now = pp_loop_now_ms(net->loop);
    if (to->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)to;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)to;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
    }
    struct node *known = NULL;
    bool pending = false;         /* added by pp_connect, not adopted yet */
    pthread_mutex_lock(&net->lock);
    for (unsigned i = 0; i < net->nnodes && !known && !pending; i++) {
        if (net->nodes[i]->port != port || strcmp(net->nodes[i]->host, host) != 0)
            continue;
        if (i < net->nseen)
            known = net->nodes[i];
        else
            pending = true;
    }
    pthread_mutex_unlock(&net->lock);
    if (known) {
        known->heard_ms = now;
        if (known->gone) { /* back: connect at once (on_tick) */
            known->gone = false;
            known->backoff = 0;
            known->next_try = now;
            set_state(known, PP_NODE_DOWN, 0, NULL);
        }
        return;
    }
    if (pending || !pp_disc_limit_allow(&net->disc->lim, to, now))
        return;
    snprintf(hp, sizeof(hp), "%s:%u", host, port);
    (void)add_node(net, hp, true); /* adopt_new_nodes connects it after this turn */
}

/* A discovery socket is readable: check every datagram; the valid ones
 * name nodes.  The query socket takes answers, the beacon socket beacons. */
static void disc_read(struct pp_net *net, int fd, int want)
{
    struct disc *d = net->disc;
    uint8_t in[PP_DISC_MAX_LEN];
    struct sockaddr_storage src, to;
    struct pp_disc_found f;
    for (;;) {
        socklen_t slen = sizeof(src);
        ssize_t n = recvfrom(fd, in, sizeof(in), MSG_DONTWAIT | MSG_TRUNC,
                             (struct sockaddr *)&src, &slen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return; /* EAGAIN, or an ICMP error for a query: ignored */
        if ((size_t)n > sizeof(in) || slen > sizeof(src))
            continue;
        int r = -EPROTO;
        if (pp_disc_type(in, (size_t)n) != want)
            continue; /* also our own and other clients' queries on the beacon port */
        if (want == PP_DISC_ANSWER)
            r = pp_disc_answer_check(&d->key, &d->c, in, (size_t)n, pp_wall_ms(), &f);
        else
            r = pp_disc_beacon_check(&d->key, &d->c, in, (size_t)n, pp_wall_ms(), &f);
        if (r == 0 && pp_disc_target(&src, slen, f.port, &to) == 0)
            disc_found(net, &to);
    }
}

static void disc_readable(void *ctx)
{
    struct pp_net *net = ctx;
    disc_read(net, net->disc->fd, PP_DISC_ANSWER);
}

static void disc_beacon_readable(void *ctx)
{
    struct pp_net *net = ctx;
    disc_read(net, net->disc->bfd, PP_DISC_BEACON);
}

/*
 * The beacon socket: the discovery port on the wildcard address, shared
 * (SO_REUSEADDR) with a ppserver -a -b of this host, which binds it the
 * same way; a broadcast reaches every socket bound to its port.  Not
 * fatal: without it, the periodic queries still find nodes.
 */
static void disc_open_beacons(struct pp_net *net, const struct sockaddr_storage *any)
{
    struct disc *d = net->disc;
    struct sockaddr_storage at = *any;
    int one = 1;
    if (at.ss_family == AF_INET)
        ((struct sockaddr_in *)&at)->sin_port = ((struct sockaddr_in *)&d->dst)->sin_port;
    else
        ((struct sockaddr_in6 *)&at)->sin6_port = ((struct sockaddr_in6 *)&d->dst)->sin6_port;
    d->bfd = socket(at.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->bfd < 0)
        return;
    setsockopt(d->bfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len = at.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                            : sizeof(struct sockaddr_in6);
    if (bind(d->bfd, (struct sockaddr *)&at, len) < 0 ||
        pp_loop_watch(net->loop, d->bfd, disc_beacon_readable, net, &d->bwatch) < 0) {
        close(d->bfd);
        d->bfd = -1;
    }
}

/* In the net thread, on its loop: an ephemeral UDP port, the beacon port,
 * and the first query. */
static int disc_open(struct pp_net *net)
{
    struct disc *d = net->disc;
    struct sockaddr_storage any;
    int one = 1;
    memset(&any, 0, sizeof(any));
    any.ss_family = d->dst.ss_family; /* the wildcard address, port 0 */
    d->fd = socket(d->dst.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0)
        return -errno;
    setsockopt(d->fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one));
    int r = bind(d->fd, (struct sockaddr *)&any,
                 any.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                          : sizeof(struct sockaddr_in6)) < 0 ? -errno : 0;
    if (r == 0)
        r = pp_loop_watch(net->loop, d->fd, disc_readable, net, &d->watch);
    if (r < 0) {
        close(d->fd);
        d->fd = -1;
        return r;
    }
    disc_open_beacons(net, &any);
    d->start_ms = pp_loop_now_ms(net->loop);
    d->sent = 1;
    disc_query(net);
    return 0;
}

static void disc_close(struct pp_net *net)
{
    struct disc *d = net->disc;
    if (!d)
        return;
    if (d->watch)
        pp_watch_close(d->watch);
    if (d->bwatch)
        pp_watch_close(d->bwatch);
    d->watch = d->bwatch = NULL;
    if (d->fd >= 0)
        close(d->fd);
    if (d->bfd >= 0)
        close(d->bfd);
    d->fd = d->bfd = -1;
}

static void *net_main(void *arg)
{
    struct pp_net *net = arg;
    struct pp_server *s = net->s;

    pp__block_signals();
    int r = pp_loop_new(&net->loop);
    if (r < 0) {
        pp_store_release(&net->ready, r);
        return NULL;
    }
    if (net->disc && (r = disc_open(net)) < 0)
        snprintf(net->errmsg, sizeof(net->errmsg), "discovery: cannot open a UDP socket: %s",
                 strerror(-r));
    if (r == 0 && net->slurm_secret) {
        /* From this thread: srun ends with it (PR_SET_PDEATHSIG). */
        r = pp__slurm_start(&net->slurm, net->slurm_secret, net->slurm_secret_len,
                            net->wait_ms, slurm_add, net, net->errmsg, sizeof(net->errmsg));
        if (r == 0 && (r = pp__slurm_watch(net->slurm, net->loop)) < 0)
            snprintf(net->errmsg, sizeof(net->errmsg), "slurm: cannot watch srun: %s",
                     strerror(-r));
    }
    if (net->slurm_secret) {
        sodium_memzero(net->slurm_secret, net->slurm_secret_len);
        free(net->slurm_secret);
        net->slurm_secret = NULL;
    }
    if (r < 0) {
        pp__slurm_stop(net->slurm);
        net->slurm = NULL;
        disc_close(net);
        pp_loop_free(net->loop);
        net->loop = NULL;
        pp_store_release(&net->ready, r);
        return NULL;
    }
    pp_loop_set_tick(net->loop, NET_TICK_MS, on_tick, net);
    pp_loop_set_wake(net->loop, on_wake, net);
    pp_store_release(&net->ready, 1);
    while (!pp_load_relaxed(&net->stop)) {
        adopt_new_nodes(net);
        dispatch(net);
        for (unsigned i = 0; i < net->nseen; i++) {
            struct node *n = net->nodes[i];
            if (n->conn && pp_chan_flush(&n->ch) < 0) {
                const char *why = pp_chan_error(&n->ch);
                node_down(n, -EIO, why ? why : "cannot send", true);
            }
        }
        /* Sleep unless jobs wait that a node could take now (Dekker with
         * the submitter's W1 and pp__net_kick). */
        atomic_store(&net->sleeping, 1);
        int timeout = -1;
        if (pp_ring_count(s->ring) && local_first_allows(net)) {
            for (unsigned i = 0; i < net->nseen; i++)
                if (net->nodes[i]->phase == PH_UP &&
                    pp_load_relaxed(&net->nodes[i]->nfl) < net->nodes[i]->window)
                    timeout = 0;
        }
        if (timeout == 0)
            atomic_store(&net->sleeping, 0);
        pp_loop_run(net->loop, timeout);
        atomic_store(&net->sleeping, 0);
    }
    /* Stopping: jobs in flight are cancelled (pp_server_destroy cancels
     * every queued one too), the nodes are told. */
    for (unsigned i = 0; i < net->nseen; i++) {
        struct node *n = net->nodes[i];
        for (uint32_t j = 0; j < n->fl_cap; j++) {
            if (!n->fl[j].tok)
                continue;
            struct pp_rec *r = flight_rec(n, j);
            r->res_len = 0;
            r->res_where = PP_RES_TINY;
            finish(n, r, n->fl[j].tok, -ECANCELED, "server destroyed", 16);
            flight_put(n, j);
        }
        if (n->rx_blk)
            pp__cons_block_put(&n->k, n->rx_blk, (size_t)n->rx_total);
        n->rx_blk = 0;
        if (n->conn && n->phase >= PH_INFO) {
            pp_chan_send(&n->ch, PP_WIRE_BYE, 0, 0, NULL, 0);
            pp_chan_flush(&n->ch);
            pp_conn_close(n->conn, 0);
        }
    }
    for (int i = 0; i < 20; i++) {
        bool any = false;
        for (unsigned j = 0; j < net->nseen; j++)
            any |= net->nodes[j]->conn != NULL;
        if (!any)
            break;
        pp_loop_run(net->loop, 10);
    }
    for (unsigned i = 0; i < net->nseen; i++)
        net->nodes[i]->conn = NULL; /* pp_loop_free ends whatever is left */
    /* The stopper may still be inside pp_loop_wake (a write to the loop's
     * eventfd): the loop goes only once it says it is out (stop = 2). */
    while (pp_load_acquire(&net->stop) != 2)
        sched_yield();
    /* K2: any thread still kicking (the engine moving overflow jobs in)
     * saw stop = 0 before we did; wait for it to leave.  Pairs with K1. */
    pp_fence_seq_cst();
    while (atomic_load(&net->kicking))
        sched_yield();
    disc_close(net);
    pp__slurm_stop(net->slurm); /* the nodes said BYE above: now the step ends */
    net->slurm = NULL;
    pp_loop_free(net->loop);
    net->loop = NULL;
    return NULL;
}

/* ---------------------------------------------------------------- */
/* API                                                                */
/* ---------------------------------------------------------------- */

static int add_node(struct pp_net *net, const char *hp, bool found)
{
    char host[PP_NODE_NAME_MAX];
    uint16_t port;
    if (parse_node(hp, host, sizeof(host), &port) < 0 || strcmp(host, "*") == 0)
        return -EINVAL;
    pthread_mutex_lock(&net->lock);
    int r = 0;
    for (unsigned i = 0; i < net->nnodes; i++)
        if (strcmp(net->nodes[i]->host, host) == 0 && net->nodes[i]->port == port)
            r = -EEXIST;
    if (!r && net->nnodes >= PP_MAX_NODES - 1)
        r = -ENOSPC;
    struct node *n = r ? NULL : calloc(1, sizeof(*n));
    if (!r && !n)
        r = -ENOMEM;
    if (r) {
        pthread_mutex_unlock(&net->lock);
        return r;
    }
    n->net = net;
    n->id = net->nnodes;
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    /* parse_node bounds host so that "host:port" fits the name. */
    int k = snprintf(n->name, sizeof(n->name), "%.*s:%u", (int)(sizeof(n->name) - 7), host, port);
    (void)k;
    n->fl_free = UINT32_MAX;
    n->state = PP_NODE_CONNECTING;
    n->found = found;
    if (found) /* only the net thread adds found nodes: its loop's clock */
        n->heard_ms = pp_loop_now_ms(net->loop);
    struct pp_shared *sh = net->s->sh;
    uint32_t slot = PP_NODE_SLOT0 + n->id;
    pp__cons_reset(net->s, slot);
    pp__cons_init(&n->k, sh, (char *)sh, slot);
    net->nodes[net->nnodes] = n;
    if (n->id + 1 > pp_load_relaxed(&sh->nodes_used))
        pp_store_release(&sh->nodes_used, n->id + 1);
    /* Release: the thread's acquire of nnodes sees the node whole. */
    pp_store_release(&net->nnodes, net->nnodes + 1);
    pthread_mutex_unlock(&net->lock);
    return 0;
}

static int net_create(struct pp_server *s, bool slurm)
{
    struct pp_net *net = calloc(1, sizeof(*net));
    if (!net)
        return -ENOMEM;
    char buf[PP_SRVCONF_SECRET_MAX + 1];
    size_t len = 0;
    int r = secret_text(&s->cfg, slurm, buf, sizeof(buf), &len, net->errmsg,
                        sizeof(net->errmsg));
    if (r == 0)
        r = pp_sec_psk_init(&net->psk, buf, len);
    if (r == 0 && slurm) {
        net->slurm_secret = malloc(len + 1);
        if (net->slurm_secret) {
            memcpy(net->slurm_secret, buf, len);
            net->slurm_secret_len = len;
        } else {
            r = -ENOMEM;
        }
    }
    sodium_memzero(buf, sizeof(buf));
    if (r < 0) {
        if (s->cfg.error && net->errmsg[0])
            snprintf(s->cfg.error, PP_ERRMSG_MAX, "%s", net->errmsg);
        pp_sec_psk_wipe(&net->psk);
        free(net);
        return r;
    }
    net->s = s;
    net->retries = s->cfg.node_retries ? s->cfg.node_retries : 3;
    net->timeout_ms = s->cfg.node_timeout_ms ? s->cfg.node_timeout_ms : 3000;
    net->wait_ms = s->cfg.node_wait_ms ? s->cfg.node_wait_ms : 30000;
    pp_host_info_self(&net->self);
    /* The program the nodes will run as their session agent. */
    net->exe_err = hash_file("/proc/self/exe", net->exe_hash, &net->exe_size);
    pthread_mutex_init(&net->lock, NULL);
    pp_store_relaxed(&s->sh->has_nodes, 1);
    /* Release: a thread that sees the pointer sees the struct whole. */
    atomic_store_explicit(&s->net, net, memory_order_release);
    return 0;
}

/* The loop is made by the thread that runs it (io_uring's SINGLE_ISSUER
 * and DEFER_TASKRUN tie a ring to its creator); net_start waits for it. */
static int net_start(struct pp_net *net)
{
    if (net->started)
        return 0;
    int r = pthread_create(&net->thread, NULL, net_main, net);
    if (r)
        return -r;
    while ((r = pp_load_acquire(&net->ready)) == 0) /* pairs with the thread's release */
        usleep(100);
    if (r < 0) {
        pthread_join(net->thread, NULL);
        if (net->s->cfg.error && net->errmsg[0])
            snprintf(net->s->cfg.error, PP_ERRMSG_MAX, "%s", net->errmsg);
        return r;
    }
    pp_store_release(&net->started, true);
    return 0;
}

static int slurm_add(void *ctx, const char *hp)
{
    return add_node(ctx, hp, false);
}

int pp__net_init(struct pp_server *s)
{
    if (!s->cfg.ppservers || !s->cfg.ppservers[0])
        return 0;
    bool slurm = false;
    for (const char *const *p = s->cfg.ppservers; *p; p++)
        slurm |= strcmp(*p, "slurm") == 0;
    int r = net_create(s, slurm);
    if (r < 0)
        return r;
    struct pp_net *net = s->net;
    for (const char *const *p = s->cfg.ppservers; *p; p++) {
        char host[PP_NODE_NAME_MAX];
        uint16_t port;
        bool named = parse_node(*p, host, sizeof(host), &port) == 0;
        if (strcmp(*p, "slurm") == 0)
            r = 0; /* the net thread starts the step */
        else if (named && strcmp(host, "*") == 0)
            r = disc_create(net, port); /* discovery instead of a node */
        else if (named && strcmp(host, "slurm-nodes") == 0)
            r = pp__slurm_nodelist(port, PP_MAX_NODES - 1, slurm_add, net, net->errmsg,
                                   sizeof(net->errmsg));
        else
            r = add_node(net, *p, false);
        if (r < 0 && r != -EEXIST) {
            if (s->cfg.error)
                snprintf(s->cfg.error, PP_ERRMSG_MAX, "%s", net->errmsg[0] ? net->errmsg
                         : r == -ENOSPC ? "more nodes than PP_MAX_NODES - 1"
                         : "ppservers: a bad entry");
            return r;
        }
    }
    return net_start(net);
}

void pp__net_kick(struct pp_server *s)
{
    struct pp_net *net = s->net;
    if (!pp_load_acquire(&net->started))
        return;
    /* Pairs with the store of sleeping before the thread's last look at
     * the ring (the caller's W1 fence came before this load). */
    if (!pp_load_relaxed(&net->sleeping) || !atomic_exchange(&net->sleeping, 0))
        return;
    /* K1: announce ourselves before looking at stop (pairs with K2): the
     * loop is not freed under a wake-up. */
    atomic_fetch_add(&net->kicking, 1);
    if (!atomic_load(&net->stop))
        pp_loop_wake(net->loop);
    atomic_fetch_sub(&net->kicking, 1);
}

void pp__net_stop(struct pp_server *s)
{
    struct pp_net *net = s->net;
    if (!net)
        return;
    if (pp_load_acquire(&net->started)) {
        pp_store_release(&net->stop, 1);
        pp_loop_wake(net->loop);
        pp_store_release(&net->stop, 2); /* pairs with the thread's last acquire */
        pthread_join(net->thread, NULL);
    }
}

void pp__net_free(struct pp_server *s, bool forked)
{
    struct pp_net *net = s->net;
    if (!net)
        return;
    for (unsigned i = 0; i < net->nnodes; i++) {
        struct node *n = net->nodes[i];
        if (n->ch_init && !forked)
            pp_chan_exit(&n->ch);
        free(n->fl);
        free(n);
    }
    if (net->loop && forked) {
        if (net->disc)
            net->disc->watch = net->disc->bwatch = NULL; /* freed with the loop; the fds below */
        pp_loop_abandon(net->loop); /* the parent's thread's loop */
    }
    if (forked)
        pp__slurm_forget(net->slurm); /* the parent's step */
    net->slurm = NULL;
    if (net->slurm_secret) {
        sodium_memzero(net->slurm_secret, net->slurm_secret_len);
        free(net->slurm_secret);
        net->slurm_secret = NULL;
    }
    if (net->disc) {
        disc_close(net);
        pp_disc_key_wipe(&net->disc->key);
        free(net->disc);
        net->disc = NULL;
    }
    pp_sec_psk_wipe(&net->psk);
    pthread_mutex_destroy(&net->lock);
    free(net);
    s->net = NULL;
}

PP_EXPORT int pp_connect(pp_server *s, const char *host_port)
{
    if (!s || !host_port)
        return -EINVAL;
    pthread_mutex_lock(&s->ctl_lock);
    int r = s->net ? 0 : net_create(s, false);
    pthread_mutex_unlock(&s->ctl_lock);
    if (r < 0)
        return r;
    if ((r = add_node(s->net, host_port, false)) < 0)
        return r;
    pthread_mutex_lock(&s->ctl_lock);
    r = net_start(s->net);
    pthread_mutex_unlock(&s->ctl_lock);
    if (r == 0)
        pp_loop_wake(s->net->loop);
    return r;
}

PP_EXPORT int pp_get_active_nodes(pp_server *s, struct pp_node_info *out, unsigned max)
{
    if (!s || (!out && max))
        return -EINVAL;
    struct pp_net *net = s->net;
    if (!net)
        return 0;
    pthread_mutex_lock(&net->lock);
    unsigned n = net->nnodes;
    for (unsigned i = 0; i < n && i < max; i++) {
        struct node *nd = net->nodes[i];
        struct pp_node_info *o = &out[i];
        memset(o, 0, sizeof(*o));
        snprintf(o->name, sizeof(o->name), "%s", nd->name);
        o->workers = nd->workers;
        o->state = nd->state;
        o->last_error = nd->last_error;
        snprintf(o->error, sizeof(o->error), "%s", nd->error);
        o->jobs_done = pp_load_relaxed(&nd->jobs_done);
        o->in_flight = pp_load_relaxed(&nd->nfl);
    }
    pthread_mutex_unlock(&net->lock);
    return (int)n;
}

void pp__net_stats(struct pp_server *s, struct pp_stats *st)
{
    struct pp_net *net = s->net;
    if (!net)
        return;
    pthread_mutex_lock(&net->lock);
    for (unsigned i = 0; i < net->nnodes && st->nnodes < PP_MAX_NODES; i++) {
        struct node *nd = net->nodes[i];
        struct pp_node_stats *row = &st->nodes[st->nnodes++];
        snprintf(row->name, sizeof(row->name), "%s", nd->name);
        row->njobs = pp_load_relaxed(&nd->jobs_done);
        row->time_sum_s = (double)pp_load_relaxed(&nd->time_ns) / 1e9;
        row->ncpus = (int)nd->workers;
        st->njobs += row->njobs;
    }
    pthread_mutex_unlock(&net->lock);
}
