//! `[[jobs.NAME.notify]]`: where a job reports its runs.

use lettre::message::Mailbox;

use crate::config::{DailyAt, Email, Notify, raw};
use crate::secret::Secret;
use crate::section::read_secret;

use raw::NotifyType::{Email as E, Healthchecks as H, Ntfy as N, Webhook as W};

pub(super) fn notify(key: &str, raw: &[raw::RawNotify], problems: &mut Vec<String>) -> Vec<Notify> {
    raw.iter()
        .enumerate()
        .filter_map(|(n, raw_n)| one(&format!("{key}.notify[{n}]"), raw_n, problems))
        .collect()
}

/// One entry; `None` when it cannot be used (reported).
fn one(nkey: &str, raw_n: &raw::RawNotify, problems: &mut Vec<String>) -> Option<Notify> {
    foreign_keys(nkey, raw_n, problems);
    let kind = raw_n.kind;
    let (url, email) = match kind {
        E => (
            Some(Secret::new(String::new())),
            email(nkey, raw_n, problems),
        ),
        _ => (notify_url(nkey, raw_n, problems), None),
    };
    let token = raw_n
        .token_file
        .as_ref()
        .filter(|_| kind == N)
        .and_then(|f| read_secret(f, &format!("{nkey}.token_file"), problems));
    let priority = match &raw_n.priority {
        Some(p) if kind == N => priority(nkey, p, problems),
        _ => 4,
    };
    let digest = raw_n
        .digest
        .as_deref()
        .filter(|_| kind == E || kind == N)
        .and_then(|d| daily_at(nkey, d, problems));
    if kind == E && email.is_none() {
        return None;
    }
    Some(Notify {
        kind,
        url: url?,
        format: raw_n.format.unwrap_or_default(),
        on_success: raw_n.on_success.unwrap_or(false),
        email,
        token,
        priority,
        digest,
    })
}

/// Keys set on an entry whose type does not take them.
fn foreign_keys(nkey: &str, raw_n: &raw::RawNotify, problems: &mut Vec<String>) {
    let kind = raw_n.kind;
    if kind == H && raw_n.on_success.is_some() {
        problems.push(format!(
            "{nkey}.on_success: healthchecks pings always report success (that is how the check knows the job is alive); remove the key"
        ));
    }
    let r = raw_n;
    let keys: [(&str, bool, &[raw::NotifyType]); 14] = [
        ("url", r.url.is_some(), &[W, H, N]),
        ("url_file", r.url_file.is_some(), &[W, H, N]),
        ("format", r.format.is_some(), &[W]),
        ("on_success", r.on_success.is_some(), &[W, H, E, N]),
        ("to", r.to.is_some(), &[E]),
        ("from", r.from.is_some(), &[E]),
        ("smtp_host", r.smtp_host.is_some(), &[E]),
        ("smtp_port", r.smtp_port.is_some(), &[E]),
        ("tls", r.tls.is_some(), &[E]),
        ("username", r.username.is_some(), &[E]),
        ("password_file", r.password_file.is_some(), &[E]),
        ("token_file", r.token_file.is_some(), &[N]),
        ("priority", r.priority.is_some(), &[N]),
        ("digest", r.digest.is_some(), &[E, N]),
    ];
    for (key, set, types) in keys {
        if set && !types.contains(&kind) {
            let valid: Vec<String> = types
                .iter()
                .map(|t| format!("type = \"{}\"", t.as_str()))
                .collect();
            problems.push(format!(
                "{nkey}.{key}: only valid for {}, not type = \"{}\"; remove it or change the type",
                valid.join(" or "),
                kind.as_str()
            ));
        }
    }
}

