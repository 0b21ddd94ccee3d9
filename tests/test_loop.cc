// Description: the event loop (net/loop.c) on real loopback sockets, every case
// run on both backends (io_uring and epoll, forced with PP_NET_EPOLL): echo in
// one loop and across threads, 1M pipelined writes, a 64 MiB transfer, short
// reads, 200 connections, EOF / RST / refused / timed-out connects, closes from
// inside callbacks, wake, tick, abandon in a forked child, free with open
// connections; no fd may leak.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "loop.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kOpen = 1;  // close_err / connect_err before the callback ran

long ms_since(Clock::time_point t0)
{
    return (long)std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0)
        .count();
}

// PP_NET_EPOLL is read by pp_loop_new; the mutex keeps threads from racing on it.
std::mutex env_mu;

pp_loop *make_loop(const std::string &backend)
{
    std::lock_guard<std::mutex> g(env_mu);
    if (backend == "epoll")
        setenv("PP_NET_EPOLL", "1", 1);
    else
        unsetenv("PP_NET_EPOLL");
    pp_loop *l = nullptr;
    int r = pp_loop_new(&l);
    unsetenv("PP_NET_EPOLL");
    EXPECT_EQ(r, 0);
    return r == 0 ? l : nullptr;
}

int count_fds()
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (struct dirent *e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;  // the DIR's own fd
}

// One connection's test state; the callbacks below record into it.
struct Peer {
    pp_conn *c = nullptr;
    std::string rx;
    bool echo = false;
    int datas = 0;
    size_t max_slice = 0;
    int closes = 0;
    int close_err = kOpen;
    int connects = 0;
    int connect_err = kOpen;
    int drains = 0;
    std::function<int(Peer &, const uint8_t *, size_t)> data_fn;
    std::function<void(Peer &)> drain_fn;
    std::function<void(Peer &, int)> close_fn;
};

int peer_data(void *ctx, const uint8_t *d, size_t n)
{
    Peer &p = *static_cast<Peer *>(ctx);
    EXPECT_GT(n, 0u);
    EXPECT_EQ(p.closes, 0) << "on_data after on_close";
    p.datas++;
    if (n > p.max_slice)
        p.max_slice = n;
    if (p.data_fn)
        return p.data_fn(p, d, n);
    p.rx.append(reinterpret_cast<const char *>(d), n);
    if (p.echo) {
        EXPECT_EQ(pp_conn_write(p.c, d, n), 0);
    }
    return 0;
}

void peer_connect(void *ctx, int err)
{
    Peer &p = *static_cast<Peer *>(ctx);
    p.connects++;
    p.connect_err = err;
}

void peer_drain(void *ctx)
{
    Peer &p = *static_cast<Peer *>(ctx);
    p.drains++;
    if (p.drain_fn)
        p.drain_fn(p);
}

void peer_close(void *ctx, int err)
{
    Peer &p = *static_cast<Peer *>(ctx);
    p.closes++;
    p.close_err = err;
    if (p.close_fn)
        p.close_fn(p, err);
    p.c = nullptr;
}

const pp_conn_ops peer_ops = { peer_data, peer_connect, peer_drain, peer_close };

// A listener whose accepted connections become Peers (echoing by default).
struct Server {
    pp_loop *loop = nullptr;
    pp_listener *ls = nullptr;
    uint16_t port = 0;
    bool echo = true;
    int accepts = 0;
    std::deque<Peer> peers;
    std::function<void(Peer &)> setup;
};

void server_accept(void *ctx, int fd, const sockaddr_storage *peer)
{
    Server &s = *static_cast<Server *>(ctx);
    s.accepts++;
    EXPECT_TRUE(peer->ss_family == AF_INET || peer->ss_family == AF_INET6);
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    s.peers.emplace_back();
    Peer &p = s.peers.back();
    p.echo = s.echo;
    if (s.setup)
        s.setup(p);
    int r = pp_loop_add(s.loop, fd, &peer_ops, &p, &p.c);
    EXPECT_EQ(r, 0);
    if (r)
        close(fd);
}

int server_listen(Server &s, pp_loop *l, const char *ip = nullptr)
{
    s.loop = l;
    int r = pp_loop_listen(l, ip, 0, 0, server_accept, &s, &s.ls);
    if (r == 0)
        s.port = pp_listener_port(s.ls);
    return r;
}

template <class F>
bool run_until(pp_loop *l, F done, int timeout_ms = 10000)
{
    auto t0 = Clock::now();
    while (!done()) {
        if (ms_since(t0) > timeout_ms)
            return false;
        int r = pp_loop_run(l, 10);
        EXPECT_GE(r, 0);
        if (r < 0)
            return false;
    }
    return true;
}

sockaddr_in lo_addr(uint16_t port)
{
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = lo_addr(port);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) < 0) {
        ADD_FAILURE() << "raw connect: " << strerror(errno);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

// A port nobody listens on (bound, read, released).
uint16_t dead_port()
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = lo_addr(0);
    socklen_t len = sizeof(a);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
}

uint8_t pattern(uint64_t i)
{
    return (uint8_t)((uint32_t)(i * 0x9E3779B1u) >> 24);
}

// Parameter: the backend name.  Peers and servers live in the fixture so
// that pp_loop_free in TearDown (after a failed ASSERT) never calls into a
// destroyed object.
class Loop : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override
    {
        fds_ = count_fds();
        loop_ = make_loop(GetParam());
        ASSERT_NE(loop_, nullptr);
        if (GetParam() == "io_uring" && strcmp(pp_loop_backend(loop_), "io_uring") != 0)
            GTEST_SKIP() << "io_uring is not available here (the loop fell back to "
                         << pp_loop_backend(loop_) << ")";
        ASSERT_STREQ(pp_loop_backend(loop_), GetParam().c_str());
    }

    void TearDown() override
    {
        free_loop();
        EXPECT_EQ(count_fds(), fds_) << "fd leak";
    }

    void free_loop()
    {
        pp_loop_free(loop_);
        loop_ = nullptr;
    }

    Peer &peer()
    {
        peers_.emplace_back();
        return peers_.back();
    }

    Server &server(const char *ip = nullptr)
    {
        servers_.emplace_back();
        EXPECT_EQ(server_listen(servers_.back(), loop_, ip), 0);
        return servers_.back();
    }

    // A client Peer connected (maybe still connecting) to port.
    Peer &client(uint16_t port, int timeout_ms = 5000)
    {
        Peer &p = peer();
        EXPECT_EQ(pp_loop_connect(loop_, "127.0.0.1", port, timeout_ms, &peer_ops, &p, &p.c), 0);
        return p;
    }

    template <class F>
    bool run(F done, int timeout_ms = 10000)
    {
        return run_until(loop_, done, timeout_ms);
    }

    pp_loop *loop_ = nullptr;
    int fds_ = 0;
    std::deque<Peer> peers_;
    std::deque<Server> servers_;
};

