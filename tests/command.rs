//! `type = "command"` end to end through the real binary: a program's stdout is the backup
//! and a restore program gets it back on stdin. Failures (an exit code, a signal, a missing
//! program) publish nothing and leave earlier backups untouched; config mistakes and
//! restoring without a restore command get messages that say what to do.

mod common;

use common::text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Job, Rng, read_tree, run_stowage, toml_str, write_random_files, zstd_decompress};

const JOB: &str = "app";

fn toml_argv(argv: &[&str]) -> String {
    format!(
        "[{}]",
        argv.iter().map(toml_str).collect::<Vec<_>>().join(", ")
    )
}

/// A temp dir with a local destination and config files for job `app`.
struct Fixture {
    dir: tempfile::TempDir,
    local: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("stowage-command-")
            .tempdir()
            .expect("tempdir");
        let local = dir.path().join("dest");
        Fixture { dir, local }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A config whose job `app` has these sources (TOML bodies of `[[jobs.app.sources]]`).
    fn config(&self, file: &str, sources: &[String]) -> PathBuf {
        let mut job = Job::config_in(self.dir.path(), JOB)
            .top("[log]\nlevel = \"info\"")
            .local_at("local", &self.local, Some(10));
        for s in sources {
            job = job.source(s);
        }
        job.write_as(file)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.local.join(JOB))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("manifest.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Every file of the local destination with its bytes.
    fn destination(&self) -> BTreeMap<String, Vec<u8>> {
        if self.local.exists() {
            read_tree(&self.local)
        } else {
            BTreeMap::new()
        }
    }

    fn run_ok(&self, cfg: &Path) -> String {
        let before = self.ids();
        let out = run_stowage(cfg, ["run", JOB]);
        assert!(out.status.success(), "run failed:\n{}", text(&out));
        let new: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|i| !before.contains(i))
            .collect();
        assert_eq!(new.len(), 1, "one new backup expected:\n{}", text(&out));
        new[0].clone()
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let body =
            std::fs::read(self.local.join(JOB).join(id).join("manifest.json")).expect("manifest");
        serde_json::from_slice(&body).expect("manifest json")
    }

    /// A run that must fail and leave the destination exactly as it was; returns its output.
    fn run_fails_publishing_nothing(&self, cfg: &Path) -> String {
        let before = self.destination();
        let ids = self.ids();
        let out = run_stowage(cfg, ["run", JOB]);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(1), "the run must fail:\n{log}");
        assert_eq!(self.ids(), ids, "nothing published:\n{log}");
        let after = self.destination();
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "the failed run left files behind (or removed some):\n{log}"
        );
        assert!(
            after == before,
            "an earlier backup changed after a failed run:\n{log}"
        );
        let list = run_stowage(cfg, ["list", JOB]);
        assert!(list.status.success(), "list:\n{}", text(&list));
        assert!(
            text(&list).contains(&format!(
                "job {JOB} ({} backup{})",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            )),
            "list must show only the earlier backups:\n{}",
            text(&list)
        );
        log
    }
}

fn source(name: &str, dump: &[&str], extra: &str) -> String {
    format!(
        "type = \"command\"\nname = {}\ndump = {}\n{extra}\n",
        toml_str(name),
        toml_argv(dump)
    )
}

