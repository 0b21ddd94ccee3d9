// Description: the wire protocol's frame layer (net/wire.c): header codec,
// incremental decoder under every slicing, sticky errors on each bad field,
// chunk counting, and a randomized 10k-frame round trip.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "wire.h"

namespace {

struct Got {
    pp_wire_hdr hdr;
    std::vector<uint8_t> body;
};

struct Sink {
    std::vector<Got> frames;
    int fail_at = -1;  // callback returns -ECANCELED on this frame index
};

int collect(void *ctx, const pp_wire_frame *f)
{
    Sink *s = static_cast<Sink *>(ctx);
    if (s->fail_at == (int)s->frames.size())
        return -ECANCELED;
    EXPECT_NE(f->body, nullptr);
    s->frames.push_back({f->hdr, std::vector<uint8_t>(f->body, f->body + f->hdr.len)});
    return 0;
}

struct Dec {
    pp_wire_dec d;
    explicit Dec(uint32_t max = 0) { EXPECT_EQ(pp_wire_dec_init(&d, max), 0); }
    ~Dec() { pp_wire_dec_exit(&d); }
};

std::vector<uint8_t> frame(pp_wire_type t, uint16_t flags, uint64_t reqid,
                           const std::vector<uint8_t> &body)
{
    std::vector<uint8_t> out(PP_WIRE_HDR_SIZE + body.size());
    size_t n = 0;
    EXPECT_EQ(pp_wire_encode_frame(out.data(), out.size(), t, flags, reqid,
                                   body.data(), body.size(), &n), 0);
    EXPECT_EQ(n, out.size());
    return out;
}

// A header with raw fields, bypassing the encoder's checks.
std::vector<uint8_t> raw_hdr(uint8_t ver, uint8_t type, uint16_t flags, uint32_t len,
                             uint64_t reqid)
{
    std::vector<uint8_t> h(PP_WIRE_HDR_SIZE);
    h[0] = ver;
    h[1] = type;
    pp_wire_put_u16(&h[2], flags);
    pp_wire_put_u32(&h[4], len);
    pp_wire_put_u64(&h[8], reqid);
    return h;
}

// A valid body for type t (and flags), of about `len` bytes.
std::vector<uint8_t> body_for(pp_wire_type t, uint16_t flags, size_t len)
{
    if (t == PP_WIRE_HEARTBEAT || t == PP_WIRE_BYE)
        return {};
    if (t == PP_WIRE_CHUNK && len == 0)
        len = 1;
    if (t == PP_WIRE_ERROR && len < 4)
        len = 4;
    if ((flags & PP_WIRE_F_CHUNKED) && len < PP_WIRE_TOTAL_SIZE)
        len = PP_WIRE_TOTAL_SIZE;
    std::vector<uint8_t> b(len);
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 131 + t);
    return b;
}

const pp_wire_type all_types[] = {
    PP_WIRE_HELLO, PP_WIRE_HELLO_ACK, PP_WIRE_JOB, PP_WIRE_RESULT, PP_WIRE_CHUNK,
    PP_WIRE_CODE_REQUEST, PP_WIRE_CODE, PP_WIRE_HEARTBEAT, PP_WIRE_ERROR, PP_WIRE_BYE,
    PP_WIRE_MESSAGE,
};

bool chunkable(pp_wire_type t)
{
    return t == PP_WIRE_JOB || t == PP_WIRE_RESULT || t == PP_WIRE_CODE || t == PP_WIRE_MESSAGE;
}

}  // namespace

TEST(WireHeader, LittleEndianLayout)
{
    uint8_t h[PP_WIRE_HDR_SIZE];
    ASSERT_EQ(pp_wire_encode_header(h, PP_WIRE_JOB, PP_WIRE_F_CHUNKED, 0x11223344u,
                                    0x0102030405060708ull), 0);
    const uint8_t want[PP_WIRE_HDR_SIZE] = {PP_WIRE_VERSION, 3, 0x01, 0x00, 0x44, 0x33, 0x22, 0x11,
                                            8, 7, 6, 5, 4, 3, 2, 1};
    EXPECT_EQ(memcmp(h, want, sizeof(h)), 0);
    pp_wire_hdr d;
    ASSERT_EQ(pp_wire_decode_header(h, UINT32_MAX, &d, nullptr), 0);
    EXPECT_EQ(d.type, PP_WIRE_JOB);
    EXPECT_EQ(d.flags, PP_WIRE_F_CHUNKED);
    EXPECT_EQ(d.len, 0x11223344u);
    EXPECT_EQ(d.reqid, 0x0102030405060708ull);
}

