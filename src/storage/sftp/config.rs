//! `type = "sftp"` destinations: a directory on an SSH server (a NAS, a VPS, a Hetzner
//! Storage Box), reached with the system's `ssh` client and a key file.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Kind, Place, Storage};
use crate::section::{Section, serde_fields};

/// The `sftp` destination type.
pub struct Sftp;

/// `[destinations.NAME]` with `type = "sftp"`, as the file has it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSftp {
    host: Option<String>,
    /// Wider than a port, so that 70000 is reported as out of range, not as a type error.
    port: Option<i64>,
    user: Option<String>,
    key_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    known_hosts_check: Option<String>,
    path: Option<String>,
}

/// How the server's host key is checked against `known_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// The key must be in the file already (`StrictHostKeyChecking=yes`).
    Strict,
    /// A host not in the file yet is trusted on first use and added to it; a changed key is
    /// still refused (`StrictHostKeyChecking=accept-new`). Weaker: the first connection is
    /// not verified.
    AcceptNew,
}

/// An SFTP destination, validated.
#[derive(Debug, Clone)]
pub struct SftpConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key, handed to `ssh -i` by its path: only its first line is ever read
    /// here (to tell a private key from a public one), never logged or put on a command line.
    pub key_file: PathBuf,
    pub known_hosts: PathBuf,
    pub host_check: HostCheck,
    /// The absolute directory backups go into, without a trailing '/' ("/" for the root).
    pub path: String,
}

impl SftpConfig {
    /// `sftp://user@host:port/path`, as messages name the destination.
    pub fn location(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("sftp://{}@{host}:{}{}", self.user, self.port, self.path)
    }

    /// How `known_hosts` names the server: `[host]:port` unless the port is 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl Kind for Sftp {
    fn kind(&self) -> &'static str {
        "sftp"
    }

    fn keys(&self) -> &'static [&'static str] {
        serde_fields::<RawSftp>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Place>> {
        let raw: RawSftp = section.parse()?;
        let host = name(section, "host", raw.host, "host = \"nas.lan\"");
        let port = match raw.port {
            None => Some(22),
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    section.problem("port", format!("{p} is not a TCP port (1-65535); the default is 22"));
                    None
                }
            },
        };
        let user = name(section, "user", raw.user, "user = \"backup\"");
        let key_file = match raw.key_file {
            Some(file) => check_key_file(section, file),
            None => {
                section.problem(
                    "key_file",
                    "required for type = \"sftp\": the private key to log in with (e.g. a Docker secret, \"/run/secrets/ssh_key\"); its public key goes into the server's authorized_keys",
                );
                None
            }
        };
        let host_check = match raw.known_hosts_check.as_deref() {
            None | Some("strict") => Some(HostCheck::Strict),
            Some("accept-new") => Some(HostCheck::AcceptNew),
            Some(other) => {
                section.problem(
                    "known_hosts_check",
                    format!(
                        "\"{}\" is not a host key check; use \"strict\" (the default) or \"accept-new\"",
                        other.escape_debug()
                    ),
                );
                None
            }
        };
        let known_hosts = match raw.known_hosts {
            None => {
                section.problem(
                    "known_hosts",
                    "required for type = \"sftp\": a file with the server's host key, e.g. known_hosts = \"/config/known_hosts\" (create it with `ssh-keyscan -p PORT HOST > FILE` and check the fingerprint)",
                );
                None
            }
            Some(file) => check_known_hosts(section, file, host_check.unwrap_or(HostCheck::Strict)),
        };
        let path = match raw.path {
            None => {
                section.problem(
                    "path",
                    "required for type = \"sftp\"; e.g. path = \"/volume1/backups/stowage\" (absolute, on the server)",
                );
                None
            }
            Some(p) => check_path(section, &p),
        };
        Some(Arc::new(SftpConfig {
            host: host?,
            port: port?,
            user: user?,
            key_file: key_file?,
            known_hosts: known_hosts?,
            host_check: host_check?,
            path: path?,
        }))
    }
}

/// `host` or `user`: present, and nothing `ssh` could take for an option or another part of
/// its destination (a leading '-', '@', whitespace).
fn name(section: &mut Section<'_>, field: &str, value: Option<String>, example: &str) -> Option<String> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        section.problem(field, format!("required for type = \"sftp\"; e.g. {example}"));
        return None;
    };
    if v.starts_with('-') || v.contains(['@', '/']) || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        section.problem(
            field,
            format!("\"{}\" is not a {field} name (no '@', '/', spaces or leading '-')", v.escape_debug()),
        );
        return None;
    }
    Some(v)
}

