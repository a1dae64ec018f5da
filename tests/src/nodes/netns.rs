//! A Linux network namespace of our own ([`NetNs`]) for partition tests: a process started in
//! it ([`NetNs::command`], [`spawn_binary_in`](super::spawn_binary_in)) reaches the host only
//! over a veth pair, at [`NetNs::host_ip`], and its traffic to one of our servers can be cut
//! ([`NetNs::cut`]) and healed with iptables rules that live inside the namespace, so nothing
//! but that process's own traffic is touched.
//!
//! Needs root and the `ip` and `iptables` commands ([`NetNs::unavailable`] says what is
//! missing). The servers must listen on the host IP too: [`PgOptions::listen_on`],
//! [`RabbitOptions::listen_on`], `FakeCloudConfig::listen`.
//!
//! Each namespace is named after its subnet (`bo-<a><b><c>` in hex for 10.a.b.c/30) and first
//! claimed by an owner file, `/run/buyonce-netns/<name>`, created exclusively and holding the
//! creator's pid and start time. That one file is the lock on the subnet across test threads
//! and test binaries, and what [`remove_leftovers`] reads to delete the namespaces of runs
//! that were killed before their `Drop` ran.
//!
//! [`PgOptions::listen_on`]: super::PgOptions::listen_on
//! [`RabbitOptions::listen_on`]: super::RabbitOptions::listen_on

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::{bail, Context};
use rand::Rng;
use tokio::sync::Mutex;

use super::run;

/// Where the owner files live (a tmpfs: a reboot, which removes every namespace, empties it).
const OWNERS: &str = "/run/buyonce-netns";
/// The chains our cuts live in, jumped to from `OUTPUT` and `INPUT`: healing is a flush.
const CUT_OUT: &str = "BO_CUT_OUT";
const CUT_IN: &str = "BO_CUT_IN";

/// A TCP service on the host side of the veth (at [`NetNs::host_ip`]) to cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// What it is, for error messages (`"postgres"`).
    pub name: &'static str,
    /// Its port on the host IP.
    pub port: u16,
}

impl Target {
    /// TCP `port` on the host IP, called `name` in errors.
    pub fn tcp(name: &'static str, port: u16) -> Target {
        Target { name, port }
    }
}

/// How a cut looks to the process in the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every packet either way is dropped: connects and established connections hang until
    /// their own timeouts (a dead link, a silent firewall).
    Drop,
    /// Outgoing packets are answered with a TCP reset: connects are refused and established
    /// connections reset at once (a crashed peer). The peer's packets are dropped; the peer
    /// learns nothing and keeps its side open.
    Reject,
}

/// A network namespace of our own, connected to the host by a veth pair on a /30 of its own
/// (host side `.1`, namespace side `.2`). `Drop` deletes the veth pair and the namespace, also
/// when a test panics. A process still inside is cut off from everything then, so declare its
/// guard ([`super::KillOnDrop`]) after the namespace: it is killed first.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// The active cuts by port; the lock also keeps two cuts' iptables calls apart.
    cuts: Mutex<BTreeMap<u16, Mode>>,
}

/// A free /30 in 10.0.0.0/8, chosen at random: base address, namespace name, veth names.
struct Subnet {
    base: Ipv4Addr,
}

impl Subnet {
    fn random() -> Subnet {
        let mut rng = rand::rng();
        let [a, b, c]: [u8; 3] = [rng.random(), rng.random(), rng.random::<u8>() & !3];
        Subnet {
            base: Ipv4Addr::new(10, a, b, c),
        }
    }

    fn tag(&self) -> String {
        let [_, a, b, c] = self.base.octets();
        format!("{a:02x}{b:02x}{c:02x}")
    }

    fn host(&self, n: u8) -> Ipv4Addr {
        let [p, a, b, c] = self.base.octets();
        Ipv4Addr::new(p, a, b, c + n)
    }

    fn overlaps(&self, net: Ipv4Addr, prefix: u32) -> bool {
        let mask = |len: u32| u32::MAX.checked_shl(32 - len).unwrap_or(0);
        let common = mask(prefix.min(30));
        u32::from(self.base) & common == u32::from(net) & common
    }
}

