/*
 * disc.c - authenticated discovery messages and the connection-attempt
 * limiter (disc.h).
 *
 * Every check reads only the bytes it was given, after the length has
 * been found exact, and changes no state until the message has passed
 * every step; so a refused message leaves the state as it was, and the
 * fuzzer can feed anything.
 */
#include "disc.h"

#include <errno.h>
#include <string.h>

#include <netinet/in.h>
#include <sodium.h>

/* The header sizes things without <sodium.h>; hold it to libsodium's. */
_Static_assert(crypto_auth_BYTES == PP_DISC_MAC_LEN && crypto_auth_KEYBYTES == PP_SEC_KEY_LEN,
               "crypto_auth is not HMAC-SHA-512-256");

/* The layouts of disc.h, as offsets. */
#define OFF_MAGIC   0u
#define OFF_TYPE    4u
#define OFF_FLAGS   5u
#define OFF_PORT    6u   /* answer, beacon; a zero u16 in a query */
#define OFF_TS      8u
#define OFF_WORKERS 16u  /* answer, beacon; then a zero u32 at 20 */
#define OFF_QNONCE  16u  /* query: its nonce; then zero padding */
#define Q_PAD       (OFF_QNONCE + PP_DISC_NONCE_LEN)
#define A_QNONCE    24u
#define A_ID        40u
#define A_NONCE     56u
#define B_ID        24u
#define B_NONCE     40u

_Static_assert(PP_DISC_QUERY_LEN == Q_PAD + 64 + PP_DISC_MAC_LEN, "query layout");
_Static_assert(PP_DISC_ANSWER_LEN == A_NONCE + PP_DISC_NONCE_LEN + PP_DISC_MAC_LEN,
               "answer layout");
_Static_assert(PP_DISC_BEACON_LEN == B_NONCE + PP_DISC_NONCE_LEN + PP_DISC_MAC_LEN,
               "beacon layout");
/* No amplification: whoever can make a node answer gets back at most
 * what they sent. */
_Static_assert(PP_DISC_ANSWER_LEN <= PP_DISC_QUERY_LEN, "an answer must not outgrow its query");
_Static_assert(PP_DISC_MAX_LEN >= PP_DISC_QUERY_LEN && PP_DISC_MAX_LEN >= PP_DISC_ANSWER_LEN &&
               PP_DISC_MAX_LEN >= PP_DISC_BEACON_LEN, "PP_DISC_MAX_LEN");
/* Ring arithmetic below uses the free-running index modulo the size. */
_Static_assert((PP_DISC_SEEN_MAX & (PP_DISC_SEEN_MAX - 1)) == 0, "PP_DISC_SEEN_MAX: a power of 2");

/****  Encoding helpers  ****/

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

static size_t type_len(unsigned type)
{
    switch (type) {
    case PP_DISC_QUERY:  return PP_DISC_QUERY_LEN;
    case PP_DISC_ANSWER: return PP_DISC_ANSWER_LEN;
    case PP_DISC_BEACON: return PP_DISC_BEACON_LEN;
    default:             return 0;
    }
}

/* Magic, type and flags into a zeroed message. */
static void put_head(uint8_t *m, enum pp_disc_type type, uint64_t ts)
{
    memcpy(m + OFF_MAGIC, PP_DISC_MAGIC, 4);
    m[OFF_TYPE] = (uint8_t)type;
    m[OFF_FLAGS] = 0;
    put64(m + OFF_TS, ts);
}

/* The mac over m[0..len - MAC) into its last PP_DISC_MAC_LEN bytes. */
static void seal(const struct pp_disc_key *key, uint8_t *m, size_t len)
{
    crypto_auth(m + len - PP_DISC_MAC_LEN, m, len - PP_DISC_MAC_LEN, key->k);
}

/*
 * Steps 1-4 of disc.h for a message that should be of type `want`: form,
 * then mac (constant time), then the fields only an authentic sender can
 * have set, then the time.  Returns 0 or -EPROTO/-EBADMSG/-ETIME.
 */
