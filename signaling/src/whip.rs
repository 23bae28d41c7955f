//! WHIP ingest (RFC 9725) and WHEP playback over HTTP: doors onto the room rules and the media
//! engine for clients that speak no room protocol (OBS, `simple-whip-client`, GStreamer's
//! `whipclientsink`, browser WHEP players).
//!
//! - `POST /whip/{room}/{name}` (an `application/sdp` offer) → `201 Created`, the SDP answer,
//!   `Location: /whip/{room}/{name}/{id}`. The sender is participant `{name}` of `{room}`,
//!   publishing one stream, [`WHIP_STREAM`], with the offer's audio and/or video: an
//!   [`Agent`] (a participant without a WebSocket) joins and publishes through the room rules
//!   like any roomsink, so capacity, name-taken, the stream limits and the grants apply, and the
//!   room sees JOINED / PUBLISHED / LEFT. Its ingest is the engine's session with the sender.
//!   It leaves on `DELETE` of its resource, or when its ingest ends (ICE or DTLS lost beyond the
//!   engine's grace, or the session never connected).
//! - `POST /whep/{room}/{participant}[/{stream}]` (the player's recvonly offer; the stream
//!   defaults to [`WHIP_STREAM`]) → `201`, the server's answer, `Location:
//!   /whep/{room}/{participant}/{stream}/{id}`. The player is no participant: it takes no seat
//!   and no name, and the room does not see it (its agent is a connection in no room, see
//!   `Rooms::watch`). It ends on `DELETE`, or when the stream ends.
//! - `PATCH` of a resource (trickle ICE, ICE restart) → `405`: the server is ICE-lite and puts
//!   its candidates in its answer; clients need not trickle theirs (the server learns their
//!   address from their checks).
//!
//! Refusals are HTTP statuses with a one-line reason (text/plain): 400 bad request or SDP, 401
//! no or wrong token, 403 a token without the grant, 404 no such participant, stream or
//! resource, 409 name taken, 413 offer too large, 415 not `application/sdp`, 429 throttled, 501
//! media not through the server (`--media mesh`), 503 room full or media engine unavailable.
//!
//! Auth is the `/ws` token in `Authorization: Bearer`: for WHIP, a token for `{room}` and
//! username `{name}` with the publish grant; for WHEP, a token for `{room}` (any username) with
//! the subscribe grant; wrong tokens count against the address's throttle as on `/ws`. Every
//! `POST` from one address (an IPv6 /64) takes one token of a bucket with the rate of
//! `--room-event-limit`: a flood gets 429 before any work. A resource's URL (128 random bits)
//! is what allows its `DELETE`.
//!
//! ICE servers (with TURN credentials minted for the sender) go out in `Link` headers
//! (`rel="ice-server"`). Both doors answer CORS preflights from any origin and expose
//! `Location` and `Link`, so players on other origins work (the token, not a cookie, is the
//! credential).
//!
//! One node: a room of another node (`--redis`) is not reached through these doors.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use room_protocol::{
    ClientMessage, ErrorCode, FailReason, IceServer, SERVER_VIEWER, SdpType, ServerMessage,
    SessionDescription, validate_name, validate_username,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::Config;
use crate::agent::Agent;
use crate::auth::{Access, Grants, Refusal};
use crate::hub::Hub;

/// The stream a WHIP sender publishes, and the one a WHEP player gets when it names none
/// (roomsink's default stream name too).
pub const WHIP_STREAM: &str = "main";
/// The largest SDP offer taken.
const MAX_OFFER_BYTES: usize = 64 * 1024;
/// How long the rules and the engine may take to answer a request.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How long a leaving sender waits for its LEFT to be written to the others.
const LEFT_FLUSH_WAIT: Duration = Duration::from_secs(1);
/// Above this many addresses in the POST buckets, the idle ones are dropped (bounded memory).
const PRUNE_AT: usize = 10_000;

