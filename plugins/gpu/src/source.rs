//! What CUDA C source a plugin may hand to the compiler.
//!
//! NVRTC reads any file an `#include` names, and its log quotes what it read: a plugin that
//! includes `/etc/passwd` gets the file back as "errors". So every backend checks source here
//! before compiling: it must be small, and every `#include` must name one of the headers NVRTC
//! carries in its own library ([`BUILTIN_HEADERS`]), written out literally. An include built by a
//! macro, `__has_include` (which probes for files), `#include_next`, `#import` and `#embed` are
//! refused, and so are trigraphs, which could spell a directive the check would not see.
//!
//! The check is deliberately cruder than a preprocessor: it does not know strings or comments,
//! so it finds a directive wherever a line (after joining `\`-continued lines) starts with `#` or
//! `%:`, even inside a comment. That can only refuse more than a compiler would read, never less.
//! The job process's own confinement (no file outside the CUDA libraries) is the second wall.

use crate::GpuError;

/// The largest CUDA C source accepted, in bytes.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Headers NVRTC provides itself, without reading the file system.
pub const BUILTIN_HEADERS: &[&str] = &[
    "cuda_fp16.h",
    "cuda_fp16.hpp",
    "cuda_bf16.h",
    "cuda_bf16.hpp",
    "cuda_fp8.h",
    "cuda_fp8.hpp",
    "cuda_fp6.h",
    "cuda_fp6.hpp",
    "cuda_fp4.h",
    "cuda_fp4.hpp",
];

/// Directive names that read files.
const READING_DIRECTIVES: &[&str] = &["include", "include_next", "import", "embed"];

/// Checks `source` (labelled `name` in messages) before any compiler sees it.
pub fn check_cuda_source(name: &str, source: &str) -> Result<(), GpuError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(GpuError::LimitExceeded(format!(
            "{name}: the source is {} bytes; at most {MAX_SOURCE_BYTES} bytes of CUDA C are compiled",
            source.len()
        )));
    }
    let refuse = |line: usize, why: String| {
        Err(GpuError::CompileFailed(format!(
            "{name}:{line}: {why}; only {} may be included",
            BUILTIN_HEADERS.join(", ")
        )))
    };
    if source.contains('\0') {
        return refuse(0, "the source contains a NUL byte".into());
    }
    for trigraph in ["??=", "??/"] {
        if let Some(at) = source.find(trigraph) {
            return refuse(
                line_of(source, at),
                format!("trigraph {trigraph:?} is not accepted"),
            );
        }
    }
    for (number, line) in logical_lines(source) {
        if line.contains("__has_include") {
            return refuse(
                number,
                "__has_include probes the file system and is not accepted".into(),
            );
        }
        for rest in directives(&line) {
            check_directive(skip_blank(rest)).or_else(|why| refuse(number, why))?;
        }
    }
    Ok(())
}

/// Checks the text after a directive's `#`; the error says why it is refused.
fn check_directive(rest: &str) -> Result<(), String> {
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '\\' || *c == '$')
        .collect();
    if word.contains('\\') {
        return Err(
            "a directive name written with universal character names is not accepted".into(),
        );
    }
    if !READING_DIRECTIVES.contains(&word.as_str()) {
        return Ok(());
    }
    if word != "include" {
        return Err(format!("#{word} is not accepted"));
    }
    match included_header(skip_blank(&rest[word.len()..])) {
        Some(header) if BUILTIN_HEADERS.contains(&header) => Ok(()),
        Some(header) => Err(format!("#include of {header:?} is refused")),
        None => Err(
            "#include must name a header literally, as <name> or \"name\", with nothing after it"
                .into(),
        ),
    }
}

/// The 1-based line of byte offset `at`.
fn line_of(source: &str, at: usize) -> usize {
    source[..at].matches('\n').count() + 1
}

/// Lines as the preprocessor sees them: a backslash before the end of a line (spaces allowed in
/// between, as compilers accept) joins it with the next. Each comes with its first line number.
fn logical_lines(source: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut first = 1;
    for (index, raw) in source.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if current.is_empty() {
            first = index + 1;
        }
        match raw.trim_end_matches([' ', '\t']).strip_suffix('\\') {
            Some(joined) => current.push_str(joined),
            None => {
                current.push_str(raw);
                lines.push((first, std::mem::take(&mut current)));
            }
        }
    }
    if !current.is_empty() {
        lines.push((first, current));
    }
    lines
}