TEST_P(Loop, Backend)
{
    EXPECT_EQ(pp_loop_run(nullptr, 0), -EINVAL);
    EXPECT_EQ(pp_loop_new(nullptr), -EINVAL);
    // PP_NET_EPOLL=0 does not force epoll.
    std::lock_guard<std::mutex> g(env_mu);
    setenv("PP_NET_EPOLL", "0", 1);
    pp_loop *l = nullptr;
    ASSERT_EQ(pp_loop_new(&l), 0);
    unsetenv("PP_NET_EPOLL");
    EXPECT_STRNE(pp_loop_backend(l), "");
    pp_loop_free(l);
}

TEST_P(Loop, RunTimesOutWithNothingToDo)
{
    // A signal may end a wait early (that is a 0 too), so allow a retry.
    auto t0 = Clock::now();
    for (int i = 0; i < 5 && ms_since(t0) < 25; i++)
        EXPECT_EQ(pp_loop_run(loop_, 30), 0);
    EXPECT_GE(ms_since(t0), 25);
    EXPECT_EQ(pp_loop_run(loop_, 0), 0);
    uint64_t a = pp_loop_now_ms(loop_);
    pp_loop_run(loop_, 20);
    EXPECT_GE(pp_loop_now_ms(loop_), a + 15);
}

TEST_P(Loop, EchoOneLoop)
{
    Server &s = server();
    Peer &cl = client(s.port);
    ASSERT_EQ(pp_conn_write(cl.c, "hello", 5), 0);  // queued before connected
    EXPECT_EQ(pp_conn_queued(cl.c), 5u);
    ASSERT_TRUE(run([&] { return cl.rx.size() >= 5; }));
    EXPECT_EQ(cl.connects, 1);
    EXPECT_EQ(cl.connect_err, 0);
    EXPECT_EQ(cl.rx, "hello");
    EXPECT_GE(cl.drains, 1);
    EXPECT_EQ(pp_conn_queued(cl.c), 0u);
    EXPECT_GE(pp_conn_fd(cl.c), 0);

    // Ping-pong a few times, then a graceful close on both sides.
    for (int i = 0; i < 100; i++) {
        std::string m = "ping " + std::to_string(i);
        cl.rx.clear();
        ASSERT_EQ(pp_conn_write(cl.c, m.data(), m.size()), 0);
        ASSERT_TRUE(run([&] { return cl.rx.size() >= m.size(); }));
        ASSERT_EQ(cl.rx, m);
    }
    pp_conn_close(cl.c, 0);
    EXPECT_EQ(pp_conn_write(cl.c, "x", 1), -EPIPE);
    EXPECT_EQ(cl.closes, 0) << "on_close must not run inside pp_conn_close";
    ASSERT_TRUE(run([&] { return cl.closes && s.peers.size() == 1 && s.peers[0].closes; }));
    EXPECT_EQ(cl.close_err, 0);
    EXPECT_EQ(s.peers[0].close_err, 0);
    EXPECT_EQ(s.accepts, 1);
}

TEST_P(Loop, EchoAcrossThreads)
{
    std::atomic<pp_loop *> sl{nullptr};
    std::atomic<int> port{0};
    std::atomic<bool> waked{false};  // pp_loop_wake has returned: the loop may go
    std::string backend = GetParam();
    std::thread th([&] {
        // The server's loop is created on the thread that runs it (SINGLE_ISSUER).
        pp_loop *l = make_loop(backend);
        Server s;
        ASSERT_EQ(server_listen(s, l), 0);
        bool stop = false;
        pp_loop_set_wake(l, [](void *ctx) { *static_cast<bool *>(ctx) = true; }, &stop);
        sl = l;
        port = s.port;
        while (!stop)
            EXPECT_GE(pp_loop_run(l, 1000), 0);
        // The loop must outlive every pp_loop_wake call on it.
        while (!waked.load())
            std::this_thread::yield();
        pp_loop_free(l);  // before s goes: its peers get on_close(-ECANCELED)
    });
    while (!port.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));

    Peer &cl = client((uint16_t)port.load());
    // Round trips first (one message in flight), then a pipelined burst.
    for (int i = 0; i < 200; i++) {
        uint8_t m[64];
        memset(m, i, sizeof(m));
        cl.rx.clear();
        ASSERT_EQ(pp_conn_write(cl.c, m, sizeof(m)), 0);
        ASSERT_TRUE(run([&] { return cl.rx.size() >= sizeof(m); }));
        ASSERT_EQ(cl.rx, std::string(reinterpret_cast<char *>(m), sizeof(m)));
    }
    std::mt19937 rng(7);
    std::string sent;
    cl.rx.clear();
    for (int i = 0; i < 2000; i++) {
        std::string m(1 + rng() % 4096, '\0');
        for (auto &ch : m)
            ch = (char)rng();
        sent += m;
        ASSERT_EQ(pp_conn_write(cl.c, m.data(), m.size()), 0);
        if (i % 100 == 0)
            pp_loop_run(loop_, 0);
    }
    ASSERT_TRUE(run([&] { return cl.rx.size() >= sent.size(); }));
    EXPECT_TRUE(cl.rx == sent);
    pp_loop_wake(sl.load());
    waked = true;
    th.join();
    // The server's pp_loop_free closed its end.
    ASSERT_TRUE(run([&] { return cl.closes == 1; }));
}

