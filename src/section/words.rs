//! What a serde error means in the config file's words, and "did you mean": shared by the
//! config reader (`crate::load`) and the sections engines and storages parse.

/// The prefix of the environment variables that set config keys.
pub const ENV_PREFIX: &str = "STOWAGE_";

/// serde's name for what a table (struct or map) deserializes from.
pub fn expects_table(expected: &str) -> bool {
    expected.starts_with("struct ") || expected == "a map"
}

pub fn describe_figment_error(e: &figment::Error) -> String {
    // Name the variable the user actually set, e.g. STOWAGE_JOBS__APP__COMPRESSION.
    let origin = if e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"))
    {
        format!(
            " (from environment variable {ENV_PREFIX}{})",
            e.path.join("__").to_uppercase()
        )
    } else {
        String::new()
    };
    describe_error(e, &origin)
}

/// One line for a serde error: the key, what is wrong, and how to fix it, then `origin`
/// (which environment variable set the value, if one did).
pub fn describe_error(e: &figment::Error, origin: &str) -> String {
    use figment::error::Kind;
    let key = e.path.iter().fold(String::new(), |mut acc, seg| {
        if seg.parse::<usize>().is_ok() {
            acc.push_str(&format!("[{seg}]"));
        } else {
            if !acc.is_empty() {
                acc.push('.');
            }
            acc.push_str(seg);
        }
        acc
    });
    let msg = match &e.kind {
        Kind::UnknownField(field, expected) => {
            let full = if key.is_empty() {
                field.clone()
            } else if key.ends_with(field.as_str()) {
                key.clone()
            } else {
                format!("{key}.{field}")
            };
            format!(
                "{full}: unknown key \"{field}\"{}; valid keys here: {}",
                suggest(field, expected),
                expected.join(", ")
            )
        }
        Kind::MissingField(field) => {
            let full = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            format!("{full}: required key is missing")
        }
        Kind::UnknownVariant(value, expected) => format!(
            "{}: unknown value \"{value}\"{}; expected one of: {}",
            if key.is_empty() { "(top level)" } else { &key },
            suggest(value, expected),
            expected.join(", ")
        ),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "{}: expected {}, found {}",
            if key.is_empty() { "(top level)" } else { &key },
            friendly_type(expected),
            friendly_actual(actual)
        ),
        Kind::Message(m) => {
            if key.is_empty() {
                m.clone()
            } else {
                format!("{key}: {m}")
            }
        }
        other => {
            if key.is_empty() {
                other.to_string()
            } else {
                format!("{key}: {other}")
            }
        }
    };
    format!("{msg}{origin}")
}

fn friendly_type(expected: &str) -> &str {
    match expected {
        "u32" | "u64" | "usize" => "a whole number",
        "i32" | "i64" => "an integer",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "an array",
        e if expects_table(e) => "a table",
        other => other,
    }
}

/// What was found instead, in the config file's words.
fn friendly_actual(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Bool(b) => format!("{b}"),
        Actual::Seq => "an array".to_string(),
        Actual::Map => "a table".to_string(),
        Actual::Unit | Actual::Option => "nothing".to_string(),
        other => other.to_string(),
    }
}

/// "did you mean" for a mistyped key or value.
pub fn suggest(got: &str, expected: &[&str]) -> String {
    closest(got, expected)
        .map(|e| format!(" (did you mean \"{e}\"?)"))
        .unwrap_or_default()
}

/// The expected name closest to `got`, if close enough to be a typo of it.
pub fn closest<'e>(got: &str, expected: &[&'e str]) -> Option<&'e str> {
    expected
        .iter()
        .map(|e| (strsim_distance(got, e), *e))
        .filter(|(d, e)| *d <= 2 && *d < e.len())
        .min()
        .map(|(_, e)| e)
}

/// Levenshtein distance; tiny inputs only (key names).
pub fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("scedule", &["schedule", "timezone"]),
            " (did you mean \"schedule\"?)"
        );
        assert_eq!(suggest("xyz", &["schedule"]), "");
    }
}
