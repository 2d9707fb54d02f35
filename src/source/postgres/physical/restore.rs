//! A base backup written into a data directory, with the settings for point-in-time
//! recovery: `recovery.signal`, and in `postgresql.auto.conf` the `restore_command` that
//! fetches WAL through stowage and where replay stops.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::tarball;
use super::wal::Lsn;
use crate::engine::{Archive, Recovery, RecoveryTarget, RestoreOptions, SourceError};

/// `--to` for a physical restore: the data directory, as an absolute path.
pub(super) fn check_target(target: &str) -> Result<(), String> {
    if target.is_empty() || !target.starts_with('/') {
        return Err(format!(
            "\"{target}\" is not an absolute path; give the data directory to restore into, e.g. /var/lib/postgresql/data"
        ));
    }
    if target.contains('\0') {
        return Err(format!("\"{}\" holds a NUL byte", target.escape_debug()));
    }
    Ok(())
}

/// Restore the base backup in `archive` into the directory `opts.target`.
pub(super) async fn restore(
    archive: &dyn Archive,
    opts: &RestoreOptions,
) -> Result<Vec<String>, SourceError> {
    check_target(&opts.target).map_err(SourceError::Refused)?;
    let dir = PathBuf::from(&opts.target);
    // Everything about the settings is checked before anything is written.
    let settings = opts.recovery.as_ref().map(recovery_settings).transpose()?;
    let mut lines = Vec::new();
    let (exists, contents) = inspect_target(&dir, opts.clean)?;
    if opts.dry_run {
        dry_run(&dir, exists, contents.len(), settings.as_deref(), &mut lines);
        return Ok(lines);
    }

    if !exists {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                SourceError::io(
                    format!(
                        "cannot create data directory {} (its parent must exist)",
                        dir.display()
                    ),
                    e,
                )
            })?;
        lines.push(format!("created {}", dir.display()));
    }
    let meta = std::fs::metadata(&dir)
        .map_err(|e| SourceError::io(format!("cannot look at {}", dir.display()), e))?;
    let euid = rustix::process::geteuid().as_raw();
    let owner = (meta.uid() != euid).then_some((meta.uid(), meta.gid()));

    // The backup is written into a private directory inside the target and moved into
    // place only once the stream has been read to its end, where its size and sha256 are
    // checked: a damaged or altered backup changes nothing (not even what --clean would
    // delete), and restore need not read the whole object a first time to check it.
    let staging = tempfile::Builder::new()
        .prefix(".stowage-restore-")
        .tempdir_in(&dir)
        .map_err(|e| SourceError::io(format!("cannot write in {}", dir.display()), e))?;
    let written = write_data_dir(archive, staging.path(), owner, settings.as_deref()).await;
    let found = match written {
        Ok(found) => found,
        Err(e) => {
            drop(staging);
            if !exists {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e);
        }
    };
    crate::engine::commit_point();
    if !contents.is_empty() {
        empty(&dir, staging.path()).map_err(|e| {
            SourceError::Incomplete(format!(
                "{e}; --clean deleted part of what {} held and the backup was not moved in: delete the rest and restore again",
                dir.display()
            ))
        })?;
        lines.push(format!(
            "deleted the {} entries that were in {} (--clean)",
            contents.len(),
            dir.display()
        ));
    }
    move_into(staging.path(), &dir).map_err(|e| {
        SourceError::Incomplete(format!(
            "{e}; the base backup was only partly moved into place: delete the contents of {} and restore again",
            dir.display()
        ))
    })?;
    drop(staging);
    // PostgreSQL refuses a data directory that group or others can write or enter beyond
    // 0750.
    if meta.mode() & 0o027 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            SourceError::io(format!("cannot make {} private (0700)", dir.display()), e)
        })?;
        lines.push(format!(
            "made {} private (mode 0700, as PostgreSQL requires)",
            dir.display()
        ));
    }
    lines.push(format!("extracted the base backup into {}: {found}", dir.display()));
    let Some(settings) = settings else {
        lines.push(format!(
            "no recovery settings were written: this base backup holds no WAL, so PostgreSQL cannot start on {} alone; restore with a recovery target (e.g. --latest) to have it fetch WAL from stowage, or check the copy with `pg_verifybackup -n {}`",
            dir.display(),
            dir.display()
        ));
        return Ok(lines);
    };
    next_steps(&dir, &settings, opts.recovery.as_ref(), &mut lines);
    Ok(lines)
}