TEST_P(Loop, MillionSmallWritesInOrder)
{
    const uint64_t N = 1000000;
    const size_t REC = 16;  // u64 seq, u64 seq * K
    const uint64_t K = 0x9E3779B97F4A7C15ull;
    uint64_t got = 0, sum = 0, want_sum = 0;
    std::string part;
    Server &s = server();
    s.echo = false;
    s.setup = [&](Peer &p) {
        p.data_fn = [&](Peer &, const uint8_t *d, size_t n) {
            part.append(reinterpret_cast<const char *>(d), n);
            size_t i = 0;
            for (; i + REC <= part.size(); i += REC) {
                uint64_t seq, chk;
                memcpy(&seq, part.data() + i, 8);
                memcpy(&chk, part.data() + i + 8, 8);
                if (seq != got || chk != seq * K) {
                    ADD_FAILURE() << "record " << got << " arrived as " << seq;
                    return -EPROTO;
                }
                sum += seq ^ chk;
                got++;
            }
            part.erase(0, i);
            return 0;
        };
    };
    Peer &cl = client(s.port);
    ASSERT_TRUE(run([&] { return cl.connects == 1; }));
    ASSERT_EQ(cl.connect_err, 0);
    uint64_t sent = 0;
    auto t0 = Clock::now();
    while (got < N) {
        // Keep at most 256 KiB queued: backpressure through pp_conn_queued.
        while (sent < N && pp_conn_queued(cl.c) < (256u << 10)) {
            uint64_t rec[2] = { sent, sent * K };
            want_sum += rec[0] ^ rec[1];
            if (sent % 2) {
                ASSERT_EQ(pp_conn_write(cl.c, rec, sizeof(rec)), 0);
            } else {  // half of them built in place
                uint8_t *p = pp_conn_reserve(cl.c, 64);
                ASSERT_NE(p, nullptr);
                memcpy(p, rec, sizeof(rec));
                pp_conn_commit(cl.c, sizeof(rec));
            }
            sent++;
        }
        ASSERT_GE(pp_loop_run(loop_, 100), 0);
        ASSERT_LT(ms_since(t0), 20000) << "stalled at " << got;
        ASSERT_EQ(cl.closes, 0);
    }
    EXPECT_EQ(got, N);
    EXPECT_EQ(sum, want_sum);
    EXPECT_TRUE(part.empty());
}

TEST_P(Loop, Transfer64MiBRandomSplits)
{
    const uint64_t TOTAL = 64ull << 20;
    uint64_t rx = 0;
    bool bad = false;
    Server &s = server();
    s.echo = false;
    s.setup = [&](Peer &p) {
        p.data_fn = [&](Peer &, const uint8_t *d, size_t n) {
            for (size_t i = 0; i < n && !bad; i++)
                if (d[i] != pattern(rx + i)) {
                    ADD_FAILURE() << "byte " << rx + i << " differs";
                    bad = true;
                }
            rx += n;
            return bad ? -EPROTO : 0;
        };
    };
    Peer &cl = client(s.port);
    std::mt19937 rng(42);
    std::vector<uint8_t> chunk(65536);
    uint64_t tx = 0;
    auto t0 = Clock::now();
    while (tx < TOTAL) {
        while (tx < TOTAL && pp_conn_queued(cl.c) < (4u << 20)) {
            size_t n = 1 + rng() % chunk.size();
            if (n > TOTAL - tx)
                n = (size_t)(TOTAL - tx);
            for (size_t i = 0; i < n; i++)
                chunk[i] = pattern(tx + i);
            ASSERT_EQ(pp_conn_write(cl.c, chunk.data(), n), 0);
            tx += n;
        }
        ASSERT_GE(pp_loop_run(loop_, 100), 0);
        ASSERT_LT(ms_since(t0), 30000);
        ASSERT_EQ(cl.closes, 0);
    }
    pp_conn_close(cl.c, 0);  // graceful: the queued tail still goes out
    ASSERT_TRUE(run([&] { return s.peers.size() == 1 && s.peers[0].closes == 1; }, 30000));
    EXPECT_EQ(rx, TOTAL);
    EXPECT_EQ(s.peers[0].close_err, 0);
    ASSERT_TRUE(run([&] { return cl.closes == 1; }));
    EXPECT_EQ(cl.close_err, 0);
}

TEST_P(Loop, ShortReads)
{
    Server &s = server();
    s.echo = false;
    std::string slow = "byte by byte, each its own segment";
    std::string big(200000, '\0');
    for (size_t i = 0; i < big.size(); i++)
        big[i] = (char)pattern(i);
    std::thread th([&] {
        int fd = raw_connect(s.port);
        if (fd < 0)
            return;
        for (char ch : slow) {
            EXPECT_EQ(send(fd, &ch, 1, 0), 1);
            std::this_thread::sleep_for(std::chrono::microseconds(300));
        }
        EXPECT_EQ(send(fd, big.data(), big.size(), 0), (ssize_t)big.size());
        shutdown(fd, SHUT_WR);
        char b;
        EXPECT_EQ(read(fd, &b, 1), 0);  // the loop closes after our EOF
        close(fd);
    });
    ASSERT_TRUE(run([&] { return s.peers.size() == 1 && s.peers[0].closes == 1; }));
    th.join();
    Peer &p = s.peers[0];
    EXPECT_TRUE(p.rx == slow + big);
    EXPECT_EQ(p.close_err, 0);
    EXPECT_GT(p.datas, 3);
    EXPECT_LE(p.max_slice, 64u * 1024);
}

