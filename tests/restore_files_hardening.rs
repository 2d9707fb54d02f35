//! Issue 23, item 4: the files restore writes only inside its target. Real files, a real
//! local destination and the real binary (one test drives the library in-process, to be
//! the process whose temporary names an attacker would guess). Each test fails on the code
//! before the fix: links in the target were written through, temporary names were
//! predictable and opened without O_EXCL/O_NOFOLLOW, a forged index could name objects
//! outside the destination, setuid bits came back, and dumps were world-readable.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    Job, JobBuilder, list_tree, run_with_timeout, sha256_hex, stowage_says, text, write_file,
};

const JOB: &str = "app";

/// Job `app` with the local destination `local` backing up the files source `source` (at
/// the directory of that name), `extra` keys in `[jobs.app]`.
fn files_job(job: JobBuilder, source: &str, extra: &str) -> JobBuilder {
    let path = job.path(source);
    job.local("local", Some(5))
        .job(extra)
        .files(source, &path, "")
}

/// A job of its own backing up `uploads`.
fn uploads_job(extra: &str) -> Job {
    files_job(
        Job::with_prefix(JOB, "stowage-hardening-"),
        "uploads",
        extra,
    )
    .write()
}

fn restore(job: &Job, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["restore", JOB, "latest"];
    all.extend_from_slice(args);
    job.stowage(&all)
}

/// The one run directory under `orphan_files/`.
fn orphan_run(job: &Job) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(job.path("orphan_files"))
        .expect("orphan_files exists")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// (a) The target holds `a -> <outside>` and the backup has `a/x`: nothing is written in
/// the outside directory, `a` becomes a real directory holding `x`, and the link is kept
/// in orphan_files.
#[test]
fn a_link_to_a_directory_outside_is_moved_aside_not_written_through() {
    let job = uploads_job("");
    write_file(&job.path("uploads"), "a/x", b"x from the backup");
    write_file(&job.path("uploads"), "b", b"b");
    job.backup();

    std::fs::remove_dir_all(job.path("uploads/a")).expect("rm a");
    std::fs::create_dir(job.path("outside")).expect("outside");
    symlink(job.path("outside"), job.path("uploads/a")).expect("link a");

    let (code, out) = restore(&job, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        entries(&job.path("outside")),
        Vec::<String>::new(),
        "the restore wrote through the link:\n{out}"
    );
    let a = std::fs::symlink_metadata(job.path("uploads/a")).expect("a");
    assert!(a.is_dir(), "a is not a real directory: {a:?}");
    assert_eq!(
        std::fs::read(job.path("uploads/a/x")).expect("a/x"),
        b"x from the backup"
    );
    let moved = orphan_run(&job).join("a");
    assert!(
        is_link(&moved),
        "the link was not moved to {}",
        moved.display()
    );
    assert_eq!(
        std::fs::read_link(&moved).expect("readlink"),
        job.path("outside")
    );
    assert!(out.contains("moved a (a symbolic link"), "{out}");
}

/// (b) A link at the final path of a file (`f -> <outside>/victim`), and a link planted
/// at the temporary name the old code used (`.f.stowage-restore-<pid>`): neither target
/// is touched, `f` is a regular file again, the link at `f` is kept in orphan_files. The
/// restore runs in this process so that the planted name has the restorer's pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_at_a_file_path_and_its_temporary_name_are_not_followed() {
    let job = uploads_job("");
    write_file(&job.path("uploads"), "f", b"f from the backup");
    job.backup();

    write_file(&job.path("outside"), "victim", b"victim");
    write_file(&job.path("outside"), "victim2", b"victim2");
    std::fs::remove_file(job.path("uploads/f")).expect("rm f");
    symlink(job.path("outside/victim"), job.path("uploads/f")).expect("link f");
    let planted = job
        .path("uploads")
        .join(format!(".f.stowage-restore-{}", std::process::id()));
    symlink(job.path("outside/victim2"), &planted).expect("plant");

    let config = stowage::load::load(&job.config).expect("config");
    let req = stowage::restore::RestoreRequest {
        job: JOB.into(),
        id: "latest".into(),
        ..Default::default()
    };
    let summary = stowage::restore::restore(&config, &req)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let out = summary.lines.join("\n");

    assert_eq!(
        std::fs::read(job.path("outside/victim")).expect("victim"),
        b"victim"
    );
    assert_eq!(
        std::fs::read(job.path("outside/victim2")).expect("victim2"),
        b"victim2",
        "the temporary file was opened through a planted link:\n{out}"
    );
    let f = std::fs::symlink_metadata(job.path("uploads/f")).expect("f");
    assert!(f.is_file(), "f is not a regular file: {f:?}\n{out}");
    assert_eq!(
        std::fs::read(job.path("uploads/f")).expect("f"),
        b"f from the backup"
    );
    let moved = orphan_run(&job).join("f");
    assert!(
        is_link(&moved),
        "the link at f was not kept in orphan_files:\n{out}"
    );
    assert_eq!(
        std::fs::read_link(&moved).expect("readlink"),
        job.path("outside/victim")
    );
    // The planted name is no path of the backup: left alone, still a link.
    assert!(is_link(&planted));
}

