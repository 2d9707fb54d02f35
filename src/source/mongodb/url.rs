//! MongoDB connection strings with the password split off. `crate::source::url::DbUrl`
//! cannot hold them: a replica set is named by a host list
//! (`mongodb://a:27017,b:27017/app?replicaSet=rs0`), which no URL parser takes as a host.
//! Like `DbUrl`, the password is kept apart (it reaches the tools through a private option
//! file) and is never printed.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::secret::Secret;

pub const EXAMPLE: &str = "mongodb://user@host:27017/dbname";

/// Characters escaped in the user name of a rebuilt connection string (RFC 3986 userinfo).
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A query value additionally cannot hold the separators of the query.
const QUERY_VALUE: &AsciiSet = &USERINFO.add(b'&').add(b'=').add(b'+');

/// Characters a database name cannot hold (MongoDB's rules for Unix).
const BAD_DB_CHARS: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0'];

#[derive(Clone, PartialEq)]
pub struct MongoUrl {
    srv: bool,
    user: Option<String>,
    password: Option<Secret>,
    /// As written, e.g. "a:27017,b:27017".
    hosts: String,
    database: String,
    /// As written, without '?'.
    query: String,
}

impl MongoUrl {
    /// `password_override` (from `password_file`) wins over a password in the URL.
    pub fn parse(text: &str, password_override: Option<Secret>) -> Result<MongoUrl, String> {
        let (srv, rest) = if let Some(r) = text.strip_prefix("mongodb+srv://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("mongodb://") {
            (false, r)
        } else {
            let scheme = text.split_once("://").map_or(text, |(s, _)| s);
            return Err(format!(
                "\"{scheme}\" is not a MongoDB URL: expected mongodb:// or mongodb+srv://, e.g. \"{EXAMPLE}\""
            ));
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        // The user name and password cannot hold a raw '@' (drivers require %40): the last
        // '@' ends them.
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
            return Err(format!("the URL names no host: expected \"{EXAMPLE}\""));
        }
        if hosts.chars().any(char::is_whitespace) {
            return Err(format!("the host list \"{hosts}\" holds a space"));
        }
        if srv && (hosts.contains(',') || hosts.contains(':')) {
            return Err(
                "a mongodb+srv:// URL names one host name without a port (the DNS SRV record lists the servers)"
                    .to_string(),
            );
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8().map(|c| c.into_owned());
        let (user, in_url) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (name, pw) = match u.split_once(':') {
                    Some((n, p)) => (n, Some(p)),
                    None => (u, None),
                };
                let name = decode(name)
                    .map_err(|_| "the user name is not valid percent-encoded UTF-8".to_string())?;
                if name.is_empty() {
                    return Err("the URL has an '@' but no user name".to_string());
                }
                let pw = match pw {
                    Some(p) => Some(Secret::new(decode(p).map_err(|_| {
                        "the password is not valid percent-encoded UTF-8".to_string()
                    })?)),
                    None => None,
                };
                (Some(name), pw)
            }
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, q),
            None => (tail, ""),
        };
        let database = decode(path.strip_prefix('/').unwrap_or(path))
            .map_err(|_| "the database name is not valid percent-encoded UTF-8".to_string())?;
        if let Some(c) = database.chars().find(|c| BAD_DB_CHARS.contains(c)) {
            return Err(format!(
                "database name \"{database}\" holds '{c}', which MongoDB does not allow in a database name"
            ));
        }
        if database.len() > 63 {
            return Err(format!(
                "database name \"{database}\" is longer than MongoDB's 63 bytes"
            ));
        }
        let url = MongoUrl {
            srv,
            user,
            password: password_override.or(in_url),
            hosts: hosts.to_string(),
            database,
            query: query.to_string(),
        };
        if url.option("authSource").is_some_and(|s| s.is_empty()) {
            return Err("authSource is empty".to_string());
        }
        Ok(url)
    }

    /// The database in the path; empty means every database.
    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    pub fn with_password(mut self, password: Option<Secret>) -> MongoUrl {
        self.password = password;
        self
    }

    /// Whether two URLs reach the same servers as the same user.
    pub fn same_login(&self, other: &MongoUrl) -> bool {
        self.srv == other.srv
            && self.hosts.eq_ignore_ascii_case(&other.hosts)
            && self.user == other.user
            && self.auth_source() == other.auth_source()
    }

    /// A connection option (names are case-insensitive), percent-decoded.
    pub fn option(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned())
    }

    /// The database the user authenticates against: `authSource`, else the path's
    /// database, else "admin" (the connection string specification's order).
    pub fn auth_source(&self) -> String {
        self.option("authSource").unwrap_or_else(|| {
            if self.database.is_empty() {
                "admin".to_string()
            } else {
                self.database.clone()
            }
        })
    }

    /// Whether the authentication mechanism needs a password (x.509, Kerberos, AWS and
    /// OIDC take their credentials elsewhere).
    pub fn needs_password(&self) -> bool {
        self.user.is_some()
            && !self.option("authMechanism").is_some_and(|m| {
                ["MONGODB-X509", "GSSAPI", "MONGODB-AWS", "MONGODB-OIDC"]
                    .iter()
                    .any(|x| m.eq_ignore_ascii_case(x))
            })
    }

    /// The connection string without the password, for `--uri`.
    pub fn uri(&self) -> String {
        self.build(true, &self.database, &self.query)
    }

    /// The connection string without the password nor a database, with the database the
    /// user authenticates against made explicit, so that removing the path changes nothing
    /// but which namespaces the tools touch.
    pub fn server_uri(&self) -> String {
        let mut query = self.query.clone();
        if self.user.is_some() && self.option("authSource").is_none() && !self.database.is_empty() {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("authSource=");
            query.push_str(&utf8_percent_encode(&self.database, QUERY_VALUE).to_string());
        }
        self.build(true, "", &query)
    }

    fn build(&self, with_user: bool, database: &str, query: &str) -> String {
        let mut s = String::from(if self.srv {
            "mongodb+srv://"
        } else {
            "mongodb://"
        });
        if with_user && let Some(u) = &self.user {
            s.push_str(&utf8_percent_encode(u, USERINFO).to_string());
            s.push('@');
        }
        s.push_str(&self.hosts);
        s.push('/');
        s.push_str(&utf8_percent_encode(database, USERINFO).to_string());
        if !query.is_empty() {
            s.push('?');
            s.push_str(query);
        }
        s
    }
}