static int open_msg(const struct pp_disc_key *key, enum pp_disc_type want,
                    const uint8_t *m, size_t len, uint64_t now_ms)
{
    if (pp_disc_type(m, len) != (int)want)
        return -EPROTO;
    if (crypto_auth_verify(m + len - PP_DISC_MAC_LEN, m, len - PP_DISC_MAC_LEN, key->k) != 0)
        return -EBADMSG;

    /* From here the sender knows the secret; what is wrong now is a
     * version mismatch, not an attack. */
    if (m[OFF_FLAGS] != 0)
        return -EPROTO;
    if (want == PP_DISC_QUERY) {
        if (get16(m + OFF_PORT) != 0 ||
            !all_zero(m + Q_PAD, PP_DISC_QUERY_LEN - PP_DISC_MAC_LEN - Q_PAD))
            return -EPROTO;
    } else if (get16(m + OFF_PORT) == 0 || get32(m + OFF_WORKERS + 4) != 0) {
        return -EPROTO;
    }

    uint64_t ts = get64(m + OFF_TS);
    uint64_t skew = ts > now_ms ? ts - now_ms : now_ms - ts;
    return skew <= PP_DISC_WINDOW_MS ? 0 : -ETIME;
}

/****  Replay set  ****/

/*
 * Whether (nonce, ts) may be accepted: not seen, and above the floor.
 * Every accepted entry is either still in the ring or was pushed out,
 * and then floor >= its ts: so a replay is caught either way.
 */
static bool seen_fresh(const struct pp_disc_seen *s, const uint8_t nonce[PP_DISC_NONCE_LEN],
                       uint64_t ts)
{
    if (ts <= s->floor)
        return false;
    for (uint32_t i = 0; i < s->count; i++)
        if (memcmp(s->nonce[i], nonce, PP_DISC_NONCE_LEN) == 0)
            return false;
    return true;
}

static void seen_add(struct pp_disc_seen *s, const uint8_t nonce[PP_DISC_NONCE_LEN], uint64_t ts)
{
    uint32_t slot = s->next % PP_DISC_SEEN_MAX;
    if (s->count == PP_DISC_SEEN_MAX) {
        if (s->ts[slot] > s->floor)
            s->floor = s->ts[slot];
    } else {
        s->count++;
    }
    memcpy(s->nonce[slot], nonce, PP_DISC_NONCE_LEN);
    s->ts[slot] = ts;
    /* Wraps at 2^32, a multiple of the (power of 2) size: harmless. */
    s->next++;
}

/****  Keys and state  ****/

int pp_disc_key_init(struct pp_disc_key *key, const struct pp_sec_psk *psk)
{
    if (!key)
        return -EINVAL;
    struct pp_disc_key k;
    int r = pp_sec_psk_disc_key(psk, k.k);
    if (r == 0) {
        k.ready = true;
        *key = k;
    }
    sodium_memzero(&k, sizeof(k));
    return r;
}

void pp_disc_key_wipe(struct pp_disc_key *key)
{
    if (key)
        sodium_memzero(key, sizeof(*key));
}

int pp_disc_client_init(struct pp_disc_client *c)
{
    if (!c)
        return -EINVAL;
    memset(c, 0, sizeof(*c));
    c->ready = true;
    return 0;
}

int pp_disc_node_init(struct pp_disc_node *n)
{
    if (!n)
        return -EINVAL;
    if (sodium_init() < 0)
        return -ENOSYS;
    memset(n, 0, sizeof(*n));
    randombytes_buf(n->id, sizeof(n->id));
    n->ready = true;
    return 0;
}

int pp_disc_type(const uint8_t *p, size_t len)
{
    if (!p || len < OFF_TYPE + 1 || memcmp(p + OFF_MAGIC, PP_DISC_MAGIC, 4) != 0)
        return -EPROTO;
    size_t want = type_len(p[OFF_TYPE]);
    return want != 0 && len == want ? p[OFF_TYPE] : -EPROTO;
}

/****  Client  ****/

int pp_disc_query_build(const struct pp_disc_key *key, struct pp_disc_client *c,
                        uint64_t now_ms, uint8_t *out, size_t cap, size_t *ret_len)
{
    if (!key || !key->ready || !c || !c->ready || !out || !ret_len)
        return -EINVAL;
    if (cap < PP_DISC_QUERY_LEN)
        return -ENOBUFS;
    if (sodium_init() < 0)
        return -ENOSYS;

    uint8_t m[PP_DISC_QUERY_LEN] = {0};
    put_head(m, PP_DISC_QUERY, now_ms);
    randombytes_buf(m + OFF_QNONCE, PP_DISC_NONCE_LEN);
    seal(key, m, sizeof(m));

    /* Replacing the oldest slot (round robin) drops the query that has
     * had longest to collect its answers. */
    uint32_t slot = c->q_next++ % PP_DISC_OUTSTANDING;
    memcpy(c->q[slot].nonce, m + OFF_QNONCE, PP_DISC_NONCE_LEN);
    c->q[slot].sent_ms = now_ms;
    c->q[slot].live = true;

    memcpy(out, m, sizeof(m));
    *ret_len = sizeof(m);
    return 0;
}

