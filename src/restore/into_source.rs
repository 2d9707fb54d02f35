//! Whether a restore target is the very database a backup was taken from. `restore --clean`
//! there drops the live database's objects and replaces them with the backup's: whatever was
//! written since is gone. The comparison errs towards "the same": a refusal costs one flag,
//! a wrong "different" costs the live data.

use std::path::Path;

use crate::engine::Database;

/// Where a connection URL leads: its servers (host and port, a missing port being the
/// scheme's default) and its database.
#[derive(Debug, PartialEq)]
struct Endpoint {
    servers: Vec<(String, Option<u16>)>,
    database: String,
    /// MariaDB folds database names on servers with lower_case_table_names.
    fold_case: bool,
}

/// The scheme's default port, and whether its database names may be folded.
fn scheme_defaults(scheme: &str) -> Option<(u16, bool)> {
    match scheme {
        "postgres" | "postgresql" => Some((5432, false)),
        "mysql" | "mariadb" => Some((3306, true)),
        "redis" | "rediss" => Some((6379, false)),
        "mongodb" | "mongodb+srv" => Some((27017, false)),
        _ => None,
    }
}

/// Names of this machine: a target given as `localhost` reaches the same server as the
/// source's `127.0.0.1`, and a PostgreSQL socket directory is on this machine too.
fn host_key(host: &str) -> String {
    let h = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let loopback = h == "localhost"
        || h.ends_with(".localhost")
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
        || h.starts_with('/')
        || h.starts_with('@')
        || h.is_empty();
    if loopback { "localhost".into() } else { h }
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// One host of a host list: "h", "h:5433", "[::1]:5433".
fn host_port(text: &str) -> (String, Option<u16>) {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (rest, None),
        },
        None => match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        },
    };
    (host_key(&decode(host)), port.and_then(|p| p.parse().ok()))
}

/// Parses a database URL of the engines that connect to a server; `None` for anything else
/// (a file, a command's target).
fn endpoint(text: &str) -> Option<Endpoint> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (default_port, fold_case) = scheme_defaults(&scheme)?;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| decode(u.split_once(':').map_or(u, |(name, _)| name)));
    let mut servers: Vec<(String, Option<u16>)> = hosts.split(',').map(host_port).collect();
    let mut database = decode(path.trim_end_matches('/'));
    let postgres = default_port == 5432;
    // libpq takes connection parameters from the query too, and they win over the URL's.
    if postgres {
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "host" | "hostaddr" => {
                    let ports: Vec<Option<u16>> = servers.iter().map(|s| s.1).collect();
                    servers = v
                        .split(',')
                        .enumerate()
                        .map(|(i, h)| (host_key(h), ports.get(i).copied().flatten()))
                        .collect();
                }
                "port" => {
                    let ports: Vec<&str> = v.split(',').collect();
                    for (i, s) in servers.iter_mut().enumerate() {
                        let p = ports.get(i).or(ports.first());
                        s.1 = p.and_then(|p| p.trim().parse().ok());
                    }
                }
                "dbname" => database = v.into_owned(),
                _ => {}
            }
        }
        // libpq's default database is the user's name.
        if database.is_empty() {
            database = user.clone().unwrap_or_default();
        }
    }
    for s in &mut servers {
        s.1 = s.1.or(Some(default_port));
    }
    Some(Endpoint {
        servers,
        database,
        fold_case,
    })
}

/// Whether two connection URLs lead to the same database: a server in common, and the same
/// database name (a MongoDB URL without one restores every database of the backup under
/// its own name, so it is the same as any).
pub fn same_database_url(own: &str, target: &str) -> bool {
    let (Some(a), Some(b)) = (endpoint(own), endpoint(target)) else {
        return own.trim() == target.trim();
    };
    let server = a.servers.iter().any(|s| b.servers.contains(s));
    let mongo_all = |e: &Endpoint| e.database.is_empty();
    let database = if a.fold_case {
        a.database.eq_ignore_ascii_case(&b.database)
    } else {
        a.database == b.database || mongo_all(&a) || mongo_all(&b)
    };
    server && database
}

/// The source's own database or file when `target` names it, as the message names it;
/// `None` when it is another one (or the engine cannot tell).
pub fn is_source(database: &dyn Database, target: &str) -> Option<String> {
    if let Some(own) = database.own_target() {
        return same_database_url(&own, target).then(|| crate::source::url::redact(&own));
    }
    // SQLite knows its file (the drill asks it the same question): the same file reached
    // through another path or a link is the same file. A directory of that name is not
    // a file a restore could replace, and a file that is gone holds nothing to lose.
    let scratch = database.scratch()?;
    let live_file = std::fs::metadata(Path::new(target)).is_ok_and(|m| m.is_file());
    (database.kind() == "sqlite" && live_file && scratch.is_own_database(target))
        .then(|| target.to_string())
}

#[cfg(test)]
mod tests {
    use super::same_database_url as same;

    #[test]
    fn the_same_database_is_recognised_however_it_is_written() {
        let own = "postgres://app@127.0.0.1/app";
        for target in [
            "postgres://app@127.0.0.1:5432/app",
            "postgres://other:secret@localhost/app",
            "postgresql://LOCALHOST:5432/app?sslmode=disable",
            "postgres://[::1]/app",
            "postgres://x@db.example/other?host=localhost&dbname=app",
            "postgres:///app?host=/var/run/postgresql",
        ] {
            assert!(same(own, target), "{target}");
        }
        for target in [
            "postgres://app@127.0.0.1:5433/app",
            "postgres://app@127.0.0.1/app_restored",
            "postgres://app@127.0.0.1/App",
            "postgres://app@db.example/app",
            "postgres://app@127.0.0.1/app?port=6000",
        ] {
            assert!(!same(own, target), "{target}");
        }
        // No database: libpq connects to the user's.
        assert!(same("postgres://app@h:5432/app", "postgres://app@h"));
        assert!(same("mysql://u@db/Shop", "mysql://root@DB:3306/shop"));
        assert!(!same("mysql://u@db/shop", "mysql://u@db:3307/shop"));
        assert!(same("mongodb://a:27017,b/app", "mongodb://b:27017/"));
        assert!(!same("mongodb://a/app", "mongodb://c/app"));
        assert!(same("mongodb://a/app", "mongodb://a/app?authSource=admin"));
    }
}
