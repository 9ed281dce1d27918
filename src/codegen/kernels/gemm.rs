//! Matrix multiply for 1x1 convolutions (stride 1, no padding, any group count) and dense layers.
//!
//! Per group `g`, for every row `p` (a pixel of an NHWC tensor, or a batch row of a dense layer):
//!
//! ```text
//! out[p, g*N + o] = act(bias[g*N + o] + sum_k in[p, g*K + k] * W[g*N + o][k] + residual[p, g*N + o])
//! ```
//!
//! with `M` rows, `K` input channels per group and `N` output channels per group. One kernel
//! covers all groups of a grouped 1x1 convolution (ShuffleNet).
//!
//! # Weights
//!
//! Packed at compile time into panels of [`Tile::nr`] (8) output channels: panel `(g, j)` holds
//! `W[g*N + j*8 + c][k]` at `((g * panels + j) * K + k) * 8 + c`, so one k-step of a tile reads
//! 8 consecutive floats. The last panel of a group is padded with zero columns. The bias is packed
//! per group into `panels * 8` floats, padded with zeros, so it is read as whole vectors.
//!
//! # Work items and loop nest
//!
//! An item is a block of [`Tile::mr`] (4) rows; `work_per_item` counts its multiply-accumulates.
//! The code for items `begin..end` walks chunks of row blocks (sized so a chunk of input rows and of
//! output rows stays in cache), and inside a chunk: groups, then weight panels, then the row blocks
//! of the chunk. A panel is thus read from L1 by every block of the chunk. The last, short row
//! block (when `M` is not a multiple of 4) and the last, narrow panel (when `N` is not a multiple of
//! 8) get their own copies of the tile, specialized to their valid rows and columns. Every row is
//! computed by the same code whatever the range, so results do not depend on how items are split
//! between threads.
//!
//! # The register tile
//!
//! The innermost computation sits behind [`Tile`]; the loop nests above only compute addresses
//! and hand a [`TileArgs`] to [`Tile::compute`]:
//!
//! - `load_bias(rows, cols, bias)`: start the accumulators of a `rows x cols` tile (at most
//!   `mr x nr`) at the bias vector, or at zero;
//! - `k_step(a, panel, k)`: `acc[r][c] += a[r][k] * panel[k][c]`, with `a` the row addresses and
//!   `k` a constant element index;
//! - `accumulators` / `set_accumulators`: the values that carry the tile's state, so the default
//!   `compute` can pass them through block parameters (k-loop and the scheduling barrier);
//! - `epilogue(residual, act)`: in registers, add the residual rows (if any) and apply the
//!   activation;
//! - `store(out)`: write the valid rows and columns.
//!
//! The provided `compute` drives these: K is fully unrolled up to [`FULL_UNROLL`] and looped four
//! steps at a time beyond. Each k-step ends in a conditional branch on a value that is always true
//! at run time, with the accumulators as block arguments: without it, Cranelift's e-graph pass
//! sinks every FMA below all the loads of the unrolled tile and the tile spills.
//!
//! [`F32x4Tile`] is the portable tile: 4 rows x 8 columns, 8 f32x4 accumulators, one broadcast per
//! input element reused across the two weight vectors. A wider tile for x86-64 (AVX2/AVX-512) can
//! be added beside it: either implement the step methods with wider values, or override
//! `compute` as a whole (for example with a call into a native micro-kernel that receives the same
//! addresses); the packing only depends on `nr`.

use super::{tensor, Kernel, Packer};
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Activation, Conv};
use crate::ir::Node;
use crate::runtime::Weights;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Value};

/// Rows (pixels) of a tile: one work item.
pub const MR: usize = 4;
/// Columns (output channels) of a tile and of a packed weight panel.
pub const NR: usize = 8;
/// K up to which the k-steps are fully unrolled; beyond, a loop of four steps.
pub const FULL_UNROLL: usize = 96;

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Loads of memory the kernel never writes (weights, input rows, residual rows): pure for the
/// mid-end, so each load is placed next to its use and can fold into a broadcast or an FMA.
fn ro() -> MemFlagsData {
    flags().with_readonly().with_can_move()
}

