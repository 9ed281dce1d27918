//! The `netc` command line: argument parsing and printing only.

use clap::{Args, Parser, Subcommand, ValueEnum};
use netc::diag::Diagnostic;
use netc::runtime::{input, Tensor};
use netc::{compile_file, diag, ir, passes, report, Compiled, Options};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "netc",
    version,
    about = "Check, measure and compile .net convolutional network descriptions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// The .net file.
    file: PathBuf,
    /// Override a hyperparameter: --set alpha=0.5 (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Batch size of the input.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Check a description; print diagnostics and exit 1 if it has errors.
    Check(Common),
    /// Print the per-layer table of parameters, MACs and activation memory.
    Stats {
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the graph IR as text.
    Ir {
        #[command(flatten)]
        common: Common,
        /// Stop after this stage: elaborate, or a pass name.
        #[arg(long, value_name = "PASS")]
        after: Option<String>,
    },
    /// Print the graph as Graphviz DOT.
    Dot(Common),
    /// List every weight tensor the network expects: name, shape, dtype.
    Weights {
        #[command(flatten)]
        common: Common,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a seeded initialization of the network's weights as safetensors.
    Init {
        #[command(flatten)]
        common: Common,
        /// The safetensors file to write.
        #[arg(short, long, value_name = "W.safetensors")]
        output: PathBuf,
        /// Seed of the initialization.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run the network on an image, a .npy tensor or a seeded random input.
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// The reference interpreter: slow and obviously correct.
    Reference,
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    /// torchvision's ImageNet mean and standard deviation.
    Imagenet,
    /// Scale to [-1, 1].
    Inception,
    /// Keep [0, 1].
    None,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Weights (safetensors). Without it, the seeded initialization is used.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Input: a PNG or JPEG image, or a .npy float32 tensor of the input's shape.
    /// Without it, a seeded random tensor.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Write the raw output tensor to this .npy file.
    #[arg(long, value_name = "OUT.npy")]
    output: Option<PathBuf>,
    /// How many classes to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Class names, one per line.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// The engine that runs the network.
    #[arg(long, value_enum, default_value_t = Engine::Reference)]
    engine: Engine,
    /// Seed of the initialization and of the random input.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image normalization preset.
    #[arg(long, value_enum, default_value_t = Preset::Imagenet)]
    normalize: Preset,
    /// Image mean per channel, R,G,B (overrides the preset).
    #[arg(long, value_name = "R,G,B")]
    mean: Option<String>,
    /// Image standard deviation per channel, R,G,B (overrides the preset).
    #[arg(long, value_name = "R,G,B")]
    std: Option<String>,
}

/// Prints a diagnostic that points at no source.
fn fail(d: Diagnostic) -> ExitCode {
    diag::emit_stderr(&netc::source::SourceMap::new(), &[d]);
    ExitCode::FAILURE
}

fn weights_table(c: &Compiled, json: bool) -> String {
    let specs = c.expected_weights();
    if json {
        let items: Vec<serde_json::Value> = specs
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "shape": s.shape, "dtype": "F32"}))
            .collect();
        return serde_json::to_string_pretty(&items).unwrap_or_default() + "\n";
    }
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:width$}  {:20}  dtype\n", "name", "shape");
    let mut total = 0usize;
    for s in &specs {
        let shape = format!("{:?}", s.shape);
        out += &format!("{:width$}  {:20}  F32\n", s.name, shape);
        total += s.shape.iter().product::<usize>();
    }
    out += &format!("{} tensors, {} values\n", specs.len(), report::thousands(total as u64));
    out
}

/// The image normalization the flags ask for.
fn normalization(args: &RunArgs) -> Result<input::Normalize, Diagnostic> {
    let preset = match args.normalize {
        Preset::Imagenet => "imagenet",
        Preset::Inception => "inception",
        Preset::None => "none",
    };
    let mut norm = input::Normalize::preset(preset).expect("every preset is defined");
    if let Some(m) = &args.mean {
        norm.mean = input::Normalize::triple(m, "--mean")?;
    }
    if let Some(s) = &args.std {
        norm.std = input::Normalize::triple(s, "--std")?;
        if norm.std.contains(&0.0) {
            return Err(netc::runtime::errors::bad_normalization("--std", s));
        }
    }
    Ok(norm)
}

