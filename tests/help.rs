//! The command line documents itself: every command and argument has help text that says
//! what it does.

mod common;

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_describes_every_argument() {
    for cmd in [
        "pack", "ls", "export", "mount", "warm", "unmount", "status", "verify",
    ] {
        let out = ok(&[cmd, "--help"]);
        let help = text(&out.stdout);
        let args = help
            .split("Arguments:\n")
            .nth(1)
            .and_then(|a| a.split("\nOptions:").next())
            .unwrap_or("");
        // An argument's description follows its name on the same line, or on the next lines,
        // indented further.
        let lines: Vec<&str> = args.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let name = line.trim_start();
            if !(name.starts_with('<') || name.starts_with('[')) {
                continue;
            }
            let same_line = name
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            let next_line = lines
                .get(i + 1)
                .is_some_and(|l| l.starts_with("      ") && !l.trim().is_empty());
            assert!(
                same_line || next_line,
                "`shardfs {cmd} --help`: argument without a description: {line}"
            );
        }
    }
    let pack = text(&ok(&["pack", "--help"]).stdout);
    let partition = pack
        .split("--partition")
        .nth(1)
        .and_then(|p| p.split("\n  -").next())
        .unwrap_or("");
    for format in ["safetensors", "GGUF", "PyTorch"] {
        assert!(
            partition.contains(format),
            "--partition help lacks {format}: {partition}"
        );
    }
    let out = ok(&["mount", "--help"]);
    assert!(text(&out.stdout).contains("--allow-degraded"));
}
