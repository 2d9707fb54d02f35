//! pg_basebackup's tar, read entry by entry: checked whole (`verify`), or extracted into a
//! data directory (`restore`). The archive comes from a destination, which whoever can
//! write to it controls: only plain files and directories with relative names inside the
//! target are accepted, and nothing already in the target is followed or overwritten.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tokio::io::AsyncRead;
use tokio_util::io::SyncIoBridge;

use super::SourceError;

/// Files every base backup of a data directory holds; without one of them the archive is
/// not a base backup PostgreSQL can start from.
pub(super) const REQUIRED: &[&str] = &[
    "PG_VERSION",
    "global/pg_control",
    "backup_label",
    "backup_manifest",
];

/// What a whole base backup holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Found {
    /// The major version in `PG_VERSION`.
    pub version: String,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Files `backup_manifest` lists, each found in the tar with its size.
    pub listed: u64,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PostgreSQL {} data directory: {} files in {} directories ({}); backup_manifest checksum ok, its {} files present with their sizes",
            self.version,
            self.files,
            self.dirs,
            crate::units::human_bytes(self.bytes),
            self.listed
        )
    }
}

/// An entry's name as a path inside the target: normal components only. `None` for the
/// archive's root itself ("./").
fn inside(name: &Path, shown: &str) -> Result<Option<PathBuf>, SourceError> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(shown, "an absolute path"));
            }
            Component::ParentDir => return Err(refused(shown, "a path with \"..\"")),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn refused(shown: &str, what: &str) -> SourceError {
    SourceError::Refused(format!(
        "the backup's tar entry \"{shown}\" is {what}, which a base backup of a data directory never holds; the backup was not written by pg_basebackup -D - (or was altered) and is not restored"
    ))
}

/// What is done with each entry.
pub(super) enum Visit<'a> {
    /// Read each file through, keep nothing.
    Check,
    /// Write it under this directory (empty, made by the caller), owned by `owner` when set.
    Extract {
        root: &'a Path,
        owner: Option<(u32, u32)>,
    },
}

/// Walk the tar on `reader`, then read the stream to its end, where the stored object's
/// size and checksum are checked: until then nothing read may be trusted.
pub(super) fn walk(reader: impl Read, visit: &Visit<'_>) -> Result<Found, SourceError> {
    let mut reader = reader;
    let mut found = Found::default();
    let mut seen: HashMap<PathBuf, u64> = HashMap::new();
    let mut manifest: Option<Vec<u8>> = None;
    let mut made: HashSet<PathBuf> = HashSet::new();
    {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive
            .entries()
            .map_err(|e| SourceError::io("reading the base backup's tar", e))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| SourceError::io("reading the base backup's tar", e))?;
            let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = entry
                .path()
                .map_err(|e| SourceError::io(format!("the tar entry \"{shown}\""), e))?
                .into_owned();
            let kind = entry.header().entry_type();
            let rel = inside(&name, &shown)?;
            if kind.is_symlink() || kind.is_hard_link() {
                let what = if shown.trim_start_matches("./").starts_with("pg_tblspc/") {
                    "a tablespace's link (tablespaces are not supported by mode = \"physical\"; move their tables into the default tablespace)"
                } else {
                    "a link"
                };
                return Err(refused(&shown, what));
            }
            if !(kind.is_file() || kind.is_dir()) {
                return Err(refused(&shown, &format!("a {kind:?} entry")));
            }
            let Some(rel) = rel else {
                continue; // the archive's root: the target itself
            };
            if seen.insert(rel.clone(), entry.size()).is_some() {
                return Err(refused(&shown, "a second entry of the same name"));
            }
            if kind.is_dir() {
                found.dirs += 1;
                if let Visit::Extract { root, owner } = visit {
                    make_dirs(root, &rel, *owner, &mut made)?;
                }
                continue;
            }
            found.files += 1;
            found.bytes += entry.size();
            if rel == Path::new("PG_VERSION") {
                let mut text = String::new();
                (&mut entry)
                    .take(64)
                    .read_to_string(&mut text)
                    .map_err(|e| SourceError::io("reading PG_VERSION in the backup", e))?;
                found.version = text.trim().to_string();
                if let Visit::Extract { root, owner } = visit {
                    let mut file = create_file(root, &rel, *owner, &mut made)?;
                    std::io::Write::write_all(&mut file, text.as_bytes())
                        .map_err(|e| write_err(root, &rel, e))?;
                    std::io::copy(&mut entry, &mut file)
                        .map_err(|e| write_err(root, &rel, e))?;
                }
                continue;
            }
            if rel == Path::new("backup_manifest") {
                let mut bytes = Vec::new();
                (&mut entry)
                    .take(MANIFEST_LIMIT + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| SourceError::io("reading backup_manifest in the backup", e))?;
                if bytes.len() as u64 > MANIFEST_LIMIT {
                    return Err(refused(&shown, "larger than 256 MiB"));
                }
                if let Visit::Extract { root, owner } = visit {
                    let mut file = create_file(root, &rel, *owner, &mut made)?;
                    std::io::Write::write_all(&mut file, &bytes)
                        .map_err(|e| write_err(root, &rel, e))?;
                }
                manifest = Some(bytes);
                continue;
            }
            match visit {
                Visit::Check => {
                    std::io::copy(&mut entry, &mut std::io::sink())
                        .map_err(|e| SourceError::io(format!("reading \"{shown}\" in the backup"), e))?;
                }
                Visit::Extract { root, owner } => {
                    let mut file = create_file(root, &rel, *owner, &mut made)?;
                    std::io::copy(&mut entry, &mut file).map_err(|e| write_err(root, &rel, e))?;
                }
            }
        }
    }
    std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(|e| SourceError::io("reading the base backup to its end", e))?;
    for name in REQUIRED {
        if !seen.contains_key(Path::new(name)) {
            return Err(SourceError::Refused(format!(
                "the backup's tar holds no \"{name}\": it is not a whole base backup of a data directory (pg_basebackup -Ft -D - writes PG_VERSION, global/pg_control, backup_label and backup_manifest)"
            )));
        }
    }
    if let Some(bytes) = manifest {
        found.listed = check_manifest(&bytes, &seen)?;
    }
    Ok(found)
}

