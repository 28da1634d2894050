//! `[network] mode = "netns"`: each region a Linux network namespace of its own, so the
//! links are the only way from one region to another (in the default loopback mode a
//! program that ignores the placeholders reaches every region directly).
//!
//! For region S of the run's block B ([`crate::addrs`] has the address plan):
//! - a new, unnamed namespace, held open by a file descriptor of the runner's (no
//!   `ip netns add`: a named namespace would outlive a runner killed with SIGKILL);
//! - inside it: `lo` up, the veth end `faultline0` with the region's replica addresses
//!   `198.18.B.(16(S-1)+1..=15)/32`, and a default route out of it;
//! - in the runner's namespace: the other end `flBhS` with the proxied addresses
//!   `198.19.B.…/32` (the link and `net.*` proxies listen there), a route to the region's
//!   /28, and IPv4 forwarding off on that interface.
//!
//! A connection from one region straight to another's replica never gets through: the
//! region's default route has no gateway, so it asks for the replica's address on its
//! veth, which only the runner's end answers, and only for addresses the runner owns; and
//! the runner would not forward it anyway, even on a host with `ip_forward = 1`. It fails
//! as an unreachable host after the kernel's ARP timeout (about 3 s).
//!
//! The runner itself stays in its own namespace: it reaches every replica (probes, load,
//! proxies' upstreams) through the region's veth, and a region's processes reach the
//! proxies on the runner's end. Replicas of one region reach each other inside it.
//!
//! Cleanup: [`RegionNets`]'s drop deletes the runner's ends (which deletes the pairs).
//! When the runner dies without dropping it (SIGKILL), the kernel closes its descriptors
//! and its children die of their parent-death signal; a namespace without processes or
//! descriptors is destroyed and its veth pair with it, so nothing named is left behind.
//!
//! Configuration runs iproute2's `ip -batch` (inside a namespace through `setns` before
//! `exec`) rather than speaking rtnetlink here: `ip` is on every machine with namespaces,
//! and the dozen commands a region needs do not justify an async netlink stack.
//!
//! Needs root (CAP_SYS_ADMIN for the namespaces, CAP_NET_ADMIN for the links); without it
//! the run stops before anything starts, saying so.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Command, Stdio};
use std::sync::Arc;

use scenario::bounds::MAX_NETNS_REPLICAS_PER_REGION;

use crate::addrs::RunBlock;

/// The namespace's end of each region's veth pair.
pub const INNER_IF: &str = "faultline0";

/// A region's namespace could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("[network] mode = \"netns\" needs root (CAP_SYS_ADMIN to create network namespaces, CAP_NET_ADMIN to wire them): {0}; run as root, or use mode = \"loopback\", which needs no privileges")]
    Privilege(String),
    #[error("[network] mode = \"netns\" needs iproute2's `ip` (apt-get install iproute2): {0}")]
    NoIp(std::io::Error),
    #[error("[network] mode = \"netns\": region {region}: `ip {side}` failed: {detail}")]
    Ip {
        region: String,
        side: &'static str,
        detail: String,
    },
}

/// One region's namespace.
#[derive(Debug, Clone)]
pub struct RegionNet {
    /// The region's name.
    pub region: String,
    /// `/proc/thread-self/ns/net` of the thread that created it, kept open: while a
    /// descriptor or a process refers to it, the namespace lives.
    fd: Arc<OwnedFd>,
    /// The runner's end of the veth pair.
    pub host_if: String,
}

impl RegionNet {
    /// The namespace's descriptor, for [`enter_on`].
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Every region's namespace, wired to the runner; torn down when dropped.
#[derive(Debug)]
pub struct RegionNets {
    nets: Vec<RegionNet>,
}

impl RegionNets {
    /// Builds one namespace per region (`names[i]` is region `i + 1` of the address
    /// model), with every address the region may use (15 replicas and their proxied
    /// addresses), so variants with other replica counts reuse them.
    pub fn create(block: &RunBlock, names: &[String]) -> Result<RegionNets, NetnsError> {
        let mut nets = RegionNets { nets: Vec::new() };
        for (i, name) in names.iter().enumerate() {
            let region = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let net = create_one(block, region, name)?;
            nets.nets.push(net);
        }
        Ok(nets)
    }

    /// Region `name`'s namespace.
    pub fn get(&self, name: &str) -> Option<&RegionNet> {
        self.nets.iter().find(|n| n.region == name)
    }

    /// The regions' namespaces, in region order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionNet> {
        self.nets.iter()
    }
}

impl Drop for RegionNets {
    fn drop(&mut self) {
        for net in &self.nets {
            delete_link(&net.host_if);
        }
    }
}

