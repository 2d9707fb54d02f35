//! MongoDB through its database tools: `mongodump --archive` streamed out and
//! `mongorestore --archive` fed from a stream. The object is a standard archive, so
//! `zstd -dc db.archive.zst | mongorestore --archive --uri=…` restores it without stowage.
//!
//! ```toml
//! [[jobs.app.sources]]
//! type = "mongodb"
//! name = "db"
//! url = "mongodb://backup@db:27017/shop"   # no database: every database of the server
//! password_file = "/run/secrets/mongo_password"
//! ```
//!
//! The password never reaches a command line: the tools get `--uri` without it and read it
//! from a private (0600) YAML file given with `--config` (mongodump/mongorestore 100.3 or
//! newer), removed when the tool exits. What a dump holds (its collections, the server's
//! version) is read from the archive's own header as it streams by.
//!
//! Restore: `--to mongodb://USER@HOST:PORT/DB`. A database that differs from the backup's is
//! a rename (`--nsFrom/--nsTo`); no database restores every database of the backup under its
//! own name. `--table` names collections ("orders" or "shop.orders"). Without `--clean`, the
//! target must not have the collections yet: with `mongosh` on PATH this is checked before
//! anything is written; without it mongorestore runs with `--stopOnError`, so a document
//! already there fails the restore at its first duplicate key (after the documents before it
//! were inserted) instead of being merged silently. `--clean` is mongorestore's `--drop`.
//! The target's password is the one in the `--to` URL, or the source's `password_file` when
//! the target is the source's own server and user. Unlike pg_restore, mongorestore has no
//! single transaction and inserts as it reads, so this engine keeps
//! `verifies_before_commit() == false`: `restore` reads the whole object through its sha256
//! check before mongorestore starts (a damaged object never reaches the target). A failure
//! of mongorestore itself part-way leaves the collections restored so far; restore again
//! with --clean.

mod archive;
mod select;
mod url;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio_util::io::InspectReader;

use self::archive::{Prelude, read_prelude};
use self::url::MongoUrl;
use super::{
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, SourceError, SpawnReason, describe_status,
    drain_stderr, feed, spawn_error, tool_command,
};
use crate::section::{Priority, Section};
use crate::secret::Secret;

const INSTALL_HINT: &str =
    "install the MongoDB Database Tools (mongodump, mongorestore) 100.3 or newer";
const MONGOSH_HINT: &str = "install mongosh to list collections of a live database";
/// The archive's prelude (every collection's metadata and indexes) comes first; this much of
/// the stream is kept to read it. A bigger prelude only loses the object list in the manifest.
const PRELUDE_KEEP: usize = 4 * 1024 * 1024;
/// The first release of the database tools with `--config` (the password file).
const CONFIG_SINCE: (u32, u32) = (100, 3);

/// `type = "mongodb"`.
pub struct MongoDb;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMongo {
    url: Option<String>,
    password_file: Option<PathBuf>,
}

impl Engine for MongoDb {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::section::serde_fields::<RawMongo>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawMongo = section.parse()?;
        let mark = section.mark();
        let password = raw
            .password_file
            .as_deref()
            .and_then(|f| section.secret("password_file", f));
        let url = match raw.url.as_deref().map(|u| MongoUrl::parse(u, password)) {
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                section.problem("url", format!("invalid MongoDB URL: {e}"));
                None
            }
            None => {
                section.problem(
                    "url",
                    format!(
                        "required for type = \"mongodb\"; e.g. url = \"{}\" (leave out the database to dump them all)",
                        url::EXAMPLE
                    ),
                );
                None
            }
        };
        if let Some(u) = &url
            && u.needs_password()
            && u.password().is_none()
            && raw.password_file.is_none()
        {
            section.problem(
                "url",
                format!(
                    "names user \"{}\" but no password; add password_file = \"/run/secrets/mongo_password\" (a password in the URL would show in process listings)",
                    u.user().unwrap_or_default()
                ),
            );
        }
        if section.failed_since(mark) {
            return None;
        }
        Some(Arc::new(MongoSource {
            name: section.name.clone(),
            url: Some(url?),
            priority: section.priority,
        }))
    }

    fn unconfigured(&self, name: &str) -> Arc<dyn Database> {
        Arc::new(MongoSource {
            name: name.to_string(),
            url: None,
            priority: Priority::default(),
        })
    }
}