/// A manifest past this is not pg_basebackup's (it takes about 150 bytes a file).
const MANIFEST_LIMIT: u64 = 256 << 20;

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(rename = "Files")]
    files: Vec<ManifestFile>,
    #[serde(rename = "Manifest-Checksum")]
    checksum: String,
}

#[derive(serde::Deserialize)]
struct ManifestFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    /// Hex of a name that is not valid UTF-8.
    #[serde(rename = "Encoded-Path")]
    encoded: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
}

/// Check `backup_manifest` the way `pg_verifybackup` starts to: its own SHA-256 (over
/// every line but the last), and every file it lists present in the tar with its size
/// (the per-file CRC-32C is left to `pg_verifybackup`). The number of files listed.
fn check_manifest(bytes: &[u8], sizes: &HashMap<PathBuf, u64>) -> Result<u64, SourceError> {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let bad = |why: String| {
        SourceError::Refused(format!(
            "the backup's backup_manifest {why}; the base backup is not whole"
        ))
    };
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("cannot be read ({e})")))?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let end = body
        .iter()
        .rposition(|b| *b == b'\n')
        .ok_or_else(|| bad("is one line".to_string()))?;
    let sum = hex::encode(Sha256::digest(&body[..=end]));
    if !sum.eq_ignore_ascii_case(&manifest.checksum) {
        return Err(bad(format!(
            "fails its own checksum (it says {}, its contents hash to {sum})",
            manifest.checksum
        )));
    }
    for f in &manifest.files {
        let path = match (&f.path, &f.encoded) {
            (Some(p), _) => PathBuf::from(p),
            (None, Some(hexed)) => PathBuf::from(std::ffi::OsStr::from_bytes(
                &hex::decode(hexed).map_err(|e| bad(format!("has a bad Encoded-Path ({e})")))?,
            )),
            (None, None) => return Err(bad("lists a file without a path".to_string())),
        };
        match sizes.get(&path) {
            None => {
                return Err(bad(format!(
                    "lists \"{}\", which the tar lacks",
                    path.display()
                )));
            }
            Some(size) if *size != f.size => {
                return Err(bad(format!(
                    "gives \"{}\" {} bytes, the tar {size}",
                    path.display(),
                    f.size
                )));
            }
            Some(_) => {}
        }
    }
    Ok(manifest.files.len() as u64)
}

