//! Parsers of the command line's argument values: member lists, sizes, rates, chunk sizes.
//! Each gives a one-line message clap prints as the error.

use shardfs::member::MemberSpec;
use shardfs::units::parse_size;

/// Parses one member of a `--store` list: whitespace around it is dropped; an empty one is an
/// error. Works on the raw argument, so that member paths need not be UTF-8.
#[derive(Clone)]
pub struct MemberParser;

impl clap::builder::TypedValueParser for MemberParser {
    type Value = MemberSpec;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<MemberSpec, clap::Error> {
        use std::os::unix::ffi::OsStrExt;
        let member = value.as_bytes().trim_ascii();
        if member.is_empty() {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                "empty member in the --store list (two commas in a row, or one at an end)\n",
            )
            .with_cmd(cmd));
        }
        MemberSpec::parse(std::ffi::OsStr::from_bytes(member)).map_err(|why| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{why}\n")).with_cmd(cmd)
        })
    }
}

pub fn parse_size_any(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

pub fn parse_cache_size(s: &str) -> Result<u64, String> {
    let n = parse_size_any(s)?;
    if n < (1 << 20) {
        return Err("the cache must hold at least 1MiB".into());
    }
    if let Some(ram) = physical_memory()
        && n > ram
    {
        return Err(format!(
            "{} is more than this machine's memory ({}): the cache lives in memory",
            shardfs::units::format_bytes(n),
            shardfs::units::format_bytes(ram)
        ));
    }
    Ok(n)
}

pub fn parse_rate(s: &str) -> Result<u64, String> {
    let n = parse_size_any(s)?;
    if n < (64 << 10) {
        return Err("the slowest rate must be at least 64KiB (per second)".into());
    }
    Ok(n)
}

pub fn parse_chunk_size(s: &str) -> Result<u64, String> {
    let n = parse_size_any(s)?;
    shardfs::chunking::check_pack_chunk_size(n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// `--wait[=DURATION]` of the commands that take the members' pack lock.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct LockWait {
    /// While another command holds the members' pack lock, wait for it (10m, or as long as
    /// given: --wait=30s, --wait=1h) instead of failing at once
    #[arg(
        long = "wait",
        value_name = "DURATION",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "10m",
        value_parser = shardfs::units::parse_age
    )]
    pub duration: Option<std::time::Duration>,
}

impl LockWait {
    pub fn get(self) -> std::time::Duration {
        self.duration.unwrap_or_default()
    }
}

/// This machine's memory, in bytes.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system values.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}