TEST(WireHeader, EncoderRefusesWhatNoDecoderAccepts)
{
    uint8_t h[PP_WIRE_HDR_SIZE];
    memset(h, 0xAA, sizeof(h));
    EXPECT_EQ(pp_wire_encode_header(h, (pp_wire_type)0, 0, 0, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, (pp_wire_type)(PP_WIRE_TYPE_MAX + 1), 0, 0, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, (pp_wire_type)(256 + 3), 0, 0, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, PP_WIRE_JOB, 0x8000, 0, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, PP_WIRE_HELLO, PP_WIRE_F_CHUNKED, 8, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, PP_WIRE_JOB, PP_WIRE_F_CHUNKED, 7, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, PP_WIRE_HEARTBEAT, 0, 1, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, PP_WIRE_CHUNK, 0, 0, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(h, PP_WIRE_ERROR, 0, 3, 1), -EPROTO);
    EXPECT_EQ(pp_wire_encode_header(nullptr, PP_WIRE_BYE, 0, 0, 1), -EINVAL);
    for (uint8_t b : h)
        EXPECT_EQ(b, 0xAA) << "buffer written on failure";
}

TEST(WireHeader, EncodeFrameBounds)
{
    uint8_t buf[PP_WIRE_HDR_SIZE + 4];
    const uint8_t body[5] = {1, 2, 3, 4, 5};
    size_t n = 0;
    EXPECT_EQ(pp_wire_encode_frame(buf, sizeof(buf), PP_WIRE_JOB, 0, 1, body, 5, &n), -ENOBUFS);
    EXPECT_EQ(pp_wire_encode_frame(buf, 15, PP_WIRE_BYE, 0, 1, nullptr, 0, &n), -ENOBUFS);
    EXPECT_EQ(pp_wire_encode_frame(buf, SIZE_MAX, PP_WIRE_JOB, 0, 1, body,
                                   (size_t)UINT32_MAX + 1, &n), -EMSGSIZE);
    EXPECT_EQ(pp_wire_encode_frame(buf, sizeof(buf), PP_WIRE_JOB, 0, 1, nullptr, 4, &n), -EINVAL);
    EXPECT_EQ(n, 0u);
    EXPECT_EQ(pp_wire_encode_frame(buf, sizeof(buf), PP_WIRE_JOB, 0, 1, body, 4, &n), 0);
    EXPECT_EQ(n, sizeof(buf));
}

TEST(WireDecoder, RoundTripEveryType)
{
    for (pp_wire_type t : all_types) {
        for (uint16_t flags : {(uint16_t)0, (uint16_t)PP_WIRE_F_CHUNKED}) {
            if (flags && !chunkable(t))
                continue;
            for (size_t len : {0, 1, 100, 4096}) {
                auto b = body_for(t, flags, len);
                uint64_t reqid = 0xF00D0000ull + t;
                auto f = frame(t, flags, reqid, b);
                Dec d;
                Sink s;
                ASSERT_EQ(pp_wire_dec_feed(&d.d, f.data(), f.size(), collect, &s), 1);
                ASSERT_EQ(s.frames.size(), 1u);
                EXPECT_EQ(s.frames[0].hdr.type, t);
                EXPECT_EQ(s.frames[0].hdr.flags, flags);
                EXPECT_EQ(s.frames[0].hdr.len, b.size());
                EXPECT_EQ(s.frames[0].hdr.reqid, reqid);
                EXPECT_EQ(s.frames[0].body, b);
                EXPECT_EQ(pp_wire_dec_error(&d.d), nullptr);
            }
        }
    }
}

TEST(WireDecoder, OneByteAtATime)
{
    std::vector<uint8_t> stream;
    std::vector<std::vector<uint8_t>> bodies;
    for (pp_wire_type t : all_types) {
        bodies.push_back(body_for(t, 0, 37));
        auto f = frame(t, 0, t, bodies.back());
        stream.insert(stream.end(), f.begin(), f.end());
    }
    Dec d;
    Sink s;
    int total = 0;
    for (uint8_t byte : stream) {
        int r = pp_wire_dec_feed(&d.d, &byte, 1, collect, &s);
        ASSERT_GE(r, 0);
        total += r;
    }
    const size_t n = sizeof(all_types) / sizeof(all_types[0]);
    EXPECT_EQ((size_t)total, n);
    ASSERT_EQ(s.frames.size(), n);
    for (size_t i = 0; i < n; i++) {
        EXPECT_EQ(s.frames[i].hdr.type, all_types[i]);
        EXPECT_EQ(s.frames[i].body, bodies[i]);
    }
}

TEST(WireDecoder, ManyFramesInOneSlice)
{
    std::vector<uint8_t> stream;
    for (int i = 0; i < 1000; i++) {
        auto f = frame(i % 2 ? PP_WIRE_JOB : PP_WIRE_HEARTBEAT, 0, i,
                       i % 2 ? body_for(PP_WIRE_JOB, 0, i % 50) : std::vector<uint8_t>());
        stream.insert(stream.end(), f.begin(), f.end());
    }
    Dec d;
    Sink s;
    EXPECT_EQ(pp_wire_dec_feed(&d.d, stream.data(), stream.size(), collect, &s), 1000);
    ASSERT_EQ(s.frames.size(), 1000u);
    for (int i = 0; i < 1000; i++)
        EXPECT_EQ(s.frames[i].hdr.reqid, (uint64_t)i);
}

TEST(WireDecoder, SplitAtEveryOffset)
{
    auto a = frame(PP_WIRE_RESULT, 0, 7, body_for(PP_WIRE_RESULT, 0, 20));
    auto b = frame(PP_WIRE_BYE, 0, 8, {});
    std::vector<uint8_t> stream(a);
    stream.insert(stream.end(), b.begin(), b.end());
    for (size_t cut = 0; cut <= stream.size(); cut++) {
        Dec d;
        Sink s;
        int r1 = pp_wire_dec_feed(&d.d, stream.data(), cut, collect, &s);
        int r2 = pp_wire_dec_feed(&d.d, stream.data() + cut, stream.size() - cut, collect, &s);
        ASSERT_GE(r1, 0) << cut;
        ASSERT_GE(r2, 0) << cut;
        EXPECT_EQ(r1 + r2, 2) << cut;
        ASSERT_EQ(s.frames.size(), 2u) << cut;
        EXPECT_EQ(s.frames[0].hdr.reqid, 7u);
        EXPECT_EQ(s.frames[0].body, body_for(PP_WIRE_RESULT, 0, 20));
        EXPECT_EQ(s.frames[1].hdr.type, PP_WIRE_BYE);
    }
}

namespace {

// Feeds a good frame then `bad`, at every split of bad; expects err after
// the good frame, then the same error (and nothing delivered) forever.
void expect_sticky(const std::vector<uint8_t> &bad, int err, const char *reason,
                   uint32_t max = 0)
{
    for (size_t cut = 0; cut <= bad.size(); cut++) {
        Dec d(max);
        Sink s;
        auto good = frame(PP_WIRE_HEARTBEAT, 0, 1, {});
        ASSERT_EQ(pp_wire_dec_feed(&d.d, good.data(), good.size(), collect, &s), 1);
        int r1 = pp_wire_dec_feed(&d.d, bad.data(), cut, collect, &s);
        int r = r1 < 0 ? r1
                       : pp_wire_dec_feed(&d.d, bad.data() + cut, bad.size() - cut, collect, &s);
        EXPECT_EQ(r, err) << "cut " << cut;
        ASSERT_NE(pp_wire_dec_error(&d.d), nullptr);
        EXPECT_STREQ(pp_wire_dec_error(&d.d), reason);
        EXPECT_EQ(pp_wire_dec_feed(&d.d, good.data(), good.size(), collect, &s), err);
        EXPECT_EQ(pp_wire_dec_feed(&d.d, good.data(), 0, collect, &s), err);
        EXPECT_EQ(s.frames.size(), 1u) << "delivered after an error";
    }
}

}  // namespace

TEST(WireErrors, BadVersion)
{
    expect_sticky(raw_hdr(PP_WIRE_VERSION + 1, PP_WIRE_JOB, 0, 0, 1), -EPROTO,
                  "bad protocol version");
    expect_sticky(raw_hdr(1, PP_WIRE_JOB, 0, 0, 1), -EPROTO, "bad protocol version"); // before MESSAGE
    expect_sticky(raw_hdr(0, PP_WIRE_JOB, 0, 0, 1), -EPROTO, "bad protocol version");
}

TEST(WireErrors, BadType)
{
    expect_sticky(raw_hdr(PP_WIRE_VERSION, 0, 0, 0, 1), -EPROTO, "unknown frame type");
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_TYPE_MAX + 1, 0, 0, 1), -EPROTO, "unknown frame type");
    expect_sticky(raw_hdr(PP_WIRE_VERSION, 255, 0, 0, 1), -EPROTO, "unknown frame type");
}