impl NetNs {
    /// Why namespaces cannot be made here (not root, `ip` or `iptables` missing), or `None`.
    pub fn unavailable() -> Option<String> {
        if !super::running_as_root() {
            return Some("network namespaces need root".into());
        }
        if let Err(e) = ip().and(iptables()) {
            return Some(format!("{e:#}"));
        }
        None
    }

    /// Creates a namespace on a free subnet, with the veth pair and `lo` up, and the (empty)
    /// cut chains in place. Removes leftovers of killed runs first, once per process.
    pub async fn create() -> anyhow::Result<NetNs> {
        static LEFTOVERS: OnceLock<()> = OnceLock::new();
        LEFTOVERS.get_or_init(|| match remove_leftovers() {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed network namespaces of dead test runs")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "removing leftovers"),
        });
        let taken = host_networks().await?;
        for _ in 0..64 {
            let subnet = Subnet::random();
            if taken.iter().any(|&(net, len)| subnet.overlaps(net, len)) {
                continue;
            }
            let name = format!("bo-{}", subnet.tag());
            if !claim(&name)? {
                continue; // another test holds this subnet
            }
            // From here on, Drop removes whatever part was made, and the owner file.
            let ns = NetNs {
                host_if: format!("bo{}h", subnet.tag()),
                ns_if: format!("bo{}n", subnet.tag()),
                host_ip: subnet.host(1),
                ns_ip: subnet.host(2),
                name,
                cuts: Mutex::new(BTreeMap::new()),
            };
            ns.set_up().await?;
            return Ok(ns);
        }
        bail!("no free /30 in 10.0.0.0/8 after 64 tries (host networks: {taken:?})")
    }

    async fn set_up(&self) -> anyhow::Result<()> {
        let (ns, host_if, ns_if) = (&*self.name, &*self.host_if, &*self.ns_if);
        let host_cidr = format!("{}/30", self.host_ip);
        let ns_cidr = format!("{}/30", self.ns_ip);
        let steps: [&[&str]; 7] = [
            &["netns", "add", ns],
            &[
                "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns,
            ],
            &["addr", "add", &host_cidr, "dev", host_if],
            &["link", "set", host_if, "up"],
            &["-n", ns, "addr", "add", &ns_cidr, "dev", ns_if],
            &["-n", ns, "link", "set", ns_if, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
        ];
        for args in steps {
            run(
                tokio::process::Command::new(ip()?).args(args),
                &format!("ip {}", args.join(" ")),
            )
            .await?;
        }
        for (chain, hook) in [(CUT_OUT, "OUTPUT"), (CUT_IN, "INPUT")] {
            self.iptables(&["-N", chain]).await?;
            self.iptables(&["-I", hook, "-j", chain]).await?;
        }
        Ok(())
    }

    /// The namespace's name (`bo-<hex>`), as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's side of the veth: where the namespace reaches our servers.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's side of the veth: the address its connections come from.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// `ip netns exec <name> <program>`. `ip` execs the program in place, so the child's pid
    /// is the program's: killing the child kills the program.
    pub fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        // Found already: `create` needed it.
        let ip = ip().expect("the ip command");
        let mut cmd = std::process::Command::new(ip);
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Cuts the namespace off `target` (on [`NetNs::host_ip`]). Cutting a cut target again
    /// replaces its mode.
    pub async fn cut(&self, target: Target, mode: Mode) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().await;
        if let Some(&old) = cuts.get(&target.port) {
            if old == mode {
                return Ok(());
            }
            self.apply("-D", target.port, old).await?;
            cuts.remove(&target.port);
        }
        self.apply("-A", target.port, mode)
            .await
            .with_context(|| format!("cutting {} (port {})", target.name, target.port))?;
        cuts.insert(target.port, mode);
        Ok(())
    }

