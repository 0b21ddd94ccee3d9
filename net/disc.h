/*
 * disc.h - authenticated node discovery over UDP (ppserver -a, ppservers
 * "*"): the messages, their checks and a connection-attempt limiter.
 *
 * Pure functions on caller-owned state: no sockets, no clock, no threads.
 * The daemon and the client's net thread do the UDP I/O in their event
 * loops and pass each datagram, with the time, through here.
 *
 * Model.  A discovery message says only "a holder of the secret runs a
 * node at this port": everything it leads to still goes through the TCP
 * handshake of secure.h, which authenticates both ends.  So the job here
 * is to stop strangers from making pp send or do anything on their
 * behalf: messages that do not prove the secret are dropped, replays are
 * dropped, nothing is ever amplified, and the connections that discovery
 * causes are rate-limited.
 *
 * Ports.  As in pp, discovery uses the UDP port with the number of the
 * node's TCP port (PP_DISC_PORT, pp's 60000, by default): `ppserver -a
 * -p P` listens on UDP P and `"*:P"` in ppservers asks on UDP P.  Each
 * answer and beacon carries the node's TCP port, so the two may differ.
 * Queries go to the broadcast address (-b, default 255.255.255.255) or to
 * a unicast one; answers go back unicast to the query's source; beacons
 * go to the broadcast address at PP_DISC_PORT.
 *
 * Exchanges.
 *   query/answer: the client sends QUERY with a fresh nonce; every node
 *     that can verify it answers once, unicast, echoing that nonce.  The
 *     client accepts an answer only while that query is outstanding (at
 *     most PP_DISC_QUERY_TTL_MS by the client's own clock), so an answer
 *     to a query this client never sent is refused whatever the clocks
 *     say.  The client repeats queries while it runs (say every 30 s) to
 *     find nodes that started later.
 *   beacon: a node with -a also broadcasts BEACON now and then, so that a
 *     running client hears it between queries.
 *
 * Wire layout.  Little-endian, fixed sizes, encoded field by field.
 * mac = crypto_auth (HMAC-SHA-512-256) under K_disc over every byte
 * before it.  Fields marked 0 must be zero (checked after the mac).
 *
 *   QUERY, client -> node, PP_DISC_QUERY_LEN = 128
 *     off size field
 *       0    4 magic "PPD1"
 *       4    1 type 1
 *       5    1 flags 0
 *       6    2 0
 *       8    8 ts_ms     sender's wall clock, ms since the epoch
 *      16   16 nonce     fresh random: names this query
 *      32   64 0         padding: an answer is never larger
 *      96   32 mac
 *
 *   ANSWER, node -> the query's source, PP_DISC_ANSWER_LEN = 104
 *       0    4 magic "PPD1"
 *       4    1 type 2
 *       5    1 flags 0
 *       6    2 port      the node's TCP port, 1..65535
 *       8    8 ts_ms
 *      16    4 workers   the node's worker count
 *      20    4 0
 *      24   16 qnonce    the query's nonce, echoed
 *      40   16 node_id   random per daemon start
 *      56   16 nonce     fresh random: names this answer
 *      72   32 mac
 *
 *   BEACON, node -> broadcast, PP_DISC_BEACON_LEN = 88
 *       0    4 magic "PPD1"
 *       4    1 type 3
 *       5    1 flags 0
 *       6    2 port
 *       8    8 ts_ms     strictly increasing per node_id
 *      16    4 workers
 *      20    4 0
 *      24   16 node_id
 *      40   16 nonce
 *      56   32 mac
 *
 *   K_disc = pp_sec_psk_disc_key (secure.h): BLAKE2b-256 keyed with the
 *   psk's K_kdf over "pp-v1 disc", used for nothing else.  The type byte
 *   is under the mac, so no message can pass for another kind.
 *
 * Checks, in this order, for every message received:
 *   1. length, magic and type            else -EPROTO   (no crypto spent)
 *   2. mac, constant time                else -EBADMSG
 *   3. flags, zero fields, port != 0     else -EPROTO   (an authentic sender
 *                                                         from a newer version)
 *   4. |ts - now| <= PP_DISC_WINDOW_MS   else -ETIME
 *   5. answers: qnonce outstanding       else -ESRCH
 *   6. nonce not seen; beacons: ts above the last one from that node_id
 *                                        else -EALREADY
 * Nothing in the state changes unless every check passes.
 *
 * Clocks.  Step 4 means hosts need wall clocks within about 30 s of each
 * other (NTP): a node whose clock is further off from a client's neither
 * answers it nor is heard by it, and the refusal reads -ETIME, which is
 * worth logging with the skew.  The window is what lets the replay sets
 * stay bounded: a message older than the window is refused without
 * having to be remembered.
 *
 * Replay sets.  Each side remembers the nonces it accepted in a ring of
 * PP_DISC_SEEN_MAX.  When the ring forgets its oldest entry, it raises a
 * floor to that entry's ts and from then on refuses anything stamped at
 * or below it (-EALREADY), so a replay is refused even after its entry is
 * gone, whatever the clock does.  Normally the entry forgotten is long
 * past the window and the floor refuses nothing the window would take;
 * a side that receives more than PP_DISC_SEEN_MAX messages within 60 s
 * may refuse genuine ones, which the next query round repairs.
 *
 * Addresses.  No message carries an address.  The caller takes the node's
 * address from recvfrom()'s source and only the port from the payload
 * (pp_disc_target).  A forged source can at most make a client try a TCP
 * handshake with some other host at the node's port, which fails and
 * which pp_disc_limit_allow rate-limits; call it before every connection
 * attempt that a discovery message causes.
 *
 * Amplification.  A node answers only a query that verifies and is
 * fresh, once, with PP_DISC_ANSWER_LEN <= PP_DISC_QUERY_LEN bytes (a
 * compile-time check), to the query's source.
 *
 * Errors.  Functions return 0 on success and -errno on failure: -EINVAL
 * for bad arguments (NULL, a key or state not initialised), -ENOBUFS when
 * an output buffer is too small, -ENOSYS when libsodium cannot start, and
 * the check errors above.  Output parameters are ret_*, written only on
 * success.
 *
 * Ownership.  Every struct is caller-allocated.  pp_disc_client is about
 * 33 KiB and pp_disc_node about 25 KiB: allocate them, or keep them in a
 * larger struct, rather than on a small thread stack.  The key is secret:
 * pp_disc_key_wipe it when done.
 *
 * Threading.  Nothing is shared: a pp_disc_client, pp_disc_node or
 * pp_disc_limit belongs to one thread at a time.  A pp_disc_key is only
 * read after init, so threads may share it.
 */
