// kpbench custom CUDA kernels: kernel products, softmin (online log-sum-exp) and their gradients.
//
// Compiled at run time by NVRTC (through CuPy, see launcher.py) and in CI by nvcc
// (scripts/check_cuda_sources.sh, with -DKPB_INSTANTIATE). NVRTC has no host headers:
// this file must not #include anything; the math functions used are NVRTC built-ins.
//
// Layout of every kernel: one thread per row i of X (the cloud reduced *into*), a block of
// KPB_BLOCK threads; the columns j of Y are streamed through shared memory in tiles of
// `tile` rows, each row holding the (pre-scaled) coordinates of y_j then E "extra" values
// (the b_j columns, the log-weight h_j, ...). grid.y splits the j range into independent
// chunks whose partial results the launcher reduces with torch (sum, or logsumexp) so
// that small N still fills the GPU. Nothing of size N x M is ever stored.
//
// Template parameters
//   T      float or double.
//   DIM    the dimension D as a compile-time constant (x_i and the gradient accumulator
//          live in registers, loops over D unroll), or 0: D at run time (pairs in groups
//          of GROUP, dimensions in chunks of DCHUNK held in registers; see group_dists).
//   ROW    the padded length of a tile row when DIM > 0 (a multiple of 16 bytes, so that
//          a row is read with 16-byte vector loads); 0 when DIM == 0 (row length rowlen,
//          coordinates padded to a multiple of DCHUNK, also read with 16-byte loads).
//   KC     number of columns of b (kernel products), 1..16; the launcher chunks wider b.
//
// Units. Coordinates are multiplied by a scale s on load, so that the exponent is in
// base 2 and needs no extra multiply per pair: for the Gaussian kernel s^2 = log2(e)/(2 blur^2)
// and k = 2^(-|s x - s y|^2). Exponentials use exp2: in float32 the PTX instruction
// ex2.approx.ftz.f32 (one MUFU.EX2, max. relative error about 2 ulp, results below
// 2^-126 flushed to 0); in float64 the correctly rounded-ish libdevice exp2.

#ifndef KPB_BLOCK
#define KPB_BLOCK 256
#endif

