/*
 * secure.c - the PSK handshake and the record layer (secure.h).
 *
 * Everything secret lives in caller-owned structs and is wiped with
 * sodium_memzero on every way out; the only allocation is the receiver's
 * record buffer.  The record decoder follows wire.c's shape: a two-state
 * machine (length, body) that checks the length the moment its bytes are
 * in, so a peer can never make us buffer more than one maximal record,
 * and that stops for good at the first bad byte.
 */
#include "secure.h"

#include "wire.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* The header sizes things without <sodium.h>; hold it to libsodium's. */
_Static_assert(sizeof(crypto_aead_aes256gcm_state) <= PP_SEC_AES_STATE_SIZE,
               "PP_SEC_AES_STATE_SIZE too small for this libsodium");
_Static_assert(_Alignof(crypto_aead_aes256gcm_state) <= 16,
               "crypto_aead_aes256gcm_state needs more than 16-byte alignment");
_Static_assert(crypto_auth_BYTES == PP_SEC_M3_LEN && crypto_auth_KEYBYTES == PP_SEC_KEY_LEN,
               "crypto_auth is not HMAC-SHA-512-256");
_Static_assert(crypto_kdf_KEYBYTES == PP_SEC_KEY_LEN && crypto_kdf_CONTEXTBYTES == 8,
               "unexpected crypto_kdf sizes");
_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == PP_SEC_TAG_LEN &&
               crypto_aead_aes256gcm_ABYTES == PP_SEC_TAG_LEN,
               "AEAD tag is not 16 bytes");
_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12 &&
               crypto_aead_aes256gcm_NPUBBYTES == 12,
               "AEAD nonce is not 12 bytes");
_Static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == PP_SEC_KEY_LEN &&
               crypto_aead_aes256gcm_KEYBYTES == PP_SEC_KEY_LEN,
               "AEAD key is not 32 bytes");
_Static_assert(PP_SEC_M1_LEN == 4 + 1 + PP_SEC_NONCE_LEN &&
               PP_SEC_M2_LEN == PP_SEC_NONCE_LEN + 1 + crypto_auth_BYTES,
               "handshake message sizes");

#define REC_BODY_MAX (PP_SEC_REC_MAX + PP_SEC_TAG_LEN)  /* largest L */
#define AEAD_NONCE_LEN 12u

/* Domain labels.  Each keyed use of the secret hashes its own label first,
 * so no output of one use can stand in for another's. */
static const char label_psk[] = "pp-v1 psk";
static const char label_node[] = "pp-v1 node";
static const char label_client[] = "pp-v1 client";
static const char label_keys[] = "pp-v1 keys";
static const char label_disc[] = "pp-v1 disc";
static const char kdf_context[crypto_kdf_CONTEXTBYTES] = { 'p', 'p', '-', 'v', '1', 'p', 's', 'k' };
#define LABEL_LEN(l) (sizeof(l) - 1)  /* without the NUL */

enum { ROLE_NONE, ROLE_CLIENT, ROLE_NODE };
enum {
    ST_NONE,       /* zeroed: only client_start / node_reply */
    ST_SENT_M1,    /* client: waiting for m2 */
    ST_SENT_M2,    /* node: waiting for m3 */
    ST_DONE,       /* peer authenticated, keys derived: only split */
};

/*
 * libsodium's own initialisation: idempotent and thread-safe (it takes
 * its own lock), so every entry point that needs the RNG or the CPU
 * feature probe just calls it.  Kept off the per-record paths.
 */
static int sec_init(void)
{
    return sodium_init() < 0 ? -ENOSYS : 0;
}

/* Whether this process may use AES-256-GCM (CPU and PP_NET_CIPHER). */
static bool aes_allowed(void)
{
    const char *e = getenv("PP_NET_CIPHER");
    if (e && strcmp(e, "chacha20") == 0)
        return false;
    return crypto_aead_aes256gcm_is_available() != 0;
}

/****  Key material  ****/

