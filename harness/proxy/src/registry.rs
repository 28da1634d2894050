//! The proxies and their toxics: what the API reads and changes, and what the runner
//! drives as a library. Each enabled proxy owns a listener task; each accepted connection
//! a [`link`] task; all of them stop with the proxy, and every proxy stops
//! when the [`Registry`] is shut down or dropped.

use crate::link::{self, Chain, LinkContext};
use crate::metrics::{Metrics, ProxyLabels};
use crate::pipe::Entry;
use crate::toxic::{self, limits, ApiError, Toxic};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Most proxies one registry holds.
pub const MAX_PROXIES: usize = 1024;

/// Most client connections one proxy keeps open at once; beyond it a new connection is
/// accepted and closed at once (counted in `faultline_proxy_connections_refused_total`).
pub const MAX_CONNECTIONS_PER_PROXY: u64 = 10_000;

/// A proxy as the API creates it (Toxiproxy's fields, plus an optional seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub name: String,
    /// `host:port` to listen on; port 0 picks a free one. Empty: `127.0.0.1:0`.
    pub listen: String,
    /// `host:port` of the server, resolved on every connection.
    pub upstream: String,
    pub enabled: bool,
    /// Seed of this proxy's random choices; default: derived from the registry's seed
    /// and the proxy's name.
    pub seed: Option<u64>,
}

impl ProxySpec {
    /// Reads a proxy from its API JSON (`POST /proxies`, one element of `/populate`).
    /// `at` names the element in errors (e.g. "proxy 2").
    pub fn from_json(v: &Value, at: Option<&str>) -> Result<Self, ApiError> {
        let field = |f: &str| match at {
            Some(a) => format!("{f} at {a}"),
            None => f.to_owned(),
        };
        let Value::Object(obj) = v else {
            return Err(ApiError::bad_request(format!(
                "bad request body: expected a proxy object {{\"name\", \"listen\", \"upstream\", \"enabled\"}}{}",
                at.map(|a| format!(" at {a}")).unwrap_or_default()
            )));
        };
        for key in obj.keys() {
            if !["name", "listen", "upstream", "enabled", "seed", "toxics"].contains(&key.as_str())
            {
                return Err(ApiError::bad_request(format!(
                    "unknown field {}; a proxy has name, listen, upstream, enabled and seed",
                    field(&format!("{key:?}"))
                )));
            }
        }
        let string = |key: &str| -> Result<String, ApiError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(ApiError::bad_request(format!(
                    "{}: expected a string, got {other}",
                    field(key)
                ))),
            }
        };
        let name = string("name")?;
        if name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "missing required field: {}",
                field("name")
            )));
        }
        toxic::check_name(&field("name"), &name)?;
        let upstream = string("upstream")?;
        if upstream.is_empty() {
            return Err(ApiError::bad_request(format!(
                "missing required field: {}",
                field("upstream")
            )));
        }
        let enabled = match obj.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{}: expected true or false, got {other}",
                    field("enabled")
                )))
            }
        };
        let seed = match obj.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{}: expected an integer from 0 to 2^64-1, got {v}",
                    field("seed")
                ))
            })?),
        };
        Ok(Self {
            name,
            listen: string("listen")?,
            upstream,
            enabled,
            seed,
        })
    }
}

struct ProxyState {
    spec: ProxySpec,
    /// The address actually bound (port 0 resolved), or what was asked while disabled.
    listen: String,
    toxics: Vec<Arc<Entry>>,
    chain: watch::Sender<Arc<Chain>>,
    /// Cancels the listener and every connection of this proxy.
    running: Option<CancellationToken>,
    /// The listening socket, shared with the accept task so [`ProxyState::stop`] can shut
    /// it down before the API answers.
    listener: Option<Arc<TcpListener>>,
    connections: Arc<AtomicU64>,
    seed: u64,
}

