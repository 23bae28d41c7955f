//! The TURN flags of `gst-room server`: a TURN REST secret shared with coturn and the URLs of
//! the TURN servers that accept credentials minted from it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use room_signaling::turn::{DEFAULT_TURN_TTL, TurnRest, validate_turn_url};

/// Flags describing the TURN server(s) whose credentials this server mints.
#[derive(clap::Args, Clone)]
pub struct TurnArgs {
    /// The TURN REST secret, coturn's static-auth-secret: each joined participant gets TURN
    /// credentials minted from it. Needs --turn-url. Prefer --turn-secret-file or the
    /// environment: command lines are visible to other users of the machine.
    #[arg(long, env = "GST_ROOM_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// File holding the TURN REST secret (a trailing newline is ignored).
    #[arg(long, conflicts_with = "turn_secret")]
    pub turn_secret_file: Option<PathBuf>,
    /// A TURN server accepting the minted credentials (repeatable):
    /// turn:HOST:PORT[?transport=udp|tcp] or turns:HOST:PORT[?transport=tcp].
    #[arg(long = "turn-url", value_parser = parse_turn_url)]
    pub turn_urls: Vec<String>,
    /// Lifetime of minted TURN credentials, in seconds.
    #[arg(long, default_value_t = DEFAULT_TURN_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(60..))]
    pub turn_ttl: u64,
}

fn parse_turn_url(arg: &str) -> Result<String, String> {
    validate_turn_url(arg).map(|()| arg.to_owned())
}

// Hand-written so that the secret never reaches a log or an error message.
impl std::fmt::Debug for TurnArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnArgs")
            .field(
                "turn_secret",
                &self.turn_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("turn_secret_file", &self.turn_secret_file)
            .field("turn_urls", &self.turn_urls)
            .field("turn_ttl", &self.turn_ttl)
            .finish()
    }
}

impl TurnArgs {
    /// The TURN REST configuration, if a secret was given; an error when only one of secret
    /// and URL is given, the secret is empty or its file cannot be read.
    pub fn turn(&self) -> anyhow::Result<Option<TurnRest>> {
        let secret = match (&self.turn_secret, &self.turn_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --turn-secret-file {}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) if self.turn_urls.is_empty() => return Ok(None),
            (None, None) => bail!("--turn-url needs --turn-secret or --turn-secret-file"),
        };
        if secret.is_empty() {
            bail!("the TURN secret is empty");
        }
        if self.turn_urls.is_empty() {
            bail!("--turn-secret needs at least one --turn-url turn:HOST:PORT");
        }
        Ok(Some(TurnRest {
            secret: secret.into(),
            urls: self.turn_urls.clone(),
            ttl: Duration::from_secs(self.turn_ttl),
        }))
    }
}
