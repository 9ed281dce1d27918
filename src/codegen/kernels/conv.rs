//! The general direct convolution: plain scalar loops that handle every kernel size, stride,
//! padding, dilation and group count. Specialized families (1x1 as a matrix multiply, depthwise)
//! take the shapes they are faster for; this one is the fallback and the simplest statement of
//! what they must compute.
//!
//! ```text
//! Scalar::new(c: &Conv, input: Buf, out: Buf, weight: &[f32], bias: Option<&[f32]>,
//!             epilogue: Epilogue, post: Option<(&[f32], &[f32])>, pack: &mut Packer) -> Scalar
//! ```
//!
//! takes the same arguments as the specialized constructors (`Depthwise::new`, `direct::Direct::new`),
//! so any convolution node, with its fused epilogue `act(conv + bias + residual) * scale + shift`,
//! can be lowered here when a specialized kernel does not apply (an unusually wide padded border).
//!
//! Weights are packed `[Cout][kh][kw][Cin / groups]`, so the innermost loop reads input channels
//! and weights contiguously. A work item is one output row `(n, y)`; for dense, one batch row.

use super::eltwise::pixel_base;
use super::window::{finish, pack_post, Epilogue};
use super::{Kernel, Packer};
use crate::codegen::emit::{Emit, F32};
use crate::codegen::layout::Buf;
use crate::ir::op::Conv;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Any convolution, one output element at a time.
pub struct Scalar {
    conv: Conv,
    input: Buf,
    out: Buf,
    /// Packed weights `[Cout][kh][kw][Cin / groups]`.
    weights: usize,
    /// Packed bias `[Cout]`.
    bias: Option<usize>,
    /// Packed post affine `[scale; Cout][shift; Cout]`.
    post: Option<usize>,
    epilogue: Epilogue,
}

impl Scalar {
    /// `weight` is in PyTorch's layout `[Cout][Cin / groups][kh][kw]`, `bias` `[Cout]`, `post`
    /// the per-output-channel `(scale, shift)` applied after the activation: the kernel stores
    /// `act(conv + bias + residual) * scale + shift`. `input`, `out` and the residual may have
    /// a pixel stride larger than their channel count; the output must not overlap the input or
    /// the residual.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: &Conv,
        input: Buf,
        out: Buf,
        weight: &[f32],
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        post: Option<(&[f32], &[f32])>,
        pack: &mut Packer,
    ) -> Scalar {
        assert!(
            out.c == c.out_channels && input.c.is_multiple_of(c.groups) && out.c.is_multiple_of(c.groups),
            "channels do not match the convolution"
        );
        epilogue.check(&out);
        let cin_g = input.c / c.groups;
        let (kh, kw) = (c.kernel.0, c.kernel.1);
        let mut packed = vec![0.0f32; c.out_channels * kh * kw * cin_g];
        for o in 0..c.out_channels {
            for ci in 0..cin_g {
                for i in 0..kh {
                    for j in 0..kw {
                        packed[((o * kh + i) * kw + j) * cin_g + ci] = weight[((o * cin_g + ci) * kh + i) * kw + j];
                    }
                }
            }
        }
        let weights = pack.push(&packed);
        let bias = bias.map(|b| pack.push(&b[..c.out_channels]));
        let post = pack_post(post, c.out_channels, c.out_channels, pack);
        Scalar {
            conv: c.clone(),
            input,
            out,
            weights,
            bias,
            post,
            epilogue,
        }
    }
}

impl Kernel for Scalar {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }
    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.conv.kernel.0 * self.conv.kernel.1 * (self.input.c / self.conv.groups)
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let c = &self.conv;
        let cin_g = (self.input.c / c.groups) as i64;
        let cout_g = (c.out_channels / c.groups) as i64;
        let (kh, kw) = (c.kernel.0 as i64, c.kernel.1 as i64);
        let oh = self.out.h as i64;
        let cout = c.out_channels as i64;
        e.for_range(begin, end, 1, |e, item| {
            let n = e.b.ins().sdiv_imm_s(item, oh);
            let y = e.b.ins().srem_imm_s(item, oh);
            e.for_const(0, self.out.w as i64, |e, x| {
                let row = e.b.ins().imul_imm_s(item, self.out.w as i64);
                let out_pixel = e.b.ins().iadd(row, x);
                let dst = pixel_base(e, &self.out, out_pixel);
                let res = self.epilogue.residual.map(|r| pixel_base(e, &r, out_pixel));
                e.for_const(0, cout, |e, o| {
                    let acc = e.b.declare_var(F32);
                    let init = match self.bias {
                        Some(b) => {
                            let weights = e.weights;
                            e.load(F32, weights, o, b as i64)
                        }
                        None => e.f32(0.0),
                    };
                    e.b.def_var(acc, init);
                    let g = e.b.ins().sdiv_imm_s(o, cout_g);
                    let first_channel = e.b.ins().imul_imm_s(g, cin_g);
                    for i in 0..kh {
                        let sy = e.b.ins().imul_imm_s(y, c.stride.0 as i64);
                        let iy = e.b.ins().iadd_imm_s(sy, i * c.dilation.0 as i64 - c.pad.top as i64);
                        let row_ok = e.in_bounds(iy, self.input.h as i64);
                        e.if_then(row_ok, |e| {
                            for j in 0..kw {
                                let sx = e.b.ins().imul_imm_s(x, c.stride.1 as i64);
                                let ix = e.b.ins().iadd_imm_s(sx, j * c.dilation.1 as i64 - c.pad.left as i64);
                                let col_ok = e.in_bounds(ix, self.input.w as i64);
                                e.if_then(col_ok, |e| {
                                    let rows = e.b.ins().imul_imm_s(n, self.input.h as i64);
                                    let r = e.b.ins().iadd(rows, iy);
                                    let p = e.b.ins().imul_imm_s(r, self.input.w as i64);
                                    let p = e.b.ins().iadd(p, ix);
                                    let base = pixel_base(e, &self.input, p);
                                    let base = e.b.ins().iadd(base, first_channel);
                                    let wrow = e.b.ins().imul_imm_s(o, kh * kw * cin_g);
                                    let wbase = e.b.ins().iadd_imm_s(wrow, (i * kw + j) * cin_g + self.weights as i64);
                                    e.for_const(0, cin_g, |e, ci| {
                                        let (arena, weights) = (e.arena, e.weights);
                                        let xi = e.b.ins().iadd(base, ci);
                                        let wi = e.b.ins().iadd(wbase, ci);
                                        let xv = e.load(F32, arena, xi, 0);
                                        let wv = e.load(F32, weights, wi, 0);
                                        let a = e.b.use_var(acc);
                                        let a = e.b.ins().fma(xv, wv, a);
                                        e.b.def_var(acc, a);
                                    });
                                });
                            }
                        });
                    }
                    let v = e.b.use_var(acc);
                    let post = self.post.map(|p| {
                        let weights = e.weights;
                        let scale = e.load(F32, weights, o, p as i64);
                        let shift = e.load(F32, weights, o, p as i64 + cout);
                        (scale, shift)
                    });
                    let arena = e.arena;
                    let residual = res.map(|r| {
                        let i = e.b.ins().iadd(r, o);
                        (e.addr(arena, i), 0)
                    });
                    let i = e.b.ins().iadd(dst, o);
                    let at = e.addr(arena, i);
                    finish(e, &self.epilogue, v, residual, post, (at, 0));
                });
            });
        });
    }
}
