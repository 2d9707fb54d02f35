//! A container in Azure Blob Storage, through OpenDAL's Azure Blob service. Uploads are
//! block blobs: blocks are staged as they come and the object appears whole when its block
//! list is committed at the end, so objects are written under their own key; staged blocks
//! of an upload that never completes are invisible, and Azure drops them after a week.

mod config;

pub use config::{Azblob, AzblobConfig, Credential};

use opendal::Operator;

use super::Storage;
use super::dal::{self, Publish};

/// How messages name it: `azblob://container/prefix`.
fn location(cfg: &AzblobConfig) -> String {
    if cfg.prefix.is_empty() {
        format!("azblob://{}", cfg.container)
    } else {
        format!("azblob://{}/{}", cfg.container, cfg.prefix)
    }
}

fn open(cfg: &AzblobConfig) -> Box<dyn Storage> {
    let mut builder = opendal::services::Azblob::default()
        .container(&cfg.container)
        .root(&format!("/{}", cfg.prefix))
        .endpoint(&cfg.endpoint)
        .account_name(&cfg.account_name);
    builder = match &cfg.credential {
        Credential::AccountKey(key) => builder.account_key(key.expose()),
        Credential::SasToken(token) => builder.sas_token(token.expose().trim_start_matches('?')),
    };
    dal::open(
        Operator::new(builder),
        location(cfg),
        Publish::InPlace,
    )
}
