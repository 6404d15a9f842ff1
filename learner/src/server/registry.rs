//! The actor registry: who is registered, bounded in number (`server.max_actors`), forgotten when idle, and who
//! makes room for a newer registration. The actor gauges and the eviction counter are kept here.
//!
//! Any client holding the token can call Register in a loop, and must not lock honest actors out by it, so the
//! registry tells registrations apart by what they did since:
//!
//! - *active*: opened a policy stream or had a rollout accepted, as every honest actor does within milliseconds of
//!   registering. An active actor is never evicted for a newcomer; only idleness (`server.actor_idle_seconds` with
//!   neither an open stream nor a submission) removes it.
//! - *never active*: neither, yet. Evicted to make room, oldest first, counted in
//!   `proxima_learner_evicted_registrations_total{reason}`:
//!   - `peer_limit`: a peer holding `server.max_idle_registrations_per_peer` never-active registrations has its
//!     oldest replaced by its newest, whatever its age. It is replaced rather than the newcomer refused because the
//!     peer key is coarse: refusing would lock every honest actor that shares the flooding client's address (its
//!     host, a NAT) out for the idle time, the very lock-out this prevents, while replacing bounds the flood to the
//!     cap at no cost to anyone else. An honest burst from one address larger than the cap can lose an early
//!     registration before its stream opens; that actor is told `unknown_actor` and registers again.
//!   - `registry_full`: a registry holding `server.max_actors` actors makes room by the oldest never-active
//!     registration older than `server.registration_grace_seconds` (younger ones are given the time to open their
//!     stream); with none, Register is refused as before (RESOURCE_EXHAUSTED, `too_many_actors`). A flood spread
//!     over many addresses thus holds a newcomer off for at most the grace.
//!
//! A peer is the remote IP address, not the port (one client opens many connections); an IPv6 address counts by its
//! /64 prefix (one host commonly holds a whole /64); where the transport has no address (in-process), the actor
//! name.

use crate::config::RegistryLimits;
use crate::dashboard::ActorRow;
use common::metrics as m;
use common::rollout::EpisodeTracker;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How far back an actor's env steps/s looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Where a registration came from, for the per-peer cap (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    /// The remote IP address: an IPv4 address, or the /64 prefix of an IPv6 one.
    Addr(IpAddr),
    /// The actor name, where the transport has no remote address.
    Name(String),
}

impl Peer {
    /// The peer of a request from `remote` (IPv4-mapped IPv6 addresses count as IPv4) by an actor named `name`.
    pub(crate) fn of(remote: Option<SocketAddr>, name: &str) -> Self {
        match remote.map(|a| a.ip().to_canonical()) {
            Some(IpAddr::V6(ip)) => Peer::Addr(IpAddr::V6(Ipv6Addr::from(u128::from(ip) & (u128::MAX << 64)))),
            Some(ip) => Peer::Addr(ip),
            None => Peer::Name(name.to_string()),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Addr(ip @ IpAddr::V6(_)) => write!(f, "{ip}/64"),
            Peer::Addr(ip) => write!(f, "{ip}"),
            Peer::Name(name) => write!(f, "name {name:?}"),
        }
    }
}

/// One registered actor.
#[derive(Debug)]
pub(crate) struct ActorEntry {
    name: String,
    /// The address it registered from (for the dashboard).
    host: String,
    peer: Peer,
    num_envs: usize,
    /// Env steps of its accepted rollouts, and when (the last [`RATE_WINDOW`]), for the dashboard.
    env_steps: u64,
    recent_steps: VecDeque<(Instant, u64)>,
    /// Policy version of its last accepted rollout.
    policy_version: Option<u64>,
    /// Open policy streams.
    streams: usize,
    /// Opened a policy stream or had a rollout accepted: never evicted for a newcomer.
    active: bool,
    /// Registration, last submission, or last stream closed.
    last_seen: Instant,
    /// Registration.
    registered: Instant,
    /// Holds its episode records to its rewards and done flags.
    episodes: EpisodeTracker,
}

