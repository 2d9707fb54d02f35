//! Database URLs with the password split off, so that it reaches the tool through its
//! environment or a private option file instead of its command line (visible in `ps`), and
//! is never printed. Each engine says which schemes it takes and whether a database name
//! is required.

use std::fmt;

use crate::config::Secret;

/// What an engine accepts as its URL.
#[derive(Debug, Clone, Copy)]
pub struct UrlSpec {
    /// For messages: "postgres", "mariadb", …
    pub engine: &'static str,
    pub schemes: &'static [&'static str],
    /// Shown in every message, e.g. "postgres://user@host:5432/dbname".
    pub example: &'static str,
    pub database_required: bool,
}

#[derive(Clone)]
pub struct DbUrl {
    without_password: url::Url,
    password: Option<Secret>,
}

impl DbUrl {
    /// `password_override` (from `password_file`) wins over a password in the URL.
    pub fn parse(
        text: &str,
        spec: &UrlSpec,
        password_override: Option<Secret>,
    ) -> Result<DbUrl, String> {
        let example = spec.example;
        let mut url = url::Url::parse(text)
            .map_err(|e| format!("{e}; expected a URL such as \"{example}\""))?;
        if !spec.schemes.contains(&url.scheme()) {
            return Err(format!(
                "scheme \"{}\" is not {}: expected a URL such as \"{example}\"",
                url.scheme(),
                spec.engine
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("the URL names no host: expected \"{example}\""));
        }
        if spec.database_required && url.path().trim_start_matches('/').is_empty() {
            return Err(format!("the URL names no database: expected \"{example}\""));
        }
        let in_url = url.password().map(|p| {
            Secret::new(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        });
        // set_password only fails for URLs that cannot have credentials; ours has a host.
        let _ = url.set_password(None);
        Ok(DbUrl {
            without_password: url,
            password: password_override.or(in_url),
        })
    }

    /// The URL without its password.
    pub fn conninfo(&self) -> &str {
        self.without_password.as_str()
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// A restore target without credentials of its own uses the source's: a target that
    /// names no user gets the source's user, and a target with the source's user and no
    /// password gets the source's password (from the URL or `password_file`), on whatever
    /// server it names: `--to postgres://postgres@db2/copy` restores as the job does.
    pub fn or_password_of(mut self, source: Option<&DbUrl>) -> DbUrl {
        let Some(own) = source else {
            return self;
        };
        if self.user().is_none()
            && let Some(user) = own.user()
        {
            let encoded =
                percent_encoding::utf8_percent_encode(&user, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            let _ = self.without_password.set_username(&encoded);
        }
        if self.password.is_none() && own.user() == self.user() {
            self.password = own.password.clone();
        }
        self
    }

    /// The same server and credentials, another database (e.g. "postgres" to create one).
    pub fn with_database(&self, database: &str) -> DbUrl {
        let mut u = self.without_password.clone();
        let encoded =
            percent_encoding::utf8_percent_encode(database, percent_encoding::NON_ALPHANUMERIC);
        u.set_path(&format!("/{encoded}"));
        DbUrl {
            without_password: u,
            password: self.password.clone(),
        }
    }

    pub fn host(&self) -> &str {
        self.without_password.host_str().unwrap_or("")
    }

    pub fn port(&self) -> Option<u16> {
        self.without_password.port()
    }

    /// The user name, percent-decoded; `None` when the URL has none.
    pub fn user(&self) -> Option<String> {
        let u = self.without_password.username();
        (!u.is_empty()).then(|| {
            percent_encoding::percent_decode_str(u)
                .decode_utf8_lossy()
                .into_owned()
        })
    }

    /// The path without its leading '/', percent-decoded.
    pub fn database(&self) -> String {
        percent_encoding::percent_decode_str(self.without_password.path().trim_start_matches('/'))
            .decode_utf8_lossy()
            .into_owned()
    }

    /// A query parameter, e.g. `?authSource=admin`.
    pub fn query(&self, key: &str) -> Option<String> {
        self.without_password
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.without_password.as_str())
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.without_password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: UrlSpec = UrlSpec {
        engine: "postgres",
        schemes: &["postgres", "postgresql"],
        example: "postgres://user@host:5432/dbname",
        database_required: true,
    };

    #[test]
    fn hides_password() {
        let u = DbUrl::parse("postgres://app:s%40cret@db:5432/prod", &PG, None).expect("valid url");
        assert_eq!(u.conninfo(), "postgres://app@db:5432/prod");
        assert_eq!(u.password().map(Secret::expose), Some("s@cret"));
        assert!(!format!("{u} {u:?}").contains("cret"));
        assert_eq!(u.database(), "prod");
        assert_eq!(u.user().as_deref(), Some("app"));
        assert_eq!((u.host(), u.port()), ("db", Some(5432)));
    }

    #[test]
    fn password_file_wins_over_url() {
        let u = DbUrl::parse(
            "postgres://app:old@db/prod",
            &PG,
            Some(Secret::new("new".into())),
        )
        .expect("valid url");
        assert_eq!(u.password().map(Secret::expose), Some("new"));
    }

    #[test]
    fn targets_take_the_sources_credentials_when_they_give_none() {
        let source = DbUrl::parse(
            "postgres://app@db/prod",
            &PG,
            Some(Secret::new("pw".into())),
        )
        .expect("valid url");
        let cases = [
            // (target, user after, password taken)
            ("postgres://db2/copy", Some("app"), true),
            ("postgres://app@db2:5433/copy", Some("app"), true),
            ("postgres://other@db/copy", Some("other"), false),
            ("postgres://app:own@db/copy", Some("app"), false),
        ];
        for (target, user, taken) in cases {
            let t = DbUrl::parse(target, &PG, None)
                .expect("valid url")
                .or_password_of(Some(&source));
            assert_eq!(t.user().as_deref(), user, "{target}");
            assert_eq!(
                t.password().map(Secret::expose) == Some("pw"),
                taken,
                "{target}"
            );
        }
    }

    #[test]
    fn names_what_is_wrong() {
        let e = DbUrl::parse("mysql://db/x", &PG, None).expect_err("scheme");
        assert!(e.contains("scheme \"mysql\" is not postgres"), "{e}");
        let e = DbUrl::parse("postgres://db", &PG, None).expect_err("no db");
        assert!(e.contains("names no database"), "{e}");
    }
}
