//! Shapes and the shape rule of every op: the single source of truth for what an op accepts and
//! what it produces. Elaboration calls [`infer`] as it builds each node (so errors point at the
//! source), and the shape pass calls it again on the whole graph after every rewrite.

use super::op::{Conv, Op, Pool};
use std::fmt;

/// Largest tensor the compiler accepts, in bytes of f32 elements (1 GiB).
pub const MAX_TENSOR_BYTES: u64 = 1 << 30;

/// Dimensions of a tensor: NCHW (rank 4) or NF (rank 2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn elements(&self) -> u64 {
        self.0.iter().map(|&d| d as u64).product()
    }

    pub fn bytes(&self) -> u64 {
        self.elements() * 4
    }

    /// Channels (axis 1).
    pub fn c(&self) -> usize {
        self.0[1]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Spatial axis names for messages.
pub const AXES: [&str; 2] = ["height", "width"];

/// Why an op cannot take the shapes it was given.
#[derive(Clone, Debug, PartialEq)]
pub enum ShapeError {
    /// An input has the wrong rank (`expected` lists the accepted ranks).
    Rank {
        input: usize,
        expected: &'static [usize],
        found: Shape,
    },
    /// A size attribute is zero.
    ZeroAttr { attr: &'static str },
    /// Input channels not divisible by the group count.
    GroupsInput { channels: usize, groups: usize },
    /// Output channels not divisible by the group count.
    GroupsOutput { channels: usize, groups: usize },
    /// The (dilated) kernel does not fit in the padded input along one axis.
    KernelTooLarge {
        axis: usize,
        kernel: usize,
        padded: usize,
        input: usize,
    },
    /// Padding of a pooling window as large as the window itself.
    PoolPadding { axis: usize, pad: usize, kernel: usize },
    /// Two inputs of an elementwise op differ.
    Mismatch { left: Shape, right: Shape },
    /// An input of a concatenation differs from the first one outside the channel axis.
    ConcatMismatch {
        input: usize,
        axis: usize,
        first: Shape,
        found: Shape,
    },
    /// Channel range outside the input.
    SliceRange { start: usize, end: usize, channels: usize },
    /// The output (or, with `weight`, the op's weight tensor) would be larger than
    /// [`MAX_TENSOR_BYTES`].
    TooLarge { shape: Shape, bytes: u128, weight: bool },
    /// The number of inputs is wrong.
    Arity { expected: usize, found: usize },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShapeError::Rank { input, expected, found } => {
                write!(
                    f,
                    "input {input} has rank {}, expected rank {expected:?} (shape {found})",
                    found.rank()
                )
            }
            ShapeError::ZeroAttr { attr } => write!(f, "`{attr}` must be at least 1"),
            ShapeError::GroupsInput { channels, groups } => {
                write!(f, "{groups} groups do not divide the {channels} input channels")
            }
            ShapeError::GroupsOutput { channels, groups } => {
                write!(f, "{groups} groups do not divide the {channels} output channels")
            }
            ShapeError::KernelTooLarge {
                axis, kernel, padded, ..
            } => {
                write!(
                    f,
                    "kernel {} {kernel} is larger than the padded input {padded}",
                    AXES[*axis]
                )
            }
            ShapeError::PoolPadding { axis, pad, kernel } => {
                write!(
                    f,
                    "{} padding {pad} is not smaller than the window {kernel}",
                    AXES[*axis]
                )
            }
            ShapeError::Mismatch { left, right } => write!(f, "shapes {left} and {right} differ"),
            ShapeError::ConcatMismatch {
                input, first, found, ..
            } => {
                write!(f, "input {input} has shape {found}, incompatible with {first}")
            }
            ShapeError::SliceRange { start, end, channels } => {
                write!(f, "channels {start}..{end} are outside the input's {channels} channels")
            }
            ShapeError::TooLarge { shape, bytes, weight } => {
                let what = if *weight { "weight tensor" } else { "tensor" };
                write!(f, "{what} {shape} takes {bytes} bytes")
            }
            ShapeError::Arity { expected, found } => write!(f, "takes {expected} inputs, found {found}"),
        }
    }
}

fn rank(inputs: &[&Shape], i: usize, expected: &'static [usize]) -> Result<(), ShapeError> {
    if expected.contains(&inputs[i].rank()) {
        Ok(())
    } else {
        Err(ShapeError::Rank {
            input: i,
            expected,
            found: inputs[i].clone(),
        })
    }
}

