//! Kernel signatures: the size of each declared parameter, read from PTX `.entry` directives or
//! from `__global__` declarations in CUDA C source.
//!
//! Launch arguments are checked against these sizes before anything reaches the driver, so a
//! plugin that passes the wrong number or kind of arguments gets an error, not a corrupted launch.
//!
//! The device memory a module's variables take (`__device__` arrays, PTX `.global` variables) is
//! read here too: it is allocated when the module loads, and counts against a run's GPU memory.

use std::collections::BTreeMap;

/// Kernel name to parameter sizes in bytes.
pub type Signatures = BTreeMap<String, Vec<u32>>;

/// The error for a kernel `name` that `kernels` lacks: it lists what the module has, and a
/// C++-mangled name there (`_Z5scalePfi`) means the kernel was not declared `extern "C"`.
pub fn missing_kernel(name: &str, kernels: &Signatures) -> crate::GpuError {
    let names: Vec<&str> = kernels.keys().map(String::as_str).collect();
    let hint = if names.iter().any(|n| n.starts_with("_Z")) {
        "; a name starting with _Z is a C++ name: declare the kernel `extern \"C\" __global__` to find it by its own name"
    } else {
        ""
    };
    crate::GpuError::NotFound(format!(
        "no kernel {name:?} in the module; it has {}{hint}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}
/// Reads every `.entry` of a PTX module.
pub fn from_ptx(ptx: &str) -> Result<Signatures, String> {
    let mut kernels = Signatures::new();
    let mut rest = ptx;
    while let Some(at) = find_directive(rest, ".entry") {
        rest = &rest[at + ".entry".len()..];
        let open = rest.find('(');
        let brace = rest.find('{');
        let name_end = match (open, brace) {
            (Some(o), Some(b)) => o.min(b),
            (Some(o), None) => o,
            (None, Some(b)) => b,
            (None, None) => return Err("an .entry has no body".into()),
        };
        let name = rest[..name_end].trim().to_string();
        if name.is_empty() {
            return Err("an .entry has no name".into());
        }
        let mut sizes = Vec::new();
        if open == Some(name_end) {
            let close = rest
                .find(')')
                .ok_or_else(|| format!("{name}: unclosed parameter list"))?;
            for param in rest[name_end + 1..close].split(',') {
                let param = param.trim();
                if param.is_empty() {
                    continue;
                }
                sizes.push(
                    ptx_param_size(param)
                        .ok_or_else(|| format!("{name}: cannot size {param:?}"))?,
                );
            }
            rest = &rest[close..];
        }
        kernels.insert(name, sizes);
    }
    Ok(kernels)
}

/// Finds `directive` as a whole word outside comments.
fn find_directive(text: &str, directive: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(directive) {
        let at = from + found;
        let after = text[at + directive.len()..].chars().next();
        let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let commented = text[line_start..at].contains("//");
        if !commented && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + directive.len();
    }
    None
}

/// `.param .u64 .ptr .global .align 8 foo` is 8 bytes; `.param .align 4 .b8 foo[12]` is 12.
fn ptx_param_size(param: &str) -> Option<u32> {
    let words: Vec<&str> = param.split_whitespace().collect();
    if words.first() != Some(&".param") {
        return None;
    }
    let ty = words.iter().find(|w| {
        matches!(
            w.get(..2),
            Some(".u") | Some(".s") | Some(".f") | Some(".b")
        ) && w[2..].chars().all(|c| c.is_ascii_digit())
            && w.len() > 2
    })?;
    let bits: u32 = ty[2..].parse().ok()?;
    let last = words.last()?;
    match (last.find('['), last.find(']')) {
        (Some(open), Some(close)) if open < close => {
            let count: u32 = last[open + 1..close].parse().ok()?;
            Some(bits / 8 * count)
        }
        _ => Some(bits / 8),
    }
}

/// Reads every `__global__` function of CUDA C source. Kernels must be `extern "C"` for their
/// names to be found, as with NVRTC; templates are not supported.
pub fn from_cuda_source(source: &str) -> Result<Signatures, String> {
    let code = strip_comments(source);
    check_balanced(&code)?;
    let mut kernels = Signatures::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("__global__") {
        rest = &rest[at + "__global__".len()..];
        let open = rest
            .find('(')
            .ok_or("a __global__ function has no parameter list")?;
        let name = rest[..open]
            .split_whitespace()
            .last()
            .ok_or("a __global__ function has no name")?
            .to_string();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("cannot read the kernel name {name:?}"));
        }
        let close = rest[open..]
            .find(')')
            .ok_or_else(|| format!("{name}: unclosed parameter list"))?
            + open;
        let params = rest[open + 1..close].trim();
        let mut sizes = Vec::new();
        if !params.is_empty() && params != "void" {
            for param in params.split(',') {
                sizes.push(c_param_size(param).ok_or_else(|| {
                    format!("{name}: unsupported parameter type in {:?}", param.trim())
                })?);
            }
        }
        kernels.insert(name, sizes);
        rest = &rest[close..];
    }
    if kernels.is_empty() {
        return Err("no __global__ kernel in the source".into());
    }
    Ok(kernels)
}

fn c_param_size(param: &str) -> Option<u32> {
    if param.contains('*') {
        return Some(8);
    }
    let words: Vec<&str> = param
        .split_whitespace()
        .filter(|w| !matches!(*w, "const" | "volatile" | "__restrict__" | "signed"))
        .collect();
    // The last word is the parameter's name.
    let ty = words.get(..words.len().checked_sub(1)?)?.join(" ");
    Some(match ty.as_str() {
        "char" | "unsigned char" | "bool" | "int8_t" | "uint8_t" => 1,
        "short" | "unsigned short" | "int16_t" | "uint16_t" => 2,
        "int" | "unsigned" | "unsigned int" | "float" | "int32_t" | "uint32_t" => 4,
        "long long" | "unsigned long long" | "long" | "unsigned long" | "size_t" | "double"
        | "int64_t" | "uint64_t" => 8,
        _ => return None,
    })
}

fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

fn check_balanced(code: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    for (line, text) in code.lines().enumerate() {
        for c in text.chars() {
            match c {
                '(' | '{' | '[' => stack.push((c, line + 1)),
                ')' | '}' | ']' => {
                    let want = match c {
                        ')' => '(',
                        '}' => '{',
                        _ => '[',
                    };
                    match stack.pop() {
                        Some((open, _)) if open == want => {}
                        _ => return Err(format!("line {}: unexpected '{c}'", line + 1)),
                    }
                }
                _ => {}
            }
        }
    }
    match stack.pop() {
        Some((open, line)) => Err(format!("line {line}: '{open}' is never closed")),
        None => Ok(()),
    }
}

/// Bytes of device memory taken by the module-scope `.global` variables of a PTX module.
pub fn ptx_global_bytes(ptx: &str) -> u64 {
    let mut total = 0u64;
    for line in ptx.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ';' || c == '=')
            .filter(|w| !w.is_empty())
            .collect();
        let Some(first) = words
            .iter()
            .position(|w| !matches!(*w, ".visible" | ".weak" | ".common"))
        else {
            continue;
        };
        if words[first] != ".global" {
            continue;
        }
        let mut element = 0u64;
        let mut lanes = 1u64;
        let mut name = None;
        for word in &words[first + 1..] {
            if let Some(n) = word.strip_prefix(".v").and_then(|n| n.parse::<u64>().ok()) {
                lanes = n;
            } else if let Some(bits) = ptx_type_bits(word) {
                element = bits / 8;
            } else if !word.starts_with('.') && !word.chars().all(|c| c.is_ascii_digit()) {
                name = Some(*word);
                break;
            }
        }
        if let Some(name) = name {
            total = total.saturating_add(
                element
                    .saturating_mul(lanes)
                    .saturating_mul(dimensions(name)),
            );
        }
    }
    total
}

