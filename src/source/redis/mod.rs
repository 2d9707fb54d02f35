//! Redis through `redis-cli --rdb -`: the server's own RDB snapshot, taken the way a replica
//! receives it (the replication SYNC stream), streamed out of redis-cli's stdout. The
//! archive is a plain RDB file, so `zstd -d < cache.rdb.zst > dump.rdb` restores it without
//! stowage.
//!
//! Restore writes that file for a *stopped* Redis to load when it starts: Redis has no way
//! to load a snapshot into a running server, so the target is a path, never a URL.

mod rdb;
mod scratch;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::url::{DbUrl, UrlSpec};
use super::{
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, SourceError, describe_status,
    drain_stderr, spawn_error, tool_command,
};
use crate::section::{Priority, Section};
use crate::secret::Secret;
use crate::engine::ArchiveCheck;
use crate::units::human_bytes;

const URL: UrlSpec = UrlSpec {
    engine: "redis",
    schemes: &["redis"],
    example: "redis://redis:6379",
    database_required: false,
};
const DEFAULT_PORT: u16 = 6379;
/// redis-cli 7.0 has no connect timeout: a host that drops packets would hold a run for
/// the kernel's two minutes of SYN retries, so the port is tried first with this limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const TOOL: &str = "redis-cli";
const INSTALL_HINT: &str =
    "install redis-cli (Debian/Ubuntu: package redis-tools; Alpine: package redis)";
/// Why a URL is no restore target; also the procedure the README describes.
const LOADS_AT_START: &str = "Redis loads an RDB file only when it starts, so a backup cannot be \
    restored into a running server: stop Redis, restore the file into its data directory with \
    --to SOURCE=/data/dump.rdb --clean (the server's `dir` and `dbfilename`), then start Redis \
    again (a server with appendonly yes loads its AOF instead: see the README)";

/// `type = "redis"`.
pub struct Redis;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    password_file: Option<PathBuf>,
}

impl Engine for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::section::serde_fields::<RawRedis>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawRedis = section.parse()?;
        let password = raw
            .password_file
            .as_deref()
            .and_then(|f| section.secret("password_file", f));
        let url = match raw.url.as_deref().map(|u| parse_url(u, password)) {
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                section.problem("url", format!("invalid redis URL: {e}"));
                return None;
            }
            None => {
                section.problem(
                    "url",
                    "required for type = \"redis\"; e.g. url = \"redis://redis:6379\"",
                );
                return None;
            }
        };
        if let Some(user) = url.user()
            && url.password().is_none()
        {
            section.problem(
                "password_file",
                format!(
                    "required with a user in the URL (\"{user}\"): redis-cli logs in as an ACL user only with a password; mount it and set password_file = \"/run/secrets/redis_password\""
                ),
            );
            return None;
        }
        Some(Arc::new(RedisSource {
            name: section.name.clone(),
            url: Some(url),
            priority: section.priority,
        }))
    }

    fn unconfigured(&self, name: &str) -> Arc<dyn Database> {
        Arc::new(RedisSource {
            name: name.to_string(),
            url: None,
            priority: Priority::default(),
        })
    }
}

/// A `redis://[user[:password]@]host[:port]` URL with nothing after the port: the snapshot
/// always holds every logical database, so a `/N` would promise a selection it cannot make.
fn parse_url(text: &str, password: Option<Secret>) -> Result<DbUrl, String> {
    if text.starts_with("rediss://") {
        return Err(format!(
            "\"{}\": TLS (rediss://) is not supported; reach the server over redis:// on a private network, e.g. url = \"{}\"",
            text.split('@').next_back().unwrap_or(""),
            URL.example
        ));
    }
    let url = DbUrl::parse(text, &URL, password)?;
    let plain = format!(
        "redis://{}:{}",
        url.host(),
        url.port().unwrap_or(DEFAULT_PORT)
    );
    let db = url.database();
    if !db.is_empty() {
        return Err(format!(
            "\"/{db}\" selects one logical database, but an RDB snapshot always holds all of them (and restores all of them); remove it: url = \"{plain}\""
        ));
    }
    if let Ok(u) = url::Url::parse(text)
        && u.query().is_some()
    {
        // Names only: a value may be a password.
        let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        return Err(format!(
            "parameters ({}) are not supported; give the password with password_file: url = \"{plain}\"",
            names.join(", ")
        ));
    }
    Ok(url)
}

/// The host as redis-cli takes it (an IPv6 address without its brackets).
fn host(url: &DbUrl) -> &str {
    url.host().trim_start_matches('[').trim_end_matches(']')
}

