//! TEMPORARY: the signatures of the media engine crate (gst-room-sfu) as agreed, only so that
//! the server compiles before the crate is merged. Removed at the merge; never used in tests.
#![allow(dead_code, unused_variables)]

use std::net::{IpAddr, SocketAddr};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct SfuLimits {}

#[derive(Debug, Clone)]
pub struct SfuConfig {
    pub bind: SocketAddr,
    pub advertised: Vec<IpAddr>,
    pub limits: SfuLimits,
}

#[derive(Debug, Clone)]
pub struct Sfu;

#[derive(Debug, Clone)]
pub struct StreamKey {
    pub room: String,
    pub participant: String,
    pub stream: String,
}

#[derive(Debug, Clone, Default)]
pub struct SfuStats {
    pub sessions: usize,
    pub packets_forwarded_per_second: f64,
    pub dropped_datagrams: u64,
}

#[derive(Debug)]
pub enum SfuEvent {
    Connected { session: String },
    Failed { session: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
#[error("sfu")]
pub struct SfuError;

impl Sfu {
    pub async fn start(
        config: SfuConfig,
        cancel: CancellationToken,
    ) -> Result<(Sfu, mpsc::Receiver<SfuEvent>, JoinHandle<()>), SfuError> {
        Err(SfuError)
    }
    pub fn local_addr(&self) -> SocketAddr {
        unimplemented!()
    }
    pub fn stats(&self) -> SfuStats {
        unimplemented!()
    }
    pub async fn publish(
        &self,
        session: &str,
        key: StreamKey,
        offer: &str,
    ) -> Result<String, SfuError> {
        Err(SfuError)
    }
    pub async fn subscribe(
        &self,
        session: &str,
        key: StreamKey,
        audio: bool,
        video: bool,
    ) -> Result<String, SfuError> {
        Err(SfuError)
    }
    pub async fn answer(&self, session: &str, answer: &str) -> Result<(), SfuError> {
        Err(SfuError)
    }
    pub async fn remote_candidate(&self, session: &str, candidate: &str) -> Result<(), SfuError> {
        Err(SfuError)
    }
    pub async fn close(&self, session: &str) {}
}
