//! The one place tests build a job's config and its opened destinations: config loading
//! and the destination types are being moved, and only this file should need adapting.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, SourceConfig};
use crate::storage::JobStorage;

use super::{FakeDb, MemoryStorage};

/// The job every config of [`configure`] has.
pub(crate) const JOB: &str = "app";

/// A config, through the real loader, with job [`JOB`] backing up `sources` to
/// `destinations` (a name, and the keys of its `retention` table; none keeps all). The
/// destinations are local, but nothing opens them: [`open`] hands a run memory storages
/// in their place. The engine registry is a fixed list, so each source is configured as a
/// `command` source of its name and then replaced, in the loaded job, by the fake.
pub(crate) fn configure(
    dir: &Path,
    destinations: &[(&str, Option<&str>)],
    sources: &[FakeDb],
) -> Config {
    use crate::engine::Database;
    let mut toml = String::new();
    for (name, retention) in destinations {
        let retention = retention.map_or(String::new(), |r| format!("retention = {{ {r} }}\n"));
        toml.push_str(&format!(
            "[destinations.{name}]\ntype = \"local\"\npath = {:?}\n{retention}\n",
            dir.join(name)
        ));
    }
    let names: Vec<String> = destinations.iter().map(|(n, _)| format!("{n:?}")).collect();
    toml.push_str(&format!(
        "[jobs.{JOB}]\nschedule = \"@daily\"\ndestinations = [{}]\n",
        names.join(", ")
    ));
    for db in sources {
        toml.push_str(&format!(
            "\n[[jobs.{JOB}.sources]]\ntype = \"command\"\nname = {:?}\ndump = [\"true\"]\n",
            db.name()
        ));
    }
    let path = dir.join("stowage.toml");
    std::fs::write(&path, toml).expect("write the config");
    let mut config = crate::load::load_with_env(&path, false).expect("a valid config");
    let job = config.jobs.get_mut(JOB).expect("the job");
    job.sources = sources
        .iter()
        .map(|db| SourceConfig::Database(Arc::new(db.clone())))
        .collect();
    config
}

/// `toml`, loaded through the real loader from a file of its own; it must be valid.
pub(crate) fn load_toml(toml: &str) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, toml).expect("write the config");
    crate::load::load_with_env(&path, false).expect("a valid config")
}

/// The job's destinations, opened, each backed by its memory storage (in this order).
pub(crate) fn open<'c>(
    config: &'c Config,
    stores: &'c [(String, MemoryStorage)],
) -> Vec<JobStorage<'c>> {
    stores
        .iter()
        .map(|(name, st)| JobStorage {
            name,
            destination: &config.destinations[name],
            storage: Box::new(st.clone()),
        })
        .collect()
}
