//! For programs that run the room elements in a process of their own (the `gst-room` command,
//! its benchmarks): GStreamer initialised with the plugin registered statically (no
//! `GST_PLUGIN_PATH` needed), gst-launch descriptions parsed into a pipeline, and a CA file
//! handed to every room element of it.

use std::path::Path;

use gst::glib;
use gst::prelude::*;

/// Initialises GStreamer and registers the room plugin (and what it needs) in this process.
pub fn init() -> Result<(), glib::BoolError> {
    gst::init().map_err(|err| glib::bool_error!("cannot initialise GStreamer: {err}"))?;
    crate::plugin_register_static()
        .map_err(|err| glib::bool_error!("registering the room plugin: {err}"))
}

/// Parses a gst-launch description into a pipeline; a single element is wrapped in one, as
/// gst-launch does.
pub fn parse_pipeline(description: &str) -> Result<gst::Pipeline, glib::BoolError> {
    let element = gst::parse::launch(description)
        .map_err(|err| glib::bool_error!("cannot build the pipeline: {err}"))?;
    match element.downcast::<gst::Pipeline>() {
        Ok(pipeline) => Ok(pipeline),
        Err(element) => {
            let pipeline = gst::Pipeline::new();
            pipeline.add(&element)?;
            Ok(pipeline)
        }
    }
}

/// Gives every room element of `pipeline` (roomsink, roomsrc) `tls-ca-file`, when set.
pub fn trust_ca_file(pipeline: &gst::Pipeline, ca_file: Option<&Path>) {
    let Some(path) = ca_file else { return };
    let path = path.display().to_string();
    for element in pipeline.iterate_recurse().into_iter().flatten() {
        if element.find_property("tls-ca-file").is_some()
            && element.find_property("server-url").is_some()
        {
            element.set_property("tls-ca-file", &path);
        }
    }
}