impl fmt::Display for MongoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

impl fmt::Debug for MongoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MongoUrl({})", self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_off_the_password() {
        let u = MongoUrl::parse(
            "mongodb://app:s%40cret@db:27017/prod?authSource=admin",
            None,
        )
        .expect("valid");
        assert_eq!(u.uri(), "mongodb://app@db:27017/prod?authSource=admin");
        assert_eq!(u.password().map(Secret::expose), Some("s@cret"));
        assert!(!format!("{u} {u:?}").contains("cret"));
        assert_eq!(u.database(), "prod");
        assert_eq!(u.user(), Some("app"));
        assert_eq!(u.auth_source(), "admin");
        assert!(u.needs_password());
    }

    #[test]
    fn takes_replica_sets_and_srv() {
        let u = MongoUrl::parse("mongodb://a:27017,b:27018/app?replicaSet=rs0", None)
            .expect("host list");
        assert_eq!(u.uri(), "mongodb://a:27017,b:27018/app?replicaSet=rs0");
        assert_eq!(u.server_uri(), "mongodb://a:27017,b:27018/?replicaSet=rs0");
        let u = MongoUrl::parse("mongodb+srv://u:p@cluster0.example.net/app", None).expect("srv");
        assert_eq!(u.uri(), "mongodb+srv://u@cluster0.example.net/app");
        let e = MongoUrl::parse("mongodb+srv://a:27017/app", None).expect_err("srv port");
        assert!(e.contains("one host name without a port"), "{e}");
    }

    #[test]
    fn database_is_optional() {
        for text in [
            "mongodb://db:27017",
            "mongodb://db:27017/",
            "mongodb://db/?tls=true",
        ] {
            let u = MongoUrl::parse(text, None).expect(text);
            assert_eq!(u.database(), "", "{text}");
            assert_eq!(u.auth_source(), "admin");
        }
        assert_eq!(
            MongoUrl::parse("mongodb://db?tls=true", None)
                .expect("no slash")
                .uri(),
            "mongodb://db/?tls=true"
        );
    }

    #[test]
    fn server_uri_keeps_the_login_database() {
        let u = MongoUrl::parse("mongodb://app:pw@db/shop", None).expect("valid");
        assert_eq!(u.server_uri(), "mongodb://app@db/?authSource=shop");
        let u = MongoUrl::parse("mongodb://app@db/shop?authSource=admin&tls=true", None)
            .expect("valid");
        assert_eq!(
            u.server_uri(),
            "mongodb://app@db/?authSource=admin&tls=true"
        );
        let u = MongoUrl::parse("mongodb://db/shop", None).expect("no user");
        assert_eq!(u.server_uri(), "mongodb://db/");
    }

    #[test]
    fn password_file_wins_and_users_are_reencoded() {
        let u = MongoUrl::parse(
            "mongodb://a%40b%3Ac:old@db/x",
            Some(Secret::new("new".into())),
        )
        .expect("valid");
        assert_eq!(u.user(), Some("a@b:c"));
        assert_eq!(u.password().map(Secret::expose), Some("new"));
        assert_eq!(u.uri(), "mongodb://a%40b%3Ac@db/x");
    }

    #[test]
    fn mechanisms_without_passwords() {
        let u = MongoUrl::parse(
            "mongodb://CN=client@db/?authMechanism=MONGODB-X509&tls=true",
            None,
        )
        .expect("valid");
        assert!(!u.needs_password());
        assert!(
            !MongoUrl::parse("mongodb://db/x", None)
                .expect("valid")
                .needs_password()
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let e = MongoUrl::parse("postgres://db/x", None).expect_err("scheme");
        assert!(e.contains("\"postgres\" is not a MongoDB URL"), "{e}");
        let e = MongoUrl::parse("mongodb:///x", None).expect_err("no host");
        assert!(e.contains("names no host"), "{e}");
        let e = MongoUrl::parse("mongodb://a,,b/x", None).expect_err("empty host");
        assert!(e.contains("names no host"), "{e}");
        let e = MongoUrl::parse("mongodb://db/a.b", None).expect_err("dot");
        assert!(e.contains("holds '.'"), "{e}");
        let e = MongoUrl::parse("mongodb://@db/x", None).expect_err("empty user");
        assert!(e.contains("no user name"), "{e}");
    }

    #[test]
    fn same_login() {
        let a = MongoUrl::parse("mongodb://app@db:27017/shop", None).expect("a");
        let b = MongoUrl::parse("mongodb://app@DB:27017/shop", None).expect("b");
        let c = MongoUrl::parse("mongodb://app@db:27017/other", None).expect("c");
        let d = MongoUrl::parse("mongodb://app@db:27017/other?authSource=shop", None).expect("d");
        assert!(a.same_login(&b));
        assert!(
            !a.same_login(&c),
            "another database is another login database"
        );
        assert!(a.same_login(&d));
    }
}