fn ptx_type_bits(word: &str) -> Option<u64> {
    let rest = word
        .strip_prefix(".b")
        .or_else(|| word.strip_prefix(".u"))
        .or_else(|| word.strip_prefix(".s"))
        .or_else(|| word.strip_prefix(".f"))?;
    rest.parse().ok()
}

/// The element count of `name[a][b]...`: the product of its dimensions (1 for a scalar, 0 for an
/// unsized array, which takes no storage here).
fn dimensions(name: &str) -> u64 {
    let mut count = 1u64;
    for part in name.split('[').skip(1) {
        let size = part.split(']').next().unwrap_or_default().trim();
        count = count.saturating_mul(size.parse().unwrap_or(0));
    }
    count
}

/// Bytes of device memory taken by the `__device__` variables of CUDA C source, as far as the
/// source says without compiling it: sizes may use integer literals, `#define`d names, `*`, `+`,
/// `-`, `<<` and parentheses. Used where no PTX exists (the simulated device); PTX is exact.
pub fn cuda_global_bytes(source: &str) -> u64 {
    let code = strip_comments(source);
    let mut defines = BTreeMap::new();
    for line in code.lines() {
        let mut words = line.trim_start().splitn(3, char::is_whitespace);
        if words.next() == Some("#define")
            && let (Some(name), Some(value)) = (words.next(), words.next())
            && let Some(value) = eval(value, &defines)
        {
            defines.insert(name.to_string(), value);
        }
    }
    let mut total = 0u64;
    let mut rest = code.as_str();
    while let Some(at) = rest.find("__device__") {
        rest = &rest[at + "__device__".len()..];
        let end = rest.find([';', '(', '{', '=']).unwrap_or(rest.len());
        // A function, or a declaration with an initialiser list: read up to the first `;`.
        if rest[end..].starts_with(['(', '{']) {
            continue;
        }
        let declaration = &rest[..end];
        let open = declaration.find('[').unwrap_or(declaration.len());
        let words: Vec<&str> = declaration[..open].split_whitespace().collect();
        let Some((_, type_words)) = words.split_last() else {
            continue;
        };
        let element = c_type_size(&type_words.join(" ")).unwrap_or(8);
        let mut count = 1u64;
        for part in declaration[open..].split('[').skip(1) {
            let size = part.split(']').next().unwrap_or_default();
            count = count.saturating_mul(eval(size, &defines).unwrap_or(0));
        }
        total = total.saturating_add(element.saturating_mul(count));
    }
    total
}

