//! Depthwise convolution: `groups == input channels == output channels` (channel multiplier 1),
//! any kernel size, stride, padding and dilation.
//!
//! Channels are contiguous in NHWC, so the kernel vectorizes over them: four channels per f32x4,
//! the last `C % 4` channels one at a time in scalar code. A work item is one output row
//! `(n, y)`. For each group of four channels, the kernel's weights (when there are few enough taps)
//! and the bias are loaded into registers once, then the output row is swept:
//!
//! - the interior columns, whose windows lie inside the input, in a loop without bounds checks,
//!   several pixels per iteration;
//! - the border columns, known at compile time, unrolled with only their in-bounds taps.
//!
//! Rows of the window above or below the input point at a zero row in the weights buffer, chosen
//! once per item with a `select`, so no code path depends on the vertical position.
//!
//! Weights are packed `[kh][kw][C rounded up to 4]`, zero padded; the bias `[C rounded up to 4]`.
//!
//! The scheduling barrier, row pointers, interior range and epilogue are in `window.rs`, shared
//! with the vectorized dense convolution in `direct.rs`.

use super::window::{
    barrier, finish, interior, mem, opaque_false, pin, pixel_row, row_pointers, zero_of, Epilogue, MAX_BORDER_COLUMNS,
};
use super::{conv, tensor, Kernel, Packer};
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Conv, Hw, Pad};
use crate::ir::Node;
use crate::runtime::Weights;
use cranelift_codegen::ir::{types::Type, InstBuilder, Value};
use cranelift_frontend::Variable;

pub struct Depthwise {
    input: Buf,
    out: Buf,
    kernel: Hw,
    stride: Hw,
    pad: Pad,
    dilation: Hw,
    /// Packed weights `[kh][kw][cp]`.
    weights: usize,
    /// Packed bias `[cp]`.
    bias: Option<usize>,
    /// A zero row of `input.w * input.stride` elements (at least `cp`).
    zero: usize,
    epilogue: Epilogue,
}

/// Channels rounded up to whole vectors.
fn padded(c: usize) -> usize {
    c.div_ceil(4) * 4
}

impl Depthwise {
    /// `weight` is in PyTorch's layout `[C][1][kh][kw]`, `bias` `[C]`. `out` must have the
    /// input's batch and channel count and the spatial size `c` gives.
    pub fn new(
        c: &Conv,
        input: Buf,
        out: Buf,
        weight: &[f32],
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        pack: &mut Packer,
    ) -> Depthwise {
        let ch = input.c;
        assert!(
            c.groups == ch && c.out_channels == ch && out.c == ch,
            "not a depthwise convolution"
        );
        let cp = padded(ch);
        let (kh, kw) = (c.kernel.0, c.kernel.1);
        let mut packed = vec![0.0f32; kh * kw * cp];
        for k in 0..ch {
            for i in 0..kh {
                for j in 0..kw {
                    packed[(i * kw + j) * cp + k] = weight[(k * kh + i) * kw + j];
                }
            }
        }
        let weights = pack.push(&packed);
        let bias = bias.map(|b| {
            let mut v = b.to_vec();
            v.resize(cp, 0.0);
            pack.push(&v)
        });
        let zero = pack.push(&vec![0.0; (input.w * input.stride).max(cp)]);
        Depthwise {
            input,
            out,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            dilation: c.dilation,
            weights,
            bias,
            zero,
            epilogue,
        }
    }

    fn taps(&self) -> i64 {
        (self.kernel.0 * self.kernel.1) as i64
    }

    /// Whether the weights stay in registers for the whole sweep of a channel group.
    fn held(&self) -> bool {
        self.taps() <= 9
    }

    /// Output pixels computed together in the interior loop: as many as the 16 vector registers
    /// allow next to the held weights, the bias and one loaded input per pixel.
    fn unroll(&self) -> i64 {
        if self.held() {
            ((15 - (self.taps() + 1)) / 2).clamp(1, 4)
        } else {
            4
        }
    }
}

/// Lowers a depthwise node; a node with an unusually wide padded border goes to the scalar
/// convolution instead.
pub fn lower(node: &Node, c: &Conv, input: Buf, out: Buf, w: &Weights, pack: &mut Packer) -> Box<dyn Kernel> {
    let (x0, x1) = interior(out.w, input.w, c.kernel.1, c.stride.1, c.dilation.1, c.pad.left);
    if x0 + (out.w as i64 - x1) > MAX_BORDER_COLUMNS {
        return conv::lower(node, c, input, out, w, pack);
    }
    let bias = c.bias.then(|| tensor(w, node, "bias"));
    Box::new(Depthwise::new(
        c,
        input,
        out,
        tensor(w, node, "weight"),
        bias,
        Epilogue::default(),
        pack,
    ))
}