/// Whether the data directory `dir` exists and what it holds; refused when it is not a
/// directory, a server may be running on it, or it is not empty without `clean`.
fn inspect_target(dir: &Path, clean: bool) -> Result<(bool, Vec<String>), SourceError> {
    let exists = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(SourceError::Refused(format!(
                "{} is not a directory; give the data directory to restore into",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(SourceError::io(format!("cannot look at {}", dir.display()), e)),
    };
    let contents = if exists { list(dir)? } else { Vec::new() };
    if contents.iter().any(|n| n == "postmaster.pid") {
        return Err(SourceError::Refused(format!(
            "{} holds postmaster.pid: a PostgreSQL server may be running on it; stop it first (or delete the file if the server is gone)",
            dir.display()
        )));
    }
    if !contents.is_empty() && !clean {
        return Err(SourceError::Refused(format!(
            "data directory {} is not empty (it holds \"{}\"{}); restore into an empty directory, or add --clean to delete its contents first",
            dir.display(),
            contents[0],
            if contents.len() > 1 {
                format!(" and {} more", contents.len() - 1)
            } else {
                String::new()
            }
        )));
    }
    Ok((exists, contents))
}

/// What a restore into `dir` would do.
fn dry_run(
    dir: &Path,
    exists: bool,
    entries: usize,
    settings: Option<&str>,
    lines: &mut Vec<String>,
) {
    if !exists {
        lines.push(format!("would create {} (mode 0700)", dir.display()));
    } else if entries > 0 {
        lines.push(format!(
            "would delete the {entries} entries in {} (--clean)",
            dir.display()
        ));
    }
    lines.push(format!(
        "would extract the base backup into {}",
        dir.display()
    ));
    if let Some(s) = settings {
        lines.push(format!(
            "would write {}/recovery.signal and append to postgresql.auto.conf:",
            dir.display()
        ));
        lines.extend(s.lines().map(|l| format!("  {l}")));
    }
}

/// The recovery settings written and the exact next step, for the restore's report.
fn next_steps(dir: &Path, settings: &str, recovery: Option<&Recovery>, lines: &mut Vec<String>) {
    lines.push(format!("wrote {}/recovery.signal", dir.display()));
    lines.push(format!(
        "appended to {}/postgresql.auto.conf:",
        dir.display()
    ));
    lines.extend(settings.lines().map(|l| format!("  {l}")));
    let until = match recovery.map(|r| &r.target) {
        Some(RecoveryTarget::Time(t)) => format!("the last commit at or before {}", conf_time(t)),
        Some(RecoveryTarget::Lsn(l)) => format!("LSN {l}"),
        Some(RecoveryTarget::Name(n)) => format!("the restore point \"{n}\""),
        Some(RecoveryTarget::Latest) | None => "the end of the archived WAL".to_string(),
    };
    lines.push(format!(
        "next: start PostgreSQL on {} (as the directory's owner, e.g. pg_ctl -D {} start); it fetches WAL through stowage and replays it to {until}, then opens for writes on a new timeline",
        dir.display(),
        dir.display()
    ));
}

/// Extract the base backup into `dir` (empty), make the WAL directories it lacks, and
/// write the recovery settings when asked.
async fn write_data_dir(
    archive: &dyn Archive,
    dir: &Path,
    owner: Option<(u32, u32)>,
    settings: Option<&str>,
) -> Result<tarball::Found, SourceError> {
    let found = tarball::extract(archive.open().await?, dir.to_path_buf(), owner).await?;
    // With `-X none` the backup has no WAL directory, or an empty one; the server needs
    // both to exist.
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let path = dir.join(sub);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SourceError::Refused(format!(
                    "the backup's \"{sub}\" is not a directory; it is not a base backup PostgreSQL can start from"
                )));
            }
            Err(_) => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|e| SourceError::io(format!("cannot create {}", path.display()), e))?;
                tarball::set_owner(&path, owner)?;
            }
        }
    }
    let Some(settings) = settings else {
        return Ok(found);
    };
    // A backup of a standby holds standby.signal, which would win over recovery.signal and
    // keep the restored server waiting for a primary instead of promoting at the target.
    let standby = dir.join("standby.signal");
    if std::fs::symlink_metadata(&standby).is_ok() {
        std::fs::remove_file(&standby)
            .map_err(|e| SourceError::io(format!("cannot remove {}", standby.display()), e))?;
    }
    let signal = dir.join("recovery.signal");
    let created = std::fs::symlink_metadata(&signal).is_err();
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&signal)
        .map_err(|e| SourceError::io(format!("cannot write {}", signal.display()), e))?;
    if created {
        tarball::set_owner(&signal, owner)?;
    }
    append_conf(dir, settings, owner)?;
    Ok(found)
}