namespace kpb {

constexpr int BLOCK = KPB_BLOCK;
constexpr int GAUSSIAN = 0, LAPLACIAN = 1, ENERGY = 2;

// ---------------------------------------------------------------------------------------
// Numeric helpers per precision.
template <typename T> struct Num;

template <> struct Num<float> {
  static __device__ __forceinline__ float exp2(float a) {
#ifdef KPB_HOST_EXECUTION   // host_shim.h: no PTX on the host (no ftz, correctly rounded)
    return exp2f(a);
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
#endif
  }
  static __device__ __forceinline__ float log2(float a) { return log2f(a); }
  static __device__ __forceinline__ float sqrt(float a) { return sqrtf(a); }
  // 1/sqrt(q), and 0 at q = 0: the gradient of |x - y| at x = y is taken as 0, not NaN.
  static __device__ __forceinline__ float rsqrt0(float q) { return q > 0.f ? rsqrtf(q) : 0.f; }
  static __device__ __forceinline__ float lowest() { return -3.402823466e+38f; }
  static __device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
  static __device__ __forceinline__ float max(float a, float b) { return fmaxf(a, b); }
  static __device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
};

template <> struct Num<double> {
  static __device__ __forceinline__ double exp2(double a) { return ::exp2(a); }
  static __device__ __forceinline__ double log2(double a) { return ::log2(a); }
  static __device__ __forceinline__ double sqrt(double a) { return ::sqrt(a); }
  static __device__ __forceinline__ double rsqrt0(double q) { return q > 0.0 ? ::rsqrt(q) : 0.0; }
  static __device__ __forceinline__ double lowest() { return -1.7976931348623157e+308; }
  static __device__ __forceinline__ double neg_inf() {
    return __longlong_as_double(0xfff0000000000000ULL);
  }
  static __device__ __forceinline__ double max(double a, double b) { return fmax(a, b); }
  static __device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
};

template <typename T> __device__ __forceinline__ T log2e() { return T(1.4426950408889634); }
template <typename T> __device__ __forceinline__ T ln2() { return T(0.6931471805599453); }

// 16-byte vectors, for reading a tile row from shared memory in as few loads as possible.
template <typename T> struct Vec16;
template <> struct Vec16<float> {
  using type = float4;
  static constexpr int lanes = 4;
  static __device__ __forceinline__ void unpack(const float4& w, float* out) {
    out[0] = w.x; out[1] = w.y; out[2] = w.z; out[3] = w.w;
  }
};
template <> struct Vec16<double> {
  using type = double2;
  static constexpr int lanes = 2;
  static __device__ __forceinline__ void unpack(const double2& w, double* out) {
    out[0] = w.x; out[1] = w.y;
  }
};

// ---------------------------------------------------------------------------------------
// Distances of the scaled points x_i and y_j: base + q or base - q, q = |s x - s y|^2,
// accumulated by FFMAs. A kernel or cost that needs -q (Gaussian, p = 2) has NEG = true: the
// FFMA negates its operand for free, where exp2(-q) after q would cost one more FADD per
// pair (FADD.FTZ under -ftz=true); the softmin also starts from h instead of subtracting.
template <typename T, bool NEG>
__device__ __forceinline__ T dist_step(T diff, T acc) { return fma(NEG ? -diff : diff, diff, acc); }

template <typename T, bool NEG, typename XR, typename TR>
__device__ __forceinline__ T dist(const XR& xi, const TR& r, int d, T base) {
#pragma unroll
  for (int k = 0; k < d; ++k) base = dist_step<T, NEG>(xi[k] - r[k], base);
  return base;
}

// Kernel functions of t = +q (NEG false) or -q (NEG true):
//   value(t):  k(x, y)
//   weight(t): phi with grad_x k(x, y) = gfactor * phi * (s x - s y); gfactor is set by the
//              launcher (-1/(s blur^2), -1/blur, -1). phi = 0 at q = 0 where k has a kink
//              (laplacian, energy): the gradient at x = y is 0, never NaN.
template <typename T, int KERNEL> struct Kern;
template <typename T> struct Kern<T, GAUSSIAN> {        // 2^(-q)
  static constexpr bool NEG = true;
  static __device__ __forceinline__ T value(T mq) { return Num<T>::exp2(mq); }
  static __device__ __forceinline__ T weight(T mq) { return Num<T>::exp2(mq); }
};
template <typename T> struct Kern<T, LAPLACIAN> {       // 2^(-sqrt q)
  static constexpr bool NEG = false;
  static __device__ __forceinline__ T value(T q) { return Num<T>::exp2(-Num<T>::sqrt(q)); }
  static __device__ __forceinline__ T weight(T q) {
    return Num<T>::exp2(-Num<T>::sqrt(q)) * Num<T>::rsqrt0(q);
  }
};
template <typename T> struct Kern<T, ENERGY> {          // -sqrt q
  static constexpr bool NEG = false;
  static __device__ __forceinline__ T value(T q) { return -Num<T>::sqrt(q); }
  static __device__ __forceinline__ T weight(T q) { return Num<T>::rsqrt0(q); }
};

// Costs C = |x - y|^p / p, scaled: C' = C * log2(e) / eps, and grad_x C = gfactor * psi *
// (s x - s y). The distance starts at start(base) (base itself when NEG: t = base - q);
// exponent(t, base) = base - C', psi(t).
template <typename T, int P> struct Cost;
template <typename T> struct Cost<T, 2> {   // C' = q, s^2 = log2(e) / (2 eps), gfactor = 1/s
  static constexpr bool NEG = true;
  static __device__ __forceinline__ T start(T base) { return base; }
  static __device__ __forceinline__ T exponent(T t, T) { return t; }
  static __device__ __forceinline__ T psi(T) { return T(1); }
};
template <typename T> struct Cost<T, 1> {   // C' = sqrt q, s = log2(e) / eps, gfactor = 1
  static constexpr bool NEG = false;
  static __device__ __forceinline__ T start(T) { return T(0); }
  static __device__ __forceinline__ T exponent(T q, T base) { return base - Num<T>::sqrt(q); }
  static __device__ __forceinline__ T psi(T q) { return Num<T>::rsqrt0(q); }
};

// Loop unrolling over the j's of a tile, by the size of a tile row: small rows (small D)
// unroll more, for independent exponentials in flight; large rows would spill registers.
template <typename T>
__host__ __device__ constexpr int unroll_by_row(int row, int small) {
  return row == 0 ? 1
       : int(row * sizeof(T)) <= 16 ? small
       : int(row * sizeof(T)) <= 32 ? (small > 2 ? small / 2 : 1)
       : int(row * sizeof(T)) <= 96 ? 2 : 1;
}

// ---------------------------------------------------------------------------------------
// The point x_i of this thread, scaled by s, in registers. The product is rounded on its
// own (no FMA contraction into the later difference) exactly as y_j's is in stage_tile, so
// that x_i == y_j gives a difference of exactly 0: then the gradients of |x - y| are 0.
template <typename T, int DIM> struct XRow {
  T v[DIM];
  __device__ __forceinline__ void load(const T* __restrict__ p, T s) {
#pragma unroll
    for (int k = 0; k < DIM; ++k) v[k] = Num<T>::mul_rn(s, p[k]);
  }
  __device__ __forceinline__ T operator[](int k) const { return v[k]; }
};
template <typename T> struct XRow<T, 0> {};          // run-time D: chunks, see group_dists

// One tile row (y_j scaled, then the extras), copied to registers with 16-byte loads.
template <typename T, int ROW> struct TileRow {
  T v[ROW];
  __device__ __forceinline__ T operator[](int k) const { return v[k]; }
};

template <typename T, int ROW>
__device__ __forceinline__ TileRow<T, ROW> tile_row(const T* sh, int jj) {
  static_assert((ROW * sizeof(T)) % 16 == 0, "a static tile row must be a multiple of 16 bytes");
  using V = Vec16<T>;
  TileRow<T, ROW> r;
  const typename V::type* src = reinterpret_cast<const typename V::type*>(sh + jj * ROW);
#pragma unroll
  for (int w = 0; w < ROW / V::lanes; ++w) V::unpack(src[w], r.v + w * V::lanes);
  return r;
}

template <typename T> __device__ __forceinline__ T* shared_tile() {
  extern __shared__ __align__(16) unsigned char kpb_smem[];
  return reinterpret_cast<T*>(kpb_smem);
}

// Copy rows j0 .. j0+tj-1 of y (scaled by s) and their extras into shared memory: the d
// coordinates, zeros up to ex, the E extras from ex on (extra(j, e)), zeros to rowlen.
template <typename T, int E, typename Extra>
__device__ __forceinline__ void stage_tile(T* sh, int rowlen, int ex, const T* __restrict__ y,
                                           int d, T s, int j0, int tj, Extra extra) {
  const T* src = y + (long long)j0 * d;             // the tile of y is contiguous
  for (int t = threadIdx.x; t < tj * d; t += BLOCK) {
    const int jj = t / d;
    sh[jj * rowlen + (t - jj * d)] = Num<T>::mul_rn(s, src[t]);
  }
  const int tail = rowlen - d;
  for (int t = threadIdx.x; t < tj * tail; t += BLOCK) {
    const int jj = t / tail, e = d + (t - jj * tail) - ex;
    sh[jj * rowlen + ex + e] = (e >= 0 && e < E) ? extra(j0 + jj, e) : T(0);
  }
}

// A static row holds D coordinates and E extras; a run-time one (DIM == 0) has ROW == 0.
__host__ __device__ constexpr bool valid_row(int dim, int row, int extras) {
  return row == 0 ? dim == 0 : (dim > 0 && row >= dim + extras);
}

// ---------------------------------------------------------------------------------------
// Run-time D (DIM == 0, D > 32): the pairs of a tile in groups of GROUP rows, the
// dimensions in chunks of DCHUNK. Tile rows hold the coordinates padded with zeros to
// dpad = DCHUNK * ceil(D / DCHUNK), then the extras (from dpad on; rowlen a multiple of 16
// bytes). x_i's chunk (scaled, zero past D) and, for the gradients, the accumulator's chunk
// are loaded into registers once per group: global memory is touched once per GROUP pairs
// and chunk, not once per pair and dimension.
constexpr int DCHUNK = 8, GROUP = 8;

__device__ __forceinline__ int padded_dim(int d) { return (d + DCHUNK - 1) / DCHUNK * DCHUNK; }

template <typename T>
__device__ __forceinline__ void load_chunk(const T* sh_row, T (&out)[DCHUNK]) {
  using V = Vec16<T>;
  const typename V::type* src = reinterpret_cast<const typename V::type*>(sh_row);
#pragma unroll
  for (int w = 0; w < DCHUNK / V::lanes; ++w) V::unpack(src[w], out + w * V::lanes);
}

template <typename T>
__device__ __forceinline__ void load_x_chunk(const T* __restrict__ x, int d, int c0, T s,
                                             T (&xc)[DCHUNK]) {
#pragma unroll
  for (int k = 0; k < DCHUNK; ++k) xc[k] = c0 + k < d ? Num<T>::mul_rn(s, x[c0 + k]) : T(0);
}

// The rows of a group (rows past the tile are clamped to its last row; callers mask them).
struct Group {
  int jj0, tj, rowlen;
  __device__ __forceinline__ int row(int u) const { return min(jj0 + u, tj - 1) * rowlen; }
  __device__ __forceinline__ bool valid(int u) const { return jj0 + u < tj; }
};

// t[u] += -/+ |x_i - y_{jj0+u}|^2 over all chunks.
template <typename T, bool NEG>
__device__ __forceinline__ void group_dists(const T* __restrict__ x, int d, T s, const T* sh,
                                            const Group& g, T (&t)[GROUP]) {
  for (int c0 = 0; c0 < padded_dim(d); c0 += DCHUNK) {
    T xc[DCHUNK], yc[DCHUNK];
    load_x_chunk(x, d, c0, s, xc);
#pragma unroll
    for (int u = 0; u < GROUP; ++u) {
      load_chunk(sh + g.row(u) + c0, yc);
#pragma unroll
      for (int k = 0; k < DCHUNK; ++k) t[u] = dist_step<T, NEG>(xc[k] - yc[k], t[u]);
    }
  }
}

// acc (the thread's output row, D entries) += sum_u w[u] (x_i - y_{jj0+u}), chunk by chunk.
template <typename T>
__device__ __forceinline__ void group_accumulate(const T* __restrict__ x, T* __restrict__ acc,
                                                 int d, T s, const T* sh, const Group& g,
                                                 const T (&w)[GROUP]) {
  for (int c0 = 0; c0 < padded_dim(d); c0 += DCHUNK) {
    T xc[DCHUNK], yc[DCHUNK], ac[DCHUNK];
    load_x_chunk(x, d, c0, s, xc);
#pragma unroll
    for (int k = 0; k < DCHUNK; ++k) ac[k] = c0 + k < d ? acc[c0 + k] : T(0);
#pragma unroll
    for (int u = 0; u < GROUP; ++u) {
      load_chunk(sh + g.row(u) + c0, yc);
#pragma unroll
      for (int k = 0; k < DCHUNK; ++k) ac[k] = fma(w[u], xc[k] - yc[k], ac[k]);
    }
#pragma unroll
    for (int k = 0; k < DCHUNK; ++k)
      if (c0 + k < d) acc[c0 + k] = ac[k];
  }
}

// The j range of this block's split. The end is computed in 64 bits: begin + split_len
// may pass 2^31 for the last chunk when M is within MAX_SPLITS tiles of it (begin < M
// always: the launcher makes no empty chunk).
struct Split {
  int begin, end;
  __device__ __forceinline__ Split(int m, int split_len) {
    const long long first = (long long)blockIdx.y * split_len;
    begin = (int)first;
    end = (int)min((long long)m, first + split_len);
  }
};

// Where the extras of a tile row start: after D coordinates (static), after dpad (run-time).
template <int DIM> __device__ __forceinline__ int extras_at(int d) {
  return DIM > 0 ? DIM : padded_dim(d);
}

// ---------------------------------------------------------------------------------------
// Kernel product: out[split, i, c] = sum_{j in split} k(x_i, y_j) b[j, c].
template <typename T, int KERNEL, int DIM, int ROW, int KC>
__device__ __forceinline__ void kp_tile(const XRow<T, DIM>& xi, const T* __restrict__ x, T s,
                                        const T* sh, int tj, int rowlen, int d, T (&part)[KC]) {
  using K = Kern<T, KERNEL>;
  if constexpr (DIM > 0) {
    constexpr int UNROLL = unroll_by_row<T>(ROW, 8);
#pragma unroll UNROLL
    for (int jj = 0; jj < tj; ++jj) {
      const auto r = tile_row<T, ROW>(sh, jj);
      const T kv = K::value(dist<T, K::NEG>(xi, r, DIM, T(0)));
#pragma unroll
      for (int c = 0; c < KC; ++c) part[c] = fma(kv, r[DIM + c], part[c]);
    }
  } else {
    const int ex = padded_dim(d);
    for (int jj0 = 0; jj0 < tj; jj0 += GROUP) {
      const Group g{jj0, tj, rowlen};
      T t[GROUP];
#pragma unroll
      for (int u = 0; u < GROUP; ++u) t[u] = T(0);
      group_dists<T, K::NEG>(x, d, s, sh, g, t);
#pragma unroll
      for (int u = 0; u < GROUP; ++u) {
        const T kv = g.valid(u) ? K::value(t[u]) : T(0);
#pragma unroll
        for (int c = 0; c < KC; ++c) part[c] = fma(kv, sh[g.row(u) + ex + c], part[c]);
      }
    }
  }
}

template <typename T, int KERNEL, int DIM, int ROW, int KC>
__global__ void __launch_bounds__(KPB_BLOCK)
kp_forward(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ b,
           T* __restrict__ out, int n, int m, int d_rt, int rowlen_rt, int split_len,
           int tile, T s) {
  static_assert(valid_row(DIM, ROW, KC), "ROW must hold D coordinates and the extras");
  const int d = DIM > 0 ? DIM : d_rt;
  const int rowlen = ROW > 0 ? ROW : rowlen_rt;
  const int i = blockIdx.x * BLOCK + threadIdx.x;
  const bool active = i < n;
  const Split split(m, split_len);
  T* sh = shared_tile<T>();
  const T* xp = x + (long long)(active ? i : 0) * d;

  XRow<T, DIM> xi;
  if constexpr (DIM > 0) {
    if (active) xi.load(xp, s);
  }
  T acc[KC];
#pragma unroll
  for (int c = 0; c < KC; ++c) acc[c] = T(0);

  for (int j0 = split.begin; j0 < split.end; j0 += tile) {
    const int tj = min(tile, split.end - j0);
    __syncthreads();
    stage_tile<T, KC>(sh, rowlen, extras_at<DIM>(d), y, d, s, j0, tj,
                      [&](int j, int e) { return b[(long long)j * KC + e]; });
    __syncthreads();
    if (!active) continue;
    T part[KC];                                     // per-tile partial sums: less rounding
#pragma unroll
    for (int c = 0; c < KC; ++c) part[c] = T(0);
    kp_tile<T, KERNEL, DIM, ROW, KC>(xi, xp, s, sh, tj, rowlen, d, part);
#pragma unroll
    for (int c = 0; c < KC; ++c) acc[c] += part[c];
  }
  if (active) {
    T* o = out + ((long long)blockIdx.y * n + i) * KC;
#pragma unroll
    for (int c = 0; c < KC; ++c) o[c] = acc[c];
  }
}

// ---------------------------------------------------------------------------------------
// The gradient kernels: acc_i = sum_j w_ij (s x_i - s y_j), w_ij = weight(t_ij, e_j) of the
// distance t_ij (started at start(e_j)) and the extras e_j of row j. Static D: x_i and the
// accumulator in registers; run-time D: the accumulator is the thread's output row,
// updated once per group and chunk.
template <typename T, int DIM> struct GradAcc {
  T v[DIM];
  __device__ __forceinline__ void start(T*, int) {
#pragma unroll
    for (int k = 0; k < DIM; ++k) v[k] = T(0);
  }
  template <int ROW>
  __device__ __forceinline__ void add(T w, const XRow<T, DIM>& xi, const TileRow<T, ROW>& r) {
#pragma unroll
    for (int k = 0; k < DIM; ++k) v[k] = fma(w, xi[k] - r[k], v[k]);
  }
  __device__ __forceinline__ void finish(T* __restrict__ o, int, T f) {
#pragma unroll
    for (int k = 0; k < DIM; ++k) o[k] = f * v[k];
  }
};
template <typename T> struct GradAcc<T, 0> {
  T* o;
  __device__ __forceinline__ void start(T* out, int d) {
    o = out;
    for (int k = 0; k < d; ++k) o[k] = T(0);
  }
  __device__ __forceinline__ void finish(T*, int d, T f) {
    for (int k = 0; k < d; ++k) o[k] *= f;
  }
};

template <typename T, bool NEG, int DIM, int ROW, int UNROLL, typename Start, typename Weight>
__device__ __forceinline__ void grad_tile(const XRow<T, DIM>& xi, const T* __restrict__ x, T s,
                                          const T* sh, int tj, int rowlen, int d,
                                          GradAcc<T, DIM>& acc, Start start, Weight weight) {
  if constexpr (DIM > 0) {
#pragma unroll UNROLL
    for (int jj = 0; jj < tj; ++jj) {
      const auto r = tile_row<T, ROW>(sh, jj);
      const T* e = r.v + DIM;
      acc.add(weight(dist<T, NEG>(xi, r, DIM, start(e)), e), xi, r);
    }
  } else {
    const int ex = padded_dim(d);
    for (int jj0 = 0; jj0 < tj; jj0 += GROUP) {
      const Group g{jj0, tj, rowlen};
      T t[GROUP], w[GROUP];
#pragma unroll
      for (int u = 0; u < GROUP; ++u) t[u] = start(sh + g.row(u) + ex);
      group_dists<T, NEG>(x, d, s, sh, g, t);
#pragma unroll
      for (int u = 0; u < GROUP; ++u) w[u] = g.valid(u) ? weight(t[u], sh + g.row(u) + ex) : T(0);
      group_accumulate(x, acc.o, d, s, sh, g, w);
    }
  }
}

// Gradient of sum_{i,c} g[i,c] (K b)[i,c] w.r.t. x_i:
//   out[split, i, :] = gfactor * sum_j (g_i . b_j) phi(q_ij) (s x_i - s y_j).
// With the roles swapped (x <-> y, g <-> b) the same kernel gives the gradient w.r.t. y.
template <typename T, int KERNEL, int DIM, int ROW, int KC>
__global__ void __launch_bounds__(KPB_BLOCK)
kp_grad(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ g,
        const T* __restrict__ b, T* __restrict__ out, int n, int m, int d_rt, int rowlen_rt,
        int split_len, int tile, T s, T gfactor) {
  static_assert(valid_row(DIM, ROW, KC), "ROW must hold D coordinates and the extras");
  using K = Kern<T, KERNEL>;
  const int d = DIM > 0 ? DIM : d_rt;
  const int rowlen = ROW > 0 ? ROW : rowlen_rt;
  const int i = blockIdx.x * BLOCK + threadIdx.x;
  const bool active = i < n;
  const Split split(m, split_len);
  T* sh = shared_tile<T>();
  T* o = out + ((long long)blockIdx.y * n + (active ? i : 0)) * d;
  const T* xp = x + (long long)(active ? i : 0) * d;

  XRow<T, DIM> xi;
  GradAcc<T, DIM> acc;
  T gi[KC];
  if (active) {
    if constexpr (DIM > 0) xi.load(xp, s);
    acc.start(o, d);
#pragma unroll
    for (int c = 0; c < KC; ++c) gi[c] = g[(long long)i * KC + c];
  }
  const auto start = [](const T*) { return T(0); };
  const auto weight = [&](T t, const T* e) {
    T gb = T(0);
#pragma unroll
    for (int c = 0; c < KC; ++c) gb = fma(gi[c], e[c], gb);
    return gb * K::weight(t);
  };

  for (int j0 = split.begin; j0 < split.end; j0 += tile) {
    const int tj = min(tile, split.end - j0);
    __syncthreads();
    stage_tile<T, KC>(sh, rowlen, extras_at<DIM>(d), y, d, s, j0, tj,
                      [&](int j, int e) { return b[(long long)j * KC + e]; });
    __syncthreads();
    if (!active) continue;
    grad_tile<T, K::NEG, DIM, ROW, unroll_by_row<T>(ROW, 4)>(xi, xp, s, sh, tj, rowlen, d, acc,
                                                             start, weight);
  }
  if (active) acc.finish(o, d, gfactor);
}

// ---------------------------------------------------------------------------------------
// Softmin, forward: out[split, i] = log sum_{j in split} exp(h_j - C(x_i, y_j) / eps)
// (natural log), by a streaming log-sum-exp in base 2: the j's of a tile are taken in
// groups of GROUP; the running maximum moves once per group, so each pair costs one exp2.
template <typename T>
__device__ __forceinline__ void lse_update(const T (&v)[GROUP], T& run_max, T& run_sum) {
  T gmax = v[0];
#pragma unroll
  for (int u = 1; u < GROUP; ++u) gmax = Num<T>::max(gmax, v[u]);
  if (gmax > run_max) {           // run_max starts finite (lowest): exp2(-huge) = 0, no NaN
    run_sum *= Num<T>::exp2(run_max - gmax);
    run_max = gmax;
  }
  T part = T(0);
#pragma unroll
  for (int u = 0; u < GROUP; ++u) part += Num<T>::exp2(v[u] - run_max);
  run_sum += part;
}

// One group, static D: v_u = h_j log2(e) - C'(x_i, y_j) for the rows jj0 .. jj0+GROUP-1
// (MASKED: rows past tj count as v = -inf, and are not read).
template <typename T, int P, int DIM, int ROW, bool MASKED>
__device__ __forceinline__ void lse_group(const XRow<T, DIM>& xi, const T* sh, int jj0, int tj,
                                          T& run_max, T& run_sum) {
  using C = Cost<T, P>;
  T v[GROUP];
#pragma unroll
  for (int u = 0; u < GROUP; ++u) {
    const int jj = MASKED ? min(jj0 + u, tj - 1) : jj0 + u;
    const auto r = tile_row<T, ROW>(sh, jj);
    const T val = C::exponent(dist<T, C::NEG>(xi, r, DIM, C::start(r[DIM])), r[DIM]);
    v[u] = (MASKED && jj0 + u >= tj) ? Num<T>::neg_inf() : val;
  }
  lse_update(v, run_max, run_sum);
}

template <typename T, int P, int DIM, int ROW>
__device__ __forceinline__ void lse_tile(const XRow<T, DIM>& xi, const T* __restrict__ x, T s,
                                         const T* sh, int tj, int rowlen, int d, T& run_max,
                                         T& run_sum) {
  using C = Cost<T, P>;
  if constexpr (DIM > 0) {
    int jj0 = 0;
    for (; jj0 + GROUP <= tj; jj0 += GROUP)
      lse_group<T, P, DIM, ROW, false>(xi, sh, jj0, tj, run_max, run_sum);
    if (jj0 < tj) lse_group<T, P, DIM, ROW, true>(xi, sh, jj0, tj, run_max, run_sum);
  } else {
    const int ex = padded_dim(d);
    for (int jj0 = 0; jj0 < tj; jj0 += GROUP) {
      const Group g{jj0, tj, rowlen};
      T t[GROUP], v[GROUP];
#pragma unroll
      for (int u = 0; u < GROUP; ++u) t[u] = C::start(sh[g.row(u) + ex]);
      group_dists<T, C::NEG>(x, d, s, sh, g, t);
#pragma unroll
      for (int u = 0; u < GROUP; ++u)
        v[u] = g.valid(u) ? C::exponent(t[u], sh[g.row(u) + ex]) : Num<T>::neg_inf();
      lse_update(v, run_max, run_sum);
    }
  }
}

template <typename T, int P, int DIM, int ROW>
__global__ void __launch_bounds__(KPB_BLOCK)
softmin_lse(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ h,
            T* __restrict__ out, int n, int m, int d_rt, int rowlen_rt, int split_len,
            int tile, T s) {
  static_assert(valid_row(DIM, ROW, 1), "ROW must hold D coordinates and the extras");
  const int d = DIM > 0 ? DIM : d_rt;
  const int rowlen = ROW > 0 ? ROW : rowlen_rt;
  const int i = blockIdx.x * BLOCK + threadIdx.x;
  const bool active = i < n;
  const Split split(m, split_len);
  T* sh = shared_tile<T>();
  const T* xp = x + (long long)(active ? i : 0) * d;

  XRow<T, DIM> xi;
  if constexpr (DIM > 0) {
    if (active) xi.load(xp, s);
  }
  T run_max = Num<T>::lowest();
  T run_sum = T(0);

  for (int j0 = split.begin; j0 < split.end; j0 += tile) {
    const int tj = min(tile, split.end - j0);
    __syncthreads();
    stage_tile<T, 1>(sh, rowlen, extras_at<DIM>(d), y, d, s, j0, tj,
                     [&](int j, int) { return h[j] * log2e<T>(); });
    __syncthreads();
    if (!active) continue;
    lse_tile<T, P, DIM, ROW>(xi, xp, s, sh, tj, rowlen, d, run_max, run_sum);
  }
  if (active) {
    out[(long long)blockIdx.y * n + i] = ln2<T>() * (run_max + Num<T>::log2(run_sum));
  }
}

// Softmin, backward. With P_ab = exp(alpha_a + beta_b - C(x_a, y_b) / eps) (natural units):
//   out_s[split, a]    = sum_b v_b P_ab
//   out_g[split, a, :] = gfactor * sum_b v_b P_ab psi(q_ab) (s x_a - s y_b)  (= sum v P grad_x C)
// v == nullptr means v_b = 1. The launcher calls it twice: for the gradient w.r.t. x
// (alpha = -lse, beta = h) and, roles swapped, for y and h (alpha = h, beta = -lse, v = g).
template <typename T, int P, int DIM, int ROW>
__global__ void __launch_bounds__(KPB_BLOCK)
softmin_grad(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ alpha,
             const T* __restrict__ beta, const T* __restrict__ v, T* __restrict__ out_g,
             T* __restrict__ out_s, int n, int m, int d_rt, int rowlen_rt, int split_len,
             int tile, T s, T gfactor) {
  static_assert(valid_row(DIM, ROW, 2), "ROW must hold D coordinates and the extras");
  using C = Cost<T, P>;
  const int d = DIM > 0 ? DIM : d_rt;
  const int rowlen = ROW > 0 ? ROW : rowlen_rt;
  const int i = blockIdx.x * BLOCK + threadIdx.x;
  const bool active = i < n;
  const Split split(m, split_len);
  T* sh = shared_tile<T>();
  T* o = out_g + ((long long)blockIdx.y * n + (active ? i : 0)) * d;
  const T* xp = x + (long long)(active ? i : 0) * d;

  XRow<T, DIM> xi;
  GradAcc<T, DIM> acc;
  T a2 = T(0), sum = T(0), part = T(0);
  if (active) {
    if constexpr (DIM > 0) xi.load(xp, s);
    acc.start(o, d);
    a2 = alpha[i] * log2e<T>();
  }
  const auto start = [&](const T* e) { return C::start(a2 + e[0]); };
  const auto weight = [&](T t, const T* e) {     // e = (beta_j log2 e, v_j)
    const T w = e[1] * Num<T>::exp2(C::exponent(t, a2 + e[0]));
    part += w;
    return w * C::psi(t);
  };

  for (int j0 = split.begin; j0 < split.end; j0 += tile) {
    const int tj = min(tile, split.end - j0);
    __syncthreads();
    stage_tile<T, 2>(sh, rowlen, extras_at<DIM>(d), y, d, s, j0, tj, [&](int j, int e) {
      return e == 0 ? beta[j] * log2e<T>() : (v != nullptr ? v[j] : T(1));
    });
    __syncthreads();
    if (!active) continue;
    part = T(0);                                    // per-tile partial sums: less rounding
    grad_tile<T, C::NEG, DIM, ROW, unroll_by_row<T>(ROW, 4)>(xi, xp, s, sh, tj, rowlen, d, acc,
                                                             start, weight);
    sum += part;
  }
  if (active) {
    out_s[(long long)blockIdx.y * n + i] = sum;
    acc.finish(o, d, gfactor);
  }
}

}  // namespace kpb