/// What one channel group's sweep works with: byte addresses with the channel offset applied.
struct Group {
    /// Input pixel `(n, iy_i, 0)` (or the zero row) for each kernel row `i`.
    rows: Vec<Value>,
    /// Output pixel `(n, y, 0)`.
    out: Value,
    residual: Option<Value>,
    /// Packed weights of this channel group, tap 0.
    weights: Value,
    /// The weights themselves, when held in registers.
    held: Option<Vec<Value>>,
    bias: Value,
}

impl Kernel for Depthwise {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }

    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.kernel.0 * self.kernel.1
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let never = opaque_false(e, end);
        let ow = self.out.w as i64;
        let (x0, x1) = interior(
            self.out.w,
            self.input.w,
            self.kernel.1,
            self.stride.1,
            self.dilation.1,
            self.pad.left,
        );
        let u = self.unroll();
        let loop_end = x0 + (x1 - x0) / u * u;
        let chunk = self.chunk();
        e.for_range(begin, end, 1, |e, item| {
            let oh = self.out.h as i64;
            let n = e.b.ins().sdiv_imm_s(item, oh);
            let y = e.b.ins().srem_imm_s(item, oh);
            let rows = row_pointers(
                e,
                &self.input,
                n,
                y,
                self.kernel.0,
                self.stride.0,
                self.dilation.0,
                self.pad.top,
                self.zero,
            );
            let out_row = pixel_row(e, &self.out, item);
            let res_row = self.epilogue.residual.map(|r| pixel_row(e, &r, item));
            let mut all = rows.clone();
            all.push(out_row);
            all.extend(res_row);
            let all = pin(e, never, &all);
            let kh = self.kernel.0;
            let (rows, out_row, res_row) = (&all[..kh], all[kh], all.get(kh + 1).copied());
            let ctx = Row {
                never,
                rows,
                out: out_row,
                residual: res_row,
            };
            // Left border, unrolled.
            let left: Vec<i64> = (0..x0).collect();
            self.for_groups(e, &ctx, |e, g, ty| {
                for xs in left.chunks(u as usize) {
                    self.pixels(e, never, ty, g, None, xs);
                }
            });
            // Interior, in chunks of columns small enough that the input they read stays in L1
            // while every channel group sweeps them.
            let sweep = |e: &mut Emit, start: Value, len: i64| {
                self.for_groups(e, &ctx, |e, g, ty| {
                    let stop = e.b.ins().iadd_imm_s(start, len);
                    e.for_range(start, stop, u, |e, x| {
                        let si =
                            e.b.ins()
                                .imul_imm_s(x, self.stride.1 as i64 * self.input.stride as i64 * 4);
                        let so = e.b.ins().imul_imm_s(x, self.out.stride as i64 * 4);
                        let xs: Vec<i64> = (0..u).collect();
                        self.pixels(e, never, ty, g, Some((si, so)), &xs);
                    });
                });
            };
            let chunks = (loop_end - x0) / chunk;
            if chunks > 0 {
                let (s, t) = (e.int(x0), e.int(x0 + chunks * chunk));
                e.for_range(s, t, chunk, |e, start| sweep(e, start, chunk));
            }
            let rest = loop_end - x0 - chunks * chunk;
            if rest > 0 {
                let start = e.int(x0 + chunks * chunk);
                sweep(e, start, rest);
            }
            // Interior columns left over by the unrolling, and the right border, unrolled.
            let right: Vec<i64> = (loop_end..ow).collect();
            self.for_groups(e, &ctx, |e, g, ty| {
                for xs in right.chunks(u as usize) {
                    self.pixels(e, never, ty, g, None, xs);
                }
            });
        });
    }
}

/// Addresses of one output row `(n, y)`.
struct Row<'a> {
    never: Value,
    rows: &'a [Value],
    out: Value,
    residual: Option<Value>,
}

impl Depthwise {
    /// Interior columns per chunk: a multiple of the unrolling whose input (all kernel rows)
    /// takes about 16 KiB, or whole rows for many channels.
    fn chunk(&self) -> i64 {
        let u = self.unroll();
        let bytes = (self.kernel.0 * self.stride.1 * self.input.stride * 4).max(1) as i64;
        let cols = (16 * 1024 / bytes) / u * u;
        // Chunks much shorter than that reload the weights too often: sweep whole rows instead.
        if cols < 16 {
            i64::MAX / 2
        } else {
            cols
        }
    }

