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
        input_stmt | let_stmt | for_stmt | if_stmt | return_stmt | assert_stmt | assign_stmt => "a statement",
        tuple_pattern => "a tuple of names",
        expr | operation | postfix_expr | float | int | bool | string | call | paren | tuple | list | neg | not => {
            "an expression"
        }
        pipe | or | and | eq | ne | le | ge | lt | gt | in_op | add | sub | floordiv | mul | div | rem => "an operator",
        kw_if => "`if`",
        kw_else => "`else`",
        kw_as | label => "`as`",
        label_name | label_part | label_text | label_interp => "a node name",
        field => "`.`",
        index => "`[`",
        call_args => "`(`",
        tuple_comma => "`,`",
        named_arg => "an argument",
        string_text => "text",
        _ => return None,
    })
}

/// Order of the words in "expected ...": what most likely completes the program comes first.
const WORD_ORDER: [&str; 19] = [
    "`,`",
    "a name",
    "a tuple of names",
    "an expression",
    "an argument",
    "a parameter",
    "a node name",
    "text",
    "an operator",
    "`else`",
    "`{`",
    "`(`",
    "a statement",
    "`include`, `const`, `fn`, `block` or `net`",
    "end of file",
    "`.`",
    "`[`",
    "`if`",
    "`as`",
];

/// Words that continue any expression (`x.c`, `x[0]`, `a if c else b`, `conv(...) as n`). They are
/// always possible after an expression, so they are left out when something else is expected.
const CONTINUATIONS: [&str; 4] = ["`.`", "`[`", "`if`", "`as`"];

/// The punctuation of the language that `expected_list` names itself: pest reports the rules it
/// tried, but not the literal tokens, so a missing `=` or `,` is only visible here.
pub const PUNCTUATION: [&str; 7] = ["=", ",", ":", ")", "]", "}", "{"];

