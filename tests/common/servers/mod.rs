//! Real servers started per test on random loopback ports, torn down on `Drop`.

pub mod dav;
pub mod mariadb;
pub mod pg;
pub mod proxy;
pub mod redis;
pub mod s3;
pub mod sshd;
