//! Crash safety (issue 14, points 2, 4 and 5): real `allot serve` processes under load from
//! many concurrent clients, with faults thrown at them while the load goes on; afterwards the
//! ledger must hold exactly what was acknowledged. Three scenarios share the load and the
//! checks:
//!
//! * **Kills** (both databases): one server SIGKILLed at random moments and restarted on the
//!   same database and port.
//! * **Outages** (PostgreSQL): one server whose database is reached through a TCP proxy the
//!   test controls; at random moments the database goes away (connections cut and refused),
//!   becomes unreachable (packets held: a partition), restarts (PostgreSQL itself terminates
//!   allot's sessions, then refuses connections for a moment) or turns slow (every packet
//!   delayed). Health must turn NOT_SERVING while it is unreachable and SERVING once it is back;
//!   no call may answer INTERNAL or UNKNOWN, or take longer than its deadline.
//! * **Replicas** (PostgreSQL): three servers on one database, each request sent to one of
//!   them, one at a time SIGKILLed and restarted.
//! * **PowerCuts** (SQLite): as Kills, on a "disk" that keeps only what was synced: an
//!   `LD_PRELOAD` shim (`tests/fixtures/power_cut.c`) saves each database file's content at
//!   each `fsync`/`fdatasync`, and after every SIGKILL the files are put back to those copies
//!   (files never synced are deleted). A reply sent before the sync that covers its commit
//!   loses its effect at the next cut, and the checks below fail (they do: acknowledging
//!   without waiting for the sync fails this scenario with ~180 lost effects).
//!
//! Every scenario also reserves a quarter of its holds with a TTL of 1–3 s and gives each
//! wallet a daily allotment schedule whose first period starts seconds into the load: the
//! servers' sweepers must expire each hold nobody closed exactly once and grant each period
//! exactly once, through kills, outages and cuts.
//!
//! The load is a mix of Debit, BatchDebit, Reserve then Capture (below, at or above the hold)
//! or Release, and Refund (full or partial) of earlier debits and captures, on eight wallets
//! (two of them nearly empty, so that INSUFFICIENT_CREDITS happens), plus a few requests made
//! to be refused (an unpriced request type, a caller cap below the price, a refund larger
//! than its charge, a capture of a released hold). Every request has its own request_id and
//! ends in one of three states:
//!
//! * **acknowledged**: the server answered with its effect;
//! * **refused**: a definite refusal (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, …, or
//!   RESOURCE_EXHAUSTED `OVERLOADED`): nothing may have been applied;
//! * **in doubt**: UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, UNKNOWN, ABORTED, INTERNAL,
//!   transport errors (the process died under it, or the answer was lost).
//!
//! After the last fault the load stops, the ledger is read once (what the in-doubt requests had
//! done before their retry), and every in-doubt request is sent again twice with its
//! request_id, wallet by wallet: the second answer must equal the first (except that a refusal
//! for want of credits may turn into an effect once expiring holds free them, since a refused
//! request leaves no trace), and a request that had been applied must be answered as a replay. A sample of acknowledged requests is sent
//! again too (each must replay its answer). Every server is killed once more and one restarted,
//! and then, read back through the API (ExportTransactions, ListTransactions, GetBalance):
//!
//! * every acknowledged debit, capture, refund, hold and release is in the ledger exactly once,
//!   as answered (entry id, kind, wallet, units, reservation);
//! * nothing refused is (no entry carries its request_id);
//! * every in-doubt request has exactly one entry if its retries answered with an effect,
//!   none if they refused it;
//! * no entry exists that the test did not ask for;
//! * each wallet's posted balance is the sum of its entries' deltas and its newest entry's
//!   `balance_after`, and posted and reserved equal the model the test kept from the answers;
//! * `allot verify` passes on the database the last SIGKILL left behind, and no server
//!   generation panicked.
//!
//! Short mode (CI: 5 faults per scenario, under a minute each; the scenarios run one after
//! another):
//!
//! ```text
//! cargo test --test chaos -- --nocapture
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test chaos -- --nocapture
//! ```
//!
//! Long mode (25 faults; `ALLOT_CHAOS_SEED` replays a run's choices, `ALLOT_CHAOS_CLIENTS`
//! sets the number of concurrent clients, 24 by default; name one scenario's test to run it
//! alone):
//!
//! ```text
//! ALLOT_CHAOS_FAULTS=25 cargo test --test chaos -- --nocapture
//! ALLOT_CHAOS_FAULTS=25 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test --test chaos -- --nocapture
//! ALLOT_CHAOS_FAULTS=25 ALLOT_CHAOS_SEED=12345 cargo test --test chaos sigkilled -- --nocapture
//! ```
//!
//! The seed is printed at the start and in every failure. The fault moments and every client's
//! choices follow from it; the interleaving of the clients (and so which requests a kill
//! catches) does not. A failing run keeps its database (the path or URL is printed).

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use allot::proto::{self, TransactionKind, ledger_service_client::LedgerServiceClient};
use common::{
    process::{binary, build_shim, free_port, health_becomes, tail, wait_ready},
    *,
};
use futures::future::join_all;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rust_decimal::Decimal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

/// Faults (kills or outages) in the short mode (what CI runs); `ALLOT_CHAOS_FAULTS` sets
/// another number.
const SHORT_FAULTS: usize = 5;
/// Concurrent clients, unless `ALLOT_CHAOS_CLIENTS` says otherwise.
const CLIENTS: usize = 24;
/// The `grpc-timeout` of every call of the load.
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// How often a retry after the load is sent again while it answers ABORTED, UNAVAILABLE or
/// OVERLOADED (the request is not settled until it answers with an effect or a refusal).
const MAX_ATTEMPTS: u32 = 40;
/// How many acknowledged requests are sent again after the load (each must replay).
const REPLAY_SAMPLE: usize = 200;
/// The longest TTL of a short hold.
const SHORT_TTL_SECONDS: i64 = 3;
/// Each wallet's one grant: the two poor wallets run dry, the others never do.
const POOR_GRANT: &str = "300";
const RICH_GRANT: &str = "10000000";
const WALLETS: usize = 8;
const POOR_WALLETS: usize = 2;

// ---- the server process ----------------------------------------------------------------------

/// One `allot serve` at a fixed address, killed and started again; the clients take its
/// channel from `channel` (`None` while it is down).
struct Server {
    /// Names its logs: `<name>-<generation>.log`.
    name: String,
    /// PowerCuts: the disk that loses unsynced writes at a kill.
    power: Option<Power>,
    url: String,
    addr: String,
    logs: PathBuf,
    child: Option<Child>,
    /// Processes started so far (each logs to `serve-<n>.log`).
    generation: usize,
    channel: watch::Sender<Option<Channel>>,
    startups: Vec<Duration>,
}

impl Server {
    fn new(name: &str, url: &str, logs: &Path) -> Server {
        Server {
            name: name.to_string(),
            power: None,
            url: url.to_string(),
            addr: format!("127.0.0.1:{}", free_port()),
            logs: logs.to_path_buf(),
            child: None,
            generation: 0,
            channel: watch::Sender::new(None),
            startups: Vec::new(),
        }
    }