TEST_P(Loop, TwoHundredConnections)
{
    const int N = 200;
    Server &s = server();
    std::vector<Peer *> cl;
    for (int i = 0; i < N; i++) {
        Peer &p = client(s.port);
        std::string m = "conn " + std::to_string(i);
        ASSERT_EQ(pp_conn_write(p.c, m.data(), m.size()), 0);
        cl.push_back(&p);
    }
    ASSERT_TRUE(run([&] {
        for (int i = 0; i < N; i++)
            if (cl[i]->rx != "conn " + std::to_string(i))
                return false;
        return true;
    }));
    EXPECT_EQ(s.accepts, N);
    for (Peer *p : cl)
        pp_conn_close(p->c, 0);
    ASSERT_TRUE(run([&] {
        int done = 0;
        for (auto &p : s.peers)
            done += p.closes;
        for (Peer *p : cl)
            done += p->closes;
        return done == 2 * N;
    }));
    for (auto &p : s.peers)
        EXPECT_EQ(p.close_err, 0);
    for (Peer *p : cl)
        EXPECT_EQ(p->close_err, 0);
}

TEST_P(Loop, PeerEofGivesZero)
{
    Server &s = server();
    s.echo = false;
    int fd = raw_connect(s.port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, "abc", 3, 0), 3);
    ASSERT_TRUE(run([&] { return s.peers.size() == 1 && s.peers[0].rx == "abc"; }));
    close(fd);
    ASSERT_TRUE(run([&] { return s.peers[0].closes == 1; }));
    EXPECT_EQ(s.peers[0].close_err, 0);

    // A half-close with a reply still to send: the reply goes out, then EOF.
    Server &e = server();
    fd = raw_connect(e.port);
    ASSERT_GE(fd, 0);
    std::string req(100000, 'q');
    std::thread th([&] {
        EXPECT_EQ(send(fd, req.data(), req.size(), 0), (ssize_t)req.size());
        shutdown(fd, SHUT_WR);
    });
    std::string back;
    ASSERT_TRUE(run([&] {
        char b[65536];
        ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (n > 0)
            back.append(b, (size_t)n);
        return n == 0;
    }));
    th.join();
    close(fd);
    EXPECT_TRUE(back == req);
    ASSERT_TRUE(run([&] { return e.peers.size() == 1 && e.peers[0].closes == 1; }));
    EXPECT_EQ(e.peers[0].close_err, 0);

    // The other way round: a raw server that accepts and closes.
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = lo_addr(0);
    socklen_t len = sizeof(a);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    getsockname(lfd, reinterpret_cast<sockaddr *>(&a), &len);
    Peer &cl = client(ntohs(a.sin_port));
    ASSERT_TRUE(run([&] { return cl.connects == 1; }));
    EXPECT_EQ(cl.connect_err, 0);
    int afd = accept(lfd, nullptr, nullptr);
    ASSERT_GE(afd, 0);
    ASSERT_EQ(send(afd, "bye", 3, 0), 3);
    close(afd);
    close(lfd);
    ASSERT_TRUE(run([&] { return cl.closes == 1; }));
    EXPECT_EQ(cl.rx, "bye");
    EXPECT_EQ(cl.close_err, 0);
}

TEST_P(Loop, ResetGivesNegative)
{
    Server &s = server();
    int fd = raw_connect(s.port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, "x", 1, 0), 1);
    ASSERT_TRUE(run([&] { return s.peers.size() == 1 && s.peers[0].rx == "x"; }));
    linger lg = { 1, 0 };  // close() sends RST
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fd);
    ASSERT_TRUE(run([&] { return s.peers[0].closes == 1; }));
    EXPECT_EQ(s.peers[0].close_err, -ECONNRESET);
}

TEST_P(Loop, CloseFromInsideOnData)
{
    Server &s = server();
    // 1: immediate close of itself; the rest of that slice and later data vanish.
    Peer &a = client(s.port);
    a.data_fn = [](Peer &p, const uint8_t *, size_t) {
        pp_conn_close(p.c, -ECANCELED);
        EXPECT_EQ(pp_conn_write(p.c, "x", 1), -EPIPE);
        return 0;
    };
    // 2: on_data's own error closes with it.
    Peer &b = client(s.port);
    b.data_fn = [](Peer &, const uint8_t *, size_t) { return -EPROTO; };
    // 3: reply, then a graceful close from inside on_data: the reply arrives.
    Server &s2 = server();
    s2.setup = [](Peer &p) {
        p.data_fn = [](Peer &q, const uint8_t *, size_t) {
            EXPECT_EQ(pp_conn_write(q.c, "reply", 5), 0);
            pp_conn_close(q.c, 0);
            return 0;
        };
    };
    Peer &c = client(s2.port);
    ASSERT_EQ(pp_conn_write(a.c, "one", 3), 0);
    ASSERT_EQ(pp_conn_write(b.c, "two", 3), 0);
    ASSERT_EQ(pp_conn_write(c.c, "ask", 3), 0);
    ASSERT_TRUE(run([&] { return a.closes && b.closes && c.closes; }));
    EXPECT_EQ(a.datas, 1);
    EXPECT_EQ(a.close_err, -ECANCELED);
    EXPECT_EQ(b.datas, 1);
    EXPECT_EQ(b.close_err, -EPROTO);
    EXPECT_EQ(c.rx, "reply");
    EXPECT_EQ(c.close_err, 0);
    ASSERT_TRUE(run([&] { return s2.peers.size() == 1 && s2.peers[0].closes; }));
    EXPECT_EQ(s2.peers[0].close_err, 0);
}

TEST_P(Loop, CloseAnotherInsideCallback)
{
    Server &s = server();
    s.echo = false;
    Peer &a = client(s.port);
    Peer &b = client(s.port);
    Peer &c = client(s.port);
    bool b_closed = false;
    a.data_fn = [&](Peer &, const uint8_t *, size_t) {
        if (b.c) {
            pp_conn_close(b.c, -EINTR);
            b_closed = true;
        }
        return 0;
    };
    b.data_fn = [&](Peer &, const uint8_t *, size_t) {
        EXPECT_FALSE(b_closed) << "on_data after the conn was closed";
        return 0;
    };
    // Closing C from inside B's on_close.
    b.close_fn = [&](Peer &, int) {
        if (c.c)
            pp_conn_close(c.c, -ENOTCONN);
    };
    ASSERT_TRUE(run([&] { return s.peers.size() == 3 && a.connects && b.connects && c.connects; }));
    // The server writes to all three in one turn, so their data lands together.
    for (int round = 0; round < 3; round++)
        for (auto &p : s.peers)
            if (p.c) {
                ASSERT_EQ(pp_conn_write(p.c, "data", 4), 0);
            }
    ASSERT_TRUE(run([&] { return b.closes && c.closes; }));
    EXPECT_EQ(b.close_err, -EINTR);
    EXPECT_EQ(c.close_err, -ENOTCONN);
    EXPECT_EQ(a.closes, 0);
}

