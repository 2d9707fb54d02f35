//! The shared fixture: one job in a scratch directory of its own, its config written by a
//! builder, and the stowage commands a test runs against it.
//!
//! ```ignore
//! let job = Job::new("app")
//!     .log()
//!     .local("local", Some(10))
//!     .postgres("db", &pg.url("app"))
//!     .heal("watch = [\"*\"]")
//!     .write();
//! let id = job.backup();
//! let (code, out) = job.stowage(&["restore", "app", "latest", "--to", &url]);
//! ```
//!
//! Every command runs with the job's own `STOWAGE_PID_FILE` and `STOWAGE_STATE_FILE` in its
//! directory (the daemon it starts and the commands beside it see the same state, and
//! parallel tests share none), no inherited `AWS_*`, `NO_COLOR=1`, and a timeout of 300 s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::run::{Running, parse_listing, run_stowage_in, spawn_stowage_with_env, text};
use super::servers::s3::S3Server;

/// How long one stowage command of a fixture may take before the test fails.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// A TOML basic string holding `s` (quotes and backslashes escaped).
pub fn toml_str(s: impl std::fmt::Display) -> String {
    format!("{:?}", s.to_string())
}

/// A job's config being put together; [`JobBuilder::write`] writes it and gives the [`Job`].
/// The config reads, in this order: `top`, `[log]`, the destinations, `[jobs.NAME]` (`schedule`,
/// the destinations in the order added, `job` keys), the sources, `sections`.
pub struct JobBuilder {
    /// The scratch directory the builder owns; None for a config in a directory of the
    /// test's (see [`Job::config_in`]).
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    name: String,
    schedule: String,
    top: String,
    log: bool,
    destinations: Vec<(String, String)>,
    job: String,
    sources: Vec<String>,
    sections: String,
}

/// A job's scratch directory (removed on drop) and its config `stowage.toml` there.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub name: String,
}

impl Job {
    /// A job `name` in a new scratch directory (`/tmp/.tmpXXXX`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: &str) -> JobBuilder {
        Self::in_dir(name, tempfile::tempdir().expect("tempdir"))
    }

    /// Like [`Job::new`], the scratch directory's name starting with `prefix`.
    pub fn with_prefix(name: &str, prefix: &str) -> JobBuilder {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        Self::in_dir(name, dir)
    }

    /// A config of job `name` in `root`, a directory the test keeps (for tests that write
    /// several configs side by side): written with [`JobBuilder::write_as`].
    pub fn config_in(root: &Path, name: &str) -> JobBuilder {
        Self::builder(name, None, root.to_path_buf())
    }

    fn in_dir(name: &str, dir: tempfile::TempDir) -> JobBuilder {
        let root = dir.path().to_path_buf();
        Self::builder(name, Some(dir), root)
    }

    fn builder(name: &str, dir: Option<tempfile::TempDir>, root: PathBuf) -> JobBuilder {
        JobBuilder {
            dir,
            root,
            name: name.to_string(),
            schedule: "0 3 * * *".to_string(),
            top: String::new(),
            log: false,
            destinations: Vec::new(),
            job: String::new(),
            sources: Vec::new(),
            sections: String::new(),
        }
    }

    /// `rel` in the job's scratch directory (a local destination `d` is at `path("d")`).
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The lines of the file `rel` in the job's directory (none when it does not exist):
    /// what hooks and commands appended there, in order.
    pub fn lines_of(&self, rel: impl AsRef<Path>) -> Vec<String> {
        std::fs::read_to_string(self.path(rel))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The daemon's pid file and state file, in the job's directory.
    pub fn envs(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("STOWAGE_PID_FILE", self.path("stowage.pid")),
            ("STOWAGE_STATE_FILE", self.path("stowage-state.json")),
        ]
    }

    /// `stowage --config CONFIG ARGS…` (status not checked).
    pub fn output(&self, args: &[&str]) -> Output {
        let envs = self.envs();
        let envs: Vec<(&str, &OsStr)> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        run_stowage_in(&self.config, args, &envs, JOB_TIMEOUT)
    }

    /// Exit code and all output of `stowage --config CONFIG ARGS…`.
    pub fn stowage(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self.output(args);
        (out.status.code(), text(&out))
    }

    /// `stowage run NAME`, which must succeed; the new backup's id (from its summary line).
    pub fn backup(&self) -> String {
        let (code, out) = self.stowage(&["run", &self.name]);
        assert_eq!(code, Some(0), "run {} failed:\n{out}", self.name);
        out.split("id=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no backup id in:\n{out}"))
            .to_string()
    }

    /// Backup ids on destination `dest`, newest first, as `stowage list NAME` shows them.
    pub fn ids(&self, dest: &str) -> Vec<String> {
        let out = self.output(&["list", &self.name]);
        assert!(out.status.success(), "list failed:\n{}", text(&out));
        parse_listing(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .find(|(d, _)| d == dest)
            .map(|(_, ids)| ids)
            .unwrap_or_default()
    }

    /// `stowage daemon` in the background, with the job's pid and state files.
    pub fn daemon(&self) -> Running {
        self.spawn(&["daemon"], &[])
    }

    /// `stowage ARGS…` in the background, with the job's pid and state files and `extra`.
    pub fn spawn(&self, args: &[&str], extra: &[(&str, &OsStr)]) -> Running {
        let envs = self.envs();
        let mut all: Vec<(&str, &OsStr)> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        all.extend_from_slice(extra);
        spawn_stowage_with_env(&self.config, args, &all)
    }

    /// Backup `id`'s directory on local destination `dest`.
    pub fn backup_dir(&self, dest: &str, id: &str) -> PathBuf {
        self.path(dest).join(&self.name).join(id)
    }

    /// Backup `id`'s manifest on local destination `dest`.
    pub fn manifest_path(&self, dest: &str, id: &str) -> PathBuf {
        self.backup_dir(dest, id).join("manifest.json")
    }

    /// Backup `id`'s manifest on local destination `dest`, parsed (a job without an
    /// authentication key stores it as plain JSON).
    pub fn manifest(&self, dest: &str, id: &str) -> serde_json::Value {
        let path = self.manifest_path(dest, id);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Everything the job's log directory (`[log] dir`, see [`JobBuilder::log`]) holds, its
    /// files in name order.
    pub fn log(&self) -> String {
        let mut all = String::new();
        if let Ok(dir) = std::fs::read_dir(self.path("logs")) {
            let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                all.push_str(&std::fs::read_to_string(f).unwrap_or_default());
            }
        }
        all
    }
}