/// `type = "email"`: recipients, sender, server, login.
fn email(nkey: &str, r: &raw::RawNotify, problems: &mut Vec<String>) -> Option<Email> {
    let before = problems.len();
    let to: Vec<String> =
        r.to.as_ref()
            .map(raw::OneOrMany::to_vec)
            .unwrap_or_default();
    if to.is_empty() {
        problems.push(format!(
            "{nkey}.to: required for type = \"email\"; e.g. to = [\"ops@example.com\"]"
        ));
    }
    let to: Vec<Mailbox> = to
        .iter()
        .filter_map(|a| mailbox(&format!("{nkey}.to"), a, problems))
        .collect();
    let from = match &r.from {
        Some(f) => mailbox(&format!("{nkey}.from"), f, problems),
        None => {
            problems.push(format!(
                "{nkey}.from: required for type = \"email\"; e.g. from = \"stowage <backups@example.com>\" (an address your SMTP server lets you send from)"
            ));
            None
        }
    };
    let host = smtp_host(nkey, r.smtp_host.as_deref(), problems);
    let tls = r.tls.unwrap_or_default();
    let port = match r.smtp_port {
        None => tls.default_port(),
        Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).unwrap_or_else(|| {
            problems.push(format!(
                "{nkey}.smtp_port: {p} is not a TCP port; use 1-65535 (587 for STARTTLS, 465 for TLS, 25 for a plain relay), or leave it out"
            ));
            0
        }),
    };
    let password = r
        .password_file
        .as_ref()
        .and_then(|f| read_secret(f, &format!("{nkey}.password_file"), problems));
    match (&r.username, &r.password_file) {
        (Some(_), None) => problems.push(format!(
            "{nkey}.password_file: required with username; point it at a file holding the SMTP password (a Docker secret)"
        )),
        (None, Some(_)) => problems.push(format!(
            "{nkey}.username: required with password_file; set the SMTP login (often the full address)"
        )),
        _ => {}
    }
    if tls == raw::SmtpTls::None
        && r.password_file.is_some()
        && let Some(h) = &host
        && !is_loopback(h)
    {
        problems.push(format!(
            "{nkey}.tls: \"none\" would send the SMTP password in clear to {h:?}; use tls = \"starttls\" or \"tls\", or a relay on this host (localhost) without a password"
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(Email {
        to,
        from: from?,
        host: host?,
        port,
        tls,
        username: r.username.clone(),
        password,
    })
}

fn mailbox(key: &str, text: &str, problems: &mut Vec<String>) -> Option<Mailbox> {
    match text.trim().parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            problems.push(format!(
                "{key}: {text:?} is not an email address ({e}); write \"ops@example.com\" or \"Ops <ops@example.com>\""
            ));
            None
        }
    }
}