impl ProxyState {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.spec.name,
            "listen": self.listen,
            "upstream": self.spec.upstream,
            "enabled": self.running.is_some(),
            "toxics": self.toxics.iter().map(|e| e.toxic.to_json()).collect::<Vec<_>>(),
        });
        if let Some(seed) = self.spec.seed {
            v["seed"] = json!(seed);
        }
        v
    }

    fn publish(&self) {
        self.chain
            .send_replace(Arc::new(Chain::from_entries(&self.toxics)));
    }

    /// Stops accepting at once (a connect right after this returns is refused, as after
    /// Toxiproxy's disable) and closes every connection of the proxy.
    fn stop(&mut self) {
        // Cancelled first, so the accept task takes the shutdown below for a stop, not
        // an error.
        if let Some(t) = self.running.take() {
            t.cancel();
        }
        if let Some(l) = self.listener.take() {
            // The accept task may not run again for a while; shutting the socket down
            // here makes the kernel refuse new connections before the API answers. The
            // descriptor is valid: this Arc keeps the listener open until it drops.
            use std::os::fd::AsRawFd;
            let _ = nix::sys::socket::shutdown(l.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Every proxy of one API server (or one runner).
pub struct Registry {
    state: Mutex<State>,
    seed: u64,
    metrics: Arc<Metrics>,
    /// Parent of every proxy's token: cancelled on shutdown.
    root: CancellationToken,
    names: Arc<Mutex<HashMap<u64, (String, &'static str)>>>,
    /// The runtime proxies run on: changes may come from any thread (a heal on a blocking
    /// thread, a guard dropped during unwinding).
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("seed", &self.seed)
            .finish()
    }
}

#[derive(Default)]
struct State {
    proxies: BTreeMap<String, ProxyState>,
    next_id: u64,
}

impl Registry {
    /// A registry whose random choices all derive from `seed`. Must be created inside a
    /// tokio runtime (proxies spawn tasks on it).
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            seed,
            metrics: Arc::new(Metrics::new()),
            root: CancellationToken::new(),
            names: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every change is one
        // assignment), so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All proxies as `GET /proxies` shows them: an object by name.
    pub fn list(&self) -> Value {
        let st = self.lock();
        Value::Object(
            st.proxies
                .iter()
                .map(|(k, p)| (k.clone(), p.to_json()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        st.proxies
            .get(name)
            .map(ProxyState::to_json)
            .ok_or_else(|| not_found(name))
    }

    /// The address a proxy listens on now.
    pub fn listen_addr(&self, name: &str) -> Result<String, ApiError> {
        let st = self.lock();
        st.proxies
            .get(name)
            .map(|p| p.listen.clone())
            .ok_or_else(|| not_found(name))
    }

    /// Creates a proxy (`POST /proxies`): 409 when the name exists, 500 when the listen
    /// address cannot be bound (as Toxiproxy answers).
    pub fn create(&self, spec: ProxySpec) -> Result<Value, ApiError> {
        let mut st = self.lock();
        if st.proxies.contains_key(&spec.name) {
            return Err(ApiError::conflict(format!(
                "proxy already exists: {:?}",
                spec.name
            )));
        }
        if st.proxies.len() >= MAX_PROXIES {
            return Err(ApiError::bad_request(format!(
                "name: {:?} would be proxy {}; at most {MAX_PROXIES} are allowed",
                spec.name,
                MAX_PROXIES + 1
            )));
        }
        let p = self.new_state(spec)?;
        let v = p.to_json();
        st.proxies.insert(p.spec.name.clone(), p);
        Ok(v)
    }

    /// `POST /populate`: creates or replaces each proxy in order (unchanged ones are kept
    /// with their toxics, as Toxiproxy does). On an error, the proxies done so far and the
    /// error.
    pub fn populate(&self, specs: Vec<ProxySpec>) -> (Vec<Value>, Option<ApiError>) {
        let mut done = Vec::new();
        for spec in specs {
            let mut st = self.lock();
            if let Some(existing) = st.proxies.get(&spec.name) {
                let same_listen = spec.listen.is_empty()
                    || existing.listen == spec.listen
                    || existing.spec.listen == spec.listen;
                if same_listen && existing.spec.upstream == spec.upstream {
                    done.push(existing.to_json());
                    continue;
                }
                if let Some(mut old) = st.proxies.remove(&spec.name) {
                    old.stop();
                }
            } else if st.proxies.len() >= MAX_PROXIES {
                return (
                    done,
                    Some(ApiError::bad_request(format!(
                        "name: {:?} would be proxy {}; at most {MAX_PROXIES} are allowed",
                        spec.name,
                        MAX_PROXIES + 1
                    ))),
                );
            }
            match self.new_state(spec) {
                Ok(p) => {
                    done.push(p.to_json());
                    st.proxies.insert(p.spec.name.clone(), p);
                }
                Err(e) => return (done, Some(e)),
            }
        }
        (done, None)
    }

    fn new_state(&self, spec: ProxySpec) -> Result<ProxyState, ApiError> {
        let seed = spec
            .seed
            .unwrap_or_else(|| derive_seed(self.seed, &spec.name));
        let (chain, _) = watch::channel(Arc::new(Chain::default()));
        let mut p = ProxyState {
            listen: if spec.listen.is_empty() {
                "127.0.0.1:0".to_owned()
            } else {
                spec.listen.clone()
            },
            spec,
            toxics: Vec::new(),
            chain,
            running: None,
            listener: None,
            connections: Arc::new(AtomicU64::new(0)),
            seed,
        };
        if p.spec.enabled {
            self.start(&mut p)?;
        }
        Ok(p)
    }

    /// Binds the proxy's listen address and starts accepting.
    fn start(&self, p: &mut ProxyState) -> Result<(), ApiError> {
        if p.running.is_some() {
            return Ok(());
        }
        let std_listener = std::net::TcpListener::bind(p.listen.as_str())
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                ApiError::server(format!(
                    "listen: cannot listen on {:?} for proxy {:?}: {e}",
                    p.listen, p.spec.name
                ))
            })?;
        let listener = {
            let _in_runtime = self.runtime.enter();
            TcpListener::from_std(std_listener)
                .map_err(|e| ApiError::server(format!("listen: {e}")))?
        };
        let addr: SocketAddr = listener
            .local_addr()
            .map_err(|e| ApiError::server(format!("listen: {e}")))?;
        p.listen = addr.to_string();
        let token = self.root.child_token();
        let ctx = LinkContext {
            proxy: p.spec.name.clone(),
            chain: p.chain.subscribe(),
            metrics: self.metrics.clone(),
            stop: token.clone(),
            names: self.names.clone(),
        };
        let listener = Arc::new(listener);
        p.listener = Some(listener.clone());
        self.runtime.spawn(accept_loop(
            listener,
            p.spec.upstream.clone(),
            p.seed,
            p.connections.clone(),
            ctx,
        ));
        tracing::info!(proxy = %p.spec.name, listen = %p.listen, upstream = %p.spec.upstream, "proxy started");
        p.running = Some(token);
        Ok(())
    }

    /// `POST`/`PATCH /proxies/{name}`: changes listen, upstream or enabled. A changed
    /// address restarts the proxy (its open connections close), as in Toxiproxy.
    pub fn update(&self, name: &str, body: &Value) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let p = st.proxies.get_mut(name).ok_or_else(|| not_found(name))?;
        let Value::Object(obj) = body else {
            return Err(ApiError::bad_request(
                "bad request body: expected a JSON object with listen, upstream or enabled",
            ));
        };
        let mut listen = p.listen.clone();
        let mut upstream = p.spec.upstream.clone();
        let mut enabled = p.running.is_some();
        for (key, v) in obj {
            match (key.as_str(), v) {
                ("listen", Value::String(s)) => listen = s.clone(),
                ("upstream", Value::String(s)) if !s.is_empty() => upstream = s.clone(),
                ("enabled", Value::Bool(b)) => enabled = *b,
                ("name", Value::String(s)) if s == name => {}
                ("toxics" | "seed", _) => {}
                ("listen" | "upstream", other) => {
                    return Err(ApiError::bad_request(format!(
                        "{key}: expected a non-empty host:port string, got {other}"
                    )))
                }
                ("enabled", other) => {
                    return Err(ApiError::bad_request(format!(
                        "enabled: expected true or false, got {other}"
                    )))
                }
                ("name", other) => {
                    return Err(ApiError::bad_request(format!(
                    "name: a proxy cannot be renamed (delete it and create another); got {other}"
                )))
                }
                (other, _) => {
                    return Err(ApiError::bad_request(format!(
                        "unknown field {other:?}; an update has listen, upstream and enabled"
                    )))
                }
            }
        }
        if listen != p.listen || upstream != p.spec.upstream {
            p.stop();
            p.listen = listen.clone();
            p.spec.listen = listen;
            p.spec.upstream = upstream;
        }
        if enabled {
            self.start(p)?;
        } else {
            p.stop();
        }
        Ok(p.to_json())
    }

    /// `DELETE /proxies/{name}`: stops it and closes its connections.
    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let mut st = self.lock();
        let mut p = st.proxies.remove(name).ok_or_else(|| not_found(name))?;
        p.stop();
        self.forget_names(&p.toxics);
        Ok(())
    }

    /// `POST /reset`: every proxy enabled, every toxic removed.
    pub fn reset(&self) -> Result<(), ApiError> {
        let mut st = self.lock();
        let mut first_error = None;
        for p in st.proxies.values_mut() {
            let old = std::mem::take(&mut p.toxics);
            self.forget_names(&old);
            p.publish();
            if let Err(e) = self.start(p) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn toxics(&self, proxy: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        let p = st.proxies.get(proxy).ok_or_else(|| not_found(proxy))?;
        Ok(Value::Array(
            p.toxics.iter().map(|e| e.toxic.to_json()).collect(),
        ))
    }

    pub fn toxic(&self, proxy: &str, name: &str) -> Result<Value, ApiError> {
        let st = self.lock();
        let p = st.proxies.get(proxy).ok_or_else(|| not_found(proxy))?;
        p.toxics
            .iter()
            .find(|e| e.toxic.name == name)
            .map(|e| e.toxic.to_json())
            .ok_or_else(|| toxic_not_found(proxy, name))
    }

    /// Adds a toxic; open connections get it at once.
    pub fn add_toxic(&self, proxy: &str, t: Toxic) -> Result<Value, ApiError> {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        let p = st.proxies.get_mut(proxy).ok_or_else(|| not_found(proxy))?;
        if p.toxics.iter().any(|e| e.toxic.name == t.name) {
            return Err(ApiError::conflict(format!(
                "toxic already exists: {:?} on proxy {proxy:?}",
                t.name
            )));
        }
        if p.toxics.len() >= limits::MAX_TOXICS_PER_PROXY {
            return Err(ApiError::bad_request(format!(
                "name: {:?} would be toxic {} on proxy {proxy:?}; at most {} are allowed",
                t.name,
                limits::MAX_TOXICS_PER_PROXY + 1,
                limits::MAX_TOXICS_PER_PROXY
            )));
        }
        let v = t.to_json();
        self.remember_name(id, &t);
        p.toxics.push(Arc::new(Entry::new(id, t)));
        p.publish();
        Ok(v)
    }

    /// Adds a toxic and returns a guard that removes it when dropped: the runner's way to
    /// inject a network fault that heals on every exit path (STYLE.md rule 8).
    pub fn inject(self: &Arc<Self>, proxy: &str, t: Toxic) -> Result<ToxicGuard, ApiError> {
        let name = t.name.clone();
        self.add_toxic(proxy, t)?;
        Ok(ToxicGuard {
            registry: Arc::downgrade(self),
            proxy: proxy.to_owned(),
            toxic: name,
        })
    }

    /// `PATCH /proxies/{p}/toxics/{t}`: new attributes or toxicity (a fresh start for the
    /// toxic on every connection: timers restart, toxicity is drawn again).
    pub fn update_toxic(&self, proxy: &str, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        let (p, i) = find_toxic(&mut st, proxy, name)?;
        let t = toxic::apply_update(&p.toxics[i].toxic, body)?;
        let v = t.to_json();
        self.remember_name(id, &t);
        let old = std::mem::replace(&mut p.toxics[i], Arc::new(Entry::new(id, t)));
        self.forget_names(std::slice::from_ref(&old));
        p.publish();
        Ok(v)
    }

    pub fn remove_toxic(&self, proxy: &str, name: &str) -> Result<(), ApiError> {
        let mut st = self.lock();
        let (p, i) = find_toxic(&mut st, proxy, name)?;
        let old = p.toxics.remove(i);
        self.forget_names(std::slice::from_ref(&old));
        p.publish();
        Ok(())
    }

    /// What a proxy has carried so far: connections accepted, and bytes read from the
    /// clients (upstream) and from the server (downstream). `None` for an unknown proxy.
    pub fn stats(&self, proxy: &str) -> Option<ProxyStats> {
        if !self.lock().proxies.contains_key(proxy) {
            return None;
        }
        let m = &self.metrics;
        let dir = |d: &str| crate::metrics::DirectionLabels {
            proxy: proxy.to_owned(),
            direction: d.to_owned(),
        };
        // One statement per read: `Family::get` returns a guard on the family's lock,
        // which lives to the end of its statement; holding one while another lookup
        // needed the lock for writing (`get_or_create` of a series not yet created, as
        // for a proxy that never carried bytes one way) deadlocked this thread. `get`
        // only reads, and a series never created is 0.
        let connections = m
            .connections
            .get(&ProxyLabels {
                proxy: proxy.to_owned(),
            })
            .map_or(0, |c| c.get());
        let bytes_upstream = m.received.get(&dir("upstream")).map_or(0, |c| c.get());
        let bytes_downstream = m.received.get(&dir("downstream")).map_or(0, |c| c.get());
        Some(ProxyStats {
            connections,
            bytes_upstream,
            bytes_downstream,
        })
    }

    /// How many toxics all proxies hold (0 after a reset or shutdown).
    pub fn toxic_count(&self) -> usize {
        self.lock().proxies.values().map(|p| p.toxics.len()).sum()
    }

    /// Stops every proxy: listeners close, connections close, toxics are removed.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        for p in st.proxies.values_mut() {
            p.toxics.clear();
            p.publish();
            p.stop();
        }
        st.proxies.clear();
        self.root.cancel();
    }

    fn remember_name(&self, id: u64, t: &Toxic) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (t.name.clone(), t.kind.type_name()));
    }

    fn forget_names(&self, entries: &[Arc<Entry>]) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            names.remove(&e.id);
        }
    }
}