TEST(WireErrors, UnknownFlag)
{
    for (int bit = 3; bit < 16; bit++)
        expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_RESULT, (uint16_t)(1u << bit), 8, 1),
                      -EPROTO, "unknown flag bits");
    // NONE is a RESULT's alone.
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_JOB, PP_WIRE_F_NONE, 8, 1), -EPROTO,
                  "flag not allowed for this frame type");
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_MESSAGE, PP_WIRE_F_NONE, 8, 1), -EPROTO,
                  "flag not allowed for this frame type");
    // RUN is a MESSAGE's alone.
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_RESULT, PP_WIRE_F_RUN, 8, 1), -EPROTO,
                  "flag not allowed for this frame type");
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_CHUNK, PP_WIRE_F_CHUNKED, 8, 1), -EPROTO,
                  "flag not allowed for this frame type");
}

TEST(WireErrors, LengthOverMax)
{
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_JOB, 0, PP_WIRE_MAX_BODY + 1, 1), -EMSGSIZE,
                  "body longer than the negotiated maximum");
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_JOB, 0, UINT32_MAX, 1), -EMSGSIZE,
                  "body longer than the negotiated maximum");
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_CODE, 0, 65, 1), -EMSGSIZE,
                  "body longer than the negotiated maximum", 64);
}

