//! A repository in an S3-compatible object store: `s3://bucket/prefix`, through aws-sdk-s3.
//!
//! Keys map one to one onto object keys under the prefix (`s3://b/repo` stores `config` as
//! `repo/config`). The store is blocking like every [`ObjectStore`]: it owns a small tokio
//! runtime (two worker threads) and each trait method blocks on one future. Callers are
//! plain OS threads (backup pipeline, FUSE session threads), never tasks of a runtime:
//! calling a method from inside a tokio runtime panics.
//!
//! What the S3 API is used for:
//! - `get_range` is one ranged GET (`bytes=a-b`); a body shorter than asked is retried,
//!   then an error, never returned.
//! - `put` is one PUT (with `Content-MD5`, so the server verifies the bytes) up to
//!   [`S3Options::multipart_threshold`], and a multipart upload above it: parts uploaded
//!   concurrently (at most [`S3Options::parts_in_flight`]), each retried, each with
//!   `Content-MD5`; the size of the completed object is checked with a HEAD; a failed
//!   upload is aborted so that no parts linger.
//! - `put_new` is a PUT with `If-None-Match: *`: a 412 (or a 409 for a conditional write
//!   racing another) is [`BackendError::AlreadyExists`]. The SDK's retries are disabled for
//!   it: when an attempt may have landed (timeout, reset) and a later one finds the object
//!   present, the object is read back, and only a byte-identical object counts as ours.
//! - `list` pages through ListObjectsV2 until the end; any failed page fails the listing.
//! - `delete_many` is DeleteObjects in batches of at most [`DELETE_BATCH`] keys (quiet
//!   mode, with `Content-MD5`); the keys the server could not delete come back with the
//!   server's code and message, and a failed request fails the call.
//!
//! Deadlines: every HTTP attempt has [`S3Options::attempt_timeout`], every SDK operation
//! (all its attempts) [`S3Options::operation_timeout`], and every trait call a hard
//! deadline on top, so a stalled server gives an error, never a hang. The SDK retries in
//! standard mode (exponential backoff with jitter) on 5xx, throttling (`SlowDown`),
//! timeouts and connection errors. At most [`S3Options::max_requests`] trait calls run at
//! once per store.
//!
//! Errors map to [`BackendError`]: missing objects to `NotFound`, everything else to
//! `Remote` with a message that names the object (`s3://bucket/key`) and the endpoint, and
//! says whether a retry can help. No AWS type appears in the public API.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::profile::region::ProfileFileRegionProvider;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    Delete, ObjectIdentifier,
};
use md5::{Digest, Md5};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{BackendError, ObjectInfo, ObjectStore, Result};

const MIB: usize = 1024 * 1024;
/// The smallest part S3 accepts (except the last one).
const MIN_PART_SIZE: usize = 5 * MIB;
/// The most parts one multipart upload may have.
const MAX_PARTS: usize = 10_000;
/// Largest body buffer reserved up front from a response's Content-Length (a larger
/// body still reads, growing as it comes).
const MAX_PREALLOCATED_BODY: usize = 64 * MIB;

/// How request and response checksums are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum S3ChecksumMode {
    /// Only where the API requires one. Compatible with every S3 implementation; the
    /// default, because Ceph RGW and others refuse the SDK's newer default checksums.
    /// Writes still carry `Content-MD5`.
    #[default]
    WhenRequired,
    /// Wherever the API supports one (the SDK default, CRC32 trailers): AWS S3 itself.
    WhenSupported,
}

impl std::str::FromStr for S3ChecksumMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "when_required" | "required" => Ok(S3ChecksumMode::WhenRequired),
            "when_supported" | "supported" => Ok(S3ChecksumMode::WhenSupported),
            other => Err(format!(
                "unknown S3 checksum mode {other:?} (expected when_required or when_supported)"
            )),
        }
    }
}

/// Static credentials, instead of the AWS chain (environment, profiles, instance roles).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// How to reach the store. Unset fields fall back to the standard AWS configuration chain
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_PROFILE` and the shared config files).
#[derive(Clone, Debug, PartialEq)]
pub struct S3Options {
    /// Endpoint URL of a non-AWS store (`http://127.0.0.1:7480`).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual hosts
    /// (`bucket.endpoint/key`). Unset: path style when a custom endpoint is configured.
    pub path_style: Option<bool>,
    /// Region; unset: the AWS chain's, else `us-east-1`.
    pub region: Option<String>,
    /// Static credentials; unset: the AWS chain's.
    pub credentials: Option<S3Credentials>,
    pub checksum: S3ChecksumMode,
    /// Deadline of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Deadline of one SDK operation, all its attempts and backoffs included.
    pub operation_timeout: Duration,
    /// Deadline of connecting to the endpoint.
    pub connect_timeout: Duration,
    /// Attempts per operation (1 = no retry).
    pub max_attempts: u32,
    /// Objects larger than this go up as multipart uploads.
    pub multipart_threshold: usize,
    /// Size of every part but the last (at least 5 MiB).
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub parts_in_flight: usize,
    /// Trait calls of one store in flight at once; the others wait.
    pub max_requests: usize,
    /// Also ask the EC2 instance metadata service (169.254.169.254) for credentials and
    /// the region, as the AWS default chain does. Off unless asked for
    /// (`VAULTFS_S3_INSTANCE_METADATA=1`), so that a machine without credentials never
    /// sends requests there.
    pub instance_metadata: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            path_style: None,
            region: None,
            credentials: None,
            checksum: S3ChecksumMode::WhenRequired,
            attempt_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            max_attempts: 4,
            multipart_threshold: 8 * MIB,
            part_size: 8 * MIB,
            parts_in_flight: 4,
            max_requests: 32,
            instance_metadata: false,
        }
    }
}

