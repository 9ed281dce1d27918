//! Matrix multiply for 1x1 convolutions (stride 1, no padding, any group count) and dense layers.
//!
//! Per group `g`, for every row `p` (a pixel of an NHWC tensor, or a batch row of a dense layer),
//! with logical channel indices:
//!
//! ```text
//! acc = bias[g*N + o] + sum_k in[p, g*K + k] * W[g*N + o][k] + residual[p, g*N + o]
//! out[p, g*N + o] = act(acc) * scale[g*N + o] + shift[g*N + o]
//! ```
//!
//! with `M` rows, `K` input channels per group and `N` output channels per group. One kernel
//! covers all groups of a grouped 1x1 convolution (ShuffleNet). Bias, residual and the
//! post-activation affine (`scale`, `shift`) are optional; see [`GemmSpec`].
//!
//! # Channel slots
//!
//! Each tensor may keep its logical channels at any distinct positions ("slots") inside a pixel:
//! logical channel `i` of pixel `p` is at element `buf.offset + p * buf.stride + slots[i]`. The
//! kernel works in *packed order*: per group, the input channels sorted by input slot and the
//! output channels sorted by output slot. The weights, bias and affine are permuted into that
//! order when they are packed, so a permutation of a contiguous range of channels costs nothing.
//!
//! - K axis: a group's sorted input slots, relative to the first one, are split into [`KRun`]s.
//!   Up to [`FULL_UNROLL`] channels every k-step is unrolled at its own constant offset. Beyond,
//!   arithmetic runs of at least [`MIN_LOOP_RUN`] slots (`start + i * step`; `step = 1` when the
//!   slots are contiguous) get a k-loop of four steps at a time, and the channels between such
//!   runs are unrolled one by one; past [`MAX_UNROLLED_STEPS`] such channels, a loop reads their
//!   offsets from a table packed with the weights instead.
//! - N axis: a group's output columns are cut into panels of [`NR`] (8). Consecutive full panels
//!   whose output slots (and residual slots, if any) continue one arithmetic sequence share one
//!   panel loop; any other panel (the narrow last one, or one whose slots are irregular) gets its
//!   own code with a constant slot per column, except that past [`MAX_SINGLE_PANELS`] irregular
//!   panels in a group, consecutive ones share a loop that reads their slots from a table. A
//!   store (or residual load) is one f32x4 where four consecutive columns have four consecutive
//!   slots, and per lane otherwise.
//! - Groups: when every group has the same plan relative to its first slots and those first
//!   slots step by a constant from group to group, one loop covers the groups; otherwise each
//!   group gets its own code.
//!
//! With no slots (identity), this is one contiguous K run, one panel loop and a narrow panel,
//! and a loop over groups.
//!
//! # Weights
//!
//! Packed at compile time into panels of [`Tile::nr`] (8) output columns: panel `(g, j)` holds
//! column `c` (packed output position `j*8 + c` of group `g`) of packed input position `kk` at
//! `((g * panels + j) * K + kk) * 8 + c`, so one k-step of a tile reads 8 consecutive floats.
//! The last panel of a group is padded with zero columns. The bias and the affine's scale and
//! shift are packed per group into `panels * 8` floats in the same column order, zero-padded, so
//! they are read as whole vectors.
//!
//! # Work items and loop nest
//!
//! An item is a block of [`Tile::mr`] (4) rows; `work_per_item` counts its multiply-accumulates.
//! The code for items `begin..end` walks chunks of row blocks, and inside a chunk: groups, then
//! weight panels, then the row blocks of the chunk, so each panel is read from L1 by every block
//! of the chunk (see `Gemm::chunk_blocks` for the sizes: one block when the weights fit in L1,
//! all rows at once when the weights are large and the input small). When `M` is not a multiple
//! of 4, the last item is a short block of `M % 4` rows, walked through the panels downwards
//! (those read last are still in cache); its tiles span up to `4 / rows` panels, so they still
//! keep 8 accumulators. Every row is computed by the same code whatever the range, so results do
//! not depend on how items are split between threads.
//!
//! # The register tile
//!
//! The innermost computation sits behind [`Tile`]; the loop nests above only compute addresses
//! and hand a [`TileArgs`] to [`Tile::compute`]:
//!
//! - `load_bias(args)`: start the accumulators of a `rows x cols` tile at the bias vector, or at
//!   zero; a full tile is `mr x nr`, a short one (fewer rows) may span several panels;
//! - `k_step(a, a_offset, panel, panel_offset)`: `acc[r][c] += a[r][a_offset] * panel[c]`, with
//!   `a` the row addresses and constant byte offsets;
//! - `accumulators` / `set_accumulators`: the values that carry the tile's state, so the default
//!   `compute` can pass them through block parameters (k-loop and the scheduling barrier);
//! - `finish(args)`: in registers, add the residual, apply the activation and the affine, and
//!   write the valid rows and columns, each column at its own slot.
//!
//! The provided `compute` drives these. Each unrolled k-step ends in a conditional branch on a
//! value that is always true at run time, with the accumulators as block arguments: without it,
//! Cranelift's e-graph pass sinks every FMA below all the loads of the unrolled tile and the tile
//! spills.
//!
//! [`F32x4Tile`] is the portable tile: 4 rows x 8 columns, 8 f32x4 accumulators, one broadcast per
//! input element reused across the two weight vectors.
//!
//! # The wide path (x86-64 with AVX2 and FMA, or AVX-512F)
//!
//! When [`Isa::gemm_level`] is [`Level::Avx512`] or [`Level::Avx2`], every matrix multiply, whatever
//! its slots, runs on a Rust micro-kernel ([`Wide`]): [`avx512`] (12x32 tiles in zmm registers,
//! panels of 32 columns, items of 12 rows) or [`avx2`] (6x16 tiles in ymm registers, panels of
//! 16 columns, items of 6 rows). The weights are packed as above with the tile's panel width;
//! the AVX-512 tile packs the last panel of a group 16 floats wide when it has at most 16
//! columns, and computes it with one zmm per row. The code for items `begin..end` walks their rows
//! in chunks (sized as above), and per chunk, group and panel makes one call of the
//! micro-kernel, which computes the chunk's rows of that panel with the epilogue in registers.
//! On AVX2, a narrow last panel of at most 8 columns, with contiguous columns and a plain
//! activation, is computed in the call of the full panel before it, in tiles three vectors wide;
//! one of at most [`avx2_dot::MAX_COLS`] columns whose group also reads contiguous inputs, with no
//! residual and no affine, is packed column by column and computed as dot products by
//! [`avx2_dot`], one call per chunk and group. ShuffleNet's stage-2 layers of 20 columns per
//! group (16 + 4) took 0.088 -> 0.075 ms at 28x28 (best of three profiles; the network's node
//! sum 2.85 -> 2.82 ms): the three-vector tile spent as long on the 4 columns as on 9.
//! A layer of one row whose work is split by panels (a classifier at batch 1, see
//! `Gemm::by_panels`) hands the AVX2 tile up to [`avx2::ROW_PANELS`] consecutive full panels per
//! call, computed together: one panel of one row is two chains of `K` dependent FMAs.
//!
//! Slots that are not contiguous (ShuffleNet's shuffled, grouped or gapped channels, the split
//! and concatenated halves of ShuffleNet v2) are passed as `u32` offset tables packed with the
//! weights, shared by the groups that have the same ones:
//! - a group whose input slots are not contiguous gets a table of its `K` input offsets (in packed
//!   order, relative to its first slot); the micro-kernel reads each k-step's broadcasts at that
//!   offset from the row starts;
//! - a group whose output (or residual) columns are not contiguous gets, per panel, a table of the
//!   output offsets then the residual offsets of the panel's columns (relative to the group's base
//!   slots); the epilogue gathers the residual and scatters the results through it (AVX-512), or
//!   gathers and stores column by column (AVX2). Such a group makes one call per panel, and a
//!   panel whose own columns (and residual columns) are contiguous is called without the table,
//!   storing whole vectors: ShuffleNet v2's projections write two runs of 29 (or 58, 116)
//!   columns of a concatenation, and only the panel across the gap needs the table (those layers
//!   went from 0.078-0.080 to 0.069 ms at 28x28, 0.065 to 0.060-0.063 at 14x14).
//!
//! The extra work is one scalar load per k-step and the gathers and scatters of the epilogue, far
//! less than the f32x4 tile's lost width. At [`Level::Baseline`] the f32x4 tile above runs.

use super::window::zero_of;
use super::{avx2, avx2_dot, avx512};
use super::{Kernel, Packer};
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::host::HostFn;
use crate::codegen::layout::Buf;
use crate::codegen::{Isa, Level};
use crate::ir::op::Activation;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, types::Type, BlockArg, InstBuilder, MemFlagsData, Value};
use std::collections::HashMap;

/// Rows (pixels) of a tile: one work item.
pub const MR: usize = 4;
/// Columns (output channels) of a tile and of a packed weight panel.
pub const NR: usize = 8;
/// K up to which the k-steps are fully unrolled.
pub const FULL_UNROLL: usize = 96;
/// Shortest arithmetic run of input slots that gets its own k-loop when K is not fully unrolled.
pub const MIN_LOOP_RUN: usize = 16;
/// Unrolled k-steps per group above which irregular stretches of input slots read their offsets
/// from a table instead (bounds the code size; such tiles are slower).
pub const MAX_UNROLLED_STEPS: usize = 512;
/// Full panels with irregular slots per group above which consecutive ones share a loop that
/// reads their slots from a table (bounds the code size; their stores are per lane anyway).
pub const MAX_SINGLE_PANELS: usize = 4;

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Loads of memory the kernel never writes (weights, input rows): pure for the mid-end, so each
/// load is placed next to its use and can fold into a broadcast or an FMA. The residual may be
/// the output itself, so its loads use `flags()` and keep their order with the stores.
fn ro() -> MemFlagsData {
    flags().with_readonly().with_can_move()
}

