/*
 * wire.c - frame header codec and the incremental frame decoder.
 *
 * The decoder is a two-state machine (header, body).  It checks each
 * header field the moment its bytes have arrived, so a hostile peer is
 * cut off at the first bad byte and can never make us buffer or allocate
 * more than the max_body chosen at init.
 */
#include "wire.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/****  Little-endian fields  ****/

uint16_t pp_wire_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

uint32_t pp_wire_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

uint64_t pp_wire_get_u64(const uint8_t *p)
{
    return (uint64_t)pp_wire_get_u32(p) | (uint64_t)pp_wire_get_u32(p + 4) << 32;
}

void pp_wire_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void pp_wire_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void pp_wire_put_u64(uint8_t *p, uint64_t v)
{
    pp_wire_put_u32(p, (uint32_t)v);
    pp_wire_put_u32(p + 4, (uint32_t)(v >> 32));
}

/****  Per-type rules, shared by encoder and decoder  ****/

struct type_rule {
    uint16_t flags;           /* flag bits this type may carry */
    uint32_t min_len;
    uint32_t max_len;         /* before max_body; UINT32_MAX = no own limit */
};

static const struct type_rule rules[PP_WIRE_TYPE_MAX + 1] = {
    [PP_WIRE_HELLO]        = { 0, 0, UINT32_MAX },
    [PP_WIRE_HELLO_ACK]    = { 0, 0, UINT32_MAX },
    [PP_WIRE_JOB]          = { PP_WIRE_F_CHUNKED, 0, UINT32_MAX },
    [PP_WIRE_RESULT]       = { PP_WIRE_F_CHUNKED | PP_WIRE_F_NONE, 0, UINT32_MAX },
    [PP_WIRE_CHUNK]        = { 0, 1, UINT32_MAX },  /* an empty chunk is a stall */
    [PP_WIRE_CODE_REQUEST] = { 0, 0, UINT32_MAX },
    [PP_WIRE_CODE]         = { PP_WIRE_F_CHUNKED, 0, UINT32_MAX },
    [PP_WIRE_HEARTBEAT]    = { 0, 0, 0 },
    [PP_WIRE_ERROR]        = { 0, 4, UINT32_MAX },  /* i32 code first */
    [PP_WIRE_BYE]          = { 0, 0, 0 },
    [PP_WIRE_AUTH]         = { 0, 0, UINT32_MAX },
    [PP_WIRE_INFO]         = { 0, 0, UINT32_MAX },
    [PP_WIRE_SESSION]      = { 0, 0, UINT32_MAX },
    [PP_WIRE_READY]        = { 0, 0, UINT32_MAX },
    [PP_WIRE_MODULE]       = { 0, 0, UINT32_MAX },
    [PP_WIRE_MESSAGE]      = { PP_WIRE_F_CHUNKED | PP_WIRE_F_RUN, 0, UINT32_MAX },
};

/*
 * Check the header fields wholly inside b[0..have): version (byte 0),
 * type (1), flags (2..3), length (4..7).  The request id is opaque here.
 * Returns 0 or -EPROTO / -EMSGSIZE with *reason set.
 */
static int hdr_check(const uint8_t *b, uint32_t have, uint32_t max_body,
                     const char **reason)
{
    if (have >= 1 && b[0] != PP_WIRE_VERSION) {
        *reason = "bad protocol version";
        return -EPROTO;
    }
    if (have >= 2 && (b[1] == 0 || b[1] > PP_WIRE_TYPE_MAX)) {
        *reason = "unknown frame type";
        return -EPROTO;
    }
    if (have < 4)
        return 0;
    const struct type_rule *r = &rules[b[1]];
    uint16_t flags = pp_wire_get_u16(b + 2);
    if (flags & ~PP_WIRE_F_KNOWN) {
        *reason = "unknown flag bits";
        return -EPROTO;
    }
    if (flags & ~r->flags) {
        *reason = "flag not allowed for this frame type";
        return -EPROTO;
    }
    if (have < 8)
        return 0;
    uint32_t len = pp_wire_get_u32(b + 4);
    if (len > max_body) {
        *reason = "body longer than the negotiated maximum";
        return -EMSGSIZE;
    }
    uint32_t min = r->min_len;
    if ((flags & PP_WIRE_F_CHUNKED) && min < PP_WIRE_TOTAL_SIZE)
        min = PP_WIRE_TOTAL_SIZE;
    if (len < min || len > r->max_len) {
        *reason = "body length wrong for this frame type";
        return -EPROTO;
    }
    return 0;
}