fn write_err(root: &Path, rel: &Path, e: std::io::Error) -> SourceError {
    SourceError::io(format!("writing {}", root.join(rel).display()), e)
}

/// Make `rel` and its parents under `root`, each a real directory (mode 0700): a name that
/// exists as anything else (a link, a file) is refused, never followed.
fn make_dirs(
    root: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
    made: &mut HashSet<PathBuf>,
) -> Result<(), SourceError> {
    let mut sofar = PathBuf::new();
    for c in rel.components() {
        sofar.push(c);
        if made.contains(&sofar) {
            continue;
        }
        let path = root.join(&sofar);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                set_owner(&path, owner)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let is_dir = std::fs::symlink_metadata(&path)
                    .map(|m| m.file_type().is_dir())
                    .unwrap_or(false);
                if !is_dir {
                    return Err(SourceError::Refused(format!(
                        "{} exists and is not a directory; the backup's entries under it are not written",
                        path.display()
                    )));
                }
            }
            Err(e) => {
                return Err(SourceError::io(
                    format!("cannot create directory {}", path.display()),
                    e,
                ));
            }
        }
        made.insert(sofar.clone());
    }
    Ok(())
}

/// A new file (mode 0600) at `rel` under `root`: never one that exists, never through a link.
pub(super) fn create_file(
    root: &Path,
    rel: &Path,
    owner: Option<(u32, u32)>,
    made: &mut HashSet<PathBuf>,
) -> Result<std::fs::File, SourceError> {
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        make_dirs(root, parent, owner, made)?;
    }
    let path = root.join(rel);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| SourceError::io(format!("cannot create {}", path.display()), e))?;
    set_owner(&path, owner)?;
    Ok(file)
}

