"""The two backend primitives: Gaussian kernel product and softmin (log-sum-exp), p=2."""
from ._common import Accuracy, PeakMemory, Workload


class KernelProduct(Workload):
    op = "kernel_product"

    def time_kernel_product(self, backend, device, n):
        self.run()


class KernelProductMemory(PeakMemory):
    op = "kernel_product"

    def track_kernel_product_peak_mem(self, backend, device, n):
        return self.peak_bytes()

    track_kernel_product_peak_mem.unit = "bytes"


class Softmin(Workload):
    op = "softmin"

    def time_softmin(self, backend, device, n):
        self.run()


class KernelProductAccuracy(Accuracy):
    op = "kernel_product"

    def track_kernel_product_rel_err(self, backend, device, n):
        return self.relative_error()

    track_kernel_product_rel_err.unit = "relative error"