/// Where the logical channels of a tensor sit inside each pixel: logical channel `i` of pixel `p`
/// is at arena element `buf.offset + p * buf.stride + slots[i]` (with `p` the pixel index of
/// [`Buf::at`]). `None` means `slots[i] == i`.
///
/// `Buf::c` is the logical channel count. Slots are distinct and `< buf.stride`. The input has
/// `groups * K` channels, the output (and the residual) `groups * N`, all with the same number
/// of pixels; logical channel `g*K + k` is input `k` of group `g`, `g*N + o` output `o` of group
/// `g`.
///
/// The output must not share arena elements with the input (they may share pixels, at disjoint
/// slots). It may share elements with the residual only where both hold the same logical
/// channel, for an in-place `out = act(out + ...)`.
#[derive(Clone, Copy, Debug)]
pub struct GemmSpec<'a> {
    pub input: Buf,
    pub in_slots: Option<&'a [usize]>,
    pub out: Buf,
    pub out_slots: Option<&'a [usize]>,
    pub groups: usize,
    /// `[groups * n][k]`, row-major (PyTorch layout)
    pub weight: &'a [f32],
    /// `[groups * n]`
    pub bias: Option<&'a [f32]>,
    /// A tensor of the output's logical shape added before the activation, with its own slots.
    pub residual: Option<(Buf, Option<&'a [usize]>)>,
    pub act: Option<Activation>,
    /// Per logical output channel `(scale, shift)` applied after the activation:
    /// out = act(acc + bias + residual) * scale + shift  (a batchnorm that follows an activation)
    pub post: Option<(&'a [f32], &'a [f32])>,
}

/// A stretch of a group's K axis in packed order (input channels sorted by slot). Offsets are
/// elements relative to the group's first input slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KRun {
    /// One unrolled k-step per offset.
    Steps(Vec<usize>),
    /// `len` k-steps at offsets `start + i * step`, walked four at a time by a loop.
    Loop { start: usize, step: usize, len: usize },
    /// `len` k-steps walked four at a time by a loop that reads each step's offset from a table
    /// of `u32` at element `table` of the packed weights: slower than the other two, but compact
    /// for long irregular stretches (see [`MAX_UNROLLED_STEPS`]).
    Table { table: usize, len: usize },
}

/// Splits a group's sorted input offsets into runs (see the module documentation).
fn k_runs(offsets: &[usize]) -> Vec<KRun> {
    if offsets.len() <= FULL_UNROLL {
        return vec![KRun::Steps(offsets.to_vec())];
    }
    let mut runs = Vec::new();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let step = offsets.get(i + 1).map_or(1, |&next| next - offsets[i]);
        let mut j = i + 1;
        while j < offsets.len() && offsets[j] - offsets[j - 1] == step {
            j += 1;
        }
        if j - i >= MIN_LOOP_RUN {
            if !steps.is_empty() {
                runs.push(KRun::Steps(std::mem::take(&mut steps)));
            }
            runs.push(KRun::Loop {
                start: offsets[i],
                step,
                len: j - i,
            });
        } else {
            steps.extend_from_slice(&offsets[i..j]);
        }
        i = j;
    }
    if !steps.is_empty() {
        runs.push(KRun::Steps(steps));
    }
    runs
}

/// A stretch of a group's panels and where their columns go. Slots are relative to the group's
/// output (residual) base slot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PanelRun {
    /// `count` full panels from `first`: column `c` of panel `first + i` is stored at slot
    /// `out + (i * NR + c) * out_step` and reads the residual at `res + (i * NR + c) * res_step`.
    Affine {
        first: usize,
        count: usize,
        out: i64,
        out_step: i64,
        res: i64,
        res_step: i64,
    },
    /// One panel with `out.len()` columns, each at its own output and residual slot.
    Single { panel: usize, out: Vec<i64>, res: Vec<i64> },
    /// `count` full panels from `first` whose slots are read at run time: for panel `first + i`,
    /// `NR` output slots then `NR` residual slots, `u32`, at element `table + 2 * NR * i` of the
    /// packed weights (see [`MAX_SINGLE_PANELS`]).
    Table { first: usize, count: usize, table: usize },
}

/// The step of an arithmetic sequence, if `v` is one.
fn arithmetic(v: &[i64]) -> Option<i64> {
    let step = v.get(1).map_or(1, |&x| x - v[0]);
    v.windows(2).all(|w| w[1] - w[0] == step).then_some(step)
}

/// Groups a group's panels into runs, from the relative output and residual slots of its
/// columns in packed order.
fn panel_runs(out: &[i64], res: &[i64]) -> Vec<PanelRun> {
    let n = out.len();
    let mut runs: Vec<PanelRun> = Vec::new();
    for j in 0..n.div_ceil(NR) {
        let cols = j * NR..n.min((j + 1) * NR);
        let (o, r) = (&out[cols.clone()], &res[cols.clone()]);
        let affine = if cols.len() == NR {
            arithmetic(o).zip(arithmetic(r))
        } else {
            None
        };
        let Some((os, rs)) = affine else {
            runs.push(PanelRun::Single {
                panel: j,
                out: o.to_vec(),
                res: r.to_vec(),
            });
            continue;
        };
        if let Some(PanelRun::Affine {
            first,
            count,
            out,
            out_step,
            res,
            res_step,
        }) = runs.last_mut()
        {
            let next = (*count * NR) as i64;
            if *first + *count == j
                && (*out_step, *res_step) == (os, rs)
                && (*out + next * os, *res + next * rs) == (o[0], r[0])
            {
                *count += 1;
                continue;
            }
        }
        runs.push(PanelRun::Affine {
            first: j,
            count: 1,
            out: o[0],
            out_step: os,
            res: r[0],
            res_step: rs,
        });
    }
    runs
}

/// Replaces each stretch of two or more consecutive full `Single` panels by a `Table` run whose
/// table (`NR` output then `NR` residual slots per panel) `push` stores and locates.
fn tabulate(runs: Vec<PanelRun>, mut push: impl FnMut(&[usize]) -> usize) -> Vec<PanelRun> {
    let mut out = Vec::with_capacity(runs.len());
    let mut pending: Vec<PanelRun> = Vec::new();
    let mut flush = |pending: &mut Vec<PanelRun>, out: &mut Vec<PanelRun>| {
        if pending.len() >= 2 {
            let mut slots = Vec::with_capacity(pending.len() * 2 * NR);
            let mut first = usize::MAX;
            for run in pending.iter() {
                if let PanelRun::Single { panel, out, res } = run {
                    first = first.min(*panel);
                    slots.extend(out.iter().chain(res).map(|&x| x as usize));
                }
            }
            out.push(PanelRun::Table {
                first,
                count: pending.len(),
                table: push(&slots),
            });
            pending.clear();
        } else {
            out.append(pending);
        }
    };
    for run in runs {
        match run {
            PanelRun::Single { ref out, .. } if out.len() == NR => pending.push(run),
            _ => {
                flush(&mut pending, &mut out);
                out.push(run);
            }
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Packs `offsets` as `u32` (bit patterns in the f32 buffer) unless `tables` already holds them;
/// returns their element offset.
fn push_table(pack: &mut Packer, tables: &mut HashMap<Vec<usize>, usize>, offsets: &[usize]) -> usize {
    *tables.entry(offsets.to_vec()).or_insert_with(|| {
        let bits: Vec<f32> = offsets
            .iter()
            .map(|&o| f32::from_bits(u32::try_from(o).expect("slot offsets fit in u32")))
            .collect();
        pack.push(&bits)
    })
}

/// The code shape of one group: its K runs and panel runs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupPlan {
    k: Vec<KRun>,
    panels: Vec<PanelRun>,
}

/// The first input, output and residual slot of a group (elements within a pixel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bases {
    input: i64,
    out: i64,
    res: i64,
}

/// The slots of `buf`'s channels, checked.
fn slots_of(slots: Option<&[usize]>, buf: &Buf, what: &str) -> Vec<usize> {
    match slots {
        None => {
            assert!(buf.c <= buf.stride, "{what}: channels fit in the pixel stride");
            (0..buf.c).collect()
        }
        Some(s) => {
            assert_eq!(s.len(), buf.c, "{what}: one slot per channel");
            let mut seen = vec![false; buf.stride];
            for &x in s {
                assert!(
                    x < buf.stride,
                    "{what}: slot {x} beyond the pixel stride {}",
                    buf.stride
                );
                assert!(!seen[x], "{what}: slot {x} used twice");
                seen[x] = true;
            }
            s.to_vec()
        }
    }
}

/// Element offsets of a tile's columns from its row addresses.
#[derive(Clone, Debug)]
pub enum Cols {
    /// One constant offset per column.
    Fixed(Vec<i64>),
    /// One `u32` offset per column, read at run time from this address.
    Table(Value),
}

/// The addresses and constants of one tile.
pub struct TileArgs<'a> {
    /// Valid rows (`1..=mr`) and columns (`1..=nr`, or up to `nr * mr / rows` when a short tile
    /// spans several panels).
    pub rows: usize,
    pub cols: usize,
    /// Address of the group's first input slot in each valid row.
    pub a: Vec<Value>,
    /// The K axis, in the order of the panel's rows.
    pub k_runs: &'a [KRun],
    /// Address of the tile's first packed weight panel (`K x nr` floats); the next panels follow
    /// `panel_bytes` apart.
    pub panel: Value,
    pub panel_bytes: i32,
    /// Address of the tile's bias values (zero-padded, `nr` per panel, contiguous).
    pub bias: Option<Value>,
    /// Addresses of the tile's scale and shift values (as the bias).
    pub post: Option<(Value, Value)>,
    /// Per valid row, an address in the residual row, and per column the element offset from it.
    pub residual: Option<(Vec<Value>, Cols)>,
    pub act: Option<Activation>,
    /// Per valid row, an address in the output row, and per column the element offset from it.
    pub out: Vec<Value>,
    pub out_cols: Cols,
    /// An i8 condition that is true at run time: the scheduling barrier branches on it.
    pub always: Value,
}