#ifndef PP_NET_DISC_H
#define PP_NET_DISC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "secure.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PP_DISC_MAGIC        "PPD1"
#define PP_DISC_PORT         60000u  /* pp's: UDP = the node's TCP port */

#define PP_DISC_QUERY_LEN    128u
#define PP_DISC_ANSWER_LEN   104u
#define PP_DISC_BEACON_LEN   88u
#define PP_DISC_MAX_LEN      128u    /* a receive buffer this large holds any */
#define PP_DISC_NONCE_LEN    16u
#define PP_DISC_ID_LEN       16u     /* node_id */
#define PP_DISC_MAC_LEN      32u

#define PP_DISC_WINDOW_MS    30000u  /* |ts - now| accepted */
#define PP_DISC_QUERY_TTL_MS 10000u  /* how long a client takes answers to a query */
#define PP_DISC_OUTSTANDING  8u      /* queries a client remembers; the oldest goes first */
#define PP_DISC_SEEN_MAX     1024u   /* nonces remembered per side */
#define PP_DISC_NODES_MAX    256u    /* node_ids whose last beacon a client remembers */

/* The message types (byte 4); 0 is never valid. */
enum pp_disc_type {
    PP_DISC_QUERY = 1,
    PP_DISC_ANSWER = 2,
    PP_DISC_BEACON = 3,
};

/* K_disc.  Fields are private. */
struct pp_disc_key {
    uint8_t k[PP_SEC_KEY_LEN];
    bool ready;                      /* false when zeroed or wiped: refused */
};

/* Nonces accepted, for replay checks.  Private; part of the states below. */
struct pp_disc_seen {
    uint8_t nonce[PP_DISC_SEEN_MAX][PP_DISC_NONCE_LEN];
    uint64_t ts[PP_DISC_SEEN_MAX];   /* each entry's message ts */
    uint32_t next;                   /* slot the next entry takes */
    uint32_t count;                  /* slots in use, <= PP_DISC_SEEN_MAX */
    uint64_t floor;                  /* refuse ts <= floor; 0 = none yet */
};

