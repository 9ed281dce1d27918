//! The `netc` command line: argument parsing and printing only.

use clap::{Args, Parser, Subcommand};
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
