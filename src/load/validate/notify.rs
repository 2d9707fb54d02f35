//! `[[jobs.NAME.notify]]`: where a job reports its runs.

use crate::config::{Notify, raw};
use crate::secret::Secret;
use crate::section::read_secret;

pub(super) fn notify(key: &str, raw: &[raw::RawNotify], problems: &mut Vec<String>) -> Vec<Notify> {
    raw.iter()
        .enumerate()
        .filter_map(|(n, raw_n)| one(&format!("{key}.notify[{n}]"), raw_n, problems))
        .collect()
}

/// One entry; `None` when it has no usable URL (reported).
fn one(nkey: &str, raw_n: &raw::RawNotify, problems: &mut Vec<String>) -> Option<Notify> {
    let url = notify_url(nkey, raw_n, problems);
    if raw_n.kind == raw::NotifyType::Healthchecks {
        if raw_n.format.is_some() {
            problems.push(format!(
                "{nkey}.format: only valid for type = \"webhook\"; remove it or change the type"
            ));
        }
        if raw_n.on_success.is_some() {
            problems.push(format!(
                "{nkey}.on_success: healthchecks pings always report success (that is how the check knows the job is alive); remove the key"
            ));
        }
    }
    Some(Notify {
        kind: raw_n.kind,
        url: url?,
        format: raw_n.format.unwrap_or_default(),
        on_success: raw_n.on_success.unwrap_or(false),
    })
}

/// `url` or `url_file` (not both), an http(s) URL either way.
fn notify_url(nkey: &str, raw_n: &raw::RawNotify, problems: &mut Vec<String>) -> Option<Secret> {
    let url = match (&raw_n.url, &raw_n.url_file) {
        (Some(u), None) => Some(Secret::new(u.clone())),
        (None, Some(f)) => read_secret(f, &format!("{nkey}.url_file"), problems),
        (Some(_), Some(_)) => {
            problems.push(format!("{nkey}: give url or url_file, not both"));
            None
        }
        (None, None) => {
            problems.push(format!(
                "{nkey}.url: required; e.g. url = \"https://hc-ping.com/<uuid>\", or url_file = \"/run/secrets/webhook\""
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