int pp_sec_psk_init(struct pp_sec_psk *psk, const void *secret, size_t len)
{
    if (!psk || !secret || len == 0)
        return -EINVAL;
    int r = sec_init();
    if (r < 0)
        return r;

    /* Unkeyed BLAKE2b first: the secret may be of any length, and
     * crypto_kdf wants exactly 32 bytes of key. */
    uint8_t master[crypto_kdf_KEYBYTES];
    struct pp_sec_psk k;
    crypto_generichash_state st;
    r = crypto_generichash_init(&st, NULL, 0, sizeof(master));
    r |= crypto_generichash_update(&st, (const unsigned char *)label_psk, LABEL_LEN(label_psk));
    r |= crypto_generichash_update(&st, secret, len);
    r |= crypto_generichash_final(&st, master, sizeof(master));
    r |= crypto_kdf_derive_from_key(k.k_auth, sizeof(k.k_auth), 1, kdf_context, master);
    r |= crypto_kdf_derive_from_key(k.k_kdf, sizeof(k.k_kdf), 2, kdf_context, master);
    k.ready = true;
    if (r == 0)
        *psk = k;
    sodium_memzero(master, sizeof(master));
    sodium_memzero(&st, sizeof(st));
    sodium_memzero(&k, sizeof(k));
    return r == 0 ? 0 : -ENOSYS;  /* only on sizes we got wrong */
}

void pp_sec_psk_wipe(struct pp_sec_psk *psk)
{
    if (psk)
        sodium_memzero(psk, sizeof(*psk));
}

int pp_sec_psk_disc_key(const struct pp_sec_psk *psk, uint8_t ret_key[PP_SEC_KEY_LEN])
{
    if (!psk || !psk->ready || !ret_key)
        return -EINVAL;
    int r = sec_init();
    if (r < 0)
        return r;
    /* Through a local, so ret_key is untouched on failure. */
    uint8_t k[PP_SEC_KEY_LEN];
    r = crypto_generichash(k, sizeof(k), (const unsigned char *)label_disc,
                           LABEL_LEN(label_disc), psk->k_kdf, sizeof(psk->k_kdf));
    if (r == 0)
        memcpy(ret_key, k, sizeof(k));
    sodium_memzero(k, sizeof(k));
    return r == 0 ? 0 : -ENOSYS;
}

/****  Handshake  ****/

/* Longest label | m1 | Ns | cipher. */
#define TRANSCRIPT_MAX (LABEL_LEN(label_client) + PP_SEC_M1_LEN + PP_SEC_NONCE_LEN + 1)

/* Write label | T into buf; returns its length.  T is public, so buf
 * needs no wiping. */
static size_t transcript(const struct pp_sec_hs *hs, const char *label, size_t label_len,
                         uint8_t buf[TRANSCRIPT_MAX])
{
    size_t n = 0;
    memcpy(buf + n, label, label_len);
    n += label_len;
    memcpy(buf + n, hs->m1, PP_SEC_M1_LEN);
    n += PP_SEC_M1_LEN;
    memcpy(buf + n, hs->ns, PP_SEC_NONCE_LEN);
    n += PP_SEC_NONCE_LEN;
    buf[n++] = hs->cipher;
    return n;
}

/* tag = crypto_auth(K_auth, label | T). */
static void hs_tag(const struct pp_sec_hs *hs, const char *label, size_t label_len,
                   uint8_t tag[crypto_auth_BYTES])
{
    uint8_t t[TRANSCRIPT_MAX];
    size_t n = transcript(hs, label, label_len, t);
    crypto_auth(tag, t, n, hs->psk.k_auth);
}

/* Returns 0 when tag = crypto_auth(K_auth, label | T), in constant time. */
static int hs_verify(const struct pp_sec_hs *hs, const char *label, size_t label_len,
                     const uint8_t tag[crypto_auth_BYTES])
{
    uint8_t t[TRANSCRIPT_MAX];
    size_t n = transcript(hs, label, label_len, t);
    return crypto_auth_verify(tag, t, n, hs->psk.k_auth) == 0 ? 0 : -EACCES;
}

/* Both direction keys from the whole transcript, then the keys that
 * proved them are no longer needed. */
static void hs_derive(struct pp_sec_hs *hs)
{
    uint8_t t[TRANSCRIPT_MAX];
    size_t n = transcript(hs, label_keys, LABEL_LEN(label_keys), t);
    crypto_generichash(hs->keys, sizeof(hs->keys), t, n, hs->psk.k_kdf, sizeof(hs->psk.k_kdf));
    sodium_memzero(&hs->psk, sizeof(hs->psk));
    hs->state = ST_DONE;
}

