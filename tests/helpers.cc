// Description: shared helpers of the pp test suites: a shared scratch page, common job functions, /proc process and fd inspection.
#include "helpers.h"

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <new>
#include <set>
#include <sstream>
#include <thread>

namespace pptest {

/* ------------------------------------------------------------------ */
/* The scratch page                                                    */
/* ------------------------------------------------------------------ */

static_assert(std::atomic<int>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<long>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

static Scratch *create_scratch()
{
    void *p = mmap(nullptr, sizeof(Scratch), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("pptest: mmap of the scratch page");
        abort();
    }
    return new (p) Scratch(); /* zero-filled page; placement new for form */
}

Scratch *scratch()
{
    static Scratch *s = create_scratch();
    return s;
}

/* Created before main, hence before any pp_server_new of any test. */
static Scratch *const g_scratch_at_startup = scratch();

void scratch_reset()
{
    memset(static_cast<void *>(scratch()), 0, sizeof(Scratch));
}

/* ------------------------------------------------------------------ */
/* Data                                                                */
/* ------------------------------------------------------------------ */

uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void fill_pattern(void *buf, size_t len, uint64_t seed)
{
    auto *b = static_cast<unsigned char *>(buf);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = mix64(seed + i);
        memcpy(b + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = mix64(seed + i);
        memcpy(b + i, &v, len - i);
    }
}

bool check_pattern(const void *buf, size_t len, uint64_t seed)
{
    const auto *b = static_cast<const unsigned char *>(buf);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = mix64(seed + i);
        if (memcmp(b + i, &v, 8) != 0)
            return false;
    }
    if (i < len) {
        uint64_t v = mix64(seed + i);
        if (memcmp(b + i, &v, len - i) != 0)
            return false;
    }
    return true;
}

uint64_t hash64_bytes(const void *buf, size_t len)
{
    const auto *b = static_cast<const unsigned char *>(buf);
    uint64_t h = 0x51ed270b27a1c3e5ull ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, b + i, 8);
        h = (h ^ mix64(v)) * 0x100000001b3ull;
    }
    for (; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return mix64(h);
}

/* ------------------------------------------------------------------ */
/* Common job functions                                                */
/* ------------------------------------------------------------------ */

int job_echo(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    void *out = pp_job_result(job, len);
    if (out == nullptr)
        return pp_job_fail(job, ENOMEM, "job_echo: no result space for %zu bytes", len);
    if (len > 0)
        memcpy(out, arg, len);
    return 0;
}

int job_hash(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    uint64_t h = hash64_bytes(arg, len);
    void *out = pp_job_result(job, sizeof h);
    if (out == nullptr)
        return pp_job_fail(job, ENOMEM, "job_hash: no result space");
    memcpy(out, &h, sizeof h);
    return 0;
}

int job_gen(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    if (len != sizeof(GenArg))
        return pp_job_fail(job, EINVAL, "job_gen: argument of %zu bytes", len);
    GenArg g;
    memcpy(&g, arg, sizeof g);
    void *out = pp_job_result(job, g.size);
    if (out == nullptr)
        return pp_job_fail(job, ENOMEM, "job_gen: no result space for %llu bytes",
                           (unsigned long long)g.size);
    fill_pattern(out, g.size, g.seed);
    return 0;
}

int job_square(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    if (len != sizeof(uint64_t))
        return pp_job_fail(job, EINVAL, "job_square: argument of %zu bytes", len);
    uint64_t x;
    memcpy(&x, arg, sizeof x);
    if (x < kMaxSeen)
        scratch()->seen[x].fetch_add(1, std::memory_order_relaxed);
    scratch()->runs.fetch_add(1, std::memory_order_relaxed);
    uint64_t r = square_of(x);
    void *out = pp_job_result(job, sizeof r);
    if (out == nullptr)
        return pp_job_fail(job, ENOMEM, "job_square: no result space");
    memcpy(out, &r, sizeof r);
    return static_cast<int>(x % 1000);
}

