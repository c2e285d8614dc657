//! The daemon's life: start-up, serving, SIGHUP reload, graceful stop.
//!
//! [`start`] binds the socket (or takes systemd's), drops privileges, opens the state file and
//! starts accepting; [`Running`] is the handle to reload or stop it. The binary drives it from
//! signals ([`run`]); integration tests drive the same handle directly, so what they test is what
//! runs in production.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::{Config, KEYS};
use crate::log::{catalog, library, Logger};
use crate::milter::listen::{ListenError, Listener, Prepared, SocketSpec};
use crate::policy::{Policy, PolicyError};
use crate::policy_door::serve_policy;
use crate::server::{accept_loop, serve_milter, Kill, Serve};
use crate::shared::Shared;
use crate::store::{sqlite_version, Store, StoreError, StoreSpec};
use crate::systemd;

/// The version and licence logged at start-up (#604).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A started daemon.
pub struct Running {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    kill_tx: watch::Sender<bool>,
    idle: Arc<Notify>,
    /// The milter socket's accept loop, and the policy socket's when `policy-socket` is set.
    accept_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Reports store writes that failed with nobody waiting for them (#2045/#2046).
    store_watch: tokio::task::JoinHandle<()>,
    address: String,
    /// The `/metrics` server and the greylist record counter, when `metrics-listen` is set.
    metrics_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The `/metrics` socket, whose unix file goes at stop.
    metrics_listener: Option<Arc<Listener>>,
    /// Library events (the resolver's warnings) go to this daemon's log while it runs.
    _library: library::Attached,
}

/// How a graceful stop ended.
#[derive(Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Sessions still open at the deadline and closed by force.
    pub closed_at_deadline: usize,
}

/// Starts serving `config`. Every failure has already been logged with its number when this
/// returns an error (the text is for the exit message).
pub async fn start(config: Config, log: Logger) -> Result<Running, String> {
    start_with_store(config, log, None).await
}

