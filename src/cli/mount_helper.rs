//! shardfs as a mount helper: `mount -t fuse.shardfs STORE MOUNTPOINT -o OPTIONS` and fstab lines
//! reach the binary either as `mount.fuse.shardfs` / `mount.shardfs` (a link of that name, as
//! mount(8) runs helpers: `NAME SPEC DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`) or through
//! `mount.fuse3`, which runs `shardfs SPEC DIR -o OPTIONS`. Either way the arguments become those
//! of `shardfs mount`: each `-o` option maps to the flag of the same name (`cache_size=4GiB` is
//! `--cache-size 4GiB`, `pin` is `--pin`), options that concern mount(8) alone are accepted, and
//! anything else is a one-line error.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How the command line reads.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    /// An ordinary `shardfs COMMAND ...` line.
    Command,
    /// A mount helper's line, as the `shardfs mount ...` arguments it stands for.
    Mount(Vec<OsString>),
    /// `-f` (fake): mount(8) asks for everything but the mount itself.
    Fake,
}

/// `-o` options that take a value, as `shardfs mount` flags.
const VALUED: &[&str] = &[
    "name",
    "cache_size",
    "prefetch",
    "threads",
    "read_ahead",
    "refresh",
    "member_timeout",
    "member_min_rate",
    "metrics",
    "local_cache",
    "local_cache_size",
    "trust",
    "key",
];
/// `-o` options that are switches.
const SWITCHES: &[&str] = &["pin", "allow_other", "allow_degraded", "no_local_cache"];
/// Options for mount(8), systemd or the kernel's defaults: nothing for shardfs to do. The mount
/// is read-only, nodev and nosuid whatever they say: mount(8) adds `rw` when `ro` is not given,
/// and mount.fuse3 adds `dev,suid` for root.
const IGNORED: &[&str] = &[
    "ro",
    "rw",
    "dev",
    "suid",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "nodev",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "silent",
    "loud",
];

/// Reads the command line `argv` (with the program name first).
pub fn invocation(argv: &[OsString]) -> Result<Invocation, String> {
    let program = argv
        .first()
        .map(|a| Path::new(a).file_name().unwrap_or(a).to_os_string())
        .unwrap_or_default();
    let as_helper = program == "mount.shardfs" || program == "mount.fuse.shardfs";
    // A command name never holds a '/': a store (`/disk1/s,...`, `s3://...`) does.
    let through_fuse = argv
        .get(1)
        .is_some_and(|a| a.as_bytes().contains(&b'/') && !a.as_bytes().starts_with(b"-"));
    if !as_helper && !through_fuse {
        return Ok(Invocation::Command);
    }
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut verbose, mut fake) = (false, false);
    let mut args = argv[1..].iter();
    while let Some(a) = args.next() {
        let bytes = a.as_bytes();
        match bytes {
            b"-o" => options.push(value_of(args.next(), "-o")?),
            b"-t" | b"-N" => {
                value_of(args.next(), if bytes == b"-t" { "-t" } else { "-N" })?;
            }
            _ if bytes.starts_with(b"-o") && bytes.len() > 2 => {
                options.push(
                    OsStr::from_bytes(&bytes[2..])
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            _ if bytes.starts_with(b"-") && bytes.len() > 1 => {
                for flag in &bytes[1..] {
                    match flag {
                        b'v' => verbose = true,
                        b'f' => fake = true,
                        b's' | b'n' => {}
                        _ => return Err(format!("unknown mount helper flag -{}", *flag as char)),
                    }
                }
            }
            _ => positional.push(a.clone()),
        }
    }
    let [store, mountpoint] = positional.as_slice() else {
        return Err(format!(
            "a mount helper takes STORE MOUNTPOINT [-o OPTIONS], got {} arguments",
            positional.len()
        ));
    };
    let mut out: Vec<OsString> = ["shardfs", "mount", "--store"]
        .iter()
        .map(OsString::from)
        .collect();
    out.push(store.clone());
    out.push(mountpoint.clone());
    for opt in options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        out.extend(flag_for(opt)?);
    }
    if !verbose {
        out.push("--quiet".into());
    }
    Ok(if fake {
        Invocation::Fake
    } else {
        Invocation::Mount(out)
    })
}