// ---------------------------------------------------------------------------------------
// For CI (nvcc): instantiate a representative set so that the compiler checks the bodies,
// not only the template syntax. The launcher asks NVRTC for exactly the instances it needs.
#ifdef KPB_INSTANTIATE
namespace kpb_check {
using namespace kpb;
#define KPB_ALL_KP(T, DIM, ROW, KC)                                   \
  (void*)&kp_forward<T, GAUSSIAN, DIM, ROW, KC>,                      \
  (void*)&kp_forward<T, LAPLACIAN, DIM, ROW, KC>,                     \
  (void*)&kp_forward<T, ENERGY, DIM, ROW, KC>,                        \
  (void*)&kp_grad<T, GAUSSIAN, DIM, ROW, KC>,                         \
  (void*)&kp_grad<T, LAPLACIAN, DIM, ROW, KC>,                        \
  (void*)&kp_grad<T, ENERGY, DIM, ROW, KC>
#define KPB_ALL_SOFTMIN(T, DIM, ROW_LSE, ROW_GRAD)                               \
  (void*)&softmin_lse<T, 1, DIM, ROW_LSE>, (void*)&softmin_lse<T, 2, DIM, ROW_LSE>,   \
  (void*)&softmin_grad<T, 1, DIM, ROW_GRAD>, (void*)&softmin_grad<T, 2, DIM, ROW_GRAD>
void* instances[] = {
  KPB_ALL_KP(float, 3, 4, 1),   KPB_ALL_KP(float, 1, 4, 2),   KPB_ALL_KP(float, 16, 20, 3),
  KPB_ALL_KP(double, 3, 4, 1),  KPB_ALL_KP(double, 7, 8, 1),  KPB_ALL_KP(double, 32, 48, 16),
  KPB_ALL_KP(float, 0, 0, 1),   KPB_ALL_KP(double, 0, 0, 4),
  KPB_ALL_SOFTMIN(float, 3, 4, 8),    KPB_ALL_SOFTMIN(float, 2, 4, 4),
  KPB_ALL_SOFTMIN(float, 16, 20, 20), KPB_ALL_SOFTMIN(double, 3, 4, 6),
  KPB_ALL_SOFTMIN(double, 32, 34, 34), KPB_ALL_SOFTMIN(float, 0, 0, 0),
  KPB_ALL_SOFTMIN(double, 0, 0, 0),
};
}  // namespace kpb_check
#endif
