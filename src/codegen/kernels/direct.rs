//! Vectorized direct convolution for dense convolutions (`groups == 1`) that are not plain 1x1:
//! the 3x3 stride-2 stems (3 input channels), SqueezeNet's 7x7/2 and 3x3 expand layers, EffNet's
//! 2x1 stride [1, 2] conv; any kernel size, stride, padding and dilation. This f32x4 kernel is the
//! baseline path; on x86-64 with AVX2 or AVX-512, `direct_wide.rs` takes the same nodes.
//!
//! ```text
//! Direct::new(c: &Conv, input: Buf, out: Buf, weight: &[f32], bias: Option<&[f32]>,
//!             epilogue: Epilogue, post: Option<(&[f32], &[f32])>, pack: &mut Packer) -> Direct
//! ```
//!
//! computes `out = act(conv(input) + bias + residual) * scale + shift` (see [`Epilogue`]), with
//! `weight` in PyTorch's layout `[Cout][Cin][kh][kw]`, `bias`, `scale` and `shift` `[Cout]`.
//! `input`, `out` and the residual may be channel slices of wider buffers (`stride > c`): the
//! kernel reads and writes only their channels. The output must not overlap the input or the
//! residual.
//!
//! Output channels are taken in blocks of 8 (two f32x4 accumulators per output pixel), and
//! `PIXELS` output pixels of a row are computed together: a register tile of `2 * PIXELS`
//! accumulators. Each step `(kh, kw, cin)` loads the block's two weight vectors and, per pixel,
//! broadcasts one input value into two fmas. A work item is one output row `(n, y)`; within it
//! the channel blocks are outer and the columns inner, interior columns in a loop without bounds
//! checks, border columns unrolled with only their in-bounds taps. Rows of the window in the
//! padding point at a zero row (`row_pointers` in `window.rs`).
//!
//! Weights are packed `[Cout / 8 rounded up][kh][kw][Cin][8]`, zero padded, so the last, partial
//! block computes its padded lanes from zeros and stores only the real ones. The bias is packed
//! `[Cout rounded up to 8]`, the post affine `[scale; Cout rounded up][shift; Cout rounded up]`.

use super::window::{
    at, barrier, finish, interior, mem, opaque_false, pack_bias, pack_post, pixel_row, row_pointers, Epilogue,
};
use super::{Kernel, Packer};
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Conv, Hw, Pad};
use cranelift_codegen::ir::{types::Type, InstBuilder, Value};
use cranelift_frontend::Variable;

/// Output pixels of the register tile.
const PIXELS: usize = 4;
/// Output channels of a block.
const BLOCK: usize = 8;
/// Input channels above which the `cin` steps run in a loop (`CIN_STEP` per iteration) instead of
/// being unrolled.
const CIN_UNROLL: usize = 16;
const CIN_STEP: i64 = 4;

pub struct Direct {
    input: Buf,
    out: Buf,
    kernel: Hw,
    stride: Hw,
    pad: Pad,
    dilation: Hw,
    /// Packed weights `[blocks][kh][kw][cin][8]`.
    weights: usize,
    /// Packed bias `[blocks * 8]`.
    bias: Option<usize>,
    /// Packed post affine `[scale; blocks * 8][shift; blocks * 8]`.
    post: Option<usize>,
    /// A zero row of `input.w * input.stride` elements.
    zero: usize,
    epilogue: Epilogue,
}