/// What the WHIP/WHEP handlers share.
#[derive(Clone)]
pub(crate) struct Doors {
    hub: Arc<Hub>,
    access: Arc<Access>,
    /// Whether media goes through the server (`--media sfu`); without it both doors answer 501.
    media: bool,
    ice_servers: Vec<IceServer>,
    turn: Option<crate::turn::TurnRest>,
    posts: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Open resources by id: cancelling one ends its session.
    resources: Arc<Mutex<HashMap<String, Resource>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// An open WHIP or WHEP session.
struct Resource {
    /// The resource's path (the `Location`), which its `DELETE` must match.
    path: String,
    end: CancellationToken,
}

impl Doors {
    pub(crate) fn new(
        hub: Arc<Hub>,
        access: Arc<Access>,
        config: &Config,
        media: bool,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Doors {
        let limit = config.rate_limits.room_events;
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Doors {
            hub,
            access,
            media,
            ice_servers: config.ice_servers.clone(),
            turn: config.turn.clone(),
            posts: Arc::new(RateLimiter::hashmap(quota)),
            resources: Arc::default(),
            shutdown,
            tasks,
        }
    }

    /// The routes of both doors, with their CORS layer and body limit.
    pub(crate) fn routes<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::any())
            .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
            ])
            .expose_headers([header::LOCATION, header::LINK, header::ETAG])
            .max_age(Duration::from_secs(3600));
        Router::new()
            .route("/whip/{room}/{name}", post(whip))
            .route(
                "/whip/{room}/{name}/{id}",
                patch(no_patch).delete(delete_resource),
            )
            .route("/whep/{room}/{participant}", post(whep_main))
            .route("/whep/{room}/{participant}/{stream}", post(whep))
            .route(
                "/whep/{room}/{participant}/{stream}/{id}",
                patch(no_patch).delete(delete_resource),
            )
            .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
            .layer(cors)
            .with_state(self)
    }

    /// Takes one POST token of `addr`'s bucket.
    fn admit_post(&self, addr: IpAddr) -> Result<(), Refused> {
        if self.posts.len() > PRUNE_AT {
            self.posts.retain_recent();
        }
        self.posts.check_key(&bucket_of(addr)).map_err(|_| {
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many WHIP/WHEP requests from your address: slow down",
            )
        })
    }

    /// The checks every POST passes before any work: the media mode, the rate, the offer.
    fn precheck(&self, addr: IpAddr, headers: &HeaderMap, body: &Bytes) -> Result<String, Refused> {
        if !self.media {
            return Err(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "this server carries no media (--media mesh): WHIP and WHEP need --media sfu",
            ));
        }
        self.admit_post(addr)?;
        let offer = offer_of(headers, body)?;
        room_sfu::check_offer(&offer)
            .map_err(|err| refuse(StatusCode::BAD_REQUEST, &err.to_string()))?;
        Ok(offer)
    }

    /// Registers an open session under a new resource id and spawns the task that holds
    /// `agent` until `session` ends or the resource is deleted. Returns the resource path.
    fn open(&self, agent: Agent, session: String, base: &str) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let path = format!("{base}/{id}");
        let end = self.shutdown.child_token();
        let resource = Resource {
            path: path.clone(),
            end: end.clone(),
        };
        self.resources.lock().unwrap().insert(id.clone(), resource);
        let resources = self.resources.clone();
        self.tasks.spawn(async move {
            hold(agent, &session, end).await;
            resources.lock().unwrap().remove(&id);
        });
        path
    }

    /// The ICE servers for a WHEP player (no join, so none from the rules): the static ones
    /// and a TURN server with credentials minted for it.
    fn ice_servers_for_player(&self) -> Vec<IceServer> {
        let mut servers = self.ice_servers.clone();
        servers.extend(
            self.turn
                .as_ref()
                .map(|t| t.ice_server("whep", SystemTime::now())),
        );
        servers
    }
}

/// The throttle key: an IPv4 address, or the /64 of an IPv6 one.
fn bucket_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// A refusal: a status with a one-line reason (small, unlike a `Response`, to pass around).
#[derive(Debug)]
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let Refused(status, reason) = self;
        let mut response = (status, format!("{reason}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// A refusal: `status` with `reason` as a line of text.
fn refuse(status: StatusCode, reason: &str) -> Refused {
    Refused(status, reason.to_owned())
}

/// The offer of a POST: an `application/sdp` body that is UTF-8 and starts as an SDP does.
fn offer_of(headers: &HeaderMap, body: &Bytes) -> Result<String, Refused> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/sdp") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        ));
    }
    let offer = std::str::from_utf8(body)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the offer is not UTF-8 text"))?;
    if !offer.starts_with("v=0") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad SDP: an offer starts with \"v=0\"",
        ));
    }
    Ok(offer.to_owned())
}