fn port(url: &DbUrl) -> u16 {
    url.port().unwrap_or(DEFAULT_PORT)
}

/// A `--to` value as the file to write, or why it is none.
fn target_path(target: &str) -> Result<PathBuf, String> {
    if target.is_empty() {
        return Err("give the path of the RDB file to write, e.g. /data/dump.rdb".to_string());
    }
    if let Some((scheme, _)) = target.split_once("://") {
        return Err(if scheme.starts_with("redis") {
            LOADS_AT_START.to_string()
        } else {
            "expected the path of the RDB file to write (e.g. /data/dump.rdb), not a URL"
                .to_string()
        });
    }
    if target.ends_with('/') {
        return Err(format!(
            "names a directory; give the file, e.g. {target}dump.rdb"
        ));
    }
    Ok(PathBuf::from(target))
}

/// The logical databases holding keys ("db0", "db3") and the server version, from the
/// output of `INFO server keyspace`.
fn parse_info(text: &str) -> DumpInfo {
    let mut info = DumpInfo {
        server_version: None,
        objects: Some(Vec::new()),
        rows: None,
        wal: None,
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("redis_version:") {
            info.server_version = Some(v.to_string());
        } else if let Some((db, stats)) = line.split_once(':')
            && db
                .strip_prefix("db")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && stats
                .split(',')
                .any(|kv| kv.strip_prefix("keys=").is_some_and(|k| k != "0"))
            && let Some(objects) = info.objects.as_mut()
        {
            objects.push(db.to_string());
        }
    }
    info
}

/// redis-cli's stderr without its progress lines ("sending REPLCONF …"), which say
/// nothing about why it failed.
fn failure_text(stderr: &str) -> String {
    let kept: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("sending REPLCONF"))
        .collect();
    if kept.is_empty() {
        "no error output".to_string()
    } else {
        kept.join("\n")
    }
}

/// A configured Redis source. `url` is `None` for a source made only to restore.
#[derive(Debug)]
pub struct RedisSource {
    name: String,
    url: Option<DbUrl>,
    priority: Priority,
}

impl RedisSource {
    fn own_url(&self) -> Result<&DbUrl, SourceError> {
        self.url.as_ref().ok_or_else(|| {
            SourceError::Refused(format!(
                "source \"{}\" is not in the config; give the server's redis:// URL",
                self.name
            ))
        })
    }

    /// redis-cli for one server. The password goes through REDISCLI_AUTH (never argv,
    /// which `ps` shows); an inherited REDISCLI_AUTH is removed so that only the config
    /// decides how stowage logs in.
    fn cli(&self, url: &DbUrl) -> Command {
        let mut cmd = tool_command(TOOL, self.priority);
        cmd.arg("-h")
            .arg(host(url))
            .arg("-p")
            .arg(port(url).to_string());
        if let Some(user) = url.user() {
            cmd.arg("--user").arg(user);
        }
        cmd.arg("--no-auth-warning").env_remove("REDISCLI_AUTH");
        if let Some(pw) = url.password() {
            cmd.env("REDISCLI_AUTH", pw.expose());
        }
        cmd
    }