    /// Starts the next process on the same database and address; returns once it answers
    /// SERVING (and publishes its channel). A port still held by the killed process is tried
    /// again; any other failure to start fails the test with the process's log.
    async fn start(&mut self) {
        let started = Instant::now();
        let mut failures = Vec::new();
        for attempt in 0..50 {
            let log = self.log_path(self.generation);
            self.generation += 1;
            let stderr = File::create(&log).expect("create log file");
            let mut command = binary();
            command
                .current_dir(&self.logs)
                .args(["serve", "--check-wallet-cache", "--listen", &self.addr])
                .env("DATABASE_URL", &self.url)
                .env("ALLOT_JWT_HS256_SECRET", SECRET)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr));
            if let Some(power) = &self.power {
                command
                    .env("LD_PRELOAD", &power.shim)
                    .env("ALLOT_TEST_POWER_DATA", &power.data)
                    .env("ALLOT_TEST_POWER_SYNCED", &power.synced);
            }
            let mut child = command.spawn().expect("spawn allot serve");
            match wait_ready(&mut child, &self.addr, None).await {
                Ok(channel) => {
                    self.child = Some(child);
                    self.channel.send_replace(Some(channel));
                    self.startups.push(started.elapsed());
                    return;
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = tail(&log, 40);
                    let port_taken = text.contains("in use") || text.contains("os error 98");
                    failures.push(format!("attempt {attempt}: {why}\n{text}"));
                    if !port_taken {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!(
            "allot serve did not start again on {} ({}):\n{}",
            self.addr,
            self.url,
            failures.join("\n")
        );
    }

    /// SIGKILLs the running process (the clients see it gone first). Returns how it had
    /// exited if it was no longer running: it died by itself.
    fn kill(&mut self) -> Option<std::process::ExitStatus> {
        self.channel.send_replace(None);
        let mut child = self.child.take()?;
        let exited = child.try_wait().ok().flatten();
        // `Child::kill` is SIGKILL on Unix: no shutdown, no flush, no goodbye.
        let _ = child.kill();
        let _ = child.wait();
        if let Some(power) = &mut self.power {
            power.cut();
        }
        exited
    }

    fn log_path(&self, generation: usize) -> PathBuf {
        self.logs.join(format!("{}-{generation}.log", self.name))
    }

    /// Every generation's log: (file name, text).
    fn logs(&self) -> Vec<(String, String)> {
        (0..self.generation)
            .map(|n| {
                let path = self.log_path(n);
                (
                    format!("{}-{n}.log", self.name),
                    std::fs::read_to_string(path).unwrap_or_default(),
                )
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() && self.generation > 0 {
            eprintln!(
                "---- last lines of {}-{}.log ----\n{}",
                self.name,
                self.generation - 1,
                tail(&self.log_path(self.generation - 1), 40)
            );
        }
        self.kill();
    }
}

// ---- a disk that loses unsynced writes ------------------------------------------------------

/// The SQLite database's directory on a "disk" that keeps only what was synced
/// (`tests/fixtures/power_cut.c`): every kill of the server is a power cut.
struct Power {
    /// The `LD_PRELOAD` library.
    shim: PathBuf,
    /// The database's directory (canonical: the shim compares `/proc/self/fd` links with it).
    data: PathBuf,
    /// What each file held at its last sync.
    synced: PathBuf,
    /// Cuts so far, and the bytes they took away (written, never synced).
    cuts: usize,
    lost_bytes: u64,
}

impl Power {
    /// For the SQLite database at `url`, after `allot migrate` closed it cleanly (so what is
    /// on disk now is durable).
    fn new(url: &str, work: &Path) -> Power {
        let file = url
            .trim_start_matches("sqlite://")
            .split('?')
            .next()
            .expect("a SQLite path");
        let data = std::fs::canonicalize(Path::new(file).parent().expect("a directory"))
            .expect("the database directory");
        let synced = work.join("synced");
        std::fs::create_dir_all(&synced).expect("synced dir");
        for entry in std::fs::read_dir(&data).expect("read the database directory") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, synced.join(path.file_name().expect("name")))
                .expect("copy a durable file");
        }
        let source = std::fs::read_to_string(fixture("power_cut.c")).expect("the shim source");
        Power {
            shim: build_shim(work, "power_cut", &source),
            data,
            synced,
            cuts: 0,
            lost_bytes: 0,
        }
    }

    /// The server is dead: every file goes back to what its last sync made durable; a file
    /// never synced is gone.
    fn cut(&mut self) {
        self.cuts += 1;
        let mut names: HashSet<std::ffi::OsString> = HashSet::new();
        for entry in std::fs::read_dir(&self.data).expect("read the database directory") {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name").to_os_string();
            let saved = self.synced.join(&name);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if saved.exists() {
                let kept = std::fs::copy(&saved, &path).expect("restore a synced file");
                self.lost_bytes += size.saturating_sub(kept);
            } else {
                std::fs::remove_file(&path).expect("drop a file never synced");
                self.lost_bytes += size;
            }
            names.insert(name);
        }
        // A file removed since its last sync comes back.
        for entry in std::fs::read_dir(&self.synced).expect("read the synced copies") {
            let saved = entry.expect("entry").path();
            let name = saved.file_name().expect("name").to_os_string();
            if !name.to_string_lossy().starts_with('.') && !names.contains(&name) {
                std::fs::copy(&saved, self.data.join(&name)).expect("restore a removed file");
            }
        }
    }
}

// ---- the database, through a proxy the test controls ---------------------------------------

/// What the proxy does with the traffic between allot and PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Up,
    /// Every connection cut, new ones closed at once (the database is gone).
    Down,
    /// Nothing forwarded, connections kept open (a network partition: packets dropped).
    Stalled,
    /// Every chunk delayed this long.
    Slow(Duration),
}

/// A TCP proxy in front of PostgreSQL.
struct Proxy {
    /// The database URL through the proxy.
    url: String,
    mode: watch::Sender<Mode>,
    /// The local ports of the proxy's connections to PostgreSQL (how `pg_stat_activity` sees
    /// allot's sessions).
    upstream_ports: Arc<std::sync::Mutex<HashSet<u16>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(direct_url: &str) -> Proxy {
        let (head, rest) = direct_url
            .split_once('@')
            .expect("a postgres://user@host URL");
        let (target, tail) = rest.split_once('/').expect("a URL with a database");
        let target = tokio::net::lookup_host(target)
            .await
            .expect("resolve the database host")
            .next()
            .expect("an address for the database host");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("{head}@{}/{tail}", listener.local_addr().expect("address"));
        let mode = watch::Sender::new(Mode::Up);
        let upstream_ports = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let accept = tokio::spawn({
            let mode = mode.clone();
            let ports = upstream_ports.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *mode.borrow() == Mode::Down {
                        continue; // closed at once
                    }
                    tokio::spawn(relay(client, target, mode.subscribe(), ports.clone()));
                }
            }
        });
        Proxy {
            url,
            mode,
            upstream_ports,
            accept,
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn upstream_ports(&self) -> Vec<u16> {
        self.upstream_ports
            .lock()
            .expect("ports")
            .iter()
            .copied()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Mode::Down);
    }
}

/// Relays one connection until either side closes it or the proxy goes down.
async fn relay(
    client: tokio::net::TcpStream,
    target: std::net::SocketAddr,
    mut mode: watch::Receiver<Mode>,
    ports: Arc<std::sync::Mutex<HashSet<u16>>>,
) {
    let server = match tokio::net::TcpStream::connect(target).await {
        Ok(server) => server,
        Err(_) => return,
    };
    let port = server.local_addr().map(|a| a.port()).unwrap_or_default();
    ports.lock().expect("ports").insert(port);
    let (from_client, to_client) = client.into_split();
    let (from_server, to_server) = server.into_split();
    tokio::select! {
        _ = pump(from_client, to_server, mode.clone()) => {}
        _ = pump(from_server, to_client, mode.clone()) => {}
        _ = mode.wait_for(|m| *m == Mode::Down) => {}
    }
    ports.lock().expect("ports").remove(&port);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        // Held while stalled; delayed while slow.
        let now = *mode
            .wait_for(|m| *m != Mode::Stalled)
            .await
            .map_err(std::io::Error::other)?;
        if let Mode::Slow(delay) = now {
            tokio::time::sleep(delay).await;
        }
        to.write_all(&buffer[..n]).await?;
    }
}

