//! Wide direct convolution for dense convolutions (`groups == 1`) on x86-64: the same nodes as
//! `direct.rs` (any kernel size, stride, padding and dilation), computed by Rust `std::arch`
//! register tiles for AVX-512F or AVX2 + FMA, one call per output row from the Cranelift loop.
//!
//! ```text
//! DirectWide::new(c: &Conv, input: Buf, out: Buf, weight: &[f32], bias: Option<&[f32]>,
//!                 epilogue: Epilogue, post: Option<(&[f32], &[f32])>, pack: &mut Packer,
//!                 level: Level) -> DirectWide
//! ```
//!
//! computes what `direct::Direct::new` computes with the same arguments,
//! `out = act(conv(input) + bias + residual) * scale + shift`, for `level` [`Level::Avx512`] or
//! [`Level::Avx2`] (the f32x4 Cranelift kernel stays the baseline path). `input`, `out` and the
//! residual may be channel slices of wider buffers (SqueezeNet's expand convolutions write into
//! halves of the concat buffer); the output must not overlap the input or the residual.
//!
//! # The register tile
//!
//! An implicit matrix multiply: output channels are cut into blocks of 64 channels (four zmm
//! vectors) for AVX-512 or 16 (two ymm vectors) for AVX2, the last block keeping only the vectors
//! it needs, except that on AVX2 the last 24 channels form one block of three vectors (see
//! `block_width`); the output pixels of a row are cut into tiles of as many pixels as the
//! registers hold for the block's vector count (6 pixels x 4 vectors or 8 x 1-3 for AVX-512, 6 x
//! 1-2 or 3 x 3 for AVX2: at most 24, 12 or 9 accumulators). A row is split into tiles of
//! balanced sizes (13 pixels in tiles of at most 8 are 7 + 6), so narrow rows do not end in a
//! one-pixel tile. Each step `(kh, kw, cin)` loads the block's weight vectors and, per pixel,
//! broadcasts one input value into one FMA per vector. The bias starts the accumulators; the
//! residual, the activation and the post affine are applied to them in registers, and the last
//! vector of a narrow block is stored (and its residual loaded) with a lane mask.
//!
//! Weights are packed per block `[kh][kw][cin][vectors * lanes]`, zero padded past the real
//! channels, blocks one after the other: the order the tile reads them. The bias and the post
//! affine are packed `[Cout rounded up to a vector]` (scales, then shifts).
//!
//! # Borders
//!
//! A kernel row whose input row lies in the padding is skipped for the whole output row. Within a
//! row, a tile whose windows all lie inside the input reads each pixel's taps directly: when the
//! input is dense (`stride == c`) and not dilated, the `kw * cin` values of one kernel row are
//! contiguous and run as one stretch of steps. A tile with a border pixel takes the taps one by
//! one, reading a packed zero pixel for those outside the input (and skipping a tap that every
//! pixel of the tile misses), so nothing outside the input is read.
//!
//! Every output element is computed by the same sequence of operations (the bias, one FMA per
//! step in the packed order, the epilogue) whatever the range of rows a call computes, because a
//! row's tiles depend only on the row's width: results do not depend on how the rows are split
//! between threads.
//!
//! # Calling convention
//!
//! `extern "C" fn(geometry, weights, input, y, out, residual)`, one call per output row `(n, y)`:
//! `geometry` points at the packed [`Geometry`] (shapes, strides, packed offsets, activation),
//! `weights` at the packed weights buffer (the offsets in the geometry are relative to it),
//! `input` at pixel `(n, 0, 0)` of the input at its first channel, `out` at pixel `(n, y, 0)` of
//! the output, `residual` at pixel `(n, y, 0)` of the residual or null.

use super::window::{pack_bias, pack_post, pixel_row, Epilogue};
use super::{Kernel, Packer};
use crate::codegen::emit::Emit;
use crate::codegen::host::{HostFn, Ty};
use crate::codegen::layout::Buf;
use crate::codegen::Level;
use crate::ir::op::{Activation, Conv};
use cranelift_codegen::ir::{InstBuilder, Value};