/// The `Authorization: Bearer` value, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The HTTP status of a token refusal.
fn refused_token(refusal: &Refusal) -> Refused {
    let status = match refusal {
        Refusal::Missing(_) | Refusal::Wrong(_) => StatusCode::UNAUTHORIZED,
        Refusal::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    refuse(status, refusal.detail())
}

/// Whether the offer has an m-line of `kind` (`audio`, `video`).
fn offers(offer: &str, kind: &str) -> bool {
    offer
        .lines()
        .any(|l| l.strip_prefix("m=").is_some_and(|m| m.starts_with(kind)))
}

/// `201 Created` with the answer, its `Location` and the ICE servers as `Link` headers.
fn created(answer: String, location: &str, ice_servers: &[IceServer]) -> Response {
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    for link in ice_links(ice_servers) {
        headers.append(header::LINK, link);
    }
    response
}

/// One `Link: <url>; rel="ice-server"` per URL (RFC 9725 section 4.6), with the TURN
/// username and credential.
fn ice_links(servers: &[IceServer]) -> Vec<HeaderValue> {
    servers
        .iter()
        .flat_map(|server| {
            server.urls.iter().filter_map(move |url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(user), Some(credential)) = (&server.username, &server.credential) {
                    link.push_str(&format!(
                        "; username=\"{user}\"; credential=\"{}\"; credential-type=\"password\"",
                        credential.expose()
                    ));
                }
                HeaderValue::from_str(&link).ok()
            })
        })
        .collect()
}

