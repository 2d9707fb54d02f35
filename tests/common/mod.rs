//! Shared integration-test harness, one module per concern (real servers on random loopback
//! ports, torn down on `Drop`; writing a job's config; running stowage; checking a store).
//! Everything is re-exported here, so a test writes `common::PgServer`, `common::run_stowage`.
//!
//! - `servers/`: `pg` (PostgreSQL, psql sessions, the sample database), `s3` (moto, s3s-fs,
//!   moto's request log), `mariadb`, `redis`, `proxy` (a fault-injecting proxy before S3).
//! - `job`: the shared fixture: a job's scratch directory, its config (`Job::new(..)…write()`)
//!   and the commands run against it; `pg_job`: `PgJob`, one PostgreSQL database and a `Job`
//!   healing every table (for the table-restore tests); `pitr`: a server recovered from a
//!   restored data directory and the helpers around it (for the point-in-time-recovery tests).
//! - `run`: running the stowage binary, in the foreground or the background, and its output.
//! - `store`: what a job's destinations hold, read straight from the directory and bucket.
//! - `files`: seeded data (`Rng`), file trees, hashes, zstd.
//! - `http`: a webhook receiver and one-shot GET/POST.
//! - `tools`: finding tools and free ports, process helpers.
//!
//! Run `tests/setup.sh` once on a fresh machine to install the binaries used here.
//!
//! Sync vs async: server constructors (`PgServer::start`, `S3Server::moto`, `S3Server::s3s_fs`), all
//! `PgServer` methods and `run_stowage` are synchronous (they block briefly on child processes and are
//! fine to call from inside a tokio test). The S3 helpers (`client`, `create_bucket`, `put`,
//! `list_keys`, `get`, `open_multipart_uploads`) are `async`: write S3 tests as `#[tokio::test]`.
//! No `block_on` helper is provided.
//!
//! Overrides: `STOWAGE_PG_BIN` (PostgreSQL bin dir), `STOWAGE_MOTO_SERVER`, `STOWAGE_S3S_FS`,
//! `STOWAGE_BIN` (stowage binary).
// Each tests/*.rs is its own crate and uses a part of this harness: the rest would warn.
#![allow(dead_code)]

pub mod files;
pub mod http;
pub mod job;
pub mod pg_job;
pub mod pitr;
pub mod run;
pub mod servers;
pub mod store;
pub mod tools;

// A test crate uses some of these re-exports, not all.
#[allow(unused_imports)]
pub use files::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use job::{Job, JobBuilder, toml_str};
#[allow(unused_imports)]
pub use run::*;
#[allow(unused_imports)]
pub use servers::pg::*;
#[allow(unused_imports)]
pub use servers::s3::*;
#[allow(unused_imports)]
pub use servers::{mariadb, proxy, redis};
#[allow(unused_imports)]
pub use tools::*;