pub(super) const ACT_NONE: i64 = 0;
pub(super) const ACT_RELU: i64 = 1;
pub(super) const ACT_RELU6: i64 = 2;
pub(super) const ACT_LEAKY: i64 = 3;
/// The epilogue parameter of a row function's tiles that follows the geometry at run time.
pub(super) const ANY_EPILOGUE: i64 = -1;

/// What the row function needs to know about a convolution, packed with its weights as the bit
/// patterns of `i64` words (see [`Geometry::words`]). Offsets are elements of the packed weights
/// buffer, `-1` for an absent part.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    pub in_h: i64,
    pub in_w: i64,
    /// Elements between consecutive input pixels.
    pub in_stride: i64,
    pub cin: i64,
    pub kh: i64,
    pub kw: i64,
    pub sh: i64,
    pub sw: i64,
    pub dh: i64,
    pub dw: i64,
    pub pad_top: i64,
    pub pad_left: i64,
    pub out_w: i64,
    pub out_stride: i64,
    pub cout: i64,
    pub res_stride: i64,
    /// `ACT_*`.
    pub act: i64,
    /// The leaky slope's `f32` bits.
    pub slope: i64,
    pub weights: i64,
    pub bias: i64,
    /// Scales at `post`, shifts at `post + post_stride`.
    pub post: i64,
    pub post_stride: i64,
    /// `cin` zeros, read for the taps that fall in the padding.
    pub zero: i64,
    /// Rows of a ring the input rows wrap around in (input row `iy` is row `iy mod ring`, and
    /// every row is present), or 0. Only the depthwise row function reads rings.
    pub ring: i64,
}

/// `i64` fields of [`Geometry`].
const GEOMETRY_WORDS: usize = std::mem::size_of::<Geometry>() / 8;

impl Geometry {
    fn fields(&self) -> [i64; GEOMETRY_WORDS] {
        [
            self.in_h,
            self.in_w,
            self.in_stride,
            self.cin,
            self.kh,
            self.kw,
            self.sh,
            self.sw,
            self.dh,
            self.dw,
            self.pad_top,
            self.pad_left,
            self.out_w,
            self.out_stride,
            self.cout,
            self.res_stride,
            self.act,
            self.slope,
            self.weights,
            self.bias,
            self.post,
            self.post_stride,
            self.zero,
            self.ring,
        ]
    }

    /// The shapes, strides and epilogue of convolution `c` from `input` to `out`; the packed
    /// offsets are left at zero.
    pub(super) fn of(c: &Conv, input: &Buf, out: &Buf, epilogue: &Epilogue) -> Geometry {
        let (act, slope) = act_code(epilogue.act);
        Geometry {
            in_h: input.h as i64,
            in_w: input.w as i64,
            in_stride: input.stride as i64,
            cin: input.c as i64,
            kh: c.kernel.0 as i64,
            kw: c.kernel.1 as i64,
            sh: c.stride.0 as i64,
            sw: c.stride.1 as i64,
            dh: c.dilation.0 as i64,
            dw: c.dilation.1 as i64,
            pad_top: c.pad.top as i64,
            pad_left: c.pad.left as i64,
            out_w: out.w as i64,
            out_stride: out.stride as i64,
            cout: out.c as i64,
            res_stride: epilogue.residual.map_or(0, |r| r.stride as i64),
            act,
            slope: i64::from(slope.to_bits()),
            ..Geometry::default()
        }
    }

    /// The geometry with its parameters: the weights at element `weights` of the packed data, and
    /// the bias and the post affine packed here, one value per output channel zero padded to
    /// `padded` (`-1` for an absent part).
    pub(super) fn with_params(
        self,
        weights: usize,
        bias: Option<&[f32]>,
        post: Option<(&[f32], &[f32])>,
        padded: usize,
        pack: &mut Packer,
    ) -> Geometry {
        let channels = self.cout as usize;
        let offset = |o: Option<usize>| o.map_or(-1, |o| o as i64);
        Geometry {
            weights: weights as i64,
            bias: offset(pack_bias(bias, channels, padded, pack)),
            post: offset(pack_post(post, channels, padded, pack)),
            post_stride: padded as i64,
            ..self
        }
    }