impl ActorEntry {
    /// A registration at `now` of `name`, stepping `num_envs` envs, from `host` (an address, or "unknown").
    pub(crate) fn new(name: String, host: String, peer: Peer, num_envs: usize, now: Instant) -> Self {
        Self {
            name,
            host,
            peer,
            num_envs,
            env_steps: 0,
            recent_steps: VecDeque::new(),
            policy_version: None,
            streams: 0,
            active: false,
            last_seen: now,
            registered: now,
            episodes: EpisodeTracker::default(),
        }
    }

    /// Env steps per second over the last [`RATE_WINDOW`] (or since it registered, if that is shorter).
    fn steps_per_second(&self, now: Instant) -> f64 {
        let steps: u64 = self
            .recent_steps
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= RATE_WINDOW)
            .map(|(_, s)| s)
            .sum();
        steps as f64 / now.saturating_duration_since(self.registered).min(RATE_WINDOW).as_secs_f64().max(1e-3)
    }
}

/// A registration evicted to make room for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Eviction {
    /// The evicted actor.
    pub(crate) actor_id: u64,
    /// Why (one of [`m::evicted::ALL`]).
    pub(crate) reason: &'static str,
}

/// Why a registration was refused: the registry holds `held` actors, at its bound, and none may make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    /// Actors held.
    pub(crate) held: usize,
}

/// The registered actors by id.
#[derive(Debug)]
pub(crate) struct Registry {
    actors: HashMap<u64, ActorEntry>,
    limits: RegistryLimits,
}

impl Registry {
    /// An empty registry bounded by `limits`.
    pub(crate) fn new(limits: RegistryLimits) -> Self {
        Self { actors: HashMap::new(), limits }
    }

    /// Adds `entry` as `actor_id` at `now`, evicting a never-active registration first where its peer is at its cap
    /// or the registry is full (see the module docs); says which, or refuses when the registry is full of actors
    /// that may not be evicted.
    pub(crate) fn admit(&mut self, actor_id: u64, entry: ActorEntry, now: Instant) -> Result<Option<Eviction>, Full> {
        let eviction = if let Some(oldest) = self.peer_at_cap(&entry.peer) {
            Some(Eviction { actor_id: oldest, reason: m::evicted::PEER_LIMIT })
        } else if self.full_after_forgetting_idle(now) {
            let grace = self.limits.grace;
            let oldest = self.oldest_never_active(|a| now.saturating_duration_since(a.registered) >= grace);
            let oldest = oldest.ok_or(Full { held: self.actors.len() })?;
            Some(Eviction { actor_id: oldest, reason: m::evicted::REGISTRY_FULL })
        } else {
            None
        };
        if let Some(e) = eviction
            && let Some(gone) = self.actors.remove(&e.actor_id)
        {
            metrics::counter!(m::EVICTED_REGISTRATIONS, "reason" => e.reason).increment(1);
            // Debug, not info: a flood evicts once per request; the counter shows it.
            tracing::debug!(actor_id = e.actor_id, name = %gone.name, peer = %gone.peer, reason = e.reason,
                "never-active registration evicted for a newer one");
        }
        self.actors.insert(actor_id, entry);
        self.publish_gauge();
        Ok(eviction)
    }

    /// The oldest never-active registration of `peer`, if it holds `max_idle_per_peer` of them.
    fn peer_at_cap(&self, peer: &Peer) -> Option<u64> {
        let held = self.actors.values().filter(|a| !a.active && a.peer == *peer).count();
        if held < self.limits.max_idle_per_peer {
            return None;
        }
        self.oldest_never_active(|a| a.peer == *peer)
    }

    /// Whether the registry holds `max_actors` actors, after forgetting the idle ones if it did.
    fn full_after_forgetting_idle(&mut self, now: Instant) -> bool {
        if self.actors.len() >= self.limits.max_actors {
            self.evict_idle(now);
        }
        self.actors.len() >= self.limits.max_actors
    }

    /// The oldest (by registration, then id) never-active registration that `admits`.
    fn oldest_never_active(&self, admits: impl Fn(&ActorEntry) -> bool) -> Option<u64> {
        let candidates = self.actors.iter().filter(|(_, a)| !a.active && admits(a));
        candidates.min_by_key(|(id, a)| (a.registered, **id)).map(|(id, _)| *id)
    }