/// `POST /whip/{room}/{name}`: the sender joins as `name`, publishes [`WHIP_STREAM`], and its
/// offer becomes the stream's ingest.
async fn whip(
    State(doors): State<Doors>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((room, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match doors.precheck(addr.ip(), &headers, &body) {
        Ok(offer) => offer,
        Err(refused) => return refused.into_response(),
    };
    if let Err(why) = validate_name(&room) {
        return refuse(StatusCode::BAD_REQUEST, &format!("room name {why}")).into_response();
    }
    if let Err(why) = validate_username(&name) {
        return refuse(StatusCode::BAD_REQUEST, &format!("name {why}")).into_response();
    }
    let (audio, video) = (offers(&offer, "audio"), offers(&offer, "video"));
    if !audio && !video {
        return refuse(StatusCode::BAD_REQUEST, "bad SDP: no audio or video m-line")
            .into_response();
    }
    let grants = match doors.access.join(addr.ip(), bearer(&headers), &room, &name) {
        Ok(grants) => grants,
        Err(refusal) => return refused_token(&refusal).into_response(),
    };
    if !grants.publish {
        return refuse(StatusCode::FORBIDDEN, "the token does not allow publishing")
            .into_response();
    }
    let mut agent = Agent::register(doors.hub.clone());
    let ice_servers = match join(&mut agent, &room, &name, grants).await {
        Ok(servers) => servers,
        Err(refused) => return refused.into_response(),
    };
    agent.send(ClientMessage::Publish {
        stream: WHIP_STREAM.to_owned(),
        audio,
        video,
    });
    let session = match ingest_request(&mut agent).await {
        Ok(session) => session,
        Err(refused) => return refused.into_response(),
    };
    agent.send(ClientMessage::Sdp {
        session: session.clone(),
        description: SessionDescription {
            kind: SdpType::Offer,
            sdp: offer,
        },
    });
    let answer = match engine_answer(&mut agent, &session).await {
        Ok(answer) => answer,
        Err(refused) => return refused.into_response(),
    };
    tracing::info!(%addr, room, name, session, "WHIP sender joined");
    let location = doors.open(agent, session, &format!("/whip/{room}/{name}"));
    created(answer, &location, &ice_servers)
}

/// Joins `room` as `name`: the ICE servers of its `state`, or the refusal as a response.
async fn join(
    agent: &mut Agent,
    room: &str,
    name: &str,
    grants: Grants,
) -> Result<Vec<IceServer>, Refused> {
    agent.join(room.to_owned(), name.to_owned(), Ok(grants));
    let verdict = agent
        .recv_until(ANSWER_WAIT, |msg| match msg {
            ServerMessage::State { ice_servers, .. } => Some(Ok(ice_servers)),
            ServerMessage::Failed { reason, detail } => Some(Err((reason, detail))),
            _ => None,
        })
        .await;
    match verdict {
        Some(Ok(servers)) => Ok(servers),
        Some(Err((reason, detail))) => {
            let status = match reason {
                FailReason::RoomFull | FailReason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                FailReason::NameTaken | FailReason::AlreadyJoined => StatusCode::CONFLICT,
                FailReason::Unauthorized => StatusCode::FORBIDDEN,
                FailReason::InvalidName => StatusCode::BAD_REQUEST,
            };
            Err(refuse(status, &detail))
        }
        None => Err(unavailable()),
    }
}

/// The rules' `session-request` for the ingest of the published stream (or the refusal of the
/// publish as a response).
async fn ingest_request(agent: &mut Agent) -> Result<String, Refused> {
    let request = agent
        .recv_until(ANSWER_WAIT, |msg| match msg {
            ServerMessage::SessionRequest {
                session, viewer, ..
            } if viewer == SERVER_VIEWER => Some(Ok(session)),
            ServerMessage::Error { code, message } => Some(Err((code, message))),
            _ => None,
        })
        .await;
    match request {
        Some(Ok(session)) => Ok(session),
        Some(Err((code, message))) => Err(refuse(status_of(code), &message)),
        None => Err(unavailable()),
    }
}

/// The engine's answer for `session`, or why it refused the offer, as a response.
async fn engine_answer(agent: &mut Agent, session: &str) -> Result<String, Refused> {
    let answer = agent
        .recv_until(ANSWER_WAIT, |msg| match msg {
            ServerMessage::Sdp {
                session: s,
                description,
            } if s == session && description.kind == SdpType::Answer => Some(Ok(description.sdp)),
            ServerMessage::SessionEnded { session: s, reason } if s == session => {
                Some(Err(refuse(StatusCode::BAD_REQUEST, &reason)))
            }
            ServerMessage::Error { code, message } => Some(Err(refuse(status_of(code), &message))),
            _ => None,
        })
        .await;
    answer.unwrap_or_else(|| Err(unavailable()))
}

/// The HTTP status of a protocol error.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited | ErrorCode::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::UnknownParticipant | ErrorCode::UnknownStream => StatusCode::NOT_FOUND,
        ErrorCode::StreamExists | ErrorCode::AlreadyPlaying => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn unavailable() -> Refused {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server did not answer in time",
    )
}

/// `POST /whep/{room}/{participant}`: [`WHIP_STREAM`] of `participant`.
async fn whep_main(
    doors: State<Doors>,
    addr: ConnectInfo<SocketAddr>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = Path((room, participant, WHIP_STREAM.to_owned()));
    whep(doors, addr, path, headers, body).await
}

/// `POST /whep/{room}/{participant}/{stream}`: a viewer session of that stream, answered by
/// the engine.
async fn whep(
    State(doors): State<Doors>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((room, participant, stream)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match doors.precheck(addr.ip(), &headers, &body) {
        Ok(offer) => offer,
        Err(refused) => return refused.into_response(),
    };
    if let Err(why) = validate_name(&room) {
        return refuse(StatusCode::BAD_REQUEST, &format!("room name {why}")).into_response();
    }
    match doors.access.view(addr.ip(), bearer(&headers), &room) {
        Ok(grants) if grants.subscribe => {}
        Ok(_) => {
            let why = "the token does not allow playing";
            return refuse(StatusCode::FORBIDDEN, why).into_response();
        }
        Err(refusal) => return refused_token(&refusal).into_response(),
    }
    let mut agent = Agent::register(doors.hub.clone());
    let peer = agent.peer();
    agent
        .hub()
        .update(|routing| routing.watch(peer, &room, &participant, &stream, offer));
    let session = agent
        .recv_until(ANSWER_WAIT, |msg| match msg {
            ServerMessage::SessionStarted { session, .. } => Some(Ok(session)),
            ServerMessage::Error { code, message } => Some(Err(refuse(status_of(code), &message))),
            _ => None,
        })
        .await;
    let session = match session {
        Some(Ok(session)) => session,
        Some(Err(refused)) => return refused.into_response(),
        None => return unavailable().into_response(),
    };
    let answer = match engine_answer(&mut agent, &session).await {
        Ok(answer) => answer,
        Err(refused) => return refused.into_response(),
    };
    tracing::info!(%addr, room, participant, stream, session, "WHEP player started");
    let base = format!("/whep/{room}/{participant}/{stream}");
    let location = doors.open(agent, session, &base);
    created(answer, &location, &doors.ice_servers_for_player())
}

/// Holds an open session's agent until its `session` ends, the resource is deleted (`end`), or
/// the server shuts down; then the agent leaves (a WHIP sender's LEFT to the room).
async fn hold(mut agent: Agent, session: &str, end: CancellationToken) {
    loop {
        tokio::select! {
            _ = end.cancelled() => break,
            msg = agent.recv() => match msg {
                None => break,
                Some(ServerMessage::SessionEnded { session: s, reason }) if s == session => {
                    tracing::info!(session, "WHIP/WHEP session ended: {reason}");
                    break;
                }
                // A later ingest (the rules ask again when a viewer plays a stream whose ingest
                // ended): a WHIP sender cannot offer again.
                Some(ServerMessage::SessionRequest { session: s, .. }) => {
                    agent.send(ClientMessage::Stop { session: s });
                }
                Some(_) => {}
            },
        }
    }
    if !agent.leave().wait(LEFT_FLUSH_WAIT).await {
        tracing::debug!(session, "LEFT not written to every member in time");
    }
}

/// `DELETE` of a resource: its session ends (a WHIP sender leaves the room).
async fn delete_resource(
    State(doors): State<Doors>,
    Path(parts): Path<HashMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    let id = parts.get("id").map(String::as_str).unwrap_or("");
    let resource = doors.resources.lock().unwrap().remove(id);
    match resource {
        Some(resource) if resource.path == uri.path() => {
            resource.end.cancel();
            StatusCode::OK.into_response()
        }
        Some(resource) => {
            // Not this resource's path: put it back untouched.
            doors
                .resources
                .lock()
                .unwrap()
                .insert(id.to_owned(), resource);
            refuse(StatusCode::NOT_FOUND, "no such WHIP/WHEP session").into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, "no such WHIP/WHEP session").into_response(),
    }
}

/// `PATCH` of a resource: neither trickle ICE nor ICE restarts (see the module doc).
async fn no_patch() -> Response {
    let why = "no trickle ICE or ICE restart: the server is ICE-lite and its candidates are in its answer";
    let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, why).into_response();
    let allow = HeaderValue::from_static("DELETE");
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers_with_turn_credentials() {
        let servers = vec![
            IceServer {
                urls: vec!["stun:stun.example.org:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.org:3478?transport=udp".into()],
                username: Some("1700000000:cam".into()),
                credential: Some("c2VjcmV0".to_owned().into()),
            },
        ];
        let links: Vec<_> = ice_links(&servers)
            .into_iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            links,
            [
                "<stun:stun.example.org:3478>; rel=\"ice-server\"",
                "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; \
                 username=\"1700000000:cam\"; credential=\"c2VjcmV0\"; credential-type=\"password\"",
            ]
        );
    }

    #[test]
    fn only_application_sdp_that_looks_like_sdp_is_an_offer() {
        let mut headers = HeaderMap::new();
        let sdp = Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n");
        assert_eq!(
            offer_of(&headers, &sdp).unwrap_err().0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/sdp"),
        );
        assert!(offer_of(&headers, &sdp).is_ok());
        let junk = Bytes::from_static(b"hello");
        assert_eq!(
            offer_of(&headers, &junk).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
