/*
 * chan.c - frames over a connection, plaintext then sealed (chan.h).
 */
#include "chan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int fail(struct pp_chan *ch, int err, const char *reason)
{
    if (!ch->err) {
        ch->err = err;
        ch->reason = reason;
    }
    return ch->err;
}

int pp_chan_init(struct pp_chan *ch, struct pp_conn *conn, pp_wire_frame_fn on_frame,
                 void *ctx)
{
    memset(ch, 0, sizeof(*ch));
    ch->conn = conn;
    ch->on_frame = on_frame;
    ch->ctx = ctx;
    int r = pp_wire_dec_init(&ch->dec, PP_WIRE_MAX_BODY);
    if (r == 0)
        r = pp_wire_dec_set_max(&ch->dec, PP_CHAN_HANDSHAKE_MAX);
    return r;
}

void pp_chan_exit(struct pp_chan *ch)
{
    pp_wire_dec_exit(&ch->dec);
    if (ch->tx_sealed)
        pp_sec_tx_exit(&ch->tx);
    if (ch->rx_sealed)
        pp_sec_rx_exit(&ch->rx);
    free(ch->stage);
    ch->stage = NULL;
    ch->stage_len = ch->stage_cap = 0;
    ch->tx_sealed = ch->rx_sealed = false;
}

/* ---- receiving ---- */

/* Every frame passes here: after the switch to sealed mode inside one
 * plaintext read, a further plaintext frame in that read breaks the
 * lockstep rule. */
static int frame_in(void *ctx, const struct pp_wire_frame *f)
{
    struct pp_chan *ch = ctx;
    if (ch->switched)
        return -EPROTO;
    return ch->on_frame(ch->ctx, f);
}

static int feed_frames(struct pp_chan *ch, const uint8_t *p, size_t n)
{
    int r = pp_wire_dec_feed(&ch->dec, p, n, frame_in, ch);
    if (r < 0)
        return fail(ch, r, ch->switched && r == -EPROTO
                               ? "bytes after the last handshake message"
                               : pp_wire_dec_error(&ch->dec));
    return ch->err;
}

static int plain_in(void *ctx, const uint8_t *p, size_t n)
{
    struct pp_chan *ch = ctx;
    int r = feed_frames(ch, p, n);
    return r < 0 ? r : 0;
}

int pp_chan_data(struct pp_chan *ch, const uint8_t *data, size_t len)
{
    if (ch->err)
        return ch->err;
    if (ch->rx_sealed) {
        int r = pp_sec_rx_feed(&ch->rx, data, len, plain_in, ch);
        if (r < 0)
            return fail(ch, r, ch->err ? ch->reason : pp_sec_rx_error(&ch->rx));
        return 0;
    }
    int r = feed_frames(ch, data, len);
    if (r < 0)
        return r;
    if (ch->switched) {
        /* The switch came inside this read: nothing may follow the last
         * plaintext frame, not even part of a header. */
        ch->switched = false;
        if (ch->dec.hdr_have || ch->dec.in_body)
            return fail(ch, -EPROTO, "bytes after the last handshake message");
    }
    return 0;
}

int pp_chan_seal_rx(struct pp_chan *ch, const struct pp_sec_dir *dir)
{
    int r = pp_sec_rx_init(&ch->rx, dir);
    if (r < 0)
        return fail(ch, r, "cannot set up the receiving keys");
    ch->rx_sealed = true;
    ch->switched = true;
    /* Authenticated: full-size frames from here (between two frames). */
    pp_wire_dec_set_max(&ch->dec, PP_WIRE_MAX_BODY);
    return 0;
}

int pp_chan_seal_tx(struct pp_chan *ch, const struct pp_sec_dir *dir)
{
    int r = pp_sec_tx_init(&ch->tx, dir);
    if (r < 0)
        return fail(ch, r, "cannot set up the sending keys");
    ch->tx_sealed = true;
    return 0;
}

/* ---- sending ---- */

static int stage_room(struct pp_chan *ch, size_t n)
{
    if (ch->stage_cap - ch->stage_len >= n)
        return 0;
    if (n > SIZE_MAX / 2 - ch->stage_len)
        return fail(ch, -ENOBUFS, "frame too large");
    size_t cap = ch->stage_cap ? ch->stage_cap : 64 * 1024;
    while (cap - ch->stage_len < n)
        cap *= 2;
    uint8_t *p = realloc(ch->stage, cap);
    if (!p)
        return fail(ch, -ENOMEM, "out of memory");
    ch->stage = p;
    ch->stage_cap = cap;
    return 0;
}

