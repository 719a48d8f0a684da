//! NVRTC compilation of the embedded kernel sources, with an on-disk PTX cache keyed by the
//! source, the architecture and the options, so a second run starts without compiling.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The prelude every kernel source starts with.
const COMMON: &str = include_str!("../../kernels/common.cuh");

/// Options every kernel is compiled with (part of the cache key).
const OPTIONS: [&str; 2] = ["-std=c++17", "-default-device"];

/// The kernels' build switches set from `MOEKIT_CUDA_DEFINES` (`NAME=VALUE` or `NAME`, separated
/// by commas or spaces; e.g. `WS_D64_STAGES=3`), as `-D` options: a measurement aid, so that one
/// binary runs each variant of a kernel (each variant's PTX has its own cache entry). Unset or
/// empty: none, the default build. Read once per process ([`define_usize`] sees the same list).
///
/// # Errors
/// An entry whose name is not a C identifier or whose value holds anything but letters, digits,
/// `_`, `.` and `-`.
fn env_defines() -> Result<Vec<String>, String> {
    parse_defines(env_raw())
}

/// `MOEKIT_CUDA_DEFINES` as the process first read it (the kernels and the host's layouts see the
/// same switches however the variable changes later).
fn env_raw() -> &'static str {
    static RAW: OnceLock<String> = OnceLock::new();
    RAW.get_or_init(|| std::env::var("MOEKIT_CUDA_DEFINES").unwrap_or_default())
}

/// The value of build switch `name` in `MOEKIT_CUDA_DEFINES`, for the host's side of a layout
/// that the switch changes (e.g. `WS_D64_STAGES`, the shared memory); `default` when it is not
/// set there as a number.
pub(crate) fn define_usize(name: &str, default: usize) -> usize {
    define_in(env_raw(), name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The value of `name` in a `MOEKIT_CUDA_DEFINES` list (`1` for a bare name; the last one wins,
/// as with repeated `-D`).
fn define_in<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.split([',', ' ']).rev().find_map(|d| {
        let (n, v) = d.split_once('=').unwrap_or((d, "1"));
        (n == name).then_some(v)
    })
}

fn parse_defines(raw: &str) -> Result<Vec<String>, String> {
    raw.split([',', ' '])
        .filter(|d| !d.is_empty())
        .map(|d| {
            let (name, value) = d.split_once('=').unwrap_or((d, "1"));
            let ident = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let val_ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if ident && val_ok {
                Ok(format!("-D{name}={value}"))
            } else {
                Err(format!("MOEKIT_CUDA_DEFINES: `{d}` is not NAME=VALUE (NAME a C identifier)"))
            }
        })
        .collect()
}

/// One embedded `.cu` file.
#[derive(Debug)]
pub(crate) struct Source {
    /// File name, for errors and the cache.
    pub name: &'static str,
    /// CUDA C++ without the prelude.
    pub code: &'static str,
}

impl Source {
    /// The full text NVRTC compiles: the prelude, then the file.
    pub fn full_text(&self) -> String {
        format!("{COMMON}\n#line 1 \"{}\"\n{}", self.name, self.code)
    }
}

/// The NVRTC architecture name for a compute capability: the `a` variant on Hopper (so
/// `wgmma` and TMA are available), the plain one elsewhere.
pub(crate) fn arch_for(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (9, 0) => "sm_90a",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        (7, 5) => "sm_75",
        (7, 0) => "sm_70",
        (m, n) => Box::leak(format!("sm_{m}{n}").into_boxed_str()),
    }
}

/// Where compiled PTX is kept: `$MOEKIT_CUDA_CACHE`, else `$XDG_CACHE_HOME/moekit/cuda`, else
/// `~/.cache/moekit/cuda`; `None` when no folder can be found or `MOEKIT_CUDA_CACHE` is empty.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MOEKIT_CUDA_CACHE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("moekit").join("cuda"))
}

/// FNV-1a, 64 bit: a hash that stays the same across Rust versions (the cache outlives the
/// binary).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Compile `src` for `arch`, through the cache in `cache` when given.
///
/// # Errors
/// The NVRTC log (with the file name) when compilation fails.
pub(crate) fn compile(src: &Source, arch: &'static str, cache: Option<&Path>) -> Result<Ptx, String> {
    let text = src.full_text();
    let defines = env_defines()?;
    let options: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).chain(defines).collect();
    let key = fnv1a(&[&text, arch, &options.join(" ")]);
    let path = cache.map(|d| d.join(format!("{}-{arch}-{key:016x}.ptx", src.name.trim_end_matches(".cu"))));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok(Ptx::from_src(ptx));
    }
    let opts = CompileOptions { arch: Some(arch), options, name: Some(src.name.to_string()), ..Default::default() };
    let ptx = compile_ptx_with_opts(&text, opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => format!("{}: NVRTC:\n{}", src.name, log.to_string_lossy()),
        other => format!("{}: {other}", src.name),
    })?;
    if let Some(path) = path {
        store(&path, &ptx.to_src());
    }
    Ok(ptx)
}

/// Write a cache entry atomically (write a temporary file, then rename); a failure only
/// means the next run compiles again.
fn store(path: &Path, ptx: &str) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, ptx).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::{define_in, parse_defines};

    #[test]
    fn a_define_is_looked_up_by_name() {
        let raw = "WS_SPLIT=4, WS_D64_STAGES=3,X WS_D64_STAGES=5";
        assert_eq!(define_in(raw, "WS_SPLIT"), Some("4"));
        assert_eq!(define_in(raw, "WS_D64_STAGES"), Some("5"));
        assert_eq!(define_in(raw, "X"), Some("1"));
        assert_eq!(define_in(raw, "WS"), None);
        assert_eq!(define_in("", "X"), None);
    }

    #[test]
    fn defines_parse_and_reject() {
        assert_eq!(parse_defines("").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_defines("WS_RANGED_FAST=1, WS_D64_BN=192,X").unwrap(),
            vec!["-DWS_RANGED_FAST=1", "-DWS_D64_BN=192", "-DX=1"]
        );
        for bad in ["1X=2", "A=", "A=$(rm)", "A-B=1", "=3"] {
            assert!(parse_defines(bad).is_err(), "{bad}");
        }
    }
}
