"""torch.autograd.Functions of the cuda backend's two primitives.

They are written against four raw operations (see :mod:`.launcher` for the contract),
passed in as ``ops``, so that the backward formulas do not depend on how those are run.

Kernel product  out_ic = sum_j k(x_i, y_j) b_jc, upstream gradient g (N, K):
  d/dx_i = sum_j (g_i . b_j) grad_x k(x_i, y_j)                      kp_grad(x, y, g, b)
  d/dy_j = sum_i (b_j . g_i) grad_y k(x_i, y_j), and grad_y k(x, y) = grad_x k(y, x)
                                                                      kp_grad(y, x, b, g)
  d/db_jc = sum_i k(x_i, y_j) g_ic (k symmetric)                     kernel_product(y, x, g)

Softmin  out_i = -eps lse_i, lse_i = log sum_j exp(h_j - C_ij / eps), P_ij = exp(h_j - C_ij/eps - lse_i)
(a softmax over j), upstream gradient g (N,):
  d/dx_i = g_i sum_j P_ij grad_x C(x_i, y_j)            softmin_grad(x, y, alpha=-lse, beta=h)
  d/dy_j = sum_i g_i P_ij grad_x C(y_j, x_i)            softmin_grad(y, x, alpha=h, beta=-lse, v=g)
  d/dh_j = -eps sum_i g_i P_ij                           the second output of that same call
(grad_y C(x, y) = grad_x C(y, x) since C is symmetric; the exponent of P is <= 0 in both
calls, so nothing overflows.) The backward passes are not themselves differentiable.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class KernelProduct(torch.autograd.Function):
    """x (N, D), y (M, D), b (M, K) -> (N, K)."""

    @staticmethod
    def forward(ctx, x, y, b, kernel, blur, ops):
        ctx.kernel, ctx.blur, ctx.ops = kernel, blur, ops
        ctx.save_for_backward(x, y, b)
        return ops.kernel_product(x, y, b, kernel, blur)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, y, b = ctx.saved_tensors
        ops, kernel, blur = ctx.ops, ctx.kernel, ctx.blur
        grad = grad.contiguous()
        need_x, need_y, need_b = ctx.needs_input_grad[:3]
        gx = ops.kp_grad(x, y, grad, b, kernel, blur) if need_x else None
        gy = ops.kp_grad(y, x, b, grad, kernel, blur) if need_y else None
        gb = ops.kernel_product(y, x, grad, kernel, blur) if need_b else None
        return gx, gy, gb, None, None, None


class Softmin(torch.autograd.Function):
    """x (N, D), y (M, D), h (M,) -> (N,)."""

    @staticmethod
    def forward(ctx, x, y, h, eps, p, ops):
        lse = ops.softmin_lse(x, y, h, eps, p)
        ctx.eps, ctx.p, ctx.ops = eps, p, ops
        ctx.save_for_backward(x, y, h, lse)
        return -eps * lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, y, h, lse = ctx.saved_tensors
        ops, eps, p = ctx.ops, ctx.eps, ctx.p
        grad = grad.contiguous()
        need_x, need_y, need_h = ctx.needs_input_grad[:3]
        neg_lse = (-lse).contiguous()
        gx = gy = gh = None
        if need_x:
            weighted, _ = ops.softmin_grad(x, y, neg_lse, h, None, eps, p)
            gx = grad[:, None] * weighted
        if need_y or need_h:
            weighted, mass = ops.softmin_grad(y, x, h, neg_lse, grad, eps, p)
            gy = weighted if need_y else None
            gh = -eps * mass if need_h else None
        return gx, gy, gh, None, None, None
