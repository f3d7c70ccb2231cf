"""Custom CUDA backend: hand-written CUDA C kernels (``kernels.cu``) for the kernel
product, the softmin and their gradients, streamed through shared memory (never N x M).

Loader: NVRTC through CuPy's ``RawModule``. The source is compiled at first use for the
GPU at hand (about a second per kernel instance; templates are instantiated only for the
(dtype, kernel, D, columns) actually used) and CuPy keeps the binary in its on-disk
kernel cache, so later processes load it directly. Chosen over
``torch.utils.cpp_extension.load`` because that needs nvcc, a host C++ compiler and CUDA
headers matching torch's CUDA at run time, and a build of about a minute, while pip
wheels of torch ship none of these; NVRTC comes with the CuPy wheel's CUDA libraries
(cupy-cuda13x) and needs no toolkit. Tensors stay torch tensors: their raw device
pointers are passed to the kernels, which run on torch's current stream (zero copy,
correct ordering with torch's own work and its caching allocator).

Importing this package needs neither a GPU nor CuPy: ``CudaBackend().available()``
says precisely what is missing.
"""
from .backend import CudaBackend

__all__ = ["CudaBackend"]