    /// Removes the cut of `target`, if any.
    pub async fn heal(&self, target: Target) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().await;
        if let Some(&mode) = cuts.get(&target.port) {
            self.apply("-D", target.port, mode)
                .await
                .with_context(|| format!("healing {} (port {})", target.name, target.port))?;
            cuts.remove(&target.port);
        }
        Ok(())
    }

    /// Removes every cut.
    pub async fn heal_all(&self) -> anyhow::Result<()> {
        let mut cuts = self.cuts.lock().await;
        for chain in [CUT_OUT, CUT_IN] {
            self.iptables(&["-F", chain]).await?;
        }
        cuts.clear();
        Ok(())
    }

    /// The namespace's rules (`iptables -S`), for assertion messages.
    pub async fn rules(&self) -> anyhow::Result<String> {
        self.iptables(&["-S"]).await
    }

    /// Adds (`-A`) or deletes (`-D`) the two rules of a cut.
    async fn apply(&self, op: &str, port: u16, mode: Mode) -> anyhow::Result<()> {
        let (host, port) = (self.host_ip.to_string(), port.to_string());
        let verdict: &[&str] = match mode {
            Mode::Drop => &["DROP"],
            Mode::Reject => &["REJECT", "--reject-with", "tcp-reset"],
        };
        let to_target = ["-d", &host, "-p", "tcp", "--dport", &port];
        let from_target = ["-s", &host, "-p", "tcp", "--sport", &port];
        // `-i <veth>`: only what comes from the host. The reset REJECT makes arrives on `lo`
        // from host_ip:port, and would be dropped too without it: the connect would hang.
        let from_host = ["-i", &self.ns_if];
        let outbound = [&[op, CUT_OUT][..], &to_target, &["-j"], verdict].concat();
        let inbound = [&[op, CUT_IN][..], &from_host, &from_target, &["-j", "DROP"]].concat();
        self.iptables(&outbound).await?;
        self.iptables(&inbound).await?;
        Ok(())
    }

    /// Runs `iptables -w <args>` inside the namespace; an error carries its stderr.
    async fn iptables(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::from(self.command(iptables()?));
        run(
            cmd.arg("-w").args(args),
            &format!("iptables {} in {}", args.join(" "), self.name),
        )
        .await
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(ip) = ip() {
            // The veth pair first: deleting the namespace alone leaves it (and the host side's
            // address) up while anything still holds the namespace, and a killed process's
            // socket does until it gives up retransmitting into a cut, a minute or more.
            for args in [
                ["link", "delete", &self.host_if],
                ["netns", "delete", &self.name],
            ] {
                let _ = std::process::Command::new(ip)
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // After the namespace: an owner file without a namespace is harmless, the reverse
        // would be taken for a leftover.
        let _ = std::fs::remove_file(Path::new(OWNERS).join(&self.name));
    }
}

/// Deletes what earlier runs left when they were killed before `Drop`: the namespace and veth
/// pair of every owner file whose creator is dead (its pid gone, or reused by another process:
/// the start time differs), and `bo-<hex>` namespaces and `bo<hex>h` veths without an owner
/// file. Returns the namespaces' names. [`NetNs::create`] calls it once per process.
pub fn remove_leftovers() -> anyhow::Result<Vec<String>> {
    // Namespaces and veths first, owner files after: an owner file is written before its
    // namespace and veth and removed after them, so a listed one whose owner file is missing
    // even now is an orphan — not one that another process was making between our two reads.
    let listed: BTreeSet<String> = tags_in(Path::new("/run/netns"), "bo-", "")
        .into_iter()
        .chain(tags_in(Path::new("/sys/class/net"), "bo", "h"))
        .collect();
    let owned = tags_in(Path::new(OWNERS), "bo-", "");
    let mut dead: BTreeSet<String> = owned
        .iter()
        .filter(|tag| !creator_alive(tag))
        .cloned()
        .collect();
    dead.extend(listed.into_iter().filter(|tag| !owned.contains(tag)));
    for tag in &dead {
        let (name, host_if) = (format!("bo-{tag}"), format!("bo{tag}h"));
        let steps = [
            (
                Path::new("/sys/class/net").join(&host_if),
                ["link", "delete", &host_if],
            ),
            (
                Path::new("/run/netns").join(&name),
                ["netns", "delete", &name],
            ),
        ];
        for (exists, args) in steps {
            if !exists.exists() {
                continue;
            }
            let out = std::process::Command::new(ip()?).args(args).output()?;
            // Another test binary cleaning up at the same time may have been first.
            if !out.status.success() && exists.exists() {
                bail!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let _ = std::fs::remove_file(owner_file(tag));
    }
    Ok(dead.into_iter().map(|tag| format!("bo-{tag}")).collect())
}

/// Whether the process named in `tag`'s owner file runs: same pid, same start time.
fn creator_alive(tag: &str) -> bool {
    let owner = std::fs::read_to_string(owner_file(tag)).unwrap_or_default();
    let Some((pid, start)) = owner.trim().split_once(' ') else {
        return false;
    };
    start_time(pid).as_deref() == Some(start)
}

fn owner_file(tag: &str) -> PathBuf {
    Path::new(OWNERS).join(format!("bo-{tag}"))
}

/// The tags (6 hex digits) of the names `<prefix><tag><suffix>` in `dir`: ours; anything
/// else is left alone.
fn tags_in(dir: &Path, prefix: &str, suffix: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| {
            let tag = n.strip_prefix(prefix)?.strip_suffix(suffix)?;
            (tag.len() == 6 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| tag.to_owned())
        })
        .collect()
}

/// Creates `name`'s owner file, content and all, unless it exists (false: the subnet is
/// taken). Written aside and hard-linked into place, which fails if the name exists: nobody
/// sees the file half-written and takes its creator for dead.
fn claim(name: &str) -> anyhow::Result<bool> {
    std::fs::create_dir_all(OWNERS).with_context(|| format!("creating {OWNERS}"))?;
    let pid = std::process::id().to_string();
    let start = start_time(&pid).context("reading our own start time")?;
    let aside = Path::new(OWNERS).join(format!(".{name}.{pid}"));
    std::fs::write(&aside, format!("{pid} {start}\n"))
        .with_context(|| format!("writing {}", aside.display()))?;
    let path = Path::new(OWNERS).join(name);
    let linked = std::fs::hard_link(&aside, &path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// A process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22), which tells
/// a live creator from a later process that got its pid.
fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// The host's IPv4 networks (addresses and routes) a subnet of ours must not overlap.
async fn host_networks() -> anyhow::Result<Vec<(Ipv4Addr, u32)>> {
    let ip = ip()?;
    let addrs = run(
        tokio::process::Command::new(ip).args(["-o", "-4", "addr", "show"]),
        "ip addr show",
    )
    .await?;
    let routes = run(
        tokio::process::Command::new(ip).args(["-4", "route", "show", "table", "all"]),
        "ip route show",
    )
    .await?;
    let cidr = |word: &str| -> Option<(Ipv4Addr, u32)> {
        let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
        Some((addr.parse().ok()?, len.parse().ok()?))
    };
    let mut nets: Vec<_> = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(cidr)
        .collect();
    // A route's destination is its first word, or its second after a type (`local 10.…`).
    nets.extend(routes.lines().filter_map(|l| {
        let mut words = l.split_whitespace();
        let first = words.next()?;
        cidr(first).or_else(|| words.next().and_then(cidr))
    }));
    // The default route (`default via …`) has no prefix word and is skipped above.
    Ok(nets)
}

/// The `ip` command's absolute path, found once (children start with a cleared `PATH`).
fn ip() -> anyhow::Result<&'static Path> {
    static IP: OnceLock<Option<PathBuf>> = OnceLock::new();
    find(&IP, "ip")
}

fn iptables() -> anyhow::Result<&'static Path> {
    static IPTABLES: OnceLock<Option<PathBuf>> = OnceLock::new();
    find(&IPTABLES, "iptables")
}

fn find(cell: &'static OnceLock<Option<PathBuf>>, name: &str) -> anyhow::Result<&'static Path> {
    cell.get_or_init(|| {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
    .as_deref()
    .with_context(|| format!("no {name} command in /usr/sbin, /sbin, /usr/bin or /bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_overlaps_the_networks_that_hold_any_of_its_addresses() {
        let subnet = Subnet {
            base: Ipv4Addr::new(10, 1, 2, 4),
        };
        assert!(subnet.overlaps(Ipv4Addr::new(10, 1, 2, 6), 32));
        assert!(subnet.overlaps(Ipv4Addr::new(10, 1, 0, 0), 16));
        assert!(subnet.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(!subnet.overlaps(Ipv4Addr::new(10, 1, 2, 8), 30));
        assert!(!subnet.overlaps(Ipv4Addr::new(10, 1, 2, 3), 32));
        assert_eq!(subnet.tag(), "010204");
        assert_eq!(subnet.host(2), Ipv4Addr::new(10, 1, 2, 6));
    }
}
