"""The CI subset: what ``.ci/benchmarks`` compares between the merge base and HEAD.

Selected by name (``asv continuous -b '^bench_ci\\.'``): four calls of a few ms to 0.1 s on one CPU
thread, numpy and torch only (no compilation), so two commits are compared in minutes on a
2-core machine. More samples than asv's default (``repeat``, ``rounds``), so that the
rank test behind ``asv continuous --factor`` is not tripped by a shared machine's noise.
"""
from ._common import Workload


class _CI(Workload):
    params = [["torch"], ["cpu"], [1000]]
    # asv: (min, max) samples per round and a time cap per round; rounds over processes
    repeat = (10, 40, 20.0)
    rounds = 3
    min_run_count = 10
    warmup_time = 0.2
    sample_time = 0.02


class KernelProduct(_CI):
    op = "kernel_product"
    params = [["numpy", "torch"], ["cpu"], [1000]]

    def time_kernel_product(self, backend, device, n):
        self.run()


class Softmin(_CI):
    op = "softmin"

    def time_softmin(self, backend, device, n):
        self.run()


class Sinkhorn(_CI):
    op = "sinkhorn"
    params = [["torch"], ["cpu"], [200]]

    def time_sinkhorn(self, backend, device, n):
        self.run()
