/*
 * chan.h - one peer of pp's protocol on one connection: frames (wire.h),
 * in plaintext during the handshake and then sealed into records
 * (secure.h), over a socket of the event loop (loop.h).
 *
 * Sending.  In plaintext mode a frame goes straight into the connection's
 * out-queue.  Once sealed, frames collect in a plaintext staging buffer
 * and pp_chan_flush seals all of them as one run of records: one AEAD
 * pass and one send for every frame a loop turn produced, instead of one
 * per frame (a 64-byte JOB would otherwise pay a record header, a tag and
 * a cipher setup each).  The owner calls pp_chan_flush before it blocks in
 * pp_loop_run; a staging buffer that grows past PP_CHAN_FLUSH_AT is sealed
 * at once, so memory stays bounded by what one frame needs.
 *
 * Receiving.  Bytes go through the record decoder (once sealed) and then
 * the frame decoder, which calls the owner's frame handler.  The
 * handshake is lockstep: neither side sends sealed bytes before it has
 * read the other's last plaintext message, so a switch to sealed mode
 * happens exactly between two reads.  A peer that sends anything after
 * its last plaintext message, in the same read, breaks that rule:
 * -EPROTO.
 *
 * Errors are sticky: the first one is kept with a static reason
 * (pp_chan_error) and every later call returns it; the owner closes the
 * connection and logs the reason.
 */
#ifndef PP_NET_CHAN_H
#define PP_NET_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "secure.h"
#include "wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PP_CHAN_FLUSH_AT (1u << 20) /* seal the staging buffer beyond this */

struct pp_chan {
    struct pp_conn *conn;
    bool tx_sealed, rx_sealed;
    bool switched;            /* rx was switched while decoding a read */
    struct pp_sec_tx tx;
    struct pp_sec_rx rx;
    struct pp_wire_dec dec;
    uint8_t *stage;           /* plaintext frames not sealed yet */
    size_t stage_len, stage_cap;
    pp_wire_frame_fn on_frame;
    void *ctx;
    int err;
    const char *reason;
};

/* Sets up a channel on conn (which may be NULL until connected: set
 * ch->conn before sending).  Returns 0 or -ENOMEM. */
int pp_chan_init(struct pp_chan *ch, struct pp_conn *conn, pp_wire_frame_fn on_frame,
                 void *ctx);
/* Before authentication a peer may send only handshake messages (at
 * most this long): the frame decoder refuses anything longer at once. */
#define PP_CHAN_HANDSHAKE_MAX 128u

/* Frees buffers and wipes keys.  Safe on a zeroed channel. */
void pp_chan_exit(struct pp_chan *ch);

/* Feed bytes read from the connection.  Returns 0 or the sticky -errno. */
int pp_chan_data(struct pp_chan *ch, const uint8_t *data, size_t len);

/* Switches a direction to sealed records with the handshake's keys.
 * rx: call from the frame handler of the last plaintext frame the peer
 * sends.  Returns 0 or -errno (-ENOMEM). */
int pp_chan_seal_tx(struct pp_chan *ch, const struct pp_sec_dir *dir);
int pp_chan_seal_rx(struct pp_chan *ch, const struct pp_sec_dir *dir);

/* Queues one frame.  Returns 0, or -errno (-EPROTO for a frame the
 * encoder refuses, -ENOBUFS, -ENOMEM, the sticky error). */
int pp_chan_send(struct pp_chan *ch, enum pp_wire_type type, uint16_t flags,
                 uint64_t reqid, const void *body, size_t len);
/* Like pp_chan_send, but returns where to write the len body bytes (valid
 * until the next call on ch), or NULL (pp_chan_error says why).  Sealed
 * mode only. */
uint8_t *pp_chan_send_begin(struct pp_chan *ch, enum pp_wire_type type, uint16_t flags,
                            uint64_t reqid, size_t len);
/* Sends an ERROR frame: code and text. */
int pp_chan_send_error(struct pp_chan *ch, uint64_t reqid, int code, const char *text);

/* Seals what is staged into the connection's out-queue.  0 or -errno. */
int pp_chan_flush(struct pp_chan *ch);
/* Bytes staged or queued and not yet sent. */
size_t pp_chan_pending(const struct pp_chan *ch);

/* True when no partial frame or record is buffered (an EOF now is
 * orderly at the byte level; BYE says whether it was meant). */
bool pp_chan_idle(const struct pp_chan *ch);

/* The first error's reason, or NULL. */
const char *pp_chan_error(const struct pp_chan *ch);

/* The current state of both directions, for handing the session to
 * another process (nothing may be staged or partly decoded). */
int pp_chan_export(struct pp_chan *ch, struct pp_sec_dir *ret_tx, struct pp_sec_dir *ret_rx);

#ifdef __cplusplus
}
#endif

#endif /* PP_NET_CHAN_H */
