//! Naming an object that is not there: the closest names and how many there are, instead of
//! every name on one line (a schema has hundreds of tables).

/// Up to `n` of `candidates` closest to `wanted` (case-insensitive edit distance, a name
/// that contains `wanted` or is contained in it counts as close), closest first; ties in
/// the candidates' order.
pub fn closest<'c>(wanted: &str, candidates: &'c [String], n: usize) -> Vec<&'c str> {
    let want = wanted.to_lowercase();
    // "public.orders" is close to "orders": compare the unqualified parts too.
    let bare = |s: &str| -> String { s.rsplit('.').next().unwrap_or(s).to_string() };
    let mut scored: Vec<(usize, usize, &str)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cand = c.to_lowercase();
            let full = strsim::levenshtein(&want, &cand);
            let short = strsim::levenshtein(&bare(&want), &bare(&cand));
            let contains = (cand.contains(&want) || want.contains(&cand)) && !want.is_empty();
            let d = full.min(short).min(if contains { 1 } else { usize::MAX });
            (d, i, c.as_str())
        })
        // Too far to be a typo: a third of the name's length, at least 2.
        .filter(|(d, _, _)| *d <= (bare(&want).chars().count() / 3).max(2))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, _, c)| c).collect()
}

/// "closest: a, b; 212 tables in this backup" (or "none of its 212 tables is close").
pub fn closest_hint(wanted: &str, candidates: &[String], what: &str, place: &str) -> String {
    let near = closest(wanted, candidates, 5);
    let count = format!("{} {what} {place}", candidates.len());
    if near.is_empty() {
        format!("no close match; {count}")
    } else {
        format!("closest: {}; {count}", near.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn closest_names_first_and_far_ones_left_out() {
        let all = names(&[
            "public.orders",
            "public.order_items",
            "public.customers",
            "audit.log",
        ]);
        assert_eq!(closest("ordrs", &all, 5), vec!["public.orders"]);
        assert_eq!(
            closest("order", &all, 5),
            vec!["public.orders", "public.order_items"]
        );
        assert_eq!(closest("Customer", &all, 5), vec!["public.customers"]);
        assert!(closest("zzzzzzzz", &all, 5).is_empty());
        assert_eq!(closest("order", &all, 1), vec!["public.orders"]);
    }

    #[test]
    fn hint_counts_what_there_is() {
        let all = names(&["public.orders", "public.customers"]);
        assert_eq!(
            closest_hint("ordrs", &all, "tables", "in this backup"),
            "closest: public.orders; 2 tables in this backup"
        );
        assert_eq!(
            closest_hint("xyzxyzxyz", &all, "tables", "in this backup"),
            "no close match; 2 tables in this backup"
        );
    }
}