/// The names in a directory, sorted, for messages and for emptying it.
fn list(dir: &Path) -> Result<Vec<String>, SourceError> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SourceError::io(format!("cannot list {}", dir.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| SourceError::io(format!("cannot list {}", dir.display()), e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Delete what a directory holds but `keep`, not the directory: a link is removed as a
/// link, never followed (`remove_dir_all` does not follow links below the directory it is
/// given).
fn empty(dir: &Path, keep: &Path) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SourceError::io(format!("cannot list {}", dir.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| SourceError::io(format!("cannot list {}", dir.display()), e))?;
        let path = e.path();
        if path == keep {
            continue;
        }
        let is_dir = e
            .file_type()
            .map_err(|err| SourceError::io(format!("cannot look at {}", path.display()), err))?
            .is_dir();
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|err| {
            SourceError::io(format!("cannot delete {} (--clean)", path.display()), err)
        })?;
    }
    Ok(())
}

/// Move every entry of `from` into `to` (the same file system: a rename each).
fn move_into(from: &Path, to: &Path) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(from)
        .map_err(|e| SourceError::io(format!("cannot list {}", from.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| SourceError::io(format!("cannot list {}", from.display()), e))?;
        let dest = to.join(e.file_name());
        std::fs::rename(e.path(), &dest)
            .map_err(|err| SourceError::io(format!("cannot move {} into place", dest.display()), err))?;
    }
    Ok(())
}

fn append_conf(dir: &Path, text: &str, owner: Option<(u32, u32)>) -> Result<(), SourceError> {
    let path = dir.join("postgresql.auto.conf");
    let existed = std::fs::symlink_metadata(&path).is_ok();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| SourceError::io(format!("cannot open {}", path.display()), e))?;
    // The file may end without a newline; the settings must start on a line of their own.
    file.write_all(format!("\n{text}").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| SourceError::io(format!("cannot write {}", path.display()), e))?;
    if !existed {
        tarball::set_owner(&path, owner)?;
    }
    Ok(())
}

/// The lines appended to `postgresql.auto.conf` for a recovery.
///
/// `recovery_target_inclusive` is on (its default, set again against an inherited value):
/// replay stops before the first
/// commit later than the target, so a commit stamped exactly at the target second is part
/// of the result, which is what "the database as it was at T" means (and what the timestamps
/// people read from their own logs mean). PostgreSQL stamps commits in microseconds: a
/// target of 08:14:03 keeps a commit of 08:14:03.000000 but not one of 08:14:03.4.
pub(super) fn recovery_settings(recovery: &Recovery) -> Result<String, SourceError> {
    let mut out = String::from(
        "# Written by stowage for a point-in-time restore; remove these lines (and recovery.signal) to undo.\n",
    );
    out.push_str(&format!(
        "restore_command = {}\n",
        restore_command_setting(&recovery.restore_command).map_err(SourceError::Refused)?
    ));
    // A backup of a server that was itself restored carries that restore's settings in
    // postgresql.auto.conf; the last line of a name wins, so each target this restore does
    // not set is set empty here: PostgreSQL refuses more than one target, and an inherited
    // one would stop replay at the wrong place.
    let ours = match &recovery.target {
        RecoveryTarget::Latest => "",
        RecoveryTarget::Time(_) => "recovery_target_time",
        RecoveryTarget::Lsn(_) => "recovery_target_lsn",
        RecoveryTarget::Name(_) => "recovery_target_name",
    };
    for name in [
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
    ] {
        if name != ours {
            out.push_str(&format!("{name} = ''\n"));
        }
    }
    out.push_str("recovery_target_inclusive = on\n");
    match &recovery.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(t) => {
            out.push_str(&format!("recovery_target_time = '{}'\n", conf_time(t)));
        }
        RecoveryTarget::Lsn(l) => {
            let lsn = Lsn::parse(l).map_err(SourceError::Refused)?;
            out.push_str(&format!("recovery_target_lsn = '{lsn}'\n"));
        }
        RecoveryTarget::Name(n) => {
            if n.is_empty() || n.len() > 63 || n.chars().any(char::is_control) {
                return Err(SourceError::Refused(format!(
                    "invalid restore point name \"{}\": PostgreSQL's are 1 to 63 bytes without control characters",
                    n.escape_debug()
                )));
            }
            out.push_str(&format!("recovery_target_name = {}\n", conf_quote(n)));
        }
    }
    if recovery.target != RecoveryTarget::Latest {
        // The default, 'pause', would leave a server that answers read-only queries and
        // waits for pg_wal_replay_resume(); a restore is meant to end in a usable database.
        out.push_str("recovery_target_action = 'promote'\n");
    }
    // Follow the newest timeline the archive has (a restore after a promotion).
    out.push_str("recovery_target_timeline = 'latest'\n");
    Ok(out)
}

