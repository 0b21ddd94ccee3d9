/*
 * atomic.h - thin wrappers over C11 atomics, named for what they order.
 *
 * Every synchronising access in shm/ and engine/ goes through these, so a
 * reader can find the ordering argument next to each call: the comment at
 * the call site names the access it pairs with (A1 pairs with R1, ...).
 */
#ifndef PP_SHM_ATOMIC_H
#define PP_SHM_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define pp_load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define pp_load_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#define pp_store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define pp_store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define pp_fence_seq_cst() atomic_thread_fence(memory_order_seq_cst)

/*
 * An edge that goes through another process.  A record's hand-off from a
 * host thread to the engine thread runs host -> ring -> worker process ->
 * done ring -> engine; ThreadSanitizer sees neither the worker nor the
 * rings' other ends, so the host says "release" on the record's state at
 * the instant it hands the record over, and the engine's acquire load of
 * that state then joins it.  The page heap is the other such edge: a host
 * thread frees a block, a worker takes it and writes a result into it, a
 * host thread reads that result; the free says "release" on the heap and
 * the reader "acquire" (pages.c, payload.c).  No code outside
 * ThreadSanitizer builds.
 */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define PP_TSAN_RELEASE(p) __tsan_release((void *)(p))
#define PP_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define PP_TSAN_RELEASE(p) ((void)(p))
#define PP_TSAN_ACQUIRE(p) ((void)(p))
#endif

#define PP_CACHELINE 64
#define pp_cacheline_aligned __attribute__((aligned(PP_CACHELINE)))

#define pp_likely(x) __builtin_expect(!!(x), 1)
#define pp_unlikely(x) __builtin_expect(!!(x), 0)

/* One spin-wait step: tells the core we are spinning (frees the sibling
 * hyper-thread, saves power) without giving up the CPU. */
static inline void pp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

#endif /* PP_SHM_ATOMIC_H */
