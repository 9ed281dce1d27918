//! Diagnostic constructors of the parser.

use super::Rule;
use crate::diag::Diagnostic;
use crate::source::Span;

/// The words a user knows for what the parser expected at a position.
fn describe(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        EOI => "end of file",
        include | const_def | fn_def | block_def | net_def => "`include`, `const`, `fn`, `block` or `net`",
        ident => "a name",
        params | param => "a parameter",
        body => "`{`",
        input_stmt | let_stmt | for_stmt | if_stmt | return_stmt | assign_stmt => "a statement",
        tuple_pattern => "a name or a tuple of names",
        expr | operation | postfix_expr | float | int | bool | string | call | paren | tuple | list | neg
        | not => "an expression",
        pipe | or | and | eq | ne | le | ge | lt | gt | add | sub | floordiv | mul | div | rem => "an operator",
        kw_if => "`if`",
        kw_else => "`else`",
        kw_as | label => "`as`",
        label_name | label_part | label_text | label_interp => "a node name",
        field => "`.`",
        index => "`[`",
        call_args => "`(`",
        named_arg => "an argument",
        string_text => "text",
        _ => return None,
    })
}

fn expected_list(rules: &[Rule]) -> String {
    let mut words: Vec<&str> = Vec::new();
    for r in rules {
        if let Some(w) = describe(*r) {
            if !words.contains(&w) {
                words.push(w);
            }
        }
    }
    match words.len() {
        0 => String::new(),
        1 => words[0].to_string(),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

/// What is at `pos`: the next token-like piece of text, for the message.
fn found_at(text: &str, pos: usize) -> String {
    let rest = &text[pos.min(text.len())..];
    let token: String = match rest.chars().next() {
        None => return "end of file".to_string(),
        Some(c) if c.is_alphanumeric() || c == '_' => {
            rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect()
        }
        Some(c) => c.to_string(),
    };
    if token == "\n" {
        "end of line".to_string()
    } else {
        format!("`{token}`")
    }
}

pub fn syntax(span: Span, text: &str, positives: &[Rule]) -> Diagnostic {
    let found = found_at(text, span.start);
    let expected = expected_list(positives);
    let message = if expected.is_empty() {
        format!("syntax error: unexpected {found}")
    } else {
        format!("syntax error: expected {expected}, found {found}")
    };
    let label = if expected.is_empty() { "unexpected here".to_string() } else { format!("expected {expected}") };
    let mut d = Diagnostic::error("E0101", message).with_primary(span, label);
    if positives.contains(&Rule::ident) && keyword_at(text, span.start) {
        d = d.with_help("this word is a keyword of the language and cannot be used as a name");
    }
    d
}

fn keyword_at(text: &str, pos: usize) -> bool {
    const KEYWORDS: [&str; 17] = [
        "include", "const", "fn", "block", "net", "let", "for", "in", "if", "else", "return", "and", "or", "not",
        "true", "false", "as",
    ];
    let word: String =
        text[pos.min(text.len())..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    KEYWORDS.contains(&word.as_str())
}

pub fn too_large(span: Span, bytes: usize, limit: usize) -> Diagnostic {
    Diagnostic::error("E0102", format!("source file is too large ({bytes} bytes)"))
        .with_primary(span, "file starts here")
        .with_note(format!("the limit is {limit} bytes"))
}

pub fn too_deep(span: Span, limit: usize) -> Diagnostic {
    Diagnostic::error("E0103", "brackets are nested too deeply")
        .with_primary(span, format!("nesting depth exceeds {limit} here"))
        .with_help("bind inner values to names with `let`")
}

pub fn too_many_operators(span: Span, count: usize, limit: usize) -> Diagnostic {
    Diagnostic::error("E0104", format!("expression has too many operators ({count})"))
        .with_primary(span, format!("at most {limit} operators in one expression"))
        .with_help("split it into several `let` bindings")
}

pub fn bad_number(span: Span, text: &str) -> Diagnostic {
    Diagnostic::error("E0105", format!("number `{text}` is out of range"))
        .with_primary(span, "does not fit a 64-bit integer or float")
}

pub fn pipe_target(span: Span) -> Diagnostic {
    Diagnostic::error("E0106", "the right side of `|>` must be a layer or block call")
        .with_primary(span, "not a call")
        .with_help("`|>` binds loosest of all operators: write `x |> conv(16, 1)`, or `(x |> conv(16, 1)) + y`")
}

pub fn unclosed_bracket(span: Span, open: char) -> Diagnostic {
    Diagnostic::error("E0101", format!("syntax error: `{open}` is never closed")).with_primary(span, "opened here")
}

pub fn unmatched_bracket(span: Span, close: char) -> Diagnostic {
    Diagnostic::error("E0101", format!("syntax error: unexpected `{close}`")).with_primary(span, "nothing to close here")
}