TEST_P(Loop, ConnectRefused)
{
    Peer &p = client(dead_port());
    ASSERT_TRUE(run([&] { return p.closes == 1; }));
    EXPECT_EQ(p.connects, 1);
    EXPECT_EQ(p.connect_err, -ECONNREFUSED);
    EXPECT_EQ(p.close_err, -ECONNREFUSED);

    Peer &q = peer();
    EXPECT_EQ(pp_loop_connect(loop_, "no.such.host.invalid", 1, 100, &peer_ops, &q, &q.c),
              -EHOSTUNREACH);
    EXPECT_EQ(q.connects + q.closes, 0) << "a failed call must not call back";
}

TEST_P(Loop, ConnectTimeout)
{
    // A listener with backlog 0 that never accepts: once its queue is full
    // the kernel drops further SYNs, so a connect can only time out.
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = lo_addr(0);
    socklen_t len = sizeof(a);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    ASSERT_EQ(listen(lfd, 0), 0);
    getsockname(lfd, reinterpret_cast<sockaddr *>(&a), &len);
    std::vector<int> fill;
    for (int i = 0; i < 4; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a));
        fill.push_back(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Peer &p = client(ntohs(a.sin_port), 300);
    auto t0 = Clock::now();
    bool done = run([&] { return p.connects == 1; }, 5000);
    long ms = ms_since(t0);
    for (int fd : fill)
        close(fd);
    close(lfd);
    ASSERT_TRUE(done);
    if (p.connect_err == 0)
        GTEST_SKIP() << "the kernel completed a connect to a full backlog-0 listener";
    EXPECT_EQ(p.connect_err, -ETIMEDOUT);
    EXPECT_GE(ms, 250);
    EXPECT_LT(ms, 3000);
    ASSERT_TRUE(run([&] { return p.closes == 1; }));
    EXPECT_EQ(p.close_err, -ETIMEDOUT);
}

TEST_P(Loop, WakeFromAnotherThread)
{
    std::atomic<int> woke{0};
    pp_loop_set_wake(loop_, [](void *ctx) { ++*static_cast<std::atomic<int> *>(ctx); }, &woke);
    auto t0 = Clock::now();
    std::thread th([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        pp_loop_wake(loop_);
    });
    int r = 0;
    while (woke.load() == 0 && ms_since(t0) < 5000)
        r += pp_loop_run(loop_, -1);
    long ms = ms_since(t0);
    th.join();
    EXPECT_EQ(woke.load(), 1);
    EXPECT_GE(r, 1);
    EXPECT_GE(ms, 40);
    EXPECT_LT(ms, 2000);

    // Wakes before the loop notices coalesce into one on_wake.
    pp_loop_wake(loop_);
    pp_loop_wake(loop_);
    pp_loop_wake(loop_);
    ASSERT_TRUE(run([&] { return woke.load() == 2; }));
    EXPECT_EQ(pp_loop_run(loop_, 30), 0);
    EXPECT_EQ(woke.load(), 2);

    // Many threads hammering: every wake is followed by an on_wake.
    std::atomic<bool> go{true};
    std::vector<std::thread> ths;
    for (int i = 0; i < 3; i++)
        ths.emplace_back([&] {
            while (go.load())
                pp_loop_wake(loop_);
        });
    run([&] { return woke.load() > 50; }, 5000);
    go = false;
    for (auto &t : ths)
        t.join();
    int before = woke.load();
    EXPECT_GT(before, 50);
    pp_loop_run(loop_, 0);
    EXPECT_LE(woke.load(), before + 1);
}

TEST_P(Loop, TickFiresAtItsPeriod)
{
    int ticks = 0;
    EXPECT_EQ(pp_loop_set_tick(loop_, 10, nullptr, nullptr), -EINVAL);
    ASSERT_EQ(pp_loop_set_tick(loop_, 20, [](void *ctx) { ++*static_cast<int *>(ctx); }, &ticks), 0);
    auto t0 = Clock::now();
    while (ms_since(t0) < 300)
        ASSERT_GE(pp_loop_run(loop_, -1), 0);  // only the tick ends these waits
    EXPECT_GE(ticks, 5);  // 15 on an idle machine; a late loop skips ticks
    EXPECT_LE(ticks, 16);
    ASSERT_EQ(pp_loop_set_tick(loop_, 0, nullptr, nullptr), 0);
    ticks = 0;
    EXPECT_EQ(pp_loop_run(loop_, 60), 0);
    EXPECT_EQ(ticks, 0);
}

TEST_P(Loop, ListenerCloseStopsAccepting)
{
    Server &s = server();
    Peer &p = client(s.port);
    ASSERT_TRUE(run([&] { return p.connects == 1 && s.accepts == 1; }));
    pp_listener_close(s.ls);
    s.ls = nullptr;
    for (int i = 0; i < 3; i++)
        pp_loop_run(loop_, 10);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = lo_addr(s.port);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), -1);
    EXPECT_EQ(errno, ECONNREFUSED);
    close(fd);
    // The connection accepted earlier is unaffected.
    ASSERT_EQ(pp_conn_write(p.c, "still", 5), 0);
    ASSERT_TRUE(run([&] { return p.rx == "still"; }));
}

