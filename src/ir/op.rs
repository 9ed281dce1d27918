//! The operations of the graph IR: plain data, one variant per layer kind.

use std::fmt;

/// Zero-padding on each side of the two spatial axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    pub fn uniform(p: usize) -> Pad {
        Pad {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

impl fmt::Display for Pad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.top == self.bottom && self.top == self.left && self.top == self.right {
            write!(f, "{}", self.top)
        } else {
            write!(f, "{},{},{},{}", self.top, self.bottom, self.left, self.right)
        }
    }
}

/// Two spatial extents, height first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hw(pub usize, pub usize);

impl fmt::Display for Hw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.0, self.1)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub out_channels: usize,
    pub kernel: Hw,
    pub stride: Hw,
    pub pad: Pad,
    pub dilation: Hw,
    pub groups: usize,
    pub bias: bool,
}

impl Conv {
    /// A 1x1 convolution with stride 1 and no padding: a matrix multiply over pixels.
    pub fn pointwise(&self) -> bool {
        self.kernel == Hw(1, 1) && self.stride == Hw(1, 1) && self.pad == Pad::default() && self.dilation == Hw(1, 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: Hw,
    pub stride: Hw,
    pub pad: Pad,
    /// Output size rounds up instead of down (PyTorch `ceil_mode`).
    pub ceil: bool,
    /// Average pooling divides by the whole window, padded cells included.
    pub count_include_pad: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    Relu6,
    LeakyRelu { slope: f32 },
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Relu => write!(f, "relu"),
            Activation::Relu6 => write!(f, "relu6"),
            Activation::LeakyRelu { slope } => write!(f, "leaky_relu(slope={slope})"),
        }
    }
}

/// One operation. Tensors are NCHW (rank 4) or NF (rank 2, after `flatten` or `dense`).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The network input; its shape is the node's shape.
    Input,
    Conv(Conv),
    BatchNorm {
        eps: f32,
    },
    Act(Activation),
    Pool(Pool),
    GlobalPool(PoolKind),
    Dense {
        out_features: usize,
        bias: bool,
    },
    Flatten,
    /// Concatenation along channels, in input-port order.
    Concat,
    /// Elementwise sum of two tensors of the same shape.
    Add,
    /// Channels `start..end` of the input.
    Slice {
        start: usize,
        end: usize,
    },
    /// View channels as (groups, C/groups), transpose, flatten.
    Shuffle {
        groups: usize,
    },
    /// Identity at inference.
    Dropout {
        p: f32,
    },
    /// Softmax over the channel axis.
    Softmax,
    /// A chain of convolutions computed a few rows at a time, made by the `fuse_blocks` pass:
    /// never written by users, never seen by the reference interpreter.
    Block(Box<Block>),
}

/// One convolution of a fused [`Block`], with the work fused into it (its batchnorm, activation
/// and post-activation batchnorm; never a residual). Its parameters keep the convolution's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: String,
    pub conv: Conv,
    pub fused: super::Fused,
}

/// An inverted-residual block (1x1 expansion, depthwise convolution, 1x1 projection) or a
/// depthwise-separable pair (no first stage), possibly led by a dense convolution instead of the
/// expansion (MobileNetV2's stem before its first block). A residual add belongs to the block node
/// itself (`Fused::residual`), after the projection.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// A 1x1 expansion, or a dense convolution of any window (`groups == 1`).
    pub first: Option<Stage>,
    pub depthwise: Stage,
    pub project: Stage,
}

impl Block {
    /// The stages in the order they run.
    pub fn stages(&self) -> impl Iterator<Item = &Stage> {
        self.first.iter().chain([&self.depthwise, &self.project])
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.conv;
        write!(
            f,
            "{}(out={} kernel={} stride={}",
            self.name, c.out_channels, c.kernel, c.stride
        )?;
        if c.pad != Pad::default() {
            write!(f, " pad={}", c.pad)?;
        }
        if let Some(bn) = &self.fused.bn {
            write!(f, " +bn={}", bn.name)?;
        }
        if let Some(a) = self.fused.act {
            write!(f, " +{a}")?;
        }
        if let Some(bn) = &self.fused.post_bn {
            write!(f, " +post_bn={}", bn.name)?;
        }
        write!(f, ")")
    }
}

/// How many inputs an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Op {
    /// The op's name as the language spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv(_) => "conv",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Act(Activation::Relu) => "relu",
            Op::Act(Activation::Relu6) => "relu6",
            Op::Act(Activation::LeakyRelu { .. }) => "leaky_relu",
            Op::Pool(Pool {
                kind: PoolKind::Max, ..
            }) => "maxpool",
            Op::Pool(Pool {
                kind: PoolKind::Avg, ..
            }) => "avgpool",
            Op::GlobalPool(PoolKind::Max) => "global_maxpool",
            Op::GlobalPool(PoolKind::Avg) => "global_avgpool",
            Op::Dense { .. } => "dense",
            Op::Flatten => "flatten",
            Op::Concat => "concat",
            Op::Add => "add",
            Op::Slice { .. } => "slice",
            Op::Shuffle { .. } => "shuffle",
            Op::Dropout { .. } => "dropout",
            Op::Softmax => "softmax",
            Op::Block(_) => "block",
        }
    }

    pub fn arity(&self) -> Arity {
        match self {
            Op::Input => Arity::Exactly(0),
            Op::Concat => Arity::AtLeast(1),
            Op::Add => Arity::Exactly(2),
            _ => Arity::Exactly(1),
        }
    }

    /// The attributes as the IR printer shows them, `key=value` separated by spaces.
    pub fn attrs(&self) -> String {
        match self {
            Op::Conv(c) => {
                let mut s = format!(
                    "out={} kernel={} stride={} pad={}",
                    c.out_channels, c.kernel, c.stride, c.pad
                );
                if c.dilation != Hw(1, 1) {
                    s += &format!(" dilation={}", c.dilation);
                }
                if c.groups != 1 {
                    s += &format!(" groups={}", c.groups);
                }
                s += if c.bias { " bias" } else { " nobias" };
                s
            }
            Op::BatchNorm { eps } => format!("eps={eps:e}"),
            Op::Act(Activation::LeakyRelu { slope }) => format!("slope={slope}"),
            Op::Pool(p) => {
                let mut s = format!("kernel={} stride={} pad={}", p.kernel, p.stride, p.pad);
                if p.ceil {
                    s += " ceil";
                }
                if p.kind == PoolKind::Avg && !p.count_include_pad {
                    s += " exclude_pad";
                }
                s
            }
            Op::Dense { out_features, bias } => {
                format!("out={out_features}{}", if *bias { " bias" } else { " nobias" })
            }
            Op::Slice { start, end } => format!("channels={start}..{end}"),
            Op::Shuffle { groups } => format!("groups={groups}"),
            Op::Dropout { p } => format!("p={p}"),
            Op::Block(b) => {
                let mut parts = Vec::new();
                if let Some(e) = &b.first {
                    let role = if e.conv.pointwise() { "expand" } else { "conv" };
                    parts.push(format!("{role}={e}"));
                }
                parts.push(format!("depthwise={}", b.depthwise));
                parts.push(format!("project={}", b.project));
                parts.join(" ")
            }
            _ => String::new(),
        }
    }
}
