//! The `shardfs` command line: parses arguments (their shape is `cli/args.rs`), calls the
//! library, prints results. Every failure ends as one line on stderr and a non-zero exit.

mod cli;

use clap::Parser;
use cli::Failure;
use cli::args::{Cli, Command, PackArgs};
pub(crate) use cli::parse::MemberParser;
use shardfs::daemon;
use shardfs::shown::shown;
use shardfs::store::Store;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match parse(argv) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let daemon = matches!(&cli.command, Command::Mount(a) if a.foreground);
    init_log(daemon);
    if !daemon {
        // A closed stdout (`shardfs ls | head -1`) ends a command quietly by SIGPIPE, as it ends
        // coreutils, instead of a panic in `println!` (Rust ignores SIGPIPE by default). The
        // daemon keeps ignoring it: it has no stdout worth dying for.
        // SAFETY: sets a signal disposition before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Problems) => ExitCode::from(1),
        Err(Failure::Refused(msg)) => {
            eprintln!("shardfs: error: {}", shown(&msg));
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("shardfs: error: {}", shown(&msg));
            ExitCode::from(2)
        }
    }
}

/// The command line as clap reads it (or as mount(8) passes it to the helper); `Err` is the
/// exit code when there is nothing to run (an argument error, already said; `--help`).
fn parse(argv: Vec<std::ffi::OsString>) -> Result<Cli, ExitCode> {
    match cli::mount_helper::invocation(&argv) {
        Ok(cli::mount_helper::Invocation::Command) => match Cli::try_parse_from(argv) {
            Ok(cli) => Ok(cli),
            Err(e) if !e.use_stderr() => e.exit(), // --help, --version
            Err(e) => {
                // An argument error is one line with the prefix every error has (clap's usage
                // and hint follow it).
                let text = e.to_string();
                let mut lines = text.lines();
                let mut first = lines
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_start_matches("error: ")
                    .trim()
                    .to_string();
                // "... were not provided:" is followed by what was not: one line all the same.
                if first.ends_with(':')
                    && let Some(what) = lines.next()
                {
                    first = format!("{first} {}", what.trim());
                }
                eprintln!("shardfs: error: {first}");
                for l in lines.filter(|l| !l.trim().is_empty()) {
                    eprintln!("{l}");
                }
                Err(ExitCode::from(2))
            }
        },
        // mount(8) shows a helper's stderr as is: one line, not clap's usage.
        Ok(cli::mount_helper::Invocation::Mount(args)) => match Cli::try_parse_from(args) {
            Ok(cli) => Ok(cli),
            Err(e) => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("bad mount options");
                eprintln!("shardfs: {}", first.trim_start_matches("error: ").trim());
                Err(ExitCode::from(2))
            }
        },
        Ok(cli::mount_helper::Invocation::Fake) => Err(ExitCode::SUCCESS),
        Err(msg) => {
            eprintln!("shardfs: error: {}", shown(&msg));
            Err(ExitCode::from(2))
        }
    }
}

/// Logs go to stderr, filtered by `SHARDFS_LOG`.
fn init_log(daemon: bool) {
    // The daemon's log is read later, so its lines carry the time; a command's warnings are
    // read as they appear.
    env_logger::Builder::from_env(
        env_logger::Env::new().filter_or("SHARDFS_LOG", "warn,fuser=error"),
    )
    .format(move |buf, record| {
        let level = record.level().as_str().to_lowercase();
        if daemon {
            let now = buf.timestamp_millis();
            writeln!(
                buf,
                "{now} shardfs: {level}: {}",
                shown(&record.args().to_string())
            )
        } else {
            writeln!(
                buf,
                "shardfs: {level}: {}",
                shown(&record.args().to_string())
            )
        }
    })
    .init();
}

/// How members are opened: the global timeouts, and how long a command that takes the store's
/// lock waits for it (`--wait`).
fn member_options(cli: &Cli) -> shardfs::member::Options {
    shardfs::member::Options {
        timeout: cli.member_timeout,
        min_rate: cli.member_min_rate,
        lock_wait: match &cli.command {
            Command::Pack(PackArgs { wait, .. })
            | Command::Repair { wait, .. }
            | Command::Rebalance { wait, .. }
            | Command::Rm { wait, .. }
            | Command::Gc { wait, .. } => wait.get(),
            _ => std::time::Duration::ZERO,
        },
        ..shardfs::member::Options::default()
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    shardfs::trust::configure(shardfs::trust::Config {
        dir: shardfs::trust::default_dir(),
        key: cli.key.clone(),
        trust: cli.trust.clone(),
        sign_new: !matches!(&cli.command, Command::Pack(a) if a.unsigned),
    });
    let members = member_options(&cli);
    match cli.command {
        Command::Pack(args) => cli::pack::run(args, members),
        Command::Ls { store, json } => cli::reports::ls(&store, &members, json),
        Command::Mount(args) => cli::mount::run(args, members),
        Command::Warm {
            path,
            readers,
            local,
        } => {
            let readers = readers.map_or_else(|| 2 * cli::cores(), |r| r as usize);
            let fill = shardfs::warm::Fill::local_tier_if(local);
            cli::warm::warm(&path, readers, fill, std::io::stderr().is_terminal())
        }
        Command::Unmount { mountpoint } => {
            shardfs::say!("{}", daemon::unmount(&mountpoint)?);
            Ok(())
        }
        Command::Status { mountpoint, json } => cli::reports::status(mountpoint.as_deref(), json),
        Command::Refresh { mountpoint, json } => cli::reports::refresh(&mountpoint, json),
        Command::InstallHelper { dir, bin_dir } => {
            shardfs::say!(
                "{}",
                cli::mount_helper::install(&dir, &bin_dir).map_err(Failure::Error)?
            );
            Ok(())
        }
        Command::Export {
            store,
            name,
            file,
            output,
            parents,
        } => {
            shardfs::export::remove_on_signal();
            let store = Store::open_with(&store, &members)?;
            shardfs::export::export(&store, &name, file.as_deref(), &output, parents)
                .map_err(|e| Failure::Error(e.to_string()))
        }
        Command::Repair {
            store,
            name,
            dry_run,
            json,
            wait: _,
        } => cli::sync::repair(store, name, dry_run, json, &members),
        Command::Member(cmd) => cli::sync::member_command(cmd, &members),
        Command::Rebalance {
            store,
            dry_run,
            min_age,
            json,
            wait: _,
        } => cli::sync::rebalance(store, dry_run, min_age, json, &members),
        Command::Rm { store, name, .. } => cli::sync::rm(store, name, &members),
        Command::Gc {
            store,
            dry_run,
            min_age,
            json,
            wait: _,
        } => cli::sync::gc(store, dry_run, min_age, json, &members),
        Command::Df {
            store,
            min_age,
            json,
        } => cli::reports::df(store, min_age, json, &members),
        Command::Verify { store, name, json } => cli::reports::verify(store, name, json, &members),
        Command::Key(cmd) => cli::keys::key_command(cmd, &members),
    }
}
