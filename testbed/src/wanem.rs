//! The WAN emulator: the kernel here has no `netem`, so latency, partitions and the rest
//! happen in this process. Every namespace has a persistent TUN device (`wan0`); the
//! emulator attaches to each one (entering the namespace just long enough to open it),
//! reads IPv4 packets, and writes each into its destination's device after the one-way
//! delay of the pair (half the round trip). Drop rules (partitions) are checked when a
//! packet is queued and again when it is due, so a new partition also kills packets in
//! flight. Packets for addresses outside the testbed are dropped: nothing can leave.
//!
//! Control: `testbed` rewrites `wan.json` in the state directory (atomically) with a new
//! generation; the emulator polls it, applies it (attaching devices of new nodes), and
//! writes the generation to `wan.applied`, which `testbed` waits for.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Packets waiting per (source, destination) pair before more are dropped (netem's default).
const QUEUE_LIMIT: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct WanConfig {
    pub(crate) generation: u64,
    pub(crate) endpoints: Vec<Endpoint>,
    /// Round trips in milliseconds, by selector pair (region or endpoint name); the most
    /// specific pair wins: name-name, name-region, region-region.
    pub(crate) rtt: Vec<(String, String, u64)>,
    /// One-way drop rules `(from, to)`; `*` matches anything.
    pub(crate) drop: Vec<(String, String)>,
    /// Jitter in milliseconds (± uniform on each one-way delay), by selector pair.
    #[serde(default)]
    pub(crate) jitter: Vec<(String, String, u64)>,
    /// Random loss in percent per direction, by selector pair.
    #[serde(default)]
    pub(crate) loss: Vec<(String, String, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) ip: Ipv4Addr,
    /// `/run/netns/<name>`.
    pub(crate) netns: PathBuf,
}