/// The addresses and constants of one tile.
pub struct TileArgs {
    /// Valid rows (`1..=mr`) and columns (`1..=nr`).
    pub rows: usize,
    pub cols: usize,
    /// Address of element `k = 0` of each valid input row.
    pub a: Vec<Value>,
    /// Address of the tile's packed weight panel (`K x nr` floats).
    pub panel: Value,
    pub k: usize,
    /// Address of the panel's `nr` bias values (zero-padded).
    pub bias: Option<Value>,
    /// Address of column 0 of each valid residual row.
    pub residual: Option<Vec<Value>>,
    pub act: Option<Activation>,
    /// Address of column 0 of each valid output row.
    pub out: Vec<Value>,
    /// An i8 condition that is true at run time: the scheduling barrier branches on it.
    pub always: Value,
}

/// A register tile of the matrix multiply (see the module documentation).
pub trait Tile {
    /// Rows of a full tile.
    fn mr(&self) -> usize;
    /// Columns of a full tile: the width of a packed weight panel.
    fn nr(&self) -> usize;
    /// Starts a `rows x cols` tile with the bias at `bias` (or zero).
    fn load_bias(&mut self, e: &mut Emit, rows: usize, cols: usize, bias: Option<Value>);
    /// `acc[r][c] += a[r][k] * panel[k][c]`.
    fn k_step(&mut self, e: &mut Emit, a: &[Value], panel: Value, k: usize);
    /// The values holding the tile's state.
    fn accumulators(&self) -> Vec<Value>;
    /// Replaces the state by `values` (same count and types as `accumulators`).
    fn set_accumulators(&mut self, values: &[Value]);
    /// Adds the residual rows and applies the activation, in registers.
    fn epilogue(&mut self, e: &mut Emit, residual: Option<&[Value]>, act: Option<Activation>);
    /// Stores the valid rows and columns.
    fn store(&self, e: &mut Emit, out: &[Value]);

    /// The whole tile: bias, all k-steps, epilogue, store.
    fn compute(&mut self, e: &mut Emit, t: &TileArgs) {
        self.load_bias(e, t.rows, t.cols, t.bias);
        let nr = self.nr() as i64;
        if t.k <= FULL_UNROLL {
            for k in 0..t.k {
                self.k_step(e, &t.a, t.panel, k);
                barrier(self, e, t.always);
            }
        } else {
            // Do-while over groups of four k-steps; the pointers advance, offsets stay constant.
            let steps = t.k / 4;
            let body = e.b.create_block();
            let exit = e.b.create_block();
            let mut carried = self.accumulators();
            carried.extend_from_slice(&t.a);
            carried.push(t.panel);
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
            let panel_end = e.b.ins().iadd_imm_s(t.panel, (steps * 4) as i64 * nr * 4);
            let args: Vec<BlockArg> = carried.iter().map(|&v| BlockArg::Value(v)).collect();
            e.b.ins().jump(body, &args);
            e.b.switch_to_block(body);
            let nacc = self.accumulators().len();
            self.set_accumulators(&params[..nacc]);
            let a = params[nacc..nacc + t.rows].to_vec();
            let panel = params[nacc + t.rows];
            for s in 0..4 {
                self.k_step(e, &a, panel, s);
                if s < 3 {
                    barrier(self, e, t.always);
                }
            }
            let mut next = self.accumulators();
            for &p in &a {
                next.push(e.b.ins().iadd_imm_s(p, 16));
            }
            let next_panel = e.b.ins().iadd_imm_s(panel, 4 * nr * 4);
            next.push(next_panel);
            let more = e.b.ins().icmp(IntCC::UnsignedLessThan, next_panel, panel_end);
            let args: Vec<BlockArg> = next.iter().map(|&v| BlockArg::Value(v)).collect();
            e.b.ins().brif(more, body, &args, exit, &args);
            e.b.switch_to_block(exit);
            let params = e.b.block_params(exit).to_vec();
            self.set_accumulators(&params[..nacc]);
            let a = params[nacc..nacc + t.rows].to_vec();
            let panel = params[nacc + t.rows];
            for k in 0..t.k % 4 {
                self.k_step(e, &a, panel, k);
                barrier(self, e, t.always);
            }
        }
        self.epilogue(e, t.residual.as_deref(), t.act);
        self.store(e, &t.out);
    }
}

