//! A broker connection for a long-running process: reconnects (and re-declares the topology)
//! when the connection or the publish channel has died, instead of failing every publish until
//! a restart.

use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::config::AmqpConfig;
use lapin::{Channel, Connection};
use tokio::sync::Mutex;
use tracing::{info, warn};

struct Live {
    connection: Connection,
    publisher: Publisher,
}

/// The producer's link to RabbitMQ.
pub struct BrokerLink {
    config: AmqpConfig,
    topology: Topology,
    // A mutex, not a lock-free swap: concurrent callers during an outage wait for one
    // reconnect attempt instead of each opening a connection.
    live: Mutex<Option<Live>>,
}

async fn open(config: &AmqpConfig, topology: &Topology) -> anyhow::Result<Live> {
    let connection = amqp::connect(config, "buyonce-producer").await?;
    topology.declare(&connection).await?;
    let publisher = Publisher::new(&connection, topology.clone()).await?;
    Ok(Live {
        connection,
        publisher,
    })
}

impl BrokerLink {
    /// Connects, declares the topology and opens a confirm-mode publish channel.
    pub async fn connect(config: AmqpConfig, topology: Topology) -> anyhow::Result<Self> {
        let live = open(&config, &topology).await?;
        Ok(Self {
            config,
            topology,
            live: Mutex::new(Some(live)),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// A publisher on a live channel, reconnecting first if the old one died.
    pub async fn publisher(&self) -> anyhow::Result<Publisher> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if l.connection.status().connected() && l.publisher.channel().status().connected() {
                return Ok(l.publisher.clone());
            }
            warn!("broker connection lost; reconnecting");
        }
        if let Some(old) = live.take() {
            let _ = old.connection.close(200, "reconnecting".into()).await;
        }
        let fresh = open(&self.config, &self.topology).await?;
        info!("broker connection re-established");
        let publisher = fresh.publisher.clone();
        *live = Some(fresh);
        Ok(publisher)
    }

    /// A new channel on the live connection (reconnecting first if it died), for work other
    /// than publishing, such as draining the dead-letter queue. The caller closes it.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        self.publisher().await?;
        let live = self.live.lock().await;
        let l = live
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the broker connection is closed (shutting down)"))?;
        l.connection
            .create_channel()
            .await
            .map_err(|e| anyhow::anyhow!("opening a channel: {}", amqp::describe_error(&e)))
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        if let Some(l) = self.live.lock().await.take() {
            let _ = l.connection.close(200, "shutting down".into()).await;
        }
    }
}