impl Direct {
    /// `weight` is in PyTorch's layout `[Cout][Cin][kh][kw]`, `bias` `[Cout]`, `post` the
    /// per-output-channel `(scale, shift)` applied after the activation. `c.groups` must be 1;
    /// `input`, `out` and the residual may have a pixel stride larger than their channel count.
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
    ) -> Direct {
        assert!(c.groups == 1 && out.c == c.out_channels, "not a dense convolution");
        epilogue.check(&out);
        let (cin, cout) = (input.c, c.out_channels);
        let (kh, kw) = (c.kernel.0, c.kernel.1);
        let blocks = cout.div_ceil(BLOCK);
        let k = kh * kw * cin;
        let mut packed = vec![0.0f32; blocks * k * BLOCK];
        for o in 0..cout {
            let (b, lane) = (o / BLOCK, o % BLOCK);
            for ci in 0..cin {
                for i in 0..kh {
                    for j in 0..kw {
                        let step = (i * kw + j) * cin + ci;
                        packed[(b * k + step) * BLOCK + lane] = weight[((o * cin + ci) * kh + i) * kw + j];
                    }
                }
            }
        }
        let weights = pack.push(&packed);
        let bias = pack_bias(bias, cout, blocks * BLOCK, pack);
        let post = pack_post(post, cout, blocks * BLOCK, pack);
        let zero = pack.push(&vec![0.0; (input.w * input.stride).max(1)]);
        Direct {
            input,
            out,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            dilation: c.dilation,
            weights,
            bias,
            post,
            zero,
            epilogue,
        }
    }

    /// Elements from a packed scale to its shift: the output channels rounded up to blocks.
    fn post_stride(&self) -> usize {
        self.out.c.div_ceil(BLOCK) * BLOCK
    }

    /// Steps per output channel block: `kh * kw * cin`.
    fn steps(&self) -> usize {
        self.kernel.0 * self.kernel.1 * self.input.c
    }
}

/// One channel block's sweep: byte addresses with the block's channel offset applied.
struct Block {
    /// Input pixel `(n, iy_i, 0)` (or the zero row) for each kernel row `i`.
    rows: Vec<Value>,
    /// Output pixel `(n, y, 0)`, channel `8 * block`.
    out: Value,
    residual: Option<Value>,
    /// The block's packed weights, step 0.
    weights: Value,
    bias: [Value; 2],
    /// The packed weights buffer plus the block's channel offset (for the bias and post affine).
    channels: Value,
    /// Real output channels of the block (8 except in the last block).
    lanes: usize,
}

impl Kernel for Direct {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }

    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.steps()
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let never = opaque_false(e, end);
        e.for_range(begin, end, 1, |e, item| {
            let oh = self.out.h as i64;
            let n = e.b.ins().sdiv_imm_s(item, oh);
            let y = e.b.ins().srem_imm_s(item, oh);
            let out_row = pixel_row(e, &self.out, item);
            let res_row = self.epilogue.residual.map(|r| pixel_row(e, &r, item));
            self.row(e, never, (n, y), out_row, res_row);
        });
    }
}

impl Direct {
    /// Emits output row `y` of image `n` (both run-time values, the row inside the output) at
    /// byte address `out_row`, reading the input from the arena: what a fused block's dense
    /// first stage computes into its ring. `never` is a condition false at run time that the
    /// optimizer cannot decide ([`opaque_false`]). The kernel must have no residual.
    pub fn emit_row(&self, e: &mut Emit, never: Value, n: Value, y: Value, out_row: Value) {
        assert!(self.epilogue.residual.is_none(), "a row into a ring has no residual");
        self.row(e, never, (n, y), out_row, None);
    }

    fn row(&self, e: &mut Emit, never: Value, (n, y): (Value, Value), out_row: Value, res_row: Option<Value>) {
        let cout = self.out.c;
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
        let full = (cout / BLOCK) as i64;
        if full > 0 {
            e.for_const(0, full, |e, b| {
                self.block(e, never, &rows, out_row, res_row, b, BLOCK);
            });
        }
        if !cout.is_multiple_of(BLOCK) {
            let b = e.int(full);
            self.block(e, never, &rows, out_row, res_row, b, cout % BLOCK);
        }
    }

