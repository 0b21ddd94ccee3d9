/*
 * secure.h - PSK mutual authentication and encrypted records (libsodium).
 *
 * Two layers, both pure functions over caller-owned memory: no sockets, no
 * threads, no global state beyond libsodium's own sodium_init().
 *
 * 1. Handshake.  Both ends hold the same secret.  Three fixed-size
 *    messages prove to each side that the other knows it, with fresh
 *    random nonces from both (so no message of an old session is accepted
 *    again) and a role label in each tag (so a tag cannot be reflected back
 *    at its sender), and derive one key per direction:
 *
 *      m1 client -> node  "PPH1" | flags | Nc[32]              37 bytes
 *      m2 node -> client  Ns[32] | cipher | tagS[32]           65 bytes
 *      m3 client -> node  tagC[32]                             32 bytes
 *
 *      T     = m1 | Ns | cipher                     (the transcript)
 *      tagS  = crypto_auth(K_auth, "pp-v1 node"   | T)  (HMAC-SHA-512-256)
 *      tagC  = crypto_auth(K_auth, "pp-v1 client" | T)
 *      keys  = crypto_generichash(64, "pp-v1 keys" | T, key = K_kdf)
 *              keys[0..32) client -> node, keys[32..64) node -> client
 *
 *    flags bit 0 says the client can run AES-256-GCM; the node picks it
 *    only if it can too, else ChaCha20-Poly1305.  The flags are inside T,
 *    so a man in the middle who clears the bit breaks both tags.  Tags are
 *    checked with crypto_auth_verify (constant time).
 *
 *    The node answers m1 with a tag before the client has proved anything,
 *    so anyone may collect (m1, m2) pairs: a secret that can be guessed
 *    (a word, a short password) can then be brute-forced offline from one
 *    transcript.  Use a random secret, e.g. 32 random bytes in base64
 *    (`head -c32 /dev/urandom | base64`).  There is no forward secrecy:
 *    whoever later learns the secret can decrypt recorded sessions.
 *
 * 2. Records.  After the handshake each direction is a byte stream cut
 *    into records, like TLS records; the frame layer of wire.h lives in
 *    that stream and frames may straddle records:
 *
 *      u32 LE L | ciphertext[L - 16] | tag[16]     17 <= L <= REC_MAX + 16
 *
 *    AEAD = the chosen cipher (IETF ChaCha20-Poly1305 or AES-256-GCM),
 *    additional data = the 4 length bytes, nonce = 4 zero bytes | u64 LE
 *    seq, where seq counts this direction's records from 0.  The receiver
 *    knows the next seq, so a record that was altered, replayed, reordered,
 *    dropped or sent in the other direction fails its tag.  Truncation at a
 *    record boundary is the caller's to catch: an orderly close must be
 *    said by a frame (wire.h BYE) before EOF; pp_sec_rx_idle() tells a
 *    stream cut inside a record.
 *
 * Environment.  PP_NET_CIPHER=chacha20 makes this process neither offer
 * (client) nor choose (node) AES-256-GCM, so tests and CI can run both
 * ciphers on a machine with AES-NI.  Read by each pp_sec_client_start()
 * and pp_sec_node_reply(); any other value, or none, means the default
 * (AES-256-GCM when both ends have it).
 *
 * Errors.  Functions return 0 (or a count) on success and -errno on
 * failure: -EINVAL for bad arguments (never sticky, nothing wiped),
 * -EPROTO for a message of the wrong length or form, or a call out of
 * order, -EACCES when a peer's tag does not verify, -ENOSYS when
 * libsodium cannot start or a cipher is not available on this CPU.
 * Output parameters are ret_* or fixed-size out arrays, written only on
 * success.
 *
 * Ownership.  Every struct here is caller-allocated.  Secrets and keys
 * are wiped (sodium_memzero) by pp_sec_psk_wipe, pp_sec_hs_wipe (also on
 * every handshake failure, and by pp_sec_hs_split), pp_sec_tx_exit and
 * pp_sec_rx_exit; call them on every path.
 *
 * Threading.  Nothing is shared: one pp_sec_hs, pp_sec_tx or pp_sec_rx
 * belongs to one thread at a time.  A pp_sec_psk is only read after
 * pp_sec_psk_init, so threads may share it.  getenv() is not safe against
 * a concurrent setenv(); do not change PP_NET_CIPHER while handshakes run.
 */
#ifndef PP_NET_SECURE_H
#define PP_NET_SECURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PP_SEC_M1_LEN      37u  /* "PPH1" | flags | Nc */
#define PP_SEC_M2_LEN      65u  /* Ns | cipher | tagS */
#define PP_SEC_M3_LEN      32u  /* tagC */
#define PP_SEC_NONCE_LEN   32u  /* Nc, Ns */
#define PP_SEC_KEY_LEN     32u  /* K_auth, K_kdf and each direction's key */
#define PP_SEC_MAGIC       "PPH1"