/// One database fault, chosen at random, while the load goes on; returns what happened.
/// Health must turn NOT_SERVING while the database is unreachable and SERVING once it is
/// back (a failure otherwise).
async fn outage(
    rng: &mut StdRng,
    proxy: &Proxy,
    direct_url: &str,
    channel: &Channel,
    failures: &mut Vec<String>,
) -> String {
    let began = Instant::now();
    let unreachable = |mode: Mode| async move {
        proxy.set(mode);
        health_becomes(channel, ServingStatus::NotServing, Duration::from_secs(8))
            .await
            .then(|| began.elapsed())
    };
    let what = match rng.random_range(0..4) {
        0 | 1 => {
            let (mode, label) = if rng.random_bool(0.5) {
                (Mode::Down, "gone (connections cut and refused)")
            } else {
                (Mode::Stalled, "unreachable (packets dropped)")
            };
            let noticed = unreachable(mode).await;
            if noticed.is_none() {
                failures.push(format!(
                    "health stayed SERVING 8 s into a database outage ({label})"
                ));
            }
            tokio::time::sleep(millis(rng.random_range(200..1500))).await;
            let lasted = began.elapsed();
            proxy.set(Mode::Up);
            format!(
                "database {label} for {lasted:.1?}, NOT_SERVING after {:.1?}",
                noticed.unwrap_or_default()
            )
        }
        2 => {
            // A restart: PostgreSQL ends every session of allot (57P01), then refuses
            // connections for a moment.
            let ports = proxy.upstream_ports();
            let database = sea_orm::Database::connect(direct_url)
                .await
                .expect("connect to the database directly");
            let list = ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            if !ports.is_empty() {
                use sea_orm::ConnectionTrait;
                database
                    .execute_unprepared(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE client_port IN ({list})"
                    ))
                    .await
                    .expect("terminate allot's sessions");
            }
            let _ = database.close().await;
            proxy.set(Mode::Down);
            tokio::time::sleep(millis(rng.random_range(100..1000))).await;
            proxy.set(Mode::Up);
            format!(
                "database restarted: {} sessions terminated, down {:.1?}",
                ports.len(),
                began.elapsed()
            )
        }
        _ => {
            let delay = millis(rng.random_range(5..50));
            proxy.set(Mode::Slow(delay));
            tokio::time::sleep(millis(rng.random_range(1000..2500))).await;
            proxy.set(Mode::Up);
            format!(
                "database slow ({delay:?} per packet) for {:.1?}",
                began.elapsed()
            )
        }
    };
    let back = Instant::now();
    if !health_becomes(channel, ServingStatus::Serving, Duration::from_secs(15)).await {
        failures.push(format!(
            "health not SERVING 15 s after the database came back ({what})"
        ));
    }
    format!("{what}; SERVING {:.1?} after it was back", back.elapsed())
}

// ---- requests and what they answered ---------------------------------------------------------

/// What a request did, as far as the client can tell.
#[derive(Clone, Debug)]
enum Seen {
    /// Acknowledged, with its effect.
    Applied(Effect),
    /// A definite refusal: nothing applied.
    Refused {
        code: Code,
        reason: String,
        message: String,
    },
    /// No definite answer: it may or may not have been applied.
    InDoubt(String),
}

/// The effect an answer reports: the entry (a debit's, capture's or refund's transaction id;
/// a hold's reservation id for Reserve and Release) and its units.
#[derive(Clone, Debug)]
struct Effect {
    id: String,
    units: Decimal,
    /// Debit and capture answers say whether they replay an earlier request.
    replayed: Option<bool>,
}

impl Seen {
    fn label(&self) -> String {
        match self {
            Seen::Applied(_) => "acknowledged".to_string(),
            Seen::Refused { code, reason, .. } => format!("refused {code:?}/{reason}"),
            Seen::InDoubt(why) => format!("in doubt ({})", why.split(':').next().unwrap_or("")),
        }
    }

    fn reason(&self) -> &str {
        match self {
            Seen::Refused { reason, .. } => reason,
            _ => "",
        }
    }

    /// The same answer: the same effect, or the same refusal.
    fn same_as(&self, other: &Seen) -> bool {
        match (self, other) {
            (Seen::Applied(a), Seen::Applied(b)) => a.id == b.id && a.units == b.units,
            (
                Seen::Refused {
                    code: c1,
                    reason: r1,
                    ..
                },
                Seen::Refused {
                    code: c2,
                    reason: r2,
                    ..
                },
            ) => c1 == c2 && r1 == r2,
            _ => false,
        }
    }

    /// Worth sending again now: no definite answer, or refused for overload.
    fn retryable(&self) -> bool {
        matches!(self, Seen::InDoubt(_)) || self.reason() == "OVERLOADED"
    }
}

/// The ErrorInfo reason of a status ("" without one).
fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// A code that says the request was refused and not applied.
fn definite_refusal(code: Code, reason: &str) -> bool {
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange => true,
        Code::ResourceExhausted => reason == "OVERLOADED",
        _ => false,
    }
}

fn classify(code: Code, reason: String, message: String) -> Seen {
    if definite_refusal(code, &reason) {
        Seen::Refused {
            code,
            reason,
            message,
        }
    } else {
        Seen::InDoubt(format!("{code:?} {reason}: {message}"))
    }
}

fn from_status(status: &Status) -> Seen {
    classify(status.code(), reason(status), status.message().to_string())
}

fn units_of(text: &str) -> Decimal {
    if text.is_empty() {
        Decimal::ZERO
    } else {
        dec(text)
    }
}

fn charged(response: proto::DebitResponse) -> Seen {
    match response.transaction {
        Some(t) => Seen::Applied(Effect {
            id: t.id,
            units: units_of(&t.units),
            replayed: Some(response.replayed),
        }),
        None => Seen::InDoubt("Ok without a transaction".into()),
    }
}

fn held(reservation: proto::Reservation) -> Seen {
    Seen::Applied(Effect {
        id: reservation.id,
        units: units_of(&reservation.units),
        replayed: None,
    })
}

fn entry(t: proto::Transaction) -> Seen {
    Seen::Applied(Effect {
        id: t.id,
        units: units_of(&t.units),
        replayed: None,
    })
}

fn batch_item(result: proto::DebitResult) -> Seen {
    match result.result {
        Some(proto::debit_result::Result::Response(response)) => charged(response),
        Some(proto::debit_result::Result::Error(error)) => {
            classify(Code::from_i32(error.code), error.reason, error.message)
        }
        None => Seen::InDoubt("batch result without an outcome".into()),
    }
}

/// One call to the ledger; a batch carries several requests (one request_id each).
#[derive(Clone, Debug)]
enum Call {
    Debit(proto::DebitRequest),
    Batch(proto::BatchDebitRequest),
    Reserve(proto::ReserveRequest),
    Capture(proto::CaptureReservationRequest),
    Release(proto::ReleaseReservationRequest),
    Refund(proto::RefundRequest),
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

fn seen<T>(answer: Result<tonic::Response<T>, Status>, ok: impl FnOnce(T) -> Seen) -> Seen {
    match answer {
        Ok(response) => ok(response.into_inner()),
        Err(status) => from_status(&status),
    }
}

impl Call {
    fn requests(&self) -> usize {
        match self {
            Call::Batch(batch) => batch.debits.len(),
            _ => 1,
        }
    }

    /// Sends the call once: one answer per request it carries.
    async fn send(&self, channel: Channel, token: &str) -> Vec<Seen> {
        let n = self.requests();
        // The deadline travels as grpc-timeout; this is the client's own backstop.
        match tokio::time::timeout(CALL_DEADLINE + Duration::from_secs(2), async {
            let mut client = LedgerServiceClient::with_interceptor(channel, bearer(token));
            match self {
                Call::Debit(r) => vec![seen(client.debit(timed(r.clone())).await, charged)],
                Call::Batch(r) => match client.batch_debit(timed(r.clone())).await {
                    Ok(response) => {
                        let results = response.into_inner().results;
                        if results.len() == n {
                            results.into_iter().map(batch_item).collect()
                        } else {
                            let why = format!("{} results for {n} debits", results.len());
                            vec![Seen::InDoubt(why); n]
                        }
                    }
                    Err(status) => vec![from_status(&status); n],
                },
                Call::Reserve(r) => vec![seen(client.reserve(timed(r.clone())).await, held)],
                Call::Capture(r) => vec![seen(
                    client.capture_reservation(timed(r.clone())).await,
                    charged,
                )],
                Call::Release(r) => vec![seen(
                    client.release_reservation(timed(r.clone())).await,
                    held,
                )],
                Call::Refund(r) => vec![seen(client.refund(timed(r.clone())).await, entry)],
            }
        })
        .await
        {
            Ok(answers) => answers,
            Err(_) => vec![Seen::InDoubt("Timeout: no answer (client backstop)".into()); n],
        }
    }
}

// ---- the load --------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Debit,
    BatchDebit,
    Reserve,
    Capture,
    Release,
    Refund,
}

impl Kind {
    /// The ledger entry the request writes.
    fn entry_kind(self) -> TransactionKind {
        match self {
            Kind::Debit | Kind::BatchDebit => TransactionKind::Debit,
            Kind::Reserve => TransactionKind::Reserve,
            Kind::Capture => TransactionKind::Capture,
            Kind::Release => TransactionKind::Release,
            Kind::Refund => TransactionKind::Refund,
        }
    }
}

/// A hold the test knows to be open (its Reserve was acknowledged or settled by retries).
#[derive(Clone, Debug)]
struct Hold {
    wallet: usize,
    id: String,
    units: Decimal,
    /// Made with a TTL of seconds: the sweeper may expire it during the load.
    short: bool,
}

/// A debit or capture that may be refunded.
#[derive(Clone, Debug)]
struct Charge {
    wallet: usize,
    id: String,
    units: Decimal,
}

