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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::TurnArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        turn: TurnArgs,
    }

    fn parse(args: &[&str]) -> Result<TurnArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("server").chain(args.iter().copied())).map(|c| c.turn)
    }

    #[test]
    fn turn_flags_make_a_turn_rest_configuration() {
        assert!(parse(&[]).unwrap().turn().unwrap().is_none());
        let turn = parse(&[
            "--turn-secret",
            "north",
            "--turn-url",
            "turn:turn.example.org:3478?transport=udp",
            "--turn-url",
            "turns:turn.example.org:5349?transport=tcp",
            "--turn-ttl",
            "600",
        ])
        .unwrap()
        .turn()
        .unwrap()
        .unwrap();
        assert_eq!(turn.secret.expose(), "north");
        assert_eq!(turn.urls.len(), 2);
        assert_eq!(turn.ttl.as_secs(), 600);
        assert!(!format!("{:?}", parse(&["--turn-secret", "north"]).unwrap()).contains("north"));
    }

    #[test]
    fn the_secret_can_come_from_a_file() {
        let file = std::env::temp_dir().join(format!("gst-room-turn-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        let args = parse(&[
            "--turn-secret-file",
            file.to_str().unwrap(),
            "--turn-url",
            "turn:10.0.0.1:3478",
        ])
        .unwrap();
        assert_eq!(args.turn().unwrap().unwrap().secret.expose(), "from-file");
        std::fs::remove_file(&file).unwrap();
        assert!(
            args.turn()
                .unwrap_err()
                .to_string()
                .contains("--turn-secret-file")
        );
    }

    #[test]
    fn incomplete_or_malformed_turn_flags_are_refused() {
        let no_url = parse(&["--turn-secret", "north"]).unwrap().turn();
        assert!(no_url.unwrap_err().to_string().contains("--turn-url"));
        let no_secret = parse(&["--turn-url", "turn:x:3478"]).unwrap().turn();
        assert!(no_secret.unwrap_err().to_string().contains("--turn-secret"));
        assert!(parse(&["--turn-url", "turn:user:pw@x:3478"]).is_err());
        assert!(parse(&["--turn-url", "http://x"]).is_err());
        assert!(parse(&["--turn-ttl", "5"]).is_err());
    }
}
