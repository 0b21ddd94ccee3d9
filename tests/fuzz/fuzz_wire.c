/*
 * Description: libFuzzer target for the frame layer (net/wire.c): the
 * incremental decoder under input-chosen buffer sizes and slicings, and
 * the encoder against the decoder.
 *
 * Input layout (seeds in corpus/wire/ follow it):
 *
 *   offset  size  field
 *        0     2  u16 LE: the decoder's max_body at init (0 = the default 1 MiB)
 *        2     2  u16 LE: pp_wire_dec_set_max before the first byte (0 = no call)
 *        4     1  low 4 bits: n, the number of slice lengths that follow
 *        5     n  slice lengths (u8 each, 0 = an empty feed), used in a cycle
 *      5+n     -  the byte stream
 *
 * Properties checked (a violation aborts, which libFuzzer reports):
 *   - the stream fed whole and fed in slices yields the same frames (types,
 *     flags, lengths, request ids, body bytes) and the same sticky error
 *     with the same reason;
 *   - every delivered frame obeys the header rules and max_body, and its
 *     re-encoding decodes to the same frame;
 *   - an error is sticky: later feeds return it and deliver nothing;
 *   - the first 16 stream bytes: decode_header accepts them exactly when
 *     encode_header accepts their fields, and then re-encodes them to the
 *     same bytes;
 *   - pp_wire_chunks(total, max) is the least n with n * max >= total.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_wire: %s:%d: check failed: %s\n",          \
                    __FILE__, __LINE__, #cond);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* What one decoding run saw: a digest of the frames, not the frames. */
struct seen {
    uint32_t max_body;        /* the limit frames must respect */
    unsigned frames;
    uint64_t digest;
    bool stop;                /* set by the callback: no frame after an error */
};

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;  /* FNV-1a */
    return h;
}

/* Re-encode a delivered frame and decode it in one slice: the same frame. */
static int check_one(void *ctx, const struct pp_wire_frame *f)
{
    const struct pp_wire_frame *want = ctx;
    CHECK(f->hdr.type == want->hdr.type && f->hdr.flags == want->hdr.flags &&
          f->hdr.len == want->hdr.len && f->hdr.reqid == want->hdr.reqid);
    CHECK(f->hdr.len == 0 || memcmp(f->body, want->body, f->hdr.len) == 0);
    return 0;
}

static void roundtrip(const struct pp_wire_frame *f)
{
    /* A decoder just large enough: 0 would mean the 1 MiB default. */
    uint32_t max_body = f->hdr.len ? f->hdr.len : 1;
    size_t cap = PP_WIRE_HDR_SIZE + f->hdr.len, n = 0;
    uint8_t *buf = malloc(cap);
    CHECK(buf);
    CHECK(pp_wire_encode_frame(buf, cap, (enum pp_wire_type)f->hdr.type, f->hdr.flags,
                               f->hdr.reqid, f->body, f->hdr.len, &n) == 0);
    CHECK(n == cap);
    struct pp_wire_dec d;
    CHECK(pp_wire_dec_init(&d, max_body) == 0);
    CHECK(pp_wire_dec_feed(&d, buf, n, check_one, (void *)f) == 1);
    pp_wire_dec_exit(&d);
    free(buf);
}

static int on_frame(void *ctx, const struct pp_wire_frame *f)
{
    struct seen *s = ctx;
    CHECK(!s->stop);
    CHECK(f->body != NULL);
    CHECK(f->hdr.type >= 1 && f->hdr.type <= PP_WIRE_TYPE_MAX);
    CHECK((f->hdr.flags & ~PP_WIRE_F_KNOWN) == 0);
    CHECK(f->hdr.len <= s->max_body);
    if (f->hdr.flags & PP_WIRE_F_CHUNKED)
        CHECK(f->hdr.len >= PP_WIRE_TOTAL_SIZE);
    s->frames++;
    s->digest = mix(s->digest, &f->hdr.type, sizeof(f->hdr.type));
    s->digest = mix(s->digest, &f->hdr.flags, sizeof(f->hdr.flags));
    s->digest = mix(s->digest, &f->hdr.len, sizeof(f->hdr.len));
    s->digest = mix(s->digest, &f->hdr.reqid, sizeof(f->hdr.reqid));
    s->digest = mix(s->digest, f->body, f->hdr.len);
    /* Keep the round trip cheap: the first few frames of each input. */
    if (s->frames <= 4)
        roundtrip(f);
    return 0;
}

struct params {
    uint16_t init_max;
    uint16_t set_max;
    const uint8_t *slices;
    size_t nslices;
    const uint8_t *stream;
    size_t len;
};