/// A register tile of the matrix multiply (see the module documentation).
pub trait Tile {
    /// Rows of a full tile.
    fn mr(&self) -> usize;
    /// Columns of a full tile: the width of a packed weight panel.
    fn nr(&self) -> usize;
    /// Starts the tile of `t` (`t.rows x t.cols`) with the bias (or zero).
    fn load_bias(&mut self, e: &mut Emit, t: &TileArgs);
    /// `acc[r][c] += f32 at (a[r] + a_offset) * f32 at (panel + panel_offset + 4c)`, byte offsets,
    /// with column `c` of a multi-panel tile in panel `c / nr` (`t.panel_bytes` apart).
    fn k_step(&mut self, e: &mut Emit, a: &[Value], a_offset: i32, panel: Value, panel_offset: i32);
    /// The values holding the tile's state.
    fn accumulators(&self) -> Vec<Value>;
    /// Replaces the state by `values` (same count and types as `accumulators`).
    fn set_accumulators(&mut self, values: &[Value]);
    /// Adds the residual, applies the activation and the affine, in registers, and stores the
    /// valid rows and columns. Each row's residual is read before that row is stored: the
    /// residual may be the output itself.
    fn finish(&mut self, e: &mut Emit, t: &TileArgs);

    /// The whole tile: bias, all k-steps, residual, activation, affine, store.
    fn compute(&mut self, e: &mut Emit, t: &TileArgs) {
        self.load_bias(e, t);
        let row_bytes = (self.nr() * 4) as i64;
        // Packed row of the next k-step.
        let mut kk = 0i64;
        for run in t.k_runs {
            match *run {
                KRun::Steps(ref offsets) => {
                    for &o in offsets {
                        self.k_step(e, &t.a, (o * 4) as i32, t.panel, (kk * row_bytes) as i32);
                        barrier(self, e, t.always);
                        kk += 1;
                    }
                }
                KRun::Loop { start, step, len } => {
                    let a: Vec<Value> =
                        t.a.iter()
                            .map(|&p| e.b.ins().iadd_imm_s(p, (start * 4) as i64))
                            .collect();
                    let panel = e.b.ins().iadd_imm_s(t.panel, kk * row_bytes);
                    k_loop(self, e, t.always, &a, panel, Walk::Stride(step), len);
                    kk += len as i64;
                }
                KRun::Table { table, len } => {
                    let table = e.b.ins().iadd_imm_s(e.weights, table as i64 * 4);
                    let panel = e.b.ins().iadd_imm_s(t.panel, kk * row_bytes);
                    k_loop(self, e, t.always, &t.a, panel, Walk::Table(table), len);
                    kk += len as i64;
                }
            }
        }
        self.finish(e, t);
    }
}

/// How the k-steps of a [`k_loop`] find their input elements.
#[derive(Clone, Copy)]
enum Walk {
    /// Step `s` of an iteration reads at element `s * step` of the row pointers, which advance
    /// by `4 * step` elements per iteration.
    Stride(usize),
    /// Step `s` reads at the element offset in entry `s` of a `u32` table (from the row bases),
    /// which advances by four entries per iteration.
    Table(Value),
}

/// `len` k-steps from the row pointers `a` and the panel row at `panel`: a do-while loop of four
/// steps at a time (the pointers advance, the offsets stay constant), then the remaining steps.
#[allow(clippy::too_many_arguments)]
fn k_loop<T: Tile + ?Sized>(
    tile: &mut T,
    e: &mut Emit,
    always: Value,
    a: &[Value],
    panel: Value,
    walk: Walk,
    len: usize,
) {
    let row_bytes = (tile.nr() * 4) as i64;
    // The pointers a loop carries: the row pointers (or the table), then the panel.
    let mut ptrs: Vec<Value> = match walk {
        Walk::Stride(_) => a.to_vec(),
        Walk::Table(table) => vec![table],
    };
    ptrs.push(panel);
    let step = |tile: &mut T, e: &mut Emit, ptrs: &[Value], s: usize| {
        let panel = ptrs[ptrs.len() - 1];
        let panel_offset = (s as i64 * row_bytes) as i32;
        match walk {
            Walk::Stride(step) => {
                let rows = &ptrs[..ptrs.len() - 1];
                tile.k_step(e, rows, (s * step * 4) as i32, panel, panel_offset);
            }
            Walk::Table(_) => {
                let off = e.b.ins().load(types::I32, ro(), ptrs[0], (s * 4) as i32);
                let off = e.b.ins().uextend(types::I64, off);
                let bytes = e.b.ins().ishl_imm_s(off, 2);
                let rows: Vec<Value> = a.iter().map(|&p| e.b.ins().iadd(p, bytes)).collect();
                tile.k_step(e, &rows, 0, panel, panel_offset);
            }
        }
    };
    let advance = |e: &mut Emit, ptrs: &[Value]| -> Vec<Value> {
        let n = ptrs.len() - 1;
        let mut next: Vec<Value> = match walk {
            Walk::Stride(step) => ptrs[..n]
                .iter()
                .map(|&p| e.b.ins().iadd_imm_s(p, (16 * step) as i64))
                .collect(),
            Walk::Table(_) => vec![e.b.ins().iadd_imm_s(ptrs[0], 16)],
        };
        next.push(e.b.ins().iadd_imm_s(ptrs[n], 4 * row_bytes));
        next
    };
    let iters = len / 4;
    if iters > 0 {
        let body = e.b.create_block();
        let exit = e.b.create_block();
        let mut carried = tile.accumulators();
        let nacc = carried.len();
        carried.extend_from_slice(&ptrs);
        let params: Vec<Value> = carried
            .iter()
            .map(|&v| {
                let ty = e.b.func.dfg.value_type(v);
                e.b.append_block_param(body, ty)
            })
            .collect();
        for &v in &carried {
            let ty = e.b.func.dfg.value_type(v);
            e.b.append_block_param(exit, ty);
        }
        let panel_end = e.b.ins().iadd_imm_s(panel, iters as i64 * 4 * row_bytes);
        let args: Vec<BlockArg> = carried.iter().map(|&v| BlockArg::Value(v)).collect();
        e.b.ins().jump(body, &args);
        e.b.switch_to_block(body);
        tile.set_accumulators(&params[..nacc]);
        for s in 0..4 {
            step(tile, e, &params[nacc..], s);
            if s < 3 {
                barrier(tile, e, always);
            }
        }
        let mut next = tile.accumulators();
        next.extend(advance(e, &params[nacc..]));
        let more = e.b.ins().icmp(IntCC::UnsignedLessThan, next[next.len() - 1], panel_end);
        let args: Vec<BlockArg> = next.iter().map(|&v| BlockArg::Value(v)).collect();
        e.b.ins().brif(more, body, &args, exit, &args);
        e.b.switch_to_block(exit);
        let params = e.b.block_params(exit).to_vec();
        tile.set_accumulators(&params[..nacc]);
        ptrs = params[nacc..].to_vec();
    }
    for s in 0..len % 4 {
        step(tile, e, &ptrs, s);
        barrier(tile, e, always);
    }
}

/// Ends the current block with `brif always` into a new block that receives the accumulators, so
/// the e-graph keeps each k-step's FMAs above the next step's loads. The never-taken side goes
/// through a cold block that passes zeros, so the block parameters are not removed, the hot path
/// has no moves, and each accumulator has a single use (loads feeding only it can fold into its
/// instructions).
fn barrier<T: Tile + ?Sized>(tile: &mut T, e: &mut Emit, always: Value) {
    let acc = tile.accumulators();
    let next = e.b.create_block();
    let cold = e.b.create_block();
    let params: Vec<Value> = acc
        .iter()
        .map(|&v| {
            let ty = e.b.func.dfg.value_type(v);
            e.b.append_block_param(next, ty)
        })
        .collect();
    let taken: Vec<BlockArg> = acc.iter().map(|&v| BlockArg::Value(v)).collect();
    e.b.ins().brif(always, next, &taken, cold, &[]);
    e.b.switch_to_block(cold);
    e.b.set_cold_block(cold);
    let mut zeros: Vec<(Type, Value)> = Vec::new();
    let zeros: Vec<BlockArg> = acc
        .iter()
        .map(|&v| {
            let ty = e.b.func.dfg.value_type(v);
            let z = match zeros.iter().find(|z| z.0 == ty) {
                Some(z) => z.1,
                None => {
                    let z = zero_of(e, ty);
                    zeros.push((ty, z));
                    z
                }
            };
            BlockArg::Value(z)
        })
        .collect();
    e.b.ins().jump(next, &zeros);
    e.b.switch_to_block(next);
    tile.set_accumulators(&params);
}

