/*
 * wire.h - the frame layer of pp's wire protocol (net/PROTOCOL.md).
 *
 * A connection carries frames: a fixed 16-byte header, then `len` body
 * bytes.  The header is little-endian and is encoded and decoded field by
 * field, never by casting a struct, so the layout does not depend on the
 * compiler or the host's byte order:
 *
 *   offset  size  field
 *        0     1  version   PP_WIRE_VERSION (doubles as the magic byte)
 *        1     1  type      enum pp_wire_type
 *        2     2  flags     PP_WIRE_F_*; unknown bits are an error
 *        4     4  len       body length in bytes (plaintext)
 *        8     8  reqid     request id; replies echo it
 *
 * No sockets and no crypto here.  Later each frame will be sealed by an
 * AEAD (per-direction keys, DESIGN.md "Many hosts"); `len` stays the
 * plaintext body length and that layer adds its own fixed overhead, so
 * nothing in this file changes when it arrives.
 *
 * Large payloads.  A body is at most the negotiated max_body (default
 * PP_WIRE_MAX_BODY).  A larger JOB, RESULT or CODE payload is sent as one
 * frame with PP_WIRE_F_CHUNKED whose body starts with the u64 total
 * payload length, followed by pp_wire_chunks(total, max_body) CHUNK frames
 * with the same reqid, each full (max_body bytes) except the last.
 *
 * Errors.  Functions return 0 (or a count) on success and -errno on
 * failure: -EINVAL for bad arguments, -EPROTO for a malformed frame,
 * -EMSGSIZE for a body over the maximum, -ENOBUFS when an output buffer is
 * too small.  Output parameters are ret_*, written only on success.
 *
 * Threading.  No global state; a pp_wire_dec belongs to one thread at a
 * time (one per connection and direction).
 */
#ifndef PP_NET_WIRE_H
#define PP_NET_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PP_WIRE_VERSION    2u  /* 2: MESSAGE, RESULT without a result */
#define PP_WIRE_HDR_SIZE   16u
#define PP_WIRE_MAX_BODY   (1u << 20)  /* default max_body: 1 MiB */
#define PP_WIRE_BODY_LIMIT (1u << 24)  /* largest max_body a decoder accepts */
#define PP_WIRE_TOTAL_SIZE 8u          /* the u64 total that opens a chunked body */

/* Frame types; 0 is never valid so a zeroed header is rejected. */
enum pp_wire_type {
    PP_WIRE_HELLO = 1,        /* handshake, client -> node (later) */
    PP_WIRE_HELLO_ACK = 2,    /* handshake, node -> client (later) */
    PP_WIRE_JOB = 3,          /* a job; reqid = job id */
    PP_WIRE_RESULT = 4,       /* a job's result; reqid = the JOB's */
    PP_WIRE_CHUNK = 5,        /* next piece of a chunked payload */
    PP_WIRE_CODE_REQUEST = 6, /* node asks for a module by hash */
    PP_WIRE_CODE = 7,         /* a module's bytes */
    PP_WIRE_HEARTBEAT = 8,    /* empty body; reqid is echoed */
    PP_WIRE_ERROR = 9,        /* i32 code + reason text */
    PP_WIRE_BYE = 10,         /* empty body; orderly close */
    PP_WIRE_AUTH = 11,        /* handshake, client -> node: its proof */
    PP_WIRE_INFO = 12,        /* node -> client, first sealed frame */
    PP_WIRE_SESSION = 13,     /* client -> node: who it is, its program */
    PP_WIRE_READY = 14,       /* node -> client: the session agent runs */
    PP_WIRE_MODULE = 15,      /* client -> node: a module's index and hash */
    PP_WIRE_MESSAGE = 16,     /* node -> client: a collector job's pp_job_send */
};
#define PP_WIRE_TYPE_MAX 16

#define PP_WIRE_F_CHUNKED 0x0001u  /* body opens with a u64 total; CHUNKs follow */
#define PP_WIRE_F_NONE    0x0002u  /* RESULT: the job set no result (a collector's) */
#define PP_WIRE_F_RUN     0x0004u  /* MESSAGE: several small messages (net/msg.h) */
#define PP_WIRE_F_KNOWN   0x0007u  /* every flag bit this version defines */

struct pp_wire_hdr {
    uint8_t type;             /* enum pp_wire_type */
    uint16_t flags;
    uint32_t len;             /* body bytes after the header */
    uint64_t reqid;
};

/* A decoded frame.  body points at hdr.len bytes (never NULL) that stay
 * valid only until the callback returns. */
struct pp_wire_frame {
    struct pp_wire_hdr hdr;
    const uint8_t *body;
};

/* Called once per complete frame.  Return 0 to go on; a negative errno
 * stops decoding and puts the decoder in its error state. */
typedef int (*pp_wire_frame_fn)(void *ctx, const struct pp_wire_frame *frame);