fn nonzero(v: usize, attr: &'static str) -> Result<(), ShapeError> {
    if v == 0 {
        Err(ShapeError::ZeroAttr { attr })
    } else {
        Ok(())
    }
}

/// Output extent of a sliding window along one axis (convolution or pooling).
fn window(
    axis: usize,
    input: usize,
    pad: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
    ceil: bool,
) -> Result<usize, ShapeError> {
    let padded = input as u128 + pad.0 as u128 + pad.1 as u128;
    let effective = dilation as u128 * (kernel as u128 - 1) + 1;
    if effective > padded {
        return Err(ShapeError::KernelTooLarge {
            axis,
            kernel: effective.min(usize::MAX as u128) as usize,
            padded: padded.min(usize::MAX as u128) as usize,
            input,
        });
    }
    let span = padded - effective;
    let stride = stride as u128;
    let mut out = if ceil {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    // PyTorch: in ceil mode the last window must start inside the input or its leading padding.
    if ceil && (out - 1) * stride >= input as u128 + pad.0 as u128 {
        out -= 1;
    }
    Ok(out as usize)
}

fn conv_shape(c: &Conv, x: &Shape) -> Result<Shape, ShapeError> {
    nonzero(c.out_channels, "out")?;
    nonzero(c.groups, "groups")?;
    for (v, name) in [
        (c.kernel.0, "kernel"),
        (c.kernel.1, "kernel"),
        (c.stride.0, "stride"),
        (c.stride.1, "stride"),
    ] {
        nonzero(v, name)?;
    }
    nonzero(c.dilation.0, "dilation")?;
    nonzero(c.dilation.1, "dilation")?;
    let [n, ch, h, w] = [x.0[0], x.0[1], x.0[2], x.0[3]];
    if ch % c.groups != 0 {
        return Err(ShapeError::GroupsInput {
            channels: ch,
            groups: c.groups,
        });
    }
    if !c.out_channels.is_multiple_of(c.groups) {
        return Err(ShapeError::GroupsOutput {
            channels: c.out_channels,
            groups: c.groups,
        });
    }
    check_size(&Shape(vec![c.out_channels, ch / c.groups, c.kernel.0, c.kernel.1])).map_err(as_weight)?;
    let oh = window(
        0,
        h,
        (c.pad.top, c.pad.bottom),
        c.kernel.0,
        c.stride.0,
        c.dilation.0,
        false,
    )?;
    let ow = window(
        1,
        w,
        (c.pad.left, c.pad.right),
        c.kernel.1,
        c.stride.1,
        c.dilation.1,
        false,
    )?;
    Ok(Shape(vec![n, c.out_channels, oh, ow]))
}

fn pool_shape(p: &Pool, x: &Shape) -> Result<Shape, ShapeError> {
    for (v, name) in [
        (p.kernel.0, "kernel"),
        (p.kernel.1, "kernel"),
        (p.stride.0, "stride"),
        (p.stride.1, "stride"),
    ] {
        nonzero(v, name)?;
    }
    for (axis, pad, kernel) in [
        (0, p.pad.top.max(p.pad.bottom), p.kernel.0),
        (1, p.pad.left.max(p.pad.right), p.kernel.1),
    ] {
        if pad >= kernel {
            return Err(ShapeError::PoolPadding { axis, pad, kernel });
        }
    }
    let oh = window(0, x.0[2], (p.pad.top, p.pad.bottom), p.kernel.0, p.stride.0, 1, p.ceil)?;
    let ow = window(1, x.0[3], (p.pad.left, p.pad.right), p.kernel.1, p.stride.1, 1, p.ceil)?;
    Ok(Shape(vec![x.0[0], x.0[1], oh, ow]))
}

/// The output shape of `op` applied to `inputs`, or why the inputs do not fit.
pub fn infer(op: &Op, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
    use super::op::Arity;
    match op.arity() {
        Arity::Exactly(n) if inputs.len() != n => {
            return Err(ShapeError::Arity {
                expected: n,
                found: inputs.len(),
            })
        }
        Arity::AtLeast(n) if inputs.len() < n => {
            return Err(ShapeError::Arity {
                expected: n,
                found: inputs.len(),
            })
        }
        _ => {}
    }
    let out = match op {
        Op::Input => unreachable!("input shapes are given, not inferred"),
        Op::Conv(c) => {
            rank(inputs, 0, &[4])?;
            conv_shape(c, inputs[0])?
        }
        Op::Block(b) => {
            rank(inputs, 0, &[4])?;
            let mut s = inputs[0].clone();
            for stage in b.stages() {
                s = conv_shape(&stage.conv, &s)?;
            }
            s
        }
        Op::Pool(p) => {
            rank(inputs, 0, &[4])?;
            pool_shape(p, inputs[0])?
        }
        Op::GlobalPool(_) => {
            rank(inputs, 0, &[4])?;
            Shape(vec![inputs[0].0[0], inputs[0].0[1], 1, 1])
        }
        Op::BatchNorm { .. } | Op::Softmax => {
            rank(inputs, 0, &[2, 4])?;
            inputs[0].clone()
        }
        Op::Act(_) | Op::Dropout { .. } => inputs[0].clone(),
        Op::Dense { out_features, .. } => {
            rank(inputs, 0, &[2])?;
            nonzero(*out_features, "out")?;
            check_size(&Shape(vec![*out_features, inputs[0].0[1]])).map_err(as_weight)?;
            Shape(vec![inputs[0].0[0], *out_features])
        }
        Op::Flatten => {
            rank(inputs, 0, &[2, 4])?;
            let x = inputs[0];
            Shape(vec![x.0[0], x.0[1..].iter().product()])
        }
        Op::Concat => {
            let first = inputs[0];
            rank(inputs, 0, &[2, 4])?;
            let mut channels = 0usize;
            for (i, s) in inputs.iter().enumerate() {
                if s.rank() != first.rank() {
                    return Err(ShapeError::ConcatMismatch {
                        input: i,
                        axis: 1,
                        first: first.clone(),
                        found: (*s).clone(),
                    });
                }
                for axis in (0..s.rank()).filter(|&a| a != 1) {
                    if s.0[axis] != first.0[axis] {
                        return Err(ShapeError::ConcatMismatch {
                            input: i,
                            axis,
                            first: first.clone(),
                            found: (*s).clone(),
                        });
                    }
                }
                channels += s.0[1];
            }
            let mut out = first.clone();
            out.0[1] = channels;
            out
        }
        Op::Add => {
            if inputs[0] != inputs[1] {
                return Err(ShapeError::Mismatch {
                    left: inputs[0].clone(),
                    right: inputs[1].clone(),
                });
            }
            inputs[0].clone()
        }
        Op::Slice { start, end } => {
            rank(inputs, 0, &[2, 4])?;
            let channels = inputs[0].0[1];
            if start >= end || *end > channels {
                return Err(ShapeError::SliceRange {
                    start: *start,
                    end: *end,
                    channels,
                });
            }
            let mut out = inputs[0].clone();
            out.0[1] = end - start;
            out
        }
        Op::Shuffle { groups } => {
            rank(inputs, 0, &[4])?;
            nonzero(*groups, "groups")?;
            let channels = inputs[0].0[1];
            if !channels.is_multiple_of(*groups) {
                return Err(ShapeError::GroupsInput {
                    channels,
                    groups: *groups,
                });
            }
            inputs[0].clone()
        }
    };
    check_size(&out)?;
    Ok(out)
}

/// Rejects tensors larger than [`MAX_TENSOR_BYTES`] or with a zero dimension.
pub fn check_size(shape: &Shape) -> Result<(), ShapeError> {
    let bytes = shape.0.iter().fold(4u128, |acc, &d| acc.saturating_mul(d as u128));
    if bytes > MAX_TENSOR_BYTES as u128 {
        return Err(ShapeError::TooLarge {
            shape: shape.clone(),
            bytes,
            weight: false,
        });
    }
    Ok(())
}

fn as_weight(e: ShapeError) -> ShapeError {
    match e {
        ShapeError::TooLarge { shape, bytes, .. } => ShapeError::TooLarge {
            shape,
            bytes,
            weight: true,
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{Activation, Hw, Pad, PoolKind};

    fn conv(out: usize, k: usize, s: usize, p: usize, groups: usize) -> Op {
        Op::Conv(Conv {
            out_channels: out,
            kernel: Hw(k, k),
            stride: Hw(s, s),
            pad: Pad::uniform(p),
            dilation: Hw(1, 1),
            groups,
            bias: true,
        })
    }

    fn pool(k: usize, s: usize, p: usize, ceil: bool) -> Op {
        Op::Pool(Pool {
            kind: PoolKind::Max,
            kernel: Hw(k, k),
            stride: Hw(s, s),
            pad: Pad::uniform(p),
            ceil,
            count_include_pad: true,
        })
    }

    fn nchw(c: usize, h: usize, w: usize) -> Shape {
        Shape(vec![1, c, h, w])
    }

    #[test]
    fn conv_output_size_floors() {
        // SqueezeNet v1.0's conv1 on a 224 input: (224 - 7) / 2 + 1 = 109.
        assert_eq!(
            infer(&conv(96, 7, 2, 0, 1), &[&nchw(3, 224, 224)]),
            Ok(nchw(96, 109, 109))
        );
        assert_eq!(
            infer(&conv(32, 3, 2, 1, 1), &[&nchw(3, 224, 224)]),
            Ok(nchw(32, 112, 112))
        );
    }

    #[test]
    fn ceil_mode_pooling_matches_pytorch() {
        // torchvision's SqueezeNet at 224: 109 -> 54 -> 27 -> 13 with 3x3/2 ceil-mode pooling.
        assert_eq!(
            infer(&pool(3, 2, 0, true), &[&nchw(96, 109, 109)]),
            Ok(nchw(96, 54, 54))
        );
        assert_eq!(
            infer(&pool(3, 2, 0, true), &[&nchw(256, 54, 54)]),
            Ok(nchw(256, 27, 27))
        );
        assert_eq!(
            infer(&pool(3, 2, 0, true), &[&nchw(512, 27, 27)]),
            Ok(nchw(512, 13, 13))
        );
        assert_eq!(infer(&pool(3, 2, 0, false), &[&nchw(96, 54, 54)]), Ok(nchw(96, 26, 26)));
        // The last window may not start in the trailing padding: 2x2/2, pad 1, input 4 gives 3, not 4.
        assert_eq!(infer(&pool(2, 2, 1, true), &[&nchw(1, 4, 4)]), Ok(nchw(1, 3, 3)));
    }

    #[test]
    fn groups_must_divide_both_channel_counts() {
        assert_eq!(
            infer(&conv(240, 1, 1, 0, 3), &[&nchw(100, 8, 8)]),
            Err(ShapeError::GroupsInput {
                channels: 100,
                groups: 3
            })
        );
        assert_eq!(
            infer(&conv(100, 1, 1, 0, 3), &[&nchw(99, 8, 8)]),
            Err(ShapeError::GroupsOutput {
                channels: 100,
                groups: 3
            })
        );
    }

    #[test]
    fn kernel_larger_than_padded_input_is_an_error() {
        assert_eq!(
            infer(&conv(8, 5, 1, 1, 1), &[&nchw(3, 2, 2)]),
            Err(ShapeError::KernelTooLarge {
                axis: 0,
                kernel: 5,
                padded: 4,
                input: 2
            })
        );
    }

    #[test]
    fn concat_and_add_check_the_other_dimensions() {
        assert_eq!(
            infer(&Op::Concat, &[&nchw(4, 8, 8), &nchw(6, 8, 8)]),
            Ok(nchw(10, 8, 8))
        );
        assert!(matches!(
            infer(&Op::Concat, &[&nchw(4, 8, 8), &nchw(6, 7, 8)]),
            Err(ShapeError::ConcatMismatch { input: 1, axis: 2, .. })
        ));
        assert!(matches!(
            infer(&Op::Add, &[&nchw(4, 8, 8), &nchw(5, 8, 8)]),
            Err(ShapeError::Mismatch { .. })
        ));
        assert_eq!(infer(&Op::Act(Activation::Relu6), &[&nchw(4, 8, 8)]), Ok(nchw(4, 8, 8)));
    }

    #[test]
    fn huge_outputs_and_weights_are_rejected() {
        assert!(matches!(
            infer(&conv(1 << 20, 1, 1, 0, 1), &[&nchw(3, 1024, 1024)]),
            Err(ShapeError::TooLarge { weight: false, .. })
        ));
        assert!(matches!(
            infer(&conv(1 << 16, 1, 1, 0, 1), &[&Shape(vec![1, 1 << 16, 1, 1])]),
            Err(ShapeError::TooLarge { weight: true, .. })
        ));
    }
}