/// The portable tile: up to 4 rows x 8 columns in f32x4 accumulators, two per row. A tile of
/// fewer rows spans up to `4 / rows` panels (at most 8 accumulators).
#[derive(Default)]
pub struct F32x4Tile {
    rows: usize,
    cols: usize,
    panel_bytes: i32,
    /// Row-major: `acc[r * vectors + v]`.
    acc: Vec<Value>,
}

impl F32x4Tile {
    fn vectors(&self) -> usize {
        self.cols.div_ceil(4)
    }

    /// The valid columns of vector `v`.
    fn lanes(&self, v: usize) -> std::ops::Range<usize> {
        v * 4..self.cols.min(v * 4 + 4)
    }
}

impl Tile for F32x4Tile {
    fn mr(&self) -> usize {
        MR
    }

    fn nr(&self) -> usize {
        NR
    }

    fn load_bias(&mut self, e: &mut Emit, t: &TileArgs) {
        let rows = t.rows;
        self.rows = rows;
        self.cols = t.cols;
        self.panel_bytes = t.panel_bytes;
        let vectors = self.vectors();
        assert!(rows <= MR && rows * vectors <= MR * NR / 4, "tile fits the registers");
        let init: Vec<Value> = (0..vectors)
            .map(|v| match t.bias {
                Some(b) => e.b.ins().load(F32X4, ro(), b, (v * 16) as i32),
                None => e.splat(0.0),
            })
            .collect();
        self.acc = (0..rows).flat_map(|_| init.iter().copied()).collect();
    }

    fn k_step(&mut self, e: &mut Emit, a: &[Value], a_offset: i32, panel: Value, panel_offset: i32) {
        let vectors = self.vectors();
        // Vector `v`: columns `4v..4v + 4`, in panel `v / 2`.
        let w: Vec<Value> = (0..vectors)
            .map(|v| {
                let at = panel_offset + (v / 2) as i32 * self.panel_bytes + (v % 2 * 16) as i32;
                e.b.ins().load(F32X4, ro(), panel, at)
            })
            .collect();
        // One broadcast per row, shared by the row's FMAs. The FMA's destination is tied to the
        // broadcast, so all but the last of them start with a register move (eliminated at
        // rename). A broadcast per FMA would fold into `vbroadcastss xmm, [mem]` without the
        // moves, but takes 10 vector loads per k-step instead of 6, and measured slower: at two
        // vector loads per cycle the loads then outlast the 8 FMAs.
        for (r, &row) in a.iter().enumerate().take(self.rows) {
            let x = e.b.ins().load(F32, ro(), row, a_offset);
            let x = e.b.ins().splat(F32X4, x);
            for (v, &wv) in w.iter().enumerate() {
                let i = r * vectors + v;
                self.acc[i] = e.b.ins().fma(x, wv, self.acc[i]);
            }
        }
    }

    fn accumulators(&self) -> Vec<Value> {
        self.acc.clone()
    }

    fn set_accumulators(&mut self, values: &[Value]) {
        self.acc.copy_from_slice(values);
    }

    fn finish(&mut self, e: &mut Emit, t: &TileArgs) {
        let vectors = self.vectors();
        let post: Option<Vec<(Value, Value)>> = t.post.map(|(scale, shift)| {
            (0..vectors)
                .map(|v| {
                    let s = e.b.ins().load(F32X4, ro(), scale, (v * 16) as i32);
                    let h = e.b.ins().load(F32X4, ro(), shift, (v * 16) as i32);
                    (s, h)
                })
                .collect()
        });
        let cols = self.cols;
        let out_cols = Columns::new(e, &t.out_cols, cols);
        let res_cols = t.residual.as_ref().map(|(_, c)| Columns::new(e, c, cols));
        for r in 0..self.rows {
            // Residual loads keep their order with the stores: row `r` is read, then written.
            let mut done = Vec::with_capacity(vectors);
            for v in 0..vectors {
                let mut x = self.acc[r * vectors + v];
                if let (Some((rows, _)), Some(res_cols)) = (&t.residual, &res_cols) {
                    let res = match res_cols.vector(v) {
                        Some(offset) => e.b.ins().load(F32X4, flags(), rows[r], offset),
                        None => {
                            let mut res = e.splat(0.0);
                            for (l, c) in self.lanes(v).enumerate() {
                                let (at, offset) = res_cols.lane(e, rows[r], c);
                                let s = e.b.ins().load(F32, flags(), at, offset);
                                res = e.b.ins().insertlane(res, s, l as u8);
                            }
                            res
                        }
                    };
                    x = e.b.ins().fadd(x, res);
                }
                x = e.activate(x, t.act);
                if let Some(post) = &post {
                    x = e.b.ins().fma(x, post[v].0, post[v].1);
                }
                done.push(x);
            }
            for (v, &x) in done.iter().enumerate() {
                match out_cols.vector(v) {
                    Some(offset) => {
                        e.b.ins().store(flags(), x, t.out[r], offset);
                    }
                    None => {
                        for (l, c) in self.lanes(v).enumerate() {
                            let s = e.b.ins().extractlane(x, l as u8);
                            let (at, offset) = out_cols.lane(e, t.out[r], c);
                            e.b.ins().store(flags(), s, at, offset);
                        }
                    }
                }
            }
        }
    }
}

/// The columns of a tile ready for its stores and residual loads: constant element offsets, or
/// byte offsets read once from a table.
enum Columns {
    Fixed(Vec<i64>),
    Table(Vec<Value>),
}

impl Columns {
    fn new(e: &mut Emit, cols: &Cols, n: usize) -> Columns {
        match cols {
            Cols::Fixed(offsets) => Columns::Fixed(offsets.clone()),
            Cols::Table(table) => Columns::Table(
                (0..n)
                    .map(|c| {
                        let off = e.b.ins().load(types::I32, ro(), *table, (c * 4) as i32);
                        let off = e.b.ins().uextend(types::I64, off);
                        e.b.ins().ishl_imm_s(off, 2)
                    })
                    .collect(),
            ),
        }
    }

    /// The byte offset of vector `v` (columns `4v..4v + 4`) when its four slots are consecutive.
    fn vector(&self, v: usize) -> Option<i32> {
        match self {
            Columns::Fixed(c) => {
                let c = c.get(v * 4..v * 4 + 4)?;
                c.windows(2).all(|w| w[1] == w[0] + 1).then_some((c[0] * 4) as i32)
            }
            Columns::Table(_) => None,
        }
    }

    /// Address and constant byte offset of column `c` in the row at `row`.
    fn lane(&self, e: &mut Emit, row: Value, c: usize) -> (Value, i32) {
        match self {
            Columns::Fixed(cols) => (row, (cols[c] * 4) as i32),
            Columns::Table(bytes) => (e.b.ins().iadd(row, bytes[c]), 0),
        }
    }
}

/// Packed weights of at least this many bytes are read from L3 or memory at every run: the
/// layer then reads them as few times as it can (see [`Gemm::chunk_blocks`] and
/// [`Gemm::by_panels`]), and one of a single row streams them (see `streamed_weights`).
const LARGE_WEIGHTS: usize = 256 * 1024;

/// A 1x1 convolution or dense layer as a matrix multiply with a fused epilogue.
pub struct Gemm {
    /// The micro-kernel that computes the tiles on the wide path (panels of [`Wide::nr`]
    /// columns, items of [`Wide::mr`] rows); the plans are then empty.
    wide: Option<Wide>,
    /// Per group on the wide path: where its offset tables are packed.
    wide_groups: Vec<WideGroup>,
    input: Buf,
    out: Buf,
    residual: Option<Buf>,
    act: Option<Activation>,
    groups: usize,
    /// Input channels per group.
    k: usize,
    /// Output channels per group.
    n: usize,
    /// Offsets of the packed panels, the padded bias and the padded scale and shift in the
    /// weights buffer.
    weights: usize,
    bias: Option<usize>,
    post: Option<(usize, usize)>,
    /// Per group: its plan and its base slots.
    plans: Vec<GroupPlan>,
    bases: Vec<Bases>,
    /// When all groups share the plan of group 0 and their bases step by a constant: that step.
    group_step: Option<Bases>,
    /// Weights of a later kernel for the calls to prefetch while they compute (see
    /// [`Kernel::prefetch_ahead`]): the offset of the first of their lines of 16 floats in the
    /// packed weights, and the lines.
    ahead: Option<(usize, usize)>,
}

/// The micro-kernel of the wide path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wide {
    /// 6 x 16 tiles in ymm registers ([`avx2`]).
    Avx2,
    /// 12 x 32 tiles in zmm registers ([`avx512`]).
    Avx512,
}

impl Wide {
    /// Columns of a packed panel.
    pub fn nr(self) -> usize {
        match self {
            Wide::Avx2 => avx2::NR,
            Wide::Avx512 => avx512::NR,
        }
    }

    /// Rows of a work item.
    pub fn mr(self) -> usize {
        match self {
            Wide::Avx2 => avx2::MR,
            Wide::Avx512 => avx512::MR,
        }
    }

    /// Most consecutive full panels of one row a call computes (see [`avx2::ROW_PANELS`]).
    fn row_panels(self) -> usize {
        match self {
            Wide::Avx2 => avx2::ROW_PANELS,
            Wide::Avx512 => 1,
        }
    }

    pub fn host(self) -> &'static HostFn {
        match self {
            Wide::Avx2 => &avx2::GEMM,
            Wide::Avx512 => &avx512::GEMM,
        }
    }

    /// Floats per packed row of a panel with `cols` valid columns (more than a panel: a full
    /// one): the AVX-512 tile packs a panel of at most 16 columns 16 wide.
    fn panel_width(self, cols: usize) -> usize {
        match self {
            Wide::Avx512 if cols <= 16 => 16,
            _ => self.nr(),
        }
    }
}