    async fn reachable(url: &DbUrl) -> Result<(), SourceError> {
        let addr = (host(url), port(url));
        let context = || format!("cannot connect to redis at {}:{}", url.host(), port(url));
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SourceError::io(context(), e)),
            Err(_) => Err(SourceError::io(
                context(),
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ),
            )),
        }
    }

    /// `INFO <sections>` through redis-cli; its error when the server refuses.
    async fn info(&self, url: &DbUrl, sections: &[&str]) -> Result<String, SourceError> {
        Self::reachable(url).await?;
        let out = self
            .cli(url)
            .arg("-e")
            .arg("INFO")
            .args(sections)
            .output()
            .await
            .map_err(|e| spawn_error(TOOL, e, INSTALL_HINT))?;
        if !out.status.success() {
            // With -e, the server's error reply is printed on stdout.
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
            return Err(SourceError::Failed {
                tool: format!("{TOOL} INFO"),
                status: describe_status(out.status),
                stderr: failure_text(text.trim()),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn keyspace(&self, url: &DbUrl) -> Result<Vec<String>, SourceError> {
        let text = self.info(url, &["keyspace"]).await?;
        Ok(parse_info(&text).objects.unwrap_or_default())
    }
}

#[async_trait]
impl Database for RedisSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn extension(&self) -> &'static str {
        "rdb"
    }

    fn format(&self) -> &'static str {
        "Redis RDB"
    }

    fn describe(&self) -> String {
        match &self.url {
            Some(u) => format!("redis {u}"),
            None => "redis".to_string(),
        }
    }

    fn target_example(&self) -> &'static str {
        "/PATH/TO/dump.rdb (the stopped server's dir and dbfilename)"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        target_path(target).map(|_| ())
    }

    /// The RDB file is written beside the target and renamed over it only after the archive
    /// was read to its end (`read` returned 0), which the archive's reader never reports for
    /// an object whose size or sha256 differ (`codec::Verify`): the rename never happens for
    /// a damaged object, and the temporary file is removed when dropped.
    fn verifies_before_commit(&self) -> bool {
        true
    }

    /// Stowage does not parse RDB files, so it cannot say from the archive which logical
    /// databases it holds; the manifest records them as they were when the backup ran.
    async fn archive_objects(&self, _archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        Err(SourceError::Refused(
            "stowage cannot list what an RDB snapshot holds without loading it; the manifest's objects are the logical databases that held keys when the backup ran".to_string(),
        ))
    }

    /// An RDB is checked the way Redis checks it before loading: header, end-of-file
    /// opcode and CRC-64. Its logical databases are not listed (that means parsing every
    /// encoding), so a whole file is [`ArchiveCheck::Whole`], not an error.
    async fn check_archive(&self, archive: &dyn Archive) -> Result<ArchiveCheck, SourceError> {
        let data = archive.open().await?;
        match rdb::check_stream(data).await {
            Ok(Ok(what)) => Ok(ArchiveCheck::Whole(what)),
            Ok(Err(why)) => Err(SourceError::Protocol(format!(
                "the RDB snapshot of {} {why}",
                self.name
            ))),
            Err(e) => Err(SourceError::io("reading the backup", e)),
        }
    }

    async fn live_objects(&self, target: Option<&str>) -> Result<Vec<String>, SourceError> {
        match target {
            Some(t) if t.starts_with("redis://") => {
                let url = parse_url(t, None).map_err(SourceError::Refused)?;
                self.keyspace(&url).await
            }
            Some(t) => Err(SourceError::Refused(format!(
                "\"{t}\" is an RDB file, which stowage does not read; give the redis:// URL of a server that loaded it"
            ))),
            None => self.keyspace(self.own_url()?).await,
        }
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        let out = tool_command(TOOL, Priority::default())
            .arg("--version")
            .output()
            .await
            .map_err(|e| spawn_error(TOOL, e, INSTALL_HINT))?;
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: format!("{TOOL} --version"),
                status: describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok((
            TOOL.to_string(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        let url = self.own_url()?;
        // Before the snapshot, so the databases listed are the ones it starts from. A user
        // whose ACL allows SYNC but not INFO still gets backups, without the list.
        let info = match self.info(url, &["server", "keyspace"]).await {
            Ok(text) => parse_info(&text),
            Err(SourceError::Failed { stderr, .. }) if stderr.contains("NOPERM") => {
                tracing::warn!(
                    source = %self.name,
                    "INFO is not allowed for this user ({stderr}); the manifest will not record the server version and databases"
                );
                DumpInfo::default()
            }
            Err(e) => return Err(e),
        };
        let mut cmd = self.cli(url);
        cmd.args(["--rdb", "-"]);
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(TOOL, e, INSTALL_HINT))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(format!(
                "{TOOL} started without pipes"
            )));
        };
        let stderr = drain_stderr(stderr);
        let (reader, verdict) = rdb::RdbStream::new(stdout);
        let name = self.name.clone();
        Ok(Dump {
            reader: Box::new(reader),
            finish: async move {
                let status = child
                    .wait()
                    .await
                    .map_err(|e| SourceError::io(format!("waiting for {TOOL}"), e))?;
                let text = stderr.await.unwrap_or_default();
                if !status.success() {
                    return Err(SourceError::Failed {
                        tool: format!("{TOOL} --rdb"),
                        status: describe_status(status),
                        stderr: failure_text(&text),
                    });
                }
                // Its progress lines ("Transfer finished with success …") are not news.
                tracing::debug!(source = %name, "{TOOL}: {text}");
                let judged = verdict.lock().ok().and_then(|mut v| v.take());
                match judged {
                    Some(Ok(_)) => Ok(info),
                    Some(Err(why)) => Err(SourceError::Protocol(format!(
                        "{TOOL} --rdb exited successfully, but what it wrote {why}"
                    ))),
                    None => Err(SourceError::Protocol(format!(
                        "{TOOL} --rdb exited before its output was read to the end"
                    ))),
                }
            }
            .boxed(),
        })
    }

    /// Key counts per database, for the drill (`scratch::dump_counting_keys`).
    async fn dump_counting_rows(&self) -> Result<Dump, SourceError> {
        scratch::dump_counting_keys(self).await
    }

    fn scratch(&self) -> Option<&dyn crate::engine::Scratch> {
        Some(self)
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let path = target_path(&opts.target).map_err(SourceError::Refused)?;
        let shown = path.display().to_string();
        let (dir, existing) = inspect_target(&path, &shown).await?;
        let replacing = existing.as_ref().filter(|m| m.len() > 0);
        if let Some(m) = replacing
            && !opts.clean
        {
            return Err(SourceError::Refused(format!(
                "{shown} already exists ({}); pass --clean to replace it. Stop Redis first: a running server overwrites the file when it next saves",
                human_bytes(m.len())
            )));
        }
        let mut lines = Vec::new();
        if dir.join("appendonlydir").exists() || dir.join("appendonly.aof").exists() {
            lines.push(format!(
                "{}: warning: {} holds an append-only file; a Redis with appendonly yes loads that instead of {shown} (README: Redis with appendonly)",
                self.name,
                dir.display()
            ));
        }
        if opts.dry_run {
            lines.push(format!(
                "would write the RDB snapshot of {} to {shown}{}",
                self.name,
                match replacing {
                    Some(m) => format!(
                        " (--clean: replacing the file there, {})",
                        human_bytes(m.len())
                    ),
                    None => String::new(),
                }
            ));
            return Ok(lines);
        }

        let mut data = archive.open().await?;
        // The header first: an archive that is not an RDB must not even create a file.
        let (head, version) = self.read_header(&mut data).await?;

        // Written beside the target and renamed over it only once complete and on disk: a
        // failure at any point leaves the old file as it was and no partial one (the temp
        // file is removed when dropped).
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dump.rdb".to_string());
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}.stowage-"))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(|e| {
                SourceError::io(format!("cannot create a file in {}", dir.display()), e)
            })?;
        let written = self
            .write_checked(&mut data, &head, version, &temp)
            .await?;
        match_owner(&temp, existing.as_ref(), &dir, &shown).await?;
        let target = path.clone();
        let dir_for_sync = dir.clone();
        // The rename runs on even if the restore is stopped while it waits for it.
        crate::engine::commit_point();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            temp.persist(&target).map_err(|e| e.error)?;
            // The rename is durable only once the directory is.
            std::fs::File::open(&dir_for_sync)?.sync_all()
        })
        .await
        .map_err(|e| SourceError::internal("the rename task failed", e))?
        .map_err(|e| SourceError::io(format!("cannot move the restored file to {shown}"), e))?;

        lines.push(format!(
            "{}: wrote {} (RDB version {version}) to {shown}; Redis loads it when it starts with this file as its dir/dbfilename",
            self.name,
            human_bytes(written)
        ));
        Ok(lines)
    }
}

