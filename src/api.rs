//! Where requests go and with which key: resolves the key (environment or key file, never a
//! flag), or starts the bundled mock for `--sandbox`, and hands back a ready [`Client`].
//!
//! This is the only place that reads the key from outside; from here on it travels inside an
//! [`ApiKey`], which cannot be printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{ApiKey, Client, ClientConfig};
use crate::exit::usage;

/// The environment variable that holds the key.
pub const KEY_VAR: &str = "LEADMAGIC_API_KEY";

/// Where to send requests, as decided from the command line and the environment.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub endpoint: Endpoint,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The real API, or whatever `--base-url` names.
    Remote {
        base_url: String,
        key: Option<ApiKey>,
        key_origin: &'static str,
    },
    /// The bundled mock, started in-process.
    Sandbox,
}

impl ApiSettings {
    /// Reads the key from `key_file`, else from `env_key` (the value of LEADMAGIC_API_KEY).
    pub fn new(
        base_url: &str,
        sandbox: bool,
        key_file: Option<&Path>,
        env_key: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<ApiSettings> {
        if timeout.is_zero() {
            return Err(usage("--timeout must be longer than zero"));
        }
        let endpoint = if sandbox {
            Endpoint::Sandbox
        } else {
            let (key, key_origin) = match key_file {
                Some(path) => (Some(read_key_file(path)?), "--api-key-file"),
                None => (env_key.as_deref().and_then(ApiKey::new), KEY_VAR),
            };
            Endpoint::Remote {
                base_url: base_url.to_owned(),
                key,
                key_origin,
            }
        };
        Ok(ApiSettings { endpoint, timeout })
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<ApiKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the API key file {}: {e}. Give --api-key-file a file that holds only the key",
            path.display()
        ))
    })?;
    warn_if_shared(path);
    ApiKey::new(&text).ok_or_else(|| {
        usage(format!(
            "the API key file {} is empty; put the key in it",
            path.display()
        ))
    })
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o044 != 0 {
            tracing::warn!(
                "the API key file {} is readable by other users (mode {:o}); run: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

/// The sandbox server: the `leadmagic-mock` crate's, started in-process (cargo feature
/// `sandbox`, on by default).
#[cfg(feature = "sandbox")]
pub type Sandbox = leadmagic_mock::MockServer;

/// Built without the `sandbox` feature, there is never a sandbox server.
#[cfg(not(feature = "sandbox"))]
pub type Sandbox = std::convert::Infallible;

/// A client ready to use, and the sandbox server it talks to, if any (kept alive with it).
pub struct Api {
    pub client: Client,
    pub sandbox: Option<Sandbox>,
    /// What to call the endpoint in messages ("the sandbox" or the base URL).
    pub describe: String,
}

/// The key the sandbox accepts. Not a secret: the sandbox spends nothing.
const SANDBOX_KEY: &str = "sandbox-key";

impl Api {
    /// Builds the client, starting the sandbox if asked. Fails with a usage error (exit 2) when
    /// there is no key.
    pub async fn connect(settings: &ApiSettings, concurrency: usize) -> anyhow::Result<Api> {
        let (base_url, key, sandbox) = match &settings.endpoint {
            Endpoint::Sandbox => {
                let (url, server) = start_sandbox().await?;
                let key = ApiKey::new(SANDBOX_KEY).expect("the sandbox key is not empty");
                (url, key, Some(server))
            }
            Endpoint::Remote {
                base_url,
                key: Some(key),
                ..
            } => (base_url.clone(), key.clone(), None),
            Endpoint::Remote { key: None, .. } => return Err(no_key()),
        };
        let describe = match &sandbox {
            Some(_) => "the sandbox (bundled mock server, nothing is spent)".to_owned(),
            None => base_url.clone(),
        };
        let client = Client::new(&ClientConfig {
            base_url,
            api_key: key,
            timeout: settings.timeout,
            max_idle: concurrency,
        })?;
        Ok(Api {
            client,
            sandbox,
            describe,
        })
    }
}

/// Starts the sandbox; returns its URL and the server. It answers like the real API, a little
/// slowly, so the progress display has something to show; its verdicts follow the mock's
/// documented function.
#[cfg(feature = "sandbox")]
async fn start_sandbox() -> anyhow::Result<(String, Sandbox)> {
    use anyhow::Context as _;
    use leadmagic_mock::{Latency, MockConfig, MockServer};
    let config = MockConfig {
        api_key: SANDBOX_KEY.to_owned(),
        latency: Latency::LogNormal {
            median: Duration::from_millis(60),
            p99: Duration::from_millis(400),
        },
        ..MockConfig::default()
    };
    let server = MockServer::start(config)
        .await
        .context("starting the sandbox server")?;
    Ok((server.url(), server))
}

/// This build has no sandbox: says so, and what to do instead.
#[cfg(not(feature = "sandbox"))]
async fn start_sandbox() -> anyhow::Result<(String, Sandbox)> {
    Err(usage(
        "--sandbox: this mailsift was built without the sandbox (cargo feature `sandbox`). \
         Rebuild it with default features, or run a leadmagic-mock and point \
         LEADMAGIC_BASE_URL at it",
    ))
}

fn no_key() -> anyhow::Error {
    usage(format!(
        "no API key. Set it in the environment: export {KEY_VAR}=<your key> \
         (or put it in a file readable only by you and pass --api-key-file PATH). \
         To try mailsift without a key, spending nothing, add --sandbox"
    ))
}

/// The state directory: `--state-dir`, else `MAILSIFT_STATE_DIR`, else the platform's per-user
/// state directory.
pub fn default_state_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|dir| dir.join("mailsift"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<ApiSettings> {
        ApiSettings::new(
            "http://x",
            false,
            file,
            env.map(str::to_owned),
            Duration::from_secs(1),
        )
    }

    fn key_of(s: &ApiSettings) -> Option<&str> {
        match &s.endpoint {
            Endpoint::Remote { key, .. } => key.as_ref().map(ApiKey::expose),
            Endpoint::Sandbox => None,
        }
    }

    #[test]
    fn key_comes_from_file_or_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            key_of(&settings(Some(&file), Some("from-env")).unwrap()),
            Some("from-file")
        );
        assert_eq!(
            key_of(&settings(None, Some(" from-env ")).unwrap()),
            Some("from-env")
        );
        assert_eq!(key_of(&settings(None, Some("")).unwrap()), None);
        assert_eq!(key_of(&settings(None, None).unwrap()), None);

        std::fs::write(&file, "  \n").unwrap();
        let err = settings(Some(&file), None).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let missing = dir.path().join("nope");
        let err = settings(Some(&missing), None).unwrap_err();
        assert_eq!(crate::exit::Exit::for_error(&err), crate::exit::Exit::Usage);
        assert!(err.to_string().contains("nope"), "{err}");
    }

    /// A build without the `sandbox` feature refuses `--sandbox` as a usage error that says so.
    #[cfg(not(feature = "sandbox"))]
    #[tokio::test]
    async fn sandbox_without_the_feature_says_it_was_built_without() {
        let s = ApiSettings::new("http://x", true, None, None, Duration::from_secs(1)).unwrap();
        let err = Api::connect(&s, 1).await.err().unwrap();
        assert_eq!(crate::exit::Exit::for_error(&err), crate::exit::Exit::Usage);
        let text = err.to_string();
        assert!(text.contains("built without the sandbox"), "{text}");
    }

    /// With the feature, `--sandbox` starts the mock in-process, on a port of its own.
    #[cfg(feature = "sandbox")]
    #[tokio::test]
    async fn sandbox_starts_the_mock_in_process() {
        let s = ApiSettings::new("http://x", true, None, None, Duration::from_secs(1)).unwrap();
        let api = Api::connect(&s, 1).await.unwrap();
        let server = api.sandbox.as_ref().expect("a sandbox server");
        assert!(
            server.url().starts_with("http://127.0.0.1:"),
            "{}",
            server.url()
        );
        assert!(api.describe.contains("sandbox"), "{}", api.describe);
    }

    #[tokio::test]
    async fn no_key_is_a_usage_error_that_explains_what_to_do() {
        let s = settings(None, None).unwrap();
        let err = Api::connect(&s, 1).await.err().unwrap();
        assert_eq!(crate::exit::Exit::for_error(&err), crate::exit::Exit::Usage);
        let text = err.to_string();
        assert!(
            text.contains(KEY_VAR) && text.contains("--sandbox"),
            "{text}"
        );
    }
}
