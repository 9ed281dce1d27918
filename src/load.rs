//! Loading a program: the network file and, transitively, the files it includes.
//!
//! An include path is relative to the including file's directory. Each file is read once, even
//! if several files include it; a file including itself is harmless for the same reason.

use crate::diag::Diagnostic;
use crate::elab::errors;
use crate::source::{SourceMap, Span};
use crate::syntax::{self, ast};
use std::path::{Path, PathBuf};

/// Most files one program may consist of.
pub const MAX_FILES: usize = 256;

/// Parsed files, the network file first.
pub struct Program {
    pub files: Vec<ast::File>,
}

/// Reads a source file, or says why not.
pub fn read_source(path: &Path) -> Result<String, String> {
    use std::io::Read;
    // Devices, pipes and sockets are refused before opening: opening a pipe, or reading a
    // terminal or `/dev/zero`, could block or never end. (Directories fail when read.)
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() && !meta.is_dir() {
        return Err("it is not a regular file".to_string());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // At most one byte more than the limit is read, whatever size the file claims.
    let mut bytes = Vec::new();
    file.take(syntax::MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > syntax::MAX_SOURCE_BYTES {
        let size = meta.len().max(bytes.len() as u64);
        return Err(format!(
            "the file has {size} bytes; the limit is {}",
            syntax::MAX_SOURCE_BYTES
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Parses `text` (shown as `name`, located in `dir`) and everything it includes.
pub fn load(sources: &mut SourceMap, name: &str, text: String, dir: Option<&Path>) -> Result<Program, Diagnostic> {
    let main = sources.add(name, text);
    let mut files = vec![syntax::parse(main, &sources.file(main).text.clone())?];
    let mut seen: Vec<PathBuf> = Vec::new();
    if let Some(p) = dir.map(|d| d.join(Path::new(name).file_name().unwrap_or_default())) {
        if let Ok(c) = p.canonicalize() {
            seen.push(c);
        }
    }
    let mut queue: Vec<(usize, Option<PathBuf>)> = vec![(0, dir.map(Path::to_path_buf))];
    while let Some((index, base)) = queue.pop() {
        let includes: Vec<(String, Span)> = files[index]
            .items
            .iter()
            .filter_map(|item| match item {
                ast::Item::Include { path, span } => Some((path.clone(), *span)),
                _ => None,
            })
            .collect();
        for (path, span) in includes {
            let full = base.as_deref().unwrap_or(Path::new(".")).join(&path);
            let shown = full.display().to_string();
            let canonical = full
                .canonicalize()
                .map_err(|e| errors::include_failed(span, &path, &shown, &e.to_string()))?;
            if seen.contains(&canonical) {
                continue;
            }
            if seen.len() >= MAX_FILES {
                return Err(errors::limit(span, "the number of included files", MAX_FILES as u64));
            }
            seen.push(canonical.clone());
            let text = read_source(&canonical).map_err(|e| errors::include_failed(span, &path, &shown, &e))?;
            let id = sources.add(full.display().to_string(), text);
            files.push(syntax::parse(id, &sources.file(id).text.clone())?);
            queue.push((files.len() - 1, canonical.parent().map(Path::to_path_buf)));
        }
    }
    Ok(Program { files })
}