impl S3Options {
    /// The defaults, overridden by the environment:
    /// `VAULTFS_S3_ENDPOINT` (URL), `VAULTFS_S3_PATH_STYLE` (1/0), `VAULTFS_S3_REGION`,
    /// `VAULTFS_S3_CHECKSUM` (`when_required`, `when_supported`), `VAULTFS_S3_TIMEOUT`
    /// (attempt timeout, seconds), `VAULTFS_S3_OPERATION_TIMEOUT` (seconds),
    /// `VAULTFS_S3_MAX_ATTEMPTS` and `VAULTFS_S3_INSTANCE_METADATA` (1/0). A malformed value
    /// is an error naming the variable.
    pub fn from_env() -> std::result::Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> std::result::Result<Self, String> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut o = S3Options {
            endpoint: get("VAULTFS_S3_ENDPOINT"),
            region: get("VAULTFS_S3_REGION"),
            ..S3Options::default()
        };
        let flag = |name: &str, v: String| -> std::result::Result<bool, String> {
            match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(format!("{name}={v:?}: expected 1 or 0")),
            }
        };
        if let Some(v) = get("VAULTFS_S3_PATH_STYLE") {
            o.path_style = Some(flag("VAULTFS_S3_PATH_STYLE", v)?);
        }
        if let Some(v) = get("VAULTFS_S3_INSTANCE_METADATA") {
            o.instance_metadata = flag("VAULTFS_S3_INSTANCE_METADATA", v)?;
        }
        if let Some(v) = get("VAULTFS_S3_CHECKSUM") {
            o.checksum = v.parse().map_err(|e| format!("VAULTFS_S3_CHECKSUM: {e}"))?;
        }
        let secs = |name: &str, v: String| -> std::result::Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{name}={v:?}: expected a positive number of seconds"))
        };
        if let Some(v) = get("VAULTFS_S3_TIMEOUT") {
            o.attempt_timeout = secs("VAULTFS_S3_TIMEOUT", v)?;
            o.operation_timeout = o.operation_timeout.max(o.attempt_timeout * 2);
        }
        if let Some(v) = get("VAULTFS_S3_OPERATION_TIMEOUT") {
            o.operation_timeout = secs("VAULTFS_S3_OPERATION_TIMEOUT", v)?;
        }
        if let Some(v) = get("VAULTFS_S3_MAX_ATTEMPTS") {
            o.max_attempts = v
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("VAULTFS_S3_MAX_ATTEMPTS={v:?}: expected at least 1"))?;
        }
        Ok(o)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.part_size < MIN_PART_SIZE {
            return Err(format!("S3 part size {} is below 5 MiB", self.part_size));
        }
        if self.parts_in_flight == 0 || self.max_requests == 0 || self.max_attempts == 0 {
            return Err("S3 concurrency limits and attempts must be at least 1".to_string());
        }
        Ok(())
    }
}

/// Where a store's objects are, and the client that reaches them. Shared with the tasks
/// that upload parts.
struct Target {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    /// The endpoint, for messages.
    endpoint: String,
    /// The SDK's deadlines, for messages.
    attempt_timeout: Duration,
    operation_timeout: Duration,
}