/// One request of the load and everything known about it.
#[derive(Clone, Debug)]
struct Record {
    kind: Kind,
    request_id: String,
    wallet: usize,
    /// The call that sends this request (alone) again.
    call: Call,
    /// Capture and Release: the hold.
    hold: Option<Hold>,
    /// Refund: the charge it refunds.
    charge: Option<Charge>,
    /// Made to be refused.
    invalid: bool,
    /// The answer during the load.
    seen: Seen,
    /// In doubt: the two answers of its retries after the load.
    retries: Option<(Seen, Seen)>,
    /// In doubt: whether the ledger had its entry before the retries.
    applied_before_retry: Option<bool>,
    /// How long the call took to answer during the load.
    took: Duration,
    /// Reserve: made with a TTL of seconds.
    short: bool,
}

impl Record {
    /// The effect the request had in the end, once its retries settled it.
    fn effect(&self) -> Option<&Effect> {
        match (&self.seen, &self.retries) {
            (Seen::Applied(effect), _) => Some(effect),
            (Seen::InDoubt(_), Some((Seen::Applied(effect), _))) => Some(effect),
            // Refused for want of credits, then applied once holds had expired.
            (Seen::InDoubt(_), Some((Seen::Refused { .. }, Seen::Applied(effect)))) => Some(effect),
            _ => None,
        }
    }
}

/// One wallet of the test.
#[derive(Clone, Debug)]
struct TestWallet {
    label: String,
    account_id: String,
    wallet_id: String,
    granted: Decimal,
}

/// Each wallet's daily allotment schedule, whose first period starts seconds into the load:
/// some server's sweeper must grant it exactly once, kills and outages notwithstanding.
const SCHEDULED: &str = "100";

struct Load {
    wallets: Vec<TestWallet>,
    token: String,
    /// The servers' channels (`None` while one is down); each request goes to one of those up.
    channels: Vec<watch::Receiver<Option<Channel>>>,
    stop: CancellationToken,
    seed: u64,
}

/// The next request(s) a client sends, before sending.
struct Planned {
    call: Call,
    items: Vec<Record>,
}

fn pick_wallet(rng: &mut StdRng) -> usize {
    // A quarter of the requests go to the two poor wallets.
    if rng.random_bool(0.25) {
        rng.random_range(0..POOR_WALLETS)
    } else {
        rng.random_range(POOR_WALLETS..WALLETS)
    }
}

impl Load {
    fn debit_request(
        &self,
        rng: &mut StdRng,
        wallet: usize,
        request_id: String,
    ) -> proto::DebitRequest {
        let mut request = debit_request(&self.wallets[wallet].account_id, "req", &request_id);
        match rng.random_range(0..3) {
            0 => {}
            1 => request.request_type = "img".into(),
            _ => {
                request.request_type = "chat".into();
                let tokens = rng.random_range(0..60_000).to_string();
                request.quantities = quantities(&[("output_tokens", &tokens)]);
            }
        }
        request
    }

    fn record(
        &self,
        kind: Kind,
        request_id: &str,
        wallet: usize,
        call: Call,
        hold: Option<Hold>,
        invalid: bool,
    ) -> Record {
        Record {
            kind,
            request_id: request_id.to_string(),
            wallet,
            call,
            hold,
            charge: None,
            invalid,
            seen: Seen::InDoubt("not sent".into()),
            retries: None,
            applied_before_retry: None,
            took: Duration::ZERO,
            short: false,
        }
    }

    fn single(&self, record: Record) -> Planned {
        Planned {
            call: record.call.clone(),
            items: vec![record],
        }
    }

    /// Chooses the next request of a client from what it holds.
    fn plan(
        &self,
        rng: &mut StdRng,
        client: usize,
        n: usize,
        holds: &mut Vec<Hold>,
        charges: &mut Vec<Charge>,
        released: &[Hold],
    ) -> Planned {
        let id = |what: &str| format!("chaos-{:x}-c{client}-{n}-{what}", self.seed);
        let roll = rng.random_range(0..100);
        match roll {
            30..45 => {
                let size = rng.random_range(2..=6);
                let mut debits = Vec::new();
                let mut items = Vec::new();
                let spoilt = rng.random_bool(0.1).then(|| rng.random_range(0..size));
                for i in 0..size {
                    let request_id = id(&format!("batch{i}"));
                    let wallet = pick_wallet(rng);
                    let mut request = self.debit_request(rng, wallet, request_id.clone());
                    let invalid = spoilt == Some(i);
                    if invalid {
                        request.request_type = "no-such-request-type".into();
                        request.quantities.clear();
                    }
                    let alone = Call::Batch(proto::BatchDebitRequest {
                        debits: vec![request.clone()],
                    });
                    debits.push(request);
                    items.push(self.record(
                        Kind::BatchDebit,
                        &request_id,
                        wallet,
                        alone,
                        None,
                        invalid,
                    ));
                }
                Planned {
                    call: Call::Batch(proto::BatchDebitRequest { debits }),
                    items,
                }
            }
            45..65 => {
                let request_id = id("reserve");
                let wallet = pick_wallet(rng);
                // A quarter of the holds expire within seconds (the sweeper releases them).
                let short = rng.random_bool(0.25);
                let mut request = proto::ReserveRequest {
                    account_id: self.wallets[wallet].account_id.clone(),
                    ttl: Some(prost_types::Duration {
                        seconds: if short {
                            rng.random_range(1..=SHORT_TTL_SECONDS)
                        } else {
                            3600
                        },
                        nanos: 0,
                    }),
                    request_id: request_id.clone(),
                    ..Default::default()
                };
                if rng.random_bool(0.3) {
                    // Priced by the card from estimated quantities.
                    request.request_type = "chat".into();
                    let tokens = rng.random_range(0..60_000).to_string();
                    request.quantities = quantities(&[("output_tokens", &tokens)]);
                } else {
                    request.units = rng.random_range(1..=20).to_string();
                }
                let mut record = self.record(
                    Kind::Reserve,
                    &request_id,
                    wallet,
                    Call::Reserve(request),
                    None,
                    false,
                );
                record.short = short;
                self.single(record)
            }
            65..80 if !holds.is_empty() => {
                let hold = holds.swap_remove(rng.random_range(0..holds.len()));
                let request_id = id("capture");
                let ceiling = hold.units.ceil().try_into().unwrap_or(1u64).max(1);
                // Mostly at or below the hold; sometimes above it (the difference must be
                // available).
                let units = if rng.random_bool(0.15) {
                    ceiling + rng.random_range(1..=3)
                } else {
                    rng.random_range(1..=ceiling)
                };
                let request = proto::CaptureReservationRequest {
                    reservation_id: hold.id.clone(),
                    units: units.to_string(),
                    request_id: request_id.clone(),
                    ..Default::default()
                };
                let wallet = hold.wallet;
                self.single(self.record(
                    Kind::Capture,
                    &request_id,
                    wallet,
                    Call::Capture(request),
                    Some(hold),
                    false,
                ))
            }
            80..88 if !holds.is_empty() => {
                let hold = holds.swap_remove(rng.random_range(0..holds.len()));
                let request_id = id("release");
                let request = proto::ReleaseReservationRequest {
                    reservation_id: hold.id.clone(),
                    request_id: request_id.clone(),
                };
                let wallet = hold.wallet;
                self.single(self.record(
                    Kind::Release,
                    &request_id,
                    wallet,
                    Call::Release(request),
                    Some(hold),
                    false,
                ))
            }
            88..97 if !charges.is_empty() => {
                let charge = charges.swap_remove(rng.random_range(0..charges.len()));
                let request_id = id("refund");
                let whole = charge.units.floor();
                // Everything (no units), or part of it.
                let units = if rng.random_bool(0.5) || whole < Decimal::ONE {
                    String::new()
                } else {
                    let whole: u64 = whole.try_into().unwrap_or(1);
                    rng.random_range(1..=whole).to_string()
                };
                let request = proto::RefundRequest {
                    transaction_id: charge.id.clone(),
                    units,
                    reason: "chaos".into(),
                    request_id: request_id.clone(),
                };
                let mut record = self.record(
                    Kind::Refund,
                    &request_id,
                    charge.wallet,
                    Call::Refund(request),
                    None,
                    false,
                );
                record.charge = Some(charge);
                self.single(record)
            }
            97..100 => self.plan_invalid(rng, &id, charges, released),
            _ => {
                let request_id = id("debit");
                let wallet = pick_wallet(rng);
                let request = self.debit_request(rng, wallet, request_id.clone());
                self.single(self.record(
                    Kind::Debit,
                    &request_id,
                    wallet,
                    Call::Debit(request),
                    None,
                    false,
                ))
            }
        }
    }