/// A time as `recovery_target_time` reads it, with an explicit UTC offset.
fn conf_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%d %H:%M:%S+00").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
    }
}

/// `restore_command = '…'`'s value: the argv as one `sh -c` command line, each element
/// quoted for the shell except the exact elements `%f` and `%p`, which the server
/// replaces (with names that need no quoting), then quoted for postgresql.conf.
pub fn restore_command_setting(argv: &[String]) -> Result<String, String> {
    for needed in ["%f", "%p"] {
        if !argv.iter().any(|a| a == needed) {
            return Err(format!(
                "the restore_command {argv:?} has no element \"{needed}\"; it cannot fetch WAL"
            ));
        }
    }
    let mut words = Vec::with_capacity(argv.len());
    for a in argv {
        if a == "%f" || a == "%p" {
            words.push(a.clone());
            continue;
        }
        if a.chars().any(char::is_control) {
            return Err(format!(
                "the restore_command element \"{}\" holds a control character, which postgresql.conf cannot carry",
                a.escape_debug()
            ));
        }
        // The server replaces %f, %p, %r and %% anywhere in the command: a literal '%'
        // (in a path) must reach the shell as itself.
        words.push(shell_quote(a).replace('%', "%%"));
    }
    Ok(conf_quote(&words.join(" ")))
}