/// An object store in an S3 bucket, under a prefix.
pub struct S3Store {
    /// `Some` until drop, which shuts it down without waiting.
    runtime: Option<Runtime>,
    target: Arc<Target>,
    options: S3Options,
    requests: Semaphore,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location())
            .field("endpoint", &self.target.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Splits `[s3://]bucket[/prefix]` into the bucket and a prefix that is empty or ends
/// with `/`.
fn parse_address(address: &str) -> std::result::Result<(String, String), String> {
    let rest = address.strip_prefix("s3://").unwrap_or(address);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!(
            "{address:?} names no bucket (expected s3://bucket/prefix)"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return Err(format!(
            "{address:?}: the prefix must not contain empty, . or .. parts"
        ));
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

fn open_error(address: &str, message: String, transient: bool) -> BackendError {
    BackendError::Remote {
        op: "open",
        key: address.to_string(),
        message,
        transient,
    }
}

impl S3Store {
    /// Connects to `s3://bucket/prefix` and checks that the bucket exists and answers.
    pub fn open(address: &str, options: S3Options) -> Result<S3Store> {
        let store = Self::connect(address, options)?;
        store.check_bucket()?;
        Ok(store)
    }

    /// Like [`S3Store::open`], but creates the bucket first when it does not exist.
    pub fn create_bucket_if_missing(address: &str, options: S3Options) -> Result<S3Store> {
        let store = Self::connect(address, options)?;
        let t = store.target.clone();
        let region = store.options.region.clone();
        let address = store.location();
        store.run("create bucket", "", store.budget() * 2, async move {
            if t.client
                .head_bucket()
                .bucket(&t.bucket)
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            let mut req = t.client.create_bucket().bucket(&t.bucket);
            let region = region.or_else(|| t.client.config().region().map(|r| r.to_string()));
            if let Some(r) = region.filter(|r| r != "us-east-1") {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(r.as_str()))
                        .build(),
                );
            }
            match req.send().await {
                Ok(_) => Ok(()),
                // Created meanwhile, by us or by someone else: check_bucket tells which.
                Err(e)
                    if matches!(
                        e.code(),
                        Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(when_opening(t.sdk_error("create bucket", "", e), &address)),
            }
        })?;
        store.check_bucket()?;
        Ok(store)
    }

    /// Builds the client; no request is sent.
    fn connect(address: &str, options: S3Options) -> Result<S3Store> {
        // Errors name the address as it was given (`address` is what follows `s3://`).
        let shown = format!("s3://{address}");
        let (bucket, prefix) = parse_address(address).map_err(|m| open_error(&shown, m, false))?;
        options
            .validate()
            .map_err(|m| open_error(&shown, m, false))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vaultfs-s3")
            .enable_all()
            .build()
            .map_err(|e| open_error(&shown, format!("cannot start the S3 runtime: {e}"), false))?;
        let env_endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
        let custom_endpoint = options.endpoint.clone().or(env_endpoint);
        let path_style = options.path_style.unwrap_or(custom_endpoint.is_some());
        let config = runtime.block_on(sdk_config(&options, path_style));
        let endpoint = match custom_endpoint {
            Some(e) => e,
            None => format!(
                "AWS S3 ({})",
                config.region().map(|r| r.to_string()).unwrap_or_default()
            ),
        };
        Ok(S3Store {
            runtime: Some(runtime),
            target: Arc::new(Target {
                client: Client::from_conf(config),
                bucket,
                prefix,
                endpoint,
                attempt_timeout: options.attempt_timeout,
                operation_timeout: options.operation_timeout,
            }),
            requests: Semaphore::new(options.max_requests),
            options,
        })
    }

    /// A HeadBucket, with errors that say what to fix.
    fn check_bucket(&self) -> Result<()> {
        let t = self.target.clone();
        let address = self.location();
        self.run("open", "", self.budget(), async move {
            let e = match t.client.head_bucket().bucket(&t.bucket).send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let (b, ep) = (&t.bucket, &t.endpoint);
            let message = match status(&e) {
                Some(404) => format!("bucket {b} does not exist at {ep}"),
                Some(403) => format!(
                    "{ep} refused access to bucket {b} (403): wrong credentials \
                     (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / profile) or no permission"
                ),
                Some(301) => {
                    let region = e
                        .raw_response()
                        .and_then(|r| r.headers().get("x-amz-bucket-region"))
                        .unwrap_or("another region");
                    format!("bucket {b} is in {region}, not the configured region; set VAULTFS_S3_REGION")
                }
                _ => return Err(when_opening(t.sdk_error("open", "", e), &address)),
            };
            Err(open_error(&address, message, false))
        })
    }

    /// Every unfinished multipart upload under the prefix: (full key, upload id, start
    /// time in seconds), all pages.
    fn uploads(&self) -> Result<Vec<(String, String, Option<i64>)>> {
        let t = self.target.clone();
        self.run("list uploads", "", self.budget() * 10, async move {
            let mut out = Vec::new();
            let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
            loop {
                let page = t
                    .client
                    .list_multipart_uploads()
                    .bucket(&t.bucket)
                    .prefix(&t.prefix)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .send()
                    .await
                    .map_err(|e| t.sdk_error("list uploads", "", e))?;
                out.extend(page.uploads().iter().filter_map(|u| {
                    let key = u.key()?.to_string();
                    let id = u.upload_id()?.to_string();
                    Some((key, id, u.initiated().map(|i| i.secs())))
                }));
                if page.is_truncated() != Some(true) {
                    break;
                }
                let next = (
                    page.next_key_marker().map(str::to_string),
                    page.next_upload_id_marker().map(str::to_string),
                );
                if next.0.is_none() || next == (key_marker.clone(), id_marker.clone()) {
                    let msg = "a truncated page of uploads without a new marker".to_string();
                    return Err(t.remote("list uploads", "", msg, true));
                }
                (key_marker, id_marker) = next;
            }
            Ok(out)
        })
    }

    /// The keys of multipart uploads under the prefix that were started and neither
    /// completed nor aborted (by a crash, or a failed abort), sorted. For `check` and
    /// cleanup: such uploads cost storage but are invisible to [`ObjectStore::list`].
    pub fn unfinished_uploads(&self) -> Result<Vec<String>> {
        let prefix = &self.target.prefix;
        let mut out: Vec<String> = self
            .uploads()?
            .into_iter()
            .filter_map(|(key, _, _)| key.strip_prefix(prefix.as_str()).map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Aborts the unfinished multipart uploads under the prefix started more than
    /// `older_than` ago (a crashed writer's leftovers); returns how many.
    pub fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .and_then(|c| c.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let stale: Vec<(String, String)> = self
            .uploads()?
            .into_iter()
            .filter(|(_, _, started)| started.is_some_and(|s| s < cutoff))
            .map(|(key, id, _)| (key, id))
            .collect();
        for (key, id) in &stale {
            let t = self.target.clone();
            let (key, id) = (key.clone(), id.clone());
            self.run("abort multipart", "", self.budget(), async move {
                t.client
                    .abort_multipart_upload()
                    .bucket(&t.bucket)
                    .key(&key)
                    .upload_id(&id)
                    .send()
                    .await
                    .map_err(|e| t.sdk_error("abort multipart", &key, e))?;
                Ok(())
            })?;
        }
        Ok(stale.len())
    }

    /// Runs one trait call on the runtime: waits for a request slot, then gives `fut`
    /// `budget` to finish.
    fn run<T>(
        &self,
        op: &'static str,
        key: &str,
        budget: Duration,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let rt = self.runtime.as_ref().expect("the runtime lives until drop");
        rt.block_on(async {
            let _slot = self
                .requests
                .acquire()
                .await
                .expect("the semaphore is never closed");
            match tokio::time::timeout(budget, fut).await {
                Ok(r) => r,
                Err(_) => Err(BackendError::Remote {
                    op,
                    key: key.to_string(),
                    message: format!(
                        "no complete answer within {budget:?} ({} at {})",
                        self.target.url(key),
                        self.target.endpoint
                    ),
                    transient: true,
                }),
            }
        })
    }

    /// The hard deadline of one trait call: the SDK's own operation timeout, and time to
    /// read the body.
    fn budget(&self) -> Duration {
        self.options.operation_timeout + self.options.attempt_timeout
    }
}

/// The AWS configuration chain, except that the EC2 instance metadata service is asked
/// only when [`S3Options::instance_metadata`] says so.
async fn sdk_config(o: &S3Options, path_style: bool) -> aws_sdk_s3::Config {
    let region = RegionProviderChain::first_try(o.region.clone().map(Region::new));
    let region = if o.instance_metadata {
        region.or_default_provider()
    } else {
        region
            .or_else(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
    }
    .or_else(Region::new("us-east-1"));
    let (request, response) = match o.checksum {
        S3ChecksumMode::WhenRequired => (
            RequestChecksumCalculation::WhenRequired,
            ResponseChecksumValidation::WhenRequired,
        ),
        S3ChecksumMode::WhenSupported => (
            RequestChecksumCalculation::WhenSupported,
            ResponseChecksumValidation::WhenSupported,
        ),
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(o.max_attempts)
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(o.connect_timeout)
                .operation_attempt_timeout(o.attempt_timeout)
                .operation_timeout(o.operation_timeout)
                .build(),
        )
        .request_checksum_calculation(request)
        .response_checksum_validation(response);
    if let Some(e) = &o.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(c) = &o.credentials {
        loader = loader.credentials_provider(Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.clone(),
            None,
            "vaultfs-options",
        ));
    } else if !o.instance_metadata {
        // The default chain less its last resort, the instance metadata service. The
        // container provider sends nothing unless AWS_CONTAINER_CREDENTIALS_* is set.
        loader = loader.credentials_provider(
            CredentialsProviderChain::first_try(
                "Environment",
                EnvironmentVariableCredentialsProvider::new(),
            )
            .or_else("Profile", ProfileFileCredentialsProvider::builder().build())
            .or_else(
                "WebIdentityToken",
                WebIdentityTokenCredentialsProvider::builder().build(),
            )
            .or_else("EcsContainer", EcsCredentialsProvider::builder().build()),
        );
    }
    let sdk = loader.load().await;
    aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(path_style)
        .build()
}

/// An error and its causes, `: `-separated, each said once.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The credentials error somewhere in the chain of causes of `e`, if any.
fn credentials_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<CredentialsError>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// The same error, reported as one of opening the store at `address`.
fn when_opening(e: BackendError, address: &str) -> BackendError {
    match e {
        BackendError::Remote {
            message, transient, ..
        } => open_error(address, message, transient),
        other => other,
    }
}

/// The HTTP status of a failed call, when the server answered.
fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Keys per DeleteObjects request: the S3 API's limit.
pub const DELETE_BATCH: usize = 1000;

fn content_md5(data: &[u8]) -> String {
    aws_smithy_types::base64::encode(Md5::digest(data))
}

/// Parses the total size out of `Content-Range: bytes a-b/total`.
fn range_total(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/')?.1.trim().parse().ok()
}

impl Target {
    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }

    fn remote(&self, op: &'static str, key: &str, what: String, transient: bool) -> BackendError {
        BackendError::Remote {
            op,
            key: key.to_string(),
            message: format!("{what} ({} at {})", self.url(key), self.endpoint),
            transient,
        }
    }

    /// Maps an SDK error; callers handle the statuses that mean something for their
    /// operation (404, 412, 416) before calling this.
    fn sdk_error<E>(&self, op: &'static str, key: &str, e: SdkError<E>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (b, ep) = (&self.bucket, &self.endpoint);
        let request_id = e
            .request_id()
            .map(|id| format!(", request id {id}"))
            .unwrap_or_default();
        let (what, transient) = match &e {
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let st = status(&e).unwrap_or(0);
                let code = e.code().unwrap_or("");
                let msg = e.message().unwrap_or("");
                match (st, code) {
                    (403, "InvalidAccessKeyId" | "SignatureDoesNotMatch") => (
                        format!(
                            "{ep} refused the credentials for bucket {b} ({code}): check \
                             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile"
                        ),
                        false,
                    ),
                    (403, "RequestTimeTooSkewed") => (
                        format!("{ep} says this machine's clock is wrong ({code}): {msg}"),
                        false,
                    ),
                    (403, _) => (
                        format!(
                            "{ep} denied access to bucket {b} (403 {code}): wrong credentials \
                             or no permission{}",
                            if msg.is_empty() {
                                String::new()
                            } else {
                                format!(": {msg}")
                            }
                        ),
                        false,
                    ),
                    (404, "NoSuchBucket") => (format!("bucket {b} does not exist at {ep}"), false),
                    _ => {
                        let transient = st >= 500
                            || st == 429
                            || st == 0
                            || matches!(
                                code,
                                "SlowDown"
                                    | "RequestTimeout"
                                    | "InternalError"
                                    | "ServiceUnavailable"
                                    | "Throttling"
                                    | "ThrottlingException"
                            );
                        let detail = if code.is_empty() && msg.is_empty() {
                            causes(&e)
                        } else {
                            format!("{code}: {msg}")
                        };
                        (format!("HTTP {st} {detail}"), transient)
                    }
                }
            }
            SdkError::TimeoutError(_) => (
                format!(
                    "timed out (attempt timeout {:?}, operation timeout {:?})",
                    self.attempt_timeout, self.operation_timeout
                ),
                true,
            ),
            SdkError::DispatchFailure(_) if credentials_error(&e).is_some() => {
                let c = credentials_error(&e).expect("just checked");
                (
                    format!(
                        "no usable credentials for bucket {b} at {ep}: {}; set \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (on EC2, \
                         VAULTFS_S3_INSTANCE_METADATA=1 allows the instance role)",
                        causes(c)
                    ),
                    matches!(c, CredentialsError::ProviderTimedOut(_)),
                )
            }
            SdkError::DispatchFailure(d) => (
                format!("cannot reach the endpoint: {}", causes(&e)),
                !d.is_user(),
            ),
            // Building the request failed (for example, no credentials were found).
            SdkError::ConstructionFailure(_) => {
                (format!("cannot build the request: {}", causes(&e)), false)
            }
            _ => (causes(&e), false),
        };
        self.remote(op, key, format!("{what}{request_id}"), transient)
    }

    /// Reads a whole body, which must be `expected` bytes long when known.
    async fn read_body(
        &self,
        op: &'static str,
        key: &str,
        body: ByteStream,
        expected: Option<i64>,
    ) -> Result<Vec<u8>> {
        // One copy into a buffer of the announced size. (`collect().to_vec()` copies the
        // segments byte by byte: a quarter of the daemon's CPU on a cold sequential read.)
        let announced = expected.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        let mut data = Vec::with_capacity(announced.min(MAX_PREALLOCATED_BODY));
        let mut body = body;
        loop {
            match body.try_next().await {
                Ok(Some(bytes)) => data.extend_from_slice(&bytes),
                Ok(None) => break,
                Err(e) => {
                    return Err(self.remote(
                        op,
                        key,
                        format!("reading the body failed: {}", causes(&e)),
                        true,
                    ));
                }
            }
        }
        match expected {
            Some(n) if n != data.len() as i64 => Err(self.remote(
                op,
                key,
                format!("short read: got {} of {n} bytes", data.len()),
                true,
            )),
            _ => Ok(data),
        }
    }

    async fn get(&self, key: &str, attempts: u32) -> Result<Vec<u8>> {
        let full = self.full_key(key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if status(&e) == Some(404) && e.code() != Some("NoSuchBucket") => {
                    return Err(BackendError::NotFound {
                        key: key.to_string(),
                    });
                }
                Err(e) => return Err(self.sdk_error("get", key, e)),
            };
            let expected = out.content_length();
            match self.read_body("get", key, out.body, expected).await {
                Err(e) if e.is_transient() && attempt < attempts => {
                    tracing::debug!(key, attempt, error = %e, "retrying an S3 read");
                }
                r => return r,
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full_key(key);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.sdk_error("head", key, e)),
        }
    }

    async fn out_of_range(&self, key: &str, offset: u64, len: u64) -> BackendError {
        match self.head(key).await {
            Ok(Some(size)) => BackendError::OutOfRange {
                key: key.to_string(),
                offset,
                len,
                size,
            },
            Ok(None) => BackendError::NotFound {
                key: key.to_string(),
            },
            Err(e) => e,
        }
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64, attempts: u32) -> Result<Vec<u8>> {
        let Some(end) = offset.checked_add(len) else {
            return Err(self.out_of_range(key, offset, len).await);
        };
        if len == 0 {
            return match self.head(key).await? {
                Some(size) if offset <= size => Ok(Vec::new()),
                Some(_) => Err(self.out_of_range(key, offset, len).await),
                None => Err(BackendError::NotFound {
                    key: key.to_string(),
                }),
            };
        }
        let full = self.full_key(key);
        let range = format!("bytes={offset}-{}", end - 1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .range(&range);
            let out = match req.send().await {
                Ok(out) => out,
                Err(e) if status(&e) == Some(404) && e.code() != Some("NoSuchBucket") => {
                    return Err(BackendError::NotFound {
                        key: key.to_string(),
                    });
                }
                Err(e) if status(&e) == Some(416) => {
                    return Err(self.out_of_range(key, offset, len).await);
                }
                Err(e) => return Err(self.sdk_error("get range", key, e)),
            };
            let total = out.content_range().and_then(range_total);
            if let Some(size) = total.filter(|&size| end > size) {
                return Err(BackendError::OutOfRange {
                    key: key.to_string(),
                    offset,
                    len,
                    size,
                });
            }
            let ranged = out.content_range().is_some();
            let expected = out.content_length();
            let result = self
                .read_body("get range", key, out.body, expected)
                .await
                .and_then(|mut data| {
                    if !ranged {
                        // The server ignored the range and sent the whole object.
                        let size = data.len() as u64;
                        if end > size {
                            return Err(BackendError::OutOfRange {
                                key: key.to_string(),
                                offset,
                                len,
                                size,
                            });
                        }
                        data.truncate(end as usize);
                        data.drain(..offset as usize);
                    }
                    if data.len() as u64 == len {
                        Ok(data)
                    } else {
                        Err(self.remote(
                            "get range",
                            key,
                            format!("short read: got {} of {len} bytes at {offset}", data.len()),
                            true,
                        ))
                    }
                });
            match result {
                Err(e) if e.is_transient() && attempt < attempts => {
                    tracing::debug!(key, attempt, error = %e, "retrying an S3 ranged read");
                }
                r => return r,
            }
        }
    }

    async fn put_single(&self, key: &str, data: &[u8]) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .content_md5(content_md5(data))
            .content_length(data.len() as i64)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .map_err(|e| self.sdk_error("put", key, e))?;
        Ok(())
    }

    /// One attempt of a create-only write. `Ok(false)`: the key exists.
    async fn put_new_once(&self, key: &str, data: &[u8]) -> Result<bool> {
        let no_retries = aws_sdk_s3::config::Builder::default()
            .retry_config(RetryConfig::standard().with_max_attempts(1));
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .if_none_match("*")
            .content_md5(content_md5(data))
            .content_length(data.len() as i64)
            .body(ByteStream::from(data.to_vec()))
            .customize()
            .config_override(no_retries)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            // 412: the object exists. 409 ConditionalRequestConflict: another conditional
            // write of this key is in flight, and it is the one that will win.
            Err(e) if matches!(status(&e), Some(412 | 409)) => Ok(false),
            Err(e) => Err(self.sdk_error("put new", key, e)),
        }
    }

    async fn put_new(&self, key: &str, data: &[u8], attempts: u32) -> Result<()> {
        let mut maybe_landed = false;
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=attempts {
            match self.put_new_once(key, data).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    // An earlier attempt may have written the object and lost the answer:
                    // then the object holds exactly our bytes.
                    if maybe_landed && self.get(key, attempts).await.ok().as_deref() == Some(data) {
                        return Ok(());
                    }
                    return Err(BackendError::AlreadyExists {
                        key: key.to_string(),
                    });
                }
                Err(e) if e.is_transient() && attempt < attempts => {
                    tracing::debug!(key, attempt, error = %e, "retrying an S3 create-only write");
                    maybe_landed = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) && e.code() != Some("NoSuchBucket") => Ok(()),
            Err(e) => Err(self.sdk_error("delete", key, e)),
        }
    }

    /// One DeleteObjects request (at most [`DELETE_BATCH`] keys): the keys the server
    /// refused, with why.
    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<(String, BackendError)>> {
        let first = keys.first().map(String::as_str).unwrap_or("");
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.remote("delete many", first, e.to_string(), false))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| self.remote("delete many", first, e.to_string(), false))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .customize()
            // Older servers (and AWS without a flexible checksum) want Content-MD5.
            .mutate_request(|req| {
                if let Some(body) = req.body().bytes() {
                    let md5 = content_md5(body);
                    req.headers_mut().insert("Content-MD5", md5);
                }
            })
            .send()
            .await
            .map_err(|e| self.sdk_error("delete many", first, e))?;
        let mut failed = Vec::new();
        for e in out.errors() {
            let full = e.key().unwrap_or("");
            let key = full.strip_prefix(&self.prefix).unwrap_or(full).to_string();
            let code = e.code().unwrap_or("");
            if code == "NoSuchKey" {
                continue; // deleting a missing object is not an error
            }
            let transient = matches!(code, "InternalError" | "SlowDown" | "ServiceUnavailable");
            let what = format!("{code}: {}", e.message().unwrap_or(""));
            failed.push((key.clone(), self.remote("delete", &key, what, transient)));
        }
        Ok(failed)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.full_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.sdk_error("list", prefix, e))?;
            for o in page.contents() {
                let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token() {
                Some(next) if token.as_deref() != Some(next) => token = Some(next.to_string()),
                _ => {
                    return Err(self.remote(
                        "list",
                        prefix,
                        format!(
                            "the listing stopped after {} keys: a truncated page without a new \
                             continuation token",
                            out.len()
                        ),
                        true,
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }
}

/// A multipart upload: parts up concurrently, then complete, verify the size; abort on any
/// failure, including running out of time.
async fn put_multipart(
    t: Arc<Target>,
    key: &str,
    data: &[u8],
    o: &S3Options,
    budget: Duration,
) -> Result<()> {
    let full = t.full_key(key);
    let created = t
        .client
        .create_multipart_upload()
        .bucket(&t.bucket)
        .key(&full)
        .send()
        .await
        .map_err(|e| t.sdk_error("put (start multipart)", key, e))?;
    let Some(upload_id) = created.upload_id().map(str::to_string) else {
        return Err(t.remote(
            "put",
            key,
            "the server returned no upload id".to_string(),
            false,
        ));
    };
    let result =
        match tokio::time::timeout(budget, upload_parts(&t, key, &upload_id, data, o)).await {
            Ok(r) => r,
            Err(_) => Err(t.remote(
                "put",
                key,
                format!("the multipart upload did not finish within {budget:?}"),
                true,
            )),
        };
    if result.is_err() {
        let abort = t
            .client
            .abort_multipart_upload()
            .bucket(&t.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .send();
        match tokio::time::timeout(o.operation_timeout, abort).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(
                key, upload_id, error = %t.sdk_error("abort multipart", key, e),
                "could not abort a failed multipart upload"
            ),
            Err(_) => tracing::warn!(
                key,
                upload_id,
                "aborting a failed multipart upload timed out"
            ),
        }
    }
    result
}

async fn upload_parts(
    t: &Arc<Target>,
    key: &str,
    upload_id: &str,
    data: &[u8],
    o: &S3Options,
) -> Result<()> {
    let part_size = o.part_size.max(data.len().div_ceil(MAX_PARTS));
    let count = data.len().div_ceil(part_size);
    let mut parts: Vec<CompletedPart> = Vec::with_capacity(count);
    let mut tasks = JoinSet::new();
    let mut next = 0;
    while next < count || !tasks.is_empty() {
        while next < count && tasks.len() < o.parts_in_flight {
            let start = next * part_size;
            let body = data[start..(start + part_size).min(data.len())].to_vec();
            let number = next as i32 + 1;
            let (t, key, upload_id) = (t.clone(), key.to_string(), upload_id.to_string());
            tasks.spawn(async move { upload_part(&t, &key, &upload_id, number, body).await });
            next += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(part))) => parts.push(part),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(join)) => {
                return Err(t.remote(
                    "put",
                    key,
                    format!("a part upload task failed: {join}"),
                    false,
                ));
            }
            None => break,
        }
    }
    parts.sort_by_key(|p| p.part_number());
    let done = t
        .client
        .complete_multipart_upload()
        .bucket(&t.bucket)
        .key(t.full_key(key))
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| t.sdk_error("put (complete multipart)", key, e))?;
    tracing::debug!(
        key,
        etag = done.e_tag().unwrap_or(""),
        parts = count,
        "multipart upload complete"
    );
    // Verify before anyone depends on the object.
    match t.head(key).await? {
        Some(size) if size == data.len() as u64 => Ok(()),
        found => Err(t.remote(
            "put",
            key,
            format!(
                "after the multipart upload the object has {found:?} bytes, not {}",
                data.len()
            ),
            true,
        )),
    }
}

