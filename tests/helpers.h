// Description: shared helpers of the pp test suites: a shared scratch page, common job functions, /proc process and fd inspection.
#ifndef PP_TESTS_HELPERS_H
#define PP_TESTS_HELPERS_H

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pp.h"

namespace pptest {

/* ------------------------------------------------------------------ */
/* The scratch page                                                    */
/* ------------------------------------------------------------------ */

/*
 * A MAP_SHARED anonymous mapping created at static-initialisation time,
 * so it exists before any pp_server_new: the zygote and every worker
 * inherit it, and jobs use it to report to the test (their pid, how
 * often each argument ran) and to be released by the test.  All members
 * are lock-free atomics, so they work across processes.
 */
constexpr int kSlots = 64;            /* pid / release slots */
constexpr size_t kMaxSeen = 1u << 18; /* per-argument run counters */

struct Scratch {
    std::atomic<int> release[kSlots]; /* set by the test: job in slot i may end */
    std::atomic<int> pid[kSlots];     /* published by the job in slot i */
    std::atomic<long> runs;           /* jobs that ran (counting jobs) */
    std::atomic<long> running;        /* jobs running right now */
    std::atomic<long> max_running;    /* high-water mark of running */
    std::atomic<uint64_t> arg_addr;   /* address pp_job_arg gave the last job_argaddr */
    std::atomic<uint32_t> seen[kMaxSeen]; /* seen[x]: runs of job_square(x) */
};

/* The scratch page (never NULL; aborts the test binary if mmap fails). */
Scratch *scratch();

/* Zeroes the scratch page.  Call only while no job of any server runs. */
void scratch_reset();

/* ------------------------------------------------------------------ */
/* Common job functions (they run in workers)                          */
/* ------------------------------------------------------------------ */

/* Result = the argument bytes. */
int job_echo(pp_job *job);

/* Result = 8 bytes: hash64_bytes of the argument as the worker saw it. */
int job_hash(pp_job *job);

/* Argument: struct GenArg.  Result: size bytes of fill_pattern(seed). */
struct GenArg {
    uint64_t size;
    uint64_t seed;
};
int job_gen(pp_job *job);

/*
 * Argument: one uint64_t x.  Result: uint64_t square_of(x).  Status:
 * x % 1000.  Counts the run in scratch()->seen[x] (x < kMaxSeen) and
 * scratch()->runs.
 */
int job_square(pp_job *job);
inline uint64_t square_of(uint64_t x) { return x * x + 7; }

/* Returns getpid(); counts scratch()->runs. */
int job_getpid(pp_job *job);

/*
 * Argument: struct BlockArg.  Publishes getpid() in scratch()->pid[slot],
 * then stays busy until scratch()->release[slot] is set (returns
 * 100 + slot) or timeout_ms passes (returns -ETIMEDOUT), so that a test
 * that fails never leaves a worker hanging.
 */
struct BlockArg {
    int slot;
    int timeout_ms;
};
int job_block(pp_job *job);

/* Argument: one uint32_t, microseconds to spin.  Counts scratch()->runs. */
int job_spin(pp_job *job);

/* Returns 0; counts scratch()->runs and tracks running/max_running. */
int job_count(pp_job *job);

/* ------------------------------------------------------------------ */
/* Data                                                                */
/* ------------------------------------------------------------------ */

uint64_t mix64(uint64_t x);                      /* splitmix64 finaliser */
void fill_pattern(void *buf, size_t len, uint64_t seed);
bool check_pattern(const void *buf, size_t len, uint64_t seed);
uint64_t hash64_bytes(const void *buf, size_t len);

/* ------------------------------------------------------------------ */
/* Processes, threads, fds (through /proc)                             */
/* ------------------------------------------------------------------ */

struct ProcInfo {
    pid_t pid;
    pid_t ppid;
    char state;                  /* R, S, D, Z, ... */
    unsigned long long start;    /* start time in clock ticks since boot */
    int depth;                   /* 1 = child of the root, 2 = grandchild... */
};

/* Every process whose ancestry leads to root (root excluded). */
std::vector<ProcInfo> descendants(pid_t root);

/* Live (non-zombie) children of this process. */
int count_live_children();

/* Live (non-zombie) descendants of this process at depth >= 2: workers. */
int count_workers();

/* Live pids of the workers (depth >= 2 descendants). */
std::vector<pid_t> worker_pids();

/* True if a process with this pid and start time still exists (zombie included). */
bool process_exists(const ProcInfo &p);

/* Same, but a zombie counts as gone (it has ended, whoever reaps it). */
bool process_alive(const ProcInfo &p);

/* Threads of this process (/proc/self/task). */
int count_threads();

/* count_threads() after a thread was created and joined once, so that a
 * sanitizer runtime's lazily started background thread is already there. */
int baseline_threads();

/* /proc/self/fd links to memfd: and /proc/self/maps lines naming memfd:. */
int count_memfd_fds();
int count_memfd_maps();

/* True if [p, p+len) lies in a mapping of a memfd. */
bool in_memfd_mapping(const void *p);

/* ------------------------------------------------------------------ */
/* Waiting                                                             */
/* ------------------------------------------------------------------ */

/* Polls cond every ~1 ms until it holds (true) or timeout_ms passes (false). */
bool wait_until(const std::function<bool()> &cond, int timeout_ms);

/* Waits until count_workers() == n; returns the last count seen. */
int wait_workers(int n, int timeout_ms);

/* Monotonic milliseconds. */
double now_ms();

/* ------------------------------------------------------------------ */
/* RAII                                                                */
/* ------------------------------------------------------------------ */

struct ServerDeleter {
    void operator()(pp_server *s) const { pp_server_destroy(s); }
};
using ServerPtr = std::unique_ptr<pp_server, ServerDeleter>;

struct TaskDeleter {
    void operator()(pp_task *t) const { pp_task_release(t); }
};
using TaskPtr = std::unique_ptr<pp_task, TaskDeleter>;

/* pp_server_new with ncpus and the other defaults; nullptr on failure. */
ServerPtr make_server(int ncpus);
ServerPtr make_server(const pp_config &cfg);

/* Submits job_block(slot, timeout_ms); nullptr on failure. */
TaskPtr submit_block(pp_server *srv, int slot, int timeout_ms,
                     const pp_submit_opts *opts = nullptr);

/* Status of a done task (pp_task_result), or INT32_MIN if it is not done. */
int task_status(pp_task *t);

} // namespace pptest

#endif
