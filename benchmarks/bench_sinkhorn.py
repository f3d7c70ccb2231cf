"""Sinkhorn divergence (log domain, eps-scaling 0.5 down to blur=0.05, p=2) and its gradient."""
from ._common import SINKHORN_NS, Accuracy, PeakMemory, Workload, BACKENDS, DEVICES

SINKHORN_PARAMS = [BACKENDS, DEVICES, SINKHORN_NS]


class Sinkhorn(Workload):
    op = "sinkhorn"
    params = SINKHORN_PARAMS
    timeout = 300

    def time_sinkhorn(self, backend, device, n):
        self.run()


class SinkhornMemory(PeakMemory):
    op = "sinkhorn"
    params = SINKHORN_PARAMS
    timeout = 300

    def track_sinkhorn_peak_mem(self, backend, device, n):
        return self.peak_bytes()

    track_sinkhorn_peak_mem.unit = "bytes"


class SinkhornGrad(Workload):
    op = "sinkhorn_grad"          # numpy has no autograd: skipped
    params = SINKHORN_PARAMS
    timeout = 300

    def time_sinkhorn_grad(self, backend, device, n):
        self.run()


class SinkhornAccuracy(Accuracy):
    op = "sinkhorn"
    params = SINKHORN_PARAMS
    timeout = 300

    def track_sinkhorn_rel_err(self, backend, device, n):
        return self.relative_error()

    track_sinkhorn_rel_err.unit = "relative error"

    def track_sinkhorn_iterations(self, backend, device, n):
        return self.prepared.summarize(self.run()).iterations

    track_sinkhorn_iterations.unit = "iterations"