fn c_type_size(ty: &str) -> Option<u64> {
    let ty: Vec<&str> = ty
        .split_whitespace()
        .filter(|w| {
            !matches!(
                *w,
                "const" | "volatile" | "static" | "extern" | "__managed__"
            )
        })
        .collect();
    Some(match ty.join(" ").as_str() {
        "char" | "unsigned char" | "signed char" | "bool" | "int8_t" | "uint8_t" => 1,
        "short" | "unsigned short" | "int16_t" | "uint16_t" | "__half" | "half" => 2,
        "int" | "unsigned" | "unsigned int" | "float" | "int32_t" | "uint32_t" => 4,
        "long long" | "unsigned long long" | "long" | "unsigned long" | "size_t" | "double"
        | "int64_t" | "uint64_t" | "float2" | "int2" => 8,
        "float4" | "int4" | "double2" => 16,
        _ => return None,
    })
}

/// Evaluates a small integer expression: literals (with `u`/`l` suffixes, hex), names from
/// `defines`, `*`, `+`, `-`, `<<` and parentheses. None when it is anything else.
fn eval(text: &str, defines: &BTreeMap<String, u64>) -> Option<u64> {
    let mut tokens = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                word.push(c);
                chars.next();
            }
            tokens.push(word);
        } else if c == '<' {
            chars.next();
            (chars.next()? == '<').then_some(())?;
            tokens.push("<<".into());
        } else if "*+-()".contains(c) {
            tokens.push(c.to_string());
            chars.next();
        } else {
            return None;
        }
    }
    let mut parser = Expr {
        tokens,
        at: 0,
        defines,
    };
    let value = parser.shift()?;
    (parser.at == parser.tokens.len()).then_some(value)
}

struct Expr<'a> {
    tokens: Vec<String>,
    at: usize,
    defines: &'a BTreeMap<String, u64>,
}