/// The directory of RDB file `path` (which must exist), and the file's metadata if it
/// exists (refused when it is a directory).
async fn inspect_target(
    path: &std::path::Path,
    shown: &str,
) -> Result<(PathBuf, Option<std::fs::Metadata>), SourceError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(SourceError::Refused(format!(
            "directory {} does not exist; give the path of the RDB file in the server's data directory, e.g. /data/dump.rdb",
            dir.display()
        )));
    }
    let existing = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_dir() => {
            return Err(SourceError::Refused(format!(
                "{shown} is a directory; give the RDB file's path, e.g. {}",
                path.join("dump.rdb").display()
            )));
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(SourceError::io(format!("cannot inspect {shown}"), e)),
    };
    Ok((dir, existing))
}

/// Gives the restored file the owner (and, replacing one, the mode) of the file it
/// replaces, or a new one the directory's owner.
async fn match_owner(
    temp: &tempfile::NamedTempFile,
    existing: Option<&std::fs::Metadata>,
    dir: &std::path::Path,
    shown: &str,
) -> Result<(), SourceError> {
    // Redis must be able to read the file: keep the owner and mode of the file it
    // replaces, or give a new one the directory's owner (mode stays 0600).
    let like = match existing {
        Some(m) => Some(m.clone()),
        None => tokio::fs::metadata(&dir).await.ok(),
    };
    if let Some(m) = like {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Err(e) = std::os::unix::fs::fchown(temp.as_file(), Some(m.uid()), Some(m.gid())) {
            tracing::debug!("cannot give {shown} the owner {}:{}: {e}", m.uid(), m.gid());
        }
        if existing.is_some() {
            let mode = std::fs::Permissions::from_mode(m.permissions().mode() & 0o7777);
            temp.as_file()
                .set_permissions(mode)
                .map_err(|e| SourceError::io(format!("cannot set the mode of {shown}"), e))?;
        }
    }
    Ok(())
}