    /// The geometry as packed data: each field's little-endian bytes as two `f32` bit patterns,
    /// which is how the `#[repr(C)]` struct lies in memory on x86-64.
    pub(super) fn words(&self) -> Vec<f32> {
        pack_words(&self.fields())
    }
}

/// The `ACT_*` code of an activation and the leaky slope (0 for the others), as the row
/// functions read them from their packed geometry.
pub(super) fn act_code(act: Option<Activation>) -> (i64, f32) {
    match act {
        None => (ACT_NONE, 0.0),
        Some(Activation::Relu) => (ACT_RELU, 0.0),
        Some(Activation::Relu6) => (ACT_RELU6, 0.0),
        Some(Activation::LeakyRelu { slope }) => (ACT_LEAKY, slope),
    }
}

/// `i64` fields as packed data: each one's little-endian bytes as two `f32` bit patterns, which
/// is how a `#[repr(C)]` struct of `i64` fields lies in memory on x86-64.
pub(super) fn pack_words(fields: &[i64]) -> Vec<f32> {
    fields
        .iter()
        .flat_map(|v| {
            let b = v.to_le_bytes();
            [[b[0], b[1], b[2], b[3]], [b[4], b[5], b[6], b[7]]].map(|w| f32::from_bits(u32::from_le_bytes(w)))
        })
        .collect()
}

/// The register tile of one instruction set.
#[derive(Clone, Copy)]
struct Wide {
    /// f32 lanes of a vector.
    lanes: usize,
    /// Vectors of a full channel block.
    vectors: usize,
    /// Host function of the row.
    host: &'static HostFn,
}

impl Wide {
    /// The tile for `level` (AVX2 or AVX-512).
    fn of(level: Level) -> Wide {
        match level {
            Level::Avx512 => Wide {
                lanes: 16,
                vectors: 4,
                host: &AVX512,
            },
            Level::Avx2 => Wide {
                lanes: 8,
                vectors: 2,
                host: &AVX2,
            },
            Level::Baseline => panic!("the wide direct convolution needs AVX2 or AVX-512"),
        }
    }
}

/// Most pixels of a tile of `vectors` vectors of `lanes` lanes: as many as keep the
/// accumulators, the weight vectors and a broadcast within the vector registers.
const fn pixels(lanes: usize, vectors: usize) -> usize {
    match (lanes, vectors) {
        (16, 4) => 6,
        (16, _) => 8,
        (_, 3) => 3,
        _ => 6,
    }
}

/// Output channels of the block that starts with `left` channels left, for vectors of `lanes`
/// lanes and full blocks of `vectors` vectors. On AVX2, the last 24 channels are one block of
/// three vectors (tiles of 3 pixels, 9 accumulators) instead of a block of 16 and one of 8,
/// whose tiles have 6 accumulators, too few to hide the latency of their multiply-adds, and
/// which reads the input a second time. The 24-channel stems of ShuffleNet and ShuffleNetV2
/// went from 0.245-0.252 to 0.205-0.208 ms (best of four to five profiles); with tiles of 4
/// pixels (12 accumulators, 16 registers in all) they spilled and took 0.37 ms.
const fn block_width(left: usize, lanes: usize, vectors: usize) -> usize {
    if lanes == 8 && vectors == 2 && left == 24 {
        24
    } else if left < lanes * vectors {
        left
    } else {
        lanes * vectors
    }
}

/// Sizes of the tiles a row of `width` pixels is split into, at most `most` pixels each, as
/// equal as possible (the larger ones first).
pub fn tiles(width: usize, most: usize) -> impl Iterator<Item = usize> {
    let count = width.div_ceil(most.max(1));
    let (base, extra) = (
        width.checked_div(count).unwrap_or(0),
        width.checked_rem(count).unwrap_or(0),
    );
    (0..count).map(move |t| base + usize::from(t < extra))
}

