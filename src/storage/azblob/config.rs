//! `type = "azblob"` destinations: a container in Azure Blob Storage (or Azurite).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Kind, Place, Storage};
use crate::secret::Secret;
use crate::section::{Section, serde_fields};

/// The `azblob` destination type.
pub struct Azblob;

/// `[destinations.NAME]` with `type = "azblob"`, as the file has it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAzblob {
    account_name: Option<String>,
    container: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    account_key_file: Option<PathBuf>,
    sas_token_file: Option<PathBuf>,
}

/// How requests are signed.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The storage account's access key (Shared Key).
    AccountKey(Secret),
    /// A shared access signature (its query string, as the portal gives it).
    SasToken(Secret),
}

/// An Azure Blob destination, validated.
#[derive(Debug, Clone)]
pub struct AzblobConfig {
    pub account_name: String,
    pub container: String,
    /// Under which path in the container backups go ("" for its root).
    pub prefix: String,
    /// `https://<account>.blob.core.windows.net` unless set (Azurite, sovereign clouds).
    pub endpoint: String,
    pub credential: Credential,
}

impl Kind for Azblob {
    fn kind(&self) -> &'static str {
        "azblob"
    }

    fn keys(&self) -> &'static [&'static str] {
        serde_fields::<RawAzblob>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Place>> {
        let raw: RawAzblob = section.parse()?;
        let account_name = required(section, "account_name", raw.account_name, "account_name = \"mystorageaccount\"");
        let container = required(section, "container", raw.container, "container = \"backups\"");
        if let Some(c) = &container
            && !valid_container(c)
        {
            section.problem(
                "container",
                format!(
                    "\"{}\" is not a container name: 3-63 lowercase letters, digits and single hyphens, starting with a letter or digit",
                    c.escape_debug()
                ),
            );
        }
        let prefix = raw.prefix.unwrap_or_default().trim_matches('/').to_string();
        if crate::storage::bad_part(&prefix).is_some() && !prefix.is_empty() {
            section.problem("prefix", format!("\"{}\" is not a relative path such as \"stowage\"", prefix.escape_debug()));
        }
        let endpoint = match (&raw.endpoint, &account_name) {
            (Some(e), _) if url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => {
                e.trim_end_matches('/').to_string()
            }
            (Some(e), _) => {
                section.problem(
                    "endpoint",
                    format!("\"{}\" is not an http(s) URL; e.g. endpoint = \"http://azurite:10000/devstoreaccount1\"", e.escape_debug()),
                );
                String::new()
            }
            (None, Some(account)) => format!("https://{account}.blob.core.windows.net"),
            (None, None) => String::new(),
        };
        let credential = match (&raw.account_key_file, &raw.sas_token_file) {
            (Some(file), None) => section.secret("account_key_file", file).map(Credential::AccountKey),
            (None, Some(file)) => section.secret("sas_token_file", file).map(Credential::SasToken),
            (Some(_), Some(_)) => {
                section.problem("sas_token_file", "give account_key_file or sas_token_file, not both");
                None
            }
            (None, None) => {
                section.problem(
                    "account_key_file",
                    "required (or sas_token_file): a file holding the storage account's access key, e.g. a Docker secret \"/run/secrets/azure_key\"",
                );
                None
            }
        };
        Some(Arc::new(AzblobConfig {
            account_name: account_name?,
            container: container?,
            prefix,
            endpoint,
            credential: credential?,
        }))
    }
}

fn required(section: &mut Section<'_>, field: &str, value: Option<String>, example: &str) -> Option<String> {
    match value {
        Some(v) if !v.trim().is_empty() => Some(v),
        _ => {
            section.problem(field, format!("required for type = \"azblob\"; e.g. {example}"));
            None
        }
    }
}

/// Azure's rule for container names.
fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[async_trait]
impl Place for AzblobConfig {
    fn kind(&self) -> &'static str {
        "azblob"
    }

    fn describe(&self) -> String {
        let how = match self.credential {
            Credential::AccountKey(_) => "account key",
            Credential::SasToken(_) => "SAS token",
        };
        format!("azblob {} ({}, {how})", super::location(self), self.endpoint)
    }

    async fn open(&self) -> Box<dyn Storage> {
        super::open(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::configure_section;

    #[test]
    fn an_account_a_container_and_a_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, "c2VjcmV0\n").expect("write");
        let d = configure_section(
            "azblob",
            &format!("account_name = \"acct\"\ncontainer = \"backups\"\nprefix = \"/stowage/\"\naccount_key_file = {key:?}"),
        )
        .expect("valid");
        assert_eq!(
            d.describe(),
            "azblob azblob://backups/stowage (https://acct.blob.core.windows.net, account key)"
        );
        assert!(!format!("{d:?}").contains("c2VjcmV0"), "the key must not be printed");
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("container = \"backups\"\nsas_token_file = \"/nonexistent/sas\"", vec![
                "destinations.d.account_name: required for type = \"azblob\"; e.g. account_name = \"mystorageaccount\"",
                "destinations.d.sas_token_file: cannot read \"/nonexistent/sas\": no such file; mount the secret there or remove the key",
            ]),
            ("account_name = \"a\"\ncontainer = \"Bad_Name\"", vec![
                "destinations.d.container: \"Bad_Name\" is not a container name: 3-63 lowercase letters, digits and single hyphens, starting with a letter or digit",
                "destinations.d.account_key_file: required (or sas_token_file): a file holding the storage account's access key, e.g. a Docker secret \"/run/secrets/azure_key\"",
            ]),
            ("account_name = \"a\"\ncontainer = \"ok1\"\nendpoint = \"azurite:10000\"\naccount_key_file = \"/k\"\nsas_token_file = \"/s\"", vec![
                "destinations.d.endpoint: \"azurite:10000\" is not an http(s) URL; e.g. endpoint = \"http://azurite:10000/devstoreaccount1\"",
                "destinations.d.sas_token_file: give account_key_file or sas_token_file, not both",
            ]),
        ];
        for (toml, want) in cases {
            let e = configure_section("azblob", toml).expect_err(toml);
            assert_eq!(e, want, "for {toml:?}");
        }
    }
}