fn expected_list(rules: &[Rule], tokens: &[String]) -> String {
    let mut words: Vec<String> = Vec::new();
    for t in PUNCTUATION {
        if tokens.iter().any(|x| x == t) {
            words.push(format!("`{t}`"));
        }
    }
    let mut described: Vec<&str> = Vec::new();
    for r in rules {
        if let Some(w) = describe(*r) {
            if !described.contains(&w) && !words.iter().any(|x| x == w) {
                described.push(w);
            }
        }
    }
    described.sort_by_key(|w| WORD_ORDER.iter().position(|o| o == w).unwrap_or(WORD_ORDER.len()));
    if words.len() + described.iter().filter(|w| !CONTINUATIONS.contains(w)).count() > 0 {
        described.retain(|w| !CONTINUATIONS.contains(w));
    }
    if described.contains(&"a node name") {
        // `as stage{i}`: the `{` is part of the node name.
        words.retain(|w| w != "`{`");
    }
    words.extend(described.into_iter().map(str::to_string));
    match words.len() {
        0 => String::new(),
        1 => words[0].clone(),
        n => format!("{} or {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

/// The token-like piece of text at `pos`: a word or number, or one character.
fn token_at(text: &str, pos: usize) -> &str {
    let rest = &text[pos.min(text.len())..];
    match rest.chars().next() {
        None => "",
        Some(c) if c.is_alphanumeric() || c == '_' => {
            let len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..len]
        }
        Some(c) => &rest[..c.len_utf8()],
    }
}

/// What is at `pos`, for the message.
fn found_at(text: &str, pos: usize) -> String {
    match token_at(text, pos) {
        "" => "end of file".to_string(),
        "\n" | "\r" => "end of line".to_string(),
        t if is_keyword(t) => format!("the keyword `{t}`"),
        t => format!("`{t}`"),
    }
}

/// Characters that appear in some token of the language.
fn is_language_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_whitespace() || "_()[]{}.,:;=<>!+-*/%|#\"".contains(c)
}

/// A syntax error at `span` (whose start is where parsing stopped). `positives` are the grammar
/// rules that could have matched there and `tokens` the literal tokens that could have.
pub fn syntax(span: Span, text: &str, positives: &[Rule], tokens: &[String]) -> Diagnostic {
    let token = token_at(text, span.start);
    let stray = token.chars().next().filter(|c| !is_language_char(*c));
    let len = stray.map_or(token.len(), char::len_utf8);
    let span = Span::new(span.file, span.start, span.start + len);
    let expected = expected_list(positives, tokens);
    let found = found_at(text, span.start);
    let message = match (stray, expected.is_empty()) {
        (Some(c), _) => format!("syntax error: unexpected character `{c}`"),
        (None, true) => format!("syntax error: unexpected {found}"),
        (None, false) => format!("syntax error: expected {expected}, found {found}"),
    };
    let label = if expected.is_empty() {
        "unexpected here".to_string()
    } else {
        format!("expected {expected}")
    };
    let mut d = Diagnostic::error("E0101", message).with_primary(span, label);
    match stray {
        Some(c) if c.is_alphanumeric() => {
            d = d.with_note("names may contain only ASCII letters, digits and `_`");
        }
        Some(c) => {
            d = d.with_note(format!(
                "`{c}` is not part of any operator or punctuation of the language"
            ));
        }
        None => {}
    }
    if let Some((word, keyword)) = misspelled_keyword(text, span.start) {
        d = d.with_help(format!("`{word}` is not a keyword; did you mean `{keyword}`?"));
    }
    if is_keyword(token) && positives.contains(&Rule::ident) {
        d = d.with_help(format!(
            "`{token}` is a keyword of the language and cannot be used as a name; choose another name"
        ));
    }
    d
}

/// The word just before `pos`, if it is not a keyword but close to one that starts a statement or
/// an item (`retrun x` is read as the start of an assignment and fails at `x`).
fn misspelled_keyword(text: &str, pos: usize) -> Option<(&str, &'static str)> {
    const STARTERS: [&str; 10] = [
        "include", "const", "fn", "block", "net", "let", "for", "if", "return", "input",
    ];
    let before = text[..pos.min(text.len())].trim_end();
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[start..];
    if word.len() < 3 || is_keyword(word) || word == "input" {
        return None;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    if !text[line_start..start].trim().is_empty() {
        return None;
    }
    STARTERS
        .into_iter()
        .find(|k| strsim::osa_distance(word, k) <= 2.min(k.len() / 2))
        .map(|k| (word, k))
}

/// Whether `word` is a keyword of the language.
pub fn is_keyword(word: &str) -> bool {
    const KEYWORDS: [&str; 18] = [
        "include", "const", "fn", "block", "net", "let", "for", "in", "if", "else", "return", "assert", "and", "or",
        "not", "true", "false", "as",
    ];
    KEYWORDS.contains(&word)
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
    Diagnostic::error("E0101", format!("syntax error: `{open}` is never closed"))
        .with_primary(span, "opened here")
        .with_note(format!("the file ends before the matching `{}`", closing(open)))
}

/// `open` (at `span`) is closed by the wrong bracket `close` (at `close_span`).
pub fn mismatched_bracket(span: Span, open: char, close_span: Span, close: char) -> Diagnostic {
    let expected = closing(open);
    Diagnostic::error("E0101", format!("syntax error: `{open}` is never closed"))
        .with_primary(span, "opened here")
        .with_secondary(close_span, format!("expected `{expected}` before this `{close}`"))
}

fn closing(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

pub fn unmatched_bracket(span: Span, close: char) -> Diagnostic {
    Diagnostic::error("E0101", format!("syntax error: unexpected `{close}`"))
        .with_primary(span, "nothing to close here")
}

/// The code is nested more than `limit` levels deep: brackets, operators, field accesses and
/// indexing, conditional expressions and `else if` chains all count.
pub fn too_deep_code(span: Span, limit: usize) -> Diagnostic {
    Diagnostic::error("E0103", "code is nested too deeply")
        .with_primary(span, format!("nesting depth exceeds {limit} here"))
        .with_note("brackets, operators, `.field` and `[index]`, `... if ... else ...` and `else if` each add a level")
        .with_help("bind inner values to names with `let`")
}
