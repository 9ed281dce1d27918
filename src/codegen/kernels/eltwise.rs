//! Elementwise and data-movement kernels over NHWC buffers: batchnorm (as a per-channel scale
//! and shift), activations, residual add, channel gathers (a concat, slice or shuffle that could
//! not be a view, and inputs staged for a kernel), flatten to NCHW order, and softmax. A work
//! item is one pixel (a flat tensor's row), except for flatten, where it is one batch item.

use super::Kernel;
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::Activation;
use cranelift_codegen::ir::{types, InstBuilder, Value};

/// Emits `body(channel, type)` for channels `0..count`: f32x4 steps, then single f32s.
pub fn for_channels(e: &mut Emit, count: usize, mut body: impl FnMut(&mut Emit, Value, types::Type)) {
    let vectors = (count / 4 * 4) as i64;
    if vectors > 0 {
        let (s, end) = (e.int(0), e.int(vectors));
        e.for_range(s, end, 4, |e, c| body(e, c, F32X4));
    }
    if vectors < count as i64 {
        let (s, end) = (e.int(vectors), e.int(count as i64));
        e.for_range(s, end, 1, |e, c| body(e, c, F32));
    }
}

/// Element index of channel 0 of pixel `p` in `buf`.
pub fn pixel_base(e: &mut Emit, buf: &Buf, p: Value) -> Value {
    let stride = e.int(buf.stride as i64);
    let off = e.b.ins().imul(p, stride);
    e.b.ins().iadd_imm_s(off, buf.offset as i64)
}

/// `out = act(x)`.
pub struct Map {
    pub input: Buf,
    pub out: Buf,
    pub act: Activation,
}

impl Kernel for Map {
    fn items(&self) -> usize {
        self.out.pixels()
    }
    fn work_per_item(&self) -> usize {
        self.out.c
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        e.for_range(begin, end, 1, |e, p| {
            let src = pixel_base(e, &self.input, p);
            let dst = pixel_base(e, &self.out, p);
            for_channels(e, self.out.c, |e, c, ty| {
                let s = e.b.ins().iadd(src, c);
                let d = e.b.ins().iadd(dst, c);
                let arena = e.arena;
                let v = e.load(ty, arena, s, 0);
                let v = e.activate(v, Some(self.act));
                e.store(v, arena, d, 0);
            });
        });
    }
}

/// `out = a + b`.
pub struct Add {
    pub a: Buf,
    pub b: Buf,
    pub out: Buf,
}

impl Kernel for Add {
    fn items(&self) -> usize {
        self.out.pixels()
    }
    fn work_per_item(&self) -> usize {
        self.out.c
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        e.for_range(begin, end, 1, |e, p| {
            let a = pixel_base(e, &self.a, p);
            let b = pixel_base(e, &self.b, p);
            let d = pixel_base(e, &self.out, p);
            for_channels(e, self.out.c, |e, c, ty| {
                let arena = e.arena;
                let ia = e.b.ins().iadd(a, c);
                let ib = e.b.ins().iadd(b, c);
                let id = e.b.ins().iadd(d, c);
                let x = e.load(ty, arena, ia, 0);
                let y = e.load(ty, arena, ib, 0);
                let s = e.b.ins().fadd(x, y);
                e.store(s, arena, id, 0);
            });
        });
    }
}

/// Inference batchnorm folded at compile time into `out = x * scale[c] + shift[c]`.
pub struct ScaleShift {
    pub input: Buf,
    pub out: Buf,
    /// Offset of `scale`, followed by `shift` (`c` floats each), in the packed weights.
    pub params: usize,
}

impl Kernel for ScaleShift {
    fn items(&self) -> usize {
        self.out.pixels()
    }
    fn work_per_item(&self) -> usize {
        self.out.c
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let c_total = self.out.c as i64;
        e.for_range(begin, end, 1, |e, p| {
            let src = pixel_base(e, &self.input, p);
            let dst = pixel_base(e, &self.out, p);
            for_channels(e, self.out.c, |e, c, ty| {
                let (arena, weights) = (e.arena, e.weights);
                let s = e.b.ins().iadd(src, c);
                let d = e.b.ins().iadd(dst, c);
                let x = e.load(ty, arena, s, 0);
                let scale = e.load(ty, weights, c, self.params as i64);
                let shift = e.load(ty, weights, c, self.params as i64 + c_total);
                let y = e.b.ins().fma(x, scale, shift);
                e.store(y, arena, d, 0);
            });
        });
    }
}

/// One run of channels moved from a source buffer: element `k < len` goes from channel
/// `src_c + k * src_step` to output channel `dst_c + k * dst_step`.
#[derive(Clone, Copy, Debug)]
pub struct Move {
    pub src: Buf,
    pub src_c: usize,
    pub src_step: usize,
    pub dst_c: usize,
    pub dst_step: usize,
    pub len: usize,
}

/// Per-pixel channel copies: concat, slice and shuffle.
pub struct Copy {
    pub moves: Vec<Move>,
    pub out: Buf,
    /// Flatten to NCHW order instead (one item per batch item).
    pub flatten: bool,
}