/// One job with two command sources, a file streamed with `cat` and a directory with `tar`,
/// restored through `{target}` and `STOWAGE_RESTORE_TARGET`: the bytes come back unchanged,
/// the object is the command's output compressed, and the manifest says what it is.
#[test]
fn round_trip_through_commands() {
    let fx = Fixture::new();
    let mut rng = Rng::new(7);
    let blob = fx.path("blob.bin");
    // Random bytes (incompressible) of an odd size, several pipe buffers long.
    let data = rng.bytes(3 * 1024 * 1024 + 123);
    std::fs::write(&blob, &data).expect("write blob");
    let tree_dir = fx.path("tree");
    let files = write_random_files(
        &mut rng,
        &tree_dir,
        (0..20).map(|i| format!("d{}/f{i}.txt", i % 3)),
        0..20_000,
    );
    let blob_s = blob.display().to_string();
    let tree_s = tree_dir.display().to_string();
    let cfg = fx.config(
        "ok.toml",
        &[
            source(
                "blob",
                &["cat", &blob_s],
                &format!(
                    "restore = {}\nextension = \"raw\"\nformat = \"raw bytes\"",
                    toml_argv(&["sh", "-c", "cat > \"$STOWAGE_RESTORE_TARGET\""])
                ),
            ),
            source(
                "tree",
                &["tar", "-C", &tree_s, "-cf", "-", "."],
                &format!(
                    "restore = {}\nextension = \"tar\"",
                    toml_argv(&["tar", "-C", "{target}", "-xf", "-"])
                ),
            ),
        ],
    );
    let check = run_stowage(&cfg, ["check-config"]);
    assert!(check.status.success(), "check-config:\n{}", text(&check));
    assert!(
        text(&check).contains("command `cat ") && text(&check).contains("restore `tar -C"),
        "check-config describes the commands:\n{}",
        text(&check)
    );

    let id = fx.run_ok(&cfg);
    let stored = std::fs::read(fx.local.join(JOB).join(&id).join("blob.raw.zst"))
        .expect("the object is <source>.<extension>.zst");
    assert!(
        zstd_decompress(&stored) == data,
        "the stored object is the command's output"
    );
    let m = fx.manifest(&id);
    let entry = |name: &str| {
        m["sources"]
            .as_array()
            .expect("sources")
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {m}"))
    };
    let b = entry("blob");
    assert_eq!(b["type"], "command");
    assert_eq!(b["format"], "raw bytes");
    assert_eq!(b["raw_size"], data.len() as u64);
    let cat = b["tool"].as_str().expect("tool recorded");
    assert!(
        cat.starts_with('/') && cat.ends_with("/cat"),
        "tool is the resolved program path: {cat}"
    );
    assert_eq!(m["tools"]["cat"], cat, "{m}");
    assert_eq!(entry("tree")["format"], "command output");
    assert!(b.get("objects").is_none(), "no objects for a command: {b}");

    let dry = run_stowage(
        &cfg,
        [
            "restore",
            JOB,
            "--to",
            "blob=-",
            "--to",
            "tree=-",
            "--dry-run",
        ],
    );
    assert!(dry.status.success(), "dry run:\n{}", text(&dry));
    assert!(
        text(&dry).contains("would run `sh -c"),
        "dry run says what it would run:\n{}",
        text(&dry)
    );

    let out_file = fx.path("restored.bin");
    let out_dir = fx.path("restored-tree");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let r = run_stowage(
        &cfg,
        [
            "restore".to_string(),
            JOB.to_string(),
            id.clone(),
            "--to".to_string(),
            format!("blob={}", out_file.display()),
            "--to".to_string(),
            format!("tree={}", out_dir.display()),
        ],
    );
    assert!(r.status.success(), "restore:\n{}", text(&r));
    assert!(
        std::fs::read(&out_file).expect("restored file") == data,
        "restored bytes differ"
    );
    assert_eq!(read_tree(&out_dir), files, "restored tree differs");
}

/// A dump that writes part of its output and exits 1 fails the run, names the command and
/// quotes its stderr; nothing is published and the earlier backup stays byte for byte.
#[test]
fn failing_dump_publishes_nothing() {
    let fx = Fixture::new();
    let good = fx.config(
        "good.toml",
        &[source("db", &["sh", "-c", "head -c 2000000 /dev/zero"], "")],
    );
    fx.run_ok(&good);
    let bad = fx.config(
        "bad.toml",
        &[source(
            "db",
            &[
                "sh",
                "-c",
                "head -c 1000000 /dev/zero; echo 'disk on fire' >&2; exit 1",
            ],
            "",
        )],
    );
    let log = fx.run_fails_publishing_nothing(&bad);
    assert!(
        log.contains("dump command `sh -c 'head -c 1000000 /dev/zero; echo")
            && log.contains("exit code 1")
            && log.contains("disk on fire"),
        "the error names the command, its exit code and its stderr:\n{log}"
    );
}

