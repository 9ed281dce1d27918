//! The converted graph as `.net` text: one line per layer, consecutive layers of a single path
//! chained with `|>`, every layer labelled with `as` so that node and weight names are the ONNX
//! node names.

use super::convert::{Call, Converted};
use super::names::Names;
use std::collections::HashSet;
use std::fmt::Write;

/// The `.net` source of a converted graph.
pub fn emit(c: &Converted, net: &str, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "# {line}");
    }
    let input = &c.values[0];
    let _ = writeln!(out, "net {net} {{");
    let _ = writeln!(
        out,
        "    input {}: [{}, {}, {}]",
        c.input_label, input.shape[1], input.shape[2], input.shape[3]
    );
    let mut names = Names::default();
    let mut var: Vec<Option<String>> = vec![None; c.values.len()];
    // The input's variable is its label, which is a valid identifier only if it has no dots.
    var[0] = Some(c.input_label.clone());
    names.var(&c.input_label);
    let mut uses = vec![0usize; c.values.len()];
    for l in &c.layers {
        for &v in &l.inputs {
            uses[v] += 1;
        }
    }
    let outputs: HashSet<usize> = c.outputs.iter().copied().collect();
    for &v in &c.outputs {
        uses[v] += 1;
    }

    // The statement being built: its head and the piped lines after it.
    struct Chain {
        lines: Vec<String>,
        value: usize,
    }
    let mut open: Option<Chain> = None;
    let close = |open: &mut Option<Chain>, out: &mut String, names: &mut Names, var: &mut Vec<Option<String>>| {
        if let Some(ch) = open.take() {
            let name = names.var(&c.values[ch.value].hint);
            let _ = write!(out, "    let {name} = {}", ch.lines[0]);
            if ch.lines.len() == 2 && !ch.lines[0].contains('#') {
                let _ = writeln!(out, " {}", ch.lines[1]);
            } else {
                let _ = writeln!(out);
                for l in &ch.lines[1..] {
                    let _ = writeln!(out, "        {l}");
                }
            }
            var[ch.value] = Some(name);
        }
    };
    let var_of = |var: &Vec<Option<String>>, v: usize| var[v].clone().unwrap_or_else(|| "_".into());
    for l in &c.layers {
        let comment = l.comment.as_ref().map(|t| format!("  # {t}")).unwrap_or_default();
        match &l.call {
            Call::Pipe(text) => {
                let x = l.inputs[0];
                let step = format!("|> {text} as {}{comment}", l.name);
                let continues = open.as_ref().is_some_and(|ch| ch.value == x) && uses[x] == 1 && !outputs.contains(&x);
                if continues {
                    if let Some(ch) = open.as_mut() {
                        ch.lines.push(step);
                        ch.value = l.outputs[0];
                    }
                } else {
                    close(&mut open, &mut out, &mut names, &mut var);
                    open = Some(Chain {
                        lines: vec![var_of(&var, x), step],
                        value: l.outputs[0],
                    });
                }
            }
            Call::Multi(f) => {
                close(&mut open, &mut out, &mut names, &mut var);
                let args: Vec<String> = l.inputs.iter().map(|&v| var_of(&var, v)).collect();
                open = Some(Chain {
                    lines: vec![format!("{f}({}) as {}{comment}", args.join(", "), l.name)],
                    value: l.outputs[0],
                });
            }
            Call::Split(parts) => {
                close(&mut open, &mut out, &mut names, &mut var);
                let vars: Vec<String> = l.outputs.iter().map(|&v| names.var(&c.values[v].hint)).collect();
                let _ = writeln!(
                    out,
                    "    let ({}) = split({}, {parts}) as {}{comment}",
                    vars.join(", "),
                    var_of(&var, l.inputs[0]),
                    l.name
                );
                for (&v, name) in l.outputs.iter().zip(vars) {
                    var[v] = Some(name);
                }
            }
        }
    }
    close(&mut open, &mut out, &mut names, &mut var);
    let rets: Vec<String> = c.outputs.iter().map(|&v| var_of(&var, v)).collect();
    if rets.len() == 1 {
        let _ = writeln!(out, "    return {}", rets[0]);
    } else {
        let _ = writeln!(out, "    return ({})", rets.join(", "));
    }
    out.push_str("}\n");
    out
}