TEST_P(Loop, NamesAndIPv6)
{
    Server &d = servers_.emplace_back();  // dual-stack "::"; skip where IPv6 is off
    if (server_listen(d, loop_, "::") != 0)
        GTEST_SKIP() << "no IPv6 here";
    Peer &p = peer();
    ASSERT_EQ(pp_loop_connect(loop_, "localhost", d.port, 2000, &peer_ops, &p, &p.c), 0);
    Peer &q = peer();
    ASSERT_EQ(pp_loop_connect(loop_, "127.0.0.1", d.port, 2000, &peer_ops, &q, &q.c), 0);
    ASSERT_EQ(pp_conn_write(p.c, "name", 4), 0);
    ASSERT_EQ(pp_conn_write(q.c, "v4", 2), 0);
    ASSERT_TRUE(run([&] { return p.rx == "name" && q.rx == "v4"; }));
    pp_listener *bad = nullptr;
    EXPECT_EQ(pp_loop_listen(loop_, "not-an-ip", 0, 0, server_accept, &d, &bad), -EINVAL);
}

TEST_P(Loop, QueueLimitsAndDrain)
{
    Server &s = server();
    Peer &p = client(s.port);
    errno = 0;
    EXPECT_EQ(pp_conn_reserve(p.c, (size_t)PP_LOOP_OUT_MAX + 1), nullptr);
    EXPECT_EQ(errno, ENOBUFS);
    EXPECT_EQ(pp_conn_write(p.c, "a", (size_t)PP_LOOP_OUT_MAX + 1), -ENOBUFS);
    EXPECT_NE(pp_conn_reserve(p.c, 0), nullptr);
    pp_conn_commit(p.c, 0);
    uint8_t *b = pp_conn_reserve(p.c, 8);
    ASSERT_NE(b, nullptr);
    memcpy(b, "abcdefgh", 8);
    pp_conn_commit(p.c, 9);  // more than reserved: ignored
    EXPECT_EQ(pp_conn_queued(p.c), 0u);
    b = pp_conn_reserve(p.c, 8);
    memcpy(b, "abcdefgh", 8);
    pp_conn_commit(p.c, 4);
    EXPECT_EQ(pp_conn_queued(p.c), 4u);
    ASSERT_TRUE(run([&] { return p.rx == "abcd"; }));
    EXPECT_GE(p.drains, 1);
    // on_drain may write more: a self-feeding stream of 50 messages.
    int n = 0;
    p.rx.clear();
    p.drain_fn = [&](Peer &q) {
        if (n < 50 && q.c) {
            EXPECT_EQ(pp_conn_write(q.c, "m", 1), 0);
            n++;
        }
    };
    ASSERT_EQ(pp_conn_write(p.c, "m", 1), 0);
    ASSERT_TRUE(run([&] { return p.rx.size() == 51; }));
}

TEST_P(Loop, CloseWhileConnectingAndEscalation)
{
    Server &s = server();
    s.echo = false;
    // Closed before the connect finished: on_close only, never on_connect.
    Peer &p = client(s.port);
    pp_conn_close(p.c, 0);
    ASSERT_TRUE(run([&] { return p.closes == 1; }));
    EXPECT_EQ(p.connects, 0);
    EXPECT_EQ(p.close_err, -ECANCELED);

    // A graceful close that cannot drain (the peer never reads) is made
    // immediate by a second call.
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = lo_addr(0);
    socklen_t len = sizeof(a);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    getsockname(lfd, reinterpret_cast<sockaddr *>(&a), &len);
    Peer &q = client(ntohs(a.sin_port));
    ASSERT_TRUE(run([&] { return q.connects == 1; }));
    int afd = accept(lfd, nullptr, nullptr);
    ASSERT_GE(afd, 0);
    std::vector<uint8_t> big(16u << 20, 7);
    ASSERT_EQ(pp_conn_write(q.c, big.data(), big.size()), 0);
    pp_conn_close(q.c, 0);
    EXPECT_EQ(pp_conn_write(q.c, "x", 1), -EPIPE);
    for (int i = 0; i < 5; i++)
        pp_loop_run(loop_, 10);
    EXPECT_EQ(q.closes, 0);
    EXPECT_GT(pp_conn_queued(q.c), 0u);
    pp_conn_close(q.c, -EIO);
    ASSERT_TRUE(run([&] { return q.closes == 1; }));
    EXPECT_EQ(q.close_err, -EIO);
    close(afd);
    close(lfd);
}

TEST_P(Loop, GracefulCloseLingersThenGivesUp)
{
    // The peer reads our reply and EOF but never closes, and keeps sending:
    // the late bytes must not turn our close into an RST that eats the reply,
    // and the socket is closed PP_LOOP_LINGER_MS later anyway.
    Server &s = server();
    s.setup = [](Peer &p) {
        p.data_fn = [](Peer &q, const uint8_t *, size_t) {
            std::vector<uint8_t> reply(1u << 20, 'r');
            EXPECT_EQ(pp_conn_write(q.c, reply.data(), reply.size()), 0);
            pp_conn_close(q.c, 0);
            return 0;
        };
    };
    int fd = raw_connect(s.port);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(send(fd, "go", 2, 0), 2);
    ASSERT_TRUE(run([&] { return s.accepts == 1; }));
    int open_fds = count_fds();
    size_t got = 0;
    bool eof = false;
    auto t0 = Clock::now();
    ASSERT_TRUE(run([&] {
        char b[65536];
        ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        if (n == 0)
            eof = true;
        send(fd, "late", 4, MSG_DONTWAIT | MSG_NOSIGNAL);  // unread by the server
        return eof;
    }));
    EXPECT_EQ(got, 1u << 20);
    EXPECT_EQ(s.peers[0].closes, 1);
    EXPECT_EQ(s.peers[0].close_err, 0);
    // Still lingering (one fd more than after the close)...
    EXPECT_EQ(count_fds(), open_fds);
    // ...until the deadline.
    ASSERT_TRUE(run([&] { return count_fds() == open_fds - 1; }, (int)PP_LOOP_LINGER_MS + 3000));
    EXPECT_GE(ms_since(t0), (long)PP_LOOP_LINGER_MS - 200);
    close(fd);
}

