//! The plugin kit: a ready project for a new Passage plugin in Rust, Python or JavaScript, with
//! the contract (`plugin.wit`) and the helpers it needs, outside any repository or workspace.
//!
//! `passage-agent new` writes one to disk; the portal serves the same projects as archives at
//! `/downloads/`. A project builds with one command and its plugin passes `passage-agent check`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The contract every plugin is built against.
pub const CONTRACT: &str = include_str!("../../wit/plugin.wit");
/// The componentize-py release the Python projects build with (PyPI).
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js release the JavaScript projects build with (npm).
pub const COMPONENTIZE_JS: &str = "0.23.0";

const RUST_PLUGIN: &str = include_str!("../../template/src/lib.rs");
const SDK_LIB: &str = include_str!("../../sdk/src/lib.rs");
const SDK_HELPERS: &str = include_str!("../../sdk/src/helpers.rs");

/// A language plugins are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Rust, with Passage's SDK crate, built by cargo for `wasm32-wasip2`.
    Rust,
    /// Python, made into a component by componentize-py.
    Python,
    /// JavaScript, made into a component by componentize-js.
    Js,
}

impl Language {
    /// Every language, in the order the docs list them.
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::Js];

    /// Its short name: `rust`, `python`, `js`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
        }
    }

    /// The language named `name`.
    pub fn parse(name: &str) -> Result<Language, KitError> {
        Language::ALL
            .into_iter()
            .find(|l| l.as_str() == name)
            .ok_or_else(|| KitError::UnknownLanguage(name.to_string()))
    }

    /// The command that builds a project, run in its directory.
    pub fn build_command(self) -> &'static str {
        match self {
            Language::Rust => "cargo build --release --target wasm32-wasip2",
            Language::Python => "./build.sh",
            Language::Js => "npm install && npm run build",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A starting point: the template (scales a vector) or a shipped example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starter {
    /// Multiplies a vector by a factor, times it and checks it: the smallest complete plugin.
    Template,
    /// vectorAdd, measured as Passage's Rust `vector-add` is (Python and JavaScript).
    VectorAdd,
}

impl Starter {
    /// The starter named `name`: `template` or an example's name.
    pub fn parse(name: &str) -> Result<Starter, KitError> {
        match name {
            "template" => Ok(Starter::Template),
            "vector-add" => Ok(Starter::VectorAdd),
            other => Err(KitError::UnknownExample(other.to_string())),
        }
    }
}

/// Why a project cannot be made.
#[derive(Debug, Error)]
pub enum KitError {
    /// Not a usable plugin name.
    #[error(
        "{0:?} is not a plugin name: use 1 to 64 lower-case letters, digits and dashes, starting with a letter (e.g. saxpy or my-bench)"
    )]
    BadName(String),
    /// No such language.
    #[error("no language {0:?}: choose rust, python or js")]
    UnknownLanguage(String),
    /// No such example.
    #[error("no example {0:?}: choose template or vector-add")]
    UnknownExample(String),
    /// The example is not written in that language.
    #[error("the {example} example is not written in {language}{hint}")]
    NoSuchExample {
        /// The example.
        example: &'static str,
        /// The language asked for.
        language: Language,
        /// Where to look instead.
        hint: &'static str,
    },
    /// The directory is there already.
    #[error("{} exists already: choose another name or directory", .0.display())]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// What was being written.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// One file of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its path inside the project.
    pub path: &'static str,
    /// Its contents.
    pub contents: String,
    /// True for scripts.
    pub executable: bool,
}

/// A project to write: its files and where its plugin lands once built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The plugin's name.
    pub name: String,
    /// Its language.
    pub language: Language,
    /// Every file.
    pub files: Vec<File>,
    /// The component the build makes, relative to the project.
    pub wasm: String,
}

