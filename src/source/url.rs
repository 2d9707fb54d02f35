//! Database URLs with the password split off, so that it reaches the tool through its
//! environment or a private option file instead of its command line (visible in `ps`), and
//! is never printed. Each engine says which schemes it takes and whether a database name
//! is required.

use std::fmt;

use crate::secret::Secret;

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
        let mut in_url = url.password().map(|p| {
            Secret::new(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        });
        // set_password only fails for URLs that cannot have credentials; ours has a host.
        let _ = url.set_password(None);
        // libpq also takes `?password=`: split it off like the one before the '@', so it
        // is never shown (nor on a command line).
        if url.query_pairs().any(|(k, _)| k == "password") {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "password")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let given = url
                .query_pairs()
                .find(|(k, _)| k == "password")
                .map(|(_, v)| Secret::new(v.into_owned()));
            in_url = in_url.or(given);
            if kept.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
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
    /// password gets the source's password (from the URL or `password_file`), but only on
    /// the server the source names (same host, port and connection parameters): a
    /// `--to` naming another server must bring its own password, so the source's is
    /// never sent to a host it was not configured for.
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
        if self.password.is_none() && own.user() == self.user() && self.same_server(own) {
            self.password = own.password.clone();
        }
        self
    }

    /// Whether both URLs name the same server: host (case aside), port (a missing one is
    /// the scheme's default) and the query parameters that redirect a connection.
    pub fn same_server(&self, other: &DbUrl) -> bool {
        let redirects = |u: &DbUrl| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = u
                .without_password
                .query_pairs()
                .filter(|(k, _)| matches!(k.as_ref(), "host" | "hostaddr" | "port" | "service"))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            v.sort();
            v
        };
        self.host().eq_ignore_ascii_case(other.host())
            && self.effective_port() == other.effective_port()
            && redirects(self) == redirects(other)
    }

    fn effective_port(&self) -> Option<u16> {
        self.port().or(match self.without_password.scheme() {
            "postgres" | "postgresql" => Some(5432),
            "mysql" | "mariadb" => Some(3306),
            "redis" | "rediss" => Some(6379),
            "mongodb" => Some(27017),
            _ => None,
        })
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

/// `text` with every password in it replaced by `***`: the part between `user:` and `@`
/// after a `scheme://`, and `password=` parameters. For showing a target or URL as the
/// user gave it (a `--to` value, a command's arguments) in logs and errors. Errs on the
/// side of hiding: in a malformed URL everything from the first ':' of the user part to
/// the last '@' goes.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let word = &tail[..end];
        match word.rfind('@') {
            Some(at) if word[..at].contains(':') => {
                let colon = word[..at].find(':').unwrap_or(at);
                out.push_str(&word[..colon]);
                out.push_str(":***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_parameters(&out)
}

/// `password=…` and `sslpassword=…` values (query parameters, conninfo strings) as `***`.
fn redact_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(i) = lower.find("password=") else {
            out.push_str(rest);
            return out;
        };
        let value = i + "password=".len();
        out.push_str(&rest[..value]);
        let end = rest[value..]
            .find(|c: char| c == '&' || c == ';' || c.is_whitespace())
            .map_or(rest.len(), |e| value + e);
        if end > value {
            out.push_str("***");
        }
        rest = &rest[end..];
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
            ("postgres://db/copy", Some("app"), true),
            ("postgres://app@DB:5432/copy", Some("app"), true),
            // Another server gets the user name, never the password.
            ("postgres://db2/copy", Some("app"), false),
            ("postgres://app@db:5433/copy", Some("app"), false),
            ("postgres://app@db2:5432/copy", Some("app"), false),
            ("postgres://app@db/copy?host=evil", Some("app"), false),
            (
                "postgres://app@db/copy?hostaddr=10.0.0.9",
                Some("app"),
                false,
            ),
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
    fn a_password_parameter_is_split_off() {
        let u = DbUrl::parse(
            "postgres://app@db/prod?sslmode=require&password=hunter2",
            &PG,
            None,
        )
        .expect("valid url");
        assert_eq!(u.password().map(Secret::expose), Some("hunter2"));
        assert_eq!(u.conninfo(), "postgres://app@db/prod?sslmode=require");
        let u = DbUrl::parse("postgres://app@db/prod?password=x", &PG, None).expect("valid");
        assert_eq!(u.conninfo(), "postgres://app@db/prod");
    }

    #[test]
    fn redact_hides_every_password() {
        let cases = [
            (
                "postgres://app:hunter2@db:5432/prod",
                "postgres://app:***@db:5432/prod",
            ),
            ("db=postgres://u:p%40ss@h/x", "db=postgres://u:***@h/x"),
            // Unencoded '/', '@' and '?' in the password (an invalid URL, still hidden).
            ("mysql://root:a/b@c?d@host/db", "mysql://root:***@host/db"),
            (
                "mongodb://u:pw@h1:1,h2:2/db?authSource=admin",
                "mongodb://u:***@h1:1,h2:2/db?authSource=admin",
            ),
            (
                "postgres://app@db/x?sslmode=require&password=hunter2",
                "postgres://app@db/x?sslmode=require&password=***",
            ),
            (
                "host=db PASSWORD=hunter2 dbname=x",
                "host=db PASSWORD=*** dbname=x",
            ),
            ("postgres://app@db/prod", "postgres://app@db/prod"),
            ("/var/lib/app.db", "/var/lib/app.db"),
            (
                "a postgres://x:1@h/a and redis://:2@r b",
                "a postgres://x:***@h/a and redis://:***@r b",
            ),
        ];
        for (given, want) in cases {
            assert_eq!(redact(given), want, "{given}");
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