#define PP_SEC_M1_F_AESGCM 0x01u  /* m1 flags: client can do AES-256-GCM */
#define PP_SEC_M1_F_KNOWN  0x01u  /* every flag bit v1 defines; others -> -EPROTO */

/* m2's cipher byte and pp_sec_dir.cipher; 0 is never valid. */
#define PP_SEC_CHACHA20    1u   /* crypto_aead_chacha20poly1305_ietf */
#define PP_SEC_AES256GCM   2u   /* crypto_aead_aes256gcm (AES-NI + PCLMUL only) */

#define PP_SEC_REC_MAX     (256u << 10)  /* plaintext bytes per record */
#define PP_SEC_TAG_LEN     16u           /* AEAD tag per record */
#define PP_SEC_REC_HDR     4u            /* the u32 LE length L */
#define PP_SEC_REC_OVERHEAD (PP_SEC_REC_HDR + PP_SEC_TAG_LEN)  /* wire bytes added per record */

/* Room for libsodium's crypto_aead_aes256gcm_state (512 bytes, 16-aligned
 * in 1.0.18; secure.c checks both at compile time), so that this header
 * does not pull <sodium.h> into its users. */
#define PP_SEC_AES_STATE_SIZE 512u
#ifdef __cplusplus
#define PP_SEC_ALIGN16 alignas(16)
#else
#define PP_SEC_ALIGN16 _Alignas(16)
#endif

/* Keys derived from the shared secret.  Fields are private. */
struct pp_sec_psk {
    uint8_t k_auth[PP_SEC_KEY_LEN];  /* HMAC key of the handshake tags */
    uint8_t k_kdf[PP_SEC_KEY_LEN];   /* keys the direction-key hash */
    bool ready;                      /* false when zeroed or wiped: refused, never used as a key */
};

/*
 * One direction of an established session, as plain old data (no
 * pointers), so a session can be handed to another process through a
 * pipe: pp_sec_hs_split() makes two, pp_sec_tx_export() and
 * pp_sec_rx_export() take one from a running stream.  It holds a key:
 * sodium_memzero it once used.  Two live streams must never share one
 * (key, seq): that reuses a nonce, so stop using the exporting side.
 */
struct pp_sec_dir {
    uint8_t cipher;                  /* PP_SEC_CHACHA20 or PP_SEC_AES256GCM */
    uint8_t key[PP_SEC_KEY_LEN];
    uint64_t seq;                    /* nonce of the next record */
};

/* Handshake state, either role.  Fields are private.  Zero it (= {0}, or
 * pp_sec_hs_wipe) before pp_sec_client_start / pp_sec_node_reply. */
struct pp_sec_hs {
    uint8_t role;                    /* 0 none, else client or node */
    uint8_t state;                   /* where in the exchange this side is */
    uint8_t cipher;
    uint8_t m1[PP_SEC_M1_LEN];       /* the transcript: m1 | Ns | cipher */
    uint8_t ns[PP_SEC_NONCE_LEN];
    struct pp_sec_psk psk;           /* a copy: the finish calls take no psk */
    uint8_t keys[2 * PP_SEC_KEY_LEN];  /* client->node | node->client, once done */
};

/* Sending side of one direction.  Fields are private. */
struct pp_sec_tx {
    PP_SEC_ALIGN16 uint8_t aes[PP_SEC_AES_STATE_SIZE];  /* expanded AES key */
    uint8_t cipher;                  /* 0 after exit: pp_sec_seal refuses */
    uint8_t key[PP_SEC_KEY_LEN];
    uint64_t seq;
};

/* Receiving side: an incremental record decoder.  Fields are private. */
struct pp_sec_rx {
    PP_SEC_ALIGN16 uint8_t aes[PP_SEC_AES_STATE_SIZE];
    uint8_t cipher;
    uint8_t key[PP_SEC_KEY_LEN];
    uint64_t seq;
    uint8_t *buf;                    /* PP_SEC_REC_MAX + PP_SEC_TAG_LEN bytes, from init */
    uint8_t hdr[PP_SEC_REC_HDR];     /* the length bytes; also the AD */
    uint32_t hdr_have;               /* length bytes buffered so far */
    uint32_t rec_len;                /* L of the record being collected, 0 = none */
    uint32_t have;                   /* bytes of it in buf */
    uint32_t dirty;                  /* bytes of buf ever written: what exit wipes */
    int error;                       /* 0, or the sticky -errno */
    const char *reason;              /* static text for `error` */
};