/// Skips blanks and block comments (which a directive may contain anywhere).
fn skip_blank(mut text: &str) -> &str {
    loop {
        let trimmed = text.trim_start_matches([' ', '\t', '\x0b', '\x0c', '\r']);
        match trimmed.strip_prefix("/*") {
            Some(comment) => match comment.find("*/") {
                Some(end) => text = &comment[end + 2..],
                // An unterminated comment: nothing follows on this line.
                None => return "",
            },
            None => return trimmed,
        }
    }
}

/// What follows the `#` (or `%:`) of every directive `line` may hold. A line that begins by
/// closing a comment opened on an earlier line is read both ways: from its start, and from the
/// end of that comment (a comment with a line break in it counts as the start of a line).
fn directives(line: &str) -> Vec<&str> {
    let mut candidates = vec![skip_blank(line)];
    if let Some(end) = line.find("*/") {
        candidates.push(skip_blank(&line[end + 2..]));
    }
    candidates
        .into_iter()
        .filter_map(|text| text.strip_prefix('#').or_else(|| text.strip_prefix("%:")))
        .collect()
}

/// The header of `<name>` or `"name"` when that is all the rest of the line holds (blanks and
/// comments aside).
fn included_header(text: &str) -> Option<&str> {
    let close = match text.chars().next()? {
        '<' => '>',
        '"' => '"',
        _ => return None,
    };
    let end = text[1..].find(close)? + 1;
    let header = &text[1..end];
    let rest = skip_blank(&text[end + 1..]);
    (rest.is_empty() || rest.starts_with("//")).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(source: &str) -> String {
        match check_cuda_source("attack.cu", source) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {source:?}"),
        }
    }

    #[test]
    fn plain_kernels_and_builtin_headers_pass() {
        let source = "#include <cuda_fp16.h>\n#include \"cuda_bf16.h\" // halves\n\
                      #define N 4\n#pragma unroll\nextern \"C\" __global__ void k(float *x) { x[0] = N; }\n";
        check_cuda_source("ok.cu", source).unwrap();
    }

    #[test]
    fn host_files_cannot_be_included() {
        for attack in [
            "#include \"/etc/passwd\"\n",
            "#include </etc/shadow>\n",
            "  #  include \"/etc/passage/agent-token\"\n",
            "#include \"../../../../etc/passwd\"\n",
            "#include \"cuda_fp16.h/../../../etc/passwd\"\n",
            "#include \"stdio.h\"\n",
        ] {
            let e = refused(attack);
            assert!(e.contains("is refused"), "{attack:?}: {e}");
        }
    }

    #[test]
    fn includes_built_by_macros_are_refused() {
        let e = refused("#define P \"/etc/hostname\"\n#include P\n");
        assert!(e.contains("attack.cu:2"), "{e}");
        assert!(e.contains("literally"), "{e}");
        refused("#define Q(x) #x\n#include Q(/etc/hostname)\n");
        refused("#include \"cuda_fp16.h\" P\n");
    }

    #[test]
    fn disguised_directives_are_found() {
        for attack in [
            "#/**/include \"/etc/passwd\"\n",
            "/* c */ # /* c */ include \"/etc/passwd\"\n",
            "#\\\ninclude \"/etc/passwd\"\n",
            "#inc\\\nlude \"/etc/passwd\"\n",
            "# \\  \r\ninclude \"/etc/passwd\"\n",
            "%:include \"/etc/passwd\"\n",
            "/* multi\nline */ #include \"/etc/passwd\"\n",
            "int x; /* \" */\n#include \"/etc/passwd\"\n",
            "const char *s = R\"x( \" /* )x\";\n#include \"/etc/passwd\"\n",
            "/* open\nfoo #bar */ #include \"/etc/passwd\"\n",
            "__has_inc\\\nlude(\"/etc/shadow\")\n",
        ] {
            refused(attack);
        }
    }

    #[test]
    fn other_ways_to_read_files_are_refused() {
        assert!(refused("#include_next <x.h>\n").contains("#include_next"));
        assert!(refused("#import \"/etc/passwd\"\n").contains("#import"));
        assert!(refused("#embed \"/etc/passwd\"\n").contains("#embed"));
        assert!(refused("#if __has_include(\"/etc/shadow\")\n#endif\n").contains("__has_include"));
        assert!(refused("??=include \"/etc/passwd\"\n").contains("trigraph"));
        assert!(refused("#\\u0069nclude \"/etc/passwd\"\n").contains("universal"));
        refused("#include \"/etc/passwd\0\"\n");
    }

    #[test]
    fn source_size_is_limited() {
        let big = "x".repeat(MAX_SOURCE_BYTES + 1);
        match check_cuda_source("big.cu", &big) {
            Err(GpuError::LimitExceeded(m)) => assert!(m.contains("at most 1048576"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
