//! `type = "local"` destinations: a directory, as mounted in the container.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Kind, Place, Storage};
use crate::section::{Section, serde_fields};

/// The `local` destination type.
pub struct Local;

/// `[destinations.NAME]` with `type = "local"`, as the file has it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    path: Option<PathBuf>,
}

/// A local destination, validated.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub path: PathBuf,
}

impl Kind for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn keys(&self) -> &'static [&'static str] {
        serde_fields::<RawLocal>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Place>> {
        let raw: RawLocal = section.parse()?;
        match &raw.path {
            None => section.problem(
                "path",
                "required for type = \"local\"; e.g. path = \"/var/backups/stowage\"",
            ),
            Some(p) if !p.is_absolute() => section.problem(
                "path",
                format!(
                    "{p:?} must be an absolute path (a mounted volume such as \"/var/backups/stowage\")"
                ),
            ),
            Some(_) => {}
        }
        Some(Arc::new(LocalConfig {
            path: raw.path.unwrap_or_default(),
        }))
    }
}

#[async_trait]
impl Place for LocalConfig {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        format!("local {}", self.path.display())
    }

    fn is_nearby(&self) -> bool {
        true
    }

    async fn open(&self) -> Box<dyn Storage> {
        Box::new(super::LocalStorage::new(self.path.clone()))
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::configure_section;

    #[test]
    fn a_path_and_nothing_of_other_types() {
        let d = configure_section("local", "path = \"/var/backups/stowage\"").expect("valid");
        assert_eq!(d.describe(), "local /var/backups/stowage");
        assert!(d.is_nearby());
        assert_eq!((d.storage_class(), d.object_lock(), d.retrieval()), (None, None, None));

        let e = configure_section("local", "path = \"backups\"\nbucket = \"b\"").expect_err("bad");
        assert_eq!(
            e,
            [
                "destinations.d.bucket: only valid for type = \"s3\"; remove it or change the type",
                "destinations.d.path: \"backups\" must be an absolute path (a mounted volume such as \"/var/backups/stowage\")",
            ]
        );
        let e = configure_section("local", "").expect_err("no path");
        assert_eq!(
            e,
            ["destinations.d.path: required for type = \"local\"; e.g. path = \"/var/backups/stowage\""]
        );
    }
}
