//! stowage: a backup daemon for docker compose stacks. Data flows one way:
//! config (raw serde → validated) → scheduler → pipeline (sources → compress → fan-out →
//! storages → manifest publish → retention); restore reads it back.

pub mod backend;
pub mod codec;
pub mod commands;
pub mod config;
pub mod containers;
pub mod crypt;
pub mod curate;
pub mod daemon;
pub mod dirwatch;
pub mod drill;
pub mod engine;
pub mod footprint;
pub mod heal;
pub mod history;
pub mod hook;
pub mod instance;
pub mod load;
pub mod logging;
pub mod names;
pub mod notify;
pub mod owner;
pub mod pathfilter;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod recover;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod section;
pub mod server;
pub mod source;
pub mod status;
pub mod storage;
#[cfg(test)]
pub(crate) mod testkit;
pub mod ticker;
pub mod units;
pub mod verify;
pub mod wal;
pub mod zone;