TEST(WireErrors, LengthWrongForType)
{
    const char *why = "body length wrong for this frame type";
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_HEARTBEAT, 0, 1, 1), -EPROTO, why);
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_BYE, 0, 4, 1), -EPROTO, why);
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_CHUNK, 0, 0, 1), -EPROTO, why);
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_ERROR, 0, 3, 1), -EPROTO, why);
    expect_sticky(raw_hdr(PP_WIRE_VERSION, PP_WIRE_RESULT, PP_WIRE_F_CHUNKED, 7, 1), -EPROTO, why);
}

TEST(WireErrors, LengthExactlyMaxIsAccepted)
{
    for (uint32_t max : {64u, (uint32_t)PP_WIRE_MAX_BODY}) {
        Dec d(max);
        Sink s;
        auto f = frame(PP_WIRE_JOB, 0, 3, body_for(PP_WIRE_JOB, 0, max));
        // Split so the body goes through the decoder's own buffer too.
        ASSERT_EQ(pp_wire_dec_feed(&d.d, f.data(), 20, collect, &s), 0);
        ASSERT_EQ(pp_wire_dec_feed(&d.d, f.data() + 20, f.size() - 20, collect, &s), 1);
        ASSERT_EQ(s.frames.size(), 1u);
        EXPECT_EQ(s.frames[0].hdr.len, max);
        EXPECT_EQ(s.frames[0].body, body_for(PP_WIRE_JOB, 0, max));
    }
}

TEST(WireErrors, ErrorMidSliceStopsDelivery)
{
    auto good = frame(PP_WIRE_JOB, 0, 1, body_for(PP_WIRE_JOB, 0, 10));
    auto bad = raw_hdr(PP_WIRE_VERSION, 99, 0, 0, 2);
    std::vector<uint8_t> stream(good);
    stream.insert(stream.end(), bad.begin(), bad.end());
    stream.insert(stream.end(), good.begin(), good.end());
    Dec d;
    Sink s;
    EXPECT_EQ(pp_wire_dec_feed(&d.d, stream.data(), stream.size(), collect, &s), -EPROTO);
    EXPECT_EQ(s.frames.size(), 1u);
}