    /// A request the ledger must refuse.
    fn plan_invalid(
        &self,
        rng: &mut StdRng,
        id: &dyn Fn(&str) -> String,
        charges: &[Charge],
        released: &[Hold],
    ) -> Planned {
        match rng.random_range(0..4) {
            0 if !charges.is_empty() => {
                // More than the charge: REFUND_EXCEEDS_CHARGE whatever was refunded before.
                let charge = &charges[rng.random_range(0..charges.len())];
                let request_id = id("over-refund");
                let request = proto::RefundRequest {
                    transaction_id: charge.id.clone(),
                    units: (charge.units + Decimal::ONE).to_string(),
                    reason: "chaos: more than charged".into(),
                    request_id: request_id.clone(),
                };
                let mut record = self.record(
                    Kind::Refund,
                    &request_id,
                    charge.wallet,
                    Call::Refund(request),
                    None,
                    true,
                );
                record.charge = Some(charge.clone());
                self.single(record)
            }
            1 if !released.is_empty() => {
                let hold = released[rng.random_range(0..released.len())].clone();
                let request_id = id("capture-released");
                let request = proto::CaptureReservationRequest {
                    reservation_id: hold.id.clone(),
                    units: "1".into(),
                    request_id: request_id.clone(),
                    ..Default::default()
                };
                let wallet = hold.wallet;
                self.single(self.record(
                    Kind::Capture,
                    &request_id,
                    wallet,
                    Call::Capture(request),
                    Some(hold),
                    true,
                ))
            }
            2 => {
                // `img` costs 4: a caller cap of 1 refuses it.
                let request_id = id("over-cap");
                let wallet = pick_wallet(rng);
                let mut request =
                    debit_request(&self.wallets[wallet].account_id, "img", &request_id);
                request.max_units = "1".into();
                self.single(self.record(
                    Kind::Debit,
                    &request_id,
                    wallet,
                    Call::Debit(request),
                    None,
                    true,
                ))
            }
            _ => {
                let request_id = id("unpriced");
                let wallet = pick_wallet(rng);
                let request = debit_request(
                    &self.wallets[wallet].account_id,
                    "no-such-request-type",
                    &request_id,
                );
                self.single(self.record(
                    Kind::Debit,
                    &request_id,
                    wallet,
                    Call::Debit(request),
                    None,
                    true,
                ))
            }
        }
    }

    /// One client: sends requests one after another until told to stop, waiting while the
    /// server is down; returns every request it sent.
    async fn client(self: Arc<Self>, client: usize) -> Vec<Record> {
        let mut rng = StdRng::seed_from_u64(
            self.seed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut channels = self.channels.clone();
        let mut holds: Vec<Hold> = Vec::new();
        let mut charges: Vec<Charge> = Vec::new();
        let mut released: Vec<Hold> = Vec::new();
        let mut records = Vec::new();
        for n in 0.. {
            // A server that is up, starting from a random one; if none is, wait for that one.
            let first = rng.random_range(0..channels.len());
            let up = (0..channels.len())
                .map(|i| (first + i) % channels.len())
                .find(|&i| channels[i].borrow().is_some())
                .unwrap_or(first);
            let channel = tokio::select! {
                _ = self.stop.cancelled() => break,
                up = channels[up].wait_for(Option::is_some) => match up {
                    Ok(channel) => channel.clone().expect("a running server"),
                    Err(_) => break,
                },
            };
            let planned = self.plan(&mut rng, client, n, &mut holds, &mut charges, &released);
            let sent = Instant::now();
            let answers = planned.call.send(channel, &self.token).await;
            let took = sent.elapsed();
            let (mut doubt, mut unavailable) = (false, false);
            for (mut record, answer) in planned.items.into_iter().zip(answers) {
                record.seen = answer;
                record.took = took;
                doubt |= matches!(record.seen, Seen::InDoubt(_));
                unavailable |=
                    matches!(&record.seen, Seen::InDoubt(why) if why.starts_with("Unavailable"));
                if !record.invalid {
                    follow_up(&record, &mut holds, &mut charges, &mut released);
                }
                records.push(record);
            }
            if unavailable {
                // The database is unreachable: back off as a client should (the server
                // suggests a second).
                tokio::time::sleep(Duration::from_millis(250)).await;
            } else if doubt {
                // The server is likely gone: let the killer mark it down.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        records
    }
}

/// What a client may do next after an answer: capture or release a new hold, refund a new
/// charge, put back a hold or charge whose request was refused. Nothing in doubt is touched
/// again during the load.
fn follow_up(
    record: &Record,
    holds: &mut Vec<Hold>,
    charges: &mut Vec<Charge>,
    released: &mut Vec<Hold>,
) {
    match (&record.seen, record.kind) {
        (Seen::Applied(effect), Kind::Debit | Kind::BatchDebit | Kind::Capture) => {
            charges.push(Charge {
                wallet: record.wallet,
                id: effect.id.clone(),
                units: effect.units,
            })
        }
        (Seen::Applied(effect), Kind::Reserve) => holds.push(Hold {
            wallet: record.wallet,
            id: effect.id.clone(),
            units: effect.units,
            short: record.short,
        }),
        (Seen::Applied(_), Kind::Release) => released.extend(record.hold.clone()),
        (Seen::Refused { .. }, Kind::Capture | Kind::Release) => holds.extend(record.hold.clone()),
        (Seen::Refused { .. }, Kind::Refund) => charges.extend(record.charge.clone()),
        _ => {}
    }
}

// ---- setting up and reading back through the API ---------------------------------------------

/// The card (`req` 1 unit, `img` 4, `chat` 1 + 0.2 per 1,000 output tokens up to 50), and the
/// wallets: two with a small grant, six with a large one. Returns the wallets and the
/// request_ids of their grants (whose GRANT entries are the only ones the load did not make).
async fn setup(channel: &Channel, admin: &str, seed: u64) -> (Vec<TestWallet>, HashSet<String>) {
    let mut rates = allot::proto::rate_card_service_client::RateCardServiceClient::with_interceptor(
        channel.clone(),
        bearer(admin),
    );
    let draft = rates
        .create_rate_card(card_request(
            vec![
                rate("req", "1", &[], ""),
                rate("img", "4", &[], ""),
                rate("chat", "1", &[("output_tokens", "1000", "0.2")], "50"),
            ],
            "chaos card",
        ))
        .await
        .expect("create the rate card")
        .into_inner();
    rates
        .publish_rate_card(publish_request(&draft))
        .await
        .expect("publish the rate card");
    let mut accounts = allot::proto::account_service_client::AccountServiceClient::with_interceptor(
        channel.clone(),
        bearer(admin),
    );
    let mut grants = allot::proto::grant_service_client::GrantServiceClient::with_interceptor(
        channel.clone(),
        bearer(admin),
    );
    let mut wallets = Vec::new();
    let mut grant_ids = HashSet::new();
    for i in 0..WALLETS {
        let (label, amount) = if i < POOR_WALLETS {
            (format!("poor-{i}"), POOR_GRANT)
        } else {
            (format!("rich-{i}"), RICH_GRANT)
        };
        let account = accounts
            .create_account(new_account(&format!("chaos-{seed:x}-{label}"), ""))
            .await
            .unwrap_or_else(|s| panic!("create account {label}: {s:?}"))
            .into_inner();
        let wallet = accounts
            .create_wallet(wallet_request(&account.id))
            .await
            .unwrap_or_else(|s| panic!("create wallet {label}: {s:?}"))
            .into_inner();
        let grant = grant_request(&wallet.id, amount, "0.01");
        grant_ids.insert(grant.request_id.clone());
        grants
            .create_grant(grant)
            .await
            .unwrap_or_else(|s| panic!("grant {amount} to {label}: {s:?}"));
        let starts = std::time::SystemTime::now() + Duration::from_millis(1500 + 400 * i as u64);
        grants
            .create_allotment_schedule(schedule_request(
                &wallet.id,
                SCHEDULED,
                proto::SchedulePeriod::Daily,
                Some(prost_types::Timestamp::from(starts)),
            ))
            .await
            .unwrap_or_else(|s| panic!("schedule for {label}: {s:?}"));
        wallets.push(TestWallet {
            label,
            account_id: account.id,
            wallet_id: wallet.id,
            granted: dec(amount),
        });
    }
    (wallets, grant_ids)
}

/// Sends a single-request call until it answers with an effect or a refusal other than
/// OVERLOADED (at most `MAX_ATTEMPTS` times). Returns that answer (or the last one) and how
/// many sends it took beyond the first.
async fn settle(call: &Call, channel: &Channel, admin: &str) -> (Seen, u32) {
    let mut last = Seen::InDoubt("never sent".into());
    for attempt in 0..MAX_ATTEMPTS {
        last = call.send(channel.clone(), admin).await.remove(0);
        if !last.retryable() {
            return (last, attempt);
        }
        tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt + 1))).await;
    }
    (last, MAX_ATTEMPTS)
}