    /// Sweeps output row `(n, y)` for channel block `b`, of which `lanes` channels are real.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        e: &mut Emit,
        never: Value,
        rows: &[Value],
        out_row: Value,
        res_row: Option<Value>,
        b: Value,
        lanes: usize,
    ) {
        let cb = e.b.ins().imul_imm_s(b, (BLOCK * 4) as i64);
        let out = e.b.ins().iadd(out_row, cb);
        let residual = res_row.map(|r| e.b.ins().iadd(r, cb));
        let wb = e.b.ins().imul_imm_s(b, (self.steps() * BLOCK * 4) as i64);
        let wb = e.b.ins().iadd(e.weights, wb);
        let weights = e.b.ins().iadd_imm_s(wb, self.weights as i64 * 4);
        let channels = e.b.ins().iadd(e.weights, cb);
        let bias = match self.bias {
            Some(off) => {
                let (a, o) = at(e, channels, off as i64 * 4);
                let lo = e.b.ins().load(F32X4, mem(), a, o);
                let hi = e.b.ins().load(F32X4, mem(), a, o + 16);
                [lo, hi]
            }
            None => {
                let z = e.splat(0.0);
                [z, z]
            }
        };
        let blk = Block {
            rows: rows.to_vec(),
            out,
            residual,
            weights,
            channels,
            bias,
            lanes,
        };
        let ow = self.out.w as i64;
        let (x0, x1) = interior(
            self.out.w,
            self.input.w,
            self.kernel.1,
            self.stride.1,
            self.dilation.1,
            self.pad.left,
        );
        let p = PIXELS as i64;
        let left: Vec<i64> = (0..x0).collect();
        for xs in left.chunks(PIXELS) {
            self.pixels(e, never, &blk, None, xs);
        }
        let loop_end = x0 + (x1 - x0) / p * p;
        if loop_end > x0 {
            let (s, t) = (e.int(x0), e.int(loop_end));
            let in_step = self.stride.1 as i64 * self.input.stride as i64 * 4;
            let out_step = self.out.stride as i64 * 4;
            let res_step = self.epilogue.residual.map(|r| r.stride as i64 * 4);
            let xs: Vec<i64> = (0..p).collect();
            e.for_range(s, t, p, |e, x| {
                let si = e.b.ins().imul_imm_s(x, in_step);
                let so = e.b.ins().imul_imm_s(x, out_step);
                let sr = res_step.map(|step| e.b.ins().imul_imm_s(x, step));
                self.pixels(e, never, &blk, Some((si, so, sr)), &xs);
            });
        }
        let right: Vec<i64> = (loop_end..ow).collect();
        for xs in right.chunks(PIXELS) {
            self.pixels(e, never, &blk, None, xs);
        }
    }

    /// Computes and stores output columns `xs` of a channel block. With `shift` (input and output
    /// byte offsets of the loop's column), `xs` are relative to that column and lie in the
    /// interior; without it they are absolute and only their in-bounds taps are emitted.
    fn pixels(
        &self,
        e: &mut Emit,
        never: Value,
        blk: &Block,
        shift: Option<(Value, Value, Option<Value>)>,
        xs: &[i64],
    ) {
        let (kh, kw, cin) = (self.kernel.0 as i64, self.kernel.1 as i64, self.input.c as i64);
        let (sw, dw, pl) = (self.stride.1 as i64, self.dilation.1 as i64, self.pad.left as i64);
        let iw = self.input.w as i64;
        let is4 = self.input.stride as i64 * 4;
        let bytes = (BLOCK * 4) as i64;
        let rows: Vec<Value> = match shift {
            Some((s, _, _)) => blk.rows.iter().map(|&r| e.b.ins().iadd(r, s)).collect(),
            None => blk.rows.clone(),
        };
        let accs: Vec<[Variable; 2]> = xs
            .iter()
            .map(|_| {
                [0, 1].map(|h| {
                    let v = e.b.declare_var(F32X4);
                    e.b.def_var(v, blk.bias[h]);
                    v
                })
            })
            .collect();
        let vars: Vec<(Variable, Type)> = accs.iter().flatten().map(|&a| (a, F32X4)).collect();
        // One step: weights of step `first + ci` at `w`, inputs at `x + col * is4 + ci * 4`.
        let step = |e: &mut Emit, w: Value, wo: i64, x: Value, cols: &[(usize, i64)], ci: i64| {
            let w0 = e.b.ins().load(F32X4, mem(), w, wo as i32);
            let w1 = e.b.ins().load(F32X4, mem(), w, (wo + 16) as i32);
            for &(u, col) in cols {
                let v = e.b.ins().load(F32, mem(), x, (col * is4 + ci * 4) as i32);
                let s = e.b.ins().splat(F32X4, v);
                for (h, w) in [w0, w1].into_iter().enumerate() {
                    let a = e.b.use_var(accs[u][h]);
                    let a = e.b.ins().fma(s, w, a);
                    e.b.def_var(accs[u][h], a);
                }
            }
            barrier(e, never, &vars);
        };
        for i in 0..kh {
            for j in 0..kw {
                let cols: Vec<(usize, i64)> = xs
                    .iter()
                    .enumerate()
                    .map(|(u, &x)| (u, x * sw - pl + j * dw))
                    .filter(|&(_, col)| shift.is_some() || (0..iw).contains(&col))
                    .collect();
                if cols.is_empty() {
                    continue;
                }
                let first = (i * kw + j) * cin;
                let row = rows[i as usize];
                if cin as usize <= CIN_UNROLL {
                    for ci in 0..cin {
                        step(e, blk.weights, (first + ci) * bytes, row, &cols, ci);
                    }
                } else {
                    let looped = cin / CIN_STEP * CIN_STEP;
                    let (s, t) = (e.int(0), e.int(looped));
                    e.for_range(s, t, CIN_STEP, |e, c0| {
                        let wo = e.b.ins().imul_imm_s(c0, bytes);
                        let w = e.b.ins().iadd(blk.weights, wo);
                        let xo = e.b.ins().ishl_imm_s(c0, 2);
                        let x = e.b.ins().iadd(row, xo);
                        for ci in 0..CIN_STEP {
                            step(e, w, (first + ci) * bytes, x, &cols, ci);
                        }
                    });
                    for ci in looped..cin {
                        step(e, blk.weights, (first + ci) * bytes, row, &cols, ci);
                    }
                }
            }
        }
        let os4 = self.out.stride as i64 * 4;
        let rs4 = self.epilogue.residual.map_or(0, |r| r.stride as i64 * 4);
        let (out, residual) = match shift {
            Some((_, so, sr)) => (
                e.b.ins().iadd(blk.out, so),
                blk.residual.zip(sr).map(|(r, sr)| e.b.ins().iadd(r, sr)),
            ),
            None => (blk.out, blk.residual),
        };
        // The post affine's scales and shifts of the block's two halves.
        let post: Option<[(Value, Value); 2]> = self.post.map(|p| {
            let (a, o) = at(e, blk.channels, p as i64 * 4);
            let shift = (self.post_stride() * 4) as i32;
            [0, 16].map(|h| {
                let scale = e.b.ins().load(F32X4, mem(), a, o + h);
                let shift = e.b.ins().load(F32X4, mem(), a, o + shift + h);
                (scale, shift)
            })
        });
        for (acc, &x) in accs.iter().zip(xs) {
            for (h, &var) in acc.iter().enumerate() {
                let v = e.b.use_var(var);
                let off = (x * os4) as i32 + 16 * h as i32;
                let roff = (x * rs4) as i32 + 16 * h as i32;
                let lanes = blk.lanes.saturating_sub(4 * h).min(4);
                if lanes == 4 {
                    let post = post.map(|p| p[h]);
                    finish(e, &self.epilogue, v, residual.map(|r| (r, roff)), post, (out, off));
                } else {
                    for l in 0..lanes {
                        let s = e.b.ins().extractlane(v, l as u8);
                        let post = post.map(|p| {
                            let (scale, shift) = p[h];
                            let scale = e.b.ins().extractlane(scale, l as u8);
                            let shift = e.b.ins().extractlane(shift, l as u8);
                            (scale, shift)
                        });
                        let (o, ro) = (off + 4 * l as i32, roff + 4 * l as i32);
                        finish(e, &self.epilogue, s, residual.map(|r| (r, ro)), post, (out, o));
                    }
                }
            }
        }
    }
}