/// Give a path written for the data directory to the directory's owner (PostgreSQL refuses
/// a data directory whose files it does not own). `lchown`: never through a link.
pub(super) fn set_owner(path: &Path, owner: Option<(u32, u32)>) -> Result<(), SourceError> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
            SourceError::io(
                format!(
                    "cannot give {} to the data directory's owner (uid {uid}); run the restore as root or as that user",
                    path.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Read a stored base backup through and check it is whole (`verify`).
pub(super) async fn check(
    reader: Box<dyn AsyncRead + Send + Unpin>,
) -> Result<Found, SourceError> {
    let bridge = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || walk(bridge, &Visit::Check))
        .await
        .map_err(|e| SourceError::internal("checking the base backup", e))?
}

/// Extract a stored base backup into `root` (an empty directory).
pub(super) async fn extract(
    reader: Box<dyn AsyncRead + Send + Unpin>,
    root: PathBuf,
    owner: Option<(u32, u32)>,
) -> Result<Found, SourceError> {
    let bridge = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || walk(bridge, &Visit::Extract { root: &root, owner }))
        .await
        .map_err(|e| SourceError::internal("extracting the base backup", e))?
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A tar like pg_basebackup's, with `extra` entries appended by the caller's builder.
    pub(crate) fn base_tar(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o700);
            h.set_size(0);
            b.append_data(&mut h, name, std::io::empty())
                .expect("append");
        };
        dir(&mut b, "global");
        dir(&mut b, "base");
        dir(&mut b, "base/1");
        for (name, data) in [
            ("PG_VERSION", "15\n"),
            ("backup_label", "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"),
            ("global/pg_control", "control"),
            ("base/1/1259", "relation"),
            ("postgresql.auto.conf", "# Do not edit this file manually!\n"),
        ] {
            file(&mut b, name, data.as_bytes());
        }
        extra(&mut b);
        file(&mut b, "backup_manifest", manifest(&[("PG_VERSION", 3), ("global/pg_control", 7)]).as_bytes());
        b.into_inner().expect("tar")
    }

    /// A backup_manifest as PostgreSQL writes it, listing `files` (path, size).
    pub(crate) fn manifest(files: &[(&str, u64)]) -> String {
        use sha2::{Digest, Sha256};
        let mut m = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        let lines: Vec<String> = files
            .iter()
            .map(|(p, n)| format!("{{ \"Path\": \"{p}\", \"Size\": {n} }}"))
            .collect();
        m.push_str(&lines.join(",\n"));
        m.push_str("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let sum = hex::encode(Sha256::digest(m.as_bytes()));
        m.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
        m
    }

    pub(crate) fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("append");
    }

    /// A header whose name the builder would refuse ("..", absolute): written raw.
    pub(crate) fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: Option<&str>) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(0);
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                raw.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("append");
    }

    #[test]
    fn a_whole_base_backup_is_found_whole() {
        let found = walk(&base_tar(|_| {})[..], &Visit::Check).expect("whole");
        assert_eq!(found.version, "15");
        assert_eq!((found.files, found.dirs), (6, 3));
        assert_eq!(found.listed, 2);
        assert!(found.to_string().starts_with("PostgreSQL 15 data directory: 6 files in 3 directories"));
    }

    #[test]
    fn a_missing_file_makes_it_not_whole() {
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "PG_VERSION", b"15\n");
        let e = walk(&b.into_inner().unwrap()[..], &Visit::Check).expect_err("not whole");
        assert!(e.to_string().starts_with("the backup's tar holds no \"global/pg_control\""), "{e}");
    }

    #[test]
    fn links_devices_and_escapes_are_refused() {
        for (name, kind, link, why) in [
            ("../x", tar::EntryType::Regular, None, "\"../x\" is a path with \"..\""),
            ("base/../../x", tar::EntryType::Regular, None, "is a path with \"..\""),
            ("/etc/x", tar::EntryType::Regular, None, "\"/etc/x\" is an absolute path"),
            ("base/link", tar::EntryType::Symlink, Some("/etc"), "\"base/link\" is a link"),
            ("base/hard", tar::EntryType::Link, Some("PG_VERSION"), "\"base/hard\" is a link"),
            ("pg_tblspc/16384", tar::EntryType::Symlink, Some("/srv/ts"), "tablespaces are not supported"),
            ("dev", tar::EntryType::Char, None, "\"dev\" is a Char entry"),
            ("fifo", tar::EntryType::Fifo, None, "\"fifo\" is a Fifo entry"),
        ] {
            let tar = base_tar(|b| raw_entry(b, name, kind, link));
            let e = walk(&tar[..], &Visit::Check).expect_err(name);
            assert!(e.is_refusal(), "{name}: {e}");
            assert!(e.to_string().contains(why), "{name}: {e}");
            let dir = tempfile::tempdir().unwrap();
            let e = walk(&tar[..], &Visit::Extract { root: dir.path(), owner: None }).expect_err(name);
            assert!(e.to_string().contains(why), "{name}: {e}");
            assert!(!dir.path().parent().unwrap().join("x").exists());
        }
    }

    #[test]
    fn extraction_writes_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let found = walk(&base_tar(|_| {})[..], &Visit::Extract { root: dir.path(), owner: None }).expect("extracted");
        assert_eq!(found.files, 6);
        assert_eq!(std::fs::read_to_string(dir.path().join("PG_VERSION")).unwrap(), "15\n");
        assert_eq!(std::fs::read(dir.path().join("base/1/1259")).unwrap(), b"relation");
        let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("base/1"), 0o700);
        assert_eq!(mode("base/1/1259"), 0o600);
        // A second entry of a name already written is refused, not overwritten.
        let tar = base_tar(|b| file(b, "PG_VERSION", b"99"));
        let dir = tempfile::tempdir().unwrap();
        let e = walk(&tar[..], &Visit::Extract { root: dir.path(), owner: None }).expect_err("twice");
        assert!(e.to_string().contains("a second entry of the same name"), "{e}");
    }

    #[test]
    fn the_manifest_must_match_the_tar() {
        for (m, why) in [
            (manifest(&[("PG_VERSION", 4)]), "gives \"PG_VERSION\" 4 bytes, the tar 3"),
            (manifest(&[("base/1/2", 4)]), "lists \"base/1/2\", which the tar lacks"),
            (
                manifest(&[("PG_VERSION", 3)]).replace("0/2000100", "0/2000101"),
                "fails its own checksum",
            ),
            ("{}".to_string(), "cannot be read"),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in [
                ("PG_VERSION", &b"15\n"[..]),
                ("backup_label", b"x"),
                ("global/pg_control", b"control"),
                ("backup_manifest", m.as_bytes()),
            ] {
                file(&mut b, name, data);
            }
            let e = walk(&b.into_inner().unwrap()[..], &Visit::Check).expect_err(why);
            assert!(e.is_refusal() && e.to_string().contains(why), "{why}: {e}");
        }
    }
}
