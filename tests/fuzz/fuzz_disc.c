/*
 * Description: libFuzzer target for net/disc.c.  From one input it feeds
 * (a) the message bytes, as received, to pp_disc_type, the node's
 * pp_disc_answer_build and the client's pp_disc_answer_check and
 * pp_disc_beacon_check (none may accept: the input cannot know the key);
 * (b) a genuine query/answer/beacon exchange at input-chosen clock skews,
 * with at most one input-chosen byte altered (then each must be refused,
 * else accepted exactly when the skew is inside the window); and (c) the
 * limiter over input-chosen (source, time step) events, checking that the
 * overall bucket is never exceeded.  Never crashes, never leaks: all state
 * is static and reset per input.
 *
 * Input layout (missing bytes read as zero):
 *   [0]    ctl   bit 0  force magic, type and length right (reach the mac)
 *                bit 1  alter one byte of the genuine messages
 *                bit 2  run the limiter over the rest of the input
 *   [1..2] skew  i16 LE, in units of 256 ms, applied to the senders' clocks
 *   [3]    pos   which byte to alter; [4] xor mask (0 reads as 0x01)
 *   [5]    len   message length (mod PP_DISC_MAX_LEN + 16), then the message
 *   then the limiter's events: 2 bytes each, source then time step in ms.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "disc.h"
#include "secure.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define T0 1700000000000ull
#define MSG_MAX (PP_DISC_MAX_LEN + 16)

static const char fuzz_secret[] = "pp fuzz secret, not for use";

static struct pp_disc_client client;
static struct pp_disc_node node;
static struct pp_disc_limit limit;

struct input {
    const uint8_t *p;
    size_t n;
};

/* Take up to want bytes into out (zero-padded). */
static void take(struct input *in, uint8_t *out, size_t want)
{
    size_t n = in->n < want ? in->n : want;
    memcpy(out, in->p, n);
    memset(out + n, 0, want - n);
    in->p += n;
    in->n -= n;
}

static uint8_t take_byte(struct input *in)
{
    uint8_t b;
    take(in, &b, 1);
    return b;
}

/* Make m look like a message of type t to the cheap checks. */
static size_t force_head(uint8_t *m, enum pp_disc_type t)
{
    static const size_t lens[] = { 0, PP_DISC_QUERY_LEN, PP_DISC_ANSWER_LEN, PP_DISC_BEACON_LEN };
    memcpy(m, PP_DISC_MAGIC, 4);
    m[4] = (uint8_t)t;
    return lens[t];
}

/* (a) Input bytes as a datagram from a stranger. */
static void fuzz_raw(const struct pp_disc_key *key, uint8_t ctl, const uint8_t *msg, size_t len)
{
    uint8_t m[MSG_MAX], out[PP_DISC_MAX_LEN], q[PP_DISC_MAX_LEN];
    struct pp_disc_found f;
    size_t olen, qlen;

    int t = pp_disc_type(msg, len);
    if (t >= 0 && t != PP_DISC_QUERY && t != PP_DISC_ANSWER && t != PP_DISC_BEACON)
        abort();

    /* One query outstanding, so an answer could name it. */
    if (pp_disc_query_build(key, &client, T0, q, sizeof(q), &qlen) != 0)
        abort();

    for (int kind = PP_DISC_QUERY; kind <= PP_DISC_BEACON; kind++) {
        size_t mlen = len;
        memcpy(m, msg, len);
        memset(m + len, 0, sizeof(m) - len);
        if (ctl & 0x01)
            mlen = force_head(m, (enum pp_disc_type)kind);
        if (kind == PP_DISC_ANSWER && (ctl & 0x01))
            memcpy(m + 24, q + 16, PP_DISC_NONCE_LEN);  /* echo our nonce: reach the mac */
        int r;
        if (kind == PP_DISC_QUERY)
            r = pp_disc_answer_build(key, &node, m, mlen, T0, 60000, 4, out, sizeof(out), &olen);
        else if (kind == PP_DISC_ANSWER)
            r = pp_disc_answer_check(key, &client, m, mlen, T0, &f);
        else
            r = pp_disc_beacon_check(key, &client, m, mlen, T0, &f);
        if (r != -EPROTO && r != -EBADMSG)
            abort();  /* a stranger's bytes got past the mac */
    }
}

/* The result a genuine message stamped with skew should get. */
static int want_for(int64_t skew, bool altered)
{
    if (altered)
        return 1;  /* any error */
    return (skew < 0 ? -skew : skew) <= (int64_t)PP_DISC_WINDOW_MS ? 0 : -ETIME;
}

static void expect(int r, int want)
{
    if (want == 1 ? r >= 0 : r != want)
        abort();
    if (want == 1 && r != -EPROTO && r != -EBADMSG)
        abort();  /* one altered byte reads as forged or malformed, nothing else */
}

static void alter(uint8_t *m, size_t len, uint8_t pos, uint8_t mask)
{
    m[pos % len] ^= mask ? mask : 0x01;
}