/// A configured MongoDB source. `url` is `None` for a source made only to restore.
#[derive(Debug)]
pub struct MongoSource {
    name: String,
    url: Option<MongoUrl>,
    priority: Priority,
}

/// The YAML `--config` file: `password` as a double-quoted scalar, every character that
/// YAML would read otherwise escaped.
fn config_yaml(password: &str) -> String {
    let mut s = String::from("password: \"");
    for c in password.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' => {
                s.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => s.push(c),
        }
    }
    s.push_str("\"\n");
    s
}

/// A private file holding the password, for `--config`; removed when dropped.
fn password_file(
    password: Option<&Secret>,
) -> Result<Option<tempfile::NamedTempFile>, SourceError> {
    let Some(pw) = password else {
        return Ok(None);
    };
    // tempfile creates the file with mode 0600.
    let mut f = tempfile::Builder::new()
        // The writer in the name: a later start removes the file of a killed run.
        .prefix(&format!(
            "stowage-mongo-{}-",
            crate::owner::Owner::current().token()
        ))
        .suffix(".yaml")
        .tempfile()
        .map_err(|e| SourceError::io("cannot create the password file for the MongoDB tools", e))?;
    std::io::Write::write_all(&mut f, config_yaml(pw.expose()).as_bytes())
        .and_then(|()| f.as_file().sync_all())
        .map_err(|e| SourceError::io("cannot write the password file for the MongoDB tools", e))?;
    Ok(Some(f))
}

/// The tools' arguments for a connection: `--uri` without the password, and `--config` with
/// the password file when there is one.
fn connection_args(uri: &str, config: Option<&std::path::Path>) -> Vec<String> {
    let mut args = vec![format!("--uri={uri}")];
    if let Some(p) = config {
        args.push(format!("--config={}", p.display()));
    }
    args
}

/// "mongodump version: 100.9.4" → (100, 9); legacy "r4.2.8" → (4, 2).
fn tools_version(version_output: &str) -> Option<(u32, u32)> {
    let line = version_output.lines().next()?;
    let v = line.rsplit(' ').next()?.trim_start_matches('r');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.trim().parse().ok()?;
    Some((major, minor))
}

/// "N document(s) restored successfully. M document(s) failed to restore." from
/// mongorestore's output, when it says so.
fn restore_summary(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("restored successfully"))
        .map(|l| {
            // Lines start with a timestamp and a tab.
            l.rsplit('\t').next().unwrap_or(l).trim().to_string()
        })
}

/// Wait for a tool whose stderr is progress chatter: quoted only when it fails.
async fn wait_tool(
    tool: &str,
    child: Child,
    stderr: JoinHandle<String>,
) -> Result<String, SourceError> {
    let text = super::wait_child_stderr(tool, child, stderr).await?;
    tracing::debug!(tool, "{}", text);
    Ok(text)
}

const LIST_SCRIPT: &str = r#"
const pw = process.env.STOWAGE_MONGO_PASSWORD;
const uri = pw === undefined
  ? process.env.STOWAGE_MONGO_URI
  : process.env.STOWAGE_MONGO_URI_HEAD + ":" + encodeURIComponent(pw) + process.env.STOWAGE_MONGO_URI_TAIL;
const m = new Mongo(uri);
const only = process.env.STOWAGE_MONGO_DB;
const dbs = only ? [only] : m.getDBNames().filter(d => !["admin", "config", "local"].includes(d));
for (const d of dbs) {
  for (const c of m.getDB(d).getCollectionNames()) {
    if (!c.startsWith("system.")) print("ns\t" + d + "." + c);
  }
}
"#;

