//! PostgreSQL connections get `TCP_NODELAY`, as libpq and the JDBC driver set it.
//!
//! sqlx 0.9 connects without it (upstream: transact-rs/sqlx#4335, fixed after 0.9.0). Over
//! TLS that costs ~40 ms a transaction: sqlx hands rustls one message at a time and writes
//! each TLS record with its own `write(2)` (its socket adapter has no vectored write), so a
//! transaction's second record waits under Nagle's algorithm for the server's delayed ACK of
//! the first. A plain URL on a server with `ssl = on` negotiates TLS (`sslmode=prefer`), so
//! this is what users get by default: 11× fewer debits per second (docs/BENCHMARKS.md).
//!
//! sqlx gives no access to its socket, so each new connection asks the server for its own
//! client port (`inet_client_port()`) and sets the option on the one socket of this process
//! bound to that local port. Linux only (it reads `/proc/self/fd`); elsewhere, and on Unix
//! domain sockets, nothing is changed.

use sea_orm::sqlx::{self, PgConnection};

/// Turns Nagle's algorithm off on `conn`'s TCP socket. Returns whether it found the socket.
pub async fn set_nodelay(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let port: Option<i32> = sqlx::query_scalar("SELECT inet_client_port()")
        .fetch_one(&mut *conn)
        .await?;
    let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
        // A Unix domain socket: no Nagle.
        return Ok(true);
    };
    let found = nodelay_on_local_port(port);
    if !found {
        tracing::warn!(
            port,
            "could not find this PostgreSQL connection's socket to set TCP_NODELAY; over TLS each transaction may wait ~40 ms"
        );
    }
    Ok(found)
}

#[cfg(target_os = "linux")]
fn nodelay_on_local_port(port: u16) -> bool {
    use std::os::fd::{BorrowedFd, RawFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in entries.flatten() {
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: `raw` is a descriptor of this process, listed a moment ago; the borrow ends
        // within this iteration. If another thread closed it meanwhile, the calls below fail
        // (EBADF) or, should the number have been reused, act on that new descriptor: reading
        // its local address is harmless, and it is changed only if it is a TCP socket bound to
        // this very port (TCP_NODELAY on it is harmless too).
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let socket = socket2::SockRef::from(&fd);
        let is_ours = socket.peer_addr().is_ok()
            && socket
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_socket())
                .is_some_and(|addr| addr.port() == port);
        if is_ours && socket.set_tcp_nodelay(true).is_ok() {
            return true;
        }
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn nodelay_on_local_port(_port: u16) -> bool {
    false
}