/// Ends the current block with `brif always` into a new block that receives the accumulators, so
/// the e-graph keeps each k-step's FMAs above the next step's loads. The never-taken edge passes
/// the same values rotated by one, so the block parameters are not constant and are not removed;
/// the taken edge comes first, so the register allocator gives the parameters the registers of
/// the taken edge's values and the moves land on the never-taken edge.
fn barrier<T: Tile + ?Sized>(tile: &mut T, e: &mut Emit, always: Value) {
    let acc = tile.accumulators();
    let next = e.b.create_block();
    let params: Vec<Value> = acc
        .iter()
        .map(|&v| {
            let ty = e.b.func.dfg.value_type(v);
            e.b.append_block_param(next, ty)
        })
        .collect();
    let taken: Vec<BlockArg> = acc.iter().map(|&v| BlockArg::Value(v)).collect();
    let mut rotated = taken.clone();
    // Rotate among values of one type: the tile's accumulators all share the same type.
    rotated.rotate_left(1);
    e.b.ins().brif(always, next, &taken, next, &rotated);
    e.b.switch_to_block(next);
    tile.set_accumulators(&params);
}

/// The portable tile: up to 4 rows x 8 columns in f32x4 accumulators, two per row.
#[derive(Default)]
pub struct F32x4Tile {
    rows: usize,
    cols: usize,
    /// Row-major: `acc[r * vectors + v]`.
    acc: Vec<Value>,
}

impl F32x4Tile {
    fn vectors(&self) -> usize {
        self.cols.div_ceil(4)
    }

    /// Lanes of vector `v` that hold valid columns.
    fn lanes(&self, v: usize) -> usize {
        (self.cols - v * 4).min(4)
    }
}

impl Tile for F32x4Tile {
    fn mr(&self) -> usize {
        MR
    }

    fn nr(&self) -> usize {
        NR
    }

    fn load_bias(&mut self, e: &mut Emit, rows: usize, cols: usize, bias: Option<Value>) {
        self.rows = rows;
        self.cols = cols;
        let vectors = self.vectors();
        let init: Vec<Value> = (0..vectors)
            .map(|v| match bias {
                Some(b) => e.b.ins().load(F32X4, ro(), b, (v * 16) as i32),
                None => e.splat(0.0),
            })
            .collect();
        self.acc = (0..rows).flat_map(|_| init.iter().copied()).collect();
    }