/* Set up a decoder as the input says.  Returns false if init refused it. */
static bool dec_setup(struct pp_wire_dec *d, const struct params *p, struct seen *s)
{
    if (pp_wire_dec_init(d, p->init_max) != 0)
        return false;
    if (p->set_max) {
        int r = pp_wire_dec_set_max(d, p->set_max);
        CHECK(r == (p->set_max <= d->capacity ? 0 : -EINVAL));
    }
    memset(s, 0, sizeof(*s));
    s->max_body = d->max_body;
    s->digest = 0xcbf29ce484222325ull;
    return true;
}

/* Feed the stream in the input's slices.  Returns the final rc (<= 0). */
static int feed_sliced(struct pp_wire_dec *d, const struct params *p, struct seen *s)
{
    size_t pos = 0, k = 0;
    while (pos < p->len) {
        size_t n = p->nslices ? p->slices[k++ % p->nslices] : p->len - pos;
        if (n == 0) {
            /* An empty feed delivers nothing; then go on by one byte so
             * that a list of zeros still ends. */
            int r = pp_wire_dec_feed(d, p->stream + pos, 0, on_frame, s);
            CHECK(r == 0);
            n = 1;
        }
        if (n > p->len - pos)
            n = p->len - pos;
        unsigned before = s->frames;
        int r = pp_wire_dec_feed(d, p->stream + pos, n, on_frame, s);
        if (r < 0)
            return r;
        CHECK((unsigned)r == s->frames - before);
        pos += n;
    }
    return 0;
}

static void check_header_codec(const uint8_t *h)
{
    struct pp_wire_hdr hdr;
    const char *reason = NULL;
    int dr = pp_wire_decode_header(h, UINT32_MAX, &hdr, &reason);
    uint8_t out[PP_WIRE_HDR_SIZE];
    int er = -1;
    if (h[0] == PP_WIRE_VERSION)
        er = pp_wire_encode_header(out, (enum pp_wire_type)h[1], pp_wire_get_u16(h + 2),
                                   pp_wire_get_u32(h + 4), pp_wire_get_u64(h + 8));
    if (dr == 0) {
        CHECK(er == 0);
        CHECK(memcmp(out, h, sizeof(out)) == 0);
    } else {
        CHECK(reason != NULL);
        CHECK(h[0] != PP_WIRE_VERSION || er == dr);
    }
}

static void check_chunks(const uint8_t *b)
{
    uint64_t total = pp_wire_get_u64(b);
    uint32_t max = pp_wire_get_u32(b + 8);
    uint64_t n = 0;
    if (max == 0) {
        CHECK(pp_wire_chunks(total, max, &n) == -EINVAL);
        return;
    }
    CHECK(pp_wire_chunks(total, max, &n) == 0);
    unsigned __int128 cover = (unsigned __int128)n * max;
    CHECK(cover >= total);
    CHECK(n == 0 || cover - max < total);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    struct params p = {
        .init_max = pp_wire_get_u16(data),
        .set_max = pp_wire_get_u16(data + 2),
        .nslices = data[4] & 0x0f,
    };
    if (size < 5 + p.nslices)
        return 0;
    p.slices = data + 5;
    p.stream = data + 5 + p.nslices;
    p.len = size - 5 - p.nslices;

    if (p.len >= PP_WIRE_HDR_SIZE)
        check_header_codec(p.stream);
    if (p.len >= 12)
        check_chunks(p.stream);

    struct pp_wire_dec whole, sliced;
    struct seen sw, ss;
    if (!dec_setup(&whole, &p, &sw))
        return 0;
    CHECK(dec_setup(&sliced, &p, &ss));

    int rw = pp_wire_dec_feed(&whole, p.stream, p.len, on_frame, &sw);
    if (rw >= 0) {
        CHECK((unsigned)rw == sw.frames);
        rw = 0;
    }
    int rs = feed_sliced(&sliced, &p, &ss);

    CHECK(rw == rs);
    CHECK(sw.frames == ss.frames);
    CHECK(sw.digest == ss.digest);
    CHECK(pp_wire_dec_error(&whole) == pp_wire_dec_error(&sliced));
    if (rw < 0) {
        CHECK(rw == -EPROTO || rw == -EMSGSIZE);
        CHECK(pp_wire_dec_error(&whole) != NULL);
        /* Sticky: nothing more, the same error. */
        sw.stop = true;
        uint8_t more[PP_WIRE_HDR_SIZE] = { PP_WIRE_VERSION, PP_WIRE_BYE };
        CHECK(pp_wire_dec_feed(&whole, more, sizeof(more), on_frame, &sw) == rw);
    } else {
        CHECK(pp_wire_dec_error(&whole) == NULL);
    }
    pp_wire_dec_exit(&whole);
    pp_wire_dec_exit(&sliced);
    return 0;
}