/* A failed handshake is over: wipe it so it can only start again. */
static int hs_fail(struct pp_sec_hs *hs, int err)
{
    pp_sec_hs_wipe(hs);
    return err;
}

void pp_sec_hs_wipe(struct pp_sec_hs *hs)
{
    if (hs)
        sodium_memzero(hs, sizeof(*hs));
}

int pp_sec_client_start(struct pp_sec_hs *hs, const struct pp_sec_psk *psk,
                        uint8_t m1[PP_SEC_M1_LEN])
{
    if (!hs || !psk || !psk->ready || !m1)
        return -EINVAL;
    int r = sec_init();
    if (r < 0)
        return r;
    if (hs->role != ROLE_NONE || hs->state != ST_NONE)
        return hs_fail(hs, -EPROTO);

    hs->role = ROLE_CLIENT;
    hs->psk = *psk;
    memcpy(hs->m1, PP_SEC_MAGIC, 4);
    hs->m1[4] = aes_allowed() ? PP_SEC_M1_F_AESGCM : 0;
    randombytes_buf(hs->m1 + 5, PP_SEC_NONCE_LEN);
    hs->state = ST_SENT_M1;
    memcpy(m1, hs->m1, PP_SEC_M1_LEN);
    return 0;
}

int pp_sec_node_reply(struct pp_sec_hs *hs, const struct pp_sec_psk *psk,
                      const uint8_t *m1, size_t len, uint8_t m2[PP_SEC_M2_LEN])
{
    if (!hs || !psk || !psk->ready || (!m1 && len) || !m2)
        return -EINVAL;
    int r = sec_init();
    if (r < 0)
        return r;
    if (hs->role != ROLE_NONE || hs->state != ST_NONE)
        return hs_fail(hs, -EPROTO);
    if (len != PP_SEC_M1_LEN || memcmp(m1, PP_SEC_MAGIC, 4) != 0 ||
        (m1[4] & ~PP_SEC_M1_F_KNOWN) != 0)
        return hs_fail(hs, -EPROTO);

    hs->role = ROLE_NODE;
    hs->psk = *psk;
    memcpy(hs->m1, m1, PP_SEC_M1_LEN);
    randombytes_buf(hs->ns, PP_SEC_NONCE_LEN);
    hs->cipher = (m1[4] & PP_SEC_M1_F_AESGCM) && aes_allowed() ? PP_SEC_AES256GCM
                                                                : PP_SEC_CHACHA20;
    hs->state = ST_SENT_M2;
    memcpy(m2, hs->ns, PP_SEC_NONCE_LEN);
    m2[PP_SEC_NONCE_LEN] = hs->cipher;
    hs_tag(hs, label_node, LABEL_LEN(label_node), m2 + PP_SEC_NONCE_LEN + 1);
    return 0;
}

int pp_sec_client_finish(struct pp_sec_hs *hs, const uint8_t *m2, size_t len,
                         uint8_t m3[PP_SEC_M3_LEN])
{
    if (!hs || (!m2 && len) || !m3)
        return -EINVAL;
    if (hs->role != ROLE_CLIENT || hs->state != ST_SENT_M1 || len != PP_SEC_M2_LEN)
        return hs_fail(hs, -EPROTO);

    memcpy(hs->ns, m2, PP_SEC_NONCE_LEN);
    hs->cipher = m2[PP_SEC_NONCE_LEN];
    /* The tag first: a node that fails it does not know the secret (or
     * someone altered m1 or m2), and that is the error worth reporting. */
    int r = hs_verify(hs, label_node, LABEL_LEN(label_node), m2 + PP_SEC_NONCE_LEN + 1);
    if (r < 0)
        return hs_fail(hs, r);
    /* An authentic node that picks a cipher we did not offer is broken. */
    if (hs->cipher != PP_SEC_CHACHA20 &&
        !(hs->cipher == PP_SEC_AES256GCM && (hs->m1[4] & PP_SEC_M1_F_AESGCM)))
        return hs_fail(hs, -EPROTO);

    uint8_t tag[PP_SEC_M3_LEN];
    hs_tag(hs, label_client, LABEL_LEN(label_client), tag);
    hs_derive(hs);
    memcpy(m3, tag, sizeof(tag));
    return 0;
}

