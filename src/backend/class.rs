//! S3 storage classes, and what each means for a backup: whether an object must be
//! retrieved before it can be read, and how long an object is billed at least (deleting it
//! earlier is charged as if it had stayed).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageClass {
    Standard,
    ReducedRedundancy,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
    Glacier,
    DeepArchive,
}

impl StorageClass {
    pub const ALL: [StorageClass; 8] = [
        StorageClass::Standard,
        StorageClass::ReducedRedundancy,
        StorageClass::StandardIa,
        StorageClass::OnezoneIa,
        StorageClass::IntelligentTiering,
        StorageClass::GlacierIr,
        StorageClass::Glacier,
        StorageClass::DeepArchive,
    ];

    /// S3's name, case-insensitively.
    pub fn parse(name: &str) -> Option<StorageClass> {
        StorageClass::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
        }
    }

    /// Objects that cannot be read before a RestoreObject (GLACIER_IR reads directly).
    pub fn needs_retrieval(self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }

    /// The minimum storage duration AWS bills, in days (0: none).
    pub fn min_storage_days(self) -> u32 {
        match self {
            StorageClass::StandardIa | StorageClass::OnezoneIa => 30,
            StorageClass::GlacierIr | StorageClass::Glacier => 90,
            StorageClass::DeepArchive => 180,
            StorageClass::Standard
            | StorageClass::ReducedRedundancy
            | StorageClass::IntelligentTiering => 0,
        }
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How fast (and at what price) an archived object is made readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetrievalTier {
    Expedited,
    #[default]
    Standard,
    Bulk,
}

impl RetrievalTier {
    pub const ALL: [RetrievalTier; 3] = [
        RetrievalTier::Expedited,
        RetrievalTier::Standard,
        RetrievalTier::Bulk,
    ];

    pub fn parse(name: &str) -> Option<RetrievalTier> {
        RetrievalTier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// S3's name (the `Tier` of a RestoreObject request).
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalTier::Expedited => "Expedited",
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Bulk => "Bulk",
        }
    }

    /// AWS's published typical delay for `class`; None where the tier does not exist for it
    /// (Expedited for DEEP_ARCHIVE).
    pub fn usual_delay(self, class: StorageClass) -> Option<&'static str> {
        match (class, self) {
            (StorageClass::DeepArchive, RetrievalTier::Expedited) => None,
            (StorageClass::DeepArchive, RetrievalTier::Standard) => Some("within 12 hours"),
            (StorageClass::DeepArchive, RetrievalTier::Bulk) => Some("within 48 hours"),
            (_, RetrievalTier::Expedited) => Some("1 to 5 minutes"),
            (_, RetrievalTier::Standard) => Some("3 to 5 hours"),
            (_, RetrievalTier::Bulk) => Some("5 to 12 hours"),
        }
    }
}

impl fmt::Display for RetrievalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `retrieval = { days = 3, tier = "Bulk" }` of an archive destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retrieval {
    /// How long a retrieved copy stays readable (and billed as STANDARD).
    pub days: u32,
    pub tier: RetrievalTier,
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval {
            days: 7,
            tier: RetrievalTier::Standard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for c in StorageClass::ALL {
            assert_eq!(StorageClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(
            StorageClass::parse("deep_archive"),
            Some(StorageClass::DeepArchive)
        );
        assert_eq!(StorageClass::parse("COLD"), None);
        let table = [
            (StorageClass::Standard, false, 0),
            (StorageClass::StandardIa, false, 30),
            (StorageClass::OnezoneIa, false, 30),
            (StorageClass::IntelligentTiering, false, 0),
            (StorageClass::GlacierIr, false, 90),
            (StorageClass::Glacier, true, 90),
            (StorageClass::DeepArchive, true, 180),
        ];
        for (class, retrieval, days) in table {
            assert_eq!(class.needs_retrieval(), retrieval, "{class}");
            assert_eq!(class.min_storage_days(), days, "{class}");
        }
    }

    #[test]
    fn tiers() {
        assert_eq!(RetrievalTier::parse("bulk"), Some(RetrievalTier::Bulk));
        assert_eq!(RetrievalTier::parse("fast"), None);
        assert_eq!(
            RetrievalTier::Expedited.usual_delay(StorageClass::DeepArchive),
            None
        );
        assert_eq!(
            RetrievalTier::Bulk.usual_delay(StorageClass::DeepArchive),
            Some("within 48 hours")
        );
        assert_eq!(
            RetrievalTier::Expedited.usual_delay(StorageClass::Glacier),
            Some("1 to 5 minutes")
        );
    }
}