pub struct DirectWide {
    input: Buf,
    out: Buf,
    /// Multiply-accumulates per output element: `kh * kw * cin`.
    steps: usize,
    /// Packed [`Geometry`].
    geometry: usize,
    residual: Option<Buf>,
    wide: Wide,
}

impl DirectWide {
    /// `weight` is in PyTorch's layout `[Cout][Cin][kh][kw]`, `bias` `[Cout]`, `post` the
    /// per-output-channel `(scale, shift)` applied after the activation. `c.groups` must be 1;
    /// `input`, `out` and the residual may have a pixel stride larger than their channel count.
    /// `level` is AVX2 or AVX-512 and this CPU runs it.
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
        level: Level,
    ) -> DirectWide {
        assert!(c.groups == 1 && out.c == c.out_channels, "not a dense convolution");
        epilogue.check(&out);
        let wide = Wide::of(level);
        let (cin, cout) = (input.c, c.out_channels);
        let (kh, kw) = (c.kernel.0, c.kernel.1);
        let k = kh * kw * cin;
        let lanes = wide.lanes;
        let padded = cout.div_ceil(lanes) * lanes;
        let mut packed = vec![0.0f32; k * padded];
        let mut start = 0;
        let mut c0 = 0;
        while c0 < cout {
            let channels = block_width(cout - c0, lanes, wide.vectors);
            let width = channels.div_ceil(lanes) * lanes;
            for o in c0..(c0 + width).min(cout) {
                for ci in 0..cin {
                    for i in 0..kh {
                        for j in 0..kw {
                            let step = (i * kw + j) * cin + ci;
                            packed[start + step * width + o - c0] = weight[((o * cin + ci) * kh + i) * kw + j];
                        }
                    }
                }
            }
            start += k * width;
            c0 += channels;
        }
        let weights = pack.push(&packed);
        let g = Geometry::of(c, &input, &out, &epilogue).with_params(weights, bias, post, padded, pack);
        let zero = pack.push(&vec![0.0; cin.max(1)]);
        let g = Geometry { zero: zero as i64, ..g };
        let geometry = pack.push(&g.words());
        DirectWide {
            input,
            out,
            steps: k,
            geometry,
            residual: epilogue.residual,
            wide,
        }
    }
}

impl DirectWide {
    /// Emits a call computing output row `y` of image `image` (run-time values inside the
    /// output) at byte address `out_row`, reading the input from the arena: what a fused block's
    /// dense first stage computes into its ring, and a fused pooling's rows. The kernel must have
    /// no residual.
    pub fn emit_row(&self, e: &mut Emit, image: Value, y: Value, out_row: Value) {
        assert!(self.residual.is_none(), "a row into a ring has no residual");
        let f = e.host(self.wide.host);
        let at =
            e.b.ins()
                .imul_imm_s(image, (self.input.h * self.input.w * self.input.stride * 4) as i64);
        let input_at = e.b.ins().iadd(e.arena, at);
        let input_at = e.b.ins().iadd_imm_s(input_at, self.input.offset as i64 * 4);
        let geometry = e.b.ins().iadd_imm_s(e.weights, self.geometry as i64 * 4);
        let (weights, residual) = (e.weights, e.int(0));
        e.b.ins().call(f, &[geometry, weights, input_at, y, out_row, residual]);
    }
}

impl Kernel for DirectWide {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }

    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.steps
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        call_rows(
            e,
            (begin, end),
            self.wide.host,
            (&self.input, &self.out, self.residual),
            self.geometry,
        );
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        vec![self.wide.host]
    }
}

