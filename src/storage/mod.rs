//! Destinations as dumb key/value stores. Keys are relative to the destination's root
//! (a directory, or a bucket + prefix) and use '/' separators. Everything that knows what
//! a backup is (layout, manifests, retention) lives above this trait, written once.
//!
//! The destination types register here (`STORAGES`, filled by the `storages!` list), one
//! folder each, owning its config section, its validation and its `Storage`; the interface
//! they implement is `crate::backend` (re-exported here, so `crate::storage::Storage` and the
//! like keep their paths).

pub mod cached;
pub mod dal;

pub use crate::backend::{
    Chunk, Failure, Kind, ObjectMeta, ObjectReader, OpenUpload, Place, Retrieval, Storage,
    StorageError, class,
};

use crate::config::Destination;

/// Declares each destination type's module (its folder) and lists it in `STORAGES`.
macro_rules! storages {
    ($($module:ident::$kind:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every destination type, in the order `type` values are listed in messages.
        pub static STORAGES: &[&dyn Kind] = &[$(&$module::$kind),*];
    };
}

// Adding a destination type: its folder `src/storage/<kind>/` and one line here.
storages! {
    local::Local,
    s3::S3,
    webdav::Webdav,
    azblob::Azblob,
    sftp::Sftp,
}

/// The destination type registered for a `type` value.
pub fn find(kind: &str) -> Option<&'static dyn Kind> {
    STORAGES.iter().copied().find(|k| k.kind() == kind)
}

/// Every registered destination type.
pub fn registered() -> &'static [&'static dyn Kind] {
    STORAGES
}

/// Every accepted `type` value of a destination, for messages.
pub fn kinds() -> Vec<&'static str> {
    STORAGES.iter().map(|k| k.kind()).collect()
}

/// Other destination types that take a key, for "only valid for type = …".
pub fn owners_of(field: &str) -> Vec<&'static str> {
    STORAGES
        .iter()
        .filter(|k| k.keys().contains(&field))
        .map(|k| k.kind())
        .collect()
}

/// Every key a destination's table may have, whatever its type: for "unknown key" under a
/// type that is not known.
pub fn table_keys() -> Vec<&'static str> {
    let mut keys = vec!["type", "retention"];
    for kind in STORAGES {
        for key in kind.keys() {
            if !keys.contains(key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// A destination's section given as TOML (without `type` and `retention`), configured by
/// the type `kind` names as the config reader would (for the types' unit tests, which
/// cannot name that reader above them): the settings, or every problem found.
#[cfg(test)]
pub(crate) fn configure_section(
    kind: &str,
    toml: &str,
) -> Result<std::sync::Arc<dyn Place>, Vec<String>> {
    let values: figment::value::Dict = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(toml),
    )
    .extract()
    .map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let valid = table_keys();
    let owners = owners_of;
    let mut section = crate::section::Section::new(
        "destinations.d".to_string(),
        "d".to_string(),
        values,
        &mut problems,
        &owners,
    );
    section.valid_keys = Some(&valid);
    section.go_on = true;
    let settings = find(kind).and_then(|k| k.configure(&mut section));
    section.drop_consequences();
    match settings {
        Some(s) if problems.is_empty() => Ok(s),
        _ => Err(problems),
    }
}

/// Why a key or path read from a manifest or an index is refused.
pub(crate) fn bad_part(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("it is empty");
    }
    if s.contains('\0') {
        return Some("it contains a NUL byte");
    }
    if s.starts_with('/') {
        return Some("it is absolute");
    }
    for part in s.split('/') {
        match part {
            "" => return Some("it has an empty part (\"//\" or a trailing \"/\")"),
            "." => return Some("it has a \".\" part"),
            ".." => return Some("it has a \"..\" part"),
            _ => {}
        }
    }
    None
}

/// A storage key as every storage takes it: relative to the destination's root, '/'
/// separated, with no part that could leave the root once a local destination turns it
/// into a path (no absolute key, no "..", no empty or "." part, no NUL). Keys come from
/// manifests and indexes, which whoever can write to a destination can forge.
pub fn check_key(key: &str) -> Result<(), String> {
    match bad_part(key) {
        None => Ok(()),
        Some(why) => Err(format!(
            "refusing object key \"{}\": {why}; keys are relative to the destination's root",
            key.escape_debug()
        )),
    }
}

/// One of a job's destinations, opened.
pub struct JobStorage<'a> {
    pub name: &'a str,
    pub destination: &'a Destination,
    pub storage: Box<dyn Storage>,
}

/// A job's destinations in the job's order, opened: the one place that turns a job's
/// destination names into storages (config validation guarantees every name is defined).
pub async fn open_job<'a>(
    config: &'a crate::config::Config,
    job: &'a crate::config::Job,
) -> Vec<JobStorage<'a>> {
    let mut out = Vec::new();
    for name in &job.destinations {
        if let Some(destination) = config.destinations.get(name) {
            out.push(JobStorage {
                name,
                destination,
                storage: open(destination).await,
            });
        }
    }
    out
}

/// Build the backend for a destination. S3 clients are built here, when a command needs
/// them, not at start-up: an idle daemon should not carry an HTTP stack.
pub async fn open(dest: &Destination) -> Box<dyn Storage> {
    dest.settings.open().await
}