int job_getpid(pp_job *job)
{
    (void)job;
    scratch()->runs.fetch_add(1, std::memory_order_relaxed);
    return static_cast<int>(getpid());
}

int job_block(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    if (len != sizeof(BlockArg))
        return pp_job_fail(job, EINVAL, "job_block: argument of %zu bytes", len);
    BlockArg b;
    memcpy(&b, arg, sizeof b);
    if (b.slot < 0 || b.slot >= kSlots)
        return pp_job_fail(job, EINVAL, "job_block: bad slot %d", b.slot);
    Scratch *s = scratch();
    s->pid[b.slot].store(static_cast<int>(getpid()), std::memory_order_release);
    /* The one place where a job sleeps on purpose: it must stay busy
     * until the test kills it or releases it; 1 ms naps keep it cheap. */
    double deadline = now_ms() + b.timeout_ms;
    while (!s->release[b.slot].load(std::memory_order_acquire)) {
        if (now_ms() > deadline)
            return -ETIMEDOUT;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, nullptr);
    }
    return 100 + b.slot;
}

int job_spin(pp_job *job)
{
    size_t len = 0;
    const void *arg = pp_job_arg(job, &len);
    uint32_t us = 0;
    if (len == sizeof us)
        memcpy(&us, arg, sizeof us);
    double end = now_ms() + us / 1000.0;
    while (now_ms() < end) {
    }
    scratch()->runs.fetch_add(1, std::memory_order_relaxed);
    return 0;
}

int job_count(pp_job *job)
{
    (void)job;
    Scratch *s = scratch();
    long r = s->running.fetch_add(1) + 1;
    long m = s->max_running.load();
    while (r > m && !s->max_running.compare_exchange_weak(m, r)) {
    }
    s->runs.fetch_add(1);
    s->running.fetch_sub(1);
    return 0;
}

/* ------------------------------------------------------------------ */
/* /proc                                                               */
/* ------------------------------------------------------------------ */

/* Parses /proc/<pid>/stat; false if it vanished or is malformed. */
static bool read_stat(pid_t pid, ProcInfo *out)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    FILE *f = fopen(path, "re");
    if (f == nullptr)
        return false;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: parse after the last ')'. */
    char *rp = strrchr(buf, ')');
    if (rp == nullptr)
        return false;
    char state = 0;
    int ppid = 0;
    /* fields after comm: state ppid pgrp session tty_nr tpgid flags minflt
     * cminflt majflt cmajflt utime stime cutime cstime priority nice
     * num_threads itrealvalue starttime */
    unsigned long long start = 0;
    int k = sscanf(rp + 2,
                   "%c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                   &state, &ppid, &start);
    if (k != 3)
        return false;
    out->pid = pid;
    out->ppid = ppid;
    out->state = state;
    out->start = start;
    out->depth = 0;
    return true;
}

static std::vector<ProcInfo> all_processes()
{
    std::vector<ProcInfo> v;
    DIR *d = opendir("/proc");
    if (d == nullptr)
        return v;
    while (struct dirent *e = readdir(d)) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0)
            continue;
        ProcInfo p;
        if (read_stat(static_cast<pid_t>(pid), &p))
            v.push_back(p);
    }
    closedir(d);
    return v;
}

std::vector<ProcInfo> descendants(pid_t root)
{
    std::vector<ProcInfo> all = all_processes();
    std::multimap<pid_t, size_t> by_parent;
    for (size_t i = 0; i < all.size(); i++)
        by_parent.emplace(all[i].ppid, i);
    std::vector<ProcInfo> out;
    std::vector<std::pair<pid_t, int>> todo{{root, 0}};
    std::set<pid_t> visited{root};
    while (!todo.empty()) {
        auto [pid, depth] = todo.back();
        todo.pop_back();
        auto range = by_parent.equal_range(pid);
        for (auto it = range.first; it != range.second; ++it) {
            ProcInfo p = all[it->second];
            if (!visited.insert(p.pid).second)
                continue;
            p.depth = depth + 1;
            out.push_back(p);
            todo.emplace_back(p.pid, depth + 1);
        }
    }
    return out;
}

