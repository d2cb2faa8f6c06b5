//! The control plane, with no fuser types: tasks (asynchronous jobs with status and
//! progress) and ingest sessions (a snapshot file written into the mount's
//! `incoming/<vault>/` becoming a recovery point). The FUSE layer maps its operations
//! onto these; the CLI could drive them the same way.

pub mod ingest;
pub mod json;
pub mod scheduler;
pub mod tasks;