/// The private key: an absolute path to a readable file that looks like a private key, and
/// that `ssh` will accept (it refuses a key of its own user that others can read).
fn check_key_file(section: &mut Section<'_>, file: PathBuf) -> Option<PathBuf> {
    if !file.is_absolute() {
        section.problem("key_file", format!("{file:?} must be an absolute path"));
        return None;
    }
    let mut head = [0u8; 64];
    let read = std::fs::File::open(&file).and_then(|mut f| {
        let meta = f.metadata()?;
        let n = f.read(&mut head)?;
        Ok((meta, n))
    });
    let (meta, n) = match read {
        Ok(r) => r,
        Err(e) => {
            section.problem(
                "key_file",
                format!(
                    "cannot read {file:?}: {}; mount the key there (readable by the user stowage runs as)",
                    crate::units::io_reason(&e)
                ),
            );
            return None;
        }
    };
    let head = String::from_utf8_lossy(&head[..n]);
    if !(head.starts_with("-----BEGIN ") && head.lines().next().is_some_and(|l| l.contains("PRIVATE KEY"))) {
        section.problem(
            "key_file",
            format!("{file:?} is not a private key (it should start with \"-----BEGIN OPENSSH PRIVATE KEY-----\"); give the private key, not the .pub file"),
        );
        return None;
    }
    if meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o077 != 0 {
        section.problem(
            "key_file",
            format!(
                "{file:?} can be read by other users (mode {:o}), and ssh refuses such a key; chmod 600 it",
                meta.mode() & 0o777
            ),
        );
        return None;
    }
    Some(file)
}