/* Incremental decoder.  Fields are private; use the functions below. */
struct pp_wire_dec {
    uint8_t *buf;             /* body buffer, `capacity` bytes, from init */
    uint32_t capacity;
    uint32_t max_body;        /* negotiated maximum, <= capacity */
    int error;                /* 0, or the sticky -errno */
    const char *reason;       /* static text for `error` */
    uint8_t hdr[PP_WIRE_HDR_SIZE];
    uint32_t hdr_have;        /* header bytes buffered so far */
    bool in_body;             /* cur is valid, collecting its body */
    struct pp_wire_hdr cur;
    uint32_t body_have;       /* body bytes of cur in buf */
};

/*
 * pp_wire_encode_header - write a 16-byte header into buf.
 * Checks type, flags and the per-type body length rules (the same ones
 * the decoder applies), but not max_body, which is the peer's business.
 * Returns 0, or -EINVAL (buf NULL) / -EPROTO (a frame no decoder accepts).
 */
int pp_wire_encode_header(uint8_t *buf, enum pp_wire_type type, uint16_t flags,
                          uint32_t len, uint64_t reqid);

/*
 * pp_wire_encode_frame - write header + body (len bytes) into buf[0..cap).
 * Returns 0 and *ret_len = PP_WIRE_HDR_SIZE + len, or -EINVAL, -EPROTO,
 * -EMSGSIZE (len > UINT32_MAX), -ENOBUFS (cap too small).
 */
int pp_wire_encode_frame(uint8_t *buf, size_t cap, enum pp_wire_type type,
                         uint16_t flags, uint64_t reqid, const void *body,
                         size_t len, size_t *ret_len);

/*
 * pp_wire_decode_header - parse and check one complete header against
 * max_body.  Returns 0 and fills *ret_hdr, or -EPROTO / -EMSGSIZE with a
 * static reason in *ret_reason (when not NULL).
 */
int pp_wire_decode_header(const uint8_t *buf, uint32_t max_body,
                          struct pp_wire_hdr *ret_hdr, const char **ret_reason);

/*
 * pp_wire_chunks - number of CHUNK frames that carry a payload of `total`
 * bytes when each holds at most max_body: ceil(total / max_body), so 0 for
 * total 0.  Computed without total + max_body - 1, which wraps near
 * UINT64_MAX.  Returns 0 and *ret_count, or -EINVAL (max_body 0).
 */
int pp_wire_chunks(uint64_t total, uint32_t max_body, uint64_t *ret_count);

/*
 * pp_wire_dec_init - set up a decoder whose body buffer holds max_body
 * bytes (0 means PP_WIRE_MAX_BODY), allocated here once: decoding never
 * allocates.  Returns 0, -EINVAL (max_body > PP_WIRE_BODY_LIMIT) or
 * -ENOMEM.  After success, call pp_wire_dec_exit.
 */
int pp_wire_dec_init(struct pp_wire_dec *dec, uint32_t max_body);

/* pp_wire_dec_exit - free the buffer.  Safe on a zeroed decoder. */
void pp_wire_dec_exit(struct pp_wire_dec *dec);

/*
 * pp_wire_dec_set_max - lower the accepted body length (after the
 * handshake).  Only between frames.  Returns 0, or -EINVAL (0, larger
 * than the buffer, or a frame partly decoded).
 */
int pp_wire_dec_set_max(struct pp_wire_dec *dec, uint32_t max_body);

/*
 * pp_wire_dec_feed - decode len bytes of a byte stream, in any slicing.
 * Calls cb(ctx, frame) once per complete frame, in order.  A header is
 * checked (version, type, flags, per-type length, length <= max_body)
 * as soon as each field has arrived, before any body byte is buffered.
 * Bodies are read in place when a slice holds them whole, else copied
 * into the decoder's buffer.  Reads data[0..len) only.
 *
 * Returns the number of frames delivered, or -errno.  Bad input (-EPROTO,
 * -EMSGSIZE) or a callback's error is sticky: that call and every later
 * one return the same error and deliver nothing more; the caller closes
 * the connection with pp_wire_dec_error() as the reason.  There is no
 * resynchronisation.  -EINVAL (bad arguments) is not sticky.
 * cb must not call pp_wire_dec_feed on the same decoder.
 */
int pp_wire_dec_feed(struct pp_wire_dec *dec, const void *data, size_t len,
                     pp_wire_frame_fn cb, void *ctx);

/* pp_wire_dec_error - the sticky error's static reason, or NULL if none. */
const char *pp_wire_dec_error(const struct pp_wire_dec *dec);

/* pp_wire_get_u64 / pp_wire_put_u64 etc. - little-endian field access,
 * for body layouts (the chunked total, ERROR's code). */
uint16_t pp_wire_get_u16(const uint8_t *p);
uint32_t pp_wire_get_u32(const uint8_t *p);
uint64_t pp_wire_get_u64(const uint8_t *p);
void pp_wire_put_u16(uint8_t *p, uint16_t v);
void pp_wire_put_u32(uint8_t *p, uint32_t v);
void pp_wire_put_u64(uint8_t *p, uint64_t v);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_WIRE_H */
