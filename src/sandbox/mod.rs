//! The sandbox: a local HTTP server that implements the Prospeo contract over a synthetic
//! directory of people and companies.
//!
//! It is both a product feature (try a pipeline without spending credits) and the stand-in for
//! the vendor in every test and benchmark. Start it in process with [`Sandbox::start`], or as
//! `prospeo sandbox`.
//!
//! Endpoints: `POST /bulk-enrich-person`, `POST /bulk-enrich-company`, `POST /enrich-person`, `GET /account-information`
//! (the vendor's), plus `GET /_sandbox/stats` and `POST /_sandbox/clock`
//! (`{"advance_seconds": N}`) for tests.

pub mod config;
pub mod directory;
pub mod generator;
mod quota;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{DEMO_KEY, Faults, SandboxConfig, SandboxKey};
pub use directory::{Directory, DirectoryError, Lookup};
pub use server::{FaultStats, KeyStats, SandboxStats};

use server::{Connection, KillableListener, Shared};

/// A running sandbox. Dropping it stops the server.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sandbox {
    /// Binds `config.bind` and serves in the background on the current tokio runtime.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Sandbox> {
        let listener = KillableListener(TcpListener::bind(config.bind).await?);
        let addr = listener.addr()?;
        let (shutdown, stopping) = watch::channel(false);
        let shared = Arc::new(Shared::new(config, stopping.clone()));
        let app =
            server::router(shared.clone()).into_make_service_with_connect_info::<Connection>();
        let mut stop = stopping;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                })
                .await
        });
        Ok(Sandbox {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give a client, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What every key did so far (the same numbers as `GET /_sandbox/stats`).
    pub fn stats(&self) -> SandboxStats {
        self.shared.stats()
    }

    /// Moves the rate-limit clock forward (the same as `POST /_sandbox/clock`).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(by);
    }

    /// Stops accepting connections, ends pending delays at once, and waits for the server.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Serves until `stop` resolves (for the command line).
    pub async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        stop.await;
        self.stop().await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