/* A client's side: its outstanding queries, the answers and beacons it
 * accepted.  Fields are private; pp_disc_client_init before use. */
struct pp_disc_client {
    struct {
        uint8_t nonce[PP_DISC_NONCE_LEN];
        uint64_t sent_ms;
        bool live;
    } q[PP_DISC_OUTSTANDING];
    uint32_t q_next;                 /* slot the next query takes */
    struct {
        uint8_t id[PP_DISC_ID_LEN];
        uint64_t last_ts;            /* of its newest accepted beacon */
        bool live;
    } nodes[PP_DISC_NODES_MAX];
    struct pp_disc_seen seen;        /* answer and beacon nonces */
    bool ready;
};

/* A node's side.  Fields are private; pp_disc_node_init before use. */
struct pp_disc_node {
    uint8_t id[PP_DISC_ID_LEN];
    uint64_t beacon_ts;              /* ts of the last beacon built */
    struct pp_disc_seen seen;        /* query nonces */
    bool ready;
};

/* What an accepted answer or beacon says.  The address is not here: take
 * it from the datagram's source (pp_disc_target). */
struct pp_disc_found {
    uint8_t node_id[PP_DISC_ID_LEN]; /* same for every message of one daemon run */
    uint16_t port;                   /* TCP, 1..65535 */
    uint32_t workers;
    uint8_t type;                    /* PP_DISC_ANSWER or PP_DISC_BEACON */
};

/* Token buckets for connection attempts: one per source address (a
 * bounded table) and one for all sources together.  Fields are private. */
#define PP_DISC_LIMIT_SLOTS  64u
struct pp_disc_limit {
    struct {
        uint8_t addr[16];            /* IPv4 as ::ffff:a.b.c.d */
        uint64_t credit;             /* ms of refill banked, <= burst * refill_ms */
        uint64_t last_ms;
        bool live;
    } src[PP_DISC_LIMIT_SLOTS];
    uint64_t all_credit, all_last_ms;
    uint64_t src_refill_ms, src_cap;   /* one attempt per refill_ms; cap = burst * refill */
    uint64_t all_refill_ms, all_cap;
    bool ready;
};

/* pp_disc_limit_init defaults: per source, 2 at once then one per 5 s;
 * overall, 16 at once then 10 per second. */
#define PP_DISC_LIMIT_SRC_BURST  2u
#define PP_DISC_LIMIT_SRC_MS     5000u
#define PP_DISC_LIMIT_ALL_BURST  16u
#define PP_DISC_LIMIT_ALL_MS     100u

/****  Keys and state  ****/

/*
 * pp_disc_key_init - derive K_disc from an initialised psk (see the top
 * of this file).  Returns 0, -EINVAL (NULL, psk not initialised) or
 * -ENOSYS.  Call pp_disc_key_wipe when done.
 */
int pp_disc_key_init(struct pp_disc_key *key, const struct pp_sec_psk *psk);

/* pp_disc_key_wipe - zero the key; it is refused until init again. */
void pp_disc_key_wipe(struct pp_disc_key *key);

/* pp_disc_client_init - an empty client state: no outstanding queries,
 * nothing seen.  Returns 0 or -EINVAL. */
int pp_disc_client_init(struct pp_disc_client *c);

/*
 * pp_disc_node_init - an empty node state with a fresh random node_id
 * (once per daemon start: clients use it to tell one node reached at two
 * addresses, and to order its beacons).  Returns 0, -EINVAL or -ENOSYS.
 */
int pp_disc_node_init(struct pp_disc_node *n);

/*
 * pp_disc_type - the type of the datagram p[0..len) if its magic and its
 * type's length are right, to pick the check; -EPROTO otherwise.  Proves
 * nothing: call the check.  Returns an enum pp_disc_type or -errno.
 */
int pp_disc_type(const uint8_t *p, size_t len);

/****  Client  ****/

/*
 * pp_disc_query_build - a QUERY with a fresh nonce, stamped now_ms (wall
 * clock, ms since the epoch), into out[0..cap).  Remembers the nonce as
 * outstanding for PP_DISC_QUERY_TTL_MS, forgetting the oldest of
 * PP_DISC_OUTSTANDING if need be.  The same bytes may be sent to several
 * addresses.  Returns 0 and *ret_len = PP_DISC_QUERY_LEN, or -EINVAL,
 * -ENOBUFS or -ENOSYS.
 */