/// [`Gemm::by_panels`] of a wide layer of `groups` groups of `panels` panels, `weight_bytes` of
/// packed weights, `rows` rows and `k` inputs per group.
fn splits_by_panels(groups: usize, panels: usize, weight_bytes: usize, rows: usize, k: usize) -> bool {
    groups == 1 && panels >= 2 && weight_bytes >= LARGE_WEIGHTS && one_chunk(rows, k)
}

/// [`Gemm::one_chunk`] of `rows` rows of `k` inputs.
fn one_chunk(rows: usize, k: usize) -> bool {
    rows * k * 4 <= 256 * 1024
}

/// Where the offset tables of one group of the wide path are packed (element offsets of `u32`
/// tables in the weights), if its slots need them.
#[derive(Clone, Debug)]
struct WideGroup {
    /// The group's input slots relative to its first one, in packed order.
    a_offsets: Option<usize>,
    /// Per panel, the output then the residual slots of its columns relative to the group's base.
    cols_at: Option<usize>,
    /// With `cols_at`, per panel: the output and residual slots of its first column relative
    /// to the group's base when its own columns are contiguous, so that its calls store whole
    /// vectors without the table (ShuffleNet v2's projections write two runs of a concatenation:
    /// only the panel that straddles them is irregular).
    plain_panels: Vec<Option<(i64, i64)>>,
    /// The group's narrow last panel is packed column by column and computed as dot products
    /// ([`avx2_dot`]).
    dot: bool,
}

/// Which rows the tiles of one pass compute.
#[derive(Clone, Copy)]
enum RowBlocks {
    /// Full tiles of row blocks `lo..hi` (run-time values): rows `4 blk..4 blk + 4`.
    Range(Value, Value),
    /// One short tile of rows `p0..p0 + rows` (fewer than `MR`).
    Short { p0: usize, rows: usize },
}

/// The run-time group index and base slots of the group being generated, and the addresses
/// the buffers are relative to.
#[derive(Clone, Copy)]
struct GroupVals {
    g: Value,
    input: Value,
    out: Value,
    res: Value,
    arenas: Arenas,
}

/// The run-time byte addresses the offsets of the input, the output and the residual count
/// from: the arena for a node of its own, pointers into the real tensors for the projection of a
/// fused block, which reads its input from a scratch region.
#[derive(Clone, Copy)]
pub struct Arenas {
    pub input: Value,
    pub out: Value,
    pub res: Value,
}

impl Arenas {
    /// Every buffer in the arena.
    pub fn arena(e: &Emit) -> Arenas {
        Arenas {
            input: e.arena,
            out: e.arena,
            res: e.arena,
        }
    }
}

/// Where the columns of the tiles of one panel go.
struct PanelSite {
    /// Packed panel index `g * panels + j`.
    panel_ix: Value,
    cols: usize,
    /// Element offset within the pixel from which `out_cols` (`res_cols`) count.
    out_chan: Value,
    out_cols: Cols,
    res_chan: Value,
    res_cols: Cols,
}