/****  Encoder  ****/

int pp_wire_encode_header(uint8_t *buf, enum pp_wire_type type, uint16_t flags,
                          uint32_t len, uint64_t reqid)
{
    if (!buf)
        return -EINVAL;
    uint8_t h[PP_WIRE_HDR_SIZE];
    const char *reason;
    h[0] = PP_WIRE_VERSION;
    /* Out-of-range enum values must not wrap into a valid byte. */
    h[1] = (type >= 1 && type <= PP_WIRE_TYPE_MAX) ? (uint8_t)type : 0;
    pp_wire_put_u16(h + 2, flags);
    pp_wire_put_u32(h + 4, len);
    pp_wire_put_u64(h + 8, reqid);
    int r = hdr_check(h, PP_WIRE_HDR_SIZE, UINT32_MAX, &reason);
    if (r < 0)
        return r;
    memcpy(buf, h, sizeof(h));  /* buf untouched on failure */
    return 0;
}

int pp_wire_encode_frame(uint8_t *buf, size_t cap, enum pp_wire_type type,
                         uint16_t flags, uint64_t reqid, const void *body,
                         size_t len, size_t *ret_len)
{
    if (!buf || (len && !body))
        return -EINVAL;
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    /* len <= UINT32_MAX, so the sum cannot wrap a 64-bit size_t; the
     * comparison is written so that it cannot wrap a 32-bit one either. */
    if (cap < PP_WIRE_HDR_SIZE || len > cap - PP_WIRE_HDR_SIZE)
        return -ENOBUFS;
    int r = pp_wire_encode_header(buf, type, flags, (uint32_t)len, reqid);
    if (r < 0)
        return r;
    if (len)
        memcpy(buf + PP_WIRE_HDR_SIZE, body, len);
    if (ret_len)
        *ret_len = PP_WIRE_HDR_SIZE + len;
    return 0;
}

int pp_wire_decode_header(const uint8_t *buf, uint32_t max_body,
                          struct pp_wire_hdr *ret_hdr, const char **ret_reason)
{
    const char *reason = NULL;
    if (!buf || !ret_hdr)
        return -EINVAL;
    int r = hdr_check(buf, PP_WIRE_HDR_SIZE, max_body, &reason);
    if (r < 0) {
        if (ret_reason)
            *ret_reason = reason;
        return r;
    }
    ret_hdr->type = buf[1];
    ret_hdr->flags = pp_wire_get_u16(buf + 2);
    ret_hdr->len = pp_wire_get_u32(buf + 4);
    ret_hdr->reqid = pp_wire_get_u64(buf + 8);
    return 0;
}

int pp_wire_chunks(uint64_t total, uint32_t max_body, uint64_t *ret_count)
{
    if (max_body == 0 || !ret_count)
        return -EINVAL;
    *ret_count = total / max_body + (total % max_body != 0);
    return 0;
}

/****  Decoder  ****/

int pp_wire_dec_init(struct pp_wire_dec *dec, uint32_t max_body)
{
    if (!dec || max_body > PP_WIRE_BODY_LIMIT)
        return -EINVAL;
    if (max_body == 0)
        max_body = PP_WIRE_MAX_BODY;
    uint8_t *buf = malloc(max_body);
    if (!buf)
        return -ENOMEM;
    memset(dec, 0, sizeof(*dec));
    dec->buf = buf;
    dec->capacity = max_body;
    dec->max_body = max_body;
    return 0;
}

