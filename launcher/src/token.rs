//! `gst-room token`: mint an access token for one room and one username, and the secret flags
//! it shares with `gst-room server`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use room_signaling::auth::{ANY_ROOM, Claims, Grants, MIN_SECRET_BYTES, mint, unix_now};
use room_signaling::protocol::{Secret, validate_name, validate_username};

/// Where the HS256 key of access tokens comes from (server and `token` alike).
#[derive(clap::Args, Clone, Default)]
pub struct SecretArgs {
    /// Key that signs access tokens (at least 32 characters). Prefer --token-secret-file or
    /// the environment: command lines are visible to other users of the machine.
    #[arg(long, env = "GST_ROOM_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// File holding the key that signs access tokens (a trailing newline is ignored).
    #[arg(long, conflicts_with = "token_secret")]
    pub token_secret_file: Option<PathBuf>,
}

// Hand-written so that the secret never reaches a log or an error message.
impl std::fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretArgs")
            .field(
                "token_secret",
                &self.token_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("token_secret_file", &self.token_secret_file)
            .finish()
    }
}

impl SecretArgs {
    /// The key, if one was given; an error when it is too short or the file cannot be read.
    pub fn secret(&self) -> anyhow::Result<Option<Secret>> {
        let secret = match (&self.token_secret, &self.token_secret_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --token-secret-file {}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if secret.len() < MIN_SECRET_BYTES {
            bail!(
                "the token secret has {} bytes; use at least {MIN_SECRET_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)",
                secret.len()
            );
        }
        Ok(Some(secret.into()))
    }
}

/// Flags of `gst-room token`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The room the token opens; `*` for every room.
    #[arg(long)]
    room: String,
    /// The username the token is for (the participant must join with exactly this name).
    #[arg(long)]
    username: String,
    /// How long the token is valid: seconds, or a number with s, m, h or d (e.g. 90m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
    /// The participant may not publish.
    #[arg(long)]
    no_publish: bool,
    /// The participant may not play others' streams.
    #[arg(long)]
    no_subscribe: bool,
    /// The participant may not send chat messages.
    #[arg(long)]
    no_chat: bool,
    /// The token may also read the server's /rooms list.
    #[arg(long)]
    admin: bool,
    /// Also print an invite link to the page at this address (e.g. http://127.0.0.1:8443),
    /// with the room, the username and the token (in the #fragment, never sent to a server).
    #[arg(long)]
    invite: Option<String>,
    #[command(flatten)]
    secret: SecretArgs,
}

/// `90`, `90s`, `10m`, `1h`, `7d`.
fn parse_ttl(arg: &str) -> Result<Duration, String> {
    let (number, unit) = match arg.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => arg.split_at(i),
        None => (arg, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{arg:?}: expected a number with s, m, h or d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{arg:?}: the unit is s, m, h or d")),
    };
    match n.checked_mul(seconds) {
        Some(0) | None => Err(format!("{arg:?}: must be between 1 s and many years")),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// Mints a token for `room`/`username` with `grants`, valid for `ttl` from now.
pub fn mint_for(
    secret: &Secret,
    room: &str,
    username: &str,
    ttl: Duration,
    grants: Grants,
) -> String {
    let claims = Claims {
        room: room.to_owned(),
        sub: username.to_owned(),
        exp: unix_now().saturating_add(ttl.as_secs()),
        grants,
    };
    mint(secret.expose().as_bytes(), &claims)
}

/// The page's invite link for `room` as `username`, with `token` in the fragment.
pub fn invite_link(page: &str, room: &str, username: &str, token: &str) -> String {
    format!(
        "{}/?room={room}&user={username}#token={token}",
        page.trim_end_matches('/')
    )
}

/// `gst-room token`: prints the token (and the invite link with --invite).
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args
        .secret
        .secret()?
        .context("give the server's --token-secret or --token-secret-file")?;
    if args.room == ANY_ROOM && args.invite.is_some() {
        bail!("--invite needs one --room, not *");
    }
    if args.room != ANY_ROOM {
        validate_name(&args.room).map_err(|why| anyhow::anyhow!("--room {why}"))?;
    }
    validate_username(&args.username).map_err(|why| anyhow::anyhow!("--username {why}"))?;
    let grants = Grants {
        publish: !args.no_publish,
        subscribe: !args.no_subscribe,
        chat: !args.no_chat,
        admin: args.admin,
    };
    let token = mint_for(&secret, &args.room, &args.username, args.ttl, grants);
    println!("{token}");
    if let Some(page) = &args.invite {
        println!("{}", invite_link(page, &args.room, &args.username, &token));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn ttl_takes_seconds_and_units() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
