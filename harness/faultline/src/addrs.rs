//! The address model: every replica a run starts has a loopback address of its own that
//! stays the same across restarts and cannot collide with another run on the machine.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so any 127.x.y.z can be bound
//! without configuration. A run claims a block `127.B.0.0/16` (B in 2..=254) for as long as
//! it lives by holding a listener on `127.B.0.1:PORT`; a second run (another `faultline
//! run`, or another scenario test in the same `cargo test`) finds that address taken and
//! moves to the next block. The claim dies with the runner, even on SIGKILL, because the
//! kernel closes its socket.
//!
//! Inside a block, the third byte is a segment:
//!
//! | segment | addresses | what |
//! |---|---|---|
//! | 0 | `127.B.0.1` | the run's claim |
//! | 1..=64 | `127.B.S.1` ..= `127.B.S.254` | replicas of region S (region 1 is the only one today) |
//! | 129..=192 | `127.B.(128+S).H` | proxied addresses in front of region S's replicas: port `PORT` for `net.*` faults, `PORT + A` for the link from region A |
//!
//! With `[network] mode = "netns"` ([`crate::netns`]) each region is a network namespace
//! of its own, which the runner's loopback cannot reach, so replicas and proxies take
//! addresses from RFC 2544's benchmark range 198.18.0.0/15 instead, still keyed by the
//! block B the run claimed on loopback:
//!
//! | addresses | what |
//! |---|---|
//! | `198.18.B.(16(S-1)+H)`, H in 1..=15 | replica H of region S, on the region's end of its veth pair |
//! | `198.19.B.(16(S-1)+H)` | the proxied addresses in front of it, on the runner's end |
//!
//! Every replica listens on the same fixed [`PORT`]: its own IP keeps it apart. A
//! restarted replica binds the same address again (servers set `SO_REUSEADDR`, as Rust's
//! std and tokio listeners do), so clients and peers never need to learn a new one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use scenario::bounds::{MAX_NETNS_REGIONS, MAX_NETNS_REPLICAS_PER_REGION};
use scenario::NetworkMode;

/// The port every replica (and the run's claim) listens on, on its own loopback IP.
/// `FAULTLINE_PORT` overrides it, for a machine where a process listens on `0.0.0.0:7100`.
pub const PORT: u16 = 7100;
/// Replicas per region: host bytes 1..=254 (`scenario::validate::MAX_REPLICAS`).
pub const REPLICAS_PER_REGION: u16 = 254;
/// Regions a run's block has room for.
pub const MAX_REGIONS: u8 = 64;
/// Blocks `127.B.0.0/16` tried, B in `FIRST_BLOCK..=LAST_BLOCK` (127.0/16 and 127.1/16
/// are left alone: distributions use 127.0.0.1 and 127.0.1.1).
const FIRST_BLOCK: u8 = 2;
const LAST_BLOCK: u8 = 254;
/// Segment offset of the proxied addresses of a region.
const PROXY_SEGMENT: u8 = 128;

/// No block could be claimed.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("no free loopback block: 127.{FIRST_BLOCK}.0.1 to 127.{LAST_BLOCK}.0.1 port {port} are all taken ({last}); {hint}")]
    NoBlock {
        port: u16,
        last: std::io::Error,
        hint: &'static str,
    },
    #[error("FAULTLINE_PORT = {0:?}: expected a port number from 1024 to 65535")]
    BadPort(String),
    #[error(
        "replica {index} of region {region}: a region holds at most {REPLICAS_PER_REGION} replicas ({MAX_NETNS_REPLICAS_PER_REGION} with mode = \"netns\")"
    )]
    TooManyReplicas { region: u8, index: u32 },
    #[error("region {0}: expected 1 to {MAX_REGIONS} ({MAX_NETNS_REGIONS} with mode = \"netns\")")]
    BadRegion(u8),
}

/// The port from `FAULTLINE_PORT`, else [`PORT`].
pub fn port() -> Result<u16, AddrError> {
    match std::env::var("FAULTLINE_PORT") {
        Err(_) => Ok(PORT),
        Ok(text) => text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p >= 1024)
            .ok_or(AddrError::BadPort(text)),
    }
}

/// A claimed `127.B.0.0/16`, held until dropped.
#[derive(Debug)]
pub struct RunBlock {
    block: u8,
    port: u16,
    mode: NetworkMode,
    _claim: TcpListener,
}

impl RunBlock {
    /// Claims the first free block for a run in `mode` (see the module's tables).
    pub fn claim_for(mode: NetworkMode) -> Result<RunBlock, AddrError> {
        let mut block = RunBlock::claim()?;
        block.mode = mode;
        Ok(block)
    }

