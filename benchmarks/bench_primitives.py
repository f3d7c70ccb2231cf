"""The two backend primitives: Gaussian kernel product and softmin (log-sum-exp), p=2."""
from ._common import Accuracy, Workload


class KernelProduct(Workload):
    op = "kernel_product"

    def time_kernel_product(self, backend, device, n):
        self.run()

    def peakmem_kernel_product(self, backend, device, n):
        self.run()


class Softmin(Workload):
    op = "softmin"

    def time_softmin(self, backend, device, n):
        self.run()


class KernelProductAccuracy(Accuracy):
    op = "kernel_product"

    def track_kernel_product_rel_err(self, backend, device, n):
        return self.relative_error()

    track_kernel_product_rel_err.unit = "relative error"
