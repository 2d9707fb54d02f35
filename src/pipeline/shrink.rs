//! The one definition of a dump that shrank: the classic silent failure (an empty database
//! dumped, a mount gone) produces a backup that succeeds. The run's summary and
//! notification, the status page, `/metrics` and `health` all judge by this, per source.

use crate::repo::manifest::{Manifest, SourceEntry};
use crate::units::human_bytes;

/// How many earlier backups the median is taken over.
pub const EARLIER: usize = 10;

/// The median of `earlier` (sizes of the backups before, newest first; up to [`EARLIER`]
/// count) when `newest` is under half of it. `None` when it is not, or with fewer than two
/// earlier sizes to compare with.
pub fn shrunk(newest: u64, earlier: &[u64]) -> Option<u64> {
    let mut sizes: Vec<u64> = earlier.iter().take(EARLIER).copied().collect();
    if sizes.len() < 2 {
        return None;
    }
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    (median > 0 && newest.saturating_mul(2) < median).then_some(median)
}

/// What one source of a backup produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceSize {
    pub name: String,
    /// A files source (its size is the tree's), not a dump.
    pub files: bool,
    /// Bytes the source produced (files: the size of the tree).
    pub raw: u64,
}

/// Per source, what a backup's sources produced.
pub fn sizes(entries: &[SourceEntry]) -> Vec<SourceSize> {
    entries
        .iter()
        .map(|e| SourceSize {
            name: e.name.clone(),
            files: e.files.is_some(),
            raw: e.files.as_ref().map_or(e.raw_size, |f| f.bytes),
        })
        .collect()
}

/// [`sizes`] of a manifest.
pub fn manifest_sizes(m: &Manifest) -> Vec<SourceSize> {
    sizes(&m.sources)
}

/// One sentence per source of `job`'s newest backup (`newest`) that shrank against the
/// same source in the backups before it (`earlier`, newest first).
pub fn warnings(job: &str, newest: &[SourceSize], earlier: &[Vec<SourceSize>]) -> Vec<String> {
    let mut out = Vec::new();
    for s in newest {
        let before: Vec<u64> = earlier
            .iter()
            .filter_map(|b| b.iter().find(|x| x.name == s.name).map(|x| x.raw))
            .take(EARLIER)
            .collect();
        let Some(median) = shrunk(s.raw, &before) else {
            continue;
        };
        let figures = format!(
            "{}, {}% of the usual {} (the median of the {} backups before it)",
            human_bytes(s.raw),
            s.raw * 100 / median,
            human_bytes(median),
            before.len()
        );
        out.push(if s.files {
            format!(
                "the files of {job}/{} are {figures}: check that the directory it reads is all there (a volume not mounted?)",
                s.name
            )
        } else {
            format!(
                "the dump of {job}/{} is {figures}: check that the database still holds its data",
                s.name
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(raw: u64) -> Vec<SourceSize> {
        vec![
            SourceSize {
                name: "db".into(),
                files: false,
                raw,
            },
            SourceSize {
                name: "f".into(),
                files: true,
                raw: 5000,
            },
        ]
    }

    #[test]
    fn under_half_the_median_of_the_earlier_backups() {
        assert_eq!(shrunk(400, &[1000, 1010, 990]), Some(1000));
        assert_eq!(
            shrunk(500, &[1000, 1010, 990]),
            None,
            "half is not under half"
        );
        assert_eq!(shrunk(10, &[1000]), None, "too little history");
        assert_eq!(shrunk(0, &[0, 0]), None, "nothing to shrink from");
        // Only the ten newest earlier backups count.
        let mut earlier = vec![100; 10];
        earlier.extend([10_000; 20]);
        assert_eq!(shrunk(60, &earlier), None);
    }

    #[test]
    fn per_source_and_in_a_sentence() {
        let w = warnings("app", &db(40 << 20), &[db(310 << 20), db(300 << 20)]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("the dump of app/db is 40.0 MiB, 12% of the usual 310.0 MiB")
                && w[0].ends_with("check that the database still holds its data"),
            "{w:?}"
        );
        // A source the earlier backups did not have is not compared.
        let new = vec![SourceSize {
            name: "new".into(),
            files: false,
            raw: 1,
        }];
        assert!(warnings("app", &new, &[db(310), db(300)]).is_empty());
        let files = vec![SourceSize {
            name: "f".into(),
            files: true,
            raw: 10,
        }];
        let w = warnings("app", &files, &[db(310), db(300)]);
        assert!(w[0].starts_with("the files of app/f are 10 B"), "{w:?}");
    }
}