int pp_disc_query_build(const struct pp_disc_key *key, struct pp_disc_client *c,
                        uint64_t now_ms, uint8_t *out, size_t cap, size_t *ret_len);

/*
 * pp_disc_answer_check - check an ANSWER received at now_ms (steps 1-6 at
 * the top of this file) and, if it passes, record its nonce and fill
 * *ret.  Reads ans[0..len) only.  Returns 0, -EINVAL, -EPROTO, -EBADMSG,
 * -ETIME, -ESRCH (not an answer to a query of ours still outstanding) or
 * -EALREADY.
 */
int pp_disc_answer_check(const struct pp_disc_key *key, struct pp_disc_client *c,
                         const uint8_t *ans, size_t len, uint64_t now_ms,
                         struct pp_disc_found *ret);

/*
 * pp_disc_beacon_check - check a BEACON received at now_ms; if it passes,
 * record its nonce and ts for its node_id and fill *ret.  Returns 0,
 * -EINVAL, -EPROTO, -EBADMSG, -ETIME or -EALREADY (seen, or not newer
 * than that node's last beacon).
 */
int pp_disc_beacon_check(const struct pp_disc_key *key, struct pp_disc_client *c,
                         const uint8_t *b, size_t len, uint64_t now_ms,
                         struct pp_disc_found *ret);

/*
 * pp_disc_target - where to connect: the datagram's source address
 * (src, as recvfrom filled it, srclen bytes) with its port replaced by
 * port (the payload's TCP port).  Returns 0 and *ret, or -EINVAL or
 * -EAFNOSUPPORT (not AF_INET or AF_INET6).
 */
int pp_disc_target(const struct sockaddr_storage *src, socklen_t srclen, uint16_t port,
                   struct sockaddr_storage *ret);

/****  Node  ****/

/*
 * pp_disc_answer_build - check a QUERY received at now_ms (steps 1-4 and
 * 6) and, if it passes, record its nonce and write the ANSWER (this
 * node's TCP port, 1..65535, and workers) into out[0..cap).  Send it to
 * the query's source only.  A query is answered at most once.  Returns 0
 * and *ret_len = PP_DISC_ANSWER_LEN (never more than qlen), or -EINVAL,
 * -ENOBUFS, -ENOSYS, -EPROTO, -EBADMSG, -ETIME or -EALREADY.
 */
int pp_disc_answer_build(const struct pp_disc_key *key, struct pp_disc_node *n,
                         const uint8_t *query, size_t qlen, uint64_t now_ms,
                         uint16_t port, uint32_t workers,
                         uint8_t *out, size_t cap, size_t *ret_len);

/*
 * pp_disc_beacon_build - a BEACON for this node into out[0..cap), stamped
 * now_ms, or one ms after the previous beacon if the clock has not moved
 * on (receivers want each node's beacons strictly increasing).  Returns 0
 * and *ret_len = PP_DISC_BEACON_LEN, or -EINVAL, -ENOBUFS or -ENOSYS.
 */
int pp_disc_beacon_build(const struct pp_disc_key *key, struct pp_disc_node *n,
                         uint64_t now_ms, uint16_t port, uint32_t workers,
                         uint8_t *out, size_t cap, size_t *ret_len);

/****  Connection-attempt limiter  ****/

/*
 * pp_disc_limit_init - buckets that allow src_burst attempts to one
 * address at once, then one per src_ms, and all_burst attempts in all,
 * then one per all_ms, however many addresses answer.  Bursts 1..65536,
 * intervals 1..86400000 ms.  Returns 0 or -EINVAL.
 */
int pp_disc_limit_init(struct pp_disc_limit *l, uint32_t src_burst, uint32_t src_ms,
                       uint32_t all_burst, uint32_t all_ms);

/*
 * pp_disc_limit_allow - whether to try a connection to src now (now_ms
 * from any clock that does not go backwards; one that does only delays
 * refills).  Counts the attempt only when it returns true; one refused by
 * the overall bucket does not count against src.  The port is ignored,
 * and IPv4-mapped IPv6 counts as IPv4.  When the table is full, a source
 * whose bucket is back to full is forgotten first, else the one heard
 * from longest ago: a flood of new sources can only reset other sources'
 * buckets, never pass the overall one.  False for NULL, an uninitialised
 * limiter or a family other than AF_INET/AF_INET6.
 */
bool pp_disc_limit_allow(struct pp_disc_limit *l, const struct sockaddr_storage *src,
                         uint64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_DISC_H */