impl Expr<'_> {
    fn next_is(&mut self, token: &str) -> bool {
        let found = self.tokens.get(self.at).is_some_and(|t| t == token);
        if found {
            self.at += 1;
        }
        found
    }

    fn shift(&mut self) -> Option<u64> {
        let mut value = self.sum()?;
        while self.next_is("<<") {
            value = value.checked_shl(u32::try_from(self.sum()?).ok()?)?;
        }
        Some(value)
    }

    fn sum(&mut self) -> Option<u64> {
        let mut value = self.product()?;
        loop {
            if self.next_is("+") {
                value = value.saturating_add(self.product()?);
            } else if self.next_is("-") {
                value = value.saturating_sub(self.product()?);
            } else {
                return Some(value);
            }
        }
    }

    fn product(&mut self) -> Option<u64> {
        let mut value = self.atom()?;
        while self.next_is("*") {
            value = value.saturating_mul(self.atom()?);
        }
        Some(value)
    }

    fn atom(&mut self) -> Option<u64> {
        if self.next_is("(") {
            let value = self.shift()?;
            return self.next_is(")").then_some(value);
        }
        let token = self.tokens.get(self.at)?.clone();
        self.at += 1;
        if let Some(value) = self.defines.get(&token) {
            return Some(*value);
        }
        let digits = token.trim_end_matches(['u', 'U', 'l', 'L']);
        match digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => digits.parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_entries_give_parameter_sizes() {
        let ptx = r#"
//
// Generated by NVIDIA NVVM Compiler
.version 8.5
.target sm_90
.address_size 64

	// .globl	vector_add
.visible .entry vector_add(
	.param .u64 .ptr .align 1 vector_add_param_0,
	.param .u64 .ptr .align 1 vector_add_param_1,
	.param .u64 vector_add_param_2,
	.param .u32 vector_add_param_3,
	.param .align 4 .b8 vector_add_param_4[12]
)
{
	ret;
}
.visible .entry empty()
{
	ret;
}
"#;
        let kernels = from_ptx(ptx).unwrap();
        assert_eq!(kernels["vector_add"], vec![8, 8, 8, 4, 12]);
        assert_eq!(kernels["empty"], Vec::<u32>::new());
    }

    #[test]
    fn cuda_declarations_give_parameter_sizes() {
        let source = r#"
// a comment with __global__ in it
extern "C" __global__ void vector_add(const float* __restrict__ a, const float *b, float* c, unsigned int n) {
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { c[i] = a[i] + b[i]; }
}
/* another __global__ */
extern "C" __global__ void scale(double *x, double factor, long long n, int flag) {}
extern "C" __global__ void empty(void) {}
"#;
        let kernels = from_cuda_source(source).unwrap();
        assert_eq!(kernels["vector_add"], vec![8, 8, 8, 4]);
        assert_eq!(kernels["scale"], vec![8, 8, 8, 4]);
        assert_eq!(kernels["empty"], Vec::<u32>::new());
    }

    #[test]
    fn broken_source_is_a_compile_error() {
        for bad in [
            "extern \"C\" __global__ void k(int n) { if (n) { }",
            "int main() { return 0; }",
            "extern \"C\" __global__ void k(struct Big b) {}",
            "extern \"C\" __global__ void k(int n)) {}",
        ] {
            assert!(from_cuda_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn module_variables_are_sized() {
        let ptx = ".version 8.5\n.global .align 4 .b8 hoard[1048576];\n\
                   .visible .global .align 4 .u32 counter;\n\
                   .global .align 16 .v4 .f32 quads[10][2];\n\
                   .extern .global .align 4 .b8 elsewhere[];\n\
                   .visible .entry k(\n\t.param .u64 .ptr .global .align 8 k_param_0\n)\n{\n\tret;\n}\n";
        assert_eq!(ptx_global_bytes(ptx), 1048576 + 4 + 16 * 20);
        let source = "#define N (1 << 20)\n__device__ float big[N * 4];\n\
                      __device__ unsigned long long hoard[1ull << 30];\n\
                      __device__ int scalar;\n\
                      __device__ float helper(float x) { return x; }\n\
                      extern \"C\" __global__ void k(float *x) { x[0] = helper(big[0]); }\n";
        assert_eq!(cuda_global_bytes(source), (4 << 22) + (8 << 30) + 4);
    }
}
