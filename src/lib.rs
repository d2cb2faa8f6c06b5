//! vaultfs: a backup repository (deduplicated, compressed, encrypted) whose main face
//! is a filesystem.
//!
//! Layers, each depending only on those below it (see ARCHITECTURE.md):
//!
//! ```text
//! cli      clap commands, output, progress; anyhow only here
//! fs       the FUSE mount: a router (ops) over its parts (namespace, handles, readahead,
//!          incoming, control files), one errno mapping, the fuser adapter
//! control  the control plane without fuser types: tasks, ingest sessions, JSON views
//! cache    the chunk cache: memory budget, single flight, prefetch pool, disk tier
//! repo     the format and its operations: packs, trees, manifests, crypto, backup
//! backend  the ObjectStore trait: local directory, S3, in-memory, fault injection
//! ```
//!
//! `sync` holds the one way a lock is taken; `metrics` the Prometheus registry and its
//! HTTP endpoint (FUSE operations counted by the adapter, the rest read from the same
//! counters `.vaultfs/stats.json` shows).

pub mod backend;
pub mod cache;
pub mod cli;
pub mod control;
pub mod fs;
pub mod metrics;
pub mod repo;
pub mod sync;
