//! A TCP relay between the server and its PostgreSQL that a test can cut,
//! the way a database going down looks from the server: open connections
//! are closed and new ones are refused until it comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    /// Bumped on every cut: relays watching it close their sockets.
    cuts: watch::Sender<u64>,
}

impl TcpProxy {
    /// Relays a local port to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (cuts, _) = watch::channel(0u64);
        let proxy = TcpProxy {
            addr,
            down: down.clone(),
            cuts: cuts.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if down.load(Ordering::SeqCst) {
                    // Refused: closed at once, as a stopped server's port is.
                    drop(client);
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    /// The database "stops": every relayed connection is closed, new ones refused.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The database is back.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