fn load_input(args: &RunArgs, shape: &[usize], norm: input::Normalize) -> Result<Tensor, Diagnostic> {
    let Some(path) = &args.input else {
        eprintln!("note: no --input given; running on a random input (seed {})", args.seed);
        return Ok(input::random(shape, args.seed));
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "npy" {
        input::npy(path, shape)
    } else {
        input::image(path, shape, norm)
    }
}

fn read_labels(path: &std::path::Path) -> Result<Vec<String>, Diagnostic> {
    let source = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| netc::runtime::errors::bad_labels(&source, &e.to_string()))?;
    let text = String::from_utf8(text).map_err(|_| netc::runtime::errors::bad_labels(&source, "not UTF-8 text"))?;
    Ok(text.lines().map(|l| l.trim().to_string()).collect())
}

fn run_network(args: &RunArgs) -> ExitCode {
    let norm = match normalization(args) {
        Ok(n) => n,
        Err(d) => return fail(d),
    };
    let c = match compile(&args.common, None) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let weights = match &args.weights {
        Some(path) => match c.load_weights(path) {
            Ok(w) => w,
            Err(d) => return fail(d),
        },
        None => {
            eprintln!(
                "note: no --weights given; using the seeded initialization (seed {})",
                args.seed
            );
            c.init_weights(args.seed)
        }
    };
    let labels = match args.labels.as_deref().map(read_labels).transpose() {
        Ok(l) => l,
        Err(d) => return fail(d),
    };
    let x = match load_input(args, c.input_shape(), norm) {
        Ok(x) => x,
        Err(d) => return fail(d),
    };
    let outputs = match args.engine {
        Engine::Reference => c.run_reference(&weights, &x),
    };
    let outputs = match outputs {
        Ok(o) => o,
        Err(d) => return fail(d),
    };
    let out = &outputs[0];
    if let Some(path) = &args.output {
        if let Err(d) = input::save_npy(path, out) {
            return fail(d);
        }
    }
    let batch = out.shape[0];
    for item in 0..batch {
        if batch > 1 {
            println!("batch item {item}:");
        }
        for (rank, (class, p)) in input::top_k(out, item, args.top, c.outputs_probabilities())
            .iter()
            .enumerate()
        {
            let label = labels
                .as_ref()
                .and_then(|l| l.get(*class))
                .map(|s| format!("  {s}"))
                .unwrap_or_default();
            println!("{:>3}. class {:>5}  {:.6}{label}", rank + 1, class, p);
        }
    }
    ExitCode::SUCCESS
}

fn compile(common: &Common, after: Option<&str>) -> Result<Compiled, ExitCode> {
    let mut overrides = Vec::new();
    for s in &common.set {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => overrides.push((k.trim().to_string(), v.to_string())),
            _ => {
                let sources = netc::source::SourceMap::new();
                diag::emit_stderr(&sources, &[netc::elab::errors::malformed_set(s)]);
                return Err(ExitCode::FAILURE);
            }
        }
    }
    let options = Options {
        overrides,
        batch: common.batch as usize,
    };
    compile_file(&common.file, &options, after).map_err(|f| {
        diag::emit_stderr(&f.sources, &f.diagnostics);
        ExitCode::FAILURE
    })
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(common) => match compile(&common, None) {
            Ok(c) => {
                eprintln!("{}: ok ({} nodes)", common.file.display(), c.graph.node_count());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Stats { common, json } => match compile(&common, None) {
            Ok(c) => {
                if json {
                    match serde_json::to_string_pretty(&report::stats(&c.graph)) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    print!("{}", report::table(&c.graph));
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Ir { common, after } => {
            if let Some(a) = &after {
                let names = passes::stage_names();
                if !names.contains(&a.as_str()) {
                    eprintln!("error: unknown stage `{a}`; stages are: {}", names.join(", "));
                    return ExitCode::FAILURE;
                }
            }
            match compile(&common, after.as_deref()) {
                Ok(c) => {
                    print!("{}", ir::print::print(&c.graph));
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Dot(common) => match compile(&common, None) {
            Ok(c) => {
                print!("{}", ir::dot::dot(&c.graph));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Weights { common, json } => match compile(&common, None) {
            Ok(c) => {
                print!("{}", weights_table(&c, json));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Init { common, output, seed } => match compile(&common, None) {
            Ok(c) => {
                let w = c.init_weights(seed);
                match w.save(&output) {
                    Ok(()) => {
                        eprintln!("wrote {} tensors to {}", w.len(), output.display());
                        ExitCode::SUCCESS
                    }
                    Err(d) => fail(d),
                }
            }
            Err(code) => code,
        },
        Command::Run(args) => run_network(&args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Compile on a thread with a generous stack: elaboration recurses through nested blocks.
    let worker = std::thread::Builder::new().stack_size(64 << 20).spawn(move || run(cli));
    match worker.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        _ => {
            eprintln!("error: the compiler thread failed");
            ExitCode::FAILURE
        }
    }
}