impl JobBuilder {
    /// The job's scratch directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// `rel` in the job's scratch directory, for files a source or key names.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Text before everything else (e.g. a `[server]` section).
    pub fn top(mut self, text: &str) -> Self {
        self.top.push_str(text);
        self
    }

    /// `[log]` at level info into the directory `logs` (read back with [`Job::log`]).
    pub fn log(mut self) -> Self {
        self.log = true;
        self
    }

    /// Local destination `name` at `path(name)`, with `retention = { keep_last = N }` if given.
    pub fn local(self, name: &str, keep_last: Option<usize>) -> Self {
        let path = self.path(name);
        self.local_at(name, &path, keep_last)
    }

    /// Local destination `name` at `path`, with `retention = { keep_last = N }` if given.
    pub fn local_at(self, name: &str, path: &Path, keep_last: Option<usize>) -> Self {
        let mut body = format!("type = \"local\"\npath = {}\n", toml_str(path.display()));
        if let Some(n) = keep_last {
            body.push_str(&format!("retention = {{ keep_last = {n} }}\n"));
        }
        self.destination(name, &body)
    }

    /// S3 destination `name` on `s3`'s bucket `bucket` (path-style, the test credentials, the
    /// secret key in the file `s3_secret`), then `extra` keys (e.g. `prefix = "x"`).
    pub fn s3(self, name: &str, s3: &S3Server, bucket: &str, extra: &str) -> Self {
        let body = format!(
            "{}region = {}\n{extra}",
            self.s3_keys(s3, bucket),
            toml_str(s3.region())
        );
        self.destination(name, &body)
    }

    /// S3 destination `name` on `s3`'s bucket `bucket` reached at `endpoint` (a proxy in front
    /// of the server), then `extra` keys: the keys of [`JobBuilder::s3_keys_at`], no region.
    pub fn s3_at(
        self,
        name: &str,
        s3: &S3Server,
        bucket: &str,
        endpoint: &str,
        extra: &str,
    ) -> Self {
        let body = format!("{}{extra}", self.s3_keys_at(s3, bucket, endpoint));
        self.destination(name, &body)
    }

    /// The keys of an S3 destination on `s3`'s bucket `bucket`, without a region (path-style,
    /// the test credentials, the secret key in the file `s3_secret`).
    pub fn s3_keys(&self, s3: &S3Server, bucket: &str) -> String {
        self.s3_keys_at(s3, bucket, &s3.endpoint())
    }

    /// Like [`JobBuilder::s3_keys`], the server reached at `endpoint`.
    pub fn s3_keys_at(&self, s3: &S3Server, bucket: &str, endpoint: &str) -> String {
        let secret = self.path("s3_secret");
        std::fs::write(&secret, s3.secret_key()).expect("write secret");
        format!(
            "type = \"s3\"\nbucket = {}\nendpoint = {}\nforce_path_style = true\n\
             access_key_id = {}\nsecret_access_key_file = {}\n",
            toml_str(bucket),
            toml_str(endpoint),
            toml_str(s3.access_key()),
            toml_str(secret.display()),
        )
    }