/* The outstanding query that qnonce names, or -1.  Age by the client's
 * own clock: the node's has no say in how long we listen. */
static int query_find(const struct pp_disc_client *c, const uint8_t *qnonce, uint64_t now_ms)
{
    for (unsigned i = 0; i < PP_DISC_OUTSTANDING; i++) {
        if (!c->q[i].live || memcmp(c->q[i].nonce, qnonce, PP_DISC_NONCE_LEN) != 0)
            continue;
        /* A clock that went back reads as age 0, not as a huge age. */
        uint64_t age = now_ms > c->q[i].sent_ms ? now_ms - c->q[i].sent_ms : 0;
        return age <= PP_DISC_QUERY_TTL_MS ? (int)i : -1;
    }
    return -1;
}

static void found_fill(const uint8_t *m, const uint8_t *id, enum pp_disc_type type,
                       struct pp_disc_found *ret)
{
    memcpy(ret->node_id, id, PP_DISC_ID_LEN);
    ret->port = get16(m + OFF_PORT);
    ret->workers = get32(m + OFF_WORKERS);
    ret->type = (uint8_t)type;
}

int pp_disc_answer_check(const struct pp_disc_key *key, struct pp_disc_client *c,
                         const uint8_t *ans, size_t len, uint64_t now_ms,
                         struct pp_disc_found *ret)
{
    if (!key || !key->ready || !c || !c->ready || (!ans && len) || !ret)
        return -EINVAL;
    int r = open_msg(key, PP_DISC_ANSWER, ans, len, now_ms);
    if (r < 0)
        return r;
    if (query_find(c, ans + A_QNONCE, now_ms) < 0)
        return -ESRCH;
    uint64_t ts = get64(ans + OFF_TS);
    if (!seen_fresh(&c->seen, ans + A_NONCE, ts))
        return -EALREADY;

    seen_add(&c->seen, ans + A_NONCE, ts);
    found_fill(ans, ans + A_ID, PP_DISC_ANSWER, ret);
    return 0;
}

/* The slot of node_id in c->nodes, or -1. */
static int node_find(const struct pp_disc_client *c, const uint8_t *id)
{
    for (unsigned i = 0; i < PP_DISC_NODES_MAX; i++)
        if (c->nodes[i].live && memcmp(c->nodes[i].id, id, PP_DISC_ID_LEN) == 0)
            return (int)i;
    return -1;
}

/* A slot for a node not in the table: a free one, else the one whose
 * last beacon is oldest (likely a node that has gone).  Its replays are
 * then caught by the seen ring alone. */
static unsigned node_slot(const struct pp_disc_client *c)
{
    unsigned best = 0;
    for (unsigned i = 0; i < PP_DISC_NODES_MAX; i++) {
        if (!c->nodes[i].live)
            return i;
        if (c->nodes[i].last_ts < c->nodes[best].last_ts)
            best = i;
    }
    return best;
}

int pp_disc_beacon_check(const struct pp_disc_key *key, struct pp_disc_client *c,
                         const uint8_t *b, size_t len, uint64_t now_ms,
                         struct pp_disc_found *ret)
{
    if (!key || !key->ready || !c || !c->ready || (!b && len) || !ret)
        return -EINVAL;
    int r = open_msg(key, PP_DISC_BEACON, b, len, now_ms);
    if (r < 0)
        return r;
    uint64_t ts = get64(b + OFF_TS);
    int slot = node_find(c, b + B_ID);
    if (slot >= 0 && ts <= c->nodes[slot].last_ts)
        return -EALREADY;
    if (!seen_fresh(&c->seen, b + B_NONCE, ts))
        return -EALREADY;

    seen_add(&c->seen, b + B_NONCE, ts);
    if (slot < 0) {
        slot = (int)node_slot(c);
        memcpy(c->nodes[slot].id, b + B_ID, PP_DISC_ID_LEN);
        c->nodes[slot].live = true;
    }
    c->nodes[slot].last_ts = ts;
    found_fill(b, b + B_ID, PP_DISC_BEACON, ret);
    return 0;
}