int count_live_children()
{
    int n = 0;
    for (const ProcInfo &p : descendants(getpid()))
        if (p.depth == 1 && p.state != 'Z' && p.state != 'X')
            n++;
    return n;
}

std::vector<pid_t> worker_pids()
{
    std::vector<pid_t> v;
    for (const ProcInfo &p : descendants(getpid()))
        if (p.depth >= 2 && p.state != 'Z' && p.state != 'X')
            v.push_back(p.pid);
    return v;
}

int count_workers()
{
    return static_cast<int>(worker_pids().size());
}

bool process_exists(const ProcInfo &p)
{
    ProcInfo now;
    if (!read_stat(p.pid, &now))
        return false;
    return now.start == p.start;
}

bool process_alive(const ProcInfo &p)
{
    ProcInfo now;
    if (!read_stat(p.pid, &now) || now.start != p.start)
        return false;
    return now.state != 'Z' && now.state != 'X';
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == nullptr)
        return -1;
    int n = 0;
    while (struct dirent *e = readdir(d))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int count_threads()
{
    return count_dir("/proc/self/task");
}

int baseline_threads()
{
    std::thread([] {}).join();
    return count_threads();
}

int count_memfd_fds()
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == nullptr)
        return -1;
    while (struct dirent *e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k <= 0)
            continue;
        target[k] = '\0';
        if (strstr(target, "memfd:") != nullptr)
            n++;
    }
    closedir(d);
    return n;
}

int count_memfd_maps()
{
    std::ifstream f("/proc/self/maps");
    std::string line;
    int n = 0;
    while (std::getline(f, line))
        if (line.find("memfd:") != std::string::npos)
            n++;
    return n;
}

bool in_memfd_mapping(const void *p)
{
    auto a = reinterpret_cast<uintptr_t>(p);
    std::ifstream f("/proc/self/maps");
    std::string line;
    while (std::getline(f, line)) {
        unsigned long lo, hi;
        if (sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2)
            continue;
        if (a >= lo && a < hi)
            return line.find("memfd:") != std::string::npos;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Waiting                                                             */
/* ------------------------------------------------------------------ */

double now_ms()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

bool wait_until(const std::function<bool()> &cond, int timeout_ms)
{
    double deadline = now_ms() + timeout_ms;
    for (;;) {
        if (cond())
            return true;
        if (now_ms() > deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

int wait_workers(int n, int timeout_ms)
{
    int seen = -1;
    wait_until([&] { return (seen = count_workers()) == n; }, timeout_ms);
    return seen;
}

/* ------------------------------------------------------------------ */
/* RAII                                                                */
/* ------------------------------------------------------------------ */

ServerPtr make_server(const pp_config &cfg)
{
    pp_server *s = nullptr;
    if (pp_server_new(&cfg, &s) != 0)
        return nullptr;
    return ServerPtr(s);
}

ServerPtr make_server(int ncpus)
{
    pp_config cfg;
    pp_config_init(&cfg);
    cfg.ncpus = ncpus;
    return make_server(cfg);
}

TaskPtr submit_block(pp_server *srv, int slot, int timeout_ms, const pp_submit_opts *opts)
{
    BlockArg b{slot, timeout_ms};
    pp_task *t = nullptr;
    if (pp_submit(srv, job_block, &b, sizeof b, opts, &t) != 0)
        return nullptr;
    return TaskPtr(t);
}

int task_status(pp_task *t)
{
    int st = pp_task_result(t, nullptr, nullptr);
    return st == -EINPROGRESS ? INT32_MIN : st;
}

} // namespace pptest