impl MongoSource {
    fn own_url(&self) -> Result<&MongoUrl, SourceError> {
        self.url.as_ref().ok_or_else(|| {
            SourceError::Refused(format!(
                "source \"{}\" is not in the config; give the database with --to",
                self.name
            ))
        })
    }

    /// The restore target, with the password to log in: the one in the URL, else the
    /// source's own when it is the same server and user.
    fn target(&self, text: &str) -> Result<MongoUrl, SourceError> {
        let t = MongoUrl::parse(text, None)
            .map_err(|e| SourceError::Refused(format!("invalid --to URL: {e}")))?;
        if t.password().is_some() {
            return Ok(t);
        }
        let own = self
            .url
            .as_ref()
            .filter(|o| o.same_login(&t))
            .and_then(|o| o.password().cloned());
        let t = t.with_password(own);
        if t.needs_password() && t.password().is_none() {
            return Err(SourceError::Refused(format!(
                "--to names user \"{}\" but no password, and it is not the server and user of source \"{}\"; put the password in the URL (mongodb://USER:PASSWORD@HOST/DB)",
                t.user().unwrap_or_default(),
                self.name
            )));
        }
        Ok(t)
    }

    /// Without --clean: refuses a target that already has collections the restore writes
    /// (any of the restored databases', or the named ones with `--table`).
    async fn refuse_existing(
        &self,
        target: &MongoUrl,
        sel: &select::Selection,
        names: &[&str],
        opts: &RestoreOptions,
    ) -> Result<(), SourceError> {
        match self.collections(target).await? {
            Some(existing) => {
                let clash: Vec<&String> = if opts.tables.is_empty() {
                    let dbs = sel.target_dbs();
                    existing
                        .iter()
                        .filter(|e| e.split_once('.').is_some_and(|(d, _)| dbs.contains(d)))
                        .collect()
                } else {
                    existing
                        .iter()
                        .filter(|e| names.contains(&e.as_str()))
                        .collect()
                };
                if !clash.is_empty() {
                    return Err(SourceError::Refused(format!(
                        "the target already has {} collection(s) ({}); restore into an empty database, or pass --clean to drop and replace the collections in the backup{}",
                        clash.len(),
                        clash
                            .iter()
                            .take(10)
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if opts.tables.is_empty() {
                            ", or --table NAME to restore single collections"
                        } else {
                            ""
                        }
                    )));
                }
            }
            None => tracing::warn!(
                "mongosh is not installed: cannot check that the target is empty; mongorestore stops at the first document that already exists"
            ),
        }
        Ok(())
    }