/// Refusals a valid request may get: the poor wallets run dry, and the server may shed load.
fn expected_refusal(record: &Record, answer: &Seen) -> bool {
    if record.invalid {
        return true;
    }
    match answer.reason() {
        "OVERLOADED" => true,
        // A capture or release that came after its hold expired.
        "RESERVATION_NOT_OPEN" => record.hold.as_ref().is_some_and(|hold| hold.short),
        "INSUFFICIENT_CREDITS" => matches!(
            record.kind,
            Kind::Debit | Kind::BatchDebit | Kind::Reserve | Kind::Capture
        ),
        _ => false,
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
    )
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- the test --------------------------------------------------------------------------------

/// What is thrown at the ledger while the load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// One server, SIGKILLed at random moments and restarted (point 2).
    Kills,
    /// One server whose PostgreSQL goes away, terminates its connections, stalls and slows
    /// down, through a proxy the test controls (point 4).
    Outages,
    /// Three servers on one PostgreSQL, the load spread over them, one at a time SIGKILLed
    /// and restarted (point 5).
    Replicas,
    /// One server on SQLite whose disk keeps only what was synced: every SIGKILL is a power
    /// cut that also takes away every write not yet synced (point 3).
    PowerCuts,
}

/// The tests of this file run one at a time: each drives server processes hard, and on two
/// shared cores two runs at once would turn timing into noise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_server_keeps_exactly_what_it_acknowledged() {
    run(Scenario::Kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outages_fail_fast_and_lose_nothing() {
    run(Scenario::Outages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_sigkilled_in_turn_keep_the_ledger_exact() {
    run(Scenario::Replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cuts_lose_nothing_acknowledged() {
    run(Scenario::PowerCuts).await;
}

async fn run(scenario: Scenario) {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let faults: usize = env_number("ALLOT_CHAOS_FAULTS")
        .or_else(|| env_number("ALLOT_CHAOS_KILLS"))
        .unwrap_or(SHORT_FAULTS);
    let clients: usize = env_number("ALLOT_CHAOS_CLIENTS").unwrap_or(CLIENTS);
    let seed: u64 = env_number("ALLOT_CHAOS_SEED").unwrap_or_else(rand::random);
    let db = TestDatabase::create().await;
    let database = if db.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    match (scenario, db.is_postgres()) {
        (Scenario::Outages | Scenario::Replicas, false) => {
            eprintln!(
                "{scenario:?}: PostgreSQL only (an embedded SQLite has no server to lose and \
                 one process)"
            );
            return;
        }
        (Scenario::PowerCuts, true) => {
            eprintln!(
                "{scenario:?}: SQLite only (on PostgreSQL the database server syncs its own \
                 WAL; allot checks synchronous_commit at start)"
            );
            db.drop_database().await;
            return;
        }
        _ => {}
    }
    eprintln!(
        "chaos {scenario:?}: seed {seed} on {database}, {faults} faults, {clients} clients \
         (ALLOT_CHAOS_SEED={seed} ALLOT_CHAOS_FAULTS={faults} to rerun)"
    );
    let logs = tempfile::tempdir().expect("log dir");
    let proxy = match scenario {
        Scenario::Outages => Some(Proxy::start(&db.url).await),
        _ => None,
    };
    let url = proxy.as_ref().map_or(db.url.clone(), |p| p.url.clone());
    let mut servers: Vec<Server> = match scenario {
        Scenario::Replicas => (0..3)
            .map(|r| Server::new(&format!("replica{r}"), &url, logs.path()))
            .collect(),
        _ => vec![Server::new("serve", &url, logs.path())],
    };
    if scenario == Scenario::PowerCuts {
        // Migrated and closed cleanly first: that much is durable before the first cut.
        let migrate = binary()
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .output()
            .expect("run allot migrate");
        assert!(migrate.status.success(), "allot migrate: {migrate:?}");
        servers[0].power = Some(Power::new(&db.url, logs.path()));
    }
    for server in &mut servers {
        server.start().await;
    }
    let admin = token(&["admin"], &["*"]);
    let first = servers[0].channel.borrow().clone().expect("server up");
    let (wallets, grant_ids) = setup(&first, &admin, seed).await;

    // ---- load, with faults ----
    let load = Arc::new(Load {
        wallets: wallets.clone(),
        token: admin.clone(),
        channels: servers.iter().map(|s| s.channel.subscribe()).collect(),
        stop: CancellationToken::new(),
        seed,
    });
    let load_started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(load.clone().client(c)))
        .collect();
    let mut failures: Vec<String> = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut downtime = Duration::ZERO;
    let mut outages: Vec<String> = Vec::new();
    for k in 0..faults {
        tokio::time::sleep(millis(rng.random_range(150..1500))).await;
        if let Some(proxy) = &proxy {
            let channel = servers[0].channel.borrow().clone().expect("server up");
            let what = outage(&mut rng, proxy, &db.url, &channel, &mut failures).await;
            eprintln!("  fault {k}: {what}");
            outages.push(what);
            continue;
        }
        let victim = rng.random_range(0..servers.len());
        let server = &mut servers[victim];
        let down = Instant::now();
        if let Some(status) = server.kill() {
            failures.push(format!(
                "before kill {k} {} had already exited by itself: {status}",
                server.name
            ));
        }
        tokio::time::sleep(millis(rng.random_range(0..150))).await;
        server.start().await;
        downtime += down.elapsed();
    }
    tokio::time::sleep(millis(rng.random_range(300..1000))).await;
    load.stop.cancel();
    let mut records: Vec<Record> = Vec::new();
    for task in tasks {
        records.extend(task.await.expect("client task"));
    }
    let load_time = load_started.elapsed();
    let restarts: Vec<Duration> = servers
        .iter()
        .flat_map(|s| s.startups[1..].iter().copied())
        .collect();
    eprintln!(
        "load: {} requests in {load_time:.1?} ({:.0}/s), {faults} faults, servers down \
         {downtime:.1?} in all; restarts took {:.0?} on average, {:.0?} at most",
        records.len(),
        records.len() as f64 / load_time.as_secs_f64(),
        restarts.iter().sum::<Duration>() / (restarts.len().max(1) as u32),
        restarts.iter().max().copied().unwrap_or_default(),
    );

    // ---- what each request answered during the load ----
    let mut table: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for record in &records {
        let label = if record.invalid {
            format!("{} (made to be refused)", record.seen.label())
        } else {
            record.seen.label()
        };
        *table.entry((record.kind, label)).or_default() += 1;
    }
    for ((kind, label), count) in &table {
        eprintln!("  {kind:?}: {label} × {count}");
    }
    for record in &records {
        match &record.seen {
            Seen::Applied(_) if record.invalid => failures.push(format!(
                "{:?} {} was made to be refused but was acknowledged: {:?}",
                record.kind, record.request_id, record.seen
            )),
            Seen::Refused { message, .. } if !expected_refusal(record, &record.seen) => failures
                .push(format!(
                    "{:?} {} on {} refused unexpectedly: {} ({message})",
                    record.kind,
                    record.request_id,
                    wallets[record.wallet].label,
                    record.seen.label()
                )),
            _ => {}
        }
    }

    // ---- a database outage is answered at once, and never as our bug ----
    if scenario == Scenario::Outages {
        let mut slowest = Duration::ZERO;
        for record in &records {
            slowest = slowest.max(record.took);
            let what = format!(
                "{:?} {} on {}",
                record.kind, record.request_id, wallets[record.wallet].label
            );
            if let Seen::InDoubt(why) = &record.seen
                && [
                    "Internal",
                    "Unknown",
                    "Cancelled",
                    "DeadlineExceeded",
                    "Timeout",
                ]
                .iter()
                .any(|code| why.starts_with(code))
            {
                failures.push(format!(
                    "{what} answered {why} during a database fault (UNAVAILABLE within its \
                     deadline expected)"
                ));
            }
            if record.took > CALL_DEADLINE + Duration::from_secs(1) {
                failures.push(format!(
                    "{what} took {:.1?}, beyond its {CALL_DEADLINE:?} deadline: {:?}",
                    record.took, record.seen
                ));
            }
        }
        eprintln!("slowest answer during the faults: {slowest:.2?}");
    }

    // ---- in-doubt requests: what the ledger had, then two retries each ----
    // A request abandoned by its client may still be in a batch on the running server: give
    // it a moment to finish before reading the ledger.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let channel = servers[0].channel.borrow().clone().expect("server up");
    let before: HashSet<String> = reads::export_all(&channel, &admin)
        .await
        .into_iter()
        .map(|t| t.request_id)
        .collect();
    let mut by_wallet: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, record) in records.iter_mut().enumerate() {
        if matches!(record.seen, Seen::InDoubt(_)) {
            record.applied_before_retry = Some(before.contains(&record.request_id));
            by_wallet.entry(record.wallet).or_default().push(i);
        }
    }
    let in_doubt: usize = by_wallet.values().map(Vec::len).sum();
    let resolving = Instant::now();
    // Wallet by wallet, one request at a time (its two retries back to back). An applied
    // request must be replayed as it was; a refusal may turn into an effect, for a refused
    // request leaves no trace and its id may be used again, and a wallet's available balance
    // still grows while short holds (some placed by these retries) expire.
    let settled = join_all(by_wallet.values().map(|indices| {
        let records = &records;
        let channel = &channel;
        let admin = &admin;
        async move {
            let mut out = Vec::new();
            for &i in indices {
                let (first, extra1) = settle(&records[i].call, channel, admin).await;
                let (second, extra2) = settle(&records[i].call, channel, admin).await;
                out.push((i, first, second, extra1 + extra2));
            }
            out
        }
    }))
    .await;
    let mut retries = 0u32;
    for (i, first, second, extra) in settled.into_iter().flatten() {
        retries += 2 + extra;
        records[i].retries = Some((first, second));
    }
    let (mut applied_before, mut applied_by_retry, mut refused_on_retry) = (0, 0, 0);
    for record in &records {
        let Some((first, second)) = &record.retries else {
            continue;
        };
        let before = record.applied_before_retry == Some(true);
        let what = format!(
            "in-doubt {:?} {} on {} ({}; {} in the ledger before its retry)",
            record.kind,
            record.request_id,
            wallets[record.wallet].label,
            record.seen.label(),
            if before { "its entry" } else { "no entry" }
        );
        if first.retryable() || second.retryable() {
            failures.push(format!(
                "{what}: no definite answer after {MAX_ATTEMPTS} attempts: {first:?} / {second:?}"
            ));
            continue;
        }
        let freed = first.reason() == "INSUFFICIENT_CREDITS"
            && matches!(second, Seen::Applied(effect) if effect.replayed == Some(false));
        if !first.same_as(second) && !freed {
            failures.push(format!(
                "{what}: the second retry answered differently from the first: {first:?} then \
                 {second:?}"
            ));
        }
        if freed && record.invalid {
            failures.push(format!("{what}: made to be refused, the retry applied it"));
        }
        match first {
            Seen::Applied(effect) => {
                if before {
                    applied_before += 1;
                } else {
                    applied_by_retry += 1;
                }
                if record.invalid {
                    failures.push(format!("{what}: made to be refused, the retry applied it"));
                }
                if effect.replayed.is_some_and(|replayed| replayed != before) {
                    failures.push(format!(
                        "{what}: the first retry answered replayed = {:?}",
                        effect.replayed
                    ));
                }
            }
            Seen::Refused { .. } if freed => applied_by_retry += 1,
            Seen::Refused { .. } => {
                refused_on_retry += 1;
                if before {
                    failures.push(format!(
                        "{what}: its entry was in the ledger, yet the retry was refused: \
                         {first:?}"
                    ));
                }
                if !expected_refusal(record, first) {
                    failures.push(format!(
                        "{what}: the retry was refused unexpectedly: {first:?}"
                    ));
                }
            }
            Seen::InDoubt(_) => {}
        }
        if let Seen::Applied(effect) = second
            && effect.replayed == Some(false)
            && !freed
        {
            failures.push(format!(
                "{what}: the second retry applied it again: {second:?}"
            ));
        }
    }
    eprintln!(
        "in doubt: {in_doubt} requests — {applied_before} had been applied before the crash, \
         {applied_by_retry} were applied by their retry, {refused_on_retry} were refused on \
         retry; {retries} retries sent in {:.1?}",
        resolving.elapsed()
    );

    // ---- a sample of acknowledged requests, sent again: each replays its answer ----
    let acknowledged: Vec<usize> = (0..records.len())
        .filter(|&i| matches!(records[i].seen, Seen::Applied(_)) && !records[i].invalid)
        .collect();
    let sample: Vec<usize> = (0..REPLAY_SAMPLE.min(acknowledged.len()))
        .map(|_| acknowledged[rng.random_range(0..acknowledged.len())])
        .collect();
    for &i in &sample {
        let record = &records[i];
        let (again, _) = settle(&record.call, &channel, &admin).await;
        let same = again.same_as(&record.seen);
        let replayed = match &again {
            Seen::Applied(effect) => effect.replayed != Some(false),
            _ => false,
        };
        if !same || !replayed {
            failures.push(format!(
                "acknowledged {:?} {} sent again answered {again:?}, not a replay of {:?}",
                record.kind, record.request_id, record.seen
            ));
        }
    }
    eprintln!("replays: {} acknowledged requests sent again", sample.len());

    // ---- every short hold's TTL and every schedule's first period pass ----
    tokio::time::sleep(Duration::from_secs(SHORT_TTL_SECONDS as u64 + 2)).await;

    // ---- one more crash of every server, then the ledger as the API reads it ----
    for server in &mut servers {
        if let Some(status) = server.kill() {
            failures.push(format!(
                "{} had exited by itself before the last kill: {status}",
                server.name
            ));
        }
    }
    servers[0].start().await;
    let channel = servers[0].channel.borrow().clone().expect("server up");
    let ledger = reads::export_all(&channel, &admin).await;
    let mut entries_of: HashMap<&str, Vec<&proto::Transaction>> = HashMap::new();
    for t in &ledger {
        entries_of.entry(t.request_id.as_str()).or_default().push(t);
    }
    let mut posted_model: Vec<Decimal> = wallets.iter().map(|w| w.granted).collect();
    let mut reserved_model = [Decimal::ZERO; WALLETS];
    let known: HashSet<&str> = records.iter().map(|r| r.request_id.as_str()).collect();
    for record in &records {
        let entries = entries_of
            .get(record.request_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let settled = match &record.retries {
            Some((first, second)) => format!(
                "{}, then on retry {} and {}",
                record.seen.label(),
                first.label(),
                second.label()
            ),
            None => record.seen.label(),
        };
        let what = format!(
            "{:?} {} on {} ({settled})",
            record.kind, record.request_id, wallets[record.wallet].label
        );
        let Some(effect) = record.effect() else {
            if !entries.is_empty() {
                failures.push(format!(
                    "{what}: not applied, yet the ledger has {} entr(ies) for it: {:?}",
                    entries.len(),
                    entries
                        .iter()
                        .map(|t| (&t.id, kind(t), &t.units))
                        .collect::<Vec<_>>()
                ));
            }
            continue;
        };
        if entries.len() != 1 {
            failures.push(format!(
                "{what}: applied, but the ledger has {} entries for it: {:?}",
                entries.len(),
                entries
                    .iter()
                    .map(|t| (&t.id, kind(t), &t.units))
                    .collect::<Vec<_>>()
            ));
        }
        if let Some(t) = entries.first() {
            let wallet = &wallets[record.wallet];
            let entry_id = match record.kind {
                Kind::Reserve | Kind::Release => &t.reservation_id,
                _ => &t.id,
            };
            let mut wrong = Vec::new();
            if kind(t) != record.kind.entry_kind() {
                wrong.push(format!("kind {:?}", kind(t)));
            }
            if t.wallet_id != wallet.wallet_id {
                wrong.push(format!("wallet {}", t.wallet_id));
            }
            if *entry_id != effect.id {
                wrong.push(format!("id {entry_id} (answered {})", effect.id));
            }
            if units_of(&t.units) != effect.units {
                wrong.push(format!("units {} (answered {})", t.units, effect.units));
            }
            if let Some(hold) = &record.hold
                && t.reservation_id != hold.id
            {
                wrong.push(format!(
                    "reservation {} (asked {})",
                    t.reservation_id, hold.id
                ));
            }
            if let Some(charge) = &record.charge
                && t.refunded_transaction_id != charge.id
            {
                wrong.push(format!(
                    "refunded {} (asked {})",
                    t.refunded_transaction_id, charge.id
                ));
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{what}: its entry {} has {}",
                    t.id,
                    wrong.join(", ")
                ));
            }
        }
        let w = record.wallet;
        match record.kind {
            Kind::Debit | Kind::BatchDebit | Kind::Capture => posted_model[w] -= effect.units,
            Kind::Refund => posted_model[w] += effect.units,
            Kind::Reserve => reserved_model[w] += effect.units,
            Kind::Release => {}
        }
        if let (Kind::Capture | Kind::Release, Some(hold)) = (record.kind, &record.hold) {
            reserved_model[w] -= hold.units;
        }
    }
    // What the sweepers wrote: each schedule's first period granted once, each short hold
    // that no capture or release closed expired once (and no other hold).
    let mut short_open: HashMap<&str, (usize, Decimal)> = HashMap::new();
    for record in &records {
        if let (Kind::Reserve, true, Some(effect)) = (record.kind, record.short, record.effect()) {
            short_open.insert(effect.id.as_str(), (record.wallet, effect.units));
        }
    }
    for record in &records {
        if let (Kind::Capture | Kind::Release, Some(hold), Some(_)) =
            (record.kind, &record.hold, record.effect())
        {
            short_open.remove(hold.id.as_str());
        }
    }
    let mut expiries: HashMap<&str, usize> = HashMap::new();
    let mut scheduled: Vec<Vec<&proto::Transaction>> = vec![Vec::new(); WALLETS];
    let mut strangers: Vec<&proto::Transaction> = Vec::new();
    for t in &ledger {
        let request = t.request_id.as_str();
        if known.contains(request) {
            continue;
        }
        let w = wallets.iter().position(|w| w.wallet_id == t.wallet_id);
        match (kind(t), w) {
            (TransactionKind::Grant, _) if grant_ids.contains(request) => {}
            (TransactionKind::Grant, Some(w)) => scheduled[w].push(t),
            (TransactionKind::Release, _) if short_open.contains_key(t.reservation_id.as_str()) => {
                *expiries.entry(t.reservation_id.as_str()).or_default() += 1;
            }
            _ => strangers.push(t),
        }
    }
    for (w, grants) in scheduled.iter().enumerate() {
        let amounts: Vec<&str> = grants.iter().map(|t| t.units.as_str()).collect();
        if amounts.len() != 1 || units_of(amounts[0]) != dec(SCHEDULED) {
            failures.push(format!(
                "{}: its schedule's first period was granted {} time(s) ({amounts:?}); once \
                 expected",
                wallets[w].label,
                amounts.len()
            ));
        } else {
            posted_model[w] += dec(SCHEDULED);
        }
    }
    let mut expired = 0;
    for (hold, (w, units)) in &short_open {
        match expiries.get(hold).copied().unwrap_or(0) {
            1 => {
                expired += 1;
                reserved_model[*w] -= *units;
            }
            n => failures.push(format!(
                "short hold {hold} on {}: {n} expiry entries, one expected",
                wallets[*w].label
            )),
        }
    }
    eprintln!(
        "sweepers: {expired} short holds expired once each, {WALLETS} schedule periods granted"
    );
    if !strangers.is_empty() {
        failures.push(format!(
            "{} entries the test did not ask for: {:?}",
            strangers.len(),
            strangers
                .iter()
                .take(10)
                .map(|t| (&t.id, kind(t), &t.request_id, &t.units))
                .collect::<Vec<_>>()
        ));
    }

    // ---- balances: the ledger's sums, the API's balance and the model agree ----
    let mut ledger_client = LedgerServiceClient::with_interceptor(channel.clone(), bearer(&admin));
    for (w, wallet) in wallets.iter().enumerate() {
        let entries: Vec<&proto::Transaction> = ledger
            .iter()
            .filter(|t| t.wallet_id == wallet.wallet_id)
            .collect();
        let sum: Decimal = entries.iter().map(|t| units_of(&t.delta)).sum();
        let newest = entries.last().map(|t| units_of(&t.balance_after));
        let balance = ledger_client
            .get_balance(proto::GetBalanceRequest {
                account_id: wallet.account_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("balance of {}: {s:?}", wallet.label))
            .into_inner();
        let (posted, reserved, available) = (
            units_of(&balance.posted),
            units_of(&balance.reserved),
            units_of(&balance.available),
        );
        eprintln!(
            "  {}: {} entries, posted {posted} (model {}), reserved {reserved} (model {})",
            wallet.label,
            entries.len(),
            posted_model[w],
            reserved_model[w]
        );
        if sum != posted || newest != Some(posted) {
            failures.push(format!(
                "{}: posted {posted}, but its {} entries sum to {sum} and the newest says \
                 balance_after {newest:?}",
                wallet.label,
                entries.len()
            ));
        }
        if posted != posted_model[w] || reserved != reserved_model[w] {
            failures.push(format!(
                "{}: posted {posted} and reserved {reserved}, but the acknowledged and settled \
                 requests add up to posted {} and reserved {}",
                wallet.label, posted_model[w], reserved_model[w]
            ));
        }
        if available != posted - reserved {
            failures.push(format!(
                "{}: available {available} is not posted {posted} − reserved {reserved}",
                wallet.label
            ));
        }
        let listed: HashSet<String> = reads::all_transactions(&channel, &admin, &wallet.account_id)
            .await
            .into_iter()
            .map(|t| t.id)
            .collect();
        let exported: HashSet<String> = entries.iter().map(|t| t.id.clone()).collect();
        if listed != exported {
            failures.push(format!(
                "{}: ListTransactions has {} entries, ExportTransactions {} ({} differ)",
                wallet.label,
                listed.len(),
                exported.len(),
                listed.symmetric_difference(&exported).count()
            ));
        }
    }

    // ---- the database the last SIGKILL leaves behind verifies ----
    if let Some(status) = servers[0].kill() {
        failures.push(format!(
            "the server had exited by itself at the end: {status}"
        ));
    }
    let url = db.url.clone();
    let verify = tokio::task::spawn_blocking(move || {
        binary()
            .arg("verify")
            .env("DATABASE_URL", url)
            .output()
            .expect("run allot verify")
    })
    .await
    .expect("verify task");
    let stdout = String::from_utf8_lossy(&verify.stdout);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    eprintln!(
        "allot verify: {} {}{}",
        verify.status,
        stdout.trim(),
        stderr.trim()
    );
    if !verify.status.success() {
        failures.push(format!(
            "allot verify exited {}:\n{stdout}\n{stderr}",
            verify.status
        ));
    }

    // ---- no process panicked; what the logs say ----
    let mut errors = Vec::new();
    for (name, text) in servers.iter().flat_map(Server::logs) {
        for line in text.lines() {
            if line.contains("panicked") {
                failures.push(format!("{name}: {line}"));
            }
            if line.contains("ERROR") {
                errors.push(format!("{name}: {line}"));
            }
        }
    }
    eprintln!(
        "{} processes started, {} error line(s) in their logs",
        servers.iter().map(|s| s.generation).sum::<usize>(),
        errors.len()
    );
    for line in errors.iter().take(10) {
        eprintln!("  {line}");
    }
    if let Some(power) = &servers[0].power {
        eprintln!(
            "power cuts: {}, {} bytes written but never synced taken away",
            power.cuts, power.lost_bytes
        );
    }
    eprintln!(
        "chaos {scenario:?} on {database}: {} ledger entries; took {:.1?} (seed {seed})",
        ledger.len(),
        started.elapsed()
    );

    if failures.is_empty() {
        drop(servers);
        db.drop_database().await;
        return;
    }
    // Keep the evidence: the database and every process's log.
    drop(servers);
    let kept_logs = logs.keep();
    eprintln!(
        "keeping the database {} and the logs in {}",
        db.url,
        kept_logs.display()
    );
    std::mem::forget(db);
    panic!(
        "chaos {scenario:?} (seed {seed}, {database}, {faults} faults): {} check(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