impl Gemm {
    /// Checks the shapes and slots of `spec`, and packs its weights, bias and affine (permuted
    /// into packed order) into `pack`.
    /// `isa.gemm_level()` picks the tile: the AVX-512 micro-kernel on 32-wide panels, the AVX2 one on
    /// 16-wide panels (both with offset tables for slots that are not contiguous), or the f32x4
    /// tile.
    pub fn new(spec: &GemmSpec, pack: &mut Packer, isa: Isa) -> Gemm {
        let (input, out, groups) = (spec.input, spec.out, spec.groups);
        assert!(groups > 0 && input.c > 0 && out.c > 0, "non-empty GEMM");
        let k = input.c / groups;
        let n = out.c / groups;
        assert_eq!(input.c, groups * k, "input channels divide into groups");
        assert_eq!(out.c, groups * n, "output channels divide into groups");
        assert_eq!(spec.weight.len(), groups * n * k, "weight shape");
        assert_eq!(input.pixels(), out.pixels(), "one output row per input row");
        let in_slots = slots_of(spec.in_slots, &input, "input");
        let out_slots = slots_of(spec.out_slots, &out, "output");
        let residual = spec.residual.map(|(r, slots)| {
            assert_eq!((r.pixels(), r.c), (out.pixels(), out.c), "residual shape");
            (r, slots_of(slots, &r, "residual"))
        });
        let per_channel = |v: Option<&[f32]>, what: &str| {
            if let Some(v) = v {
                assert_eq!(v.len(), groups * n, "{what} shape");
            }
        };
        per_channel(spec.bias, "bias");
        per_channel(spec.post.map(|p| p.0), "scale");
        per_channel(spec.post.map(|p| p.1), "shift");

        // Per group: the input and output channels in packed order, and their slots relative to
        // the group's first input, output and residual slot.
        struct Order {
            iperm: Vec<usize>,
            in_rel: Vec<usize>,
            operm: Vec<usize>,
            out_rel: Vec<i64>,
            res_rel: Vec<i64>,
        }
        let mut orders = Vec::with_capacity(groups);
        let mut bases = Vec::with_capacity(groups);
        for g in 0..groups {
            let mut iperm: Vec<usize> = (0..k).collect();
            iperm.sort_by_key(|&i| in_slots[g * k + i]);
            let in_base = in_slots[g * k + iperm[0]];
            let in_rel: Vec<usize> = iperm.iter().map(|&i| in_slots[g * k + i] - in_base).collect();
            let mut operm: Vec<usize> = (0..n).collect();
            operm.sort_by_key(|&o| out_slots[g * n + o]);
            let out_base = out_slots[g * n + operm[0]];
            let out_rel: Vec<i64> = operm
                .iter()
                .map(|&o| (out_slots[g * n + o] - out_base) as i64)
                .collect();
            let (res_base, res_rel) = match &residual {
                Some((_, rs)) => {
                    let base = (0..n).map(|o| rs[g * n + o]).min().expect("n > 0");
                    (base, operm.iter().map(|&o| (rs[g * n + o] - base) as i64).collect())
                }
                None => (0, vec![0; n]),
            };
            orders.push(Order {
                iperm,
                in_rel,
                operm,
                out_rel,
                res_rel,
            });
            bases.push(Bases {
                input: in_base as i64,
                out: out_base as i64,
                res: res_base as i64,
            });
        }
        let wide = match isa.gemm_level() {
            Level::Avx512 => Some(Wide::Avx512),
            Level::Avx2 => Some(Wide::Avx2),
            Level::Baseline => None,
        };
        let nr = wide.map_or(NR, Wide::nr);
        let panels = n.div_ceil(nr);
        let mut packed = vec![0.0f32; groups * panels * k * nr];
        // Bias, scale and shift in packed column order.
        let mut columns = vec![[0.0f32; 3]; groups * panels * nr];
        let mut plans = Vec::with_capacity(groups);
        let mut wide_groups = Vec::with_capacity(groups);
        // Offset tables (`KRun::Table`, `PanelRun::Table`, the wide path's input and column
        // offsets), shared by groups with the same ones.
        let mut tables: HashMap<Vec<usize>, usize> = HashMap::new();
        for (g, order) in orders.iter().enumerate() {
            for (s, &o) in order.operm.iter().enumerate() {
                let (j, c) = (s / nr, s % nr);
                let width = wide.map_or(nr, |w| w.panel_width(n - j * nr));
                let row = &spec.weight[(g * n + o) * k..(g * n + o + 1) * k];
                for (kk, &i) in order.iperm.iter().enumerate() {
                    packed[(g * panels + j) * k * nr + kk * width + c] = row[i];
                }
                let col = &mut columns[(g * panels + j) * nr + c];
                col[0] = spec.bias.map_or(0.0, |b| b[g * n + o]);
                if let Some((scale, shift)) = spec.post {
                    col[1] = scale[g * n + o];
                    col[2] = shift[g * n + o];
                }
            }
            if wide.is_some() {
                let contiguous = |v: &mut dyn Iterator<Item = i64>| v.enumerate().all(|(i, x)| x == i as i64);
                let a_offsets = (!contiguous(&mut order.in_rel.iter().map(|&x| x as i64)))
                    .then(|| push_table(pack, &mut tables, &order.in_rel));
                let cols_contiguous = contiguous(&mut order.out_rel.iter().copied())
                    && (residual.is_none() || contiguous(&mut order.res_rel.iter().copied()));
                let cols_at = (!cols_contiguous).then(|| {
                    // Per panel, `nr` output offsets then `nr` residual offsets (the first
                    // column's past the valid ones: masked lanes are never accessed).
                    let mut offsets = Vec::with_capacity(panels * 2 * nr);
                    for j in 0..panels {
                        for rel in [&order.out_rel, &order.res_rel] {
                            offsets.extend((j * nr..(j + 1) * nr).map(|s| rel.get(s).map_or(0, |&x| x as usize)));
                        }
                    }
                    push_table(pack, &mut tables, &offsets)
                });
                let plain_panels = match cols_at {
                    Some(_) => (0..panels)
                        .map(|j| {
                            let cols = j * nr..((j + 1) * nr).min(n);
                            let run = |rel: &[i64]| rel[cols.clone()].windows(2).all(|w| w[1] == w[0] + 1);
                            let res_plain = residual.is_none() || run(&order.res_rel);
                            (run(&order.out_rel) && res_plain).then(|| (order.out_rel[j * nr], order.res_rel[j * nr]))
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let tail = n % nr;
                let dot = wide == Some(Wide::Avx2)
                    && (1..=avx2_dot::MAX_COLS).contains(&tail)
                    && k >= avx2_dot::MIN_K
                    && a_offsets.is_none()
                    && cols_at.is_none()
                    && residual.is_none()
                    && spec.post.is_none()
                    && !matches!(spec.act, Some(Activation::LeakyRelu { .. }))
                    && !splits_by_panels(groups, panels, packed.len() * 4, input.pixels(), k);
                if dot {
                    // The last panel column by column, each column's `k` weights padded to
                    // whole vectors (within the panel's `k * nr` floats).
                    let at = (g * panels + panels - 1) * k * nr;
                    let rows: Vec<f32> = packed[at..at + k * nr].to_vec();
                    let per_column = avx2_dot::padded(k);
                    packed[at..at + k * nr].fill(0.0);
                    for c in 0..tail {
                        for kk in 0..k {
                            packed[at + c * per_column + kk] = rows[kk * nr + c];
                        }
                    }
                }
                wide_groups.push(WideGroup {
                    a_offsets,
                    cols_at,
                    plain_panels,
                    dot,
                });
                continue;
            }
            let mut k_plan = k_runs(&order.in_rel);
            let unrolled: usize = k_plan
                .iter()
                .map(|r| if let KRun::Steps(s) = r { s.len() } else { 0 })
                .sum();
            if unrolled > MAX_UNROLLED_STEPS {
                for run in &mut k_plan {
                    if let KRun::Steps(offsets) = run {
                        if offsets.len() >= 4 {
                            let len = offsets.len();
                            let table = push_table(pack, &mut tables, offsets);
                            *run = KRun::Table { table, len };
                        }
                    }
                }
            }
            let mut panel_plan = panel_runs(&order.out_rel, &order.res_rel);
            let full_singles = panel_plan
                .iter()
                .filter(|r| matches!(r, PanelRun::Single { out, .. } if out.len() == NR))
                .count();
            if full_singles > MAX_SINGLE_PANELS {
                panel_plan = tabulate(panel_plan, |slots| push_table(pack, &mut tables, slots));
            }
            plans.push(GroupPlan {
                k: k_plan,
                panels: panel_plan,
            });
        }
        let weights = pack.push(&packed);
        let column = |i: usize| columns.iter().map(|c| c[i]).collect::<Vec<f32>>();
        let bias = spec.bias.map(|_| pack.push(&column(0)));
        let post = spec.post.map(|_| (pack.push(&column(1)), pack.push(&column(2))));
        let group_step = if groups == 1 {
            None
        } else {
            let step = Bases {
                input: bases[1].input - bases[0].input,
                out: bases[1].out - bases[0].out,
                res: bases[1].res - bases[0].res,
            };
            let affine = bases.iter().enumerate().all(|(g, b)| {
                let g = g as i64;
                *b == Bases {
                    input: bases[0].input + g * step.input,
                    out: bases[0].out + g * step.out,
                    res: bases[0].res + g * step.res,
                }
            });
            let shared = plans.iter().all(|p| *p == plans[0]);
            (affine && shared).then_some(step)
        };
        Gemm {
            wide,
            wide_groups,
            input,
            out,
            residual: residual.map(|r| r.0),
            act: spec.act,
            groups,
            k,
            n,
            weights,
            bias,
            post,
            plans,
            bases,
            group_step,
            ahead: None,
        }
    }

    fn rows(&self) -> usize {
        self.out.pixels()
    }

    /// Columns of a packed panel.
    fn nr(&self) -> usize {
        self.wide.map_or(NR, Wide::nr)
    }

    /// Rows of a work item.
    fn mr(&self) -> usize {
        self.wide.map_or(MR, Wide::mr)
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.nr())
    }

    /// Row blocks per chunk. Within a chunk, every panel re-reads the chunk's input rows (which
    /// should stay in cache: 96 KiB) and writes a panel-wide strip of its output rows (the rows
    /// whole: 48 KiB for the f32x4 tile, 192 KiB on the wide path, where a call's fixed cost is
    /// paid per chunk and panel: ShuffleNet's 14x14 layers of 480 output channels with 40 inputs
    /// per group, in chunks of 96 rows instead of 24, took 0.0746 -> 0.0729 ms, MobileNetV2's
    /// 14x14 expansions 0.195 -> 0.191, best of four alternating profiles; the other layers
    /// whose chunks grew ran as fast as before).
    /// Two cases differ:
    /// - weights of at most 32 KiB stay in L1 however often they are read: for the f32x4 tile a
    ///   chunk is one row block, whose output rows are then written whole, one after the other;
    ///   a micro-kernel call pays a fixed cost (masks, epilogue constants, the call), which at
    ///   small K (16-32) was 10-20% of a 12-row call, so the wide path keeps the chunk's
    ///   cache bounds but takes up to 16 blocks per call;
    /// - every chunk reads all the weights again, from L3 or memory once they are large (256 KiB
    ///   or more): then one chunk takes all rows (with the last, partial block) if their input
    ///   fits in 256 KiB, and otherwise
    ///   chunks grow up to 128 KiB of input rows (at most 256 rows).
    ///
    /// The full blocks are then shared out evenly, so that no chunk reads all the weights for
    /// only a few rows.
    fn chunk_blocks(&self) -> i64 {
        let row_in = (self.k * 4).max(1);
        let row_out = (self.n * self.groups * 4).max(1);
        let weight_bytes = self.weight_bytes();
        let mr = self.mr();
        let out_bytes = if self.wide.is_some() { 192 * 1024 } else { 48 * 1024 };
        let mut rows = (96 * 1024 / row_in).min(out_bytes / row_out);
        if weight_bytes <= 32 * 1024 {
            rows = if self.wide.is_some() { rows.min(16 * mr) } else { mr };
        } else if weight_bytes >= LARGE_WEIGHTS {
            if self.one_chunk() {
                // All rows, the last partial block included: a chunk of its few rows alone
                // would read all the weights again.
                return self.rows().div_ceil(mr) as i64;
            }
            rows = rows.max((128 * 1024 / row_in).min(256));
        }
        let blocks = (rows / mr).max(1);
        let full = (self.rows() / mr).max(1);
        let chunks = full.div_ceil(blocks);
        full.div_ceil(chunks) as i64
    }

    /// Whether the work items are weight panels rather than blocks of rows: on the wide path,
    /// when the weights are large (256 KiB or more) and the input rows small enough to be read in
    /// one chunk (see [`Gemm::chunk_blocks`]), as in the 7x7 layers and the classifiers. Split by
    /// rows, every thread would read all the weights (from memory: they are not in cache when
    /// the layer starts); split by panels, each reads its share, and a layer of one row (a
    /// classifier) can use more than one thread. One thread makes the same calls either way.
    fn by_panels(&self) -> bool {
        self.wide.is_some() && splits_by_panels(self.groups, self.panels(), self.weight_bytes(), self.rows(), self.k)
    }

    /// Bytes of the packed weights.
    fn weight_bytes(&self) -> usize {
        self.groups * self.panels() * self.k * self.nr() * 4
    }

    /// Whether the input rows are few enough (256 KiB) to be read in one chunk when the weights
    /// are large.
    fn one_chunk(&self) -> bool {
        one_chunk(self.rows(), self.k)
    }

    /// The loop nest of the wide path: items are blocks of [`Wide::mr`] rows (or panels, see
    /// [`Gemm::by_panels`]); the rows of items `begin..end` are walked in chunks, and per chunk,
    /// group and panel one call of the micro-kernel computes the chunk's rows of that panel (the
    /// narrow last panel of a group with its valid column count).
    fn emit_wide(&self, e: &mut Emit, wide: Wide, begin: Value, end: Value, arenas: Arenas) {
        let f = e.host(wide.host());
        let (nr, mr) = (wide.nr() as i64, wide.mr() as i64);
        let m = self.rows() as i64;
        let chunk = self.chunk_blocks() * mr;
        let panels = self.panels();
        let (full, tail) = (self.n as i64 / nr, self.n as i64 % nr);
        let panel_floats = self.k as i64 * nr;
        let by_panels = self.by_panels();
        let (lo, hi) = if by_panels {
            (e.int(0), e.int(m))
        } else {
            let lo = e.b.ins().imul_imm_s(begin, mr);
            let hi = e.b.ins().imul_imm_s(end, mr);
            let m_v = e.int(m);
            (lo, e.b.ins().smin(hi, m_v))
        };
        let (act, slope) = match self.act {
            None => (avx2::ACT_NONE, 0.0),
            Some(Activation::Relu) => (avx2::ACT_RELU, 0.0),
            Some(Activation::Relu6) => (avx2::ACT_RELU6, 0.0),
            Some(Activation::LeakyRelu { slope }) => (avx2::ACT_LEAKY, slope),
        };
        e.for_range(lo, hi, chunk, |e, r0| {
            let r1 = e.b.ins().iadd_imm_s(r0, chunk);
            let r1 = e.b.ins().smin(r1, hi);
            let rows = e.b.ins().isub(r1, r0);
            // Byte address of element `slot` of row `r0` of `buf`.
            let row_addr = |e: &mut Emit, base: Value, buf: &Buf, slot: i64| {
                let at = e.b.ins().imul_imm_s(r0, buf.stride as i64 * 4);
                let at = e.b.ins().iadd(base, at);
                e.b.ins().iadd_imm_s(at, (buf.offset as i64 + slot) * 4)
            };
            for (g, (b, wg)) in self.bases.iter().zip(&self.wide_groups).enumerate() {
                let a = row_addr(e, arenas.input, &self.input, b.input);
                let out = row_addr(e, arenas.out, &self.out, b.out);
                let res = self
                    .residual
                    .as_ref()
                    .map(|r| (row_addr(e, arenas.res, r, b.res), r.stride));
                let first = (g * panels) as i64;
                // `plain`: the panel's columns are contiguous from these output and residual
                // slots (relative to the group's bases), in a group that has a column table.
                // Packed data of panel `g * panels + j` at element `offset`, `per_panel`
                // elements per panel.
                let packed = |e: &mut Emit, j: Value, offset: usize, per_panel: i64| {
                    let at = e.b.ins().imul_imm_s(j, per_panel * 4);
                    let at = e.b.ins().iadd(e.weights, at);
                    e.b.ins().iadd_imm_s(at, (offset as i64 + first * per_panel) * 4)
                };
                let call = |e: &mut Emit, j: Value, cols: Value, plain: Option<(i64, i64)>| {
                    let null = e.int(0);
                    let panel = packed(e, j, self.weights, panel_floats);
                    let bias = self.bias.map_or(null, |o| packed(e, j, o, nr));
                    let (scale, shift) = match self.post {
                        Some((sc, sh)) => (packed(e, j, sc, nr), packed(e, j, sh, nr)),
                        None => (null, null),
                    };
                    let a_offsets = wg
                        .a_offsets
                        .map_or(null, |t| e.b.ins().iadd_imm_s(e.weights, t as i64 * 4));
                    // With a column table, the row pointers stay at the group's base slots.
                    let (cols_at, col_bytes, res_bytes) = match (wg.cols_at, plain) {
                        (_, Some((o, r))) => (null, e.int(o * 4), e.int(r * 4)),
                        (Some(t), None) => {
                            let at = e.b.ins().imul_imm_s(j, 2 * nr * 4);
                            let at = e.b.ins().iadd(e.weights, at);
                            (e.b.ins().iadd_imm_s(at, t as i64 * 4), e.int(0), e.int(0))
                        }
                        (None, None) => {
                            let bytes = e.b.ins().imul_imm_s(j, nr * 4);
                            (null, bytes, bytes)
                        }
                    };
                    let (res, res_stride) = match res {
                        Some((r, stride)) => (e.b.ins().iadd(r, res_bytes), e.int(stride as i64)),
                        None => (null, null),
                    };
                    let out = e.b.ins().iadd(out, col_bytes);
                    // Call `j` (a panel) prefetches lines `j * k..` of the later kernel's
                    // weights; the micro-kernel clamps the count to `0..=k`.
                    let (ahead, ahead_lines) = match self.ahead.filter(|_| by_panels) {
                        Some((offset, lines)) => {
                            let at = e.b.ins().imul_imm_s(j, self.k as i64 * nr * 4);
                            let at = e.b.ins().iadd(e.weights, at);
                            let at = e.b.ins().iadd_imm_s(at, offset as i64 * 4);
                            let done = e.b.ins().imul_imm_s(j, self.k as i64);
                            let lines = e.int(lines as i64);
                            (at, e.b.ins().isub(lines, done))
                        }
                        None => (null, null),
                    };
                    let args = [
                        a,
                        e.int(self.input.stride as i64),
                        a_offsets,
                        panel,
                        e.int(self.k as i64),
                        rows,
                        cols,
                        bias,
                        scale,
                        shift,
                        res,
                        res_stride,
                        out,
                        e.int(self.out.stride as i64),
                        cols_at,
                        e.int(act),
                        e.f32(slope),
                        ahead,
                        ahead_lines,
                    ];
                    e.b.ins().call(f, &args);
                };
                if by_panels {
                    // Items are panels: the full ones in `begin..end`, then the narrow last one
                    // when `end` covers it. A layer of one row with contiguous columns takes up
                    // to `Wide::row_panels` full panels per call.
                    let full_v = e.int(full);
                    let last = e.b.ins().smin(end, full_v);
                    let step = match (m, wg.cols_at) {
                        (1, None) => wide.row_panels() as i64,
                        _ => 1,
                    };
                    e.for_range(begin, last, step, |e, j| {
                        let left = e.b.ins().isub(last, j);
                        let step_v = e.int(step);
                        let n = e.b.ins().smin(left, step_v);
                        let cols = e.b.ins().imul_imm_s(n, nr);
                        call(e, j, cols, None)
                    });
                    if tail > 0 {
                        let covered = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, end, full);
                        e.if_then(covered, |e| {
                            let j = e.int(full);
                            let cols = e.int(tail);
                            call(e, j, cols, None);
                        });
                    }
                    continue;
                }
                if wg.cols_at.is_some() {
                    // One call per panel, each with or without the table.
                    for (j, &plain) in wg.plain_panels.iter().enumerate() {
                        let cols = e.int(if (j as i64) < full { nr } else { tail });
                        let j = e.int(j as i64);
                        call(e, j, cols, plain);
                    }
                    continue;
                }
                // The AVX2 tile takes a narrow last panel of at most 8 columns with the full
                // panel before it, three vectors wide, when the epilogue is a plain activation
                // (and the panel is not computed as dot products).
                let plain_act = self.post.is_none() && act != avx2::ACT_LEAKY;
                let joined = wide == Wide::Avx2 && plain_act && full > 0 && tail > 0 && tail <= nr / 2 && !wg.dot;
                let singles = full - i64::from(joined);
                let nr_v = e.int(nr);
                match singles {
                    0 => {}
                    1 => {
                        let j = e.int(0);
                        call(e, j, nr_v, None);
                    }
                    _ => e.for_const(0, singles, |e, j| call(e, j, nr_v, None)),
                }
                if tail > 0 && wg.dot {
                    // The narrow last panel as dot products, prefetching the next group's first
                    // panel.
                    let (j, after) = (e.int(full), e.int(full + 1));
                    let w = packed(e, j, self.weights, panel_floats);
                    let next = packed(e, after, self.weights, panel_floats);
                    let bias = match self.bias {
                        Some(o) => packed(e, j, o, nr),
                        None => e.int(0),
                    };
                    let at = e.b.ins().iadd_imm_s(out, full * nr * 4);
                    let dot = e.host(&avx2_dot::DOT);
                    let args = [
                        a,
                        e.int(self.input.stride as i64),
                        w,
                        e.int(self.k as i64),
                        rows,
                        e.int(tail),
                        bias,
                        at,
                        e.int(self.out.stride as i64),
                        e.int(act),
                        next,
                    ];
                    e.b.ins().call(dot, &args);
                } else if tail > 0 {
                    let j = e.int(singles);
                    let cols = e.int(tail + if joined { nr } else { 0 });
                    call(e, j, cols, None);
                }
            }
        });
    }

    /// Emits the tiles of `blocks` for every group and panel.
    fn emit_blocks(&self, e: &mut Emit, always: Value, blocks: RowBlocks, arenas: Arenas) {
        let b0 = self.bases[0];
        // The short block walks groups and panels downwards (see `emit_group`).
        let reverse = matches!(blocks, RowBlocks::Short { .. });
        match self.group_step {
            Some(step) => e.for_const(0, self.groups as i64, |e, i| {
                let g = if reverse {
                    let g = e.b.ins().imul_imm_s(i, -1);
                    e.b.ins().iadd_imm_s(g, self.groups as i64 - 1)
                } else {
                    i
                };
                let mut at = |base: i64, step: i64| {
                    let x = e.b.ins().imul_imm_s(g, step);
                    e.b.ins().iadd_imm_s(x, base)
                };
                let gv = GroupVals {
                    g,
                    input: at(b0.input, step.input),
                    out: at(b0.out, step.out),
                    res: at(b0.res, step.res),
                    arenas,
                };
                self.emit_group(e, always, &self.plans[0], gv, blocks);
            }),
            None => {
                let mut groups: Vec<usize> = (0..self.groups).collect();
                if reverse {
                    groups.reverse();
                }
                for g in groups {
                    let (plan, b) = (&self.plans[g], &self.bases[g]);
                    let gv = GroupVals {
                        g: e.int(g as i64),
                        input: e.int(b.input),
                        out: e.int(b.out),
                        res: e.int(b.res),
                        arenas,
                    };
                    self.emit_group(e, always, plan, gv, blocks);
                }
            }
        }
    }

    /// Emits the tiles of `blocks` for every panel of one group. A short tile (fewer than `MR`
    /// rows) spans up to `MR / rows` panels of an affine run, so it still has 8 accumulators.
    fn emit_group(&self, e: &mut Emit, always: Value, plan: &GroupPlan, gv: GroupVals, blocks: RowBlocks) {
        let gp = e.b.ins().imul_imm_s(gv.g, self.panels() as i64);
        let span = match blocks {
            RowBlocks::Range(..) => 1,
            RowBlocks::Short { rows, .. } => MR / rows,
        };
        // The short block follows the last chunk, which walked the panels upwards: walking them
        // downwards starts with those still in cache.
        let reverse = matches!(blocks, RowBlocks::Short { .. });
        let mut runs: Vec<&PanelRun> = plan.panels.iter().collect();
        if reverse {
            runs.reverse();
        }
        for run in runs {
            match *run {
                PanelRun::Affine {
                    first,
                    count,
                    out,
                    out_step,
                    res,
                    res_step,
                } => {
                    // Tiles of `panels` panels from panel `j`, whose column 0 is at
                    // `base + start + (j - first) * NR * step`.
                    let tiles = |e: &mut Emit, j: Value, panels: usize| {
                        let i = e.b.ins().iadd_imm_s(j, -(first as i64));
                        let chan = |e: &mut Emit, base: Value, start: i64, step: i64| {
                            let x = e.b.ins().imul_imm_s(i, NR as i64 * step);
                            let x = e.b.ins().iadd(x, base);
                            e.b.ins().iadd_imm_s(x, start)
                        };
                        let cols = 0..(panels * NR) as i64;
                        let site = PanelSite {
                            panel_ix: e.b.ins().iadd(gp, j),
                            cols: panels * NR,
                            out_chan: chan(e, gv.out, out, out_step),
                            out_cols: Cols::Fixed(cols.clone().map(|c| c * out_step).collect()),
                            res_chan: chan(e, gv.res, res, res_step),
                            res_cols: Cols::Fixed(cols.map(|c| c * res_step).collect()),
                        };
                        self.emit_tiles(e, always, plan, gv, &site, blocks);
                    };
                    // `whole` tiles of `span` panels, then one of the remaining panels.
                    let (whole, rest) = (count / span, count % span);
                    let rest_tile = |e: &mut Emit| {
                        if rest > 0 {
                            let j = e.int((first + whole * span) as i64);
                            tiles(e, j, rest);
                        }
                    };
                    if reverse {
                        rest_tile(e);
                    }
                    match whole {
                        0 => {}
                        1 => {
                            let j = e.int(first as i64);
                            tiles(e, j, span);
                        }
                        _ if reverse => e.for_const(0, whole as i64, |e, i| {
                            let j = e.b.ins().imul_imm_s(i, -(span as i64));
                            let j = e.b.ins().iadd_imm_s(j, (first + (whole - 1) * span) as i64);
                            tiles(e, j, span);
                        }),
                        _ => {
                            let (lo, hi) = (e.int(first as i64), e.int((first + whole * span) as i64));
                            e.for_range(lo, hi, span as i64, |e, j| tiles(e, j, span));
                        }
                    }
                    if !reverse {
                        rest_tile(e);
                    }
                }
                PanelRun::Single {
                    panel,
                    ref out,
                    ref res,
                } => {
                    let j = e.int(panel as i64);
                    let site = PanelSite {
                        panel_ix: e.b.ins().iadd(gp, j),
                        cols: out.len(),
                        out_chan: gv.out,
                        out_cols: Cols::Fixed(out.clone()),
                        res_chan: gv.res,
                        res_cols: Cols::Fixed(res.clone()),
                    };
                    self.emit_tiles(e, always, plan, gv, &site, blocks);
                }
                PanelRun::Table { first, count, table } => {
                    let body = |e: &mut Emit, i: Value| {
                        let j = if reverse {
                            let j = e.b.ins().imul_imm_s(i, -1);
                            e.b.ins().iadd_imm_s(j, (2 * first + count - 1) as i64)
                        } else {
                            i
                        };
                        // Slots of panel `j` at element `table + 2 * NR * (j - first)`.
                        let at = e.b.ins().imul_imm_s(j, 2 * NR as i64 * 4);
                        let at = e.b.ins().iadd(e.weights, at);
                        let at = e.b.ins().iadd_imm_s(at, (table as i64 - (2 * NR * first) as i64) * 4);
                        let res = e.b.ins().iadd_imm_s(at, NR as i64 * 4);
                        let site = PanelSite {
                            panel_ix: e.b.ins().iadd(gp, j),
                            cols: NR,
                            out_chan: gv.out,
                            out_cols: Cols::Table(at),
                            res_chan: gv.res,
                            res_cols: Cols::Table(res),
                        };
                        self.emit_tiles(e, always, plan, gv, &site, blocks);
                    };
                    e.for_const(first as i64, (first + count) as i64, body);
                }
            }
        }
    }

    /// The tiles of one site for `blocks`.
    fn emit_tiles(
        &self,
        e: &mut Emit,
        always: Value,
        plan: &GroupPlan,
        gv: GroupVals,
        site: &PanelSite,
        blocks: RowBlocks,
    ) {
        match blocks {
            RowBlocks::Range(lo, hi) => e.for_range(lo, hi, 1, |e, blk| {
                let p0 = e.b.ins().imul_imm_s(blk, MR as i64);
                self.emit_tile(e, always, plan, gv, site, p0, MR);
            }),
            RowBlocks::Short { p0, rows } => {
                let p0 = e.int(p0 as i64);
                self.emit_tile(e, always, plan, gv, site, p0, rows);
            }
        }
    }

    /// One tile: rows `p0..p0 + rows` of the panels at `site`.
    #[allow(clippy::too_many_arguments)]
    fn emit_tile(
        &self,
        e: &mut Emit,
        always: Value,
        plan: &GroupPlan,
        gv: GroupVals,
        site: &PanelSite,
        p0: Value,
        rows: usize,
    ) {
        // Byte address of (row p0, element `chan` of the pixel) of `buf`, and of the next rows.
        let row_addrs = |e: &mut Emit, base: Value, buf: &Buf, chan: Value| -> Vec<Value> {
            let at = e.b.ins().imul_imm_s(p0, buf.stride as i64);
            let at = e.b.ins().iadd(at, chan);
            let at = e.b.ins().iadd_imm_s(at, buf.offset as i64);
            let bytes = e.b.ins().ishl_imm_s(at, 2);
            let first = e.b.ins().iadd(base, bytes);
            (0..rows)
                .map(|r| {
                    if r == 0 {
                        first
                    } else {
                        e.b.ins().iadd_imm_s(first, (r * buf.stride * 4) as i64)
                    }
                })
                .collect()
        };
        let a = row_addrs(e, gv.arenas.input, &self.input, gv.input);
        let out = row_addrs(e, gv.arenas.out, &self.out, site.out_chan);
        let residual = self
            .residual
            .as_ref()
            .map(|r| (row_addrs(e, gv.arenas.res, r, site.res_chan), site.res_cols.clone()));
        // Packed data of the site's first panel at `offset`, `per_panel` floats per panel.
        let packed = |e: &mut Emit, offset: usize, per_panel: usize| {
            let at = e.b.ins().imul_imm_s(site.panel_ix, (per_panel * 4) as i64);
            let at = e.b.ins().iadd(e.weights, at);
            e.b.ins().iadd_imm_s(at, offset as i64 * 4)
        };
        let panel = packed(e, self.weights, self.k * NR);
        let bias = self.bias.map(|b| packed(e, b, NR));
        let post = self.post.map(|(s, h)| (packed(e, s, NR), packed(e, h, NR)));
        let args = TileArgs {
            rows,
            cols: site.cols,
            a,
            k_runs: &plan.k,
            panel,
            panel_bytes: (self.k * NR * 4) as i32,
            bias,
            post,
            residual,
            act: self.act,
            out,
            out_cols: site.out_cols.clone(),
            always,
        };
        F32x4Tile::default().compute(e, &args);
    }
}

impl Kernel for Gemm {
    fn items(&self) -> usize {
        if self.by_panels() {
            self.panels()
        } else {
            self.rows().div_ceil(self.mr())
        }
    }