/// `shardfs install-helper`: links this binary as `DIR/mount.fuse.shardfs`, where mount(8) looks
/// for the helper of type `fuse.shardfs`. A binary inside a cargo target directory (one that a
/// `cargo build` or `cargo clean` replaces) is first copied to `BIN_DIR/shardfs`, the path the
/// README's fstab lines and the units under `contrib/` use, and the link points at the copy. An
/// earlier link to a shardfs binary is replaced; any other file or link is left as it is.
pub fn install(dir: &Path, bin_dir: &Path) -> Result<String, String> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot find this binary: {e}"))?;
    let link = dir.join("mount.fuse.shardfs");
    if let Ok(m) = std::fs::symlink_metadata(&link) {
        if !m.file_type().is_symlink() {
            return Err(format!(
                "{} exists and is not a link; remove it first",
                link.display()
            ));
        }
        let to = std::fs::read_link(&link).unwrap_or_default();
        if to.file_name() != Some(OsStr::new("shardfs")) {
            return Err(format!(
                "{} links to {}, which is not a shardfs binary; remove it first",
                link.display(),
                to.display()
            ));
        }
    }
    let (target, copied) = match in_cargo_target(&exe) {
        Some(_) => (copy_binary(&exe, bin_dir)?, true),
        None => (exe, false),
    };
    // A new link under a temporary name, renamed over the old one: never a moment without.
    let tmp = dir.join(format!(".mount.fuse.shardfs.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &link))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot link {}: {e}", link.display())
        })?;
    Ok(format!(
        "{}linked {} -> {}; `mount -t fuse.shardfs STORE MOUNTPOINT -o ...` and fstab lines of type fuse.shardfs run it",
        if copied {
            format!("installed {} (a copy of this build); ", target.display())
        } else {
            String::new()
        },
        link.display(),
        target.display()
    ))
}

/// The cargo target directory `exe` was built into, if any: cargo marks it with CACHEDIR.TAG.
fn in_cargo_target(exe: &Path) -> Option<&Path> {
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
}

/// Copies `exe` to `bin_dir/shardfs` (mode 0755) under a temporary name renamed into place, so
/// a running mount's binary is never written over.
fn copy_binary(exe: &Path, bin_dir: &Path) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let dest = bin_dir.join("shardfs");
    let tmp = bin_dir.join(format!(".shardfs.{}", std::process::id()));
    std::fs::create_dir_all(bin_dir)
        .and_then(|_| std::fs::copy(exe, &tmp))
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::rename(&tmp, &dest))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot install {}: {e}", dest.display())
        })?;
    Ok(dest)
}

fn value_of(arg: Option<&OsString>, flag: &str) -> Result<String, String> {
    arg.map(|a| a.to_string_lossy().into_owned())
        .ok_or_else(|| format!("mount helper flag {flag} needs a value"))
}

/// The `shardfs mount` arguments one `-o` option stands for.
fn flag_for(opt: &str) -> Result<Vec<OsString>, String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    let flag = || OsString::from(format!("--{}", key.replace('_', "-")));
    if key.starts_with("x-") || key == "comment" || (IGNORED.contains(&key) && value.is_none()) {
        return Ok(Vec::new());
    }
    match (key, value) {
        (k, Some(v)) if VALUED.contains(&k) => Ok(vec![flag(), v.into()]),
        (k, None) if VALUED.contains(&k) => {
            Err(format!("mount option '{k}' needs a value ({k}=...)"))
        }
        (k, None) if SWITCHES.contains(&k) => Ok(vec![flag()]),
        (k, Some(_)) if SWITCHES.contains(&k) => Err(format!("mount option '{k}' takes no value")),
        _ => Err(format!(
            "unknown mount option '{opt}' (shardfs takes {}, {}, and mount's own ro, _netdev, nofail, noauto, x-*)",
            VALUED
                .iter()
                .map(|k| format!("{k}="))
                .collect::<Vec<_>>()
                .join(", "),
            SWITCHES.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    fn mount_args(line: &str) -> Vec<String> {
        match invocation(&args(line)).unwrap() {
            Invocation::Mount(a) => a.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn options_map_onto_mount_flags() {
        assert_eq!(
            mount_args(
                "/sbin/mount.fuse.shardfs /d1,/d2 /mnt -o ro,cache_size=4GiB,name=llama,pin,_netdev,x-systemd.requires=a"
            ),
            [
                "shardfs",
                "mount",
                "--store",
                "/d1,/d2",
                "/mnt",
                "--cache-size",
                "4GiB",
                "--name",
                "llama",
                "--pin",
                "--quiet"
            ]
        );
        assert_eq!(
            mount_args("shardfs s3://b/p,/d /mnt -v -oallow_other,refresh=10s"),
            [
                "shardfs",
                "mount",
                "--store",
                "s3://b/p,/d",
                "/mnt",
                "--allow-other",
                "--refresh",
                "10s"
            ]
        );
        assert_eq!(
            invocation(&args("mount.shardfs /d /mnt -f -o ro")).unwrap(),
            Invocation::Fake
        );
        assert_eq!(
            invocation(&args("shardfs ls --store /d")).unwrap(),
            Invocation::Command
        );
        assert_eq!(invocation(&args("shardfs")).unwrap(), Invocation::Command);
    }

    #[test]
    fn bad_options_are_one_line_errors() {
        for (line, needle) in [
            (
                "mount.shardfs /d /mnt -o ro,cache=1G",
                "unknown mount option 'cache=1G'",
            ),
            ("mount.shardfs /d /mnt -o name", "needs a value"),
            ("mount.shardfs /d /mnt -o pin=1", "takes no value"),
            ("mount.shardfs /d -o ro", "STORE MOUNTPOINT"),
            ("mount.shardfs /d /mnt -x", "flag -x"),
        ] {
            let e = invocation(&args(line)).unwrap_err();
            assert!(e.contains(needle) && !e.contains('\n'), "{line}: {e}");
        }
    }
}