int pp_sec_node_finish(struct pp_sec_hs *hs, const uint8_t *m3, size_t len)
{
    if (!hs || (!m3 && len))
        return -EINVAL;
    if (hs->role != ROLE_NODE || hs->state != ST_SENT_M2 || len != PP_SEC_M3_LEN)
        return hs_fail(hs, -EPROTO);
    int r = hs_verify(hs, label_client, LABEL_LEN(label_client), m3);
    if (r < 0)
        return hs_fail(hs, r);
    hs_derive(hs);
    return 0;
}

int pp_sec_hs_split(struct pp_sec_hs *hs, struct pp_sec_dir *ret_tx, struct pp_sec_dir *ret_rx)
{
    if (!hs || !ret_tx || !ret_rx)
        return -EINVAL;
    if (hs->state != ST_DONE)
        return hs_fail(hs, -EPROTO);

    const uint8_t *c2n = hs->keys, *n2c = hs->keys + PP_SEC_KEY_LEN;
    bool client = hs->role == ROLE_CLIENT;
    ret_tx->cipher = ret_rx->cipher = hs->cipher;
    ret_tx->seq = ret_rx->seq = 0;
    memcpy(ret_tx->key, client ? c2n : n2c, PP_SEC_KEY_LEN);
    memcpy(ret_rx->key, client ? n2c : c2n, PP_SEC_KEY_LEN);
    pp_sec_hs_wipe(hs);
    return 0;
}

/****  Records: shared pieces  ****/

/* 0 for a cipher this process can run, else -EINVAL / -ENOSYS. */
static int cipher_check(uint8_t cipher)
{
    if (cipher == PP_SEC_CHACHA20)
        return 0;
    if (cipher != PP_SEC_AES256GCM)
        return -EINVAL;
    int r = sec_init();
    if (r < 0)
        return r;
    return crypto_aead_aes256gcm_is_available() ? 0 : -ENOSYS;
}

/* 4 zero bytes | u64 LE seq.  The key is unique to one session and one
 * direction, so a counter is a nonce that never repeats under it. */
static void rec_nonce(uint8_t nonce[AEAD_NONCE_LEN], uint64_t seq)
{
    memset(nonce, 0, 4);
    pp_wire_put_u64(nonce + 4, seq);
}

/* The AES key schedule is expanded once per direction, into storage
 * secure.h reserves as bytes (the project builds with
 * -fno-strict-aliasing, and libsodium treats the state as bytes too). */
static crypto_aead_aes256gcm_state *aes_state(uint8_t *storage)
{
    return (crypto_aead_aes256gcm_state *)(void *)storage;
}

static bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

/****  Sending  ****/

int pp_sec_tx_init(struct pp_sec_tx *tx, const struct pp_sec_dir *dir)
{
    if (!tx || !dir || !aligned16(tx->aes))
        return -EINVAL;
    int r = cipher_check(dir->cipher);
    if (r < 0)
        return r;
    memset(tx, 0, sizeof(*tx));
    tx->cipher = dir->cipher;
    memcpy(tx->key, dir->key, PP_SEC_KEY_LEN);
    tx->seq = dir->seq;
    if (tx->cipher == PP_SEC_AES256GCM)
        crypto_aead_aes256gcm_beforenm(aes_state(tx->aes), tx->key);
    return 0;
}

void pp_sec_tx_exit(struct pp_sec_tx *tx)
{
    if (tx)
        sodium_memzero(tx, sizeof(*tx));
}

void pp_sec_tx_export(const struct pp_sec_tx *tx, struct pp_sec_dir *ret_dir)
{
    if (!tx || !ret_dir)
        return;
    ret_dir->cipher = tx->cipher;
    memcpy(ret_dir->key, tx->key, PP_SEC_KEY_LEN);
    ret_dir->seq = tx->seq;
}

size_t pp_sec_sealed_size(size_t plain_len)
{
    size_t full = plain_len / PP_SEC_REC_MAX, rest = plain_len % PP_SEC_REC_MAX;
    size_t per = PP_SEC_REC_MAX + PP_SEC_REC_OVERHEAD;
    if (full > SIZE_MAX / per)
        return SIZE_MAX;
    size_t n = full * per;
    if (rest) {
        if (n > SIZE_MAX - rest - PP_SEC_REC_OVERHEAD)
            return SIZE_MAX;
        n += rest + PP_SEC_REC_OVERHEAD;
    }
    return n;
}