/// One word for `sh`: bare when it holds only characters the shell leaves alone, else in
/// single quotes (a single quote inside as '\'').
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./,:=@+%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A postgresql.conf string: single quotes doubled, and backslashes doubled (the file's
/// parser reads escapes such as \n inside quotes).
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn restore_commands_are_quoted_twice() {
        for (args, setting) in [
            (
                &["/usr/bin/stowage", "wal-fetch", "pitr", "%f", "%p"][..],
                "'/usr/bin/stowage wal-fetch pitr %f %p'",
            ),
            (
                &["/opt/my stowage/stowage", "--config", "/etc/it's.toml", "wal-fetch", "%f", "%p"],
                "'''/opt/my stowage/stowage'' --config ''/etc/it''\\\\''''s.toml'' wal-fetch %f %p'",
            ),
            (
                &["stowage", "--config", "/etc/100%.toml", "j$(x)", "%f", "%p"],
                "'stowage --config /etc/100%%.toml ''j$(x)'' %f %p'",
            ),
            (
                &["stowage", "a\\b", "--x=%f", "%f", "%p"],
                "'stowage ''a\\\\b'' --x=%%f %f %p'",
            ),
        ] {
            assert_eq!(restore_command_setting(&argv(args)).unwrap(), setting, "{args:?}");
        }
        let e = restore_command_setting(&argv(&["stowage", "%f"])).unwrap_err();
        assert!(e.contains("has no element \"%p\""), "{e}");
        let e = restore_command_setting(&argv(&["stowage\nrm", "%f", "%p"])).unwrap_err();
        assert!(e.contains("control character"), "{e}");
    }

    /// What the shell gets after PostgreSQL's own unquoting and %-replacement runs the
    /// argv given, byte for byte.
    #[test]
    fn the_shell_gets_the_argv_back() {
        let args = argv(&["printf", "%s|", "it's", "a b", "$HOME", "100%", "\\n", "%f", "%p"]);
        let setting = restore_command_setting(&args).unwrap();
        // postgresql.conf's unquoting, then the server's % replacement.
        let inner = &setting[1..setting.len() - 1];
        let unquoted = inner.replace("''", "'").replace("\\\\", "\\");
        let command = unquoted
            .replace("%f", "F")
            .replace("%p", "P")
            .replace("%%", "%");
        let out = std::process::Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's|a b|$HOME|100%|\\n|F|P|"
        );
    }

    #[test]
    fn recovery_targets() {
        let cmd = argv(&["stowage", "wal-fetch", "pitr", "%f", "%p"]);
        let time = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:14:03+01:00")
            .unwrap()
            .with_timezone(&chrono::Utc);
        for (target, expected) in [
            (RecoveryTarget::Latest, vec![]),
            (
                RecoveryTarget::Time(time),
                vec!["recovery_target_time = '2026-12-05 07:14:03+00'", "recovery_target_action = 'promote'"],
            ),
            (
                RecoveryTarget::Time(time + chrono::Duration::microseconds(1500)),
                vec!["recovery_target_time = '2026-12-05 07:14:03.001500+00'", "recovery_target_action = 'promote'"],
            ),
            (
                RecoveryTarget::Lsn("0/3000060".into()),
                vec!["recovery_target_lsn = '0/3000060'", "recovery_target_action = 'promote'"],
            ),
            (
                RecoveryTarget::Name("before 'migration'".into()),
                vec!["recovery_target_name = 'before ''migration'''", "recovery_target_action = 'promote'"],
            ),
        ] {
            let text = recovery_settings(&Recovery {
                target: target.clone(),
                restore_command: cmd.clone(),
            })
            .unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert!(lines[0].starts_with("# Written by stowage"), "{text}");
            assert_eq!(lines[1], "restore_command = 'stowage wal-fetch pitr %f %p'");
            let inclusive = lines
                .iter()
                .position(|l| *l == "recovery_target_inclusive = on")
                .expect("inclusive set");
            assert_eq!(&lines[inclusive + 1..lines.len() - 1], &expected[..], "{target:?}");
            // Every other target is emptied, so none inherited from the backup adds to ours.
            let set = expected.first().and_then(|l| l.split(' ').next());
            for name in [
                "recovery_target",
                "recovery_target_lsn",
                "recovery_target_name",
                "recovery_target_time",
                "recovery_target_xid",
            ] {
                let reset = format!("{name} = ''");
                assert_eq!(
                    lines[2..inclusive].contains(&reset.as_str()),
                    Some(name) != set,
                    "{target:?}: {name}"
                );
            }
            assert_eq!(lines[lines.len() - 1], "recovery_target_timeline = 'latest'");
        }
        for target in [
            RecoveryTarget::Lsn("3000060".into()),
            RecoveryTarget::Name(String::new()),
            RecoveryTarget::Name("x".repeat(64)),
            RecoveryTarget::Name("a\nb".into()),
        ] {
            let e = recovery_settings(&Recovery {
                target: target.clone(),
                restore_command: cmd.clone(),
            })
            .expect_err("refused");
            assert!(e.is_refusal(), "{target:?}: {e}");
        }
    }

    #[test]
    fn targets_are_absolute_paths() {
        assert!(check_target("/var/lib/postgresql/data").is_ok());
        for bad in ["", "data", "./data", "postgres://u@h/db"] {
            let e = check_target(bad).unwrap_err();
            assert!(e.contains("is not an absolute path"), "{bad}: {e}");
        }
    }

    struct Bytes(Vec<u8>);

    #[async_trait::async_trait]
    impl Archive for Bytes {
        async fn open(
            &self,
        ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, SourceError> {
            Ok(Box::new(std::io::Cursor::new(self.0.clone())))
        }
    }

    fn opts(dir: &Path, recovery: Option<RecoveryTarget>) -> RestoreOptions {
        RestoreOptions {
            target: dir.to_str().unwrap().to_string(),
            recovery: recovery.map(|target| Recovery {
                target,
                restore_command: argv(&["stowage", "wal-fetch", "pitr", "%f", "%p"]),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_restore_writes_the_recovery_settings() {
        use super::super::tarball::tests::{base_tar, file};
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        // A backup of a standby that was itself restored once.
        let tar = Bytes(base_tar(|b| file(b, "standby.signal", b"")));
        let lines = restore(&tar, &opts(&dir, Some(RecoveryTarget::Latest)))
            .await
            .expect("restored");
        let all = lines.join("\n");
        assert!(all.contains(&format!("created {}", dir.display())), "{all}");
        assert!(all.contains("replays it to the end of the archived WAL"), "{all}");
        assert!(dir.join("recovery.signal").is_file());
        assert!(!dir.join("standby.signal").exists());
        assert!(dir.join("pg_wal/archive_status").is_dir());
        let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(
            conf.starts_with("# Do not edit this file manually!\n\n# Written by stowage"),
            "{conf}"
        );
        assert!(conf.contains("\nrestore_command = 'stowage wal-fetch pitr %f %p'\n"));
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[tokio::test]
    async fn a_non_empty_directory_is_kept_unless_clean() {
        use super::super::tarball::tests::base_tar;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("old"), b"old").unwrap();
        let tar = Bytes(base_tar(|_| {}));
        let e = restore(&tar, &opts(&dir, None)).await.expect_err("not empty");
        assert!(e.is_refusal());
        assert_eq!(
            e.to_string(),
            format!(
                "data directory {} is not empty (it holds \"old\"); restore into an empty directory, or add --clean to delete its contents first",
                dir.display()
            )
        );
        let mut dry = opts(&dir, Some(RecoveryTarget::Lsn("0/3000060".into())));
        dry.clean = true;
        dry.dry_run = true;
        let lines = restore(&tar, &dry).await.expect("dry run");
        assert!(lines.iter().any(|l| l.contains("recovery_target_lsn = '0/3000060'")), "{lines:?}");
        assert_eq!(list(&dir).unwrap(), vec!["old"]);

        std::fs::write(dir.join("postmaster.pid"), b"1").unwrap();
        let mut clean = opts(&dir, None);
        clean.clean = true;
        let e = restore(&tar, &clean).await.expect_err("running");
        assert!(e.to_string().contains("holds postmaster.pid"), "{e}");
        std::fs::remove_file(dir.join("postmaster.pid")).unwrap();
        let lines = restore(&tar, &clean).await.expect("clean");
        assert!(lines.iter().any(|l| l.contains("deleted the 1 entries")), "{lines:?}");
        assert!(!dir.join("old").exists());
    }

    /// A refused entry midway: what was written before it is taken out again.
    #[tokio::test]
    async fn a_failed_restore_leaves_the_directory_as_it_was() {
        use super::super::tarball::tests::{base_tar, raw_entry};
        let parent = tempfile::tempdir().unwrap();
        let tar = Bytes(base_tar(|b| raw_entry(b, "../x", tar::EntryType::Regular, None)));
        let dir = parent.path().join("new");
        let e = restore(&tar, &opts(&dir, None)).await.expect_err("refused");
        assert!(e.is_refusal(), "{e}");
        assert!(!dir.exists());
        let dir = parent.path().join("kept");
        std::fs::create_dir(&dir).unwrap();
        restore(&tar, &opts(&dir, None)).await.expect_err("refused");
        assert!(dir.is_dir());
        assert_eq!(list(&dir).unwrap(), Vec::<String>::new());
        assert!(!parent.path().join("x").exists());
    }

    /// A stream that fails its check at the end (as a damaged stored object does):
    /// nothing changes, not even what --clean would have deleted.
    #[tokio::test]
    async fn a_damaged_backup_changes_nothing() {
        use super::super::tarball::tests::base_tar;
        struct Damaged(Vec<u8>);
        #[async_trait::async_trait]
        impl Archive for Damaged {
            async fn open(
                &self,
            ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, SourceError> {
                let chunks: Vec<std::io::Result<bytes::Bytes>> = vec![
                    Ok(bytes::Bytes::from(self.0.clone())),
                    Err(std::io::Error::other("sha256 mismatch")),
                ];
                Ok(Box::new(tokio_util::io::StreamReader::new(
                    futures::stream::iter(chunks),
                )))
            }
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("old"), b"old").unwrap();
        let mut clean = opts(&dir, Some(RecoveryTarget::Latest));
        clean.clean = true;
        let e = restore(&Damaged(base_tar(|_| {})), &clean)
            .await
            .expect_err("damaged");
        assert!(e.to_string().contains("sha256 mismatch"), "{e}");
        assert_eq!(list(&dir).unwrap(), vec!["old"]);
    }
}