fn create_one(block: &RunBlock, region: u8, name: &str) -> Result<RegionNet, NetnsError> {
    let host_if = format!("fl{}h{region}", block.block());
    let hosts = 1..=u8::try_from(MAX_NETNS_REPLICAS_PER_REGION).unwrap_or(15);
    // Inside: loopback, this end of the pair (the other end goes to the runner's
    // namespace, named by the runner's pid), the replica addresses, the way out.
    let mut inner = String::from("link set lo up\n");
    inner.push_str(&format!(
        "link add {INNER_IF} type veth peer name {host_if} netns {}\n",
        std::process::id()
    ));
    for h in hosts.clone() {
        inner.push_str(&format!(
            "addr add {}/32 dev {INNER_IF}\n",
            block.netns_ip(false, region, h)
        ));
    }
    inner.push_str(&format!("link set {INNER_IF} up\n"));
    inner.push_str(&format!("route add default dev {INNER_IF}\n"));
    // A previous run's pair of the same name lingers while its namespace empties (a
    // runner killed with SIGKILL, its children dying): wait for it rather than fail. A
    // namespace whose setup failed is dropped with its descriptor.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let net = loop {
        let net = RegionNet {
            region: name.to_owned(),
            fd: Arc::new(new_namespace()?),
            host_if: host_if.clone(),
        };
        match ip_batch(Some(net.fd()), &inner) {
            Ok(()) => break net,
            Err(e) if e.contains("File exists") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(detail) => {
                return Err(NetnsError::Ip {
                    region: name.to_owned(),
                    side: "inside the region's namespace",
                    detail,
                })
            }
        }
    };
    // Outside. Until `net` is returned, a failure deletes the pair here.
    let cleanup = DeleteOnError(&host_if);
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{host_if}/forwarding"),
        "0\n",
    )
    .map_err(|e| NetnsError::Ip {
        region: name.to_owned(),
        side: "sysctl forwarding",
        detail: e.to_string(),
    })?;
    let mut outer = String::new();
    for h in hosts {
        outer.push_str(&format!(
            "addr add {}/32 dev {host_if}\n",
            block.netns_ip(true, region, h)
        ));
    }
    outer.push_str(&format!("link set {host_if} up\n"));
    outer.push_str(&format!(
        "route add {}/28 dev {host_if}\n",
        block.netns_ip(false, region, 0)
    ));
    ip_batch(None, &outer).map_err(|detail| NetnsError::Ip {
        region: name.to_owned(),
        side: "in the runner's namespace",
        detail,
    })?;
    std::mem::forget(cleanup);
    Ok(net)
}

struct DeleteOnError<'a>(&'a str);

impl Drop for DeleteOnError<'_> {
    fn drop(&mut self) {
        delete_link(self.0);
    }
}

/// Deletes the runner's end of a pair, which deletes the pair, its addresses and its
/// routes (a namespace that still has processes keeps only its loopback until they exit).
fn delete_link(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A new network namespace, made by a short-lived thread (unsharing moves only the calling
/// thread), and held by the descriptor returned.
fn new_namespace() -> Result<OwnedFd, NetnsError> {
    std::thread::spawn(|| -> Result<OwnedFd, NetnsError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::Privilege(format!("unshare(CLONE_NEWNET): {e}")))?;
        let file = File::open("/proc/thread-self/ns/net")
            .map_err(|e| NetnsError::Privilege(format!("/proc/thread-self/ns/net: {e}")))?;
        Ok(OwnedFd::from(file))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetnsError::Privilege(
            "the namespace thread panicked".to_owned(),
        ))
    })
}

/// Runs `ip -batch -` with `commands`, inside the namespace `ns` when given. Errors carry
/// ip's message.
fn ip_batch(ns: Option<RawFd>, commands: &str) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(fd) = ns {
        enter_on(&mut cmd, fd);
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetnsError::NoIp(e).to_string()
        } else {
            e.to_string()
        }
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(commands.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Makes `cmd`'s child join the network namespace `ns` before it runs its program.
///
/// `pre_exec` runs between `fork` and `exec` in a copy of a multithreaded process, so the
/// closure keeps the invariant stated in `pdeathsig`: only async-signal-safe calls (here
/// the `setns` syscall), no allocation, no locks; errors are errno-based `io::Error`s.
/// The descriptor is the runner's, opened with close-on-exec, so the program does not
/// inherit it.
pub fn enter_on<C: PreExec>(cmd: &mut C, ns: RawFd) {
    // SAFETY: the closure only calls `setns` and builds an errno `io::Error` (no
    // allocation), as the module invariant above requires.
    unsafe {
        cmd.add_pre_exec(move || {
            if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// std's and tokio's `Command`, both of which take a `pre_exec` closure.
pub trait PreExec {
    /// # Safety
    /// As `std::os::unix::process::CommandExt::pre_exec`.
    unsafe fn add_pre_exec<F>(&mut self, f: F)
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static;
}

impl PreExec for Command {
    unsafe fn add_pre_exec<F>(&mut self, f: F)
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        std::os::unix::process::CommandExt::pre_exec(self, f);
    }
}

impl PreExec for tokio::process::Command {
    unsafe fn add_pre_exec<F>(&mut self, f: F)
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        self.pre_exec(f);
    }
}
