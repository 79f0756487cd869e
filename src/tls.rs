//! TLS on the gRPC port (rustls): the server's certificate and key, re-read when their files
//! change so a rotation (cert-manager renewing a Secret) needs no restart, and optionally
//! client certificates verified against a CA (mTLS).
//!
//! Handshakes run in tasks of their own (at most [`HANDSHAKE_TIMEOUT`] each), so a slow or
//! silent client never holds up the next connection; connections whose handshake succeeded
//! go to the server. A file that changes into something unusable (a half-written key, a
//! certificate that does not match it) is logged and the last good configuration kept.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, bail};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The files TLS is configured from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates issued by this CA.
    pub client_ca: Option<PathBuf>,
}

/// The files' bytes, to tell when they changed.
type Contents = Vec<Vec<u8>>;

impl TlsFiles {
    fn read(&self) -> anyhow::Result<Contents> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut contents = vec![read(&self.cert)?, read(&self.key)?];
        if let Some(ca) = &self.client_ca {
            contents.push(read(ca)?);
        }
        Ok(contents)
    }

    /// A server configuration from the files' `contents`.
    fn config(&self, contents: &Contents) -> anyhow::Result<Arc<ServerConfig>> {
        let certs = CertificateDer::pem_slice_iter(&contents[0])
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: not a PEM certificate chain", self.cert.display()))?;
        if certs.is_empty() {
            bail!("{}: no certificate in it", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_slice(&contents[1])
            .with_context(|| format!("{}: not a PEM private key", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match (&self.client_ca, contents.get(2)) {
            (Some(path), Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.with_context(|| format!("{}: not PEM", path.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("{}: not a CA certificate", path.display()))?;
                }
                if roots.is_empty() {
                    bail!("{}: no certificate in it", path.display());
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .with_context(|| format!("{}: unusable client CA", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "{} and {}: the key does not fit the certificate",
                self.cert.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The server's TLS configuration as of the last good read of its files.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<(Contents, Arc<ServerConfig>)>,
}

impl ServerTls {
    /// Reads and checks the files (an error names the file at fault).
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Self>> {
        let contents = files.read()?;
        let config = files.config(&contents)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new((contents, config)),
        }))
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Re-reads the files; takes them if they changed and make a good configuration. True if
    /// the configuration changed.
    fn reload(&self) -> bool {
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "TLS files unreadable; keeping the last good ones");
                return false;
            }
        };
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == contents {
            return false;
        }
        match self.files.config(&contents) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (contents, config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "new TLS files are unusable; keeping the last good ones");
                false
            }
        }
    }

    /// Connections on `listener` that completed a handshake, until `stop`; checks the files
    /// for changes every [`RELOAD_INTERVAL`] meanwhile.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut reload = tokio::time::interval(RELOAD_INTERVAL);
            reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sender.closed() => return,
                    _ = reload.tick() => {
                        let tls = self.clone();
                        // File reads off the runtime's workers.
                        let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
                        continue;
                    }
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors and the like: wait, then go on.
                            tracing::warn!(error = %err, "accepting a connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                // A reply's last HTTP/2 frame must not wait for a delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(self.config());
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(receiver)
    }
}

/// Client-side TLS options: the CA to verify the server with (instead of the system's roots)
/// and a client certificate for mTLS.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificate(s) to verify an https:// server with, instead of the system's roots
    #[arg(
        long,
        env = "ALLOT_TLS_CA",
        global = true,
        help_heading = "TLS options"
    )]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (mTLS)
    #[arg(
        long,
        env = "ALLOT_TLS_CLIENT_CERT",
        global = true,
        requires = "tls_client_key",
        help_heading = "TLS options"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM key of --tls-client-cert
    #[arg(
        long,
        env = "ALLOT_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert",
        help_heading = "TLS options"
    )]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// tonic's client configuration for these options.
    pub fn config(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut config = ClientTlsConfig::new();
        config = match &self.tls_ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config.with_enabled_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(config)
    }
}