    fn k_step(&mut self, e: &mut Emit, a: &[Value], panel: Value, k: usize) {
        let vectors = self.vectors();
        let w: Vec<Value> = (0..vectors)
            .map(|v| e.b.ins().load(F32X4, ro(), panel, ((k * NR + v * 4) * 4) as i32))
            .collect();
        for (r, &row) in a.iter().enumerate().take(self.rows) {
            let x = e.b.ins().load(F32, ro(), row, (k * 4) as i32);
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

    fn epilogue(&mut self, e: &mut Emit, residual: Option<&[Value]>, act: Option<Activation>) {
        let vectors = self.vectors();
        for r in 0..self.rows {
            for v in 0..vectors {
                let i = r * vectors + v;
                if let Some(res) = residual {
                    let lanes = self.lanes(v);
                    let x = if lanes == 4 {
                        e.b.ins().load(F32X4, ro(), res[r], (v * 16) as i32)
                    } else {
                        let mut x = e.splat(0.0);
                        for l in 0..lanes {
                            let s = e.b.ins().load(F32, ro(), res[r], ((v * 4 + l) * 4) as i32);
                            x = e.b.ins().insertlane(x, s, l as u8);
                        }
                        x
                    };
                    self.acc[i] = e.b.ins().fadd(self.acc[i], x);
                }
                self.acc[i] = e.activate(self.acc[i], act);
            }
        }
    }

    fn store(&self, e: &mut Emit, out: &[Value]) {
        let vectors = self.vectors();
        for (r, &row) in out.iter().enumerate().take(self.rows) {
            for v in 0..vectors {
                let x = self.acc[r * vectors + v];
                let lanes = self.lanes(v);
                if lanes == 4 {
                    e.b.ins().store(flags(), x, row, (v * 16) as i32);
                } else {
                    for l in 0..lanes {
                        let s = e.b.ins().extractlane(x, l as u8);
                        e.b.ins().store(flags(), s, row, ((v * 4 + l) * 4) as i32);
                    }
                }
            }
        }
    }
}

/// A 1x1 convolution or dense layer as a matrix multiply with a fused epilogue.
pub struct Gemm {
    input: Buf,
    out: Buf,
    residual: Option<Buf>,
    act: Option<Activation>,
    groups: usize,
    /// Input channels per group.
    k: usize,
    /// Output channels per group.
    n: usize,
    /// Offsets of the packed panels and of the padded bias in the weights buffer.
    weights: usize,
    bias: Option<usize>,
}

impl Gemm {
    /// Packs `weight` (`[groups * n][k]`, row-major, as PyTorch stores 1x1 conv and dense weights)
    /// and `bias` (`[groups * n]`). `input` must have `groups * k` channels, `out` (and `residual`,
    /// if any) `groups * n` channels and the same number of pixels.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: Buf,
        out: Buf,
        groups: usize,
        weight: &[f32],
        bias: Option<&[f32]>,
        residual: Option<Buf>,
        act: Option<Activation>,
        pack: &mut Packer,
    ) -> Gemm {
        let k = input.c / groups;
        let n = out.c / groups;
        assert_eq!(input.c, groups * k, "input channels divide into groups");
        assert_eq!(out.c, groups * n, "output channels divide into groups");
        assert_eq!(weight.len(), groups * n * k, "weight shape");
        assert_eq!(input.pixels(), out.pixels(), "one output row per input row");
        if let Some(r) = residual {
            assert_eq!((r.pixels(), r.c), (out.pixels(), out.c), "residual shape");
        }
        let panels = n.div_ceil(NR);
        let mut packed = vec![0.0f32; groups * panels * k * NR];
        for g in 0..groups {
            for o in 0..n {
                let (j, c) = (o / NR, o % NR);
                for kk in 0..k {
                    packed[((g * panels + j) * k + kk) * NR + c] = weight[(g * n + o) * k + kk];
                }
            }
        }
        let weights = pack.push(&packed);
        let bias = bias.map(|b| {
            assert_eq!(b.len(), groups * n, "bias shape");
            let mut padded = vec![0.0f32; groups * panels * NR];
            for g in 0..groups {
                padded[g * panels * NR..g * panels * NR + n].copy_from_slice(&b[g * n..(g + 1) * n]);
            }
            pack.push(&padded)
        });
        Gemm {
            input,
            out,
            residual,
            act,
            groups,
            k,
            n,
            weights,
            bias,
        }
    }

    fn rows(&self) -> usize {
        self.out.pixels()
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// Row blocks per chunk: the chunk's input rows stay in L2 (while the panels stream) and its
    /// output rows, written one panel-wide column strip at a time, stay in L1/L2.
    fn chunk_blocks(&self) -> i64 {
        let row_in = (self.k * 4).max(1);
        let row_out = (self.n * self.groups * 4).max(1);
        let rows = (96 * 1024 / row_in).min(48 * 1024 / row_out).max(MR);
        (rows / MR) as i64
    }

    /// Emits tiles for the row blocks `lo..hi` (a run-time range) with `rows` valid rows each.
    fn emit_blocks(&self, e: &mut Emit, always: Value, lo: Value, hi: Value, rows: usize) {
        let panels = self.panels();
        let full_panels = self.n / NR;
        let narrow = self.n % NR;
        let per_group = |e: &mut Emit, g: Value| {
            let panel_tiles = |e: &mut Emit, j: Value, cols: usize| {
                e.for_range(lo, hi, 1, |e, blk| {
                    self.emit_tile(e, always, blk, g, j, rows, cols);
                });
            };
            match full_panels {
                0 => {}
                1 => {
                    let j = e.int(0);
                    panel_tiles(e, j, NR);
                }
                _ => e.for_const(0, full_panels as i64, |e, j| panel_tiles(e, j, NR)),
            }
            if narrow > 0 {
                let j = e.int((panels - 1) as i64);
                panel_tiles(e, j, narrow);
            }
        };
        if self.groups == 1 {
            let g = e.int(0);
            per_group(e, g);
        } else {
            e.for_const(0, self.groups as i64, per_group);
        }
    }

    /// One tile: row block `blk`, group `g`, panel `j`.
    #[allow(clippy::too_many_arguments)]
    fn emit_tile(&self, e: &mut Emit, always: Value, blk: Value, g: Value, j: Value, rows: usize, cols: usize) {
        let (k, n) = (self.k as i64, self.n as i64);
        let panels = self.panels() as i64;
        let p0 = e.b.ins().imul_imm_s(blk, MR as i64);
        // Byte address of (row p0, channel `channel`) of `buf`, and of the following rows.
        let row_addrs = |e: &mut Emit, buf: &Buf, channel: Value| -> Vec<Value> {
            let at = e.b.ins().imul_imm_s(p0, buf.stride as i64);
            let at = e.b.ins().iadd(at, channel);
            let at = e.b.ins().iadd_imm_s(at, buf.offset as i64);
            let bytes = e.b.ins().ishl_imm_s(at, 2);
            let first = e.b.ins().iadd(e.arena, bytes);
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
        let in_channel = e.b.ins().imul_imm_s(g, k);
        let a = row_addrs(e, &self.input, in_channel);
        let out_channel = {
            let gn = e.b.ins().imul_imm_s(g, n);
            let jn = e.b.ins().imul_imm_s(j, NR as i64);
            e.b.ins().iadd(gn, jn)
        };
        let out = row_addrs(e, &self.out, out_channel);
        let residual = self.residual.as_ref().map(|r| row_addrs(e, r, out_channel));
        // Panel (g, j) starts at element ((g * panels + j) * K) * NR.
        let gp = e.b.ins().imul_imm_s(g, panels);
        let panel_ix = e.b.ins().iadd(gp, j);
        let panel = e.b.ins().imul_imm_s(panel_ix, k * NR as i64 * 4);
        let panel = e.b.ins().iadd(e.weights, panel);
        let panel = e.b.ins().iadd_imm_s(panel, self.weights as i64 * 4);
        let bias = self.bias.map(|b| {
            let at = e.b.ins().imul_imm_s(panel_ix, NR as i64 * 4);
            let at = e.b.ins().iadd(e.weights, at);
            e.b.ins().iadd_imm_s(at, b as i64 * 4)
        });
        let args = TileArgs {
            rows,
            cols,
            a,
            panel,
            k: self.k,
            bias,
            residual,
            act: self.act,
            out,
            always,
        };
        F32x4Tile::default().compute(e, &args);
    }
}

impl Kernel for Gemm {
    fn items(&self) -> usize {
        self.rows().div_ceil(MR)
    }

    fn work_per_item(&self) -> usize {
        MR * self.k * self.n * self.groups
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        // `end` is a count, never negative: this is the barrier's always-true condition.
        let always = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, end, 0);
        let full = (self.rows() / MR) as i64;
        let short = self.rows() % MR;
        // Full blocks begin..min(end, full), in chunks.
        let full_v = e.int(full);
        let hi = e.b.ins().smin(end, full_v);
        let chunk = self.chunk_blocks();
        e.for_range(begin, hi, chunk, |e, lo| {
            let c_end = e.b.ins().iadd_imm_s(lo, chunk);
            let c_end = e.b.ins().smin(c_end, hi);
            self.emit_blocks(e, always, lo, c_end, MR);
        });
        if short > 0 {
            // The short block is item `full`, the last one: in range exactly when end > full.
            let last = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, end, full);
            e.if_then(last, |e| {
                let lo = e.int(full);
                let hi = e.int(full + 1);
                self.emit_blocks(e, always, lo, hi, short);
            });
        }
    }
}

/// A 1x1 convolution with stride 1 and no padding.
pub fn lower_conv(node: &Node, c: &Conv, input: Buf, out: Buf, w: &Weights, pack: &mut Packer) -> Box<dyn Kernel> {
    let bias = c.bias.then(|| tensor(w, node, "bias"));
    Box::new(Gemm::new(
        input,
        out,
        c.groups,
        tensor(w, node, "weight"),
        bias,
        None,
        None,
        pack,
    ))
}

/// A dense layer: rows are batch rows.
pub fn lower_dense(node: &Node, bias: bool, input: Buf, out: Buf, w: &Weights, pack: &mut Packer) -> Box<dyn Kernel> {
    let b = bias.then(|| tensor(w, node, "bias"));
    Box::new(Gemm::new(input, out, 1, tensor(w, node, "weight"), b, None, None, pack))
}