/// The project of a plugin `name` in `language` from `starter`.
pub fn project(name: &str, language: Language, starter: Starter) -> Result<Project, KitError> {
    check_name(name)?;
    let wasm = match language {
        Language::Rust => format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        Language::Python | Language::Js => format!("{name}.wasm"),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{wasm}}", &wasm)
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
    };
    let file = |path: &'static str, text: &str| File {
        path,
        contents: fill(text),
        executable: false,
    };
    let contract = match language {
        // cargo's bindings import only what the plugin uses; componentize-py and -js import every
        // interface of the world, and importing `peers` asks for every GPU of a machine.
        Language::Rust => CONTRACT.to_string(),
        Language::Python | Language::Js => one_gpu_contract(),
    };
    let mut files = vec![File {
        path: "wit/plugin.wit",
        contents: contract,
        executable: false,
    }];
    match language {
        Language::Rust => {
            if starter != Starter::Template {
                return Err(KitError::NoSuchExample {
                    example: "vector-add",
                    language,
                    hint: " here: Passage's own vector-add (plugins/suite/vector-add in its repository) is the Rust one",
                });
            }
            let plugin =
                RUST_PLUGIN.replace("name: \"scale\".into()", &format!("name: {name:?}.into()"));
            files.extend([
                file("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
                file("README.md", include_str!("../templates/rust/README.md")),
                file(".gitignore", include_str!("../templates/rust/gitignore")),
                File {
                    path: "src/lib.rs",
                    contents: plugin,
                    executable: false,
                },
                file(
                    "sdk/Cargo.toml",
                    include_str!("../templates/rust/sdk.Cargo.toml"),
                ),
                File {
                    path: "sdk/src/lib.rs",
                    contents: SDK_LIB.to_string(),
                    executable: false,
                },
                File {
                    path: "sdk/src/helpers.rs",
                    contents: SDK_HELPERS.to_string(),
                    executable: false,
                },
            ]);
        }
        Language::Python => {
            let app = match starter {
                Starter::Template => include_str!("../templates/python/app.py"),
                Starter::VectorAdd => include_str!("../examples/vector-add/app.py"),
            };
            files.extend([
                file("app.py", app),
                file(
                    "passage_plugin.py",
                    include_str!("../templates/python/passage_plugin.py"),
                ),
                file("README.md", include_str!("../templates/python/README.md")),
                file(".gitignore", include_str!("../templates/python/gitignore")),
                File {
                    path: "build.sh",
                    contents: fill(include_str!("../templates/python/build.sh")),
                    executable: true,
                },
            ]);
        }
        Language::Js => {
            let plugin = match starter {
                Starter::Template => include_str!("../templates/js/plugin.js"),
                Starter::VectorAdd => include_str!("../examples/vector-add/plugin.js"),
            };
            files.extend([
                file("plugin.js", plugin),
                file("passage.js", include_str!("../templates/js/passage.js")),
                file("package.json", include_str!("../templates/js/package.json")),
                file("README.md", include_str!("../templates/js/README.md")),
                file(".gitignore", include_str!("../templates/js/gitignore")),
            ]);
        }
    }
    Ok(Project {
        name: name.to_string(),
        language,
        files,
        wasm,
    })
}

/// The contract with `peers` left out of the world, for toolchains that import everything the
/// world names: such a plugin runs on one GPU unless its author puts the import back.
fn one_gpu_contract() -> String {
    CONTRACT.replacen(
        "    import peers;\n",
        "    // Every GPU of the machine at once: uncomment (see writing-plugins.md, Several GPUs).\n    // import peers;\n",
        1,
    )
}

fn check_name(name: &str) -> Result<(), KitError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(KitError::BadName(name.to_string()))
    }
}