/* Seal one record of n (1..REC_MAX) bytes at out, with nonce seq. */
static int seal_one(const struct pp_sec_tx *tx, const uint8_t *p, size_t n, uint8_t *out)
{
    uint8_t nonce[AEAD_NONCE_LEN];
    rec_nonce(nonce, tx->seq);
    pp_wire_put_u32(out, (uint32_t)(n + PP_SEC_TAG_LEN));
    uint8_t *c = out + PP_SEC_REC_HDR, *mac = c + n;
    if (tx->cipher == PP_SEC_AES256GCM)
        return crypto_aead_aes256gcm_encrypt_detached_afternm(
            c, mac, NULL, p, n, out, PP_SEC_REC_HDR, NULL, nonce, aes_state((uint8_t *)tx->aes));
    return crypto_aead_chacha20poly1305_ietf_encrypt_detached(
        c, mac, NULL, p, n, out, PP_SEC_REC_HDR, NULL, nonce, tx->key);
}

int pp_sec_seal(struct pp_sec_tx *tx, const void *plain, size_t len,
                uint8_t *out, size_t cap, size_t *ret_len)
{
    if (!tx || !ret_len || (len && (!plain || !out)) ||
        (tx->cipher != PP_SEC_CHACHA20 && tx->cipher != PP_SEC_AES256GCM))
        return -EINVAL;
    size_t need = pp_sec_sealed_size(len);
    if (need > cap)
        return -ENOBUFS;
    /* seq UINT64_MAX is never used, so a receiver's seq check and ours
     * agree on when a session is spent. */
    uint64_t recs = len / PP_SEC_REC_MAX + (len % PP_SEC_REC_MAX != 0);
    if (recs > UINT64_MAX - tx->seq)
        return -EOVERFLOW;

    const uint8_t *p = plain;
    size_t done = 0;
    while (done < len) {
        size_t n = len - done < PP_SEC_REC_MAX ? len - done : PP_SEC_REC_MAX;
        if (seal_one(tx, p + done, n, out) != 0) {
            /* Cannot happen for these sizes; but records already made
             * used their nonces, so this tx must never seal again. */
            pp_sec_tx_exit(tx);
            return -EIO;
        }
        tx->seq++;
        out += n + PP_SEC_REC_OVERHEAD;
        done += n;
    }
    *ret_len = need;
    return 0;
}

/****  Receiving  ****/

int pp_sec_rx_init(struct pp_sec_rx *rx, const struct pp_sec_dir *dir)
{
    if (!rx || !dir || !aligned16(rx->aes))
        return -EINVAL;
    int r = cipher_check(dir->cipher);
    if (r < 0)
        return r;
    uint8_t *buf = malloc(REC_BODY_MAX);
    if (!buf)
        return -ENOMEM;
    memset(rx, 0, sizeof(*rx));
    rx->buf = buf;
    rx->cipher = dir->cipher;
    memcpy(rx->key, dir->key, PP_SEC_KEY_LEN);
    rx->seq = dir->seq;
    if (rx->cipher == PP_SEC_AES256GCM)
        crypto_aead_aes256gcm_beforenm(aes_state(rx->aes), rx->key);
    return 0;
}

void pp_sec_rx_exit(struct pp_sec_rx *rx)
{
    if (!rx)
        return;
    if (rx->buf) {
        /* It held plaintext (and, until a tag failed, attacker bytes). */
        sodium_memzero(rx->buf, rx->dirty);
        free(rx->buf);
    }
    sodium_memzero(rx, sizeof(*rx));
}

const char *pp_sec_rx_error(const struct pp_sec_rx *rx)
{
    return rx && rx->error ? rx->reason : NULL;
}

bool pp_sec_rx_idle(const struct pp_sec_rx *rx)
{
    return rx && !rx->error && rx->hdr_have == 0 && rx->rec_len == 0;
}

int pp_sec_rx_export(const struct pp_sec_rx *rx, struct pp_sec_dir *ret_dir)
{
    if (!rx || !ret_dir || !rx->buf)
        return -EINVAL;
    if (rx->error)
        return rx->error;
    if (!pp_sec_rx_idle(rx))
        return -EBUSY;
    ret_dir->cipher = rx->cipher;
    memcpy(ret_dir->key, rx->key, PP_SEC_KEY_LEN);
    ret_dir->seq = rx->seq;
    return 0;
}