/* (b) A genuine exchange, the senders' clocks skew ms from the receivers'. */
static void fuzz_genuine(const struct pp_disc_key *key, uint8_t ctl, int64_t skew, uint8_t pos,
                         uint8_t mask)
{
    uint8_t q[PP_DISC_MAX_LEN], a[PP_DISC_MAX_LEN], b[PP_DISC_MAX_LEN];
    size_t qlen, alen = 0, blen;
    struct pp_disc_found f;
    bool altered = ctl & 0x02;
    uint64_t now = T0 + 600000, sent = now + (uint64_t)skew;

    /* The client's query as sent, answered at the node's now. */
    if (pp_disc_query_build(key, &client, sent, q, sizeof(q), &qlen) != 0)
        abort();
    if (altered)
        alter(q, qlen, pos, mask);
    int r = pp_disc_answer_build(key, &node, q, qlen, now, 60000, 4, a, sizeof(a), &alen);
    expect(r, want_for(skew, altered));
    if (r == 0 && alen > qlen)
        abort();  /* amplification */

    /* An answer from a node whose clock is skewed, to an outstanding query. */
    if (pp_disc_query_build(key, &client, now, q, sizeof(q), &qlen) != 0 ||
        pp_disc_answer_build(key, &node, q, qlen, sent, 60001, 9, a, sizeof(a), &alen) != want_for(skew, false))
        abort();
    if (alen && want_for(skew, false) == 0) {
        if (altered)
            alter(a, alen, pos, mask);
        r = pp_disc_answer_check(key, &client, a, alen, now, &f);
        expect(r, want_for(skew, altered));
        if (r == 0 && (f.port != 60001 || f.workers != 9 ||
                       pp_disc_answer_check(key, &client, a, alen, now, &f) != -EALREADY))
            abort();
    }

    if (pp_disc_beacon_build(key, &node, sent, 60002, 3, b, sizeof(b), &blen) != 0)
        abort();
    if (altered)
        alter(b, blen, pos, mask);
    r = pp_disc_beacon_check(key, &client, b, blen, now, &f);
    expect(r, want_for(skew, altered));
    if (r == 0 && pp_disc_beacon_check(key, &client, b, blen, now, &f) != -EALREADY)
        abort();
}

/* (c) The limiter: never more than the overall bucket allows. */
static void fuzz_limit(struct input *in)
{
    const uint32_t burst = 4, all_ms = 50;
    if (pp_disc_limit_init(&limit, 2, 1000, burst, all_ms) != 0)
        abort();
    uint64_t t = 1000, start = 0, latest = 0, allowed = 0;
    bool first = true;
    while (in->n >= 2) {
        uint8_t src = take_byte(in), step = take_byte(in);
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        if (src & 0x80) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            a->sin6_family = AF_INET6;
            a->sin6_addr.s6_addr[15] = src & 0x3f;
            if (src & 0x40) {  /* IPv4-mapped */
                a->sin6_addr.s6_addr[10] = a->sin6_addr.s6_addr[11] = 0xff;
            }
        } else if (src & 0x40) {
            ss.ss_family = AF_UNIX;
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            a->sin_family = AF_INET;
            a->sin_addr.s_addr = htonl(0x0a000000u | src);
        }
        /* Steps back now and then: a clock that goes back must only pause. */
        t = step == 0xff ? t - (t > 100 ? 100 : 0) : t + step;
        /* The buckets' clock starts at the first call they take (an
         * AF_UNIX source is refused before it reaches them). */
        if (first && ss.ss_family != AF_UNIX) {
            start = latest = t;
            first = false;
        }
        if (t > latest)
            latest = t;
        bool ok = pp_disc_limit_allow(&limit, &ss, t);
        if (ok && ss.ss_family == AF_UNIX)
            abort();
        allowed += ok;
        /* Credit accrues only as the clock reaches new highs. */
        if (allowed > burst + (latest - start) / all_ms)
            abort();  /* the overall cap was passed */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, size };
    uint8_t ctl = take_byte(&in);
    uint8_t s[2];
    take(&in, s, 2);
    int64_t skew = (int64_t)(int16_t)(s[0] | s[1] << 8) * 256;
    uint8_t pos = take_byte(&in), mask = take_byte(&in);
    size_t len = take_byte(&in) % MSG_MAX;
    uint8_t msg[MSG_MAX];
    take(&in, msg, len);

    struct pp_sec_psk psk;
    struct pp_disc_key key;
    if (pp_sec_psk_init(&psk, fuzz_secret, sizeof(fuzz_secret) - 1) != 0 ||
        pp_disc_key_init(&key, &psk) != 0 || pp_disc_client_init(&client) != 0 ||
        pp_disc_node_init(&node) != 0)
        abort();
    pp_sec_psk_wipe(&psk);

    fuzz_raw(&key, ctl, msg, len);
    fuzz_genuine(&key, ctl, skew, pos, mask);
    pp_disc_key_wipe(&key);
    if (ctl & 0x04)
        fuzz_limit(&in);
    return 0;
}