TEST(WireErrors, CallbackErrorIsSticky)
{
    std::vector<uint8_t> stream;
    for (int i = 0; i < 3; i++) {
        auto f = frame(PP_WIRE_HEARTBEAT, 0, i, {});
        stream.insert(stream.end(), f.begin(), f.end());
    }
    Dec d;
    Sink s;
    s.fail_at = 1;
    EXPECT_EQ(pp_wire_dec_feed(&d.d, stream.data(), stream.size(), collect, &s), -ECANCELED);
    EXPECT_EQ(s.frames.size(), 1u);
    s.fail_at = -1;
    EXPECT_EQ(pp_wire_dec_feed(&d.d, stream.data(), stream.size(), collect, &s), -ECANCELED);
    EXPECT_EQ(s.frames.size(), 1u);
    EXPECT_STREQ(pp_wire_dec_error(&d.d), "frame rejected by its handler");
}

TEST(WireDecoder, ArgumentsAndLimits)
{
    pp_wire_dec d;
    EXPECT_EQ(pp_wire_dec_init(&d, PP_WIRE_BODY_LIMIT + 1), -EINVAL);
    ASSERT_EQ(pp_wire_dec_init(&d, 128), 0);
    Sink s;
    EXPECT_EQ(pp_wire_dec_feed(&d, nullptr, 1, collect, &s), -EINVAL);
    EXPECT_EQ(pp_wire_dec_feed(&d, nullptr, 0, collect, &s), 0);
    EXPECT_EQ(pp_wire_dec_error(&d), nullptr);  // -EINVAL is not sticky
    EXPECT_EQ(pp_wire_dec_set_max(&d, 129), -EINVAL);
    EXPECT_EQ(pp_wire_dec_set_max(&d, 0), -EINVAL);
    EXPECT_EQ(pp_wire_dec_set_max(&d, 16), 0);
    auto f = frame(PP_WIRE_JOB, 0, 1, body_for(PP_WIRE_JOB, 0, 17));
    EXPECT_EQ(pp_wire_dec_feed(&d, f.data(), 3, collect, &s), 0);
    EXPECT_EQ(pp_wire_dec_set_max(&d, 64), -EINVAL);  // mid-frame
    EXPECT_EQ(pp_wire_dec_feed(&d, f.data() + 3, f.size() - 3, collect, &s), -EMSGSIZE);
    pp_wire_dec_exit(&d);
    pp_wire_dec_exit(&d);  // twice is harmless
}

TEST(WireChunks, Counting)
{
    uint64_t n = 99;
    EXPECT_EQ(pp_wire_chunks(10, 0, &n), -EINVAL);
    EXPECT_EQ(n, 99u);
    ASSERT_EQ(pp_wire_chunks(0, PP_WIRE_MAX_BODY, &n), 0);
    EXPECT_EQ(n, 0u);
    ASSERT_EQ(pp_wire_chunks(1, PP_WIRE_MAX_BODY, &n), 0);
    EXPECT_EQ(n, 1u);
    ASSERT_EQ(pp_wire_chunks(PP_WIRE_MAX_BODY, PP_WIRE_MAX_BODY, &n), 0);
    EXPECT_EQ(n, 1u);
    ASSERT_EQ(pp_wire_chunks(PP_WIRE_MAX_BODY + 1ull, PP_WIRE_MAX_BODY, &n), 0);
    EXPECT_EQ(n, 2u);
    ASSERT_EQ(pp_wire_chunks(5ull * PP_WIRE_MAX_BODY, PP_WIRE_MAX_BODY, &n), 0);
    EXPECT_EQ(n, 5u);
    ASSERT_EQ(pp_wire_chunks(1ull << 30, PP_WIRE_MAX_BODY, &n), 0);  // PP_MAX_PAYLOAD
    EXPECT_EQ(n, 1024u);
    // Near UINT64_MAX, total + max - 1 would wrap to a tiny count.
    ASSERT_EQ(pp_wire_chunks(UINT64_MAX, PP_WIRE_MAX_BODY, &n), 0);
    EXPECT_EQ(n, (UINT64_MAX >> 20) + 1);
    ASSERT_EQ(pp_wire_chunks(UINT64_MAX - 1, 1, &n), 0);
    EXPECT_EQ(n, UINT64_MAX - 1);
    ASSERT_EQ(pp_wire_chunks(UINT64_MAX, UINT32_MAX, &n), 0);
    EXPECT_EQ(n, UINT64_MAX / UINT32_MAX);  // 2^32+1 exactly divides 2^64-1
    ASSERT_EQ(pp_wire_chunks(UINT64_MAX, 2, &n), 0);
    EXPECT_EQ(n, (UINT64_MAX >> 1) + 1);
}