TEST_P(Loop, ListenerPausesWhenOutOfFds)
{
    Server &s = server();
    const int N = 8;
    // The clients live in a child, so their fds do not count against our limit.
    int go[2];
    ASSERT_EQ(pipe(go), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(go[1]);
        std::vector<int> fds;
        for (int i = 0; i < N; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in a = lo_addr(s.port);
            if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) < 0)
                _exit(1);
            fds.push_back(fd);
        }
        pollfd pf = { go[0], POLLIN, 0 };
        poll(&pf, 1, 20000);  // hold them until the parent is done (EOF)
        _exit(0);
    }
    ASSERT_GT(pid, 0);
    close(go[0]);
    rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    rlimit low = old;
    low.rlim_cur = (rlim_t)count_fds() + 3;  // room for 3 (count_fds' own fd included)
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    auto t0 = Clock::now();
    int turns = 0;
    while (ms_since(t0) < 300) {
        ASSERT_GE(pp_loop_run(loop_, 50), 0);
        turns++;
    }
    int accepted = s.accepts;
    setrlimit(RLIMIT_NOFILE, &old);
    EXPECT_LT(accepted, N);
    EXPECT_LT(turns, 100) << "the listener spun on EMFILE";
    // With the limit back, the paused listener resumes and takes the rest.
    ASSERT_TRUE(run([&] { return s.accepts == N; }));
    close(go[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

pp_loop *g_sig_loop;

void on_sigusr1(int)
{
    pp_loop_wake(g_sig_loop);
}

TEST_P(Loop, WakeFromSignalHandler)
{
#ifdef __SANITIZE_THREAD__
    if (GetParam() == "io_uring")
        GTEST_SKIP() << "TSan runs a signal handler only at its next interceptor, and "
                        "io_uring_enter is a raw syscall: the wake would never be sent";
#endif
    std::atomic<int> woke{0};
    pp_loop_set_wake(loop_, [](void *ctx) { ++*static_cast<std::atomic<int> *>(ctx); }, &woke);
    g_sig_loop = loop_;
    struct sigaction sa = {}, old = {};
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
    pthread_t self = pthread_self();
    std::thread th([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        pthread_kill(self, SIGUSR1);
    });
    auto t0 = Clock::now();
    while (woke.load() == 0 && ms_since(t0) < 5000)
        ASSERT_GE(pp_loop_run(loop_, -1), 0);
    th.join();
    sigaction(SIGUSR1, &old, nullptr);
    EXPECT_EQ(woke.load(), 1);
    EXPECT_LT(ms_since(t0), 2000);
}

TEST_P(Loop, FreeWithOpenConnections)
{
    Server &s = server();
    std::vector<Peer *> cl;
    for (int i = 0; i < 3; i++) {
        Peer &p = client(s.port);
        ASSERT_EQ(pp_conn_write(p.c, "hi", 2), 0);
        cl.push_back(&p);
    }
    Peer &pending = client(s.port);
    ASSERT_TRUE(run([&] { return cl[0]->rx == "hi" && cl[1]->rx == "hi" && cl[2]->rx == "hi" &&
                                 pending.connects == 1; }));
    ASSERT_EQ(pp_conn_write(pending.c, "queued, never sent", 18), 0);
    int refused = 0;
    cl[0]->close_fn = [&](Peer &, int) {
        Peer &x = peer();
        refused = pp_loop_connect(loop_, "127.0.0.1", s.port, 0, &peer_ops, &x, &x.c);
    };
    free_loop();
    for (Peer *p : cl) {
        EXPECT_EQ(p->closes, 1);
        EXPECT_EQ(p->close_err, -ECANCELED);
    }
    EXPECT_EQ(pending.close_err, -ECANCELED);
    ASSERT_EQ(s.peers.size(), 4u);
    for (auto &p : s.peers) {
        EXPECT_EQ(p.closes, 1);
        EXPECT_EQ(p.close_err, -ECANCELED);
    }
    EXPECT_EQ(refused, -ESHUTDOWN);
}

// ppserver's pattern: on_accept forks; the child abandons the parent's loop,
// makes its own and serves the connection; the parent keeps going.
struct ForkCtx {
    std::string backend;
    pp_loop *parent = nullptr;
    std::vector<pid_t> kids;
};

void child_serve(ForkCtx &f, int fd)
{
    pp_loop_abandon(f.parent);
    pp_loop *l = make_loop(f.backend);
    if (!l)
        _exit(2);
    Peer p;
    p.echo = true;
    if (pp_loop_add(l, fd, &peer_ops, &p, &p.c) != 0)
        _exit(3);
    auto t0 = Clock::now();
    while (p.closes == 0 && ms_since(t0) < 10000)
        pp_loop_run(l, 100);
    int code = (p.closes == 1 && p.close_err == 0 && p.rx == "to the child") ? 0 : 4;
    pp_loop_free(l);
    _exit(code);
}

void fork_accept(void *ctx, int fd, const sockaddr_storage *)
{
    ForkCtx &f = *static_cast<ForkCtx *>(ctx);
    pid_t pid = fork();
    if (pid == 0)
        child_serve(f, fd);  // never returns
    EXPECT_GT(pid, 0);
    close(fd);
    f.kids.push_back(pid);
}

TEST_P(Loop, AbandonInForkedChild)
{
    // An echo pair that lives in the parent across the fork.
    Server &s = server();
    Peer &a = client(s.port);
    ASSERT_EQ(pp_conn_write(a.c, "before", 6), 0);
    ASSERT_TRUE(run([&] { return a.rx == "before"; }));

    ForkCtx f;
    f.backend = GetParam();
    f.parent = loop_;
    pp_listener *fl = nullptr;
    ASSERT_EQ(pp_loop_listen(loop_, nullptr, 0, 0, fork_accept, &f, &fl), 0);
    Peer &b = client(pp_listener_port(fl));
    ASSERT_EQ(pp_conn_write(b.c, "to the child", 12), 0);
    a.rx.clear();
    ASSERT_EQ(pp_conn_write(a.c, "during", 6), 0);
    ASSERT_TRUE(run([&] { return b.rx == "to the child" && a.rx == "during"; }));
    ASSERT_EQ(f.kids.size(), 1u);
    pp_conn_close(b.c, 0);
    int status = -1;
    auto t0 = Clock::now();
    while (waitpid(f.kids[0], &status, WNOHANG) == 0 && ms_since(t0) < 10000)
        pp_loop_run(loop_, 10);
    ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
    EXPECT_EQ(WEXITSTATUS(status), 0);
    ASSERT_TRUE(run([&] { return b.closes == 1; }));
    EXPECT_EQ(b.close_err, 0);

    // The child closed its copies of every parent fd: nothing changed here.
    for (int i = 0; i < 20; i++) {
        std::string m = "after " + std::to_string(i);
        a.rx.clear();
        ASSERT_EQ(pp_conn_write(a.c, m.data(), m.size()), 0);
        ASSERT_TRUE(run([&] { return a.rx == m; }));
    }
    EXPECT_EQ(a.closes, 0);
    Peer &c = client(s.port);
    ASSERT_EQ(pp_conn_write(c.c, "new", 3), 0);
    ASSERT_TRUE(run([&] { return c.rx == "new"; }));
    pp_listener_close(fl);
}

// A UDP socket on 127.0.0.1 (non-blocking), and the port it is bound to.
int udp_socket(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (sockaddr *)&sa, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

void udp_send(int fd, uint16_t port, const std::string &m)
{
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(port);
    EXPECT_EQ(sendto(fd, m.data(), m.size(), 0, (sockaddr *)&sa, sizeof(sa)), (ssize_t)m.size());
}

struct WatchCtx {
    int fd = -1;
    int calls = 0;
    std::vector<std::string> got;
};

void watch_drain(void *ctx)
{
    auto *w = static_cast<WatchCtx *>(ctx);
    char buf[256];
    ssize_t n;
    w->calls++;
    while ((n = recvfrom(w->fd, buf, sizeof(buf), MSG_DONTWAIT, nullptr, nullptr)) >= 0)
        w->got.emplace_back(buf, (size_t)n);
    EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << strerror(errno);
}

TEST_P(Loop, WatchDeliversDatagrams)
{
    uint16_t port = 0, sport = 0;
    WatchCtx w;
    w.fd = udp_socket(&port);
    int tx = udp_socket(&sport);
    ASSERT_GE(w.fd, 0);
    ASSERT_GE(tx, 0);
    pp_watch *wt = nullptr;
    EXPECT_EQ(pp_loop_watch(loop_, -1, watch_drain, &w, &wt), -EINVAL);
    EXPECT_EQ(pp_loop_watch(loop_, w.fd, nullptr, &w, &wt), -EINVAL);
    ASSERT_EQ(pp_loop_watch(loop_, w.fd, watch_drain, &w, &wt), 0);
    // Nothing to read: no callback.
    for (int i = 0; i < 3; i++)
        pp_loop_run(loop_, 10);
    EXPECT_EQ(w.calls, 0);
    // Datagrams arrive in order, one at a time and in bursts.
    std::vector<std::string> want;
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k <= round % 4; k++) {
            want.push_back("dgram " + std::to_string(want.size()));
            udp_send(tx, port, want.back());
        }
        ASSERT_TRUE(run([&] { return w.got.size() == want.size(); }, 5000))
            << w.got.size() << " of " << want.size();
    }
    EXPECT_EQ(w.got, want);
    EXPECT_GE(w.calls, 20);
    // Drained: idle turns make no callback.
    int calls = w.calls;
    for (int i = 0; i < 3; i++)
        pp_loop_run(loop_, 10);
    EXPECT_EQ(w.calls, calls);
    pp_watch_close(wt);
    close(w.fd);
    close(tx);
}

void watch_close_self(void *ctx)
{
    auto *p = static_cast<std::pair<WatchCtx *, pp_watch **> *>(ctx);
    watch_drain(p->first);
    pp_watch_close(*p->second);
    *p->second = nullptr;
}

TEST_P(Loop, WatchCloseStopsCallbacks)
{
    uint16_t port = 0, sport = 0;
    WatchCtx w;
    w.fd = udp_socket(&port);
    int tx = udp_socket(&sport);
    ASSERT_GE(w.fd, 0);
    ASSERT_GE(tx, 0);
    pp_watch *wt = nullptr;
    ASSERT_EQ(pp_loop_watch(loop_, w.fd, watch_drain, &w, &wt), 0);
    udp_send(tx, port, "one");
    ASSERT_TRUE(run([&] { return w.got.size() == 1; }, 5000));
    // Closed between turns, with a datagram already waiting: no callback,
    // and the fd stays open (the caller's).
    udp_send(tx, port, "two");
    usleep(20000);
    pp_watch_close(wt);
    int calls = w.calls;
    for (int i = 0; i < 5; i++)
        pp_loop_run(loop_, 10);
    EXPECT_EQ(w.calls, calls);
    char buf[16];
    EXPECT_EQ(recv(w.fd, buf, sizeof(buf), MSG_DONTWAIT), 3) << "the fd was closed";
    // Watched again, then closed from inside its own callback.
    std::pair<WatchCtx *, pp_watch **> self(&w, &wt);
    ASSERT_EQ(pp_loop_watch(loop_, w.fd, watch_close_self, &self, &wt), 0);
    udp_send(tx, port, "three");
    ASSERT_TRUE(run([&] { return wt == nullptr; }, 5000));
    calls = w.calls;
    udp_send(tx, port, "four");
    for (int i = 0; i < 5; i++)
        pp_loop_run(loop_, 10);
    EXPECT_EQ(w.calls, calls);
    // A watch left open is freed with the loop (TearDown), its fd not closed.
    ASSERT_EQ(pp_loop_watch(loop_, w.fd, watch_drain, &w, &wt), 0);
    pp_loop_free(loop_);
    loop_ = nullptr;
    EXPECT_EQ(recv(w.fd, buf, sizeof(buf), MSG_DONTWAIT), 4) << "the fd was closed";
    close(w.fd);
    close(tx);
}

INSTANTIATE_TEST_SUITE_P(Backends, Loop, ::testing::Values("io_uring", "epoll"),
                         [](const ::testing::TestParamInfo<std::string> &i) {
                             return i.param == "io_uring" ? std::string("uring")
                                                          : std::string("epoll");
                         });

}  // namespace