impl Copy {
    /// Output channels in order from `parts`: each a buffer (at slot 0) and the slots of the
    /// channels taken from it. Runs of evenly spaced slots become one move each.
    pub fn gather(parts: &[(Buf, Vec<usize>)], out: Buf) -> Copy {
        let mut moves = Vec::new();
        let mut dst = 0;
        for (src, slots) in parts {
            let mut k = 0;
            while k < slots.len() {
                let step = match slots.get(k + 1) {
                    Some(&next) if next > slots[k] => next - slots[k],
                    _ => 1,
                };
                let mut len = 1;
                while k + len < slots.len() && slots[k + len] == slots[k] + len * step {
                    len += 1;
                }
                moves.push(Move {
                    src: *src,
                    src_c: slots[k],
                    src_step: step,
                    dst_c: dst,
                    dst_step: 1,
                    len,
                });
                dst += len;
                k += len;
            }
        }
        Copy {
            moves,
            out,
            flatten: false,
        }
    }

    /// `[N, H, W, C]` to the NCHW flattening `[N, C * H * W]`.
    pub fn flatten(input: Buf, out: Buf) -> Copy {
        Copy {
            moves: vec![Move {
                src: input,
                src_c: 0,
                src_step: 1,
                dst_c: 0,
                dst_step: 1,
                len: input.c,
            }],
            out,
            flatten: true,
        }
    }
}

impl Kernel for Copy {
    fn items(&self) -> usize {
        if self.flatten {
            self.out.n
        } else {
            self.out.pixels()
        }
    }
    fn work_per_item(&self) -> usize {
        self.out.c
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        if self.flatten {
            let src = self.moves[0].src;
            let plane = (src.h * src.w) as i64;
            let channels = src.c as i64;
            e.for_range(begin, end, 1, |e, n| {
                e.for_const(0, plane, |e, hw| {
                    let pixels_before = e.b.ins().imul_imm_s(n, plane);
                    let pixel = e.b.ins().iadd(pixels_before, hw);
                    let s = pixel_base(e, &src, pixel);
                    let row = pixel_base(e, &self.out, n);
                    let d0 = e.b.ins().iadd(row, hw);
                    e.for_const(0, channels, |e, c| {
                        let arena = e.arena;
                        let si = e.b.ins().iadd(s, c);
                        let co = e.b.ins().imul_imm_s(c, plane);
                        let di = e.b.ins().iadd(d0, co);
                        let v = e.load(F32, arena, si, 0);
                        e.store(v, arena, di, 0);
                    });
                });
            });
            return;
        }
        e.for_range(begin, end, 1, |e, p| {
            let dst = pixel_base(e, &self.out, p);
            for m in &self.moves {
                let src = pixel_base(e, &m.src, p);
                if m.src_step == 1 && m.dst_step == 1 {
                    for_channels(e, m.len, |e, c, ty| {
                        let arena = e.arena;
                        let si = e.b.ins().iadd(src, c);
                        let di = e.b.ins().iadd(dst, c);
                        let v = e.load(ty, arena, si, m.src_c as i64);
                        e.store(v, arena, di, m.dst_c as i64);
                    });
                } else {
                    e.for_const(0, m.len as i64, |e, k| {
                        let arena = e.arena;
                        let so = e.b.ins().imul_imm_s(k, m.src_step as i64);
                        let si = e.b.ins().iadd(src, so);
                        let dk = e.b.ins().imul_imm_s(k, m.dst_step as i64);
                        let di = e.b.ins().iadd(dst, dk);
                        let v = e.load(F32, arena, si, m.src_c as i64);
                        e.store(v, arena, di, m.dst_c as i64);
                    });
                }
            }
        });
    }
}

/// Softmax over the channels of each pixel: `exp(x - max) / sum(exp(x - max))`.
pub struct Softmax {
    pub input: Buf,
    pub out: Buf,
}

impl Kernel for Softmax {
    fn items(&self) -> usize {
        self.out.pixels()
    }
    fn work_per_item(&self) -> usize {
        self.out.c * 8
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let c = self.out.c as i64;
        e.for_range(begin, end, 1, |e, p| {
            let src = pixel_base(e, &self.input, p);
            let dst = pixel_base(e, &self.out, p);
            let arena = e.arena;
            let max = e.b.declare_var(F32);
            let first = e.load(F32, arena, src, 0);
            e.b.def_var(max, first);
            e.for_const(1, c, |e, k| {
                let i = e.b.ins().iadd(src, k);
                let v = e.load(F32, arena, i, 0);
                let m = e.b.use_var(max);
                let m = e.max(v, m);
                e.b.def_var(max, m);
            });
            let sum = e.b.declare_var(F32);
            let zero = e.f32(0.0);
            e.b.def_var(sum, zero);
            e.for_const(0, c, |e, k| {
                let i = e.b.ins().iadd(src, k);
                let v = e.load(F32, arena, i, 0);
                let m = e.b.use_var(max);
                let shifted = e.b.ins().fsub(v, m);
                let x = e.exp(shifted);
                let o = e.b.ins().iadd(dst, k);
                e.store(x, arena, o, 0);
                let s = e.b.use_var(sum);
                let s = e.b.ins().fadd(s, x);
                e.b.def_var(sum, s);
            });
            let s = e.b.use_var(sum);
            let one = e.f32(1.0);
            let inv = e.b.ins().fdiv(one, s);
            e.for_const(0, c, |e, k| {
                let o = e.b.ins().iadd(dst, k);
                let v = e.load(F32, arena, o, 0);
                let v = e.b.ins().fmul(v, inv);
                e.store(v, arena, o, 0);
            });
        });
    }
}
