//! Tests of `beneath`: links never followed, special files and giants never read.

use super::*;
use std::os::unix::fs::symlink;

fn setup() -> (tempfile::TempDir, tempfile::TempDir, Beneath) {
    let member = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    let b = Beneath::new(member.path());
    (member, outside, b)
}

#[test]
fn links_are_never_followed() {
    let (member, outside, b) = setup();
    symlink(outside.path(), member.path().join("chunks")).unwrap();
    symlink(outside.path().join("secret"), member.path().join("file")).unwrap();
    for key in ["chunks/secret", "file"] {
        let e = b.open_file(key).expect_err("a link is refused");
        assert!(damaged(&e).is_some(), "{key}: {e}");
    }
    assert!(b.list("chunks").is_err());
    assert!(b.unlink("chunks/secret").is_err());
    assert!(b.create_new("chunks", "x").is_err());
    assert!(b.rename("file", "chunks/secret").is_err());
    // Moving the link aside moves the link, never its target.
    b.make_dirs("chunks/ab", &|n| format!("damaged/{n}.1"))
        .unwrap();
    assert_eq!(b.kind("chunks").unwrap(), Some(Kind::Dir));
    assert_eq!(b.kind("damaged/chunks.1").unwrap(), Some(Kind::Symlink));
    b.unlink("file").unwrap();
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        b"outside"
    );
    assert!(outside.path().join("secret").exists());
    // The walk used without openat2 refuses the same.
    let root = b.open_root().unwrap();
    assert!(
        walk_open(
            root.as_fd(),
            "damaged/chunks.1/secret",
            OFlags::PATH,
            Mode::empty()
        )
        .is_err()
    );
    assert!(
        walk_open(
            root.as_fd(),
            "damaged/chunks.1",
            OFlags::PATH,
            Mode::empty()
        )
        .is_err()
    );
}

#[test]
fn special_files_and_giants_are_damaged_not_read() {
    let (member, _outside, b) = setup();
    let fifo = member.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = b.read_capped("fifo", 10).expect_err("a FIFO is refused");
    assert!(damaged(&e).unwrap().contains("FIFO"), "{e}");
    std::fs::create_dir(member.path().join("dir")).unwrap();
    assert!(damaged(&b.open_file("dir").err().unwrap()).is_some());
    std::fs::File::create(member.path().join("big"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    assert!(damaged(&b.read_capped("big", 1 << 20).err().unwrap()).is_some());
    std::fs::write(member.path().join("small"), b"ok").unwrap();
    assert_eq!(b.read_capped("small", 2).unwrap().unwrap(), b"ok");
    assert!(b.read_capped("none", 2).unwrap().is_none());
    assert!(b.read_capped("../x", 2).is_err());
    // A FIFO as the lock is moved aside, and a fresh file made.
    let f = b.open_or_create("fifo", "damaged/fifo.1").unwrap();
    drop(f);
    assert_eq!(b.kind("fifo").unwrap(), Some(Kind::File));
    assert_eq!(b.kind("damaged/fifo.1").unwrap(), Some(Kind::Fifo));
    b.remove_tree("damaged", 4).unwrap();
    assert_eq!(b.kind("damaged").unwrap(), None);
}
