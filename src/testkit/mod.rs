//! Test-only stand-ins for a destination and a database, so the pipeline's and restore's
//! rules (what is published, what is cleaned up, what retention removes) can be checked in
//! unit tests without starting servers. Both keep their state behind an `Arc`: a test keeps
//! a clone and inspects what the run did after it returns.
//!
//! They model the real things' contracts, not their mechanics: the integration tests in
//! `tests/` still check the real storages and engines end to end.

pub(crate) mod config;
pub(crate) mod fake_db;
pub(crate) mod memory;

pub(crate) use config::{JOB, configure, open};
pub(crate) use fake_db::FakeDb;
pub(crate) use memory::{Fault, FaultKind, MemoryStorage, Op};
