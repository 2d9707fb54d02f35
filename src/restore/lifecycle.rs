//! The retrieval lifecycle of a backup on an archive destination (GLACIER, DEEP_ARCHIVE),
//! per object a restore needs, with GlacierOnRails' names:
//!
//! - **exists**: a file already at the restore target with the backup's content; never
//!   retrieved;
//! - **available**: archived, no retrieval requested;
//! - **pending**: a retrieval was requested and is under way (hours);
//! - **ready**: readable now (retrieved, or in a class that needs no retrieval);
//! - **local**: already downloaded into `--download-to`.
//!
//! Manifests and file indexes are always STANDARD, so working this out downloads nothing
//! but indexes, and asks the store one HEAD per object.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Serialize;

use super::RestoreError;
use super::files;
use crate::repo::Repository;
use crate::repo::manifest::SourceEntry;
use crate::storage::class::Retrieval as RetrievalSettings;
use crate::storage::{Retrieval, Storage, cached};

/// HEAD requests in flight while surveying a backup's objects.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Exists,
    Available,
    Pending,
    Ready,
    Local,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Exists,
        State::Available,
        State::Pending,
        State::Ready,
        State::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Exists => "exists",
            State::Available => "available",
            State::Pending => "pending",
            State::Ready => "ready",
            State::Local => "local",
        }
    }

    /// Whether a restore can go ahead for this object.
    pub fn restorable(self) -> bool {
        matches!(self, State::Exists | State::Ready | State::Local)
    }
}

/// One thing a restore needs: a stored object (its key), or for `exists` a file (its path).
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    pub source: String,
    pub name: String,
    pub state: State,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Survey {
    pub objects: Vec<Object>,
}

impl Survey {
    pub fn count(&self, state: State) -> usize {
        self.objects.iter().filter(|o| o.state == state).count()
    }

    pub fn restorable(&self) -> bool {
        self.objects.iter().all(|o| o.state.restorable())
    }

    /// "exists 2, available 8, pending 0, ready 1, local 0"
    pub fn counts(&self) -> String {
        counts_of(self.objects.iter())
    }

    /// The counts of each source, in the order the sources were surveyed.
    pub fn per_source(&self) -> Vec<(String, String)> {
        let mut order: Vec<&str> = Vec::new();
        for o in &self.objects {
            if !order.contains(&o.source.as_str()) {
                order.push(&o.source);
            }
        }
        order
            .into_iter()
            .map(|s| {
                (
                    s.to_string(),
                    counts_of(self.objects.iter().filter(|o| o.source == s)),
                )
            })
            .collect()
    }
}

fn counts_of<'a>(objects: impl Iterator<Item = &'a Object>) -> String {
    let mut n: BTreeMap<State, usize> = BTreeMap::new();
    for o in objects {
        *n.entry(o.state).or_default() += 1;
    }
    State::ALL
        .iter()
        .map(|s| format!("{} {}", s.as_str(), n.get(s).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What restoring `sources` needs from `repo`, object by object. `files_dir` gives the
/// directory each files source would be restored into (None: the backup's own root).
pub async fn survey(
    repo: Repository<'_>,
    sources: &[&SourceEntry],
    packing: &crate::repo::packing::Packing,
    files_dir: &dyn Fn(&SourceEntry) -> Option<PathBuf>,
    download_to: Option<&Path>,
) -> Result<Survey, RestoreError> {
    let storage = repo.storage();
    let mut wanted: Vec<(String, String)> = Vec::new();
    let mut survey = Survey::default();
    for entry in sources {
        if entry.files.is_none() {
            wanted.push((entry.name.clone(), entry.key.clone()));
            continue;
        }
        let compared = files::compare(repo, entry, packing, files_dir(entry)).await?;
        let mut blobs = BTreeSet::new();
        for f in &compared.index.files {
            if compared.same.contains(&f.path) {
                survey.objects.push(Object {
                    source: entry.name.clone(),
                    name: f.path.clone(),
                    state: State::Exists,
                });
            } else if blobs.insert(f.blob.clone()) {
                wanted.push((entry.name.clone(), f.blob.clone()));
            }
        }
    }
    let states = futures::stream::iter(wanted)
        .map(|(source, key)| async move {
            let local = download_to
                .and_then(|d| cached::path_for(d, &key))
                .is_some_and(|p| p.is_file());
            let state = if local {
                State::Local
            } else {
                state_of(storage, &key).await?
            };
            Ok::<_, RestoreError>(Object {
                source,
                name: key,
                state,
            })
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for s in states {
        survey.objects.push(s?);
    }
    Ok(survey)
}

/// Request the retrieval of every `available` object (they become `pending`). Returns how
/// many were requested.
pub async fn request(
    storage: &dyn Storage,
    survey: &mut Survey,
    settings: RetrievalSettings,
) -> Result<usize, RestoreError> {
    let keys: Vec<String> = survey
        .objects
        .iter()
        .filter(|o| o.state == State::Available)
        .map(|o| o.name.clone())
        .collect();
    let progress = crate::progress::Progress::objects("retrieval requests", keys.len() as u64);
    let results = futures::stream::iter(keys)
        .map(|key| {
            let progress = progress.clone();
            async move {
                let r = storage
                    .request_retrieval(&key, settings.days, settings.tier)
                    .await
                    .map(|()| key);
                progress.add(1);
                r
            }
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut requested = 0;
    for r in results {
        let key = r?;
        if let Some(o) = survey.objects.iter_mut().find(|o| o.name == key) {
            o.state = State::Pending;
        }
        requested += 1;
    }
    Ok(requested)
}

/// Ask the store again about every object not yet restorable.
pub async fn refresh(storage: &dyn Storage, survey: &mut Survey) -> Result<(), RestoreError> {
    for o in survey
        .objects
        .iter_mut()
        .filter(|o| matches!(o.state, State::Available | State::Pending))
    {
        o.state = state_of(storage, &o.name).await?;
    }
    Ok(())
}

/// What the store says of `key`, in lifecycle terms.
async fn state_of(storage: &dyn Storage, key: &str) -> Result<State, RestoreError> {
    Ok(match storage.retrieval(key).await? {
        Retrieval::Readable | Retrieval::Retrieved => State::Ready,
        Retrieval::Archived => State::Available,
        Retrieval::Pending => State::Pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(source: &str, state: State) -> Object {
        Object {
            source: source.into(),
            name: format!("{source}-{}", state.as_str()),
            state,
        }
    }

    #[test]
    fn counts_and_restorable() {
        let s = Survey {
            objects: vec![
                obj("db", State::Pending),
                obj("uploads", State::Exists),
                obj("uploads", State::Exists),
                obj("uploads", State::Available),
            ],
        };
        assert_eq!(
            s.counts(),
            "exists 2, available 1, pending 1, ready 0, local 0"
        );
        assert_eq!(
            s.per_source(),
            [
                (
                    "db".to_string(),
                    "exists 0, available 0, pending 1, ready 0, local 0".to_string()
                ),
                (
                    "uploads".to_string(),
                    "exists 2, available 1, pending 0, ready 0, local 0".to_string()
                )
            ]
        );
        assert!(!s.restorable());
        let ok = Survey {
            objects: vec![
                obj("db", State::Ready),
                obj("uploads", State::Exists),
                obj("uploads", State::Local),
            ],
        };
        assert!(ok.restorable());
        assert!(Survey::default().restorable());
    }
}