    /// Runs mongorestore with the selection's options, fed the archive; returns what it
    /// said on stderr.
    async fn run_mongorestore(
        &self,
        archive: &dyn Archive,
        target: &MongoUrl,
        sel: &select::Selection,
        opts: &RestoreOptions,
    ) -> Result<String, SourceError> {
        let config = password_file(target.password())?;
        if config.is_some() {
            self.version_of("mongorestore", true).await?;
        }
        let mut cmd = tool_command("mongorestore", self.priority);
        cmd.args(["--archive", "--stopOnError"])
            .args(connection_args(
                &target.server_uri(),
                config.as_ref().map(|f| f.path()),
            ))
            .args(&sel.args)
            .stdin(Stdio::piped());
        if opts.clean {
            cmd.arg("--drop");
        }
        let mut data = archive.open().await?;
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error("mongorestore", e, INSTALL_HINT))?;
        let (Some(stdin), Some(mut stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SourceError::Protocol(
                "mongorestore started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        // Nothing is expected on stdout; read it anyway so it can never fill and stall.
        let stdout = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink).await;
        });
        feed(data.as_mut(), stdin, &mut child).await?;
        let said = wait_tool("mongorestore", child, stderr).await;
        drop(config);
        let _ = stdout.await;
        said
    }

    /// `TOOL --version`, checked to take `--config` when a password must be given.
    async fn version_of(&self, tool: &str, password: bool) -> Result<String, SourceError> {
        let out = tokio::process::Command::new(tool)
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| spawn_error(tool, e, INSTALL_HINT))?;
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: format!("{tool} --version"),
                status: describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        if password && tools_version(&text).is_some_and(|v| v < CONFIG_SINCE) {
            return Err(SourceError::Refused(format!(
                "{first}: this {tool} cannot read the password from a file (--config needs the MongoDB Database Tools {}.{} or newer), and stowage never puts it on a command line; install newer database tools",
                CONFIG_SINCE.0, CONFIG_SINCE.1
            )));
        }
        Ok(first)
    }

    /// Collections ("db.collection") of the target's database, or of every non-server
    /// database when it names none. `None` when mongosh is not installed.
    async fn collections(&self, url: &MongoUrl) -> Result<Option<Vec<String>>, SourceError> {
        let mut cmd = tool_command("mongosh", self.priority);
        cmd.args(["--nodb", "--quiet", "--norc", "--eval", LIST_SCRIPT])
            .env("STOWAGE_MONGO_DB", url.database());
        // The password goes into the connection string inside mongosh, never on its
        // command line.
        let uri = url.server_uri();
        match (url.password(), url.user()) {
            (Some(pw), Some(_)) => {
                let scheme_end = uri.find("://").map_or(0, |i| i + 3);
                let at = uri[scheme_end..]
                    .find('@')
                    .map_or(scheme_end, |i| scheme_end + i);
                cmd.env("STOWAGE_MONGO_PASSWORD", pw.expose())
                    .env("STOWAGE_MONGO_URI_HEAD", &uri[..at])
                    .env("STOWAGE_MONGO_URI_TAIL", &uri[at..]);
            }
            _ => {
                cmd.env_remove("STOWAGE_MONGO_PASSWORD")
                    .env("STOWAGE_MONGO_URI", &uri);
            }
        }
        let out = match cmd.output().await {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(spawn_error("mongosh", e, MONGOSH_HINT)),
        };
        if !out.status.success() {
            return Err(SourceError::Refused(format!(
                "cannot list the collections of {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("ns\t"))
                .map(|l| l.trim().to_string())
                .collect(),
        ))
    }
}

#[async_trait]
impl Database for MongoSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mongodb"
    }

    fn extension(&self) -> &'static str {
        "archive"
    }

    fn format(&self) -> &'static str {
        "mongodump archive"
    }

    fn describe(&self) -> String {
        match &self.url {
            Some(u) if u.database().is_empty() => format!("mongodb {u} (all databases)"),
            Some(u) => format!("mongodb {u}"),
            None => "mongodb".to_string(),
        }
    }

    fn target_example(&self) -> &'static str {
        "mongodb://USER@HOST:27017/DB"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        MongoUrl::parse(target, None).map(|_| ())
    }

    fn own_target(&self) -> Option<String> {
        self.url.as_ref().map(|u| u.to_string())
    }

    fn selects_objects(&self) -> bool {
        true
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        let password = self.url.as_ref().is_some_and(|u| u.password().is_some());
        let v = self.version_of("mongodump", password).await?;
        Ok(("mongodump".to_string(), v))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        let url = self.own_url()?;
        let config = password_file(url.password())?;
        let mut cmd = tool_command("mongodump", self.priority);
        cmd.arg("--archive").args(connection_args(
            &url.uri(),
            config.as_ref().map(|f| f.path()),
        ));
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error("mongodump", e, INSTALL_HINT))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(
                "mongodump started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        let head = Arc::new(Mutex::new(Vec::new()));
        let keep = head.clone();
        let reader = InspectReader::new(stdout, move |b: &[u8]| {
            if let Ok(mut h) = keep.lock()
                && h.len() < PRELUDE_KEEP
            {
                let n = b.len().min(PRELUDE_KEEP - h.len());
                h.extend_from_slice(&b[..n]);
            }
        });
        Ok(Dump {
            reader: Box::new(reader),
            finish: async move {
                let result = wait_tool("mongodump", child, stderr).await;
                drop(config);
                result?;
                let head = head
                    .lock()
                    .map(|mut h| std::mem::take(&mut *h))
                    .unwrap_or_default();
                Ok(match archive::parse_prelude(&head) {
                    Ok(p) => DumpInfo {
                        server_version: p.server_version.clone(),
                        objects: Some(p.objects()),
                        rows: None,
                        wal: None,
                    },
                    Err(e) => {
                        tracing::warn!(
                            "cannot read the collections from the mongodump archive header ({e:?}); the manifest lists none"
                        );
                        DumpInfo::default()
                    }
                })
            }
            .boxed(),
        })
    }

    async fn archive_objects(&self, archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        Ok(read_prelude(archive).await?.objects())
    }

    async fn live_objects(&self, target: Option<&str>) -> Result<Vec<String>, SourceError> {
        let url = match target {
            Some(t) => self.target(t)?,
            None => self.own_url()?.clone(),
        };
        self.collections(&url)
            .await?
            .ok_or_else(|| SourceError::Spawn {
                tool: "mongosh".into(),
                reason: SpawnReason::missing(format!("mongosh not found on PATH; {MONGOSH_HINT}")),
            })
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let target = self.target(&opts.target)?;
        let prelude: Prelude = read_prelude(archive).await?;
        let sel = select::select(
            &prelude.namespaces,
            target.database(),
            &opts.tables,
            &opts.exclude_tables,
        )
        .map_err(SourceError::Refused)?;
        for u in &sel.unmatched_excludes {
            tracing::warn!("excluded collection {u} is not in this backup");
        }
        let mut lines = Vec::new();
        if sel.restored.is_empty() {
            lines.push(format!(
                "{}: the backup holds no collection; nothing to restore",
                self.name
            ));
            return Ok(lines);
        }
        let names: Vec<&str> = sel.restored.iter().map(|(_, to)| to.as_str()).collect();
        lines.push(format!(
            "{}: {} collection(s){}: {}",
            self.name,
            names.len(),
            match &sel.rename {
                Some((from, to)) => format!(" from database {from} into {to}"),
                None => String::new(),
            },
            names.join(", ")
        ));
        if opts.dry_run {
            lines.push(format!(
                "would restore {} into {target}{}",
                self.name,
                if opts.clean {
                    " (--clean: dropping each collection first)"
                } else {
                    ""
                }
            ));
            return Ok(lines);
        }
        if !opts.clean {
            self.refuse_existing(&target, &sel, &names, opts).await?;
        }
        let said = self.run_mongorestore(archive, &target, &sel, opts).await;
        if let Some(summary) = restore_summary(&said?) {
            lines.push(format!("{}: {summary}", self.name));
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_on_the_command_line() {
        let u = MongoUrl::parse(
            "mongodb://backup:hunter2@db:27017/shop",
            Some(Secret::new("s3cr\"et\\\n".into())),
        )
        .expect("url");
        let f = password_file(u.password()).expect("file").expect("some");
        let args = connection_args(&u.uri(), Some(f.path()));
        let all = args.join(" ");
        assert!(!all.contains("s3cr") && !all.contains("hunter2"), "{all}");
        assert_eq!(args[0], "--uri=mongodb://backup@db:27017/shop");
        assert!(args[1].starts_with("--config=") && args[1].ends_with(".yaml"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(f.path()).expect("read"),
            "password: \"s3cr\\\"et\\\\\\n\"\n"
        );
        let path = f.path().to_path_buf();
        drop(f);
        assert!(!path.exists(), "the password file goes with the tool");
        assert!(password_file(None).expect("none").is_none());
        assert_eq!(
            connection_args("mongodb://db/", None),
            vec!["--uri=mongodb://db/".to_string()]
        );
    }

    #[test]
    fn yaml_escapes() {
        assert_eq!(config_yaml("plain"), "password: \"plain\"\n");
        assert_eq!(config_yaml("a: b # c"), "password: \"a: b # c\"\n");
        assert_eq!(config_yaml("\u{1}é"), "password: \"\\u0001é\"\n");
        assert_eq!(config_yaml("'\t"), "password: \"'\\t\"\n");
    }

    #[test]
    fn versions() {
        let v = "mongodump version: 100.9.4\ngit version: abc\nGo version: go1.21";
        assert_eq!(tools_version(v), Some((100, 9)));
        assert!(tools_version(v) >= Some(CONFIG_SINCE));
        assert_eq!(tools_version("mongodump version: r4.2.8"), Some((4, 2)));
        assert!(tools_version("mongodump version: 100.2.1") < Some(CONFIG_SINCE));
        assert_eq!(tools_version("garbage"), None);
    }

    #[test]
    fn summary_line() {
        let err = "2024-05-01T10:00:00.000+0000\tfinished restoring shop.users (3 documents, 0 failures)\n\
                   2024-05-01T10:00:00.001+0000\t5 document(s) restored successfully. 0 document(s) failed to restore.";
        assert_eq!(
            restore_summary(err).as_deref(),
            Some("5 document(s) restored successfully. 0 document(s) failed to restore.")
        );
        assert_eq!(restore_summary("nothing"), None);
    }

    fn configure(body: &str) -> Result<Arc<dyn Database>, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").expect("pw");
        let text = body.replace("PW", &pw.display().to_string());
        crate::source::configure_section("mongodb", &text)
    }

    #[test]
    fn config() {
        let d = configure("url = \"mongodb://backup@db:27017/shop\"\npassword_file = \"PW\"")
            .expect("valid");
        assert_eq!(d.describe(), "mongodb mongodb://backup@db:27017/shop");
        assert!(!format!("{d:?}").contains("from-file"));
        let d = configure("url = \"mongodb://db:27017\"").expect("all databases");
        assert_eq!(d.describe(), "mongodb mongodb://db:27017/ (all databases)");
        let e = configure("").expect_err("no url");
        assert!(
            e[0].contains("url: required for type = \"mongodb\""),
            "{e:?}"
        );
        let e = configure("url = \"mongodb://backup@db/shop\"").expect_err("no password");
        assert!(
            e[0].contains("names user \"backup\" but no password; add password_file"),
            "{e:?}"
        );
        let e = configure("url = \"mysql://db/shop\"").expect_err("scheme");
        assert!(e[0].contains("invalid MongoDB URL"), "{e:?}");
        let e =
            configure("url = \"mongodb://db/shop\"\nexclude_tables = [\"x\"]").expect_err("key");
        assert!(e[0].contains("only valid for type = \"postgres\""), "{e:?}");
    }

    #[test]
    fn restore_targets_borrow_the_sources_password_only_for_the_same_login() {
        let own = MongoUrl::parse(
            "mongodb://backup@db:27017/shop",
            Some(Secret::new("pw".into())),
        )
        .expect("own");
        let src = MongoSource {
            name: "db".into(),
            url: Some(own),
            priority: Priority::default(),
        };
        let t = src.target("mongodb://backup@db:27017/shop").expect("same");
        assert_eq!(t.password().map(Secret::expose), Some("pw"));
        let e = src
            .target("mongodb://backup@other:27017/shop")
            .expect_err("another server");
        assert!(e.to_string().contains("no password"), "{e}");
        let t = src.target("mongodb://other:27017/shop").expect("no auth");
        assert!(t.password().is_none());
        let t = src.target("mongodb://x:given@other/shop").expect("in URL");
        assert_eq!(t.password().map(Secret::expose), Some("given"));
        let e = src.target("postgres://db/x").expect_err("scheme");
        assert!(e.to_string().contains("invalid --to URL"), "{e}");
    }
}
