//! Helpers shared by the sliding-window kernels (`depthwise.rs`, `direct.rs`, `pool.rs`): the epilogue (also
//! used by the scalar convolution in `conv.rs`), the scheduling barrier that keeps Cranelift's
//! optimizer from moving work across loop steps, the pointers to the input rows a window reads,
//! and the range of interior columns.

use super::Packer;
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Activation, Conv};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types::Type, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;

/// Element-wise work applied to the accumulators before they are stored:
/// `out = act(conv + bias + residual)`.
///
/// Taken by `depthwise::Depthwise::new`, `direct::Direct::new` and `conv::Scalar::new`, which
/// also take an optional post-activation affine, `post: Option<(&[f32], &[f32])>` (`scale`,
/// `shift`, one value per output channel; a batchnorm that follows the activation), and pack it
/// with their weights: the stored value is then `act(conv + bias + residual) * scale + shift`
/// (one fma).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Epilogue {
    pub act: Option<Activation>,
    /// A tensor of the output's shape added before the activation. It is read with its own
    /// pixel stride, so it may be a channel slice of a wider buffer; it must not overlap the
    /// output.
    pub residual: Option<Buf>,
}

impl Epilogue {
    /// Panics unless the residual has the output's shape.
    pub(crate) fn check(&self, out: &Buf) {
        if let Some(r) = self.residual {
            assert!(
                (r.n, r.h, r.w, r.c) == (out.n, out.h, out.w, out.c),
                "the residual does not have the output's shape"
            );
        }
    }
}

/// Packs a bias of `channels` values, zero padded to `padded`, and returns its offset.
pub(crate) fn pack_bias(bias: Option<&[f32]>, channels: usize, padded: usize, pack: &mut Packer) -> Option<usize> {
    bias.map(|b| {
        let mut v = b[..channels].to_vec();
        v.resize(padded, 0.0);
        pack.push(&v)
    })
}

/// Packs a post-activation affine as `[scale; padded][shift; padded]`, zero padded, and returns
/// the offset of the scales (the shifts follow `padded` elements later).
pub(crate) fn pack_post(
    post: Option<(&[f32], &[f32])>,
    channels: usize,
    padded: usize,
    pack: &mut Packer,
) -> Option<usize> {
    post.map(|(scale, shift)| {
        assert!(
            scale.len() == channels && shift.len() == channels,
            "the post affine has one scale and one shift per output channel"
        );
        let mut v = vec![0.0f32; 2 * padded];
        v[..channels].copy_from_slice(scale);
        v[padded..padded + channels].copy_from_slice(shift);
        pack.push(&v)
    })
}

/// Border columns above which a kernel is not generated (the scalar convolution takes the node):
/// they are unrolled, so their number bounds the code size.
pub(crate) const MAX_BORDER_COLUMNS: i64 = 64;

/// Whether the window kernels (`Depthwise`, `direct::Direct`) can take convolution `c` from
/// `input` to `out`: their border columns are unrolled, so a very wide padded border is left to
/// `conv::Scalar`, which takes the same constructor arguments.
pub fn fits(c: &Conv, input: &Buf, out: &Buf) -> bool {
    let (x0, x1) = interior(out.w, input.w, c.kernel.1, c.stride.1, c.dilation.1, c.pad.left);
    x0 + (out.w as i64 - x1) <= MAX_BORDER_COLUMNS
}

/// Flags of every arena and weights access: in bounds by construction.
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// `base + bytes` as an address and an immediate offset for loads and stores: the offset itself
/// when it is below 1 GiB (so that offsets within a kernel's own packed data can be added to it
/// without overflowing 32 bits), otherwise an add.
pub(crate) fn at(e: &mut Emit, base: Value, bytes: i64) -> (Value, i32) {
    if (0..1 << 30).contains(&bytes) {
        (base, bytes as i32)
    } else {
        (e.b.ins().iadd_imm_s(base, bytes), 0)
    }
}

/// A condition that is false whenever the kernel runs (`end < 0`) but that the optimizer cannot
/// decide.
pub(crate) fn opaque_false(e: &mut Emit, end: Value) -> Value {
    let zero = e.int(0);
    e.b.ins().icmp(IntCC::SignedLessThan, end, zero)
}

/// Zero of an f32, f32x4 or integer type.
pub(crate) fn zero_of(e: &mut Emit, ty: Type) -> Value {
    if ty == F32X4 {
        e.splat(0.0)
    } else if ty == F32 {
        e.f32(0.0)
    } else {
        e.b.ins().iconst(ty, 0)
    }
}