/* Called with each record's plaintext, in order; p is valid until it
 * returns and n is 1..PP_SEC_REC_MAX.  Return 0 to go on; a negative
 * errno stops decoding and becomes the receiver's sticky error. */
typedef int (*pp_sec_plain_fn)(void *ctx, const uint8_t *p, size_t n);

/****  Key material  ****/

/*
 * pp_sec_psk_init - derive the handshake keys from a shared secret of
 * len bytes: M = BLAKE2b-256("pp-v1 psk" | secret), then K_auth and K_kdf
 * = crypto_kdf_derive_from_key(M, id 1 and 2, context "pp-v1psk").  The
 * secret itself is not kept; wipe the caller's copy.  See the top of this
 * file on choosing a secret.
 * Returns 0, -EINVAL (psk or secret NULL, len 0) or -ENOSYS.
 */
int pp_sec_psk_init(struct pp_sec_psk *psk, const void *secret, size_t len);

/* pp_sec_psk_wipe - zero the keys; the psk is refused until init again. */
void pp_sec_psk_wipe(struct pp_sec_psk *psk);

/*
 * pp_sec_psk_disc_key - the discovery key (disc.h), used for nothing
 * else: K_disc = BLAKE2b-256(key = K_kdf, "pp-v1 disc").  The handshake's
 * own use of K_kdf hashes "pp-v1 keys" | T into 64 bytes, so neither
 * output can stand in for the other.  Returns 0, -EINVAL (NULL, psk not
 * initialised) or -ENOSYS; ret_key is written only on success.
 */
int pp_sec_psk_disc_key(const struct pp_sec_psk *psk, uint8_t ret_key[PP_SEC_KEY_LEN]);

/****  Handshake  ****/

/*
 * pp_sec_client_start - begin a handshake as the client: fills m1 with a
 * fresh Nc and the AES-GCM flag (if this CPU has it and PP_NET_CIPHER
 * allows).  hs must be zeroed.  Keeps a copy of psk's keys in hs.
 * Returns 0, -EINVAL (NULL, or psk not initialised), -EPROTO (hs already
 * in use) or -ENOSYS.
 */
int pp_sec_client_start(struct pp_sec_hs *hs, const struct pp_sec_psk *psk,
                        uint8_t m1[PP_SEC_M1_LEN]);

/*
 * pp_sec_node_reply - answer a client's m1 (len bytes, as received) as
 * the node: checks its form, draws Ns, picks the cipher and fills m2.
 * hs must be zeroed.  Proves nothing about the client yet: send m2, then
 * wait (with a deadline) for m3.
 * Returns 0, -EINVAL, -EPROTO (wrong length, magic or flags; hs in use)
 * or -ENOSYS.
 */
int pp_sec_node_reply(struct pp_sec_hs *hs, const struct pp_sec_psk *psk,
                      const uint8_t *m1, size_t len, uint8_t m2[PP_SEC_M2_LEN]);

/*
 * pp_sec_client_finish - check the node's m2 and fill m3.  On success the
 * node is authenticated and the session keys are derived; send m3 and
 * call pp_sec_hs_split.
 * Returns 0, -EINVAL, -EPROTO (wrong length, an unknown cipher or one the
 * client did not offer, not after client_start) or -EACCES (the node does
 * not know the secret, or m1/m2 were altered).
 */
int pp_sec_client_finish(struct pp_sec_hs *hs, const uint8_t *m2, size_t len,
                         uint8_t m3[PP_SEC_M3_LEN]);

/*
 * pp_sec_node_finish - check the client's m3.  On success the client is
 * authenticated; call pp_sec_hs_split.  Accept no other byte from the
 * client before this returns 0.
 * Returns 0, -EINVAL, -EPROTO (wrong length, not after node_reply) or
 * -EACCES (the client does not know the secret, or m3 was altered or
 * replayed from another session).
 */
int pp_sec_node_finish(struct pp_sec_hs *hs, const uint8_t *m3, size_t len);

/*
 * pp_sec_hs_split - after a successful finish, fill this side's sending
 * (*ret_tx) and receiving (*ret_rx) directions, both at seq 0, and wipe
 * hs.  Returns 0, -EINVAL or -EPROTO (handshake not finished).
 */
int pp_sec_hs_split(struct pp_sec_hs *hs, struct pp_sec_dir *ret_tx,
                    struct pp_sec_dir *ret_rx);

/* pp_sec_hs_wipe - zero hs (keys included); it may then start again. */
void pp_sec_hs_wipe(struct pp_sec_hs *hs);

/*
 * Every handshake call that fails with anything but -EINVAL wipes hs: a
 * failed handshake cannot be resumed, only started again on a new
 * connection.  Messages are written only on success.
 */