    /// Claims the first free block, starting from one derived from this process and the
    /// clock (so concurrent runs rarely probe the same blocks first), for a loopback run.
    pub fn claim() -> Result<RunBlock, AddrError> {
        let port = port()?;
        let span = u32::from(LAST_BLOCK - FIRST_BLOCK) + 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let start = (std::process::id() ^ nanos) % span;
        let mut last = None;
        for i in 0..span {
            let block = FIRST_BLOCK + u8::try_from((start + i) % span).unwrap_or(0);
            let claim = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, block, 0, 1)), port);
            match TcpListener::bind(claim) {
                Ok(listener) => {
                    return Ok(RunBlock {
                        block,
                        port,
                        mode: NetworkMode::Loopback,
                        _claim: listener,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(AddrError::NoBlock {
            port,
            last: last.unwrap_or_else(|| std::io::Error::other("no block tried")),
            hint: "is another program listening on 0.0.0.0 at that port? set FAULTLINE_PORT to a free one",
        })
    }

    /// The second byte of the block (`127.B.0.0/16`).
    pub fn block(&self) -> u8 {
        self.block
    }

    /// The address of replica `index` (0-based, counted over all components of the stack)
    /// in `region` (1-based).
    pub fn replica(&self, region: u8, index: u32) -> Result<SocketAddr, AddrError> {
        self.in_segment(region, false, index)
    }

    /// The proxied address in front of replica `index` of `region` (reserved for the fault
    /// proxy between regions).
    pub fn proxied(&self, region: u8, index: u32) -> Result<SocketAddr, AddrError> {
        self.in_segment(region, true, index)
    }

    /// The link address in front of replica `index` of `region` for traffic from region
    /// `from` (another region): the proxied IP, port `PORT + from`.
    pub fn linked(&self, region: u8, index: u32, from: u8) -> Result<SocketAddr, AddrError> {
        if from == 0 || from > MAX_REGIONS {
            return Err(AddrError::BadRegion(from));
        }
        let mut a = self.proxied(region, index)?;
        a.set_port(self.port.saturating_add(u16::from(from)));
        Ok(a)
    }

    /// The port replicas listen on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// With `mode = "netns"`: host `host` (1..=15) of region `region`, on `198.18`
    /// (replicas) or `198.19` (proxied); host 0 is the region's /28, which the runner
    /// routes into the region's namespace.
    pub fn netns_ip(&self, proxied: bool, region: u8, host: u8) -> Ipv4Addr {
        let second = if proxied { 19 } else { 18 };
        let base = 16 * u16::from(region.saturating_sub(1)) + u16::from(host);
        Ipv4Addr::new(
            198,
            second,
            self.block,
            u8::try_from(base).unwrap_or(u8::MAX),
        )
    }

    /// Replica `index` of `region`'s own address, or (`proxied`) the one in front of it.
    fn in_segment(&self, region: u8, proxied: bool, index: u32) -> Result<SocketAddr, AddrError> {
        if self.mode == NetworkMode::Netns {
            if region == 0 || usize::from(region) > MAX_NETNS_REGIONS {
                return Err(AddrError::BadRegion(region));
            }
            let host = u8::try_from(index + 1)
                .ok()
                .filter(|h| u32::from(*h) <= MAX_NETNS_REPLICAS_PER_REGION)
                .ok_or(AddrError::TooManyReplicas { region, index })?;
            let ip = self.netns_ip(proxied, region, host);
            return Ok(SocketAddr::new(IpAddr::V4(ip), self.port));
        }
        if region == 0 || region > MAX_REGIONS {
            return Err(AddrError::BadRegion(region));
        }
        let host = u8::try_from(index + 1)
            .ok()
            .filter(|h| u16::from(*h) <= REPLICAS_PER_REGION)
            .ok_or(AddrError::TooManyReplicas { region, index })?;
        let segment = if proxied {
            PROXY_SEGMENT + region
        } else {
            region
        };
        Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, self.block, segment, host)),
            self.port,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_runs_get_different_blocks_and_a_block_frees_when_dropped() {
        let a = RunBlock::claim().expect("a block");
        let b = RunBlock::claim().expect("another block");
        assert_ne!(a.block(), b.block());
        let taken = a.block();
        drop(a);
        let again = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, taken, 0, 1)), b.port);
        TcpListener::bind(again).expect("the dropped run's claim is free again");
    }

    #[test]
    fn replicas_get_distinct_stable_addresses_and_bounds_are_errors() {
        let run = RunBlock::claim().expect("a block");
        let r0 = run.replica(1, 0).expect("first");
        let r1 = run.replica(1, 1).expect("second");
        assert_ne!(r0, r1);
        assert_eq!(r0, run.replica(1, 0).expect("same again"));
        assert_eq!(r0.port(), r1.port());
        assert_eq!(r0.ip(), IpAddr::V4(Ipv4Addr::new(127, run.block(), 1, 1)));
        assert_ne!(run.proxied(1, 0).expect("proxy"), r0);
        assert!(run.replica(1, 253).is_ok());
        assert!(matches!(
            run.replica(1, 254),
            Err(AddrError::TooManyReplicas { .. })
        ));
        assert!(matches!(run.replica(0, 0), Err(AddrError::BadRegion(0))));
        assert!(matches!(
            run.replica(MAX_REGIONS + 1, 0),
            Err(AddrError::BadRegion(_))
        ));
        // With mode = "netns": 198.18 (replicas) and 198.19 (proxied), 15 per region.
        let ns = RunBlock::claim_for(NetworkMode::Netns).expect("a netns block");
        let b = ns.block();
        assert_eq!(
            ns.replica(2, 0).expect("eu/0"),
            SocketAddr::from(([198, 18, b, 17], ns.port()))
        );
        assert_eq!(
            ns.linked(2, 14, 1).expect("link"),
            SocketAddr::from(([198, 19, b, 31], ns.port() + 1))
        );
        assert!(matches!(
            ns.replica(1, 15),
            Err(AddrError::TooManyReplicas { .. })
        ));
        assert!(matches!(ns.replica(17, 0), Err(AddrError::BadRegion(17))));
        assert_eq!(
            ns.replica(16, 14).expect("last").ip(),
            IpAddr::V4(Ipv4Addr::new(198, 18, b, 255))
        );
        // A replica's address is bindable and distinct from every other run's.
        let l = TcpListener::bind(r0).expect("replica address binds");
        assert_eq!(l.local_addr().expect("bound"), r0);
    }
}