/// Component-wise order of index paths (`blobs::path_order`).
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// (c) An index rewritten by whoever can write to the destination (its manifest's sha256
/// and size fixed up so the checks pass): paths leaving the target (`../escape`, an
/// absolute path), blob keys leaving the destination's root, and a manifest key leaving it
/// are refused with a message naming them, and nothing is written outside (nor anything
/// read from outside lands in the target).
#[test]
fn a_forged_index_is_refused_and_nothing_is_written_outside() {
    // Uncompressed: the forged index is plain JSON Lines, and an object outside the
    // destination would be read as it is.
    let job = uploads_job("compression = \"none\"");
    write_file(&job.path("uploads"), "ok", b"ok");
    let id = job.backup();
    let dir = job.backup_dir("local", &id);
    let index_path = dir.join("uploads.files.json");
    let manifest_path = dir.join("manifest.json");
    let index = std::fs::read_to_string(&index_path).expect("index");
    let manifest = std::fs::read_to_string(&manifest_path).expect("manifest");
    let mut lines = index.lines();
    let header = lines.next().expect("header").to_string();
    let ok: serde_json::Value = serde_json::from_str(lines.next().expect("entry")).expect("entry");
    assert_eq!(ok["path"], "ok");

    let secret = b"secret outside the destination";
    std::fs::write(job.path("secret"), secret).expect("secret");
    let abs = job.path("abs/path").display().to_string();
    let secret_abs = job.path("secret").display().to_string();

    // Write an index with `ok` plus `forged` (in path order) and fix up the manifest;
    // `key` replaces the manifest's key of the index when given.
    let forge = |forged: serde_json::Value, key: Option<(&str, &Path)>| {
        let mut es = vec![ok.clone(), forged];
        es.sort_by(|a, b| {
            path_order(
                a["path"].as_str().expect("path"),
                b["path"].as_str().expect("path"),
            )
        });
        let mut body = header.clone();
        body.push('\n');
        for e in &es {
            body.push_str(&serde_json::to_string(e).expect("json"));
            body.push('\n');
        }
        let at = key.map_or(index_path.clone(), |(_, p)| p.to_path_buf());
        std::fs::write(&at, &body).expect("write index");
        let mut m: serde_json::Value = serde_json::from_str(&manifest).expect("manifest json");
        for s in m["sources"].as_array_mut().expect("sources") {
            if s["name"] == "uploads" {
                s["sha256"] = sha256_hex(body.as_bytes()).into();
                s["size"] = (body.len() as u64).into();
                if let Some((k, _)) = key {
                    s["key"] = k.into();
                }
            }
        }
        std::fs::write(&manifest_path, serde_json::to_vec(&m).expect("json")).expect("manifest");
    };
    let entry = |path: &str, blob: &str, data: &[u8]| {
        let mut e = ok.clone();
        e["path"] = path.into();
        e["blob"] = blob.into();
        e["size"] = (data.len() as u64).into();
        e["sha256"] = sha256_hex(data).into();
        e
    };
    let ok_blob = ok["blob"].as_str().expect("blob").to_string();

    // What is forged, the forged entry, the manifest's key of the index (and where that
    // index is written) when it is forged too, and what the refusal must name.
    type Case<'a> = (
        &'a str,
        serde_json::Value,
        Option<(&'a str, PathBuf)>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "a path with ..",
            entry("../escape", &ok_blob, b"ok"),
            None,
            "\"../escape\"",
        ),
        ("an absolute path", entry(&abs, &ok_blob, b"ok"), None, &abs),
        (
            "a blob key with ..",
            entry("stolen", "../secret", secret),
            None,
            "\"../secret\"",
        ),
        (
            "an absolute blob key",
            entry("stolen", &secret_abs, secret),
            None,
            &secret_abs,
        ),
        (
            "a manifest key with ..",
            entry("ok2", &ok_blob, b"ok"),
            Some(("../elsewhere.files.json", job.path("elsewhere.files.json"))),
            "\"../elsewhere.files.json\"",
        ),
    ];
    for (what, forged, key, names) in cases {
        let _ = std::fs::remove_dir_all(job.path("uploads"));
        forge(forged, key.as_ref().map(|(k, p)| (*k, p.as_path())));
        let (code, out) = restore(&job, &[]);
        assert_ne!(code, Some(0), "{what}: a forged index was restored:\n{out}");
        assert!(
            out.contains(names)
                && (out.contains("unsafe path") || out.contains("refusing object key")),
            "{what}: the refusal does not name the bad value {names}:\n{out}"
        );
        assert!(
            !job.path("escape").exists(),
            "{what}: wrote {}",
            job.path("escape").display()
        );
        assert!(!job.path("abs").exists(), "{what}: wrote {abs}");
        assert!(
            !job.path("uploads/stolen").exists(),
            "{what}: a file from outside the destination was restored"
        );
        assert!(
            !job.path("uploads/ok2").exists(),
            "{what}: an index from outside the destination was used"
        );
    }
    assert_eq!(std::fs::read(job.path("secret")).expect("secret"), secret);
}