int pp_disc_target(const struct sockaddr_storage *src, socklen_t srclen, uint16_t port,
                   struct sockaddr_storage *ret)
{
    if (!src || !ret || port == 0)
        return -EINVAL;
    struct sockaddr_storage t = {0};
    if (src->ss_family == AF_INET) {
        if (srclen < (socklen_t)sizeof(struct sockaddr_in))
            return -EINVAL;
        memcpy(&t, src, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)&t)->sin_port = htons(port);
    } else if (src->ss_family == AF_INET6) {
        if (srclen < (socklen_t)sizeof(struct sockaddr_in6))
            return -EINVAL;
        memcpy(&t, src, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&t)->sin6_port = htons(port);
    } else {
        return -EAFNOSUPPORT;
    }
    *ret = t;
    return 0;
}

/****  Node  ****/

int pp_disc_answer_build(const struct pp_disc_key *key, struct pp_disc_node *n,
                         const uint8_t *query, size_t qlen, uint64_t now_ms,
                         uint16_t port, uint32_t workers,
                         uint8_t *out, size_t cap, size_t *ret_len)
{
    if (!key || !key->ready || !n || !n->ready || (!query && qlen) || port == 0 ||
        !out || !ret_len)
        return -EINVAL;
    int r = open_msg(key, PP_DISC_QUERY, query, qlen, now_ms);
    if (r < 0)
        return r;
    /* Cannot fail after open_msg (the length is exact and the sizes are
     * checked at compile time), but the rule is worth keeping at run
     * time too: never send more than was received. */
    if (qlen < PP_DISC_ANSWER_LEN)
        return -EPROTO;
    if (cap < PP_DISC_ANSWER_LEN)
        return -ENOBUFS;
    uint64_t qts = get64(query + OFF_TS);
    if (!seen_fresh(&n->seen, query + OFF_QNONCE, qts))
        return -EALREADY;
    if (sodium_init() < 0)
        return -ENOSYS;

    uint8_t m[PP_DISC_ANSWER_LEN] = {0};
    put_head(m, PP_DISC_ANSWER, now_ms);
    put16(m + OFF_PORT, port);
    put32(m + OFF_WORKERS, workers);
    memcpy(m + A_QNONCE, query + OFF_QNONCE, PP_DISC_NONCE_LEN);
    memcpy(m + A_ID, n->id, PP_DISC_ID_LEN);
    randombytes_buf(m + A_NONCE, PP_DISC_NONCE_LEN);
    seal(key, m, sizeof(m));

    seen_add(&n->seen, query + OFF_QNONCE, qts);
    memcpy(out, m, sizeof(m));
    *ret_len = sizeof(m);
    return 0;
}

int pp_disc_beacon_build(const struct pp_disc_key *key, struct pp_disc_node *n,
                         uint64_t now_ms, uint16_t port, uint32_t workers,
                         uint8_t *out, size_t cap, size_t *ret_len)
{
    if (!key || !key->ready || !n || !n->ready || port == 0 || !out || !ret_len)
        return -EINVAL;
    if (cap < PP_DISC_BEACON_LEN)
        return -ENOBUFS;
    if (sodium_init() < 0)
        return -ENOSYS;

    /* Strictly increasing, or receivers take the second beacon of one
     * millisecond for a replay.  After the clock steps back this runs
     * ahead of it, and receivers refuse (-ETIME) until it catches up. */
    uint64_t ts = now_ms > n->beacon_ts ? now_ms : n->beacon_ts + 1;
    uint8_t m[PP_DISC_BEACON_LEN] = {0};
    put_head(m, PP_DISC_BEACON, ts);
    put16(m + OFF_PORT, port);
    put32(m + OFF_WORKERS, workers);
    memcpy(m + B_ID, n->id, PP_DISC_ID_LEN);
    randombytes_buf(m + B_NONCE, PP_DISC_NONCE_LEN);
    seal(key, m, sizeof(m));

    n->beacon_ts = ts;
    memcpy(out, m, sizeof(m));
    *ret_len = sizeof(m);
    return 0;
}

/****  Connection-attempt limiter  ****/

/*
 * Each bucket banks milliseconds of refill instead of fractional tokens:
 * an attempt costs refill_ms of credit, credit grows by one per ms up to
 * burst * refill_ms.  Integer-exact, and no division.
 */
