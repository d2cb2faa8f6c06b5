//! The config file: the repository, the password's source, S3 settings and mount
//! defaults, once for all commands, with named profiles for several repositories.
//!
//! ```toml
//! repository = "/srv/backup"
//! password_file = "/etc/vaultfs/password"
//!
//! [mount]
//! cache_size = "1G"
//! allow_other = true
//!
//! [profiles.offsite]
//! repository = "s3://backups/host1"
//! password_command = "pass show vaultfs/offsite"
//! s3 = { endpoint = "http://10.0.0.5:7480", region = "us-east-1" }
//! ```
//!
//! The file is `--config FILE` (env VAULTFS_CONFIG), else the first that exists of
//! `$XDG_CONFIG_HOME/vaultfs/config.toml` (`~/.config/...`) and
//! `/etc/vaultfs/config.toml`. `--profile NAME` (env VAULTFS_PROFILE) lays a profile's
//! settings over the top-level ones. Precedence: a flag beats the environment, which
//! beats the config file; the three sources of the password (a file, a command, the
//! VAULTFS_PASSWORD variable) count as one setting, so a password given on the command
//! line or in the environment in any form wins over the config file's.
//!
//! The settings are applied as the flags they stand for, added to the command line
//! where neither it nor the environment gives them: clap then checks them like typed
//! ones, and `mount --daemon` hands the daemon a command line that needs no file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::parser::ValueSource;
use serde::Deserialize;

/// The variables that give a password; any of them beats the config file's.
pub const PASSWORD_VARS: &[&str] = &[
    "VAULTFS_PASSWORD_FILE",
    "VAULTFS_PASSWORD_COMMAND",
    "VAULTFS_PASSWORD",
];

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// A directory, or s3://bucket/prefix.
    pub repository: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    #[serde(default)]
    pub s3: S3Settings,
    /// Defaults for `vaultfs mount`: its long option names (`cache_size` or
    /// `cache-size`) with a string, number or boolean.
    #[serde(default)]
    pub mount: BTreeMap<String, toml::Value>,
    /// Named profiles (only at the top level).
    #[serde(default)]
    pub profiles: BTreeMap<String, Settings>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub checksum: Option<String>,
}

impl Settings {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let s: Settings =
            toml::from_str(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
        for (name, p) in &s.profiles {
            if !p.profiles.is_empty() {
                bail!(
                    "config file {}: profile {name} holds profiles of its own",
                    path.display()
                );
            }
        }
        Ok(s)
    }

    /// These settings with profile `name`'s laid over them.
    pub fn with_profile(&self, name: &str, path: &Path) -> Result<Settings> {
        let Some(p) = self.profiles.get(name) else {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            bail!(
                "config file {} has no profile {name:?} (it has: {})",
                path.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            );
        };
        let mut out = self.clone();
        out.profiles.clear();
        if p.repository.is_some() {
            out.repository = p.repository.clone();
        }
        if p.password_file.is_some() || p.password_command.is_some() {
            out.password_file = p.password_file.clone();
            out.password_command = p.password_command.clone();
        }
        let s3 = &p.s3;
        out.s3.endpoint = s3.endpoint.clone().or(out.s3.endpoint);
        out.s3.region = s3.region.clone().or(out.s3.region);
        out.s3.path_style = s3.path_style.or(out.s3.path_style);
        out.s3.checksum = s3.checksum.clone().or(out.s3.checksum);
        for (k, v) in &p.mount {
            out.mount.insert(k.clone(), v.clone());
        }
        Ok(out)
    }
}

/// The config file to read: `explicit` (which must exist), else the first standard
/// place that holds one.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("vaultfs/config.toml"));
    user.into_iter()
        .chain([PathBuf::from("/etc/vaultfs/config.toml")])
        .find(|p| p.is_file())
}