int pp_chan_flush(struct pp_chan *ch)
{
    if (ch->err)
        return ch->err;
    if (!ch->stage_len)
        return 0;
    size_t need = pp_sec_sealed_size(ch->stage_len), got = 0;
    uint8_t *out = pp_conn_reserve(ch->conn, need);
    if (!out)
        return fail(ch, -ENOBUFS, "send queue full");
    int r = pp_sec_seal(&ch->tx, ch->stage, ch->stage_len, out, need, &got);
    if (r < 0)
        return fail(ch, r, "cannot seal records");
    pp_conn_commit(ch->conn, got);
    ch->stage_len = 0;
    return 0;
}

uint8_t *pp_chan_send_begin(struct pp_chan *ch, enum pp_wire_type type, uint16_t flags,
                            uint64_t reqid, size_t len)
{
    if (ch->err)
        return NULL;
    if (!ch->tx_sealed || len > UINT32_MAX) {
        fail(ch, -EINVAL, "frame not sendable");
        return NULL;
    }
    if (ch->stage_len >= PP_CHAN_FLUSH_AT && pp_chan_flush(ch) < 0)
        return NULL;
    if (stage_room(ch, PP_WIRE_HDR_SIZE + len) < 0)
        return NULL;
    uint8_t *h = ch->stage + ch->stage_len;
    int r = pp_wire_encode_header(h, type, flags, (uint32_t)len, reqid);
    if (r < 0) {
        fail(ch, r, "frame refused by the encoder");
        return NULL;
    }
    ch->stage_len += PP_WIRE_HDR_SIZE + len;
    return h + PP_WIRE_HDR_SIZE;
}

int pp_chan_send(struct pp_chan *ch, enum pp_wire_type type, uint16_t flags,
                 uint64_t reqid, const void *body, size_t len)
{
    if (ch->err)
        return ch->err;
    if (!ch->tx_sealed) {
        uint8_t *p = pp_conn_reserve(ch->conn, PP_WIRE_HDR_SIZE + len);
        size_t n = 0;
        if (!p)
            return fail(ch, -ENOBUFS, "send queue full");
        int r = pp_wire_encode_frame(p, PP_WIRE_HDR_SIZE + len, type, flags, reqid, body,
                                     len, &n);
        if (r < 0)
            return fail(ch, r, "frame refused by the encoder");
        pp_conn_commit(ch->conn, n);
        return 0;
    }
    uint8_t *p = pp_chan_send_begin(ch, type, flags, reqid, len);
    if (!p)
        return ch->err;
    if (len)
        memcpy(p, body, len);
    return 0;
}

int pp_chan_send_error(struct pp_chan *ch, uint64_t reqid, int code, const char *text)
{
    size_t tl = strnlen(text, 1024);
    uint8_t buf[4 + 1024];
    pp_wire_put_u32(buf, (uint32_t)code);
    memcpy(buf + 4, text, tl);
    return pp_chan_send(ch, PP_WIRE_ERROR, 0, reqid, buf, 4 + tl);
}

size_t pp_chan_pending(const struct pp_chan *ch)
{
    return ch->stage_len + (ch->conn ? pp_conn_queued(ch->conn) : 0);
}

bool pp_chan_idle(const struct pp_chan *ch)
{
    if (ch->dec.hdr_have || ch->dec.in_body)
        return false;
    return !ch->rx_sealed || pp_sec_rx_idle(&ch->rx);
}

const char *pp_chan_error(const struct pp_chan *ch)
{
    return ch->err ? ch->reason : NULL;
}

int pp_chan_export(struct pp_chan *ch, struct pp_sec_dir *ret_tx, struct pp_sec_dir *ret_rx)
{
    if (!ch->tx_sealed || !ch->rx_sealed || ch->stage_len || !pp_chan_idle(ch))
        return -EBUSY;
    pp_sec_tx_export(&ch->tx, ret_tx);
    return pp_sec_rx_export(&ch->rx, ret_rx);
}
