/*
 * bring.h - a single-producer / single-consumer ring of variable-sized
 * entries in shared memory: a worker's messages to the engine thread
 * (engine/channel.c).
 *
 * Why bytes and not 64-bit values as in ring.h: a job that streams small
 * values (8 bytes each, millions of them) should pay one copy into the
 * ring and one out, with no allocation per value, and the reader should
 * take everything written since its last look in one pass.
 *
 * Layout.  Entries are a 16-byte header and a payload rounded up to 16
 * bytes, written contiguously; positions are free-running byte counts
 * (as in ring.h, they never wrap in practice).  An entry never straddles
 * the end: the producer fills the rest with a PAD entry and starts over
 * at offset 0 (every size is a multiple of 16, so a header always fits).
 *
 * A producer killed mid-entry leaves nothing visible: the tail moves only
 * after the entry is whole (B1), so the reader never sees half an entry.
 */
#ifndef PP_SHM_BRING_H
#define PP_SHM_BRING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "atomic.h"

#define PP_BRING_PAD 0xffffu       /* kind of a filler entry */
#define PP_BRING_HDR 16u

struct pp_bring_hdr {
    uint32_t len;                  /* payload bytes */
    uint16_t kind;                 /* the caller's; PP_BRING_PAD = skip */
    uint16_t aux;                  /* the caller's */
    uint64_t tag;                  /* the caller's (a job token) */
};

struct pp_bring {
    uint64_t cap;                  /* bytes, a power of two, >= 64 */
    pp_cacheline_aligned _Atomic uint64_t head; /* consumer: bytes read */
    pp_cacheline_aligned _Atomic uint64_t tail; /* producer: bytes written */
    pp_cacheline_aligned unsigned char data[];
};

static inline size_t pp_bring_bytes(uint64_t cap)
{
    return sizeof(struct pp_bring) + cap;
}

static inline void pp_bring_init(struct pp_bring *b, uint64_t cap)
{
    b->cap = cap;
    atomic_init(&b->head, 0);
    atomic_init(&b->tail, 0);
}

static inline uint64_t pp_bring_size(uint32_t len)
{
    return PP_BRING_HDR + (((uint64_t)len + 15u) & ~15ull);
}

/* The largest payload an entry may have. */
static inline uint32_t pp_bring_max(const struct pp_bring *b)
{
    return (uint32_t)(b->cap / 4 - PP_BRING_HDR);
}

/*
 * Producer: writes one entry if there is room (false when full: the
 * caller waits for the reader).  len <= pp_bring_max(b).
 */
static inline bool pp_bring_put(struct pp_bring *b, uint16_t kind, uint16_t aux, uint64_t tag,
                                const void *p, uint32_t len)
{
    uint64_t need = pp_bring_size(len), mask = b->cap - 1;
    uint64_t t = pp_load_relaxed(&b->tail); /* ours */
    uint64_t off = t & mask, end = b->cap - off;
    uint64_t total = need > end ? end + need : need;
    /* B2: pairs with the reader's release of head: the bytes it read are
     * free to overwrite. */
    if (b->cap - (t - pp_load_acquire(&b->head)) < total)
        return false;
    if (need > end) {
        struct pp_bring_hdr pad = { (uint32_t)(end - PP_BRING_HDR), PP_BRING_PAD, 0, 0 };
        memcpy(b->data + off, &pad, sizeof(pad));
        t += end;
        off = 0;
    }
    struct pp_bring_hdr h = { len, kind, aux, tag };
    memcpy(b->data + off, &h, sizeof(h));
    if (len)
        memcpy(b->data + off + PP_BRING_HDR, p, len);
    pp_store_release(&b->tail, t + need); /* B1: the entry is whole */
    return true;
}

static inline bool pp_bring_empty(struct pp_bring *b)
{
    return pp_load_acquire(&b->tail) == pp_load_relaxed(&b->head);
}

/*
 * Consumer: calls fn(ctx, hdr, payload) for every entry written so far,
 * in order, then frees their space.  fn returns false to stop before
 * that entry: it stays, first in line for the next drain.  Returns how
 * many entries were taken.
 */
static inline unsigned pp_bring_drain(struct pp_bring *b,
                                      bool (*fn)(void *ctx, const struct pp_bring_hdr *h,
                                                 const unsigned char *payload),
                                      void *ctx)
{
    uint64_t h = pp_load_relaxed(&b->head); /* ours */
    uint64_t t = pp_load_acquire(&b->tail); /* B1 */
    uint64_t mask = b->cap - 1;
    unsigned n = 0;
    while (h < t) {
        struct pp_bring_hdr e;
        memcpy(&e, b->data + (h & mask), sizeof(e));
        /* A length that cannot be (a corrupt ring) ends the pass: the
         * rest is dropped rather than read out of bounds. */
        if (pp_bring_size(e.len) > b->cap - (h & mask)) {
            h = t;
            break;
        }
        if (e.kind != PP_BRING_PAD) {
            if (!fn(ctx, &e, b->data + (h & mask) + PP_BRING_HDR))
                break;
            n++;
        }
        h += pp_bring_size(e.len);
    }
    pp_store_release(&b->head, h > t ? t : h); /* B2 */
    return n;
}

#endif /* PP_SHM_BRING_H */
