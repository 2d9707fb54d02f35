//! The repository: what a job keeps on a destination and how. Key names (`layout`),
//! manifests, the content-addressed blob store and its sweep, the file index, locks, how an
//! object is packed (compression + encryption) and object-lock retention.

pub mod blobs;
pub mod index;
pub mod layout;
pub mod locks;
pub mod manifest;
pub mod objlock;
pub mod packing;