    fn work_per_item(&self) -> usize {
        if self.by_panels() {
            self.rows() * self.k * self.nr()
        } else {
            self.mr() * self.k * self.n * self.groups
        }
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        let mut fns: Vec<&'static HostFn> = self.wide.map(Wide::host).into_iter().collect();
        if self.wide_groups.iter().any(|g| g.dot) {
            fns.push(&avx2_dot::DOT);
        }
        fns
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let arenas = Arenas::arena(e);
        self.emit_at(e, begin, end, arenas);
    }

    /// A layer of one row on the wide path with large weights (a classifier at batch 1) reads
    /// each weight once, straight from memory.
    fn streamed_weights(&self) -> Option<(usize, usize)> {
        (self.wide.is_some() && self.rows() == 1 && self.weight_bytes() >= LARGE_WEIGHTS)
            .then(|| (self.weights, self.weight_bytes() / 4))
    }

    /// On the AVX2 path split by panels (the 7x7 layers before a classifier), each call can
    /// prefetch up to `k` lines while it computes its rows.
    fn prefetch_capacity(&self) -> usize {
        let calls = self.groups * self.panels();
        match self.wide {
            Some(Wide::Avx2) if self.by_panels() && self.rows() > 1 => calls * self.k,
            _ => 0,
        }
    }