    /// Forgets actors with no open stream that were last seen longer than `idle` before `now`; returns how many.
    pub(crate) fn evict_idle(&mut self, now: Instant) -> usize {
        let (before, idle) = (self.actors.len(), self.limits.idle);
        self.actors.retain(|id, a| {
            let keep = a.streams > 0 || now.saturating_duration_since(a.last_seen) <= idle;
            if !keep {
                tracing::info!(actor_id = id, name = %a.name, "idle actor forgotten");
            }
            keep
        });
        let evicted = before - self.actors.len();
        self.publish_gauge();
        evicted
    }

    /// Sets both actor gauges from the registry.
    fn publish_gauge(&self) {
        let connected = self.actors.values().filter(|a| a.streams > 0).count();
        metrics::gauge!(m::CONNECTED_ACTORS).set(connected as f64);
        metrics::gauge!(m::REGISTERED_ACTORS).set(self.actors.len() as f64);
    }

    /// The actor's name and registered env count, marking it as seen at `now`.
    pub(crate) fn touch(&mut self, actor_id: u64, now: Instant) -> Option<(String, usize)> {
        let entry = self.actors.get_mut(&actor_id)?;
        entry.last_seen = now;
        Some((entry.name.clone(), entry.num_envs))
    }

    /// Takes the actor's episode tracker out (for a check that must not hold the lock); see [`Self::put_episodes`].
    pub(crate) fn take_episodes(&mut self, actor_id: u64) -> Option<EpisodeTracker> {
        self.actors.get_mut(&actor_id).map(|a| std::mem::take(&mut a.episodes))
    }

    /// Puts the actor's episode tracker back, if the actor is still registered.
    pub(crate) fn put_episodes(&mut self, actor_id: u64, tracker: EpisodeTracker) {
        if let Some(entry) = self.actors.get_mut(&actor_id) {
            entry.episodes = tracker;
        }
    }