/// What one proxy has carried ([`Registry::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    pub connections: u64,
    /// Bytes read from clients.
    pub bytes_upstream: u64,
    /// Bytes read from the server.
    pub bytes_downstream: u64,
}

/// A toxic that is removed when this guard is dropped (see [`Registry::inject`]).
#[must_use = "dropping the guard removes the toxic at once"]
#[derive(Debug)]
pub struct ToxicGuard {
    registry: std::sync::Weak<Registry>,
    proxy: String,
    toxic: String,
}

impl ToxicGuard {
    /// The toxic's name on its proxy.
    pub fn name(&self) -> &str {
        &self.toxic
    }
}

impl Drop for ToxicGuard {
    fn drop(&mut self) {
        if let Some(r) = self.registry.upgrade() {
            // Already gone (a reset, the proxy deleted) is fine: it is healed either way.
            let _ = r.remove_toxic(&self.proxy, &self.toxic);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

/// The proxy `proxy` and the index of its toxic `name`, or the 404 naming what is missing.
fn find_toxic<'a>(
    st: &'a mut State,
    proxy: &str,
    name: &str,
) -> Result<(&'a mut ProxyState, usize), ApiError> {
    let p = st.proxies.get_mut(proxy).ok_or_else(|| not_found(proxy))?;
    let i = p
        .toxics
        .iter()
        .position(|e| e.toxic.name == name)
        .ok_or_else(|| toxic_not_found(proxy, name))?;
    Ok((p, i))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("proxy not found: {name:?}"))
}

fn toxic_not_found(proxy: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("toxic not found: {name:?} on proxy {proxy:?}"))
}

