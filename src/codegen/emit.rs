//! Helpers for writing kernels with Cranelift's `FunctionBuilder`: constant-bound loops,
//! f32 and f32x4 loads and stores at element offsets, and activations.
//!
//! Every kernel has the signature `fn(arena: *mut f32, weights: *const f32, begin: i64, end: i64)`:
//! it computes work items `begin..end` (what an item is, an output row or a group of channels,
//! is up to the kernel), reading and writing the arena and reading the packed weights at
//! offsets that are constants baked into the code.

use super::host::{HostFn, EXPF};
use crate::ir::op::Activation;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, BlockArg, FuncRef, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

pub const I64: types::Type = types::I64;
pub const F32: types::Type = types::F32;
pub const F32X4: types::Type = types::F32X4;

/// The function being generated, with the kernel's four arguments.
pub struct Emit<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub arena: Value,
    pub weights: Value,
    /// The host functions imported into this function: `expf` and those the kernel lists in
    /// [`Kernel::host_fns`](super::kernels::Kernel::host_fns).
    pub hosts: Vec<(&'static str, FuncRef)>,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Emit<'_, '_> {
    /// The imported host function `f`.
    ///
    /// # Panics
    /// If the kernel did not list `f` in `host_fns` (a bug in the kernel, not in its input).
    pub fn host(&self, f: &HostFn) -> FuncRef {
        self.hosts
            .iter()
            .find(|(s, _)| *s == f.symbol)
            .map(|&(_, r)| r)
            .unwrap_or_else(|| panic!("kernel calls {} without listing it in host_fns", f.symbol))
    }

    pub fn int(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn f32(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    pub fn splat(&mut self, v: f32) -> Value {
        let s = self.f32(v);
        self.b.ins().splat(F32X4, s)
    }

    /// `base + index * 4`: the address of f32 element `index`.
    pub fn addr(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_s(index, 2);
        self.b.ins().iadd(base, bytes)
    }

    /// Loads `ty` at element `index + offset` of `base` (an arena or weights pointer).
    pub fn load(&mut self, ty: types::Type, base: Value, index: Value, offset: i64) -> Value {
        let a = self.addr(base, index);
        self.b.ins().load(ty, flags(), a, (offset * 4) as i32)
    }

    /// Stores `v` at element `index + offset` of `base`.
    pub fn store(&mut self, v: Value, base: Value, index: Value, offset: i64) {
        let a = self.addr(base, index);
        self.b.ins().store(flags(), v, a, (offset * 4) as i32);
    }

    /// Loads at a constant element index.
    pub fn load_at(&mut self, ty: types::Type, base: Value, index: i64) -> Value {
        let zero = self.int(0);
        self.load(ty, base, zero, index)
    }

    /// `for i in start..end (step step) { body(i) }` with run-time bounds.
    pub fn for_range(&mut self, start: Value, end: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, I64);
        self.b.ins().jump(header, &[BlockArg::Value(start)]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(more, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        body(self, i);
        let step = self.int(step);
        let next = self.b.ins().iadd(i, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.switch_to_block(exit);
    }

    /// `for i in start..end { body(i) }` with constant bounds.
    pub fn for_const(&mut self, start: i64, end: i64, body: impl FnMut(&mut Self, Value)) {
        if start >= end {
            return;
        }
        let (s, e) = (self.int(start), self.int(end));
        self.for_range(s, e, 1, body);
    }

    /// `if cond { body() }`.
    pub fn if_then(&mut self, cond: Value, body: impl FnOnce(&mut Self)) {
        let then = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, then, &[], done, &[]);
        self.b.switch_to_block(then);
        body(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
    }

    /// `0 <= v < limit` for a signed index.
    pub fn in_bounds(&mut self, v: Value, limit: i64) -> Value {
        let limit = self.int(limit);
        // One unsigned compare covers both sides: a negative v wraps to a huge value.
        self.b.ins().icmp(IntCC::UnsignedLessThan, v, limit)
    }

    /// `exp(x)` of an f32, by a call to the host.
    pub fn exp(&mut self, x: Value) -> Value {
        let expf = self.host(&EXPF);
        let call = self.b.ins().call(expf, &[x]);
        self.b.inst_results(call)[0]
    }

    /// `max(a, b)` of f32 or f32x4 values, as one vmaxps/vmaxss (not NaN-propagating).
    pub fn max(&mut self, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let lt = self.b.ins().fcmp(FloatCC::LessThan, b, a);
        if ty == F32X4 {
            let mask = self.b.ins().bitcast(F32X4, MemFlagsData::new(), lt);
            self.b.ins().bitselect(mask, a, b)
        } else {
            self.b.ins().select(lt, a, b)
        }
    }

    /// `min(a, b)` of f32 or f32x4 values.
    pub fn min(&mut self, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let lt = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        if ty == F32X4 {
            let mask = self.b.ins().bitcast(F32X4, MemFlagsData::new(), lt);
            self.b.ins().bitselect(mask, a, b)
        } else {
            self.b.ins().select(lt, a, b)
        }
    }

    /// Applies an activation to an f32 or f32x4 value.
    pub fn activate(&mut self, v: Value, act: Option<Activation>) -> Value {
        let vector = self.b.func.dfg.value_type(v) == F32X4;
        let constant = |e: &mut Self, c: f32| if vector { e.splat(c) } else { e.f32(c) };
        match act {
            None => v,
            Some(Activation::Relu) => {
                let zero = constant(self, 0.0);
                self.max(v, zero)
            }
            Some(Activation::Relu6) => {
                let zero = constant(self, 0.0);
                let six = constant(self, 6.0);
                let r = self.max(v, zero);
                self.min(r, six)
            }
            Some(Activation::LeakyRelu { slope }) => {
                // x >= 0 ? x : slope * x, i.e. max(x, slope * x) for 0 <= slope <= 1; a select
                // keeps it exact for any slope.
                let s = constant(self, slope);
                let scaled = self.b.ins().fmul(v, s);
                let zero = constant(self, 0.0);
                let neg = self.b.ins().fcmp(FloatCC::LessThan, v, zero);
                if vector {
                    let mask = self.b.ins().bitcast(F32X4, MemFlagsData::new(), neg);
                    self.b.ins().bitselect(mask, scaled, v)
                } else {
                    self.b.ins().select(neg, scaled, v)
                }
            }
        }
    }
}
