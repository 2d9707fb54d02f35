//! `restore --path`: every pattern must match a path of the backup, checked by one pass
//! over its file index before anything is touched; a pattern that matches nothing is named
//! with the paths nearest to it, so a typo is seen at once instead of restoring nothing.

use crate::pathfilter::PathPatterns;
use crate::repo::Repository;
use crate::repo::manifest::SourceEntry;
use crate::repo::packing::Packing;

use super::RestoreError;

/// How many near paths a pattern that matched nothing is shown with.
const NEAR: usize = 3;
/// Below this similarity (Jaro-Winkler), a path is not offered as what was meant.
const SIMILAR: f64 = 0.75;

/// The paths most like one pattern, best first: a path or one of its directories.
struct Nearest {
    /// The pattern without its anchoring slashes, and whether it is compared with whole
    /// paths (it has a '/') or with names.
    wanted: String,
    anchored: bool,
    best: Vec<(f64, String)>,
    /// The directory of the last path offered: its directories were scored already.
    last_dir: String,
}

impl Nearest {
    fn new(pattern: &str) -> Nearest {
        let wanted = pattern.trim().trim_matches('/').to_string();
        Nearest {
            anchored: wanted.contains('/'),
            wanted,
            best: Vec::new(),
            last_dir: String::new(),
        }
    }

    /// Scores `path` and its directories.
    fn offer(&mut self, path: &str) {
        let dir = path.rfind('/').map_or("", |i| &path[..i]);
        let seen = dir == self.last_dir;
        if !seen {
            self.last_dir = dir.to_string();
        }
        let mut end = path.len();
        loop {
            let candidate = &path[..end];
            if seen && end < path.len() {
                break;
            }
            let compared = if self.anchored {
                candidate
            } else {
                candidate.rsplit('/').next().unwrap_or(candidate)
            };
            let score = strsim::jaro_winkler(&self.wanted, compared);
            if score >= SIMILAR {
                self.keep(score, candidate);
            }
            match candidate.rfind('/') {
                Some(i) => end = i,
                None => break,
            }
        }
    }

    fn keep(&mut self, score: f64, candidate: &str) {
        if self.best.iter().any(|(_, c)| c == candidate) {
            return;
        }
        if self.best.len() == NEAR && self.best.last().is_some_and(|(s, _)| *s >= score) {
            return;
        }
        self.best.push((score, candidate.to_string()));
        self.best.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.best.truncate(NEAR);
    }
}

/// Fails, naming each pattern that matches no path of `entry`'s backup (with the nearest
/// paths), unless every one matches something.
pub(super) async fn check_patterns(
    repo: Repository<'_>,
    entry: &SourceEntry,
    packing: &Packing,
    paths: &PathPatterns,
) -> Result<(), RestoreError> {
    let name = entry.name.as_str();
    let (_, mut entries) = repo
        .open_index(entry, packing)
        .await
        .map_err(|e| super::files::index_error(name, e))?;
    let mut hit = vec![false; paths.patterns().len()];
    let mut near: Vec<Nearest> = paths.patterns().iter().map(|p| Nearest::new(p)).collect();
    while let Some(f) = entries
        .next()
        .await
        .map_err(|e| super::files::index_error(name, e))?
    {
        paths.mark(&f.path, &mut hit);
        for (n, _) in near.iter_mut().zip(&hit).filter(|(_, h)| !**h) {
            n.offer(&f.path);
        }
    }
    let unmatched: Vec<String> = paths
        .patterns()
        .iter()
        .zip(&hit)
        .zip(&near)
        .filter(|((_, h), _)| !**h)
        .map(|((p, _), n)| {
            let close: Vec<&str> = n.best.iter().map(|(_, c)| c.as_str()).collect();
            if close.is_empty() {
                format!("--path \"{}\" matches nothing", p.escape_debug())
            } else {
                format!(
                    "--path \"{}\" matches nothing (near: {})",
                    p.escape_debug(),
                    close.join(", ")
                )
            }
        })
        .collect();
    if unmatched.is_empty() {
        return Ok(());
    }
    Err(RestoreError::Usage(format!(
        "files {name}: {} in this backup; nothing was restored; a pattern without '/' matches a name at any depth (\"*.jpg\", \"invoices\"), one with '/' a path from the source's root (\"media/2026/**\")",
        unmatched.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::Nearest;

    #[test]
    fn the_nearest_paths_are_offered_best_first() {
        let mut n = Nearest::new("invoice");
        for p in [
            "docs/invoices/1.pdf",
            "docs/invoices/2.pdf",
            "media/a.jpg",
            "notes.txt",
        ] {
            n.offer(p);
        }
        let got: Vec<&str> = n.best.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(got.first(), Some(&"docs/invoices"), "{got:?}");
        assert!(!got.contains(&"media/a.jpg"), "{got:?}");
        let mut n = Nearest::new("/media/2025");
        n.offer("media/2026/a.jpg");
        assert_eq!(n.best.first().map(|b| b.1.as_str()), Some("media/2026"));
    }
}
