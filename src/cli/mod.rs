//! The command line: clap definitions, password handling, output and progress.
//! `anyhow` is used here only, for the last mile to a message.

mod config;
mod copy;
pub mod errors;
mod history;
mod key;
mod mount;
mod output;
mod points;
mod policy;
pub mod prune;
mod resources;
mod restore;
mod share;
mod tasks;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::backend;
use crate::repo::backup::{BackupOptions, Source};
use crate::repo::format::*;
use crate::repo::walk::Excludes;
use crate::repo::{InitOptions, Repository, check, lock};

/// A backup repository you can mount: vaults, recovery points and backups as files.
#[derive(Parser, Debug)]
#[command(name = "vaultfs", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Repository: a directory, or s3://bucket/prefix.
    #[arg(long, short = 'r', env = "VAULTFS_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (its first line; env VAULTFS_PASSWORD_FILE); it
    /// beats env VAULTFS_PASSWORD, and a file that cannot be read is an error.
    #[arg(long, global = true, conflicts_with = "password_command")]
    pub password_file: Option<PathBuf>,
    /// Run this command (with `sh -c`) and take the first line it prints as the password
    /// (env VAULTFS_PASSWORD_COMMAND); a command that fails is an error.
    #[arg(long, value_name = "CMD", global = true)]
    pub password_command: Option<String>,
    /// The config file (env VAULTFS_CONFIG; default: $XDG_CONFIG_HOME/vaultfs/config.toml,
    /// else /etc/vaultfs/config.toml, when one exists). Flags and environment beat it.
    #[arg(long, value_name = "FILE", env = "VAULTFS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Use the config file's profile NAME (its settings over the top-level ones; env
    /// VAULTFS_PROFILE).
    #[arg(long, value_name = "NAME", env = "VAULTFS_PROFILE", global = true)]
    pub profile: Option<String>,
    /// S3 endpoint URL for non-AWS stores, e.g. http://127.0.0.1:7480 (env VAULTFS_S3_ENDPOINT).
    #[arg(long, global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 path-style addressing: true or false (default: true with a custom endpoint).
    #[arg(long, global = true)]
    pub s3_path_style: Option<bool>,
    /// S3 region (env VAULTFS_S3_REGION; default: the AWS chain's, else us-east-1).
    #[arg(long, global = true)]
    pub s3_region: Option<String>,
    /// S3 checksums: when_required (default, accepted by every S3-compatible store) or
    /// when_supported (env VAULTFS_S3_CHECKSUM).
    #[arg(long, global = true)]
    pub s3_checksum: Option<String>,
    /// Draw no progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Log lines as text (default) or as JSON objects, one a line, for log collectors
    /// (env VAULTFS_LOG_FORMAT). RUST_LOG sets what is logged (default: warn).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "VAULTFS_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository at --repo (asks for the password twice on a terminal).
    Init {
        /// Target pack size in MiB (1-1024).
        #[arg(long, default_value_t = 16)]
        pack_size_mib: u32,
        /// Average chunk size in KiB (min is a quarter, max four times); fixed for the
        /// life of the repository. See FORMAT.md for why 512 is the default.
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(16..=4096))]
        chunk_avg_kib: u32,
        /// Memory of the Argon2id password derivation, in MiB (every command that opens
        /// the repository pays it once); fixed for the life of the repository.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=4096))]
        kdf_memory_mib: u32,
        /// Passes of the Argon2id password derivation over that memory.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        kdf_passes: u32,
        /// Print the new repository's settings as JSON.
        #[arg(long)]
        json: bool,
        /// Share chunk ids with this repository (its id key and chunker parameters; a new
        /// encryption key and password), so that `copy` keeps chunk and content ids.
        #[arg(long, value_name = "REPO2")]
        from: Option<String>,
        /// The password file of the --from repository (else env VAULTFS_FROM_PASSWORD).
        #[arg(long, value_name = "F", requires = "from")]
        from_password_file: Option<PathBuf>,
    },
    /// Write a sealed record of a point (JSON) to stdout: `import-record` brings the
    /// point back from it after its manifest was deleted, until prune reclaims its data.
    ExportRecord(copy::ExportArgs),
    /// Bring a point back from its record (`export-record`), after checking that every
    /// chunk it references is still in the repository.
    ImportRecord(copy::ImportArgs),
    /// Copy points, with their attributes, from another repository (--from), uploading
    /// only the chunks this one lacks; the vault is created when missing.
    Copy(copy::CopyArgs),
    /// Manage vaults: named series of recovery points.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// Manage the keys (passwords) that open the repository: list, add, remove, passwd.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Take a recovery point: one tree backup per PATH, or one image or tar backup.
    ///
    /// Files unchanged since the vault's latest point (same size, mtime, ctime and inode)
    /// are not read again. Exit status 3 when some files could not be read: they are
    /// listed on stderr and left out of the point.
    Backup {
        /// The vault that gets the new point.
        vault: String,
        /// Directories or files to back up; each becomes a backup named by its basename.
        /// With none (and no --image or --tar): the vault's resources of this host, one
        /// backup each (`vaultfs resource add`); one that fails is recorded as skipped
        /// (exit 3) while the others commit.
        #[arg(conflicts_with_all = ["image", "tar"])]
        paths: Vec<PathBuf>,
        /// Back up one image file (a volume or disk snapshot); `-` reads stdin.
        #[arg(long, value_name = "FILE", conflicts_with = "tar")]
        image: Option<PathBuf>,
        /// Expand a tar archive (plain, zstd or gzip; `-` reads stdin) into a tree backup
        /// carrying the metadata of its headers.
        #[arg(long, value_name = "FILE")]
        tar: Option<PathBuf>,
        /// Name of the image or tar backup (required when reading stdin).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Read every file, even those unchanged since the previous point.
        #[arg(long)]
        no_parent: bool,
        /// Leave out what matches GLOB (repeatable), as restic does: matched against the
        /// absolute path; `*` and `?` stay within a path component, `**` spans any; a
        /// pattern not starting with `/` matches at any depth (`*.log`, `.cache`); a
        /// directory that matches is left out with everything under it.
        #[arg(long, value_name = "GLOB", conflicts_with_all = ["image", "tar"])]
        exclude: Vec<String>,
        /// Read exclude patterns from FILE (repeatable): one a line; blank lines and lines
        /// starting with `#` are ignored.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["image", "tar"])]
        exclude_file: Vec<PathBuf>,
        /// Leave out directories tagged as caches: those holding a CACHEDIR.TAG file that
        /// starts with the standard signature (https://bford.info/cachedir/).
        #[arg(long, conflicts_with_all = ["image", "tar"])]
        exclude_caches: bool,
        /// Do not cross file systems: a mount point under a PATH is recorded as an empty
        /// directory and not entered (other mounts, /proc, a vaultfs mount...).
        #[arg(long, short = 'x', conflicts_with_all = ["image", "tar"])]
        one_file_system: bool,
        /// Tag the new point with T (repeatable).
        #[arg(long, value_name = "T")]
        tag: Vec<String>,
        /// A free text describing the new point.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Let the new point expire N days from now (forget then removes it).
        #[arg(long, value_name = "N")]
        keep_days: Option<u32>,
        /// Protect the new point: no delete, forget or prune removes it.
        #[arg(long)]
        protect: bool,
        /// Wait this long for another writer (a prune, a backup of another process or
        /// host) to release the repository's lock, e.g. 30s, 10m, 1h; 0 fails at once.
        #[arg(long, default_value = "0", value_name = "DURATION",
              value_parser = prune::parse_duration)]
        lock_wait: std::time::Duration,
        /// Print the new point as JSON (as `points --json` shows it), with the files that
        /// were left out ("skipped").
        #[arg(long)]
        json: bool,
    },
    /// List a vault's recovery points, oldest first, with their sizes, tags,
    /// protection, expiry and status.
    Points {
        /// The vault to list.
        vault: String,
        #[command(flatten)]
        filter: points::PointFilter,
        /// Print the points as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show, change or delete one recovery point.
    #[command(subcommand)]
    Point(points::PointCmd),
    /// Manage what a vault protects on each host (what `backup VAULT` takes with no paths).
    #[command(subcommand)]
    Resource(resources::ResourceCmd),
    /// Manage policies: schedules (iCalendar rules) and retention rules applied to vaults.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Run the scheduler in the foreground without a mount, until SIGINT or SIGTERM: each
    /// vault's policy backs up its resources of this host on time, then applies the
    /// retention, and prunes on the policy's prune schedule. One scheduler per host and
    /// repository acts; another one says so and idles.
    Serve {
        /// Re-read the policies and vaults at least this often, in seconds.
        #[arg(long, default_value_t = policy::SERVE_REFRESH.as_secs())]
        refresh_secs: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics (store calls and bytes, tasks
        /// by kind and status), e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Remove the points that no keep rule keeps (restic's rules, OR'ed), from one vault
    /// or all. Protected points always stay, expired ones always go, and the newest
    /// point of a vault stays unless --allow-empty. With no rule given, the vault's own
    /// retention applies (`vault update --keep-...`). Their data stays until prune.
    Forget(points::ForgetArgs),
    /// Upgrade a repository of an older format to the current one (see FORMAT.md).
    Upgrade {
        /// Print the versions before and after as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the contents of a recovery point (or of a directory in it).
    Ls {
        /// The vault that holds the point.
        vault: String,
        /// A point name, or `latest`.
        point: String,
        /// A path starting with the backup's name, e.g. etc/ssh.
        path: Option<OsString>,
        /// Long listing: mode, owner, size, time.
        #[arg(short, long)]
        long: bool,
        /// List recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Print the entries as a JSON array (path, type, mode, owner, size, mtime, target).
        #[arg(long)]
        json: bool,
    },
    /// Write a file from a recovery point to stdout.
    Cat {
        /// The vault that holds the point.
        vault: String,
        /// A point name, or `latest`.
        point: String,
        /// A path starting with the backup's name, e.g. etc/passwd.
        path: OsString,
    },
    /// The distinct versions of one path across a vault's points (equal content once):
    /// first and last point holding each, size, mtime, and the points without it.
    Versions(history::VersionsArgs),
    /// What changed between two points: `+` added, `-` removed, `M` content (or kind)
    /// modified, `m` metadata only; unchanged subtrees are skipped unread.
    Diff(history::DiffArgs),
    /// Search the points of a vault (or all vaults) by name, time and size; a path with
    /// the same content in consecutive points is one line. `--deleted`: paths the latest
    /// point no longer holds.
    Find(history::FindArgs),
    /// Write a path of a point to stdout: a file as its bytes, a directory as a tar
    /// archive (pax: long names, ns times, owners, xattrs, hard links, sparse files)
    /// whose members start with the path's last component, as `tar -C parent name`.
    Dump {
        /// The vault that holds the point.
        vault: String,
        /// A point name, or `latest`.
        point: String,
        /// A path starting with the backup's name, e.g. etc or etc/passwd.
        path: OsString,
        /// Archive format (default tar; a file is written as an archive too when this is
        /// given). A zip holds directories, files and symlinks, mtimes to two seconds.
        #[arg(long, value_enum)]
        format: Option<DumpFormat>,
    },
    /// Restore every backup of a point (or some paths) under TARGET, or an image backup
    /// onto a block device or a file (--image NAME --to DEV|FILE).
    ///
    /// Each backup becomes TARGET/<backup name>, with modes, times, xattrs, hard links,
    /// holes and, when running as root, owners. Directories are merged into; an existing
    /// file is an error (nothing written) unless --overwrite or --skip-existing.
    Restore(restore::RestoreArgs),
    /// Verify the repository; exit status 1 when anything is damaged.
    Check {
        /// Also read, decrypt and hash every chunk.
        #[arg(long)]
        read_data: bool,
        /// Print the report as JSON (ok, errors, notes and what was checked).
        #[arg(long)]
        json: bool,
    },
    /// List the tasks (backups, restores, forgets, prunes, checks, ingests) of every
    /// host, from the repository: kind, status, progress, point, fail reason.
    Tasks(tasks::TasksArgs),
    /// Show or cancel one task.
    #[command(subcommand)]
    Task(tasks::TaskCmd),
    /// Free the space of chunks no recovery point references: delete unused packs,
    /// repack mostly unused ones (FORMAT.md, "Prune"). Waits for running backups.
    Prune(prune::PruneArgs),
    /// Remove stale writer locks: those of processes of this machine that are gone.
    Unlock {
        /// Remove every lock, also those of other machines and of running writers.
        #[arg(long)]
        all: bool,
        /// Print the number of locks removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the repository at MOUNTPOINT until unmounted or interrupted (exit 0), or
    /// with --daemon in the background.
    ///
    /// Backups are read-only. New backups are taken by writing files into
    /// `.vaultfs/incoming/<vault>/`; `mkdir` and `rmdir` of a vault directory create and
    /// remove vaults; `rmdir <vault>/<point>` deletes a point with --allow-delete.
    /// `mount -t fuse.vaultfs REPO DIR -o opts` and fstab lines run it too (README).
    Mount(mount::MountArgs),
    /// Unmount a vaultfs mount: waits for backups being written into incoming/ and for
    /// the daemon to exit.
    Umount(mount::UmountArgs),
    /// Print a shell completion script: `source <(vaultfs completions bash)`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for vaultfs and each subcommand (vaultfs.1, vaultfs-backup.1, ...)
    /// into DIR.
    Man {
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
}

/// Archive formats of `dump`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    Tar,
    Zip,
}

#[derive(Subcommand, Debug)]
pub enum VaultCmd {
    /// Create a vault.
    Create {
        /// 1-64 of `A-Za-z0-9._-`, not starting with `.`, not `latest`.
        name: String,
        /// A free text shown by `vault list` and `vault show`.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        settings: VaultSettings,
        /// Print the new vault as JSON (as `vault show --json` shows it).
        #[arg(long)]
        json: bool,
    },
    /// List vaults with their point counts.
    List {
        /// Only vaults tagged KEY=VALUE (repeatable: all of them).
        #[arg(long, value_name = "KEY=VALUE", value_parser = points::parse_kv)]
        tag: Vec<(String, String)>,
        /// Print the vaults as a JSON array (each as `vault show --json` shows it).
        #[arg(long)]
        json: bool,
    },
    /// Show a vault's settings and usage.
    Show {
        /// The vault to show.
        name: String,
        /// Print the vault as JSON: name, description, created, point_count, bytes_used
        /// (what its points added to the repository), latest.
        #[arg(long)]
        json: bool,
    },
    /// Change a vault's settings.
    Update {
        /// The vault to change.
        name: String,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        settings: VaultSettings,
        /// Remove the label KEY (repeatable).
        #[arg(long, value_name = "KEY")]
        untag: Vec<String>,
        /// Clear the vault's retention rules (before applying any given here).
        #[arg(long)]
        no_retention: bool,
        /// Remove the quota.
        #[arg(long, conflicts_with = "quota")]
        no_quota: bool,
        /// Print the vault as JSON once changed (as `vault show --json` shows it).
        #[arg(long)]
        json: bool,
    },
    /// Let local users or groups read the vault through a mount with --allow-other
    /// (besides the mount's owner and root, who always may).
    Share(share::ShareArgs),
    /// Withdraw what `vault share` gave.
    Unshare(share::ShareArgs),
    /// Delete a vault (refused while it holds recovery points, unless --force).
    Delete {
        /// The vault to delete.
        name: String,
        /// Delete the vault's recovery points too.
        #[arg(long)]
        force: bool,
        /// Print the vault as it was before deletion as JSON (as `vault show --json`).
        #[arg(long)]
        json: bool,
    },
}

/// A vault's capacity, labels and retention, as `vault create` and `vault update` set them.
#[derive(Args, Debug, Clone, Default)]
pub struct VaultSettings {
    /// The most stored bytes the vault's points may reference, e.g. 500G; a backup that
    /// would pass it fails before its commit ("vault full").
    #[arg(long, value_name = "SIZE", value_parser = output::parse_size)]
    pub quota: Option<u64>,
    /// Warn (in the log and the vault's JSON) once the vault passes PERCENT of its quota.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub warn_at: Option<u8>,
    /// Label the vault KEY=VALUE (repeatable; `vault list --tag` filters on it).
    #[arg(long, value_name = "KEY=VALUE", value_parser = points::parse_kv)]
    pub tag: Vec<(String, String)>,
    /// The vault's retention: what `forget` keeps when given no rules.
    #[command(flatten)]
    pub rules: points::RuleArgs,
}

impl VaultSettings {
    fn apply_to(&self, v: &mut Vault) {
        if self.quota.is_some() {
            v.quota = self.quota;
        }
        if self.warn_at.is_some() {
            v.warn_at = self.warn_at;
        }
        for (k, val) in &self.tag {
            v.tags.retain(|(key, _)| key != k);
            v.tags.push((k.clone(), val.clone()));
        }
        v.tags.sort();
        self.rules.apply_to(&mut v.retention);
    }
}

pub use errors::EXIT_PARTIAL;

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--quiet`: no progress bars.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Whether progress bars are off (`--quiet`).
pub(crate) fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Init {
            pack_size_mib,
            chunk_avg_kib,
            kdf_memory_mib,
            kdf_passes,
            json,
            from,
            from_password_file,
        } => {
            let store = open_store_with(g, true)?;
            let pw = read_password(g, true)?;
            let opts = InitOptions {
                pack_size: pack_size_mib.clamp(1, 1024) * 1024 * 1024,
                chunker: ChunkerParams {
                    min_size: chunk_avg_kib * 256,
                    avg_size: chunk_avg_kib * 1024,
                    max_size: chunk_avg_kib * 4096,
                },
                kdf: KdfParams {
                    memory_kib: kdf_memory_mib * 1024,
                    iterations: kdf_passes,
                    ..crate::repo::crypto::default_kdf()
                },
                ..Default::default()
            };
            let repo = match from {
                Some(from) => copy::init_from(
                    g,
                    store,
                    &pw,
                    opts,
                    &copy::FromArgs {
                        from,
                        from_password_file,
                    },
                )?,
                None => Repository::init(store, &pw, opts)?,
            };
            if json {
                output::print_json(&output::repo_json(&repo));
            } else {
                println!("created vaultfs repository at {}", repo.location());
            }
            Ok(0)
        }
        Command::Vault(cmd) => vault_cmd(g, cmd),
        Command::ExportRecord(a) => copy::export(g, &a),
        Command::ImportRecord(a) => copy::import(g, &a),
        Command::Copy(a) => copy::copy(g, &a),
        Command::Key(cmd) => key::run(g, cmd),
        Command::Backup {
            vault,
            paths,
            image,
            tar,
            name,
            no_parent,
            exclude,
            exclude_file,
            exclude_caches,
            one_file_system,
            tag,
            description,
            keep_days,
            protect,
            lock_wait,
            json,
        } => {
            let mut patterns = exclude;
            for f in &exclude_file {
                patterns.extend(Excludes::read_file(f)?);
            }
            let excludes = Excludes::new(&patterns)?;
            let what = match (&image, &tar) {
                (Some(p), _) => format!("image {}", printable_path(p)),
                (None, Some(p)) => format!("tar {}", printable_path(p)),
                (None, None) if paths.is_empty() => "the vault's resources".to_string(),
                (None, None) => paths
                    .iter()
                    .map(|p| printable_path(p))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let ran = tasks::as_task(
                g,
                crate::repo::tasks::TaskKind::Backup,
                Some(&vault),
                what,
                |r: &(Arc<Repository>, crate::repo::backup::BackupResult)| {
                    Some(r.1.manifest.name.clone())
                },
                |repo, task| {
                    let progress = task.progress.clone();
                    let opts = BackupOptions {
                        progress: progress.clone(),
                        cancel: task.cancel.clone(),
                        use_parent: !no_parent,
                        excludes,
                        exclude_caches,
                        one_file_system,
                        attrs: points::backup_attrs(tag, description, keep_days, protect),
                        lock_wait,
                        ..Default::default()
                    };
                    if let Some(len) = image
                        .as_deref()
                        .filter(|p| p.as_os_str() != "-")
                        .and_then(|p| std::fs::metadata(p).ok())
                        .map(|m| m.len())
                    {
                        // An image file's size is known: the task shows a percentage.
                        task.set_totals(Some(len), Some(1));
                    }
                    let source = match (image, tar) {
                        (Some(path), _) => Some(Source::Image { path, name }),
                        (None, Some(path)) => Some(tar_source(&path, name)?),
                        // The vault's resources of this host.
                        (None, None) if paths.is_empty() => None,
                        (None, None) => Some(Source::Trees(paths)),
                    };
                    let bar = output::ProgressDisplay::start(progress, None, "backup");
                    let result = match source {
                        Some(source) => crate::repo::backup::backup(repo, &vault, source, &opts),
                        None => crate::repo::resources::backup_resources(repo, &vault, &opts),
                    };
                    bar.finish();
                    Ok((repo.clone(), result?))
                },
            )?;
            let Some((repo, result)) = ran else {
                return Ok(tasks::EXIT_CANCELLED);
            };
            for s in &result.skipped {
                eprintln!("warning: skipped {}: {}", printable_path(&s.path), s.error);
            }
            if json {
                let rec = repo.point_record(&vault, &result.manifest.name)?;
                output::print_json(&crate::control::json::record_json(&rec));
            } else {
                output::print_backup_summary(&result.manifest);
            }
            for s in &result.manifest.skipped_resources {
                eprintln!("warning: skipped resource {}: {}", s.name, s.error);
            }
            Ok(
                if result.skipped.is_empty() && result.manifest.skipped_resources.is_empty() {
                    0
                } else {
                    EXIT_PARTIAL
                },
            )
        }
        Command::Points {
            vault,
            filter,
            json,
        } => points::points(&*open_repo(g)?, &vault, &filter, json),
        Command::Point(cmd) => points::point_cmd(&open_repo(g)?, cmd),
        Command::Resource(cmd) => resources::run(&open_repo(g)?, cmd),
        Command::Forget(args) => {
            let description = match &args.vault {
                Some(v) => format!("forget {v}"),
                None => "forget --all".to_string(),
            };
            let ran = tasks::as_task(
                g,
                crate::repo::tasks::TaskKind::Forget,
                args.vault.as_deref(),
                description,
                |_| None,
                |repo, _| points::forget(repo, &args),
            )?;
            Ok(ran.unwrap_or(tasks::EXIT_CANCELLED))
        }
        Command::Policy(cmd) => policy::run(&open_repo(g)?, cmd),
        Command::Serve {
            refresh_secs,
            metrics,
        } => {
            let store = open_store(g)?;
            let pw = read_password(g, false)?;
            let signals = policy::exit_signals()?;
            let counting = crate::backend::counting::CountingStore::new(store);
            let counts = counting.counts();
            let repo = Repository::open(Arc::new(counting), &pw)?;
            if let Some(addr) = metrics {
                let m = policy::serve_metrics(repo.clone(), counts);
                let bound = m
                    .serve(addr)
                    .with_context(|| format!("serving metrics on {addr}"))?;
                eprintln!("vaultfs: metrics on http://{bound}/metrics");
            }
            policy::serve(
                repo,
                std::time::Duration::from_secs(refresh_secs.max(1)),
                signals,
            )
        }
        Command::Dump {
            vault,
            point,
            path,
            format,
        } => {
            let repo = open_repo(g)?;
            let point = repo.resolve_point(&vault, &point)?;
            let m = repo.load_manifest(&vault, &point)?;
            let node = repo.find_node(&m, path.as_bytes())?;
            let stdout = std::io::stdout();
            // A bar of the bytes written when they go to a file or a pipe (the total is
            // known for one file or a whole backup).
            let progress = std::sync::Arc::new(crate::repo::walk::Progress::default());
            let total = if node.kind == crate::repo::format::NodeKind::File {
                Some(node.size)
            } else {
                // A whole backup: its recorded size.
                let parts = crate::repo::history::split_path(path.as_bytes());
                match parts.as_slice() {
                    [name] => m.backups.iter().find(|b| b.name == *name),
                    _ => None,
                }
                .map(|b| b.stats.bytes)
            };
            use std::io::IsTerminal;
            let bar = (!std::io::stdout().is_terminal())
                .then(|| output::ProgressDisplay::start(progress.clone(), total, "dump"));
            let mut out = output::CountingWriter::new(
                std::io::BufWriter::new(stdout.lock()),
                progress.clone(),
            );
            if node.kind == crate::repo::format::NodeKind::File && format.is_none() {
                crate::repo::dump::file(&repo, &node, &mut out)?;
            } else {
                if std::io::stdout().is_terminal() {
                    anyhow::bail!(
                        "refusing to write an archive to a terminal: redirect stdout (> out.tar)"
                    );
                }
                let name = crate::repo::history::split_path(path.as_bytes())
                    .last()
                    .map(|s| s.to_vec())
                    .unwrap_or_default();
                match format.unwrap_or(DumpFormat::Tar) {
                    DumpFormat::Tar => crate::repo::dump::tar(&repo, &node, &name, &mut out)?,
                    DumpFormat::Zip => crate::repo::dump::zip(&repo, &node, &name, &mut out)?,
                };
            }
            use std::io::Write;
            out.flush().context("writing to standard output")?;
            if let Some(bar) = bar {
                bar.finish();
            }
            Ok(0)
        }
        Command::Versions(args) => history::versions(&*open_repo(g)?, &args),
        Command::Diff(args) => history::diff(&*open_repo(g)?, &args),
        Command::Find(args) => history::find(&*open_repo(g)?, &args),
        Command::Upgrade { json } => points::upgrade(&open_repo(g)?, json),
        Command::Ls {
            vault,
            point,
            path,
            long,
            recursive,
            json,
        } => {
            let repo = open_repo(g)?;
            let point = repo.resolve_point(&vault, &point)?;
            let m = repo.load_manifest(&vault, &point)?;
            let path = path.as_ref().map(|p| p.as_bytes());
            output::list(&repo, &m, path, long, recursive, json)?;
            Ok(0)
        }
        Command::Cat { vault, point, path } => {
            let repo = open_repo(g)?;
            let point = repo.resolve_point(&vault, &point)?;
            let m = repo.load_manifest(&vault, &point)?;
            let node = repo.find_node(&m, path.as_bytes())?;
            if node.kind != NodeKind::File {
                bail!("{} is not a regular file", path.to_string_lossy());
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            repo.read_file(&node, &mut out)?;
            std::io::Write::flush(&mut out).context("writing to stdout")?;
            Ok(0)
        }
        Command::Restore(args) => restore::run(g, args),
        Command::Check { read_data, json } => {
            let ran = tasks::as_task(
                g,
                crate::repo::tasks::TaskKind::Check,
                None,
                if read_data {
                    "check --read-data"
                } else {
                    "check"
                }
                .to_string(),
                |_| None,
                |repo, task| {
                    let bar = output::ProgressDisplay::start(task.progress.clone(), None, "check");
                    let report = check::check_with_progress(repo, read_data, &task.progress);
                    bar.finish();
                    let report = report?;
                    // A cancelled check's store calls failed: its errors say nothing.
                    task.cancel.check()?;
                    Ok(report)
                },
            )?;
            let Some(report) = ran else {
                return Ok(tasks::EXIT_CANCELLED);
            };
            if json {
                output::print_json(&serde_json::json!({
                    "ok": report.ok(),
                    "errors": report.errors,
                    "notes": report.notes,
                    "packs": report.packs,
                    "chunks": report.chunks,
                    "points": report.points,
                    "trees": report.trees,
                    "bytes_read": report.bytes_read,
                }));
            } else {
                for n in &report.notes {
                    eprintln!("note: {n}");
                }
                for e in &report.errors {
                    eprintln!("error: {e}");
                }
                println!(
                    "checked {} points, {} trees, {} chunks in {} packs{}: {}",
                    report.points,
                    report.trees,
                    report.chunks,
                    report.packs,
                    if read_data {
                        format!(", read {}", output::human(report.bytes_read))
                    } else {
                        String::new()
                    },
                    if report.ok() {
                        "no errors".to_string()
                    } else {
                        format!("{} error(s)", report.errors.len())
                    }
                );
            }
            Ok(if report.ok() { 0 } else { 1 })
        }
        Command::Tasks(args) => tasks::list(g, &args),
        Command::Task(cmd) => tasks::task_cmd(g, cmd),
        Command::Prune(args) => {
            let description = if args.dry_run {
                "prune --dry-run"
            } else {
                "prune"
            };
            let ran = tasks::as_task(
                g,
                crate::repo::tasks::TaskKind::Prune,
                None,
                description.to_string(),
                |_| None,
                |repo, task| prune::run(repo, &args, task.progress.clone()),
            )?;
            Ok(ran.unwrap_or(tasks::EXIT_CANCELLED))
        }
        Command::Unlock { all, json } => {
            let repo = open_repo(g)?;
            let n = lock::remove(&repo, all)?;
            if json {
                output::print_json(&serde_json::json!({ "removed": n }));
            } else {
                println!("removed {n} lock(s)");
            }
            Ok(0)
        }
        Command::Mount(a) => mount::mount(g, a),
        Command::Umount(a) => mount::umount(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            // Into memory first: clap_complete panics on a failed write (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "vaultfs", &mut script);
            output::print_bytes(&script);
            Ok(0)
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            let n = write_man_pages(&Cli::command(), &dir)?;
            println!("wrote {n} man pages into {}", dir.display());
            Ok(0)
        }
    }
}

/// A tar archive from a file or stdin, named by `--name` or the file name less its
/// archive extension.
fn tar_source(path: &std::path::Path, name: Option<String>) -> Result<Source> {
    let reader: Box<dyn std::io::Read + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?)
    };
    let name = match name {
        Some(n) => n.into_bytes(),
        None if path.as_os_str() == "-" => bail!("a tar archive read from stdin needs --name"),
        None => {
            let file = path.file_name().unwrap_or_default().as_bytes();
            crate::repo::ingest::classify(file).0
        }
    };
    Ok(Source::Stream {
        reader: Box::new(crate::repo::backup::PlainStream(reader)),
        name: Arc::new(std::sync::Mutex::new(name)),
        kind: crate::repo::ingest::StreamKind::Tar,
    })
}

fn vault_cmd(g: &Global, cmd: VaultCmd) -> Result<i32> {
    let repo = open_repo(g)?;
    match cmd {
        VaultCmd::Create {
            name,
            description,
            settings,
            json,
        } => {
            let mut v = Vault {
                name: name.clone(),
                description,
                created_ns: 0,
                retention: Retention::default(),
                quota: None,
                warn_at: None,
                tags: Vec::new(),
                policy: None,
                policy_applied_ns: None,
                members: Members::default(),
            };
            settings.apply_to(&mut v);
            repo.create_vault_with(v)?;
            if json {
                output::print_json(&crate::control::json::vault_json(&repo, &name, true)?);
            } else {
                println!("created vault {name}");
            }
        }
        VaultCmd::List { tag, json } => {
            let mut names = Vec::new();
            for name in repo.list_vaults()? {
                let v = repo.load_vault(&name)?;
                if tag.iter().all(|t| v.tags.contains(t)) {
                    names.push(name);
                }
            }
            if json {
                let mut rows = Vec::new();
                for name in names {
                    rows.push(crate::control::json::vault_json(&repo, &name, true)?);
                }
                output::print_json(&serde_json::Value::Array(rows));
            } else {
                println!(
                    "{:<24} {:>7}  {:<24} DESCRIPTION",
                    "VAULT", "POINTS", "CREATED"
                );
                for name in names {
                    let v = repo.load_vault(&name)?;
                    let n = repo.list_points(&name)?.len();
                    println!(
                        "{:<24} {:>7}  {:<24} {}",
                        v.name,
                        n,
                        rfc3339(v.created_ns),
                        v.description
                    );
                }
            }
        }
        VaultCmd::Show { name, json } => {
            let j = crate::control::json::vault_json(&repo, &name, true)?;
            if json {
                output::print_json(&j);
            } else {
                println!("name:        {}", j["name"].as_str().unwrap_or(""));
                println!("description: {}", j["description"].as_str().unwrap_or(""));
                println!("created:     {}", j["created"].as_str().unwrap_or(""));
                println!("points:      {}", j["point_count"]);
                println!(
                    "bytes added: {}",
                    output::human(j["bytes_used"].as_u64().unwrap_or(0))
                );
                if let Some(last) = j["latest"].as_str() {
                    println!("latest:      {last}");
                }
                let resources: Vec<String> = j["resources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{} ({})",
                            printable(r["name"].as_str().unwrap_or("").as_bytes()),
                            printable(r["host"].as_str().unwrap_or("").as_bytes())
                        )
                    })
                    .collect();
                if !resources.is_empty() {
                    println!("resources:   {}", resources.join(", "));
                }
                println!("policy:      {}", j["policy"].as_str().unwrap_or("-"));
                println!("next run:    {}", j["next_run"].as_str().unwrap_or("-"));
                let members = share::members_of_json(&j["members"]);
                println!("members:     {}", share::members_text(&members));
            }
        }
        VaultCmd::Update {
            name,
            description,
            settings,
            untag,
            no_retention,
            no_quota,
            json,
        } => {
            let mut v = repo.load_vault(&name)?;
            if let Some(d) = description {
                v.description = d;
            }
            if no_retention {
                v.retention = Retention::default();
            }
            if no_quota {
                v.quota = None;
            }
            v.tags.retain(|(k, _)| !untag.contains(k));
            settings.apply_to(&mut v);
            repo.update_vault(&v)?;
            if json {
                output::print_json(&crate::control::json::vault_json(&repo, &name, true)?);
            } else {
                println!("updated vault {name}");
            }
        }
        VaultCmd::Share(args) => return share::run(&repo, args, true),
        VaultCmd::Unshare(args) => return share::run(&repo, args, false),
        VaultCmd::Delete { name, force, json } => {
            let _lock = lock::acquire(&repo, &format!("vault delete {name}"))?;
            let before = crate::control::json::vault_json(&repo, &name, true)?;
            repo.delete_vault(&name, force)?;
            if json {
                output::print_json(&before);
            } else {
                println!("deleted vault {name}");
            }
        }
    }
    Ok(0)
}

/// The last nanosecond a time as written covers: a time given to the second (a point
/// name) covers its whole second, one given to the millisecond (as the JSON shows
/// times) its millisecond.
fn end_of_unit(t: i64) -> i64 {
    if t.rem_euclid(1_000_000_000) == 0 {
        t + 999_999_999
    } else if t.rem_euclid(1_000_000) == 0 {
        t + 999_999
    } else {
        t
    }
}

pub fn open_store(g: &Global) -> Result<backend::Store> {
    open_store_with(g, false)
}

fn open_store_with(g: &Global, create: bool) -> Result<backend::Store> {
    let addr = g
        .repo
        .as_deref()
        .ok_or_else(|| anyhow!("no repository given: use --repo or set VAULTFS_REPO"))?;
    let opts = backend::OpenOptions {
        s3_endpoint: g.s3_endpoint.clone(),
        s3_path_style: g.s3_path_style,
        s3_region: g.s3_region.clone(),
        s3_checksum: g.s3_checksum.clone(),
        create,
    };
    // The store's errors name the address themselves.
    backend::open_with(addr, &opts).map_err(|message| {
        anyhow::Error::new(errors::Relayed {
            kind: "store",
            message,
        })
    })
}

/// Reads the password, from the first source given of: `--password-file`,
/// `--password-command` (the config file's settings arrive as these flags, see
/// [`config`]), env VAULTFS_PASSWORD_FILE, VAULTFS_PASSWORD_COMMAND, VAULTFS_PASSWORD, a
/// prompt on a terminal. A named file that cannot be read, or a command that fails, is an
/// error, never a reason to look elsewhere. A new repository (`confirm`) never gets an
/// empty password, whatever its source.
pub fn read_password(g: &Global, confirm: bool) -> Result<Vec<u8>> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let file = g
        .password_file
        .clone()
        .or_else(|| var("VAULTFS_PASSWORD_FILE").map(PathBuf::from));
    let command = g
        .password_command
        .clone()
        .map(OsString::from)
        .or_else(|| var("VAULTFS_PASSWORD_COMMAND"));
    let flag_command = g.password_command.is_some();
    let pw = if let (Some(f), false) = (&file, flag_command) {
        let text = std::fs::read(f).map_err(|e| anyhow!("password file {}: {e}", f.display()))?;
        first_line(&text)
    } else if let Some(c) = command {
        password_from_command(&c)?
    } else if let Ok(p) = std::env::var("VAULTFS_PASSWORD") {
        p.into_bytes()
    } else if !std::io::stdin().is_terminal() {
        bail!(
            "no password: set VAULTFS_PASSWORD, use --password-file or --password-command \
             (or the config file), or run on a terminal"
        );
    } else {
        let p = rpassword::prompt_password("repository password: ")?;
        if confirm {
            let again = rpassword::prompt_password("again: ")?;
            if again != p {
                bail!("the passwords do not match");
            }
        }
        p.into_bytes()
    };
    if confirm && pw.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(pw)
}

fn first_line(text: &[u8]) -> Vec<u8> {
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line).to_vec()
}

/// The first line a password command prints; its stderr goes to ours (it may prompt).
fn password_from_command(cmd: &std::ffi::OsStr) -> Result<Vec<u8>> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow!("running the password command: {e}"))?;
    if !out.status.success() {
        bail!("the password command failed ({})", out.status);
    }
    Ok(first_line(&out.stdout))
}

/// The command line this process acts on: `mount.fuse.vaultfs`'s arguments translated,
/// the config file's settings added (see [`prepare_args`]).
static ARGS: std::sync::OnceLock<Vec<OsString>> = std::sync::OnceLock::new();

/// Translates the arguments of a run as `mount.fuse.vaultfs` (mount(8)'s helper for
/// `-t fuse.vaultfs`), adds the config file's settings, and keeps the result for
/// [`effective_args`].
pub fn prepare_args(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    let name = argv
        .first()
        .map(|a| {
            std::path::Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_os_string()
        })
        .unwrap_or_default();
    let argv = if name == mount::HELPER_NAME {
        mount::helper_args(&argv).map_err(|e| anyhow!(e))?
    } else {
        argv
    };
    let argv = config::apply(argv)?;
    Ok(ARGS.get_or_init(|| argv).clone())
}

/// The command line [`prepare_args`] made (the process's own when it was not called).
pub fn effective_args() -> Vec<OsString> {
    ARGS.get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
}

/// Writes `vaultfs.1` and one page per subcommand (`vaultfs-vault-create.1`, ...).
fn write_man_pages(cmd: &clap::Command, dir: &std::path::Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut n = 0;
    let mut stack = vec![(cmd.clone().name("vaultfs"), "vaultfs".to_string())];
    while let Some((c, name)) = stack.pop() {
        for sub in c.get_subcommands() {
            if sub.get_name() != "help" {
                stack.push((sub.clone(), format!("{name}-{}", sub.get_name())));
            }
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(
            c.clone()
                .name(name.clone())
                .bin_name(name.replace('-', " ")),
        )
        .render(&mut page)
        .context("rendering a man page")?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        n += 1;
    }
    Ok(n)
}

pub fn open_repo(g: &Global) -> Result<Arc<Repository>> {
    let store = open_store(g)?;
    let pw = read_password(g, false)?;
    Ok(Repository::open(store, &pw)?)
}