/// [`start`] with a store the caller opened (Some), instead of the one the config names: for
/// tests that need a store tuned or broken in ways no config key offers (a tiny write queue).
pub async fn start_with_store(config: Config, log: Logger, opened: Option<Store>) -> Result<Running, String> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    // From here on the resolver's own warnings reach this daemon's log (#2026-#2028).
    let library = library::attach(&log);
    let policy = build_policy(config.clone(), &log)?;
    let shared = Shared::new(policy, log.clone(), workers);
    let owner = privileges(&config, &log)?;
    // Resolved while still the user we started as: the default state file depends on it.
    let spec = config.store_spec();

    let listener = match Listener::from_systemd() {
        Some(Ok(l)) => {
            log.emit(&catalog::SOCKET_ACTIVATION, None, &[&l.describe()]);
            l
        }
        Some(Err(e)) => {
            log.emit(&catalog::INTERFACE_ERROR, None, &[&"systemd socket", &e]);
            return Err(e);
        }
        None => bind(&config.milter_socket, &config, owner.as_ref(), &log, &config.milter_socket.to_string()).await?,
    };
    let address = listener.describe();
    log.emit(&catalog::INTERFACE_READY, None, &[&address]);
    // The policy door is bound now too, while the daemon may still give its file away.
    let policy_listener = match &config.policy_socket {
        Some(spec) => match bind(spec, &config, owner.as_ref(), &log, &format!("policy-socket {spec}")).await {
            Ok(l) => {
                log.emit(&catalog::POLICY_READY, None, &[&l.describe()]);
                Some(l)
            }
            Err(e) => {
                let _ = listener.cleanup();
                return Err(e);
            }
        },
        None => None,
    };

    if let Some(owner) = &owner {
        if let Err(e) = owner.switch() {
            log.emit(&catalog::INIT_ERROR, None, &[&"switching user", &e]);
            let _ = listener.cleanup();
            let _ = policy_listener.as_ref().map(Listener::cleanup);
            return Err(e);
        }
    }

    // Where records live: a SQLite file that is not a database stops the start (#172); one that
    // cannot be opened for now (#172, #2047) and an unreachable Redis (#2024) do not: the
    // daemon serves, checks fail open, and the store is picked up when it answers.
    let shown = spec.shown();
    let shown_error = match &spec {
        StoreSpec::Sqlite { .. } => {
            log.emit(&catalog::CACHE_PATH, None, &[&shown]);
            format!("cache-path={shown}")
        }
        StoreSpec::Redis(options) => {
            log.emit(&catalog::CACHE_REDIS, None, &[&shown, &options.key_prefix]);
            format!("cache-redis-url={shown}")
        }
    };
    let opening = match opened {
        Some(store) => Ok(store),
        None => Store::open(&spec, Some(&log)).await,
    };
    let store = match opening {
        Ok(s) => Some(s),
        // A full or read-only disk, missing permissions: mail must not stop because our state
        // cannot be kept. Serve without the store (greylisting and duplicates fail open) and keep
        // trying in the background; a file that is not a database still stops the start below.
        Err(e @ StoreError::Unavailable(_)) => {
            log.emit(&catalog::CACHE_OPEN_ERROR, None, &[&shown, &e]);
            log.emit(&catalog::STORE_WAITING, None, &[&shown]);
            None
        }
        Err(e) => {
            match spec {
                StoreSpec::Sqlite { .. } => log.emit(&catalog::CACHE_OPEN_ERROR, None, &[&shown, &e]),
                StoreSpec::Redis(_) => log.emit(&catalog::INIT_ERROR, None, &[&shown_error, &e]),
            }
            let _ = listener.cleanup();
            let _ = policy_listener.as_ref().map(Listener::cleanup);
            return Err(format!("{shown_error} open error: {e}"));
        }
    };
    if let Some(store) = store {
        let sqlite = matches!(store, Store::Sqlite(_));
        let _ = shared.set_store(store);
        if sqlite {
            log.emit(&catalog::SQLITE_VERSION, None, &[&sqlite_version()]);
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let (kill_tx, kill) = Kill::new();
    let idle = Arc::new(Notify::new());
    let serve = |listener: Listener, serve: Serve| {
        let (shared, idle, log, stop_rx, kill) = (shared.clone(), idle.clone(), log.clone(), stop_rx.clone(), kill.clone());
        tokio::spawn(async move {
            accept_loop(&listener, shared, stop_rx, kill, idle, serve).await;
            if let Err((path, e)) = listener.cleanup() {
                log.emit(&catalog::UNLINK_ERROR, None, &[&path.display(), &crate::log::os_error(&e)]);
            }
        })
    };
    let mut accept_tasks = vec![serve(listener, serve_milter)];
    if let Some(policy_listener) = policy_listener {
        accept_tasks.push(serve(policy_listener, serve_policy));
    }
    let store_watch = tokio::spawn({
        let shared = shared.clone();
        async move {
            if shared.store().is_none() {
                // Start-up already logged why (#172, #2047).
                wait_for_store(&shared, &spec, true).await;
            }
            watch_store_writes(shared, spec).await
        }
    });
    let mut metrics_tasks = Vec::new();
    let mut metrics_listener = None;
    if let Some(listen) = &config.metrics_listen {
        if let Some((task, listener)) = crate::metrics_http::start(listen, shared.clone()).await {
            metrics_tasks.push(task);
            metrics_tasks.push(crate::metrics_http::count_records(shared.clone()));
            metrics_listener = Some(listener);
        }
    }
    log.emit(&catalog::READY, None, &[]);
    Ok(Running {
        shared,
        stop_tx,
        kill_tx,
        idle,
        accept_tasks,
        store_watch,
        address,
        metrics_tasks,
        metrics_listener,
        _library: library,
    })
}

impl Running {
    /// Where the daemon listens (`unix:/path` or `inet:port@ip`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The shared state (config in force, logger, counters).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Milter connections open now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Re-reads the config file in force (SIGHUP). A bad file changes nothing and is logged.
    pub fn reload(&self) -> Result<(), String> {
        let result = self.reload_file();
        self.shared.metrics.reloaded(result.is_ok(), crate::ids::unix_now());
        result
    }

    fn reload_file(&self) -> Result<(), String> {
        let current = &self.shared.policy().config;
        let Some(path) = current.path.clone() else {
            self.shared.log.emit(&catalog::RELOADED, None, &[&"(embedded defaults)"]);
            return Ok(());
        };
        match Config::load(&path) {
            Ok(new) => self.apply(new),
            Err(e) => {
                self.shared.log.emit(&catalog::RELOAD_FAILED, None, &[&e]);
                Err(e.to_string())
            }
        }
    }

    /// Puts a validated config in force for new sessions; keys that need a restart keep their old
    /// values (and say so). Fails, changing nothing, when the access-map or resolver cannot be set
    /// up from it.
    pub fn apply(&self, mut new: Config) -> Result<(), String> {
        let policy = self.shared.policy();
        let current = &policy.config;
        let changed = current.restart_only_changes(&new);
        for key in KEYS.iter().filter(|k| changed.contains(&k.name)) {
            if let Some(restart) = &key.restart {
                self.shared.log.emit(&catalog::RELOAD_NEEDS_RESTART, None, &[&key.name, &(restart.show)(current)]);
            }
        }
        new.keep_restart_only(current);
        let shown = new.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(embedded defaults)".into());
        let target_changed = new.log_target != current.log_target;
        let built = match Policy::build(new) {
            Ok(p) => p,
            Err(e) => {
                if let PolicyError::Access(a) = &e {
                    log_access_error(a, &self.shared.log);
                }
                self.shared.log.emit(&catalog::RELOAD_FAILED, None, &[&e]);
                return Err(e.to_string());
            }
        };
        built.dns.log_to(&self.shared.log);
        log_policy_warnings(&built, &self.shared.log);
        if target_changed {
            self.shared.log.set_target(&built.config.log_target);
        }
        self.shared.set_policy(built);
        self.shared.log.emit(&catalog::RELOADED, None, &[&shown]);
        Ok(())
    }

    /// Stops accepting, waits for open sessions up to `deadline`, then closes the rest.
    pub async fn stop(mut self, deadline: Duration) -> StopReport {
        let _ = self.stop_tx.send(true);
        for task in &mut self.accept_tasks {
            let _ = task.await;
        }
        for task in &self.metrics_tasks {
            task.abort();
        }
        if let Some(Err((path, e))) = self.metrics_listener.as_ref().map(|l| l.cleanup()) {
            self.shared.log.emit(&catalog::UNLINK_ERROR, None, &[&path.display(), &crate::log::os_error(&e)]);
        }
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let notified = self.idle.notified();
                if self.shared.active.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
        let mut closed = 0;
        if waited.is_err() {
            closed = self.shared.active.load(Ordering::SeqCst);
            self.shared.log.emit(&catalog::SHUTDOWN_DEADLINE, None, &[&deadline.as_secs(), &closed]);
            self.kill_now().await;
        }
        // The watcher first (it could hand over a store it just reopened), then pending store
        // writes are flushed before the process exits.
        self.store_watch.abort();
        let _ = (&mut self.store_watch).await;
        if let Some(store) = self.shared.store() {
            store.close().await;
        }
        StopReport { closed_at_deadline: closed }
    }

    async fn kill_now(&self) {
        let _ = self.kill_tx.send(true);
        // Sessions notice at their next await point; give them a moment to log #721.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.shared.active.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// Binds a socket of the daemon (`shown` names it in errors), logging why it cannot be bound.
async fn bind(spec: &SocketSpec, config: &Config, owner: Option<&Owner>, log: &Logger, shown: &str) -> Result<Listener, String> {
    match Listener::bind(spec, config.milter_socket_mode, owner.map(|o| (o.uid, o.gid))).await {
        Ok((l, prepared)) => {
            if prepared == Prepared::RemovedStale {
                log.emit(&catalog::STALE_SOCKET, None, &[spec]);
            }
            Ok(l)
        }
        Err(e) => {
            match &e {
                ListenError::Chown { path, uid, gid, error } => {
                    log.emit(&catalog::CHOWN_ERROR, None, &[&path.display(), uid, gid, error])
                }
                ListenError::Chmod { path, mode, error } => {
                    log.emit(&catalog::CHMOD_ERROR, None, &[&path.display(), &format_args!("{mode:o}"), error])
                }
                ListenError::Other(_) => log.emit(&catalog::INTERFACE_ERROR, None, &[&shown, &e]),
            }
            Err(format!("interface={shown} error: {e}"))
        }
    }
}

/// Builds the policy for start-up, logging why it cannot be built.
fn build_policy(config: Config, log: &Logger) -> Result<Policy, String> {
    match Policy::build(config) {
        Ok(p) => {
            p.dns.log_to(log);
            log_policy_warnings(&p, log);
            Ok(p)
        }
        Err(e) => {
            match &e {
                PolicyError::Access(e) => log_access_error(e, log),
                other => log.emit(&catalog::INIT_ERROR, None, &[&"policy", other]),
            }
            Err(e.to_string())
        }
    }
}

/// Logs an access-map error under smtpf's number: #100-#110 for patterns, #117 otherwise.
pub fn log_access_error(e: &crate::checks::access::AccessError, log: &Logger) {
    match catalog::find(e.number()).filter(|m| m.num != 117) {
        Some(msg) => log.emit(msg, None, &[&e.file, &e.line, &e.message]),
        None if e.line > 0 => {
            log.emit(&catalog::ACCESS_OPEN_ERROR, None, &[&e.file, &format_args!("line {}: {}", e.line, e.message)])
        }
        None => log.emit(&catalog::ACCESS_OPEN_ERROR, None, &[&e.file, &e.message]),
    }
}

/// Logs what is worth knowing about a freshly built policy.
fn log_policy_warnings(policy: &Policy, log: &Logger) {
    for w in policy.config.warnings() {
        log.emit(&catalog::CONFIG_WARNING, None, &[&w]);
    }
    for (msg, [key, why]) in policy.config.smtpf_warnings() {
        log.emit(msg, None, &[&key, &why]);
    }
    if policy.access.is_none() {
        log.emit(&catalog::ACCESS_DISABLED, None, &[]);
    }
    for w in &policy.access_warnings {
        log.emit(&catalog::ACCESS_WARNING, None, &[w]);
    }
    for w in &policy.grey_whitelist_warnings {
        log.emit(&catalog::GREY_WHITELIST_SKIPPED, None, &[w]);
    }
}

/// The user and group to switch to after binding, when started as root.
struct Owner {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    name: String,
}

impl Owner {
    fn switch(&self) -> Result<(), String> {
        use nix::unistd::{setgid, setgroups, setuid};
        setgroups(&[self.gid]).map_err(|e| format!("setgroups: {e}"))?;
        setgid(self.gid).map_err(|e| format!("setgid: {e}"))?;
        setuid(self.uid).map_err(|e| format!("setuid({}): {e}", self.name))?;
        Ok(())
    }
}

fn privileges(config: &Config, log: &Logger) -> Result<Option<Owner>, String> {
    if !nix::unistd::geteuid().is_root() || (config.run_user.is_none() && config.run_group.is_none()) {
        return Ok(None);
    }
    use nix::unistd::{Group, User};
    let user = match &config.run_user {
        Some(name) => match User::from_name(name) {
            Ok(Some(u)) => Some(u),
            _ => {
                log.emit(&catalog::USER_NOT_FOUND, None, &[name]);
                return Err(format!("user \"{name}\" not found"));
            }
        },
        None => None,
    };
    let gid = match &config.run_group {
        Some(name) => match Group::from_name(name) {
            Ok(Some(g)) => g.gid,
            _ => {
                log.emit(&catalog::GROUP_NOT_FOUND, None, &[name]);
                return Err(format!("group \"{name}\" not found"));
            }
        },
        None => user.as_ref().map(|u| u.gid).unwrap_or_else(nix::unistd::getgid),
    };
    let (uid, name) = match user {
        Some(u) => (u.uid, u.name),
        None => (nix::unistd::getuid(), "root".to_string()),
    };
    Ok(Some(Owner { uid, gid, name }))
}

/// Opens the store that could not be opened at start (#2047), or again after its file was
/// replaced (#2049): tries after 1 s, then backs off to every 30 s, and hands it to the sessions
/// once it opens (#2048).
/// The first failure's reason is logged (#172) unless the caller has `told` it; later ones only
/// wait.
async fn wait_for_store(shared: &Arc<Shared>, spec: &StoreSpec, mut told: bool) {
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::time::sleep(pause).await;
        match Store::open(spec, Some(&shared.log)).await {
            Ok(store) => {
                let _ = shared.set_store(store);
                shared.log.emit(&catalog::STORE_OPENED, None, &[&spec.shown()]);
                return;
            }
            Err(e) if !told => {
                shared.log.emit(&catalog::CACHE_OPEN_ERROR, None, &[&spec.shown(), &e]);
                told = true;
            }
            Err(_) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Writes queued without waiting (greylist first sights, duplicate records, refreshes) fail in
/// the store's writer, where no session sees them: a full disk would lose records in silence.
/// Once a second this compares the store's counters and logs the start of such a failure
/// (#2045, with the reason), at most one line a minute while it lasts, and its end (#2046).
async fn watch_store_writes(shared: Arc<Shared>, spec: StoreSpec) {
    const REPORT_EVERY: i64 = 60;
    let Some(mut store) = shared.store() else { return };
    let mut seen = store.counters();
    let mut outage: Option<(i64, u64, u64)> = None; // (last report, failed since it, failed in all)
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Deleted or replaced under us: writes would go on into an unlinked file and be lost.
        if store.file_replaced() {
            shared.log.emit(&catalog::STORE_REPLACED, None, &[&spec.shown()]);
            // The old store is closed before the path is opened again: two stores on one path
            // would share its -wal and -shm files and copy each other's pages into their own
            // main files. Sessions still holding it fail open until they end.
            if let Some(old) = shared.take_store() {
                old.close().await;
            }
            // The old file's WAL may still lie beside the new one under the same name (SQLite
            // keeps it when its database was moved away); opened with the new file it would be
            // replayed into it. Set aside, not deleted, in case an admin wants it.
            if let StoreSpec::Sqlite { path, .. } = &spec {
                for side in ["-wal", "-shm"] {
                    let stale = std::path::PathBuf::from(format!("{}{side}", path.display()));
                    if stale.exists() {
                        let aside = format!("{}{side}.replaced-{}", path.display(), crate::ids::unix_now());
                        let _ = std::fs::rename(&stale, aside);
                    }
                }
            }
            wait_for_store(&shared, &spec, false).await;
            let Some(fresh) = shared.store() else { return };
            store = fresh;
            seen = store.counters();
            outage = None;
            continue;
        }
        let now = crate::ids::unix_now();
        let counters = store.counters();
        let failed = counters.write_errors.saturating_sub(seen.write_errors);
        let written = counters.written.saturating_sub(seen.written);
        match &mut outage {
            None if failed > 0 => {
                shared.log.emit(&catalog::STORE_WRITES_FAILED, None, &[&failed, &1, &counters.last_write_error]);
                outage = Some((now, 0, failed));
            }
            Some((last, pending, total)) if failed > 0 => {
                *pending += failed;
                *total += failed;
                if now - *last >= REPORT_EVERY {
                    shared.log.emit(&catalog::STORE_WRITES_FAILED, None, &[pending, &(now - *last), &counters.last_write_error]);
                    (*last, *pending) = (now, 0);
                }
            }
            Some((_, _, total)) if written > 0 => {
                shared.log.emit(&catalog::STORE_WRITES_RECOVERED, None, &[total]);
                outage = None;
            }
            _ => {}
        }
        seen = counters;
    }
}

/// Raises the soft limit on open files to the hard limit: every MTA connection is a descriptor,
/// and the usual soft limit of 1024 would refuse connections (#602) long before memory runs out.
/// Under systemd `LimitNOFILE=` sets both; elsewhere this is what the administrator allowed.
/// Returns the soft limit now in force (None when it cannot be read). The benchmark uses it too.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code.
pub async fn run(config: Config, log: Logger) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    log.emit(&catalog::VERSION, None, &[&VERSION, &"MIT OR Apache-2.0"]);
    let shown = config.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(embedded defaults)".into());
    log.emit(&catalog::CONFIG_LOADED, None, &[&shown]);
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                log.emit(&catalog::INIT_ERROR, None, &[&"signal handlers", &"cannot install"]);
                return 1;
            }
        };
    raise_open_file_limit();
    let running = match start(config, log.clone()).await {
        Ok(r) => r,
        Err(_) => {
            log.emit(&catalog::TERMINATED, None, &[]);
            return 1;
        }
    };
    systemd::notify(&format!("READY=1\nSTATUS=listening on {}", running.address()));
    let signo = loop {
        tokio::select! {
            _ = term.recv() => break libc::SIGTERM,
            _ = int.recv() => break libc::SIGINT,
            _ = hup.recv() => {
                log.emit(&catalog::SIGNAL_RECEIVED, None, &[&libc::SIGHUP, &running.active()]);
                systemd::notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", systemd::monotonic_usec()));
                let status = match running.reload() {
                    Ok(()) => "STATUS=configuration reloaded".to_string(),
                    Err(e) => format!("STATUS=reload refused: {e}"),
                };
                systemd::notify(&format!("READY=1\n{status}"));
            }
        }
    };
    log.emit(&catalog::SIGNAL_STOPPING, None, &[&signo, &running.active()]);
    systemd::notify("STOPPING=1\nSTATUS=finishing open sessions");
    let deadline = running.shared().policy().config.shutdown_timeout;
    // A second signal while waiting means "now".
    let stop = running.stop(deadline);
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => {}
        _ = term.recv() => {
            log.emit(&catalog::SIGNAL_TERMINATING_NOW, None, &[&libc::SIGTERM]);
        }
        _ = int.recv() => {
            log.emit(&catalog::SIGNAL_TERMINATING_NOW, None, &[&libc::SIGINT]);
        }
    }
    log.emit(&catalog::SIGNAL_TERMINATING, None, &[&signo]);
    log.emit(&catalog::TERMINATED, None, &[]);
    0
}