/// `known_hosts`: with strict checking a readable file (ssh only reads it); with
/// accept-new, ssh may create it, so its directory must exist.
fn check_known_hosts(section: &mut Section<'_>, file: PathBuf, check: HostCheck) -> Option<PathBuf> {
    if !file.is_absolute() {
        section.problem("known_hosts", format!("{file:?} must be an absolute path"));
        return None;
    }
    match std::fs::File::open(&file) {
        Ok(_) => Some(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && check == HostCheck::AcceptNew => {
            if file.parent().is_some_and(Path::is_dir) {
                Some(file)
            } else {
                section.problem(
                    "known_hosts",
                    format!("the directory of {file:?} does not exist; ssh cannot create the file there"),
                );
                None
            }
        }
        Err(e) => {
            section.problem(
                "known_hosts",
                format!(
                    "cannot read {file:?}: {}; create it with `ssh-keyscan -p PORT HOST > FILE` (and check the fingerprint), or set known_hosts_check = \"accept-new\"",
                    crate::units::io_reason(&e)
                ),
            );
            None
        }
    }
}

/// `path`: absolute, without "." or ".." parts; kept without a trailing '/'.
fn check_path(section: &mut Section<'_>, path: &str) -> Option<String> {
    let rest = path.trim_end_matches('/').trim_start_matches('/');
    if !path.starts_with('/') || (!rest.is_empty() && crate::storage::bad_part(rest).is_some()) {
        section.problem(
            "path",
            format!(
                "\"{}\" must be an absolute path on the server without \".\" or \"..\" parts, e.g. \"/volume1/backups/stowage\"",
                path.escape_debug()
            ),
        );
        return None;
    }
    Some(format!("/{rest}"))
}

#[async_trait]
impl Place for SftpConfig {
    fn kind(&self) -> &'static str {
        "sftp"
    }

    fn describe(&self) -> String {
        let check = match self.host_check {
            HostCheck::Strict => "host key checked against",
            HostCheck::AcceptNew => "new host keys accepted into",
        };
        format!(
            "sftp {} (key {}, {check} {})",
            self.location(),
            self.key_file.display(),
            self.known_hosts.display()
        )
    }

    async fn open(&self) -> Box<dyn Storage> {
        Box::new(super::SftpStorage::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::storage::configure_section;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";

    /// A key file (0600) and a known_hosts file in a temp dir.
    fn files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id");
        std::fs::write(&key, KEY).expect("write key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, "nas.lan ssh-ed25519 AAAA\n").expect("write known_hosts");
        let (key, kh) = (format!("{key:?}"), format!("{kh:?}"));
        (dir, key, kh)
    }

    #[test]
    fn a_host_a_key_and_a_known_hosts_file() {
        let (_dir, key, kh) = files();
        let d = configure_section(
            "sftp",
            &format!("host = \"nas.lan\"\nuser = \"backup\"\nkey_file = {key}\nknown_hosts = {kh}\npath = \"/volume1/backups/stowage/\""),
        )
        .expect("valid");
        let described = d.describe();
        assert!(
            described.starts_with("sftp sftp://backup@nas.lan:22/volume1/backups/stowage (key /"),
            "{described}"
        );
        assert!(described.contains(", host key checked against /"), "{described}");
        assert!(!format!("{d:?}").contains("b3BlbnNzaC1"), "the key is never read into the settings");

        let d = configure_section(
            "sftp",
            &format!("host = \"nas.lan\"\nport = 2222\nuser = \"backup\"\nkey_file = {key}\nknown_hosts = {kh}\nknown_hosts_check = \"accept-new\"\npath = \"/\""),
        )
        .expect("valid");
        assert!(d.describe().starts_with("sftp sftp://backup@nas.lan:2222/ (key"), "{}", d.describe());
        assert!(d.describe().contains("new host keys accepted into"), "{}", d.describe());
    }

    #[test]
    fn each_missing_key_is_named() {
        let e = configure_section("sftp", "").expect_err("empty");
        assert_eq!(
            e,
            [
                "destinations.d.host: required for type = \"sftp\"; e.g. host = \"nas.lan\"",
                "destinations.d.user: required for type = \"sftp\"; e.g. user = \"backup\"",
                "destinations.d.key_file: required for type = \"sftp\": the private key to log in with (e.g. a Docker secret, \"/run/secrets/ssh_key\"); its public key goes into the server's authorized_keys",
                "destinations.d.known_hosts: required for type = \"sftp\": a file with the server's host key, e.g. known_hosts = \"/config/known_hosts\" (create it with `ssh-keyscan -p PORT HOST > FILE` and check the fingerprint)",
                "destinations.d.path: required for type = \"sftp\"; e.g. path = \"/volume1/backups/stowage\" (absolute, on the server)",
            ]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let (dir, key, kh) = files();
        let base = |extra: &str| {
            let mut keys = vec![
                ("host", "\"nas.lan\"".to_string()),
                ("user", "\"backup\"".to_string()),
                ("key_file", key.clone()),
                ("known_hosts", kh.clone()),
                ("path", "\"/backups\"".to_string()),
            ];
            let mut extra_keys = Vec::new();
            for line in extra.lines() {
                let (k, v) = line.split_once(" = ").expect("k = v");
                keys.retain(|(name, _)| *name != k);
                extra_keys.push((k, v.to_string()));
            }
            keys.extend(extra_keys);
            keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>()
        };
        let pubkey = dir.path().join("id.pub");
        std::fs::write(&pubkey, "ssh-ed25519 AAAA backup@host\n").expect("write");
        let open_key = dir.path().join("open");
        std::fs::write(&open_key, KEY).expect("write");
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let cases = [
            ("port = 0".to_string(), "destinations.d.port: 0 is not a TCP port (1-65535); the default is 22".to_string()),
            ("port = 70000".to_string(), "destinations.d.port: 70000 is not a TCP port (1-65535); the default is 22".to_string()),
            ("host = \"-oProxyCommand=x\"".to_string(), "destinations.d.host: \"-oProxyCommand=x\" is not a host name (no '@', '/', spaces or leading '-')".to_string()),
            ("user = \"a b\"".to_string(), "destinations.d.user: \"a b\" is not a user name (no '@', '/', spaces or leading '-')".to_string()),
            ("path = \"backups\"".to_string(), "destinations.d.path: \"backups\" must be an absolute path on the server without \".\" or \"..\" parts, e.g. \"/volume1/backups/stowage\"".to_string()),
            ("path = \"/a/../b\"".to_string(), "destinations.d.path: \"/a/../b\" must be an absolute path on the server without \".\" or \"..\" parts, e.g. \"/volume1/backups/stowage\"".to_string()),
            ("key_file = \"id\"".to_string(), "destinations.d.key_file: \"id\" must be an absolute path".to_string()),
            ("key_file = \"/nonexistent/id\"".to_string(), "destinations.d.key_file: cannot read \"/nonexistent/id\": no such file; mount the key there (readable by the user stowage runs as)".to_string()),
            (format!("key_file = {pubkey:?}"), format!("destinations.d.key_file: {pubkey:?} is not a private key (it should start with \"-----BEGIN OPENSSH PRIVATE KEY-----\"); give the private key, not the .pub file")),
            (format!("key_file = {open_key:?}"), format!("destinations.d.key_file: {open_key:?} can be read by other users (mode 644), and ssh refuses such a key; chmod 600 it")),
            ("known_hosts = \"/nonexistent/known_hosts\"".to_string(), "destinations.d.known_hosts: cannot read \"/nonexistent/known_hosts\": no such file; create it with `ssh-keyscan -p PORT HOST > FILE` (and check the fingerprint), or set known_hosts_check = \"accept-new\"".to_string()),
            ("known_hosts = \"/nonexistent/known_hosts\"\nknown_hosts_check = \"accept-new\"".to_string(), "destinations.d.known_hosts: the directory of \"/nonexistent/known_hosts\" does not exist; ssh cannot create the file there".to_string()),
            ("known_hosts_check = \"no\"".to_string(), "destinations.d.known_hosts_check: \"no\" is not a host key check; use \"strict\" (the default) or \"accept-new\"".to_string()),
            ("bucket = \"b\"".to_string(), "destinations.d.bucket: only valid for type = \"s3\"; remove it or change the type".to_string()),
        ];
        for (extra, want) in cases {
            let toml = base(&extra);
            let e = configure_section("sftp", &toml).expect_err(&toml);
            assert_eq!(e, [want], "for {toml}");
        }
        // With accept-new, a known_hosts file that does not exist yet is fine: ssh creates it.
        let toml = base(&format!("known_hosts = {:?}\nknown_hosts_check = \"accept-new\"", dir.path().join("new_known_hosts")));
        configure_section("sftp", &toml).expect("accept-new creates known_hosts");
    }
}