    /// Counts an accepted rollout of `steps` env steps made by policy `version` at `now`: the actor is active.
    pub(crate) fn accepted(&mut self, actor_id: u64, steps: u64, version: u64, now: Instant) {
        let Some(entry) = self.actors.get_mut(&actor_id) else { return };
        entry.active = true;
        entry.env_steps += steps;
        entry.policy_version = Some(version);
        entry.recent_steps.push_back((now, steps));
        while entry.recent_steps.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATE_WINDOW) {
            entry.recent_steps.pop_front();
        }
    }

    /// The dashboard's actor table, by name then id.
    pub(crate) fn rows(&self) -> Vec<ActorRow> {
        let now = Instant::now();
        let mut rows: Vec<_> = self
            .actors
            .iter()
            .map(|(&id, a)| ActorRow {
                id,
                name: a.name.clone(),
                host: a.host.clone(),
                num_envs: a.num_envs,
                env_steps: a.env_steps,
                steps_per_second: a.steps_per_second(now),
                last_seen_seconds: now.saturating_duration_since(a.last_seen).as_secs_f64(),
                policy_version: a.policy_version,
                streams: a.streams,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        rows
    }
}

/// The registry shared by the handlers and the policy streams.
#[derive(Debug, Clone)]
pub(crate) struct SharedRegistry(Arc<Mutex<Registry>>);

impl SharedRegistry {
    /// An empty registry bounded by `limits`.
    pub(crate) fn new(limits: RegistryLimits) -> Self {
        Self(Arc::new(Mutex::new(Registry::new(limits))))
    }

    /// The registry (a panic while it was held leaves no broken invariant: every change is one insert or remove).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a policy stream for `actor_id` (which makes it active) until the guard drops; `None` if the actor is
    /// not registered.
    pub(crate) fn open_stream(&self, actor_id: u64) -> Option<OpenStream> {
        let mut registry = self.lock();
        let entry = registry.actors.get_mut(&actor_id)?;
        entry.streams += 1;
        entry.active = true;
        entry.last_seen = Instant::now();
        registry.publish_gauge();
        Some(OpenStream { registry: self.clone(), actor_id })
    }
}

/// An open policy stream of a registered actor: keeps it in the registry while open; when it closes, the actor
/// is seen now and is forgotten after the idle time.
pub(crate) struct OpenStream {
    registry: SharedRegistry,
    actor_id: u64,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut registry = self.registry.lock();
        if let Some(entry) = registry.actors.get_mut(&self.actor_id) {
            entry.streams = entry.streams.saturating_sub(1);
            entry.last_seen = Instant::now();
        }
        registry.publish_gauge();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    /// A registry of at most `max_actors`, `per_peer` never-active registrations per peer, a 5 s grace and a 60 s
    /// idle time.
    fn registry(max_actors: usize, per_peer: usize) -> Registry {
        let idle = Duration::from_secs(60);
        Registry::new(RegistryLimits {
            max_name_bytes: 64,
            max_actors,
            idle,
            grace: GRACE,
            max_idle_per_peer: per_peer,
        })
    }

    fn peer(last_octet: u8) -> Peer {
        Peer::of(Some(SocketAddr::from(([10, 0, 0, last_octet], 40_000))), "ignored")
    }

    fn entry(peer: &Peer, at: Instant) -> ActorEntry {
        ActorEntry::new("actor".into(), "host".into(), peer.clone(), 1, at)
    }

    fn ids(r: &Registry) -> Vec<u64> {
        let mut ids: Vec<u64> = r.actors.keys().copied().collect();
        ids.sort();
        ids
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn peers_are_addresses_without_port_or_names_without_address() {
        let v4 = |port| Some(SocketAddr::from(([192, 0, 2, 7], port)));
        assert_eq!(Peer::of(v4(1), "a"), Peer::of(v4(2), "b"), "the port and the name do not matter");
        assert_ne!(Peer::of(v4(1), "a"), Peer::of(Some(SocketAddr::from(([192, 0, 2, 8], 1))), "a"));
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:9".parse().unwrap();
        assert_eq!(Peer::of(Some(mapped), "a"), Peer::of(v4(1), "a"), "an IPv4-mapped address is the IPv4 one");
        let v6 = |a: &str| Peer::of(Some(a.parse().unwrap()), "a");
        assert_eq!(v6("[2001:db8:1:2::1]:1"), v6("[2001:db8:1:2:ffff::9]:2"), "one /64");
        assert_ne!(v6("[2001:db8:1:2::1]:1"), v6("[2001:db8:1:3::1]:1"));
        assert_eq!(v6("[2001:db8:1:2::1]:1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(Peer::of(None, "a"), Peer::Name("a".into()));
        assert_ne!(Peer::of(None, "a"), Peer::of(None, "b"));
    }

    #[test]
    fn a_full_registry_evicts_the_oldest_never_active_registration_past_the_grace() {
        let t0 = Instant::now();
        let mut r = registry(3, 10);
        for (id, p) in [(1, 1), (2, 2), (3, 3)] {
            assert_eq!(r.admit(id, entry(&peer(p), t0 + secs(id)), t0 + secs(id)), Ok(None));
        }
        // Within the grace of every registration: refused, nothing evicted.
        let now = t0 + secs(1) + GRACE - Duration::from_millis(1);
        assert_eq!(r.admit(4, entry(&peer(4), now), now), Err(Full { held: 3 }));
        assert_eq!(ids(&r), [1, 2, 3]);
        // Past the grace of the oldest: it makes room; then the next oldest.
        let now = t0 + secs(3) + GRACE;
        assert_eq!(r.admit(4, entry(&peer(4), now), now), Ok(Some(Eviction { actor_id: 1, reason: "registry_full" })));
        assert_eq!(r.admit(5, entry(&peer(5), now), now), Ok(Some(Eviction { actor_id: 2, reason: "registry_full" })));
        assert_eq!(r.admit(6, entry(&peer(6), now), now), Ok(Some(Eviction { actor_id: 3, reason: "registry_full" })));
        // 4, 5 and 6 are within their grace.
        assert_eq!(r.admit(7, entry(&peer(7), now), now), Err(Full { held: 3 }));
        assert_eq!(ids(&r), [4, 5, 6]);
    }

    #[test]
    fn equal_ages_go_by_id() {
        let t0 = Instant::now();
        let mut r = registry(2, 10);
        r.admit(9, entry(&peer(1), t0), t0).unwrap();
        r.admit(8, entry(&peer(2), t0), t0).unwrap();
        let now = t0 + GRACE;
        assert_eq!(r.admit(10, entry(&peer(3), now), now).unwrap().map(|e| e.actor_id), Some(8));
    }

    #[test]
    fn active_actors_are_never_evicted_for_a_newcomer() {
        let t0 = Instant::now();
        let shared = SharedRegistry::new(registry(3, 10).limits);
        let mut r = shared.lock();
        for id in 1..=3 {
            r.admit(id, entry(&peer(1), t0), t0).unwrap();
        }
        drop(r);
        // 1 follows the policy stream, 2 followed it and closed it, 3 had a rollout accepted.
        let _open = shared.open_stream(1).unwrap();
        drop(shared.open_stream(2).unwrap());
        let mut r = shared.lock();
        r.accepted(3, 32, 0, t0);
        // Long past the grace, though not idle: all three stay, the newcomer is refused.
        let now = t0 + secs(30);
        assert_eq!(r.admit(4, entry(&peer(2), now), now), Err(Full { held: 3 }));
        // Once idle (no stream, nothing submitted for the idle time), 2 and 3 are forgotten; 1 streams on.
        let now = t0 + secs(120);
        assert_eq!(r.admit(4, entry(&peer(2), now), now), Ok(None));
        assert_eq!(ids(&r), [1, 4]);
    }

    #[test]
    fn a_peer_at_its_cap_replaces_its_own_oldest_never_active_registration() {
        let t0 = Instant::now();
        let mut r = registry(100, 3);
        let (flood, other) = (peer(1), peer(2));
        // An active actor of the same peer does not count towards the cap, and is never replaced.
        r.admit(1, entry(&flood, t0), t0).unwrap();
        r.accepted(1, 32, 0, t0);
        r.admit(2, entry(&other, t0), t0).unwrap();
        for id in 10..13 {
            assert_eq!(r.admit(id, entry(&flood, t0 + secs(id)), t0 + secs(id)), Ok(None));
        }
        // At the cap: each new registration of the peer replaces its oldest at once, grace or not.
        for id in 13..20 {
            let e = r.admit(id, entry(&flood, t0 + secs(id)), t0 + secs(id)).unwrap();
            assert_eq!(e, Some(Eviction { actor_id: id - 3, reason: "peer_limit" }));
        }
        assert_eq!(ids(&r), [1, 2, 17, 18, 19]);
        // Another peer is not held to the flooding one's cap ...
        for id in 20..22 {
            assert_eq!(r.admit(id, entry(&other, t0 + secs(30)), t0 + secs(30)), Ok(None));
        }
        // ... but to its own: at 3 (2, 20 and 21), its next registration replaces its oldest.
        let now = t0 + secs(31);
        assert_eq!(r.admit(22, entry(&other, now), now).unwrap().map(|e| e.actor_id), Some(2));
        assert_eq!(ids(&r), [1, 17, 18, 19, 20, 21, 22]);
    }

    #[test]
    fn a_flood_leaves_room_for_others_at_once() {
        let t0 = Instant::now();
        let mut r = registry(8, 4);
        let mut evicted = 0;
        for id in 0..2_000 {
            let at = t0 + Duration::from_millis(2 * id);
            evicted += usize::from(r.admit(id, entry(&peer(1), at), at).unwrap().is_some());
        }
        assert_eq!((r.actors.len(), evicted), (4, 2_000 - 4));
        let now = t0 + secs(4);
        // Honest actors of other peers register at once, up to the bound, without evicting one another.
        for id in 10_000..10_004 {
            assert_eq!(r.admit(id, entry(&peer(2), now), now), Ok(None));
            r.accepted(id, 32, 0, now);
        }
        // A newcomer to the full registry makes room from the flood once its registrations are past the grace.
        assert_eq!(r.admit(20_000, entry(&peer(3), now), now), Err(Full { held: 8 }));
        let later = now + GRACE;
        let e = r.admit(20_000, entry(&peer(3), later), later).unwrap().unwrap();
        assert_eq!((e.reason, e.actor_id), ("registry_full", 1_996));
    }
}
