// Heap allocation counting for "steady state allocates nothing" tests (one definition for the test binary).
//
// Two counters, both active only while a CountAllocations object is alive:
//  * operator new: the binary's global operator new/delete are replaced by counting versions over malloc/free;
//  * malloc: on glibc without AddressSanitizer, malloc/calloc/realloc are wrapped over glibc's own allocator, so
//    allocations made by C libraries (FFTW, VOLK) are seen too. Under AddressSanitizer, which owns malloc, only the
//    operator new counter runs.
#pragma once

namespace fedlora::test {

struct AllocationCount {
    long operator_new = 0;
    long malloc = 0;
    long total() const { return operator_new + malloc; }
};

class CountAllocations {
public:
    CountAllocations();   // resets the counters and starts counting
    ~CountAllocations();  // stops counting
    CountAllocations(const CountAllocations&) = delete;
    CountAllocations& operator=(const CountAllocations&) = delete;
    AllocationCount count() const;
};

bool malloc_counting_available();

}  // namespace fedlora::test