/// Ends the current block with a branch on `never` whose taken side redefines `vars` as zero,
/// and continues in a block both sides join.
///
/// At `opt_level=speed` the mid-end places each pure instruction (an fma) just before its first
/// side-effecting use, so in an unrolled sequence of loads and fmas every fma would sink below all
/// the loads and the loaded values would spill. Values that flow into a join block through two
/// different definitions must be computed before the branch, which keeps each step's fmas next to
/// its loads.
pub(crate) fn barrier(e: &mut Emit, never: Value, vars: &[(Variable, Type)]) {
    let cold = e.b.create_block();
    let next = e.b.create_block();
    e.b.ins().brif(never, cold, &[], next, &[]);
    e.b.switch_to_block(cold);
    e.b.set_cold_block(cold);
    for &(v, ty) in vars {
        let z = zero_of(e, ty);
        e.b.def_var(v, z);
    }
    e.b.ins().jump(next, &[]);
    e.b.switch_to_block(next);
}

/// `if cond { then() } else { otherwise() }`.
pub(crate) fn if_else(e: &mut Emit, cond: Value, then: impl FnOnce(&mut Emit), otherwise: impl FnOnce(&mut Emit)) {
    let (a, b, done) = (e.b.create_block(), e.b.create_block(), e.b.create_block());
    e.b.ins().brif(cond, a, &[], b, &[]);
    e.b.switch_to_block(a);
    then(e);
    e.b.ins().jump(done, &[]);
    e.b.switch_to_block(b);
    otherwise(e);
    e.b.ins().jump(done, &[]);
    e.b.switch_to_block(done);
}

/// Returns copies of `vals` that are computed here, before any loop that follows: the mid-end
/// would otherwise place pure address arithmetic at its first use, inside the innermost loop.
pub(crate) fn pin(e: &mut Emit, never: Value, vals: &[Value]) -> Vec<Value> {
    let vars: Vec<(Variable, Type)> = vals
        .iter()
        .map(|&v| {
            let ty = e.b.func.dfg.value_type(v);
            let var = e.b.declare_var(ty);
            e.b.def_var(var, v);
            (var, ty)
        })
        .collect();
    barrier(e, never, &vars);
    vars.iter().map(|&(v, _)| e.b.use_var(v)).collect()
}

/// Byte address of pixel `(row * buf.w)` of `buf`, i.e. the first pixel of output row `row`
/// (`row = n * h + y`).
pub(crate) fn pixel_row(e: &mut Emit, buf: &Buf, row: Value) -> Value {
    let off = e.b.ins().imul_imm_s(row, (buf.w * buf.stride * 4) as i64);
    let p = e.b.ins().iadd(e.arena, off);
    e.b.ins().iadd_imm_s(p, buf.offset as i64 * 4)
}

/// For each kernel row `i` of output row `(n, y)`, the byte address of input pixel
/// `(n, y * stride - pad + i * dilation, 0)`, or of the zero row at element `zero` of the
/// weights when that row lies in the padding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_pointers(
    e: &mut Emit,
    input: &Buf,
    n: Value,
    y: Value,
    kh: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    zero: usize,
) -> Vec<Value> {
    let zero = e.b.ins().iadd_imm_s(e.weights, zero as i64 * 4);
    let first = e.b.ins().imul_imm_s(n, input.h as i64);
    (0..kh)
        .map(|i| {
            let sy = e.b.ins().imul_imm_s(y, stride as i64);
            let iy = e.b.ins().iadd_imm_s(sy, (i * dilation) as i64 - pad as i64);
            let ok = e.in_bounds(iy, input.h as i64);
            let r = e.b.ins().iadd(first, iy);
            let real = pixel_row(e, input, r);
            e.b.ins().select(ok, real, zero)
        })
        .collect()
}

/// Output columns `x0..x1` whose whole window lies inside the input: `x * stride - pad >= 0` and
/// `x * stride - pad + (k - 1) * dilation < in_w`. Clamped so that `0 <= x0 <= x1 <= out_w`.
pub(crate) fn interior(out_w: usize, in_w: usize, k: usize, stride: usize, dilation: usize, pad: usize) -> (i64, i64) {
    let (ow, iw, s) = (out_w as i64, in_w as i64, stride as i64);
    let x0 = (pad.div_ceil(stride) as i64).min(ow);
    let last = iw - 1 - (k as i64 - 1) * dilation as i64 + pad as i64;
    let x1 = if last < 0 { 0 } else { last / s + 1 };
    (x0, x1.clamp(x0, ow))
}

/// Applies the epilogue to `v` (f32 or f32x4) and stores it at `out` (address, byte offset):
/// `residual` is where the residual's matching element is, `post` the loaded `(scale, shift)` of
/// the post-activation affine (of `v`'s type).
pub(crate) fn finish(
    e: &mut Emit,
    ep: &Epilogue,
    v: Value,
    residual: Option<(Value, i32)>,
    post: Option<(Value, Value)>,
    out: (Value, i32),
) {
    let ty = e.b.func.dfg.value_type(v);
    let v = match residual {
        Some((r, off)) => {
            let rv = e.b.ins().load(ty, mem(), r, off);
            e.b.ins().fadd(v, rv)
        }
        None => v,
    };
    let v = e.activate(v, ep.act);
    let v = match post {
        Some((scale, shift)) => e.b.ins().fma(v, scale, shift),
        None => v,
    };
    e.b.ins().store(mem(), v, out.0, out.1);
}