impl RedisSource {
    /// The archive's first bytes, checked to be an RDB header; and its RDB version.
    async fn read_header(
        &self,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    ) -> Result<(Vec<u8>, u32), SourceError> {
        let mut head = Vec::with_capacity(rdb::HEADER_LEN);
        while head.len() < rdb::HEADER_LEN {
            let mut b = [0u8; rdb::HEADER_LEN];
            let n = data
                .read(&mut b[..rdb::HEADER_LEN - head.len()])
                .await
                .map_err(|e| SourceError::io("reading the backup", e))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&b[..n]);
        }
        let version = rdb::check_header(&head).map_err(|why| {
            SourceError::Protocol(format!(
                "the backup of {} {why}; it is not an RDB snapshot",
                self.name
            ))
        })?;
        Ok((head, version))
    }

    /// Writes the archive (its header `head` already read) to `temp`, checking it as an RDB
    /// file of `version`, and syncs it; returns the bytes written.
    async fn write_checked(
        &self,
        data: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        head: &[u8],
        version: u32,
        temp: &tempfile::NamedTempFile,
    ) -> Result<u64, SourceError> {
        let handle = temp
            .as_file()
            .try_clone()
            .map_err(|e| SourceError::io("cannot open the temporary file", e))?;
        let mut out = tokio::fs::File::from_std(handle);
        let write_err = |e| SourceError::io(format!("cannot write {}", temp.path().display()), e);
        out.write_all(head).await.map_err(write_err)?;
        let mut written = head.len() as u64;
        let mut check = rdb::RdbCheck::new(version);
        check.update(head);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = data
                .read(&mut buf)
                .await
                .map_err(|e| SourceError::io("reading the backup", e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).await.map_err(write_err)?;
            check.update(&buf[..n]);
            written += n as u64;
        }
        check
            .finish()
            .map_err(|why| SourceError::Protocol(format!("the backup of {} {why}", self.name)))?;
        out.flush().await.map_err(write_err)?;
        out.sync_all().await.map_err(write_err)?;
        drop(out);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("redis://backup:s3cret@cache:6380", None).expect("valid");
        assert_eq!((host(&u), port(&u)), ("cache", 6380));
        assert_eq!(u.user().as_deref(), Some("backup"));
        assert_eq!(u.password().map(Secret::expose), Some("s3cret"));
        assert!(!u.to_string().contains("s3cret"));
        let u = parse_url("redis://[::1]", None).expect("valid");
        assert_eq!((host(&u), port(&u)), ("::1", 6379));
        let e = parse_url("redis://cache:6379/3", None).expect_err("db path");
        assert!(
            e.contains("\"/3\"") && e.contains("url = \"redis://cache:6379\""),
            "{e}"
        );
        let e = parse_url("rediss://u:pw@cache:6379", None).expect_err("tls");
        assert!(e.contains("rediss://") && !e.contains("pw"), "{e}");
        let e = parse_url("redis://cache?password=hunter2", None).expect_err("query");
        assert!(
            e.contains("parameters (password)") && !e.contains("hunter2"),
            "{e}"
        );
        let e = parse_url("postgres://cache", None).expect_err("scheme");
        assert!(e.contains("is not redis"), "{e}");
    }

    #[test]
    fn targets() {
        assert_eq!(
            target_path("/data/dump.rdb"),
            Ok(PathBuf::from("/data/dump.rdb"))
        );
        let e = target_path("redis://cache:6379").expect_err("url");
        assert!(
            e.contains("only when it starts") && e.contains("--clean"),
            "{e}"
        );
        assert!(target_path("s3://b/x").is_err());
        assert!(
            target_path("/data/")
                .expect_err("dir")
                .contains("/data/dump.rdb")
        );
        assert!(target_path("").is_err());
    }

    #[test]
    fn info() {
        let text = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\ndb5:keys=0,expires=0,avg_ttl=0\r\n";
        let i = parse_info(text);
        assert_eq!(i.server_version.as_deref(), Some("7.0.15"));
        assert_eq!(i.objects, Some(vec!["db0".to_string(), "db3".to_string()]));
        assert_eq!(parse_info("# Keyspace\r\n").objects, Some(Vec::new()));
    }

    #[test]
    fn failure_text_drops_progress() {
        assert_eq!(
            failure_text(
                "sending REPLCONF capa eof\nAUTH failed: WRONGPASS x\nSYNC with master failed: -NOAUTH"
            ),
            "AUTH failed: WRONGPASS x\nSYNC with master failed: -NOAUTH"
        );
        assert_eq!(failure_text(""), "no error output");
    }
}