/// `argv` with the config file's settings added as flags where neither `argv` nor the
/// environment gives them. `argv` is returned as it is when it does not parse (clap
/// then says why) or names no subcommand.
pub fn apply(argv: Vec<OsString>) -> Result<Vec<OsString>> {
    use clap::CommandFactory;
    let Ok(m) = super::Cli::command().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let explicit = m.get_one::<PathBuf>("config").cloned();
    let Some(path) = locate(explicit.as_deref()) else {
        return Ok(argv);
    };
    let mut s = Settings::load(&path)?;
    if let Some(p) = m.get_one::<String>("profile") {
        s = s.with_profile(p, &path)?;
    }
    let Some((sub, sm)) = m.subcommand() else {
        return Ok(argv);
    };
    let given = |id: &str| {
        matches!(
            sm.value_source(id).or_else(|| m.value_source(id)),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let mut extra: Vec<OsString> = Vec::new();
    fn add(extra: &mut Vec<OsString>, flag: &str, value: &dyn AsRef<std::ffi::OsStr>) {
        let mut a = OsString::from(format!("--{flag}="));
        a.push(value);
        extra.push(a);
    }
    if let Some(r) = &s.repository
        && !given("repo")
    {
        add(&mut extra, "repo", r);
    }
    let password_given = given("password_file")
        || given("password_command")
        || PASSWORD_VARS.iter().any(|v| std::env::var_os(v).is_some());
    if !password_given {
        match (&s.password_file, &s.password_command) {
            (Some(_), Some(_)) => bail!(
                "config file {}: give password_file or password_command, not both",
                path.display()
            ),
            (Some(f), None) => add(&mut extra, "password-file", f),
            (None, Some(c)) => add(&mut extra, "password-command", c),
            (None, None) => {}
        }
    }
    for (id, v) in [
        ("s3_endpoint", s.s3.endpoint.clone()),
        ("s3_region", s.s3.region.clone()),
        ("s3_path_style", s.s3.path_style.map(|b| b.to_string())),
        ("s3_checksum", s.s3.checksum.clone()),
    ] {
        if let Some(v) = v
            && !given(id)
        {
            add(&mut extra, &id.replace('_', "-"), &v);
        }
    }
    if sub == "mount" {
        for (k, v) in &s.mount {
            let id = k.replace('-', "_");
            if matches!(id.as_str(), "mountpoint" | "daemon") || given(&id) {
                continue;
            }
            let flag = id.replace('_', "-");
            match v {
                toml::Value::Boolean(true) => extra.push(format!("--{flag}").into()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(t) => add(&mut extra, &flag, t),
                toml::Value::Integer(n) => add(&mut extra, &flag, &n.to_string()),
                other => bail!(
                    "config file {}: mount option {k} = {other}: give a string, a number or a boolean",
                    path.display()
                ),
            }
        }
    }
    if extra.is_empty() {
        return Ok(argv);
    }
    // Before a `--` (after it, everything is positional).
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let mut out = argv;
    out.splice(at..at, extra);
    // A mount option the config file gives that `mount` does not know: say where it
    // came from rather than letting clap blame the command line.
    if let Err(e) = super::Cli::command().try_get_matches_from(&out)
        && e.kind() == clap::error::ErrorKind::UnknownArgument
    {
        bail!(
            "config file {}: {}",
            path.display(),
            e.to_string().lines().next().unwrap_or_default()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_lay_over_the_top_level() {
        let s: Settings = toml::from_str(
            r#"
            repository = "/a"
            password_file = "/p"
            s3 = { region = "r1" }
            [mount]
            cache_size = "1G"
            [profiles.off]
            repository = "s3://b/p"
            password_command = "echo x"
            s3 = { endpoint = "http://e" }
            mount = { threads = 4 }
            "#,
        )
        .unwrap();
        let p = s.with_profile("off", Path::new("c")).unwrap();
        assert_eq!(p.repository.as_deref(), Some("s3://b/p"));
        assert_eq!(p.password_file, None);
        assert_eq!(p.password_command.as_deref(), Some("echo x"));
        assert_eq!(p.s3.region.as_deref(), Some("r1"));
        assert_eq!(p.s3.endpoint.as_deref(), Some("http://e"));
        assert_eq!(p.mount.len(), 2);
        let e = s
            .with_profile("nope", Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("it has: off"), "{e}");
        assert!(toml::from_str::<Settings>("repo = \"/a\"").is_err());
    }
}
