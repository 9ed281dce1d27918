//! Host functions that generated code calls: Rust functions registered as symbols of the JIT
//! module and imported into the kernels that list them ([`Kernel::host_fns`]).
//!
//! Cranelift's x64 backend emits no vector wider than 128 bits, so the wide register tiles are
//! Rust `std::arch` functions called from the generated loop nests; `expf` is the host's. A
//! [`HostFn`] names its symbol, its Cranelift signature and its address, which is `None` on a CPU
//! that cannot run it: such a function is not registered, and a kernel asking for it is an
//! internal error (kernels choose their path from [`Isa::level`](super::Isa::level)).
//!
//! [`Kernel::host_fns`]: super::kernels::Kernel::host_fns

use super::kernels;

/// A parameter or result type of a host function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Ptr,
    I64,
    F32,
}

/// A host function generated code may call.
pub struct HostFn {
    pub symbol: &'static str,
    pub params: &'static [Ty],
    pub returns: &'static [Ty],
    /// The function's address, or `None` if this CPU cannot run it.
    pub address: fn() -> Option<*const u8>,
}

extern "C" fn host_expf(x: f32) -> f32 {
    x.exp()
}

/// The host's `expf`, imported into every kernel.
pub static EXPF: HostFn = HostFn {
    symbol: "netc_expf",
    params: &[Ty::F32],
    returns: &[Ty::F32],
    address: || Some(host_expf as *const u8),
};

/// Every host function, registered with each JIT module when its address is known.
pub static ALL: &[&HostFn] = &[
    &EXPF,
    &kernels::avx2::GEMM,
    &kernels::avx2_dot::DOT,
    &kernels::avx512::GEMM,
    &kernels::direct_wide::AVX512,
    &kernels::direct_wide::AVX2,
    &kernels::depthwise_wide::AVX2,
    &kernels::pool_wide::AVX2,
    &kernels::winograd::AVX2,
    &kernels::conv_pool::MAXPOOL_RING,
    &kernels::pool_wide::RING_AVX2,
];