/// A proxy's seed from the registry's and its name (FNV-1a, stable across versions).
fn derive_seed(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A connection's seed: the proxy's and the connection's number (SplitMix64), so the
/// n-th connection of a proxy replays the same choices in every run with the same seed.
fn connection_seed(proxy_seed: u64, n: u64) -> u64 {
    let mut z = proxy_seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn accept_loop(
    listener: Arc<TcpListener>,
    upstream: String,
    seed: u64,
    connections: Arc<AtomicU64>,
    ctx: LinkContext,
) {
    let labels = ProxyLabels {
        proxy: ctx.proxy.clone(),
    };
    let accepted = ctx.metrics.connections.get_or_create(&labels).clone();
    let active = ctx.metrics.active.get_or_create(&labels).clone();
    let refused = ctx.metrics.refused.get_or_create(&labels).clone();
    let open = Arc::new(AtomicU64::new(0));
    loop {
        let conn = tokio::select! {
            () = ctx.stop.cancelled() => return,
            c = listener.accept() => c,
        };
        let client = match conn {
            Ok((c, _)) => c,
            Err(_) if ctx.stop.is_cancelled() => return,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(proxy = %ctx.proxy, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS_PER_PROXY {
            refused.inc();
            drop(client);
            continue;
        }
        let n = connections.fetch_add(1, Ordering::SeqCst);
        accepted.inc();
        active.inc();
        open.fetch_add(1, Ordering::SeqCst);
        let open = open.clone();
        let active = active.clone();
        let ctx = ctx.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            link::run(client, upstream, connection_seed(seed, n), ctx).await;
            active.dec();
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
