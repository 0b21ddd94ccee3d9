/*
 * Description: libFuzzer target for net/secure.c.  From one input it
 * drives (a) the node's side of the handshake with input-derived m1 and m3
 * (and a client's finish with an input-derived m2), or a genuine exchange
 * with one input-chosen byte altered, and (b) the record decoder over the
 * rest of the input, fed in input-derived slices, either as raw bytes or
 * as plaintext sealed first (then the decoder must give it back exactly).
 * Never crashes, never leaks: everything is wiped and freed per input.
 *
 * Input layout (missing bytes read as zero):
 *   [0] ctl   bit 0  AES-256-GCM records (if this CPU has it)
 *             bit 1  seal mode: the stream is plaintext, sealed here
 *             bit 2  start the record sequence two short of UINT64_MAX
 *             bit 3  force m1's magic and flags valid (reach the tag code)
 *             bit 4  genuine client for the handshake
 *             bit 5  alter one byte (genuine m3, or the sealed stream)
 *             bit 6  handshake messages take input-chosen lengths
 *             bit 7  slices of 1..8 bytes (else 1..4096)
 *   [1] seed  for the slicing and the byte to alter
 *   [2] fail  plain() fails on this record (1-based; 0 never)
 *   then m1 (37 bytes, or 1 length byte + that many), m2 (65 / chosen),
 *   m3 (32 / chosen), and the stream.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "secure.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MSG_MAX 96  /* longest input-chosen handshake message */

static const char fuzz_secret[] = "pp fuzz secret, not for use";

struct input {
    const uint8_t *p;
    size_t n;
};

/* Take up to want bytes into out (zero-padded); returns want. */
static size_t take(struct input *in, uint8_t *out, size_t want)
{
    size_t n = in->n < want ? in->n : want;
    memcpy(out, in->p, n);
    memset(out + n, 0, want - n);
    in->p += n;
    in->n -= n;
    return want;
}

static uint8_t take_byte(struct input *in)
{
    uint8_t b;
    take(in, &b, 1);
    return b;
}

/* A handshake message: its fixed length, or one the input chooses. */
static size_t take_msg(struct input *in, uint8_t out[MSG_MAX], size_t fixed, bool chosen)
{
    size_t len = chosen ? take_byte(in) % MSG_MAX : fixed;
    return take(in, out, len);
}