static uint64_t refill(uint64_t credit, uint64_t last_ms, uint64_t now_ms, uint64_t cap)
{
    uint64_t dt = now_ms > last_ms ? now_ms - last_ms : 0;
    return dt >= cap - credit ? cap : credit + dt;
}

/* The 16-byte key of an address: IPv6 as is, IPv4 as ::ffff:a.b.c.d,
 * so that one host is one bucket whichever socket family heard it. */
static bool addr_key(const struct sockaddr_storage *src, uint8_t key[16])
{
    static const uint8_t mapped[12] = { [10] = 0xff, [11] = 0xff };
    if (src->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)src;
        memcpy(key, mapped, sizeof(mapped));
        memcpy(key + 12, &a->sin_addr, 4);
        return true;
    }
    if (src->ss_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)src)->sin6_addr, 16);
        return true;
    }
    return false;
}

int pp_disc_limit_init(struct pp_disc_limit *l, uint32_t src_burst, uint32_t src_ms,
                       uint32_t all_burst, uint32_t all_ms)
{
    /* The bounds keep burst * ms far below 2^64 (2^16 * 2^27). */
    const uint32_t burst_max = 65536, ms_max = 86400000;
    if (!l || src_burst == 0 || src_burst > burst_max || all_burst == 0 ||
        all_burst > burst_max || src_ms == 0 || src_ms > ms_max || all_ms == 0 ||
        all_ms > ms_max)
        return -EINVAL;
    memset(l, 0, sizeof(*l));
    l->src_refill_ms = src_ms;
    l->src_cap = (uint64_t)src_burst * src_ms;
    l->all_refill_ms = all_ms;
    l->all_cap = (uint64_t)all_burst * all_ms;
    l->all_credit = l->all_cap;
    l->ready = true;
    return 0;
}

/* The slot for key: its own, else a free one, else one whose bucket is
 * full again (forgetting it changes nothing), else the stalest. */
static unsigned limit_slot(const struct pp_disc_limit *l, const uint8_t key[16],
                           uint64_t now_ms, bool *ret_known)
{
    unsigned spare = PP_DISC_LIMIT_SLOTS, stalest = 0;
    for (unsigned i = 0; i < PP_DISC_LIMIT_SLOTS; i++) {
        if (!l->src[i].live) {
            if (spare == PP_DISC_LIMIT_SLOTS)
                spare = i;
            continue;
        }
        if (memcmp(l->src[i].addr, key, 16) == 0) {
            *ret_known = true;
            return i;
        }
        if (spare == PP_DISC_LIMIT_SLOTS &&
            refill(l->src[i].credit, l->src[i].last_ms, now_ms, l->src_cap) == l->src_cap)
            spare = i;
        if (l->src[i].last_ms < l->src[stalest].last_ms)
            stalest = i;
    }
    *ret_known = false;
    return spare < PP_DISC_LIMIT_SLOTS ? spare : stalest;
}

bool pp_disc_limit_allow(struct pp_disc_limit *l, const struct sockaddr_storage *src,
                         uint64_t now_ms)
{
    uint8_t key[16];
    if (!l || !l->ready || !src || !addr_key(src, key))
        return false;

    bool known;
    unsigned i = limit_slot(l, key, now_ms, &known);
    uint64_t src_credit = known ? refill(l->src[i].credit, l->src[i].last_ms, now_ms, l->src_cap)
                                : l->src_cap;
    uint64_t all_credit = refill(l->all_credit, l->all_last_ms, now_ms, l->all_cap);

    /* The overall bucket refills whether or not this attempt passes:
     * last_ms only ever moves forward, so a clock step back is a pause. */
    l->all_credit = all_credit;
    if (now_ms > l->all_last_ms)
        l->all_last_ms = now_ms;
    if (known) {
        l->src[i].credit = src_credit;
        if (now_ms > l->src[i].last_ms)
            l->src[i].last_ms = now_ms;
    }
    if (src_credit < l->src_refill_ms || all_credit < l->all_refill_ms)
        return false;

    if (!known) {
        memcpy(l->src[i].addr, key, 16);
        l->src[i].last_ms = now_ms;
        l->src[i].live = true;
    }
    l->src[i].credit = src_credit - l->src_refill_ms;
    l->all_credit = all_credit - l->all_refill_ms;
    return true;
}