static int rx_fail(struct pp_sec_rx *rx, int err, const char *reason)
{
    rx->error = err;
    rx->reason = reason;
    return err;
}

/* The 4 length bytes are in: check L before taking any of the body. */
static int rx_length(struct pp_sec_rx *rx)
{
    uint32_t l = pp_wire_get_u32(rx->hdr);
    if (l > REC_BODY_MAX)
        return rx_fail(rx, -EMSGSIZE, "record longer than the maximum");
    if (l <= PP_SEC_TAG_LEN)
        return rx_fail(rx, -EPROTO, "record shorter than its tag (empty records are not allowed)");
    if (rx->seq == UINT64_MAX)
        return rx_fail(rx, -EOVERFLOW, "record sequence number exhausted");
    rx->rec_len = l;
    rx->have = 0;
    if (rx->dirty < l)
        rx->dirty = l;
    return 0;
}

/*
 * The whole record (rec_len bytes) is at c: either the caller's slice or
 * rx->buf.  Authenticate and decrypt it into rx->buf (in place when c is
 * rx->buf; libsodium allows m == c), then hand it to plain().
 */
static int rx_open(struct pp_sec_rx *rx, const uint8_t *c, pp_sec_plain_fn plain, void *ctx)
{
    size_t n = rx->rec_len - PP_SEC_TAG_LEN;
    uint8_t nonce[AEAD_NONCE_LEN];
    int r;

    rec_nonce(nonce, rx->seq);
    if (rx->cipher == PP_SEC_AES256GCM)
        r = crypto_aead_aes256gcm_decrypt_detached_afternm(
            rx->buf, NULL, c, n, c + n, rx->hdr, PP_SEC_REC_HDR, nonce, aes_state(rx->aes));
    else
        r = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
            rx->buf, NULL, c, n, c + n, rx->hdr, PP_SEC_REC_HDR, nonce, rx->key);
    if (r != 0) {
        sodium_memzero(rx->buf, n);  /* whatever a failed open left there */
        return rx_fail(rx, -EBADMSG, "record failed authentication");
    }
    rx->seq++;
    rx->hdr_have = 0;
    rx->rec_len = 0;
    rx->have = 0;
    r = plain(ctx, rx->buf, n);
    if (r < 0)
        return rx_fail(rx, r, "record rejected by its consumer");
    return 0;
}

int pp_sec_rx_feed(struct pp_sec_rx *rx, const void *data, size_t len,
                   pp_sec_plain_fn plain, void *ctx)
{
    if (!rx || !plain || (len && !data) || !rx->buf)
        return -EINVAL;
    if (rx->error)
        return rx->error;

    const uint8_t *p = data;
    size_t pos = 0;
    int recs = 0, r;

    while (pos < len) {
        if (rx->rec_len == 0) {
            size_t n = PP_SEC_REC_HDR - rx->hdr_have;
            if (n > len - pos)
                n = len - pos;
            memcpy(rx->hdr + rx->hdr_have, p + pos, n);
            rx->hdr_have += (uint32_t)n;
            pos += n;
            if (rx->hdr_have < PP_SEC_REC_HDR)
                break;  /* length still partial: slice used up */
            r = rx_length(rx);
            if (r < 0)
                return r;
        }
        size_t left = rx->rec_len - rx->have;
        if (rx->have == 0 && len - pos >= left) {
            /* Whole record in the slice: decrypt straight out of it. */
            r = rx_open(rx, p + pos, plain, ctx);
            pos += left;
        } else {
            size_t n = len - pos < left ? len - pos : left;
            memcpy(rx->buf + rx->have, p + pos, n);  /* rec_len <= REC_BODY_MAX */
            rx->have += (uint32_t)n;
            pos += n;
            if (rx->have < rx->rec_len)
                break;
            r = rx_open(rx, rx->buf, plain, ctx);
        }
        if (r < 0)
            return r;
        /* A slice of 2^31 records is 34 GiB; saturate all the same. */
        if (recs < INT_MAX)
            recs++;
    }
    return recs;
}