TEST(WireChunks, ChunkedPayloadThroughDecoder)
{
    // A 1000-byte payload with max_body 64: JOB(total) + 16 CHUNKs.
    const uint32_t max = 64;
    std::vector<uint8_t> payload(1000);
    for (size_t i = 0; i < payload.size(); i++)
        payload[i] = (uint8_t)(i ^ (i >> 3));
    std::vector<uint8_t> head(PP_WIRE_TOTAL_SIZE);
    pp_wire_put_u64(head.data(), payload.size());
    std::vector<uint8_t> stream = frame(PP_WIRE_JOB, PP_WIRE_F_CHUNKED, 42, head);
    uint64_t n;
    ASSERT_EQ(pp_wire_chunks(payload.size(), max, &n), 0);
    ASSERT_EQ(n, 16u);
    for (uint64_t i = 0; i < n; i++) {
        size_t off = i * max, len = std::min<size_t>(max, payload.size() - off);
        auto f = frame(PP_WIRE_CHUNK, 0, 42,
                       std::vector<uint8_t>(payload.begin() + off, payload.begin() + off + len));
        stream.insert(stream.end(), f.begin(), f.end());
    }
    Dec d(max);
    Sink s;
    ASSERT_EQ(pp_wire_dec_feed(&d.d, stream.data(), stream.size(), collect, &s), 17);
    EXPECT_EQ(pp_wire_get_u64(s.frames[0].body.data()), payload.size());
    std::vector<uint8_t> got;
    for (size_t i = 1; i < s.frames.size(); i++) {
        EXPECT_EQ(s.frames[i].hdr.reqid, 42u);
        got.insert(got.end(), s.frames[i].body.begin(), s.frames[i].body.end());
    }
    EXPECT_EQ(got, payload);
}

TEST(WireRandom, TenThousandFramesRandomSlices)
{
    const uint32_t max = 4096;
    std::mt19937_64 rng(0x5eed1234);
    std::vector<Got> want;
    std::vector<uint8_t> stream;
    for (int i = 0; i < 10000; i++) {
        pp_wire_type t = all_types[rng() % 10];
        uint16_t flags = chunkable(t) && rng() % 4 == 0 ? PP_WIRE_F_CHUNKED : 0;
        size_t len = rng() % 8 == 0 ? max : rng() % 300;
        auto b = body_for(t, flags, len);
        for (auto &x : b)
            x = (uint8_t)rng();
        uint64_t reqid = rng();
        auto f = frame(t, flags, reqid, b);
        stream.insert(stream.end(), f.begin(), f.end());
        want.push_back({{(uint8_t)t, flags, (uint32_t)b.size(), reqid}, b});
    }
    Dec d(max);
    Sink s;
    size_t pos = 0;
    int total = 0;
    while (pos < stream.size()) {
        size_t n = rng() % 3 == 0 ? rng() % 20 : rng() % 9000;
        n = std::min(n, stream.size() - pos);
        int r = pp_wire_dec_feed(&d.d, stream.data() + pos, n, collect, &s);
        ASSERT_GE(r, 0) << pp_wire_dec_error(&d.d);
        total += r;
        pos += n;
    }
    EXPECT_EQ(total, 10000);
    ASSERT_EQ(s.frames.size(), want.size());
    for (size_t i = 0; i < want.size(); i++) {
        ASSERT_EQ(s.frames[i].hdr.type, want[i].hdr.type) << i;
        ASSERT_EQ(s.frames[i].hdr.flags, want[i].hdr.flags) << i;
        ASSERT_EQ(s.frames[i].hdr.len, want[i].hdr.len) << i;
        ASSERT_EQ(s.frames[i].hdr.reqid, want[i].hdr.reqid) << i;
        ASSERT_EQ(s.frames[i].body, want[i].body) << i;
    }
}