/// The directory recorded in a backup's index is data from the destination: when the
/// config has no source of that name, a restore needs --files-to rather than writing
/// wherever the index says.
#[test]
fn the_index_root_does_not_choose_where_files_go() {
    let job = uploads_job("");
    write_file(&job.path("uploads"), "x", b"x");
    job.backup();
    std::fs::remove_dir_all(job.path("uploads")).expect("rm uploads");
    // The same destination and job, whose config no longer has `uploads`.
    std::fs::create_dir_all(job.path("media")).expect("media");
    let other = files_job(Job::config_in(job.dir.path(), JOB), "media", "").write_as("other.toml");

    let (code, out) = stowage_says(&other, &["restore", JOB, "latest", "--only", "uploads"]);
    assert_ne!(code, Some(0), "restored where the index said:\n{out}");
    assert!(out.contains("--files-to"), "{out}");
    assert!(
        !job.path("uploads").exists(),
        "the index's root was written:\n{out}"
    );

    let to = job.path("restored").display().to_string();
    let (code, out) = stowage_says(
        &other,
        &[
            "restore",
            JOB,
            "latest",
            "--only",
            "uploads",
            "--files-to",
            &to,
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(job.path("restored/x")).expect("x"), b"x");
}

/// (d) A setuid file comes back without setuid (setgid and sticky likewise), and with them
/// under --keep-special-modes.
#[test]
fn special_mode_bits_come_back_only_when_asked() {
    let job = uploads_job("");
    let modes = [
        ("suid", 0o4755),
        ("sgid", 0o2750),
        ("sticky", 0o1644),
        ("plain", 0o640),
    ];
    for (name, mode) in modes {
        write_file(&job.path("uploads"), name, name.as_bytes());
        std::fs::set_permissions(
            job.path("uploads").join(name),
            std::fs::Permissions::from_mode(mode),
        )
        .expect("chmod");
    }
    job.backup();

    let mode_of = |name: &str| {
        std::fs::metadata(job.path("uploads").join(name))
            .expect(name)
            .mode()
            & 0o7777
    };
    for (args, keep) in [(&[][..], false), (&["--keep-special-modes"][..], true)] {
        std::fs::remove_dir_all(job.path("uploads")).expect("rm uploads");
        let (code, out) = restore(&job, args);
        assert_eq!(code, Some(0), "{out}");
        for (name, mode) in modes {
            let want = if keep { mode } else { mode & 0o777 };
            assert_eq!(
                mode_of(name),
                want,
                "{name}: mode {:o}, want {want:o} (args {args:?})",
                mode_of(name)
            );
        }
    }
}

/// (e) A local destination's objects are 0600 and its directories 0700, whatever the umask
/// lets through: another local user cannot read a job's dumps.
#[test]
fn local_destination_objects_are_private() {
    let job = uploads_job("");
    write_file(&job.path("uploads"), "a/b", b"b");
    write_file(&job.path("uploads"), "c", b"c");
    // Under a permissive umask, which the old code let through.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(common::stowage_bin())
        .arg("--config")
        .arg(&job.config)
        .args(["run", JOB]);
    let out = run_with_timeout(&mut cmd, common::STOWAGE_TIMEOUT);
    assert!(out.status.success(), "{}", text(&out));

    let root = job.path("local");
    let files = list_tree(&root);
    assert!(
        files.iter().any(|f| f.ends_with("manifest.json")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.contains("/blobs/")), "{files:?}");
    for f in &files {
        let m = std::fs::metadata(root.join(f)).expect("object").mode() & 0o777;
        assert_eq!(m, 0o600, "{f} is {m:o}");
    }
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        let m = std::fs::metadata(&d).expect("dir").mode() & 0o777;
        assert_eq!(m, 0o700, "{} is {m:o}", d.display());
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            if e.file_type().expect("type").is_dir() {
                dirs.push(e.path());
            }
        }
    }
}
