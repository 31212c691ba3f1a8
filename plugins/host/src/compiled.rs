//! Compiled plugins kept on disk, so that a process loading a plugin it has seen before maps the
//! machine code instead of compiling the component again.
//!
//! An entry is the engine's own serialization of a compiled component, stored uncompressed under
//! `<sha256 of the component>-<engine settings hash>.cwasm` and mapped into memory on load: no
//! decompression, no copy. Entries are written to a temporary file and renamed into place, so a
//! reader never sees half an entry, and are never changed afterwards. A broken or foreign entry
//! is removed and the component compiled again. A hit marks its entry as used (its modification
//! time); when the entries pass [`MAX_BYTES`], the least recently used go first.
//!
//! The directory is trusted like the agent's binary is: whoever can write it can run code as the
//! agent. It is created readable by its owner only, and plugins never see it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// How much compiled code the cache keeps (a plugin in Python carries its interpreter: ~35 MB).
pub(crate) const MAX_BYTES: u64 = 2 << 30;

/// A directory of compiled components for one engine's settings.
#[derive(Debug, Clone)]
pub(crate) struct CompiledCache {
    dir: PathBuf,
    /// Identifies the engine's settings and wasmtime's version: code compiled under other
    /// settings is never picked up.
    settings: String,
}

impl CompiledCache {
    /// The cache under `dir` for `engine`, creating the directory (owner only) if needed.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompiledCache> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            settings: format!("{:016x}", hasher.finish()),
        })
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.settings))
    }

    /// The component whose bytes hash to `sha256`, from the cache or compiled from `bytes` (and
    /// then kept). Failing to keep it is not an error: the next load compiles again.
    #[allow(unsafe_code)]
    pub fn component(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.entry(sha256);
        if path.is_file() {
            // SAFETY: entries are written only by `keep` below, from `Component::serialize` of an
            // engine with the same settings (the name says which), and are replaced by rename,
            // never changed in place, so the mapped file stays as it was written. The directory
            // is the agent's own (see the module's documentation).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    // Marked as used, for the trimming below; a failure only makes it look older.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(entry = %path.display(), error = %format!("{e:#}"), "a compiled plugin in the cache is unusable; compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Err(e) = self.keep(&component, &path) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "the compiled plugin could not be cached");
        }
        self.trim(MAX_BYTES);
        Ok(component)
    }

    /// Removes the least recently used entries until the rest take at most `max` bytes.
    fn trim(&self, max: u64) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = listing
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= max {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    fn keep(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        let serialized = component.serialize().map_err(std::io::Error::other)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(&serialized)?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    /// The smallest component there is: the header of the binary format and nothing else.
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn a_component_is_compiled_once_and_then_mapped_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(&dir.path().join("compiled"), &engine).unwrap();
        cache.component(&engine, "abc", EMPTY).unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].starts_with("abc-") && entries[0].ends_with(".cwasm"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("compiled"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the cache is its owner's only: {mode:o}");
        }
        // A second engine with the same settings maps the entry: garbage given as the bytes
        // proves nothing is compiled.
        let again = engine.clone();
        cache.component(&again, "abc", b"not wasm").unwrap();
    }

    #[test]
    fn a_broken_entry_is_replaced_by_a_fresh_compile() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        std::fs::write(cache.entry("abc"), b"\x7fELF and then nothing").unwrap();
        cache.component(&engine, "abc", EMPTY).unwrap();
        // The entry now holds the real compile.
        cache.component(&engine, "abc", b"not wasm").unwrap();
    }

    #[test]
    fn the_least_recently_used_entries_go_when_the_cache_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for name in ["a", "b", "c"] {
            cache.component(&engine, name, EMPTY).unwrap();
            let file = std::fs::File::options()
                .write(true)
                .open(cache.entry(name))
                .unwrap();
            file.set_modified(old).unwrap();
        }
        // "a" is used again: now the newest.
        cache.component(&engine, "a", b"not wasm").unwrap();
        let one = std::fs::metadata(cache.entry("a")).unwrap().len();
        cache.trim(2 * one);
        assert!(cache.entry("a").is_file(), "used last, kept");
        let left = ["b", "c"]
            .iter()
            .filter(|n| cache.entry(n).is_file())
            .count();
        assert_eq!(left, 1, "one of the two unused entries went");
    }

    #[test]
    fn code_compiled_under_other_settings_is_not_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompiledCache::open(dir.path(), &engine).unwrap();
        cache.component(&engine, "abc", EMPTY).unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        let other_cache = CompiledCache::open(dir.path(), &other).unwrap();
        let refused = other_cache.component(&other, "abc", b"not wasm");
        assert!(refused.is_err(), "compiled again from the (bad) bytes");
    }
}
