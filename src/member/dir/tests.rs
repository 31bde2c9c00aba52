//! The directory member's own tests (the contract suite in `tests/` runs on every kind).

use super::*;

#[test]
fn writes_replace_and_clean() {
    let dir = tempfile::tempdir().unwrap();
    let m = DirMember::new(dir.path());
    m.write_atomic("a.json", b"one", Durability::Synced)
        .unwrap();
    m.write_atomic("a.json", b"two", Durability::Unsynced)
        .unwrap();
    assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"two");
    let tmp = dir.path().join(TMP);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    fs::write(tmp.join(tmp_name("x")), b"left over").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tmp.join("link")).unwrap();
    // Taking the lock removes them, and says how many.
    assert_eq!(m.lock().unwrap().temp_files_removed(), 2);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(Path::new("/etc/passwd").exists());
    // Files are private.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir.path().join("a.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A failed write leaves nothing behind.
    fs::write(dir.path().join("missing"), b"a file where a folder belongs").unwrap();
    assert!(
        m.write_atomic("bad/../f", b"x", Durability::Synced)
            .is_err()
    );
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn manifests_update_only_from_what_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let m = DirMember::new(dir.path());
    m.init(b"{}", Setup::Existing).unwrap();
    assert!(m.get_manifest("a").unwrap().is_none());
    m.put_manifest("a", b"one", &Expect::Absent).unwrap();
    assert!(matches!(
        m.put_manifest("a", b"two", &Expect::Absent),
        Err(MemberError::Conflict)
    ));
    let one = m.get_manifest("a").unwrap().unwrap();
    m.put_manifest("a", b"two", &Expect::Tag(one.tag.clone()))
        .unwrap();
    assert!(matches!(
        m.put_manifest("a", b"three", &Expect::Tag(one.tag)),
        Err(MemberError::Conflict)
    ));
    assert_eq!(m.get_manifest("a").unwrap().unwrap().bytes, b"two");
    let listed = m.list_manifests().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "a");
    let h = Hash32::of(b"c");
    m.put_chunk(&h, b"image", IfPresent::Refuse).unwrap();
    assert!(matches!(
        m.put_chunk(&h, b"image", IfPresent::Refuse),
        Err(MemberError::AlreadyExists)
    ));
    m.flush().unwrap();
    let listed = m.list_chunks().unwrap();
    assert_eq!((listed.len(), listed[0].hash, listed[0].size), (1, h, 5));
    assert_eq!(&*m.get_chunk(&h, 100).unwrap(), b"image");
    assert!(matches!(m.get_chunk(&h, 3), Err(MemberError::Corrupt(_))));
    m.delete_chunk(&h).unwrap();
    assert!(matches!(m.get_chunk(&h, 100), Err(MemberError::Missing)));
    let _lock = m.lock().unwrap();
    assert!(matches!(m.lock(), Err(MemberError::Unavailable(_))));
}
