//! `type = "webdav"` destinations: a WebDAV share (Nextcloud, ownCloud, a NAS, Apache
//! mod_dav, `rclone serve webdav`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Kind, Place, Storage};
use crate::secret::Secret;
use crate::section::{Section, serde_fields};

/// The `webdav` destination type.
pub struct Webdav;

/// `[destinations.NAME]` with `type = "webdav"`, as the file has it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebdav {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

/// A WebDAV destination, validated.
#[derive(Debug, Clone)]
pub struct WebdavConfig {
    /// The collection backups go into, without credentials.
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Kind for Webdav {
    fn kind(&self) -> &'static str {
        "webdav"
    }

    fn keys(&self) -> &'static [&'static str] {
        serde_fields::<RawWebdav>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Place>> {
        let raw: RawWebdav = section.parse()?;
        let url = check_url(section, raw.url.as_deref());
        let password = match (&raw.username, &raw.password_file) {
            (Some(_), Some(file)) => section.secret("password_file", file),
            (None, None) => None,
            (Some(_), None) => {
                section.problem(
                    "password_file",
                    "required with username: a file holding the password (e.g. a Docker secret, \"/run/secrets/webdav_password\")",
                );
                None
            }
            (None, Some(_)) => {
                section.problem("username", "required with password_file");
                None
            }
        };
        Some(Arc::new(WebdavConfig {
            url: url?,
            username: raw.username,
            password,
        }))
    }
}

/// `url`: present, http(s), without credentials (they belong in username/password_file, not
/// in a URL that logs and `check-config` print).
fn check_url(section: &mut Section<'_>, url: Option<&str>) -> Option<url::Url> {
    let example = "e.g. url = \"https://cloud.example.com/remote.php/dav/files/alice/backups\"";
    let Some(text) = url else {
        section.problem("url", format!("required for type = \"webdav\"; {example}"));
        return None;
    };
    let parsed = match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        Ok(_) | Err(_) => {
            section.problem(
                "url",
                format!("\"{}\" is not an http(s) URL; {example}", text.escape_debug()),
            );
            return None;
        }
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        section.problem(
            "url",
            "must not hold credentials: set username and password_file instead",
        );
        return None;
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        section.problem(
            "url",
            format!("\"{}\" has a query or fragment; give the collection's address only", text.escape_debug()),
        );
        return None;
    }
    Some(parsed)
}

#[async_trait]
impl Place for WebdavConfig {
    fn kind(&self) -> &'static str {
        "webdav"
    }

    fn describe(&self) -> String {
        match &self.username {
            Some(user) => format!("webdav {} (user {user})", self.url),
            None => format!("webdav {} (no authentication)", self.url),
        }
    }

    async fn open(&self) -> Box<dyn Storage> {
        super::open(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::configure_section;

    #[test]
    fn a_url_and_credentials_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").expect("write");
        let d = configure_section(
            "webdav",
            &format!(
                "url = \"https://dav.example.com/backups\"\nusername = \"alice\"\npassword_file = {:?}",
                pw
            ),
        )
        .expect("valid");
        assert_eq!(d.describe(), "webdav https://dav.example.com/backups (user alice)");
        assert!(!format!("{d:?}").contains("s3cret"), "the password must not be printed");
    }

    #[test]
    fn bad_urls_and_half_credentials_are_named() {
        let cases = [
            ("", "destinations.d.url: required for type = \"webdav\"; e.g. url = \"https://cloud.example.com/remote.php/dav/files/alice/backups\""),
            ("url = \"ftp://x/y\"", "destinations.d.url: \"ftp://x/y\" is not an http(s) URL; e.g. url = \"https://cloud.example.com/remote.php/dav/files/alice/backups\""),
            ("url = \"https://bob:pw@x/y\"", "destinations.d.url: must not hold credentials: set username and password_file instead"),
            ("url = \"https://x/y\"\nusername = \"a\"", "destinations.d.password_file: required with username: a file holding the password (e.g. a Docker secret, \"/run/secrets/webdav_password\")"),
            ("url = \"https://x/y\"\nbucket = \"b\"", "destinations.d.bucket: only valid for type = \"s3\"; remove it or change the type"),
        ];
        for (toml, want) in cases {
            let e = configure_section("webdav", toml).expect_err(toml);
            assert_eq!(e, [want], "for {toml:?}");
        }
    }
}
