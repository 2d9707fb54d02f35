//! `encryption = { … }` of a job: recipients (inline and from a file) or a passphrase, and
//! the optional identity and blob key. Reads the files it names.

use std::path::Path;
use std::str::FromStr;

use crate::config::{SourceConfig, raw};
use crate::crypt::{Encryption, Keys, Sealer, recipients_in};
use crate::secret::Secret;

use crate::section::read_secret;

/// `readers`: what the daemon reads the job's backups back for (heal, drill,
/// verify.read_data): an identity that cannot read them is then an error, not a warning.
pub(super) fn encryption_config(
    key: &str,
    raw: &raw::RawEncryption,
    sources: &[SourceConfig],
    readers: &[&str],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Encryption> {
    let job = key.strip_prefix("jobs.").unwrap_or(key);
    let key = format!("{key}.encryption");
    let mark = problems.len();
    let listed = recipients(&key, raw, problems);
    let passphrase = raw
        .passphrase_file
        .as_ref()
        .and_then(|f| read_secret(f, &format!("{key}.passphrase_file"), problems));
    let sealer = sealer(&key, raw, &listed, passphrase.as_ref(), problems);
    let keys = keys(&key, raw, passphrase.as_ref(), problems);
    let blob_key = raw
        .blob_key_file
        .as_ref()
        .and_then(|f| read_secret(f, &format!("{key}.blob_key_file"), problems));
    if problems.len() > mark {
        return None;
    }
    if let (Some(keys), Some(file)) = (&keys, &raw.identity_file)
        && let Err(e) = identity_reads(&key, job, file, &listed, keys)
    {
        if readers.is_empty() {
            warnings.push(format!(
                "{e}; restore, download and wal-fetch without --identity would fail"
            ));
        } else {
            problems.push(format!(
                "{e}; the job's {} would fail to read its backups",
                readers.join(", ")
            ));
        }
    }
    if raw.passphrase_file.is_some() && sources.iter().any(|s| matches!(s, SourceConfig::Files(_)))
    {
        warnings.push(format!(
            "{key}: a passphrase costs about a second of scrypt per object, and a files source stores one object per new file; use recipients for jobs with files"
        ));
    }
    Some(Encryption::new(sealer?, keys, blob_key))
}

/// `recipients` and those of `recipients_file`, each with the key it came from.
fn recipients(
    key: &str,
    raw: &raw::RawEncryption,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = raw
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{key}.recipients[{i}]"), r.trim().to_string()))
        .collect();
    if let Some(f) = &raw.recipients_file {
        let fkey = format!("{key}.recipients_file");
        if let Some(text) = read_secret(f, &fkey, problems) {
            let found = recipients_in(text.expose(), &format!("{fkey} ({})", f.display()));
            if found.is_empty() {
                problems.push(format!(
                    "{fkey}: {} holds no recipient (age1… lines, as age-keygen -y prints them)",
                    f.display()
                ));
            }
            listed.extend(found);
        }
    }
    listed
}

/// What encrypts: the recipients or the passphrase, never both.
fn sealer(
    key: &str,
    raw: &raw::RawEncryption,
    listed: &[(String, String)],
    passphrase: Option<&Secret>,
    problems: &mut Vec<String>,
) -> Option<Sealer> {
    match (listed.is_empty(), raw.passphrase_file.is_some()) {
        (false, true) => {
            problems.push(format!(
                "{key}: give recipients (or recipients_file) or passphrase_file, not both; age cannot mix a passphrase with recipients"
            ));
            None
        }
        (true, false) => {
            if raw.recipients_file.is_none() {
                problems.push(format!(
                    "{key}: no recipient; give recipients = [\"age1…\"] (age-keygen -y key.txt prints it), recipients_file, or passphrase_file"
                ));
            }
            None
        }
        (false, false) => Sealer::recipients(listed)
            .map_err(|e| problems.extend(e))
            .ok(),
        (true, true) => passphrase.map(|p| Sealer::passphrase(p.expose())),
    }
}

/// What decrypts, if the daemon is given it: the identity file, or the passphrase.
fn keys(
    key: &str,
    raw: &raw::RawEncryption,
    passphrase: Option<&Secret>,
    problems: &mut Vec<String>,
) -> Option<Keys> {
    match (&raw.identity_file, &raw.passphrase_file) {
        (Some(f), _) => {
            let ikey = format!("{key}.identity_file");
            read_secret(f, &ikey, problems).and_then(|text| {
                Keys::identity_file(text.expose(), &format!("{ikey} ({})", f.display()))
                    .map_err(|e| problems.push(e))
                    .ok()
            })
        }
        (None, Some(f)) => passphrase.map(|p| {
            Keys::passphrase(
                p.expose(),
                &format!("{key}.passphrase_file ({})", f.display()),
            )
        }),
        (None, None) => None,
    }
}

/// Whether the identity file reads what the job writes: an X25519 identity reads only what
/// was encrypted to its own public key, so one of its identities must be one of the
/// recipients; what a passphrase encrypted only the passphrase reads. `Err`: why not.
fn identity_reads(
    key: &str,
    job: &str,
    file: &Path,
    listed: &[(String, String)],
    keys: &Keys,
) -> Result<(), String> {
    let Keys::Identities { ids, .. } = keys else {
        return Ok(());
    };
    let ikey = format!("{key}.identity_file");
    if listed.is_empty() {
        return Err(format!(
            "{ikey}: job \"{job}\" encrypts with passphrase_file, and an age identity ({}) cannot read what a passphrase encrypted; remove identity_file (the passphrase reads the backups)",
            file.display()
        ));
    }
    let public: Vec<String> = ids.iter().map(|i| i.to_public().to_string()).collect();
    let recipients: Vec<(&str, String)> = listed
        .iter()
        .filter_map(|(what, text)| {
            let r = age::x25519::Recipient::from_str(text).ok()?;
            Some((what.strip_prefix(key).unwrap_or(what), r.to_string()))
        })
        .collect();
    if recipients.iter().any(|(_, r)| public.contains(r)) {
        return Ok(());
    }
    Err(format!(
        "{ikey}: {} holds no key of job \"{job}\": its public key{} {} {} none of the job's recipients ({}); give the identity file of one of them (age-keygen -y FILE prints a file's public key), or add {} to recipients",
        file.display(),
        if public.len() > 1 { "s" } else { "" },
        public.join(", "),
        if public.len() > 1 { "are" } else { "is" },
        recipients
            .iter()
            .map(|(what, r)| format!("{r} from {}", what.trim_start_matches('.')))
            .collect::<Vec<_>>()
            .join(", "),
        if public.len() > 1 {
            "one of its public keys"
        } else {
            "its public key"
        }
    ))
}