    /// Destination `name` with `body` as its keys; the job writes to it.
    pub fn destination(mut self, name: &str, body: &str) -> Self {
        self.destinations.push((name.to_string(), body.to_string()));
        self
    }

    /// The job's `schedule` (default `0 3 * * *`: never during a test).
    pub fn schedule(mut self, cron: &str) -> Self {
        self.schedule = cron.to_string();
        self
    }

    /// More keys of `[jobs.NAME]` (e.g. `compression = "none"`).
    pub fn job(mut self, keys: &str) -> Self {
        self.job.push_str(keys);
        self.job.push('\n');
        self
    }

    /// A `[[jobs.NAME.sources]]` with `body` as its keys.
    pub fn source(mut self, body: &str) -> Self {
        self.sources.push(body.to_string());
        self
    }

    /// A source `name` of engine `kind` at `url`, then `extra` keys.
    pub fn database(self, kind: &str, name: &str, url: &str, extra: &str) -> Self {
        let body = format!(
            "type = {}\nname = {}\nurl = {}\n{extra}",
            toml_str(kind),
            toml_str(name),
            toml_str(url)
        );
        self.source(&body)
    }

    /// A PostgreSQL source `name` at `url`.
    pub fn postgres(self, name: &str, url: &str) -> Self {
        self.database("postgres", name, url, "")
    }

    /// A `files` source `name` backing up the directory `path`, then `extra` keys.
    pub fn files(self, name: &str, path: &Path, extra: &str) -> Self {
        let body = format!(
            "type = \"files\"\nname = {}\npath = {}\n{extra}",
            toml_str(name),
            toml_str(path.display())
        );
        self.source(&body)
    }

    /// A `command` source `name` whose dump is the command `argv`.
    pub fn command(self, name: &str, argv: &[&str]) -> Self {
        let argv: Vec<String> = argv.iter().map(toml_str).collect();
        let body = format!(
            "type = \"command\"\nname = {}\ndump = [{}]\n",
            toml_str(name),
            argv.join(", ")
        );
        self.source(&body)
    }

    /// `[jobs.NAME.heal]` with `body` as its keys.
    pub fn heal(self, body: &str) -> Self {
        let section = format!("[jobs.{}.heal]\n{body}\n", self.name);
        self.section(&section)
    }

    /// `[jobs.NAME.drill]` with `body` as its keys.
    pub fn drill(self, body: &str) -> Self {
        let section = format!("[jobs.{}.drill]\n{body}\n", self.name);
        self.section(&section)
    }

    /// A `[[jobs.NAME.notify]]` webhook to `url`.
    pub fn webhook(self, url: &str) -> Self {
        let section = format!(
            "[[jobs.{}.notify]]\ntype = \"webhook\"\nurl = {}\n",
            self.name,
            toml_str(url)
        );
        self.section(&section)
    }

    /// Text after the sources (whole sections with their headers).
    pub fn section(mut self, text: &str) -> Self {
        self.sections.push('\n');
        self.sections.push_str(text);
        self
    }

    /// The config as it will be written.
    pub fn render(&self) -> String {
        let mut body = String::new();
        if !self.top.is_empty() {
            body.push_str(&self.top);
            body.push_str("\n\n");
        }
        if self.log {
            body.push_str(&format!(
                "[log]\nlevel = \"info\"\ndir = {}\n\n",
                toml_str(self.path("logs").display())
            ));
        }
        for (name, keys) in &self.destinations {
            body.push_str(&format!("[destinations.{name}]\n{keys}\n"));
        }
        let names: Vec<String> = self.destinations.iter().map(|(n, _)| toml_str(n)).collect();
        body.push_str(&format!(
            "[jobs.{}]\nschedule = {}\ndestinations = [{}]\n{}\n",
            self.name,
            toml_str(&self.schedule),
            names.join(", "),
            self.job
        ));
        for s in &self.sources {
            body.push_str(&format!("[[jobs.{}.sources]]\n{s}\n", self.name));
        }
        body.push_str(&self.sections);
        body
    }

    /// Write the config as it stands to `file` in the scratch directory, and go on building
    /// (for a second config of the same job, e.g. one without a key the final one has).
    pub fn write_as(&self, file: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, self.render())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Write `stowage.toml` into the scratch directory.
    pub fn write(self) -> Job {
        let config = self.write_as("stowage.toml");
        Job {
            dir: self
                .dir
                .expect("a config in a directory of the test's is written with write_as"),
            config,
            name: self.name,
        }
    }
}
