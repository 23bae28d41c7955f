//! Pad templates of the room elements.

/// Pad templates of raw video (names starting with "video") and raw audio (the others).
pub fn raw_pad_templates(
    direction: gst::PadDirection,
    presence: gst::PadPresence,
    names: &[&str],
) -> Vec<gst::PadTemplate> {
    names
        .iter()
        .map(|name| {
            let media = if name.starts_with("video") {
                "video/x-raw"
            } else {
                "audio/x-raw"
            };
            let caps = gst::Caps::builder(media).build();
            gst::PadTemplate::new(name, direction, presence, &caps).expect("valid template")
        })
        .collect()
}