impl WanConfig {
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join("wan.json")
    }

    pub(crate) fn load(dir: &Path) -> anyhow::Result<WanConfig> {
        let text = std::fs::read_to_string(Self::path(dir))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes the next generation and waits until the emulator runs it.
    pub(crate) fn publish(&mut self, dir: &Path, wait: bool) -> anyhow::Result<()> {
        self.generation += 1;
        let tmp = dir.join("wan.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, Self::path(dir))?;
        if wait {
            Self::wait_applied(dir, self.generation)?;
        }
        Ok(())
    }

    /// Waits until the emulator has applied `generation` (it writes it to `wan.applied`).
    pub(crate) fn wait_applied(dir: &Path, generation: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let applied = std::fs::read_to_string(dir.join("wan.applied")).unwrap_or_default();
            if applied.trim().parse::<u64>().is_ok_and(|g| g >= generation) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!("the WAN emulator did not apply generation {generation}; see {}", dir.join("wan.log").display())
    }

    fn selects(sel: &str, e: &Endpoint) -> bool {
        sel == "*" || sel == e.name || sel == e.region
    }

    /// One-way delay from `a` to `b` (half the round trip).
    fn delay(&self, a: &Endpoint, b: &Endpoint) -> Duration {
        let rtt: Vec<(String, String, f64)> =
            self.rtt.iter().map(|(x, y, v)| (x.clone(), y.clone(), *v as f64)).collect();
        Duration::from_micros((Self::lookup(&rtt, a, b).unwrap_or(0.0) * 1000.0 / 2.0) as u64)
    }

    /// Jitter on each one-way delay from `a` to `b`.
    fn jitter(&self, a: &Endpoint, b: &Endpoint) -> Duration {
        let j: Vec<(String, String, f64)> =
            self.jitter.iter().map(|(x, y, v)| (x.clone(), y.clone(), *v as f64)).collect();
        Duration::from_micros((Self::lookup(&j, a, b).unwrap_or(0.0) * 1000.0) as u64)
    }

    /// Loss probability (0..1) from `a` to `b`.
    fn loss(&self, a: &Endpoint, b: &Endpoint) -> f64 {
        Self::lookup(&self.loss, a, b).unwrap_or(0.0) / 100.0
    }

    /// The value of the most specific rule for the pair: name-name, name-region,
    /// region-region, then `*`.
    fn lookup(rules: &[(String, String, f64)], a: &Endpoint, b: &Endpoint) -> Option<f64> {
        let rank = |x: &str, y: &str| -> Option<u8> {
            let score = |sel: &str, e: &Endpoint| {
                if sel == e.name {
                    Some(2)
                } else if sel == e.region {
                    Some(1)
                } else if sel == "*" {
                    Some(0)
                } else {
                    None
                }
            };
            Some(score(x, a)? + score(y, b)?)
        };
        let mut best: Option<(u8, f64)> = None;
        for (x, y, v) in rules {
            for r in [rank(x, y), rank(y, x)].into_iter().flatten() {
                if best.is_none_or(|(s, _)| r > s) {
                    best = Some((r, *v));
                }
            }
        }
        best.map(|(_, v)| v)
    }

    fn dropped(&self, a: &Endpoint, b: &Endpoint) -> bool {
        self.drop.iter().any(|(x, y)| Self::selects(x, a) && Self::selects(y, b))
    }
}

struct Packet {
    due: Instant,
    seq: u64,
    from: usize,
    to: usize,
    data: Vec<u8>,
}

impl PartialEq for Packet {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Packet {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    per_pair: HashMap<(usize, usize), usize>,
    /// The latest release time per pair: jitter never reorders a pair's packets (TCP
    /// would take reordering for loss).
    last_due: HashMap<(usize, usize), Instant>,
}

struct Shared {
    config: RwLock<WanConfig>,
    by_ip: RwLock<HashMap<Ipv4Addr, usize>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    writers: Mutex<Vec<tun::Writer>>,
}

/// Runs the emulator until killed.
pub(crate) fn run(dir: &Path) -> anyhow::Result<()> {
    let config = WanConfig::load(dir).context("reading wan.json")?;
    let shared = Arc::new(Shared {
        config: RwLock::new(WanConfig::default()),
        by_ip: RwLock::default(),
        queue: Mutex::default(),
        wake: Condvar::new(),
        writers: Mutex::default(),
    });
    apply(&shared, config, dir)?;
    let s = shared.clone();
    std::thread::spawn(move || release(&s));
    // Watch for new generations.
    let mut seen = std::fs::metadata(WanConfig::path(dir)).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let Ok(modified) = std::fs::metadata(WanConfig::path(dir)).and_then(|m| m.modified()) else { continue };
        if modified == seen {
            continue;
        }
        seen = modified;
        match WanConfig::load(dir) {
            Ok(c) => {
                if let Err(e) = apply(&shared, c, dir) {
                    eprintln!("wanem: applying wan.json: {e:#}");
                }
            }
            Err(e) => eprintln!("wanem: reading wan.json: {e:#}"),
        }
    }
}

/// Takes a config: attaches endpoints not attached yet, then acknowledges the generation.
fn apply(shared: &Arc<Shared>, config: WanConfig, dir: &Path) -> anyhow::Result<()> {
    let known = shared.by_ip.read().expect("not poisoned").len();
    let generation = config.generation;
    let new: Vec<Endpoint> = config.endpoints.iter().skip(known).cloned().collect();
    *shared.config.write().expect("not poisoned") = config;
    for (i, e) in new.into_iter().enumerate() {
        let index = known + i;
        let (reader, writer) = attach(&e).with_context(|| format!("attaching {} in {}", e.name, e.netns.display()))?;
        shared.writers.lock().expect("not poisoned").push(writer);
        shared.by_ip.write().expect("not poisoned").insert(e.ip, index);
        let s = shared.clone();
        std::thread::spawn(move || receive(&s, index, reader));
    }
    std::fs::write(dir.join("wan.applied"), generation.to_string())?;
    Ok(())
}

/// Opens the persistent `wan0` of a namespace: enter it, open the device, come back.
fn attach(e: &Endpoint) -> anyhow::Result<(tun::Reader, tun::Writer)> {
    use nix::sched::{setns, CloneFlags};
    let home = std::fs::File::open("/proc/thread-self/ns/net")?;
    let target = std::fs::File::open(&e.netns)?;
    setns(&target, CloneFlags::CLONE_NEWNET)?;
    let mut cfg = tun::Configuration::default();
    cfg.tun_name("wan0");
    cfg.platform_config(|p| {
        // The device exists and is configured already: only attach.
        p.ensure_root_privileges(false);
    });
    let device = tun::create(&cfg);
    setns(&home, CloneFlags::CLONE_NEWNET)?;
    Ok(device?.split())
}

/// Reads packets from endpoint `from` and queues them for their destination.
fn receive(shared: &Shared, from: usize, mut reader: tun::Reader) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("wanem: reading endpoint {from}: {e}");
                return;
            }
        };
        // IPv4 only: version nibble 4, destination address at bytes 16..20.
        if n < 20 || buf[0] >> 4 != 4 {
            continue;
        }
        let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
        let Some(&to) = shared.by_ip.read().expect("not poisoned").get(&dst) else { continue };
        let delay = {
            let c = shared.config.read().expect("not poisoned");
            let (Some(a), Some(b)) = (c.endpoints.get(from), c.endpoints.get(to)) else { continue };
            if c.dropped(a, b) {
                continue;
            }
            let loss = c.loss(a, b);
            if loss > 0.0 && fastrand::f64() < loss {
                continue;
            }
            let (base, jitter) = (c.delay(a, b), c.jitter(a, b));
            if jitter.is_zero() {
                base
            } else {
                let spread = jitter.as_secs_f64() * (fastrand::f64() * 2.0 - 1.0);
                Duration::from_secs_f64((base.as_secs_f64() + spread).max(0.0))
            }
        };
        let mut q = shared.queue.lock().expect("not poisoned");
        let pending = q.per_pair.entry((from, to)).or_default();
        if *pending >= QUEUE_LIMIT {
            continue;
        }
        *pending += 1;
        q.seq += 1;
        let seq = q.seq;
        let mut due = Instant::now() + delay;
        if let Some(last) = q.last_due.get(&(from, to)) {
            due = due.max(*last);
        }
        q.last_due.insert((from, to), due);
        q.heap.push(Reverse(Packet { due, seq, from, to, data: buf[..n].to_vec() }));
        drop(q);
        shared.wake.notify_one();
    }
}