/****  Sending records  ****/

/*
 * pp_sec_tx_init - start sending on dir (from pp_sec_hs_split or an
 * export), at dir->seq.  Returns 0, -EINVAL (NULL, unknown cipher, tx not
 * 16-byte aligned) or -ENOSYS (AES-256-GCM not available on this CPU).
 * Call pp_sec_tx_exit when done.
 */
int pp_sec_tx_init(struct pp_sec_tx *tx, const struct pp_sec_dir *dir);

/* pp_sec_tx_exit - wipe the key and state.  Safe on a zeroed tx. */
void pp_sec_tx_exit(struct pp_sec_tx *tx);

/*
 * pp_sec_tx_export - the direction as it stands (key, cipher, the next
 * seq), for pp_sec_tx_init in another process.  The exporter must then
 * stop sealing (pp_sec_tx_exit), or nonces repeat.
 */
void pp_sec_tx_export(const struct pp_sec_tx *tx, struct pp_sec_dir *ret_dir);

/*
 * pp_sec_sealed_size - wire bytes for plain_len bytes of stream cut into
 * records of at most PP_SEC_REC_MAX: plain_len + PP_SEC_REC_OVERHEAD per
 * record, 0 for 0.  Saturates at SIZE_MAX (no buffer is that large).
 */
size_t pp_sec_sealed_size(size_t plain_len);

/*
 * pp_sec_seal - cut plain[0..len) into records (all full but the last)
 * and seal them into out[0..cap), which must not overlap plain.  out need
 * not be aligned, so records can be appended to a send buffer.
 * Returns 0 and *ret_len = pp_sec_sealed_size(len) (0 for len 0), or
 * -EINVAL, -ENOBUFS (cap too small) or -EOVERFLOW (the sequence number
 * would reach UINT64_MAX; the session must end).  On failure nothing is
 * written and seq is unchanged.  (-EIO if libsodium refused to seal,
 * which it does not for these sizes: tx is then wiped, since the records
 * already written used their nonces.)
 */
int pp_sec_seal(struct pp_sec_tx *tx, const void *plain, size_t len,
                uint8_t *out, size_t cap, size_t *ret_len);

/****  Receiving records  ****/

/*
 * pp_sec_rx_init - start receiving on dir, at dir->seq.  Allocates the
 * one record buffer (PP_SEC_REC_MAX + 16 bytes): decoding never
 * allocates.  Returns 0, -EINVAL (as tx_init), -ENOSYS or -ENOMEM.
 * After success, call pp_sec_rx_exit.
 */
int pp_sec_rx_init(struct pp_sec_rx *rx, const struct pp_sec_dir *dir);

/* pp_sec_rx_exit - wipe and free.  Safe on a zeroed rx. */
void pp_sec_rx_exit(struct pp_sec_rx *rx);

/*
 * pp_sec_rx_feed - decode len bytes of the stream, in any slicing (one
 * byte at a time works).  A record's length is checked the moment its 4
 * bytes are in, before any of its body is buffered; a complete record is
 * authenticated and decrypted, and only then given to plain(ctx, p, n).
 * Reads data[0..len) only.
 *
 * Returns the number of records delivered, or -errno: -EMSGSIZE (L over
 * PP_SEC_REC_MAX + 16), -EPROTO (L <= 16: empty records do not exist),
 * -EBADMSG (a record failed authentication), -EOVERFLOW (seq exhausted),
 * or plain()'s error.  These are sticky: that call and every later one
 * return the same error and deliver nothing more; close the connection
 * with pp_sec_rx_error() as the reason.  -EINVAL is not sticky.
 * plain must not call pp_sec_rx_feed on the same rx.
 */
int pp_sec_rx_feed(struct pp_sec_rx *rx, const void *data, size_t len,
                   pp_sec_plain_fn plain, void *ctx);

/* pp_sec_rx_error - the sticky error's static reason, or NULL if none. */
const char *pp_sec_rx_error(const struct pp_sec_rx *rx);

/*
 * pp_sec_rx_idle - true when no part of a record is buffered, i.e. the
 * stream so far ends on a record boundary.  At EOF, false means the
 * stream was cut inside a record.
 */
bool pp_sec_rx_idle(const struct pp_sec_rx *rx);

/*
 * pp_sec_rx_export - the direction as it stands, for pp_sec_rx_init in
 * another process.  Only between records: returns 0, -EINVAL, -EBUSY (a
 * record partly buffered; those bytes would be lost) or the sticky error.
 */
int pp_sec_rx_export(const struct pp_sec_rx *rx, struct pp_sec_dir *ret_dir);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_SECURE_H */
