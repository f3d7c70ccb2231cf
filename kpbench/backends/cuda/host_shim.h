// Host execution of CUDA C kernels, for correctness only (no GPU timing, no GPU rounding).
//
// Force-included (g++ -include host_shim.h) before kernels.cu, which is compiled unmodified
// except for one #ifdef KPB_HOST_EXECUTION around its inline PTX. The shim gives CUDA's
// execution model real semantics on one OS thread:
//   * every CUDA thread of a block is a fiber (ucontext) with its own stack, so its
//     registers/locals are its own; threadIdx/blockIdx/blockDim/gridDim are set per fiber
//     on every switch;
//   * __syncthreads() is a true barrier: a fiber that reaches it yields, and the block goes
//     on only when every live thread of the block waits at the *same* barrier (same source
//     line); a thread that exits, or waits at another barrier, while others wait is reported
//     as a divergent barrier (undefined behaviour in CUDA) and the launch fails;
//   * dynamic shared memory (`extern __shared__`) is one buffer per block: blocks run one
//     after the other, and before each block the buffer is filled with 0xFF bytes (NaN in
//     float and double) so that reading a row nobody staged shows up as NaN;
//   * device built-ins with their CUDA meaning: float4/double2 (16-byte aligned),
//     __int_as_float, __longlong_as_double, __fmul_rn/__dmul_rn (compile with
//     -ffp-contract=off: a product is never fused into a later add), rsqrtf/rsqrt, fma,
//     min on ints.
// Only `extern __shared__` arrays are supported (static __shared__ arrays would become
// per-fiber locals); kernels.cu uses only the dynamic one (a test checks it).
#pragma once

#define KPB_HOST_EXECUTION 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x = 1, y = 1, z = 1; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

using std::exp2;
using std::fma;
using std::fmax;
using std::log2;
using std::sqrt;

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline double __longlong_as_double(long long i) {
  double d;
  std::memcpy(&d, &i, sizeof d);
  return d;
}

namespace kpb_host {

constexpr int MAX_THREADS = 1024;
constexpr std::size_t STACK_BYTES = 256 * 1024;
enum State { READY, AT_BARRIER, DONE };

struct Scheduler {
  ucontext_t main_ctx;
  std::vector<ucontext_t> ctx;
  std::vector<State> state;
  std::vector<int> barrier_line;
  std::vector<char> stacks;
  int current = 0;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
};

inline Scheduler sched;

inline void set_thread(int t) {
  threadIdx = uint3{unsigned(t) % blockDim.x, unsigned(t) / blockDim.x % blockDim.y,
                    unsigned(t) / (blockDim.x * blockDim.y)};
}

// Called by a fiber: wait here until every live thread of the block has arrived.
inline void syncthreads(int line) {
  Scheduler& s = sched;
  const int me = s.current;
  s.state[me] = AT_BARRIER;
  s.barrier_line[me] = line;
  swapcontext(&s.ctx[me], &s.main_ctx);
  set_thread(me);
}

inline void trampoline() {
  Scheduler& s = sched;
  s.body(s.body_arg);
  s.state[s.current] = DONE;   // uc_link returns to main_ctx
}

// Runs the current block (blockIdx set) to its end. Returns 0, or 1 with a message in err.
inline int run_block(int nthreads, char* err, std::size_t errlen) {
  Scheduler& s = sched;
  for (int t = 0; t < nthreads; ++t) {
    getcontext(&s.ctx[t]);
    s.ctx[t].uc_stack.ss_sp = s.stacks.data() + std::size_t(t) * STACK_BYTES;
    s.ctx[t].uc_stack.ss_size = STACK_BYTES;
    s.ctx[t].uc_link = &s.main_ctx;
    makecontext(&s.ctx[t], trampoline, 0);
    s.state[t] = READY;
  }
  for (;;) {
    for (int t = 0; t < nthreads; ++t) {
      if (s.state[t] != READY) continue;
      s.current = t;
      set_thread(t);
      swapcontext(&s.main_ctx, &s.ctx[t]);
    }
    int done = 0, waiting = 0, line = -1;
    bool same_line = true;
    for (int t = 0; t < nthreads; ++t) {
      if (s.state[t] == DONE) { ++done; continue; }
      if (line >= 0 && s.barrier_line[t] != line) same_line = false;
      line = s.barrier_line[t];
      ++waiting;
    }
    if (done == nthreads) return 0;
    if (done > 0 || !same_line) {
      std::snprintf(err, errlen,
                    "divergent __syncthreads in block (%u, %u): %d threads exited and %d wait "
                    "at a barrier%s", blockIdx.x, blockIdx.y, done, waiting,
                    same_line ? "" : " (not all at the same one)");
      return 1;
    }
    for (int t = 0; t < nthreads; ++t) s.state[t] = READY;   // everyone arrived: release
  }
}

// Argument unpacking, as cuLaunchKernel does: params[i] points at the value of argument i.
template <typename... A, std::size_t... I>
std::tuple<A...> unpack(void** params, std::index_sequence<I...>) {
  return std::tuple<A...>{*static_cast<std::remove_reference_t<A>*>(params[I])...};
}

template <typename... A> struct Call {
  void (*kernel)(A...);
  std::tuple<A...> args;
  static void run(void* self) {
    Call* c = static_cast<Call*>(self);
    std::apply(c->kernel, c->args);
  }
};

// The launch: every block of the grid in turn, each block's threads as fibers.
template <typename... A>
int launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block,
           std::size_t smem, unsigned char* shared, std::size_t shared_capacity,
           void** params, char* err, std::size_t errlen) {
  const int nthreads = int(block[0] * block[1] * block[2]);
  if (nthreads < 1 || nthreads > MAX_THREADS) {
    std::snprintf(err, errlen, "block of %d threads (1..%d)", nthreads, MAX_THREADS);
    return 1;
  }
  if (smem > shared_capacity) {
    std::snprintf(err, errlen, "%zu bytes of dynamic shared memory asked, %zu available",
                  smem, shared_capacity);
    return 1;
  }
  Call<A...> call{kernel, unpack<A...>(params, std::index_sequence_for<A...>{})};
  Scheduler& s = sched;
  s.ctx.resize(nthreads);
  s.state.resize(nthreads);
  s.barrier_line.resize(nthreads);
  if (s.stacks.size() < std::size_t(nthreads) * STACK_BYTES)
    s.stacks.resize(std::size_t(nthreads) * STACK_BYTES);
  s.body = &Call<A...>::run;
  s.body_arg = &call;
  gridDim = dim3{grid[0], grid[1], grid[2]};
  blockDim = dim3{block[0], block[1], block[2]};
  for (unsigned z = 0; z < grid[2]; ++z)
    for (unsigned y = 0; y < grid[1]; ++y)
      for (unsigned x = 0; x < grid[0]; ++x) {
        blockIdx = uint3{x, y, z};
        std::memset(shared, 0xFF, shared_capacity);
        if (run_block(nthreads, err, errlen)) return 1;
      }
  return 0;
}

}  // namespace kpb_host

#define __syncthreads() ::kpb_host::syncthreads(__LINE__)
