//! Property tests of parsing: arbitrary input never panics the parser, and every valid message
//! survives a round trip through JSON unchanged. `PROPTEST_CASES` sets the number of cases
//! (CI: the default below; `scripts/fuzz.sh`: a million).

use proptest::prelude::*;
use room_protocol::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000)
}

/// Any string, biased towards what names, texts and SDPs look like.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-zA-Z0-9_.-]{1,70}", "\\PC{0,8}"]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    let opt = || proptest::option::of(text());
    let description = (any::<bool>(), text()).prop_map(|(offer, sdp)| SessionDescription {
        kind: if offer {
            SdpType::Offer
        } else {
            SdpType::Answer
        },
        sdp,
    });
    prop_oneof![
        (text(), text(), opt()).prop_map(|(room, username, token)| ClientMessage::Join {
            room,
            username,
            token: token.map(Secret::from),
        }),
        Just(ClientMessage::Leave {}),
        (text(), any::<bool>(), any::<bool>()).prop_map(|(stream, audio, video)| {
            ClientMessage::Publish {
                stream,
                audio,
                video,
            }
        }),
        text().prop_map(|stream| ClientMessage::Unpublish { stream }),
        (text(), any::<bool>(), any::<bool>()).prop_map(|(stream, audio_muted, video_muted)| {
            ClientMessage::Mute {
                stream,
                audio_muted,
                video_muted,
            }
        }),
        (opt(), text()).prop_map(|(to, text)| ClientMessage::Message { to, text }),
        (text(), text()).prop_map(|(participant, stream)| ClientMessage::Play {
            participant,
            stream
        }),
        (text(), description).prop_map(|(session, description)| ClientMessage::Sdp {
            session,
            description
        }),
        (text(), text(), any::<u32>(), opt()).prop_map(
            |(session, candidate, sdp_m_line_index, sdp_mid)| ClientMessage::Ice {
                session,
                candidate,
                sdp_m_line_index,
                sdp_mid,
            }
        ),
        text().prop_map(|session| ClientMessage::Stop { session }),
    ]
}

/// JSON-ish input: valid messages with one byte changed, cut short, or arbitrary bytes.
fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (client_message(), any::<prop::sample::Index>(), any::<u8>()).prop_map(
        |(msg, at, byte)| {
            let mut bytes = serde_json::to_vec(&msg).unwrap();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            bytes
        },
    );
    let truncated = (client_message(), any::<prop::sample::Index>()).prop_map(|(msg, at)| {
        let bytes = serde_json::to_vec(&msg).unwrap();
        bytes[..at.index(bytes.len())].to_vec()
    });
    prop_oneof![
        mutated,
        truncated,
        proptest::collection::vec(any::<u8>(), 0..200),
        r#"\{"type":"[a-z-]{0,12}"(,"[a-z_]{1,10}":("[^"]{0,10}"|[0-9]{1,3}|true|null|\[\]|\{\}))*\}"#
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn every_valid_message_round_trips(msg in client_message()) {
        let json = serde_json::to_string(&msg).unwrap();
        let back: ClientMessage = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn arbitrary_input_never_panics_and_what_parses_round_trips(input in hostile_input()) {
        if let Ok(msg) = serde_json::from_slice::<ClientMessage>(&input) {
            let json = serde_json::to_string(&msg).unwrap();
            prop_assert_eq!(serde_json::from_str::<ClientMessage>(&json).unwrap(), msg);
        }
        let _ = serde_json::from_slice::<ServerMessage>(&input);
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = validate_name(text);
            let quoted = excerpt(text);
            prop_assert!(quoted.chars().count() <= MAX_ECHO_CHARS + 1);
        }
    }
}