/// Emits a call of the row function `host` for each output row `begin..end` of a convolution
/// from `input` to `out` (with `residual`) whose geometry is packed at `geometry` (see the calling
/// convention).
pub(super) fn call_rows(
    e: &mut Emit,
    (begin, end): (Value, Value),
    host: &HostFn,
    (input, out, residual): (&Buf, &Buf, Option<Buf>),
    geometry: usize,
) {
    let f = e.host(host);
    let oh = out.h as i64;
    let image = (input.h * input.w * input.stride * 4) as i64;
    e.for_range(begin, end, 1, |e, item| {
        let n = e.b.ins().sdiv_imm_s(item, oh);
        let y = e.b.ins().srem_imm_s(item, oh);
        let at = e.b.ins().imul_imm_s(n, image);
        let input_at = e.b.ins().iadd(e.arena, at);
        let input_at = e.b.ins().iadd_imm_s(input_at, input.offset as i64 * 4);
        let out_at = pixel_row(e, out, item);
        let residual_at = match residual {
            Some(r) => pixel_row(e, &r, item),
            None => e.int(0),
        };
        let geometry = e.b.ins().iadd_imm_s(e.weights, geometry as i64 * 4);
        let weights = e.weights;
        e.b.ins()
            .call(f, &[geometry, weights, input_at, y, out_at, residual_at]);
    });
}

pub(super) const ROW_PARAMS: &[Ty] = &[Ty::Ptr, Ty::Ptr, Ty::Ptr, Ty::I64, Ty::Ptr, Ty::Ptr];

row_host_fn!(
    /// The AVX-512F row function.
    AVX512,
    "netc_direct_avx512",
    Level::Avx512,
    x86::avx512::row
);

row_host_fn!(
    /// The AVX2 + FMA row function.
    AVX2,
    "netc_direct_avx2",
    Level::Avx2,
    x86::avx2::row
);