async fn upload_part(
    t: &Target,
    key: &str,
    upload_id: &str,
    number: i32,
    body: Vec<u8>,
) -> Result<CompletedPart> {
    let md5 = content_md5(&body);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = t
            .client
            .upload_part()
            .bucket(&t.bucket)
            .key(t.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .content_md5(&md5)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body.clone()))
            .send()
            .await;
        let e = match sent {
            Ok(out) => {
                let Some(etag) = out.e_tag() else {
                    return Err(t.remote(
                        "put",
                        key,
                        format!("part {number}: the server returned no ETag"),
                        false,
                    ));
                };
                return Ok(CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build());
            }
            Err(e) => t.sdk_error("put (upload part)", key, e),
        };
        // The SDK has retried already; one more round covers a burst of failures.
        if !e.is_transient() || attempt >= 2 {
            return Err(e);
        }
        tracing::debug!(key, part = number, error = %e, "retrying a multipart part");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl ObjectStore for S3Store {
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let attempts = self.options.max_attempts;
        self.run("get", key, self.budget(), self.target.get(key, attempts))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let attempts = self.options.max_attempts;
        let fut = self.target.get_range(key, offset, len, attempts);
        self.run("get range", key, self.budget(), fut)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        if data.len() <= self.options.multipart_threshold {
            return self.run("put", key, self.budget(), self.target.put_single(key, data));
        }
        // Every round of parts in flight gets a full budget; then the abort gets its own.
        let rounds = data
            .len()
            .div_ceil(self.options.part_size)
            .div_ceil(self.options.parts_in_flight) as u32;
        let inner = self.budget() * (rounds + 1);
        let outer = inner + self.options.operation_timeout * 2;
        let fut = put_multipart(self.target.clone(), key, data, &self.options, inner);
        self.run("put", key, outer, fut)
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let attempts = self.options.max_attempts;
        let budget = self.budget() * 2;
        self.run(
            "put new",
            key,
            budget,
            self.target.put_new(key, data, attempts),
        )
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, self.budget(), self.target.delete(key))
    }

    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, BackendError)>> {
        let mut failed = Vec::new();
        for batch in keys.chunks(DELETE_BATCH) {
            let first = batch.first().map(String::as_str).unwrap_or("");
            let fut = self.target.delete_batch(batch);
            failed.extend(self.run("delete many", first, self.budget(), fut)?);
        }
        Ok(failed)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Pages are sequential, each under the SDK's deadlines; the whole listing gets a
        // generous bound so that a server that never ends the listing still ends the call.
        let budget = self.budget() * 100;
        self.run("list", prefix, budget, self.target.list(prefix))
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.run("head", key, self.budget(), self.target.head(key))
    }

    fn clean_stale_uploads(&self, older_than: Duration) -> Result<usize> {
        self.abort_stale_uploads(older_than)
    }

    fn location(&self) -> String {
        let prefix = self.target.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.target.bucket)
        } else {
            format!("s3://{}/{prefix}", self.target.bucket)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("s3://b/p/q").unwrap(),
            ("b".into(), "p/q/".into())
        );
        assert_eq!(parse_address("b/p/").unwrap(), ("b".into(), "p/".into()));
        assert_eq!(
            parse_address("s3://b").unwrap(),
            ("b".into(), String::new())
        );
        assert_eq!(
            parse_address("s3://b/").unwrap(),
            ("b".into(), String::new())
        );
        assert!(parse_address("s3://").is_err());
        assert!(parse_address("s3:///p").is_err());
        assert!(parse_address("s3://b/a/../c").is_err());
        assert!(parse_address("s3://b/a//c").is_err());
    }

    #[test]
    fn options_from_env() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = S3Options::from_lookup(env(&[])).unwrap();
        assert_eq!(o, S3Options::default());
        assert_eq!(o.checksum, S3ChecksumMode::WhenRequired);
        let o = S3Options::from_lookup(env(&[
            ("VAULTFS_S3_ENDPOINT", "http://127.0.0.1:7480"),
            ("VAULTFS_S3_PATH_STYLE", "0"),
            ("VAULTFS_S3_REGION", "eu-west-3"),
            ("VAULTFS_S3_CHECKSUM", "when_supported"),
            ("VAULTFS_S3_TIMEOUT", "2.5"),
            ("VAULTFS_S3_MAX_ATTEMPTS", "2"),
            ("VAULTFS_S3_INSTANCE_METADATA", "yes"),
        ]))
        .unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:7480"));
        assert_eq!(o.path_style, Some(false));
        assert_eq!(o.region.as_deref(), Some("eu-west-3"));
        assert_eq!(o.checksum, S3ChecksumMode::WhenSupported);
        assert_eq!(o.attempt_timeout, Duration::from_millis(2500));
        assert_eq!(o.max_attempts, 2);
        assert!(o.instance_metadata);
        for bad in [
            &[("VAULTFS_S3_PATH_STYLE", "maybe")][..],
            &[("VAULTFS_S3_CHECKSUM", "crc64")][..],
            &[("VAULTFS_S3_TIMEOUT", "-1")][..],
            &[("VAULTFS_S3_MAX_ATTEMPTS", "0")][..],
        ] {
            let err = S3Options::from_lookup(env(bad)).unwrap_err();
            assert!(err.contains(bad[0].0), "{err}");
        }
    }

    #[test]
    fn content_range_totals() {
        assert_eq!(range_total("bytes 0-9/100"), Some(100));
        assert_eq!(range_total("bytes */100"), Some(100));
        assert_eq!(range_total("bytes 0-9/*"), None);
    }

    #[test]
    fn md5_is_base64() {
        // RFC 1321 test vector: md5("") = d41d8cd98f00b204e9800998ecf8427e.
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
    }

    #[test]
    fn unreachable_endpoint_is_a_transient_error_naming_it() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let o = S3Options {
            endpoint: Some("http://127.0.0.1:9".to_string()),
            credentials: Some(S3Credentials {
                access_key_id: "a".into(),
                secret_access_key: "b".into(),
                session_token: None,
            }),
            max_attempts: 1,
            ..S3Options::default()
        };
        let err = S3Store::open("s3://bucket/prefix", o).unwrap_err();
        let text = err.to_string();
        assert!(err.is_transient(), "{text}");
        assert!(text.contains("127.0.0.1:9"), "{text}");
    }
}
