//! A TCP proxy in front of the API server that drops connections on demand: what a
//! load balancer restart or a network blip does to a client's watches. TLS passes
//! through it untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Shared {
    /// Bumped by [`TcpProxy::cut`]: every connection open at that moment ends.
    cuts: watch::Sender<u64>,
    /// While set, new connections are closed as soon as they are accepted.
    holding: AtomicBool,
    accepted: AtomicU64,
}

/// A running proxy; it stops (and its connections end) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port forwarding every connection to `target`.
    ///
    /// # Errors
    /// No port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            cuts: watch::channel(0).0,
            holding: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, target, Arc::clone(&shared)));
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Ends every connection open now, in both directions, without a goodbye: the
    /// client's requests and watches fail mid-stream.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// From now on, closes new connections as soon as they arrive (the server looks
    /// down) until [`TcpProxy::release`].
    pub fn hold(&self) {
        self.shared.holding.store(true, Ordering::SeqCst);
    }

    /// Lets connections through again.
    pub fn release(&self) {
        self.shared.holding.store(false, Ordering::SeqCst);
    }

    /// How many connections clients have opened through the proxy so far (refused
    /// ones included).
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.holding.load(Ordering::SeqCst) {
            drop(inbound);
            continue;
        }
        let mut cuts = shared.cuts.subscribe();
        cuts.mark_unchanged();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let (mut inbound, mut outbound) = (inbound, outbound);
            tokio::select! {
                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cuts.changed() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut buffer = [0u8; 4];
        stream.read_exact(&mut buffer).await?;
        Ok(buffer.to_vec())
    }

    #[tokio::test]
    async fn forwards_cuts_holds_and_releases() {
        let proxy = TcpProxy::start(echo_server().await)
            .await
            .expect("proxy starts");
        let mut first = TcpStream::connect(proxy.address()).await.expect("connects");
        assert_eq!(round_trip(&mut first).await.expect("echo"), b"ping");

        proxy.cut();
        assert!(
            round_trip(&mut first).await.is_err(),
            "a cut connection carries nothing more"
        );

        proxy.hold();
        let mut held = TcpStream::connect(proxy.address())
            .await
            .expect("the listener still accepts");
        assert!(round_trip(&mut held).await.is_err(), "held: closed at once");

        proxy.release();
        let mut again = TcpStream::connect(proxy.address()).await.expect("connects");
        assert_eq!(round_trip(&mut again).await.expect("echo"), b"ping");
        assert_eq!(proxy.connections(), 3);
    }
}