fn smtp_host(nkey: &str, host: Option<&str>, problems: &mut Vec<String>) -> Option<String> {
    let key = format!("{nkey}.smtp_host");
    match host.map(str::trim) {
        None | Some("") => {
            problems.push(format!(
                "{key}: required for type = \"email\"; e.g. smtp_host = \"smtp.gmail.com\", or \"localhost\" for a relay on this host"
            ));
            None
        }
        Some(h) if h.contains("://") || h.contains('/') || h.contains(' ') => {
            problems.push(format!(
                "{key}: {h:?} is not a host name; give the host alone (\"smtp.example.com\"), the port in smtp_port and the encryption in tls"
            ));
            None
        }
        Some(h) if h.parse::<std::net::Ipv6Addr>().is_err() && h.contains(':') => {
            problems.push(format!(
                "{key}: {h:?} has a port; give the host alone and the port in smtp_port"
            ));
            None
        }
        Some(h) => Some(h.to_string()),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// ntfy's priorities: 1 (min) … 5 (max/urgent), by number or name.
fn priority(nkey: &str, p: &raw::RawPriority, problems: &mut Vec<String>) -> u8 {
    let n = match p {
        raw::RawPriority::Number(n) => u8::try_from(*n).ok().filter(|n| (1..=5).contains(n)),
        raw::RawPriority::Name(s) => match s.to_ascii_lowercase().as_str() {
            "min" | "1" => Some(1),
            "low" | "2" => Some(2),
            "default" | "3" => Some(3),
            "high" | "4" => Some(4),
            "max" | "urgent" | "5" => Some(5),
            _ => None,
        },
    };
    n.unwrap_or_else(|| {
        let shown = match p {
            raw::RawPriority::Number(n) => n.to_string(),
            raw::RawPriority::Name(s) => format!("{s:?}"),
        };
        problems.push(format!(
            "{nkey}.priority: {shown} is not an ntfy priority; use 1-5 or \"min\", \"low\", \"default\", \"high\", \"urgent\""
        ));
        4
    })
}

/// "HH:MM", 24-hour clock.
fn daily_at(nkey: &str, text: &str, problems: &mut Vec<String>) -> Option<DailyAt> {
    let parsed = text.split_once(':').and_then(|(h, m)| {
        let ok = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !ok(h) || m.len() != 2 || !ok(m) {
            return None;
        }
        let (hour, minute) = (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?);
        (hour < 24 && minute < 60).then_some(DailyAt { hour, minute })
    });
    if parsed.is_none() {
        problems.push(format!(
            "{nkey}.digest: {text:?} is not a time of day; write \"HH:MM\" on a 24-hour clock, e.g. digest = \"08:00\" (in the job's timezone)"
        ));
    }
    parsed
}

/// `url` or `url_file` (not both), an http(s) URL either way.
fn notify_url(nkey: &str, raw_n: &raw::RawNotify, problems: &mut Vec<String>) -> Option<Secret> {
    let example = if raw_n.kind == N {
        "url = \"https://ntfy.sh/my-backups\""
    } else {
        "url = \"https://hc-ping.com/<uuid>\""
    };
    let url = match (&raw_n.url, &raw_n.url_file) {
        (Some(u), None) => Some(Secret::new(u.clone())),
        (None, Some(f)) => read_secret(f, &format!("{nkey}.url_file"), problems),
        (Some(_), Some(_)) => {
            problems.push(format!("{nkey}: give url or url_file, not both"));
            None
        }
        (None, None) => {
            problems.push(format!(
                "{nkey}.url: required; e.g. {example}, or url_file = \"/run/secrets/webhook\""
            ));
            None
        }
    };
    if let Some(u) = &url {
        match url::Url::parse(u.expose()) {
            Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
            _ => problems.push(format!(
                "{nkey}.url: not an http(s) URL{}",
                if raw_n.url.is_some() {
                    format!(" (\"{}\")", raw_n.url.as_deref().unwrap_or(""))
                } else {
                    String::new()
                }
            )),
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> raw::RawNotify {
        figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(toml),
        )
        .extract()
        .expect("raw notify")
    }

    fn check(toml: &str) -> (Option<Notify>, Vec<String>) {
        let mut problems = Vec::new();
        let n = one("jobs.app.notify[0]", &parse(toml), &mut problems);
        (n, problems)
    }

    fn only_problem(toml: &str) -> String {
        let (_, p) = check(toml);
        assert_eq!(p.len(), 1, "{p:?}");
        p[0].clone()
    }

    const EMAIL: &str = "type = \"email\"\nto = [\"ops@example.com\"]\nfrom = \"stowage <b@example.com>\"\nsmtp_host = \"smtp.example.com\"\n";

    #[test]
    fn email_defaults_to_starttls_on_587() {
        let (n, p) = check(EMAIL);
        assert!(p.is_empty(), "{p:?}");
        let e = n.and_then(|n| n.email).expect("email");
        assert_eq!((e.port, e.tls), (587, raw::SmtpTls::Starttls));
        let (n, _) = check(&format!("{EMAIL}tls = \"tls\"\n"));
        assert_eq!(n.and_then(|n| n.email).map(|e| e.port), Some(465));
    }

    #[test]
    fn email_problems_name_the_key_and_the_fix() {
        let p = only_problem("type = \"email\"\nfrom = \"a@b.c\"\nsmtp_host = \"h\"\n");
        assert!(p.starts_with("jobs.app.notify[0].to: required"), "{p}");
        let p = only_problem(&EMAIL.replace("ops@example.com", "ops at example"));
        assert!(
            p.starts_with("jobs.app.notify[0].to: \"ops at example\" is not an email address"),
            "{p}"
        );
        let p = only_problem(&format!("{EMAIL}smtp_port = 70000\n"));
        assert!(
            p.contains("smtp_port: 70000 is not a TCP port; use 1-65535"),
            "{p}"
        );
        let p = only_problem(&EMAIL.replace("smtp.example.com", "smtp.example.com:587"));
        assert!(
            p.contains("smtp_host: \"smtp.example.com:587\" has a port"),
            "{p}"
        );
        let p = only_problem(&format!("{EMAIL}username = \"u\"\n"));
        assert!(p.contains("password_file: required with username"), "{p}");
        let p = only_problem(&format!("{EMAIL}digest = \"8am\"\n"));
        assert!(p.contains("digest: \"8am\" is not a time of day"), "{p}");
    }

    #[test]
    fn a_clear_text_password_is_refused_off_this_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").expect("write");
        let login = format!(
            "username = \"u\"\npassword_file = {:?}\ntls = \"none\"\n",
            pw
        );
        let p = only_problem(&format!("{EMAIL}{login}"));
        assert!(
            p.contains("tls: \"none\" would send the SMTP password in clear"),
            "{p}"
        );
        let local = EMAIL.replace("smtp.example.com", "127.0.0.1");
        let (n, p) = check(&format!("{local}{login}"));
        assert!(p.is_empty(), "{p:?}");
        let e = n.and_then(|n| n.email).expect("email");
        assert_eq!(e.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(e.port, 25);
    }

    #[test]
    fn keys_of_another_type_say_which_type_they_belong_to() {
        let p = only_problem(&format!("{EMAIL}url = \"https://x\"\n"));
        assert_eq!(
            p,
            "jobs.app.notify[0].url: only valid for type = \"webhook\" or type = \"healthchecks\" or type = \"ntfy\", not type = \"email\"; remove it or change the type"
        );
        let p = only_problem("type = \"webhook\"\nurl = \"https://x\"\nsmtp_host = \"h\"\n");
        assert!(
            p.contains("smtp_host: only valid for type = \"email\""),
            "{p}"
        );
        let p = only_problem("type = \"ntfy\"\nurl = \"https://x\"\nformat = \"slack\"\n");
        assert!(
            p.contains("format: only valid for type = \"webhook\""),
            "{p}"
        );
    }

    #[test]
    fn ntfy_priority_by_number_or_name() {
        let (n, p) = check("type = \"ntfy\"\nurl = \"https://ntfy.sh/t\"\npriority = \"urgent\"\n");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(n.map(|n| n.priority), Some(5));
        let (n, _) = check("type = \"ntfy\"\nurl = \"https://ntfy.sh/t\"\n");
        assert_eq!(n.map(|n| n.priority), Some(4));
        let p = only_problem("type = \"ntfy\"\nurl = \"https://ntfy.sh/t\"\npriority = 9\n");
        assert!(p.contains("priority: 9 is not an ntfy priority"), "{p}");
        let p = only_problem("type = \"ntfy\"\n");
        assert!(
            p.contains("url: required; e.g. url = \"https://ntfy.sh/"),
            "{p}"
        );
    }

    #[test]
    fn a_wrong_type_says_what_is_expected() {
        let r = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(
                "type = \"email\"\nto = 3\n",
            ),
        )
        .extract::<raw::RawNotify>();
        let e = r.expect_err("to = 3").to_string();
        assert!(e.contains("an email address, or a list of them"), "{e}");
        let r = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(
                "type = \"ntfy\"\npriority = true\n",
            ),
        )
        .extract::<raw::RawNotify>();
        let e = r.expect_err("priority = true").to_string();
        assert!(e.contains("a priority 1-5"), "{e}");
        let (n, p) =
            check(&EMAIL.replace("to = [\"ops@example.com\"]", "to = \"ops@example.com\""));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(n.and_then(|n| n.email).map(|e| e.to.len()), Some(1));
    }

    #[test]
    fn unknown_keys_stay_errors() {
        let r = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(&format!(
                "{EMAIL}smtp_pasword = \"x\"\n"
            )),
        )
        .extract::<raw::RawNotify>();
        let e = r.expect_err("unknown key").to_string();
        assert!(e.contains("smtp_pasword"), "{e}");
    }
}