    /// Runs `body` for every channel group (f32x4) and then every remaining channel (f32), with
    /// the group's weights and bias loaded.
    fn for_groups(&self, e: &mut Emit, row: &Row, mut body: impl FnMut(&mut Emit, &Group, Type)) {
        let ch = self.out.c as i64;
        let full = ch / 4;
        if full > 0 {
            e.for_const(0, full, |e, g| {
                let cb = e.b.ins().ishl_imm_s(g, 4);
                let grp = self.group(e, F32X4, row, cb);
                body(e, &grp, F32X4);
            });
        }
        for k in full * 4..ch {
            let cb = e.int(k * 4);
            let grp = self.group(e, F32, row, cb);
            body(e, &grp, F32);
        }
    }

    /// The addresses and registers of one channel group (`ty` F32X4) or one channel (`ty` F32)
    /// at byte offset `cb`.
    fn group(&self, e: &mut Emit, ty: Type, row: &Row, cb: Value) -> Group {
        let rows: Vec<Value> = row.rows.iter().map(|&r| e.b.ins().iadd(r, cb)).collect();
        let out = e.b.ins().iadd(row.out, cb);
        let residual = row.residual.map(|r| e.b.ins().iadd(r, cb));
        let base = e.b.ins().iadd(e.weights, cb);
        let weights = e.b.ins().iadd_imm_s(base, self.weights as i64 * 4);
        let mut all = rows;
        all.extend([out, weights]);
        all.extend(residual);
        let all = pin(e, row.never, &all);
        let kh = self.kernel.0;
        let (rows, out, weights, residual) = (all[..kh].to_vec(), all[kh], all[kh + 1], all.get(kh + 2).copied());
        let cp4 = padded(self.out.c) as i64 * 4;
        let held = self.held().then(|| {
            (0..self.taps())
                .map(|t| e.b.ins().load(ty, mem(), weights, (t * cp4) as i32))
                .collect()
        });
        let bias = match self.bias {
            Some(b) => {
                let at = e.b.ins().iadd_imm_s(base, b as i64 * 4);
                e.b.ins().load(ty, mem(), at, 0)
            }
            None => zero_of(e, ty),
        };
        Group {
            rows,
            out,
            residual,
            weights,
            held,
            bias,
        }
    }

    /// Computes and stores output columns `xs`. With `shift` (input and output byte offsets of
    /// the loop's column), `xs` are relative to that column and lie in the interior; without it
    /// they are absolute and only their in-bounds taps are emitted.
    fn pixels(&self, e: &mut Emit, never: Value, ty: Type, g: &Group, shift: Option<(Value, Value)>, xs: &[i64]) {
        let (kh, kw) = (self.kernel.0 as i64, self.kernel.1 as i64);
        let (sw, dw, pl) = (self.stride.1 as i64, self.dilation.1 as i64, self.pad.left as i64);
        let iw = self.input.w as i64;
        let is4 = self.input.stride as i64 * 4;
        let cp4 = padded(self.out.c) as i64 * 4;
        let rows: Vec<Value> = match shift {
            Some((s, _)) => g.rows.iter().map(|&r| e.b.ins().iadd(r, s)).collect(),
            None => g.rows.clone(),
        };
        let accs: Vec<Variable> = xs
            .iter()
            .map(|_| {
                let v = e.b.declare_var(ty);
                e.b.def_var(v, g.bias);
                v
            })
            .collect();
        let vars: Vec<(Variable, Type)> = accs.iter().map(|&a| (a, ty)).collect();
        for i in 0..kh {
            for j in 0..kw {
                let t = i * kw + j;
                let cols: Vec<(usize, i64)> = xs
                    .iter()
                    .enumerate()
                    .map(|(u, &x)| (u, x * sw - pl + j * dw))
                    .filter(|&(_, col)| shift.is_some() || (0..iw).contains(&col))
                    .collect();
                if cols.is_empty() {
                    continue;
                }
                let w = match &g.held {
                    Some(w) => w[t as usize],
                    None => e.b.ins().load(ty, mem(), g.weights, (t * cp4) as i32),
                };
                for (u, col) in cols {
                    let x = e.b.ins().load(ty, mem(), rows[i as usize], (col * is4) as i32);
                    let a = e.b.use_var(accs[u]);
                    let a = e.b.ins().fma(x, w, a);
                    e.b.def_var(accs[u], a);
                }
                if t + 1 < kh * kw {
                    barrier(e, never, &vars);
                }
            }
        }
        let os4 = self.out.stride as i64 * 4;
        let (out, residual) = match shift {
            Some((_, s)) => (e.b.ins().iadd(g.out, s), g.residual.map(|r| e.b.ins().iadd(r, s))),
            None => (g.out, g.residual),
        };
        for (u, &x) in xs.iter().enumerate() {
            let v = e.b.use_var(accs[u]);
            let off = (x * os4) as i32;
            finish(e, &self.epilogue, v, residual.map(|r| (r, off)), (out, off));
        }
    }
}
