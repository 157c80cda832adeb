//! A TCP relay between the server and its PostgreSQL that a test can cut,
//! the way a stopped database looks from the server: open connections are
//! closed and the port is closed (connections are refused) until it comes
//! back on the same port.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    /// Bumped on every cut: relays watching it close their sockets.
    cuts: watch::Sender<u64>,
    accepting: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Relays a local port to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cuts, _) = watch::channel(0u64);
        let mut proxy = TcpProxy {
            addr,
            target,
            cuts,
            accepting: None,
        };
        proxy.accept_on(listener);
        proxy
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let (target, cuts) = (self.target, self.cuts.clone());
        self.accepting = Some(tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        }));
    }

    /// The database "stops": every relayed connection is closed, and the
    /// port is closed so new connections are refused.
    pub async fn cut(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
            let _ = accepting.await;
        }
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The database is back, on the same port.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the relay's port is free again");
        self.accept_on(listener);
    }
}
