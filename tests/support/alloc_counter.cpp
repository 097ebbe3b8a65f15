#include "alloc_counter.h"

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_new{0};
std::atomic<long> g_malloc{0};

void* counted_new(std::size_t n, std::size_t align) {
    if (g_counting.load(std::memory_order_relaxed))
        g_new.fetch_add(1, std::memory_order_relaxed);
    if (n == 0)
        n = 1;
    return align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                             : std::malloc(n);
}
// Out of line so the compiler does not pair this free() with the malloc it sees in counted_new.
[[gnu::noinline]] void counted_delete(void* p) noexcept { std::free(p); }
}  // namespace

void* operator new(std::size_t n) {
    if (void* p = counted_new(n, 0))
        return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = counted_new(n, 0))
        return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
    if (void* p = counted_new(n, static_cast<std::size_t>(a)))
        return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
    if (void* p = counted_new(n, static_cast<std::size_t>(a)))
        return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_delete(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_delete(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_delete(p); }

#if defined(__SANITIZE_ADDRESS__)
#define FEDLORA_COUNT_MALLOC 0
#elif defined(__GLIBC__)
#define FEDLORA_COUNT_MALLOC 1
#else
#define FEDLORA_COUNT_MALLOC 0
#endif

#if FEDLORA_COUNT_MALLOC
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void __libc_free(void*);

static inline void count_malloc() {
    if (g_counting.load(std::memory_order_relaxed))
        g_malloc.fetch_add(1, std::memory_order_relaxed);
}
void* malloc(std::size_t n) {
    count_malloc();
    return __libc_malloc(n);
}
void* calloc(std::size_t a, std::size_t b) {
    count_malloc();
    return __libc_calloc(a, b);
}
void* realloc(void* p, std::size_t n) {
    count_malloc();
    return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
}
#endif

namespace fedlora::test {

CountAllocations::CountAllocations() {
    g_new = 0;
    g_malloc = 0;
    g_counting = true;
}
CountAllocations::~CountAllocations() { g_counting = false; }
AllocationCount CountAllocations::count() const { return {g_new.load(), g_malloc.load()}; }
bool malloc_counting_available() { return FEDLORA_COUNT_MALLOC != 0; }

}  // namespace fedlora::test