/// The row function, written once over a vector type and instantiated per instruction set by
/// [`row_function`]: each instantiation's module provides `V`, `Mask`, `LANES`, `MAX_VECTORS` and
/// the vector operations, all compiled for its target features.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::Geometry;

    /// One output row's pointers and constants, shared by its tiles.
    pub(in crate::codegen::kernels) struct Row {
        pub g: Geometry,
        /// Input pixel `(n, 0, 0)`.
        pub input: *const f32,
        /// First input row of the window of this output row (may be negative).
        pub iy0: i64,
        pub out: *mut f32,
        pub residual: *const f32,
        pub zero: *const f32,
        pub bias: *const f32,
        pub scale: *const f32,
        pub shift: *const f32,
    }

    impl Row {
        /// Reads the geometry and resolves the packed offsets.
        ///
        /// # Safety
        /// `geometry` points at a packed [`Geometry`] whose offsets lie in `weights`.
        pub(in crate::codegen::kernels) unsafe fn new(
            geometry: *const f32,
            weights: *const f32,
            input: *const f32,
            y: i64,
            out: *mut f32,
            residual: *const f32,
        ) -> Row {
            let g = std::ptr::read_unaligned(geometry as *const Geometry);
            let packed = |o: i64| {
                if o < 0 {
                    std::ptr::null()
                } else {
                    weights.wrapping_add(o as usize)
                }
            };
            Row {
                g,
                input,
                iy0: y * g.sh - g.pad_top,
                out,
                residual,
                zero: packed(g.zero),
                bias: packed(g.bias),
                scale: packed(g.post),
                shift: if g.post < 0 {
                    std::ptr::null()
                } else {
                    packed(g.post + g.post_stride)
                },
            }
        }
    }

    /// Instantiates the row function and its tiles for one instruction set.
    macro_rules! row_function {
        ($features:literal, narrower blocks: $($nv:literal),*) => {
            /// The row function (see the module documentation of `direct_wide`).
            ///
            /// # Safety
            ///
            /// The CPU runs this module's instruction set, and the pointers cover what the packed
            /// geometry describes.
            #[target_feature(enable = $features)]
            pub unsafe extern "C" fn row(
                geometry: *const f32,
                weights: *const f32,
                input: *const f32,
                y: i64,
                out: *mut f32,
                residual: *const f32,
            ) {
                let r = Row::new(geometry, weights, input, y, out, residual);
                // Without a residual or an affine, and with one of the common activations, the
                // tiles' epilogue is resolved at compile time (with a run-time epilogue of a few
                // tests per vector, a 3x3 stem over 3 channels ran 20-30% slower).
                let plain = r.residual.is_null() && r.scale.is_null();
                match (plain, r.g.act) {
                    (true, ACT_NONE) => blocks::<ACT_NONE>(&r, weights),
                    (true, ACT_RELU) => blocks::<ACT_RELU>(&r, weights),
                    (true, ACT_RELU6) => blocks::<ACT_RELU6>(&r, weights),
                    _ => blocks::<ANY_EPILOGUE>(&r, weights),
                }
            }

            /// Every channel block of the row; `EPI`: the activation of a plain epilogue, or
            /// [`ANY_EPILOGUE`].
            #[target_feature(enable = $features)]
            unsafe fn blocks<const EPI: i64>(r: &Row, weights: *const f32) {
                let g = &r.g;
                let k = (g.kh * g.kw * g.cin).max(0) as usize;
                let mut w = weights.wrapping_add(g.weights.max(0) as usize);
                let mut c0 = 0i64;
                while c0 < g.cout {
                    let lanes = block_width((g.cout - c0) as usize, LANES, MAX_VECTORS) as i64;
                    let vectors = (lanes as usize).div_ceil(LANES);
                    match vectors {
                        $($nv => block_tiles::<$nv, EPI>(r, w, c0, lanes),)*
                        _ => block_tiles::<MAX_VECTORS, EPI>(r, w, c0, lanes),
                    }
                    w = w.wrapping_add(k * vectors * LANES);
                    c0 += lanes;
                }
            }

            /// The tiles of one channel block across the row.
            #[target_feature(enable = $features)]
            unsafe fn block_tiles<const NV: usize, const EPI: i64>(r: &Row, w: *const f32, c0: i64, lanes: i64) {
                let mut x0 = 0i64;
                for np in tiles(r.g.out_w.max(0) as usize, pixels(LANES, NV)) {
                    match np {
                        1 => tile::<NV, 1, EPI>(r, w, x0, c0, lanes),
                        2 => tile::<NV, 2, EPI>(r, w, x0, c0, lanes),
                        3 => tile::<NV, 3, EPI>(r, w, x0, c0, lanes),
                        4 => tile::<NV, 4, EPI>(r, w, x0, c0, lanes),
                        5 => tile::<NV, 5, EPI>(r, w, x0, c0, lanes),
                        6 => tile::<NV, 6, EPI>(r, w, x0, c0, lanes),
                        7 => tile::<NV, 7, EPI>(r, w, x0, c0, lanes),
                        _ => tile::<NV, 8, EPI>(r, w, x0, c0, lanes),
                    }
                    x0 += np as i64;
                }
            }

            /// `len` steps: `acc[p][v] += ptrs[p][s] * w[s][v]` for `s` in `0..len`. The
            /// accumulators go in and out by value, so that they stay in registers.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn steps<const NV: usize, const NP: usize>(
                acc: [[V; NV]; NP],
                ptrs: [*const f32; NP],
                w: *const f32,
                len: usize,
            ) -> [[V; NV]; NP] {
                let mut acc = acc;
                let mut w = w;
                for s in 0..len {
                    let mut wv = [zero(); NV];
                    for (v, x) in wv.iter_mut().enumerate() {
                        *x = load(w.add(v * LANES));
                    }
                    for (a, p) in acc.iter_mut().zip(ptrs) {
                        let x = broadcast(p.add(s));
                        for (a, &w) in a.iter_mut().zip(&wv) {
                            *a = fma(x, w, *a);
                        }
                    }
                    w = w.add(NV * LANES);
                }
                acc
            }

            /// Output pixels `x0..x0 + NP` of the row, channels `c0..c0 + lanes` (`NV` vectors).
            /// `EPI`: the activation when the epilogue is plain (no residual, no affine), or
            /// [`ANY_EPILOGUE`]; both compute the same values.
            #[target_feature(enable = $features)]
            unsafe fn tile<const NV: usize, const NP: usize, const EPI: i64>(
                r: &Row,
                w: *const f32,
                x0: i64,
                c0: i64,
                lanes: i64,
            ) {
                let g = &r.g;
                let c0u = c0 as usize;
                let mut acc = [[zero(); NV]; NP];
                if !r.bias.is_null() {
                    for v in 0..NV {
                        let b = load(r.bias.add(c0u + v * LANES));
                        for a in acc.iter_mut() {
                            a[v] = b;
                        }
                    }
                }
                let cin = g.cin as usize;
                let kstep = NV * LANES;
                let row_len = g.in_w * g.in_stride;
                // Input column of each pixel's first tap.
                let mut ix = [0i64; NP];
                for (p, c) in ix.iter_mut().enumerate() {
                    *c = (x0 + p as i64) * g.sw - g.pad_left;
                }
                let span = (g.kw - 1) * g.dw;
                let inside = ix[0] >= 0 && ix[NP - 1] + span < g.in_w;
                let merged = inside && g.dw == 1 && g.in_stride == g.cin;
                let mut ptrs = [r.zero; NP];
                for i in 0..g.kh {
                    let iy = r.iy0 + i * g.dh;
                    if iy < 0 || iy >= g.in_h {
                        continue;
                    }
                    let row = r.input.add((iy * row_len) as usize);
                    let wrow = w.add(i as usize * g.kw as usize * cin * kstep);
                    if merged {
                        for (p, &c) in ptrs.iter_mut().zip(&ix) {
                            *p = row.add((c * g.in_stride) as usize);
                        }
                        acc = steps::<NV, NP>(acc, ptrs, wrow, g.kw as usize * cin);
                        continue;
                    }
                    for j in 0..g.kw {
                        let mut any = false;
                        for (p, &c) in ptrs.iter_mut().zip(&ix) {
                            let c = c + j * g.dw;
                            *p = if c >= 0 && c < g.in_w {
                                any = true;
                                row.add((c * g.in_stride) as usize)
                            } else {
                                r.zero
                            };
                        }
                        if any {
                            acc = steps::<NV, NP>(acc, ptrs, wrow.add(j as usize * cin * kstep), cin);
                        }
                    }
                }
                for (p, a) in acc.iter().enumerate() {
                    let x = (x0 + p as i64) as usize;
                    let out = r.out.add(x * g.out_stride as usize + c0u);
                    let res = r.residual.wrapping_add(x * g.res_stride as usize + c0u);
                    for (v, &value) in a.iter().enumerate() {
                        let valid = (lanes - (v * LANES) as i64).clamp(0, LANES as i64) as usize;
                        let at = v * LANES;
                        finish::<EPI>(r, value, out.add(at), res.wrapping_add(at), c0u + at, valid);
                    }
                }
            }

            /// Applies the epilogue to `value`, the accumulator of channels `c..c + valid` of one
            /// output pixel, and stores its valid lanes at `out`; `res` is the residual's matching
            /// element. `EPI`: the activation when the epilogue is plain (no residual, no affine),
            /// or [`ANY_EPILOGUE`]; both compute the same values.
            #[target_feature(enable = $features)]
            #[inline]
            pub(in crate::codegen::kernels) unsafe fn finish<const EPI: i64>(
                r: &Row,
                value: V,
                out: *mut f32,
                res: *const f32,
                c: usize,
                valid: usize,
            ) {
                let full = valid == LANES;
                let value = if EPI != ANY_EPILOGUE {
                    match EPI {
                        ACT_RELU => max(value, zero()),
                        ACT_RELU6 => min(max(value, zero()), splat(6.0)),
                        _ => value,
                    }
                } else {
                    let mut value = value;
                    if !r.residual.is_null() {
                        value = add(value, if full { load(res) } else { load_masked(res, mask(valid)) });
                    }
                    value = match r.g.act {
                        ACT_RELU => max(value, zero()),
                        ACT_RELU6 => min(max(value, zero()), splat(6.0)),
                        ACT_LEAKY => leaky(value, splat(f32::from_bits(r.g.slope as u32))),
                        _ => value,
                    };
                    if !r.scale.is_null() {
                        value = fma(value, load(r.scale.add(c)), load(r.shift.add(c)));
                    }
                    value
                };
                if full {
                    store(out, value);
                } else {
                    store_first(out, valid, value);
                }
            }
        };
    }

    /// AVX-512F: 16 lanes, blocks of four zmm vectors.
    pub mod avx512 {
        use super::super::{block_width, pixels, tiles, ACT_LEAKY, ACT_NONE, ACT_RELU, ACT_RELU6, ANY_EPILOGUE};
        use super::Row;
        use std::arch::x86_64::*;

        type V = __m512;
        type Mask = __mmask16;
        const LANES: usize = 16;
        const MAX_VECTORS: usize = 4;

        #[target_feature(enable = "avx512f")]
        #[inline]
        fn zero() -> V {
            _mm512_setzero_ps()
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn splat(x: f32) -> V {
            _mm512_set1_ps(x)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn load(p: *const f32) -> V {
            _mm512_loadu_ps(p)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn store(p: *mut f32, v: V) {
            _mm512_storeu_ps(p, v)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn broadcast(p: *const f32) -> V {
            _mm512_set1_ps(*p)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn fma(a: V, b: V, c: V) -> V {
            _mm512_fmadd_ps(a, b, c)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn add(a: V, b: V) -> V {
            _mm512_add_ps(a, b)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn max(a: V, b: V) -> V {
            _mm512_max_ps(a, b)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn min(a: V, b: V) -> V {
            _mm512_min_ps(a, b)
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn leaky(v: V, slope: V) -> V {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
            _mm512_mask_mul_ps(v, neg, v, slope)
        }
        /// The first `valid` lanes.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn mask(valid: usize) -> Mask {
            ((1u32 << valid) - 1) as Mask
        }
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn load_masked(p: *const f32, m: Mask) -> V {
            _mm512_maskz_loadu_ps(m, p)
        }
        /// Stores the first `n` lanes of `v`, writing nothing else.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn store_first(p: *mut f32, n: usize, v: V) {
            _mm512_mask_storeu_ps(p, mask(n), v)
        }

        row_function!("avx512f,avx2,fma", narrower blocks: 1, 2, 3);
    }

    /// AVX2 + FMA: 8 lanes, blocks of two ymm vectors.
    pub mod avx2 {
        use super::super::{block_width, pixels, tiles, ACT_LEAKY, ACT_NONE, ACT_RELU, ACT_RELU6, ANY_EPILOGUE};
        use super::Row;
        use std::arch::x86_64::*;

        pub(in crate::codegen::kernels) type V = __m256;
        pub(in crate::codegen::kernels) type Mask = __m256i;
        pub(in crate::codegen::kernels) const LANES: usize = 8;
        const MAX_VECTORS: usize = 2;

        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(in crate::codegen::kernels) fn zero() -> V {
            _mm256_setzero_ps()
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn splat(x: f32) -> V {
            _mm256_set1_ps(x)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(in crate::codegen::kernels) unsafe fn load(p: *const f32) -> V {
            _mm256_loadu_ps(p)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn store(p: *mut f32, v: V) {
            _mm256_storeu_ps(p, v)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn broadcast(p: *const f32) -> V {
            _mm256_broadcast_ss(&*p)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(in crate::codegen::kernels) fn fma(a: V, b: V, c: V) -> V {
            _mm256_fmadd_ps(a, b, c)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn add(a: V, b: V) -> V {
            _mm256_add_ps(a, b)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn max(a: V, b: V) -> V {
            _mm256_max_ps(a, b)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn min(a: V, b: V) -> V {
            _mm256_min_ps(a, b)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        fn leaky(v: V, slope: V) -> V {
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
            _mm256_blendv_ps(v, _mm256_mul_ps(v, slope), neg)
        }
        /// The first `valid` lanes.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(in crate::codegen::kernels) fn mask(valid: usize) -> Mask {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lane)
        }
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(in crate::codegen::kernels) unsafe fn load_masked(p: *const f32, m: Mask) -> V {
            _mm256_maskload_ps(p, m)
        }
        /// Stores the first `n` lanes of `v`, writing nothing else (4-, 2- and 1-lane stores:
        /// a masked store is slow on some AMD cores).
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(in crate::codegen::kernels) unsafe fn store_first(p: *mut f32, n: usize, v: V) {
            crate::codegen::kernels::avx2::store_first(p, n, v)
        }

        row_function!("avx2,fma", narrower blocks: 1, 3);
    }
}
