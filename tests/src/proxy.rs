//! A TCP proxy on loopback that a test can take down (closing every connection) and bring up
//! again on the same port: a database or cache server going away and coming back, without
//! touching the shared server itself.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::free_port;

pub struct Proxy {
    /// The loopback port clients connect to instead of the target's.
    pub port: u16,
    target: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `target`, up and listening.
    pub async fn new(target: SocketAddr) -> Proxy {
        let mut p = Proxy {
            port: free_port(),
            target,
            acceptor: None,
        };
        p.up().await;
        p
    }

    /// Listens again and forwards each new connection to the target.
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy");
        let target = self.target;
        self.acceptor = Some(tokio::spawn(async move {
            // Dropped with the acceptor: aborting it cuts every forwarded connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Stops listening and cuts every connection.
    pub async fn down(&mut self) {
        if let Some(a) = self.acceptor.take() {
            a.abort();
            let _ = a.await;
        }
    }
}