    fn prefetch_ahead(&mut self, offset: usize, lines: usize) {
        self.ahead = Some((offset, lines.min(self.prefetch_capacity())));
    }
}

impl Gemm {
    /// [`Kernel::emit`] with the input, the output and the residual relative to `arenas`
    /// instead of the arena.
    pub fn emit_at(&self, e: &mut Emit, begin: Value, end: Value, arenas: Arenas) {
        if let Some(wide) = self.wide {
            return self.emit_wide(e, wide, begin, end, arenas);
        }
        // `end` is a count, never negative: this is the barrier's always-true condition.
        let always = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, end, 0);
        let m = self.rows();
        let full = (m / MR) as i64;
        let short = m % MR;
        if full > 0 {
            // Full blocks begin..min(end, full), in chunks.
            let full_v = e.int(full);
            let hi = e.b.ins().smin(end, full_v);
            let chunk = self.chunk_blocks();
            e.for_range(begin, hi, chunk, |e, lo| {
                let c_end = e.b.ins().iadd_imm_s(lo, chunk);
                let c_end = e.b.ins().smin(c_end, hi);
                self.emit_blocks(e, always, RowBlocks::Range(lo, c_end), arenas);
            });
        }
        if short > 0 {
            // The last item, `full`, is in range exactly when end > full.
            let last = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, end, full);
            let blocks = RowBlocks::Short {
                p0: m - short,
                rows: short,
            };
            e.if_then(last, |e| self.emit_blocks(e, always, blocks, arenas));
        }
    }
}