impl Project {
    /// Writes the project into `dir`, which must not exist yet.
    pub fn write(&self, dir: &Path) -> Result<(), KitError> {
        if dir.exists() {
            return Err(KitError::Exists(dir.to_path_buf()));
        }
        for file in &self.files {
            let path = dir.join(file.path);
            let io = |source| KitError::Io {
                path: path.clone(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, &file.contents).map_err(io)?;
            if file.executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io)?;
            }
        }
        Ok(())
    }

    /// The project as a gzip-compressed tar archive, its files under `<name>/`.
    pub fn archive(&self) -> Vec<u8> {
        let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gzip);
        for file in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(file.contents.len() as u64);
            header.set_mode(if file.executable { 0o755 } else { 0o644 });
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(
                &mut header,
                format!("{}/{}", self.name, file.path),
                file.contents.as_bytes(),
            )
            .expect("writing to memory does not fail");
        }
        let mut gzip = tar.into_inner().expect("writing to memory does not fail");
        gzip.flush().expect("writing to memory does not fail");
        gzip.finish().expect("writing to memory does not fail")
    }

    /// What to do next, for people: build, check and run, from the project's directory.
    pub fn next_steps(&self, dir: &Path) -> String {
        format!(
            "cd {}\n{}\npassage-agent check {wasm}\npassage-agent run {wasm} --backend fake",
            dir.display(),
            self.language.build_command(),
            wasm = self.wasm
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", "Saxpy", "9lives", "a b", "../x", "x-", &"a".repeat(65)] {
            assert!(
                matches!(
                    project(bad, Language::Rust, Starter::Template),
                    Err(KitError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(project("saxpy-2", Language::Python, Starter::Template).is_ok());
    }

    #[test]
    fn every_language_gets_the_contract_and_its_name() {
        for language in Language::ALL {
            let p = project("saxpy", language, Starter::Template).unwrap();
            let contract = p.files.iter().find(|f| f.path == "wit/plugin.wit").unwrap();
            if language == Language::Rust {
                assert_eq!(contract.contents, CONTRACT);
            } else {
                // One GPU unless asked: the only difference is the commented-out import.
                assert!(contract.contents.contains("    // import peers;\n"));
                assert!(!contract.contents.contains("\n    import peers;"));
                assert_eq!(
                    contract.contents.lines().count(),
                    CONTRACT.lines().count() + 1
                );
            }
            let all: String = p.files.iter().map(|f| f.contents.as_str()).collect();
            assert!(!all.contains("{{"), "{language}: a placeholder is left");
            assert!(all.contains("\"saxpy\""), "{language}: the plugin's name");
        }
        let rust = project("saxpy", Language::Rust, Starter::Template).unwrap();
        assert_eq!(rust.wasm, "target/wasm32-wasip2/release/saxpy.wasm");
        let sdk = rust
            .files
            .iter()
            .find(|f| f.path == "sdk/src/lib.rs")
            .unwrap();
        assert!(sdk.contents.contains("path: \"../wit\""));
    }

    #[test]
    fn the_tests_build_with_the_componentize_js_that_projects_pin() {
        let tools = include_str!("../tools/package.json");
        assert!(
            tools.contains(&format!(
                "\"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS}\""
            )),
            "plugins/kit/tools/package.json pins another componentize-js than COMPONENTIZE_JS"
        );
    }

    #[test]
    fn the_rust_vector_add_is_the_suites() {
        let err = project("va", Language::Rust, Starter::VectorAdd).unwrap_err();
        assert!(
            err.to_string().contains("plugins/suite/vector-add"),
            "{err}"
        );
    }

    #[test]
    fn an_archive_holds_every_file_under_the_name() {
        let p = project("saxpy", Language::Js, Starter::VectorAdd).unwrap();
        let bytes = p.archive();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        let mut want: Vec<String> = p
            .files
            .iter()
            .map(|f| format!("saxpy/{}", f.path))
            .collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn a_project_is_not_written_over_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = project("saxpy", Language::Python, Starter::Template).unwrap();
        p.write(&dir.path().join("saxpy")).unwrap();
        assert!(dir.path().join("saxpy/build.sh").is_file());
        let err = p.write(&dir.path().join("saxpy")).unwrap_err();
        assert!(matches!(err, KitError::Exists(_)), "{err}");
    }
}