/// A dump killed by a signal while it streams fails the run the same way.
#[test]
fn dump_killed_by_a_signal_publishes_nothing() {
    let fx = Fixture::new();
    let cfg = fx.config(
        "killed.toml",
        &[source(
            "db",
            &[
                "sh",
                "-c",
                "head -c 3000000 /dev/urandom; echo 'about to die' >&2; kill -KILL $$",
            ],
            "",
        )],
    );
    let log = fx.run_fails_publishing_nothing(&cfg);
    assert!(
        log.contains("killed by signal 9") && log.contains("about to die"),
        "the error says the command was killed:\n{log}"
    );
    assert!(fx.ids().is_empty());
}

/// A program that is not there fails before anything is uploaded, saying where it looked.
#[test]
fn missing_program_is_named() {
    let fx = Fixture::new();
    let cfg = fx.config(
        "missing.toml",
        &[source("db", &["stowage-no-such-dump-tool", "--all"], "")],
    );
    let check = run_stowage(&cfg, ["check-config"]);
    assert!(
        check.status.success(),
        "a program missing at config time is not a config error:\n{}",
        text(&check)
    );
    let log = fx.run_fails_publishing_nothing(&cfg);
    assert!(
        log.contains("stowage-no-such-dump-tool not found on PATH") && log.contains("source db"),
        "{log}"
    );
    let cfg = fx.config(
        "missing-abs.toml",
        &[source("db", &["/nonexistent/dump.sh"], "")],
    );
    let log = fx.run_fails_publishing_nothing(&cfg);
    assert!(log.contains("/nonexistent/dump.sh does not exist"), "{log}");
}

