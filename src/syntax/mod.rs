//! Parsing: `.net` text to the AST of [`ast`].
//!
//! The grammar lives in `grammar/net.pest`; [`parse`] runs it and builds the AST (`parse.rs`).
//! Syntax errors are turned into diagnostics that speak the language's words ("expected an
//! expression"), not the grammar's rule names (`errors.rs`). Before pest runs, the text is checked
//! for size and bracket nesting so that no input can exhaust the stack.

pub mod ast;
mod errors;

pub use errors::is_keyword;
mod parse;

use crate::diag::Diagnostic;
use crate::source::FileId;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/net.pest"]
pub(crate) struct NetParser;

/// Largest source file accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Deepest nesting of brackets accepted.
pub const MAX_NESTING: usize = 64;
/// Most operators accepted in one expression.
pub const MAX_OPERATORS: usize = 512;
/// Deepest nesting accepted in the parse tree: every bracket, operator, `.field`, `[index]`,
/// conditional expression and `else if` adds levels (see `parse.rs`).
pub const MAX_DEPTH: usize = 1024;

/// Parses one file.
pub fn parse(file: FileId, text: &str) -> Result<ast::File, Diagnostic> {
    parse::parse_file(file, text)
}