/// Writes each packet into its destination once due.
fn release(shared: &Shared) {
    let mut q = shared.queue.lock().expect("not poisoned");
    loop {
        let now = Instant::now();
        match q.heap.peek().map(|Reverse(p)| p.due) {
            Some(due) if due <= now => {
                let Reverse(p) = q.heap.pop().expect("peeked");
                if let Some(n) = q.per_pair.get_mut(&(p.from, p.to)) {
                    *n = n.saturating_sub(1);
                }
                drop(q);
                let dropped = {
                    let c = shared.config.read().expect("not poisoned");
                    match (c.endpoints.get(p.from), c.endpoints.get(p.to)) {
                        (Some(a), Some(b)) => c.dropped(a, b),
                        _ => true,
                    }
                };
                if !dropped {
                    if let Some(w) = shared.writers.lock().expect("not poisoned").get_mut(p.to) {
                        let _ = w.write(&p.data);
                    }
                }
                q = shared.queue.lock().expect("not poisoned");
            }
            Some(due) => q = shared.wake.wait_timeout(q, due - now).expect("not poisoned").0,
            None => q = shared.wake.wait(q).expect("not poisoned"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, region: &str, last: u8) -> Endpoint {
        Endpoint { name: name.into(), region: region.into(), ip: Ipv4Addr::new(10, 77, 1, last), netns: PathBuf::new() }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let (a1, a2, b1) = (ep("a-1", "a", 1), ep("a-2", "a", 2), ep("b-1", "b", 3));
        let mut c = WanConfig {
            rtt: vec![("a".into(), "a".into(), 2), ("a".into(), "b".into(), 80), ("a-1".into(), "b".into(), 200)],
            ..WanConfig::default()
        };
        assert_eq!(c.delay(&a1, &a2), Duration::from_millis(1));
        assert_eq!(c.delay(&a2, &b1), Duration::from_millis(40));
        assert_eq!(c.delay(&b1, &a2), Duration::from_millis(40));
        assert_eq!(c.delay(&a1, &b1), Duration::from_millis(100));
        assert_eq!(c.delay(&b1, &b1), Duration::ZERO);
        c.jitter = vec![("*".into(), "*".into(), 5)];
        c.loss = vec![("a".into(), "b".into(), 1.5)];
        assert_eq!(c.jitter(&a1, &b1), Duration::from_millis(5));
        assert!((c.loss(&b1, &a1) - 0.015).abs() < 1e-9);
        assert_eq!(c.loss(&a1, &a2), 0.0);
        c.drop = vec![("b".into(), "*".into()), ("*".into(), "b".into())];
        assert!(c.dropped(&a1, &b1) && c.dropped(&b1, &a2));
        assert!(!c.dropped(&a1, &a2));
    }
}
