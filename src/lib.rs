//! vaultfs: a backup repository (deduplicated, compressed, encrypted) whose main face
//! is a filesystem.
//!
//! Layers, each depending only on those below it (see ARCHITECTURE.md):
//! `cli` → `repo` → `backend`.

pub mod backend;
pub mod cache;
pub mod cli;
pub mod control;
pub mod fs;
pub mod repo;
pub mod sync;