void pp_wire_dec_exit(struct pp_wire_dec *dec)
{
    if (!dec)
        return;
    free(dec->buf);
    dec->buf = NULL;
    dec->capacity = 0;
    dec->max_body = 0;
}

int pp_wire_dec_set_max(struct pp_wire_dec *dec, uint32_t max_body)
{
    if (!dec || max_body == 0 || max_body > dec->capacity || dec->in_body ||
        dec->hdr_have)
        return -EINVAL;
    dec->max_body = max_body;
    return 0;
}

const char *pp_wire_dec_error(const struct pp_wire_dec *dec)
{
    return dec && dec->error ? dec->reason : NULL;
}

static int dec_fail(struct pp_wire_dec *dec, int err, const char *reason)
{
    dec->error = err;
    dec->reason = reason;
    return err;
}

static int dec_deliver(struct pp_wire_dec *dec, const uint8_t *body,
                       pp_wire_frame_fn cb, void *ctx)
{
    struct pp_wire_frame f = { .hdr = dec->cur, .body = body };
    dec->in_body = false;
    dec->body_have = 0;
    int r = cb(ctx, &f);
    if (r < 0)
        return dec_fail(dec, r, "frame rejected by its handler");
    return 0;
}

/*
 * Take header bytes from p[0..n).  Returns the bytes used (the header is
 * complete when dec->in_body is set), or -errno.
 */
static int dec_header(struct pp_wire_dec *dec, const uint8_t *p, size_t n)
{
    const char *reason = NULL;
    const uint8_t *h = p;
    uint32_t used;
    int r;

    if (dec->hdr_have == 0 && n >= PP_WIRE_HDR_SIZE) {
        used = PP_WIRE_HDR_SIZE;  /* whole header in the slice: no copy */
    } else {
        used = PP_WIRE_HDR_SIZE - dec->hdr_have;
        if (used > n)
            used = (uint32_t)n;
        memcpy(dec->hdr + dec->hdr_have, p, used);
        dec->hdr_have += used;
        r = hdr_check(dec->hdr, dec->hdr_have, dec->max_body, &reason);
        if (r < 0)
            return dec_fail(dec, r, reason);
        if (dec->hdr_have < PP_WIRE_HDR_SIZE)
            return (int)used;
        dec->hdr_have = 0;
        h = dec->hdr;
    }
    r = pp_wire_decode_header(h, dec->max_body, &dec->cur, &reason);
    if (r < 0)
        return dec_fail(dec, r, reason);
    dec->in_body = true;
    dec->body_have = 0;
    return (int)used;
}

int pp_wire_dec_feed(struct pp_wire_dec *dec, const void *data, size_t len,
                     pp_wire_frame_fn cb, void *ctx)
{
    if (!dec || !cb || (len && !data) || !dec->buf)
        return -EINVAL;
    if (dec->error)
        return dec->error;

    const uint8_t *p = data;
    size_t pos = 0;
    int frames = 0, r;

    while (pos < len) {
        if (!dec->in_body) {
            r = dec_header(dec, p + pos, len - pos);
            if (r < 0)
                return r;
            pos += (size_t)r;
            if (!dec->in_body)
                break;  /* header still partial: slice used up */
        }
        size_t left = dec->cur.len - dec->body_have;
        if (dec->body_have == 0 && len - pos >= left) {
            /* Whole body in this slice: hand it over in place.  An empty
             * body still gets a valid pointer. */
            r = dec_deliver(dec, left ? p + pos : dec->buf, cb, ctx);
            pos += left;
        } else {
            size_t n = len - pos < left ? len - pos : left;
            memcpy(dec->buf + dec->body_have, p + pos, n);  /* cur.len <= capacity */
            dec->body_have += (uint32_t)n;
            pos += n;
            if (dec->body_have < dec->cur.len)
                break;
            r = dec_deliver(dec, dec->buf, cb, ctx);
        }
        if (r < 0)
            return r;
        /* Only a slice of over 2^31 frames could pass INT_MAX;
         * saturate rather than overflow. */
        if (frames < INT_MAX)
            frames++;
    }
    return frames;
}
