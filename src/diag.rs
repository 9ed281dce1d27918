//! Diagnostics: the one error type every stage reports, and its renderer.
//!
//! A [`Diagnostic`] has a stable code (`E0301`), a one-line message, labels that underline source
//! spans (the first primary label is where the error is), notes with the values involved, and an
//! optional help line. Each stage builds its diagnostics through constructor functions kept in one
//! place per stage (`syntax::errors`, `elab::errors`, ...), so a message is written once.
//! Rendering uses `codespan-reporting`, without colour when the output is not a terminal, which is
//! also what the snapshot tests hold.

use crate::source::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{ColorChoice, NoColor, StandardStream};

/// One underlined span with its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub text: String,
    pub primary: bool,
}

/// A user-facing error.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Adds the primary label: the place the error is.
    pub fn with_primary(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            text: text.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary label: a place that explains the error.
    pub fn with_secondary(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            text: text.into(),
            primary: false,
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// The span of the primary label, if the diagnostic has one.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).map(|l| l.span)
    }

    fn to_codespan(&self) -> cs::Diagnostic<usize> {
        let labels = self
            .labels
            .iter()
            .map(|l| {
                let style = if l.primary {
                    cs::LabelStyle::Primary
                } else {
                    cs::LabelStyle::Secondary
                };
                cs::Label::new(style, l.span.file, l.span.range()).with_message(&l.text)
            })
            .collect();
        let mut notes = self.notes.clone();
        if let Some(help) = &self.help {
            notes.push(format!("help: {help}"));
        }
        cs::Diagnostic::error()
            .with_code(self.code)
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// The errors of one failed compilation, with the sources they point into.
#[derive(Clone, Debug)]
pub struct Failure {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

fn files_of(sources: &SourceMap) -> SimpleFiles<&str, &str> {
    let mut files = SimpleFiles::new();
    for f in sources.files() {
        files.add(f.name.as_str(), f.text.as_str());
    }
    files
}

/// Renders diagnostics as plain text (no colour).
pub fn render(sources: &SourceMap, diagnostics: &[Diagnostic]) -> String {
    let files = files_of(sources);
    let config = term::Config::default();
    let mut out = NoColor::new(Vec::new());
    for d in diagnostics {
        // Spans always come from these sources, so rendering cannot fail; if it ever did, the
        // message alone is still printed below.
        if term::emit(&mut out, &config, &files, &d.to_codespan()).is_err() {
            out.get_mut()
                .extend_from_slice(format!("error[{}]: {}\n", d.code, d.message).as_bytes());
        }
    }
    String::from_utf8_lossy(&out.into_inner()).into_owned()
}

/// Prints diagnostics on stderr, in colour when stderr is a terminal.
pub fn emit_stderr(sources: &SourceMap, diagnostics: &[Diagnostic]) {
    use std::io::IsTerminal;
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let files = files_of(sources);
    let config = term::Config::default();
    let mut stream = StandardStream::stderr(choice);
    for d in diagnostics {
        if term::emit(&mut stream, &config, &files, &d.to_codespan()).is_err() {
            eprintln!("error[{}]: {}", d.code, d.message);
        }
    }
}

impl Failure {
    pub fn render(&self) -> String {
        render(&self.sources, &self.diagnostics)
    }
}