static uint32_t next_rand(uint32_t *s)
{
    /* xorshift32: deterministic per input, so crashes reproduce. */
    uint32_t x = *s ? *s : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void fuzz_handshake(uint8_t ctl, uint32_t *rng, const struct pp_sec_psk *psk,
                           struct input *in)
{
    uint8_t m1[MSG_MAX], m2[MSG_MAX], m3[MSG_MAX];
    uint8_t out2[PP_SEC_M2_LEN], out3[PP_SEC_M3_LEN];
    bool chosen = ctl & 0x40;
    size_t l1 = take_msg(in, m1, PP_SEC_M1_LEN, chosen);
    size_t l2 = take_msg(in, m2, PP_SEC_M2_LEN, chosen);
    size_t l3 = take_msg(in, m3, PP_SEC_M3_LEN, chosen);
    struct pp_sec_hs node = {0}, client = {0};
    struct pp_sec_dir tx, rx;

    if (ctl & 0x10) {
        /* A genuine client, with at most one byte of its m3 altered. */
        if (pp_sec_client_start(&client, psk, m1) == 0 &&
            pp_sec_node_reply(&node, psk, m1, PP_SEC_M1_LEN, out2) == 0 &&
            pp_sec_client_finish(&client, out2, PP_SEC_M2_LEN, out3) == 0) {
            if (ctl & 0x20)
                out3[next_rand(rng) % PP_SEC_M3_LEN] ^= (uint8_t)(1u << (next_rand(rng) % 8));
            int r = pp_sec_node_finish(&node, out3, PP_SEC_M3_LEN);
            if ((r == 0) == !!(ctl & 0x20))
                abort();  /* altered m3 accepted, or a genuine one refused */
            if (r == 0 && pp_sec_hs_split(&node, &tx, &rx) != 0)
                abort();
            pp_sec_hs_split(&client, &tx, &rx);
        }
    } else {
        if (ctl & 0x08 && l1 >= 5) {
            memcpy(m1, PP_SEC_MAGIC, 4);
            m1[4] &= PP_SEC_M1_F_KNOWN;
        }
        if (pp_sec_node_reply(&node, psk, m1, l1, out2) == 0 &&
            pp_sec_node_finish(&node, m3, l3) == 0)
            abort();  /* an m3 from the input passed: the tag is broken */
        if (pp_sec_client_start(&client, psk, m1) == 0 &&
            pp_sec_client_finish(&client, m2, l2, out3) == 0)
            abort();  /* likewise for m2 */
        /* Out of order on whatever state is left. */
        pp_sec_hs_split(&node, &tx, &rx);
        pp_sec_client_finish(&node, m2, l2, out3);
    }
    pp_sec_hs_wipe(&node);
    pp_sec_hs_wipe(&client);
    memset(&tx, 0, sizeof(tx));
    memset(&rx, 0, sizeof(rx));
}

struct sink {
    const uint8_t *want;  /* expected plaintext, or NULL (raw mode) */
    size_t want_len, got;
    unsigned recs, fail_at;
};

static int plain_cb(void *ctx, const uint8_t *p, size_t n)
{
    struct sink *s = ctx;
    if (n == 0 || n > PP_SEC_REC_MAX)
        abort();
    if (++s->recs == s->fail_at)
        return -1;  /* -EPERM: must become the sticky error */
    if (s->want && (s->got + n > s->want_len || memcmp(s->want + s->got, p, n) != 0))
        abort();  /* decoded bytes differ from what was sealed */
    s->got += n;
    return 0;
}

/* Seal the plaintext in input-chosen pieces, so several records.  Sets
 * *ret_len to the wire bytes and *ret_done to the plaintext they carry
 * (less than n once the sequence is spent). */
static uint8_t *seal_stream(struct pp_sec_tx *tx, const uint8_t *p, size_t n, uint32_t *rng,
                            size_t *ret_len, size_t *ret_done)
{
    /* Every piece is at least one byte and one record. */
    size_t cap = n * (1 + PP_SEC_REC_OVERHEAD);
    uint8_t *out = malloc(cap ? cap : 1);
    size_t done = 0, len = 0;
    if (!out)
        return NULL;
    while (done < n) {
        size_t piece = 1 + next_rand(rng) % 300, got = 0;
        if (piece > n - done)
            piece = n - done;
        if (pp_sec_seal(tx, p + done, piece, out + len, cap - len, &got) != 0)
            break;  /* -EOVERFLOW near the end of the sequence */
        done += piece;
        len += got;
    }
    *ret_len = len;
    *ret_done = done;
    return out;
}

static void fuzz_records(uint8_t ctl, uint32_t *rng, unsigned fail_at, const struct input *in)
{
    struct pp_sec_dir dir = { .cipher = (ctl & 0x01) ? PP_SEC_AES256GCM : PP_SEC_CHACHA20 };
    struct pp_sec_tx tx;
    struct pp_sec_rx rx;
    struct sink sink = { .fail_at = fail_at };
    uint8_t *sealed = NULL;
    const uint8_t *stream = in->p;
    size_t len = in->n;
    bool exact = false;

    for (unsigned i = 0; i < PP_SEC_KEY_LEN; i++)
        dir.key[i] = (uint8_t)i;
    dir.seq = (ctl & 0x04) ? UINT64_MAX - 2 : 0;
    if (pp_sec_rx_init(&rx, &dir) != 0) {
        dir.cipher = PP_SEC_CHACHA20;  /* no AES-NI here */
        if (pp_sec_rx_init(&rx, &dir) != 0)
            return;
    }
    if (ctl & 0x02) {
        if (pp_sec_tx_init(&tx, &dir) != 0)
            goto out;
        sealed = seal_stream(&tx, in->p, in->n, rng, &len, &sink.want_len);
        pp_sec_tx_exit(&tx);
        if (!sealed)
            goto out;
        stream = sealed;
        sink.want = in->p;
        if ((ctl & 0x20) && len)
            sealed[next_rand(rng) % len] ^= (uint8_t)(1u << (next_rand(rng) % 8));
        else
            exact = fail_at == 0;
    }

    size_t max = (ctl & 0x80) ? 8 : 4096, pos = 0;
    int r = 0;
    while (pos < len) {
        size_t n = 1 + next_rand(rng) % max;
        if (n > len - pos)
            n = len - pos;
        r = pp_sec_rx_feed(&rx, stream + pos, n, plain_cb, &sink);
        if (r < 0 && (pp_sec_rx_error(&rx) == NULL || pp_sec_rx_feed(&rx, stream, 1, plain_cb, &sink) != r))
            abort();  /* errors carry a reason and stay */
        if (r < 0)
            break;
        pos += n;
    }
    if (exact && (r < 0 || sink.got != sink.want_len || !pp_sec_rx_idle(&rx)))
        abort();  /* an untouched sealed stream must come back whole */
    struct pp_sec_dir exported;
    pp_sec_rx_export(&rx, &exported);
    memset(&exported, 0, sizeof(exported));
out:
    free(sealed);
    pp_sec_rx_exit(&rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, size };
    uint8_t ctl = take_byte(&in);
    uint32_t rng = take_byte(&in) | (uint32_t)size << 8;
    unsigned fail_at = take_byte(&in);
    struct pp_sec_psk psk;

    if (pp_sec_psk_init(&psk, fuzz_secret, sizeof(fuzz_secret) - 1) != 0)
        abort();
    fuzz_handshake(ctl, &rng, &psk, &in);
    pp_sec_psk_wipe(&psk);
    fuzz_records(ctl, &rng, fail_at, &in);
    return 0;
}