/// Without a restore command, a restore refuses before downloading anything and says how
/// to restore by hand; a failing restore command is quoted like a failing dump.
#[test]
fn restore_needs_a_restore_command() {
    let fx = Fixture::new();
    let cfg = fx.config("dump-only.toml", &[source("db", &["echo", "hello"], "")]);
    fx.run_ok(&cfg);
    let out = run_stowage(&cfg, ["restore", JOB, "--to", "-"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("source \"db\" (type \"command\") has no restore command")
            && log.contains("restore = [")
            && log.contains("zstd -dc db.bin.zst"),
        "{log}"
    );

    let cfg = fx.config(
        "bad-restore.toml",
        &[source(
            "db",
            &["echo", "hello"],
            &format!(
                "restore = {}",
                toml_argv(&[
                    "sh",
                    "-c",
                    "cat >/dev/null; echo 'target refused' >&2; exit 3"
                ])
            ),
        )],
    );
    let out = run_stowage(&cfg, ["restore", JOB, "--to", "-"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("restore command `sh -c")
            && log.contains("exit code 3")
            && log.contains("target refused"),
        "{log}"
    );
    let out = run_stowage(&cfg, ["restore", JOB, "--to", "-", "--table", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("restored whole"), "{}", text(&out));
}

/// Config mistakes get one specific message each, naming the key.
#[test]
fn bad_configs_get_specific_messages() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "missing dump",
            "type = \"command\"\nname = \"db\"\n",
            "jobs.app.sources[0].dump: required for type = \"command\"",
        ),
        (
            "empty dump",
            "type = \"command\"\nname = \"db\"\ndump = []\n",
            "jobs.app.sources[0].dump: is empty; give the program and its arguments",
        ),
        (
            "dump as a string",
            "type = \"command\"\nname = \"db\"\ndump = \"pg_dumpall | gzip\"\n",
            "jobs.app.sources[0].dump: \"pg_dumpall | gzip\" is a string, but the command is not run through a shell",
        ),
        (
            "a number argument",
            "type = \"command\"\nname = \"db\"\ndump = [\"sleep\", 5]\n",
            "jobs.app.sources[0].dump[1]: 5 is a number; every argument is a string: write \"5\"",
        ),
        (
            "a table",
            "type = \"command\"\nname = \"db\"\ndump = { cmd = \"x\" }\n",
            "jobs.app.sources[0].dump: expected an array of strings (the program and its arguments), found a table",
        ),
        (
            "empty program",
            "type = \"command\"\nname = \"db\"\ndump = [\"\", \"x\"]\n",
            "jobs.app.sources[0].dump[0]: is empty; the first element is the program to run",
        ),
        (
            "relative program",
            "type = \"command\"\nname = \"db\"\ndump = [\"./dump.sh\"]\n",
            "jobs.app.sources[0].dump[0]: \"./dump.sh\" is a relative path",
        ),
        (
            "empty restore",
            "type = \"command\"\nname = \"db\"\ndump = [\"true\"]\nrestore = []\n",
            "jobs.app.sources[0].restore: is empty; give the program and its arguments, e.g. restore = [",
        ),
        (
            "bad extension",
            "type = \"command\"\nname = \"db\"\ndump = [\"true\"]\nextension = \".tar\"\n",
            "jobs.app.sources[0].extension: \".tar\" must not start or end with '.'",
        ),
        (
            "extension with a slash",
            "type = \"command\"\nname = \"db\"\ndump = [\"true\"]\nextension = \"a/b\"\n",
            "jobs.app.sources[0].extension: \"a/b\" may only hold letters, digits",
        ),
        (
            "wrong type for format",
            "type = \"command\"\nname = \"db\"\ndump = [\"true\"]\nformat = 3\n",
            "jobs.app.sources[0].format",
        ),
        (
            "a postgres key",
            "type = \"command\"\nname = \"db\"\ndump = [\"true\"]\nurl = \"postgres://x@y/z\"\n",
            "jobs.app.sources[0].url: only valid for type = \"postgres\"",
        ),
        (
            "a typo",
            "type = \"command\"\nname = \"db\"\ndump = [\"true\"]\nrestor = [\"x\"]\n",
            "jobs.app.sources[0].restor: unknown key \"restor\" (did you mean \"restore\"?)",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, body, expected)) in cases.iter().enumerate() {
        let cfg = fx.config(&format!("bad{i}.toml"), &[body.to_string()]);
        let out = run_stowage(&cfg, ["check-config"]);
        let log = text(&out);
        if out.status.code() != Some(2) || !log.contains(expected) {
            failures.push(format!(
                "{what}: exit {:?}, expected {expected:?} in:\n{log}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The restore command learns the target and --clean from its environment, and what it
/// prints is passed on.
#[test]
fn restore_command_gets_target_and_clean() {
    let fx = Fixture::new();
    let cfg = fx.config(
        "env.toml",
        &[source(
            "db",
            &["echo", "hello"],
            &format!(
                "restore = {}",
                toml_argv(&[
                    "sh",
                    "-c",
                    "read line; echo \"got=$line target=$STOWAGE_RESTORE_TARGET clean=${STOWAGE_RESTORE_CLEAN:-no} arg=$1\"",
                    "sh",
                    "{target}/x",
                ])
            ),
        )],
    );
    fx.run_ok(&cfg);
    let out = run_stowage(&cfg, ["restore", JOB, "--to", "db=/srv/a.b"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("got=hello target=/srv/a.b clean=no arg=/srv/a.b/x"),
        "{}",
        text(&out)
    );
    // A target with shell syntax (here a space) is not pasted into {target}: it is passed
    // through STOWAGE_RESTORE_TARGET only (issue 23).
    let out = run_stowage(&cfg, ["restore", JOB, "--to", "db=/srv/a b"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("STOWAGE_RESTORE_TARGET"),
        "{}",
        text(&out)
    );
    let out = run_stowage(&cfg, ["restore", JOB, "--to", "-", "--clean"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("got=hello target=- clean=1 arg=-/x"),
        "{}",
        text(&out)
    );
}
