// Probe kernels for tests/test_cuda_host.py: the host execution model (host_shim.h) and
// one piece of kernels.cu (Split). Valid CUDA too; only the tests compile it, for the host.
#include "../../kpbench/backends/cuda/kernels.cu"

// Each thread passes its value to its left neighbour through shared memory, `rounds` times:
// right only if __syncthreads is a real barrier and each thread keeps its own locals.
__global__ void rotate(int* out, int rounds, int barrier) {
  int* sh = kpb::shared_tile<int>();
  const int t = threadIdx.x, n = blockDim.x;
  int v = t;
  for (int r = 0; r < rounds; ++r) {
    sh[t] = v;
    if (barrier) __syncthreads();
    v = sh[(t + 1) % n];
    if (barrier) __syncthreads();
  }
  out[blockIdx.x * n + t] = v;
}

__global__ void half_at_barrier(int* out) {   // undefined behaviour in CUDA
  if (threadIdx.x < blockDim.x / 2) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void two_barriers(int* out) {      // undefined behaviour in CUDA
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Block 0 writes shared memory, the others only read it: they must not see block 0's data.
__global__ void block_local(int* out) {
  int* sh = kpb::shared_tile<int>();
  if (blockIdx.x == 0) sh[threadIdx.x] = 7;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = sh[threadIdx.x];
}

__global__ void indices(int* out) {
  const int threads = blockDim.x * blockDim.y * blockDim.z;
  const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int lin = block * threads + (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  int* o = out + 6 * lin;
  o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
  o[3] = blockIdx.x;  o[4] = blockIdx.y;  o[5] = blockIdx.z;
}

__global__ void split_range(int m, int split_len, int* out) {
  if (threadIdx.x == 0) {
    const kpb::Split s(m, split_len);
    out[2 * blockIdx.y] = s.begin;
    out[2 * blockIdx.y + 1] = s.end;
  }
}
