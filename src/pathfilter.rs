//! Which paths of a directory tree a files source covers: its `include`/`exclude` globs.
//! Shared by config (which checks the globs) and the files source (which applies them).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Which relative paths a files source covers. Patterns follow .gitignore habits: one
/// without a '/' matches a file or directory name at any depth ("*.tmp", "cache"); one
/// with a '/' is anchored at the root ("media/tmp/**"); `*` never crosses a '/', `**` does;
/// a pattern naming a directory covers everything under it.
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl PathFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<PathFilter, GlobError> {
        let include = if include.is_empty() {
            None
        } else {
            Some(build_set(include)?)
        };
        Ok(PathFilter {
            include,
            exclude: build_set(exclude)?,
        })
    }

    /// Validate one pattern (for config errors that name the key): the text is what the
    /// config problem says.
    pub fn check_glob(pattern: &str) -> Result<(), String> {
        expand(pattern).map(|_| ()).map_err(|e| e.to_string())
    }

    /// `rel` is '/'-separated and relative to the root.
    pub fn matches(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(rel)) && !self.exclude.is_match(rel)
    }
}

/// A pattern, or the set of them, that globset refuses.
#[derive(Debug, thiserror::Error)]
pub enum GlobError {
    #[error("empty glob pattern; remove it")]
    Empty,
    #[error("invalid glob \"{pattern}\": {}", .source.kind())]
    Invalid {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("invalid globs: {0}")]
    Set(#[source] globset::Error),
}

fn expand(pattern: &str) -> Result<Vec<Glob>, GlobError> {
    let p = pattern.trim();
    if p.is_empty() {
        return Err(GlobError::Empty);
    }
    let anchored = p.trim_start_matches('/').trim_end_matches('/');
    let bases: Vec<String> = if p.trim_end_matches('/').contains('/') {
        vec![anchored.to_string()]
    } else {
        vec![format!("**/{anchored}")]
    };
    let mut out = Vec::new();
    for base in bases {
        for text in [base.clone(), format!("{base}/**")] {
            let g = GlobBuilder::new(&text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|source| GlobError::Invalid {
                    pattern: pattern.to_string(),
                    source,
                })?;
            out.push(g);
        }
    }
    Ok(out)
}

fn build_set(patterns: &[String]) -> Result<GlobSet, GlobError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        for g in expand(p)? {
            b.add(g);
        }
    }
    b.build().map_err(GlobError::Set)
}

/// Patterns chosen one by one (`restore --path`), each in [`PathFilter`]'s syntax, that
/// say which of them a path matched: a pattern that matches nothing is named to the user.
#[derive(Debug, Clone)]
pub struct PathPatterns {
    set: GlobSet,
    /// The pattern each glob of `set` comes from.
    owner: Vec<usize>,
    patterns: Vec<String>,
}

impl PathPatterns {
    pub fn new(patterns: &[String]) -> Result<PathPatterns, GlobError> {
        let mut b = GlobSetBuilder::new();
        let mut owner = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            for g in expand(p)? {
                b.add(g);
                owner.push(i);
            }
        }
        Ok(PathPatterns {
            set: b.build().map_err(GlobError::Set)?,
            owner,
            patterns: patterns.to_vec(),
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// `rel` ('/'-separated, relative to the root) is matched by any pattern.
    pub fn is_match(&self, rel: &str) -> bool {
        self.set.is_match(rel)
    }

    /// Marks in `hit` (one flag per pattern) the patterns `rel` matches; whether any does.
    pub fn mark(&self, rel: &str, hit: &mut [bool]) -> bool {
        let found = self.set.matches(rel);
        for g in &found {
            if let Some(slot) = self.owner.get(*g).and_then(|i| hit.get_mut(*i)) {
                *slot = true;
            }
        }
        !found.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::PathPatterns;

    #[test]
    fn patterns_say_which_of_them_matched() {
        let p = PathPatterns::new(&["media".into(), "docs/*.txt".into(), "*.jpg".into()])
            .expect("patterns");
        let mut hit = [false; 3];
        assert!(p.mark("media/a/b.bin", &mut hit));
        assert!(p.mark("x/media", &mut hit));
        assert!(p.mark("deep/down/pic.jpg", &mut hit));
        assert!(!p.mark("docs/sub/a.txt", &mut hit));
        assert!(!p.mark("x/docs/a.txt", &mut hit));
        assert_eq!(hit, [true, false, true]);
        assert!(p.mark("docs/a.txt", &mut hit));
        assert_eq!(hit, [true, true, true]);
        assert!(p.is_match("media") && !p.is_match("mediate"));
        assert!(PathPatterns::new(&["a[".into()]).is_err());
    }
}
