//! Helpers shared by the integration tests: running the real `shardfs` binary, making test
//! data, and looking at a store's files on disk.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shardfs")
}

/// Runs `shardfs` with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("shardfs runs")
}

/// Runs `shardfs` and fails the test unless it exits 0.
pub fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "shardfs {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Runs `shardfs`, expects a failure with a one-line error mentioning `needle`, no panic.
pub fn fails(args: &[&str], needle: &str) -> Output {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "shardfs {args:?} succeeded, expected an error with '{needle}'"
    );
    assert!(
        !stderr.contains("panicked"),
        "shardfs {args:?} panicked: {stderr}"
    );
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(
        error_lines.len(),
        1,
        "expected one error line, got: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains(&needle.to_lowercase()),
        "shardfs {args:?}: error does not mention '{needle}': {stderr}"
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A deterministic xorshift generator, so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// bf16 values of a roughly normal(0, 0.02) distribution, like model weights.
    pub fn floats(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 2);
        while out.len() < n {
            let r = self.next();
            // Sum of four uniforms approximates a normal.
            let s: f32 = (0..4)
                .map(|i| ((r >> (i * 16)) & 0xffff) as f32 / 65535.0)
                .sum::<f32>()
                - 2.0;
            let v = s * 0.035;
            out.extend_from_slice(&v.to_bits().to_le_bytes()[2..]);
        }
        out.truncate(n);
        out
    }
}

/// The `--store` argument for these member directories.
pub fn store_arg(members: &[PathBuf]) -> String {
    members
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// `n` member paths (not created) under `dir`.
pub fn members(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("disk{i}"))).collect()
}

/// Every chunk file of a member.
pub fn chunk_files(member: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(dirs) = fs::read_dir(member.join("chunks")) {
        for d in dirs.flatten() {
            if let Ok(files) = fs::read_dir(d.path()) {
                out.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir`, as sorted relative paths.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Exports one file of a model and returns its bytes.
pub fn export(store: &str, name: &str, file: Option<&str>) -> Vec<u8> {
    let mut args = vec!["export", "--store", store, "--name", name, "-o", "-"];
    if let Some(f) = file {
        args.extend(["--file", f]);
    }
    ok(&args).stdout
}

/// The manifest JSON of a model as stored on one member.
pub fn manifest_json(member: &Path, name: &str) -> serde_json::Value {
    let bytes = fs::read(member.join("manifests").join(format!("{name}.json"))).unwrap();
    let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    env["manifest"].clone()
}
