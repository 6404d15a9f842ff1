//! Chaos soak test of the distributed mode: a `learner serve` (CartPole-v1, a checkpoint every 2 updates, no
//! target, a step budget it never reaches) and 3-4 actor processes, each talking to the learner through its own
//! TCP proxy on loopback that the test can cut. For a bounded time (`PROXIMA_CHAOS_SECONDS`, default 60) random
//! events are injected with a seeded RNG (`PROXIMA_CHAOS_SEED` replays a run; the seed is printed): an actor
//! SIGKILLed and replaced, the learner SIGKILLed and restarted with `--resume` on the same port and run directory,
//! an actor's network cut (connections reset, or a partition that holds every byte) and restored, actors scaled
//! up and down. Each event is followed by checks:
//!
//! - policy versions never go backwards: the restarted learner resumes from the newest checkpoint on disk at the
//!   kill, its first progress row has a higher version and more env steps, and `progress.csv` stays monotonic;
//! - every checkpoint file on disk loads (`learner::run::checkpoint::load`, which refuses non-finite values);
//! - the learner's RSS stays under [`RSS_LIMIT_KIB`] (sampled at every poll);
//! - training recovers: the policy version advances, and every live actor sends rollouts again, within
//!   [`RECOVERY`] of the event (of the restore for a cut, of the new process's start for a restart, a replacement
//!   or a scale-up);
//! - no actor exits by itself, and each learner process rejected no rollout as `future_version` or
//!   `unknown_actor` (scraped from its `/metrics` before it is killed or stopped).
//!
//! At the end the learner stops on SIGTERM with a final checkpoint, the registry gauges match the live actors, and
//! a summary line gives the events by kind, the recovery times, the checkpoints verified and the RSS range.
//! Long runs (over 120 s) also cut an actor for longer than the gRPC keepalive (10 s interval + 10 s timeout).

use learner::config::TrainConfig;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tests::procs::{
    Learner, POLL, Proc, checkpoints, first_new_row, free_port, max_version, rss_kib, samples, start_actor,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

/// Seconds of event injection without `PROXIMA_CHAOS_SECONDS`.
const DEFAULT_SECONDS: u64 = 60;
/// Runs longer than this also cut an actor for longer than the keepalive.
const LONG_RUN: Duration = Duration::from_secs(120);
/// A long cut: past [`KEEPALIVE`].
const LONG_CUT: Duration = Duration::from_secs(25);
/// How long a silent connection lasts at most: the gRPC keepalive of both sides (10 s interval + 10 s timeout).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Bound on the recovery after each event.
const RECOVERY: Duration = Duration::from_secs(20);
/// Bound on the learner's resident memory.
const RSS_LIMIT_KIB: u64 = 400 * 1024;
/// Bytes an actor must send through its proxy to count as sending rollouts again (a CartPole rollout of 8 envs x
/// 32 steps is ~10 KB).
const FLOWING_BYTES: u64 = 32 * 1024;
/// Actors at the start are 3 or 4; scaling keeps them within these bounds.
const MIN_ACTORS: usize = 2;
const MAX_ACTORS: usize = 5;
/// Registry idle time given to the learner, so forgotten actors leave it within the test.
const ACTOR_IDLE_SECONDS: u64 = 3;

/// What a proxy does with its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Forwards both ways.
    Up,
    /// A network partition: nothing passes either way, closes included, and connections made meanwhile are
    /// accepted and held; everything resumes when the link is up again.
    Partition,
    /// Connection resets: the open connections are closed at once, new ones as soon as they are accepted.
    Reset,
    /// The proxy is gone.
    Closed,
}

/// A TCP forwarder on 127.0.0.1 in front of the learner, for one actor: it can cut that actor's network and
/// restore it, and counts the bytes the actor sent through it.
struct Proxy {
    port: u16,
    link: watch::Sender<Link>,
    sent: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to 127.0.0.1:`upstream`, on `rt`.
    fn start(rt: &tokio::runtime::Handle, upstream: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener.set_nonblocking(true).expect("non-blocking proxy listener");
        let _entered = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let (link, watch) = watch::channel(Link::Up);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let accept = rt.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        tokio::spawn(forward(client, upstream, watch.clone(), counter.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Self { port, link, sent, accept }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// Bytes the actor sent to the learner through this proxy so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Link::Closed);
        self.accept.abort();
    }
}

/// One proxied connection: held while partitioned, closed when reset.
async fn forward(client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>, sent: Arc<AtomicU64>) {
    if !passable(&mut link).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, link.clone(), Some(sent)) => {}
        _ = pump(server_read, client_write, link.clone(), None) => {}
        _ = until_reset(link) => {}
    }
}

/// Copies `from` to `to` (counting into `counter`) until either ends; what is read during a partition, an end of
/// stream included, passes only once the link is up again.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
    counter: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if !passable(&mut link).await || n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(c) = &counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Waits while the link is partitioned: true once it is up, false when it is reset or closed.
async fn passable(link: &mut watch::Receiver<Link>) -> bool {
    loop {
        match *link.borrow_and_update() {
            Link::Up => return true,
            Link::Reset | Link::Closed => return false,
            Link::Partition => {}
        }
        if link.changed().await.is_err() {
            return false;
        }
    }
}

/// Returns once the link is reset or closed.
async fn until_reset(mut link: watch::Receiver<Link>) {
    while !matches!(*link.borrow_and_update(), Link::Reset | Link::Closed) {
        if link.changed().await.is_err() {
            return;
        }
    }
}

/// An actor process and its proxy (the process dies first).
struct Actor {
    proc: Proc,
    proxy: Proxy,
    /// The proxy's byte count at the last event.
    mark: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    KillActor,
    KillLearner,
    CutActor,
    ScaleUp,
    ScaleDown,
}

impl Event {
    const ALL: [Event; 5] = [Event::KillActor, Event::KillLearner, Event::CutActor, Event::ScaleUp, Event::ScaleDown];

    fn name(self) -> &'static str {
        match self {
            Event::KillActor => "kill-actor",
            Event::KillLearner => "kill-learner",
            Event::CutActor => "cut-actor",
            Event::ScaleUp => "scale-up",
            Event::ScaleDown => "scale-down",
        }
    }
}

/// The random events after the first round: the faults twice as often as scaling.
const WEIGHTED: [Event; 8] = [
    Event::KillActor,
    Event::KillActor,
    Event::KillLearner,
    Event::KillLearner,
    Event::CutActor,
    Event::CutActor,
    Event::ScaleUp,
    Event::ScaleDown,
];

/// What the run measured.
#[derive(Default)]
struct Stats {
    events: BTreeMap<&'static str, usize>,
    /// Event to policy-version advance, per event.
    recoveries: Vec<(&'static str, Duration)>,
    /// Event to every live actor sending again, per event.
    flowing: Vec<(&'static str, Duration)>,
    /// Cuts: mode, length, and the time from the restore to the actor's new session if it had to reconnect.
    cuts: Vec<(Link, Duration, Option<Duration>)>,
    /// Checkpoint files that loaded, and the number of loads.
    verified: BTreeSet<PathBuf>,
    loads: usize,
    /// Learner RSS range over every sample of every learner process, KiB.
    rss: Option<(u64, u64)>,
    /// Learner SIGKILL to the first progress row of its successor (the random pause and the start included).
    downtime: Vec<Duration>,
    /// Rejections other than the two asserted to be 0, per learner process.
    other_rejections: Vec<String>,
}

impl Stats {
    fn worst(list: &[(&'static str, Duration)]) -> (&'static str, Duration) {
        list.iter().copied().max_by_key(|(_, d)| *d).unwrap_or(("none", Duration::ZERO))
    }
}

/// The run: learner, actors, RNG, measurements. Every process is killed when it drops.
struct Chaos {
    actors: Vec<Actor>,
    learner: Learner,
    /// False between a learner's SIGKILL and its restart.
    learner_up: bool,
    /// When the current learner process was started.
    learner_started: Instant,
    learners: usize,
    next_actor: usize,
    rng: ChaCha8Rng,
    long_run: bool,
    dir: PathBuf,
    port: u16,
    overrides: Vec<String>,
    cfg: TrainConfig,
    started: Instant,
    stats: Stats,
    /// Runs the proxies; dropped last.
    rt: tokio::runtime::Runtime,
}

impl Chaos {
    fn learner_args(&self) -> Vec<&str> {
        self.overrides.iter().map(String::as_str).collect()
    }

    fn start_learner(&mut self, resume: bool) -> Learner {
        self.learners += 1;
        let label = format!("learner-{}", self.learners);
        let runs = self.dir.join("runs");
        Learner::start(&self.dir, &label, &runs, "chaos", self.port, &self.learner_args(), resume)
    }

    fn spawn_actor(&mut self) {
        let name = format!("actor-{}", self.next_actor);
        self.next_actor += 1;
        let proxy = Proxy::start(self.rt.handle(), self.port);
        let proc = start_actor(&self.dir, &name, proxy.port, &[]);
        self.actors.push(Actor { proc, proxy, mark: 0 });
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// One poll of the invariants that hold at all times: the learner runs (unless it was just killed) within its
    /// memory bound, and no actor has exited by itself.
    fn sample(&mut self) {
        if self.learner_up {
            if let Some(status) = self.learner.proc.exited() {
                panic!("{} exited ({status})\n{}", self.learner.proc.name, self.learner.proc.tail(40));
            }
            if let Some(kib) = rss_kib(self.learner.proc.pid()) {
                // The range is of running learners, not of a process still loading.
                if self.learner_started.elapsed() > Duration::from_secs(1) {
                    let (lo, hi) = self.stats.rss.unwrap_or((kib, kib));
                    self.stats.rss = Some((lo.min(kib), hi.max(kib)));
                }
                assert!(kib < RSS_LIMIT_KIB, "learner RSS {:.1} MiB is over the bound", kib as f64 / 1024.0);
            }
        }
        for a in &mut self.actors {
            if let Some(status) = a.proc.exited() {
                panic!("{} exited by itself ({status})\n{}", a.proc.name, a.proc.tail(40));
            }
        }
    }

    /// Polls `ready` (sampling the invariants) until it returns a value; panics after `timeout`.
    fn wait<T>(&mut self, what: &str, timeout: Duration, ready: impl FnMut(&mut Self) -> Option<T>) -> T {
        self.wait_until(what, Instant::now() + timeout, ready)
    }

    /// [`Chaos::wait`] until `deadline`.
    fn wait_until<T>(&mut self, what: &str, deadline: Instant, mut ready: impl FnMut(&mut Self) -> Option<T>) -> T {
        loop {
            self.sample();
            if let Some(v) = ready(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", self.learner.proc.tail(40));
            std::thread::sleep(POLL);
        }
    }

    /// Lets the system run for `d`, sampling the invariants.
    fn steady(&mut self, d: Duration) {
        let until = Instant::now() + d;
        self.wait("the end of a steady period", d + Duration::from_secs(1), |_| {
            (Instant::now() >= until).then_some(())
        });
    }

    fn version(&self) -> u64 {
        max_version(&self.learner.progress()).unwrap_or(0)
    }

    /// Remembers every actor's byte count, for [`Chaos::recovered`].
    fn mark(&mut self) {
        for a in &mut self.actors {
            a.mark = a.proxy.sent();
        }
    }

    /// Waits until the policy version passes `version` and every live actor has sent [`FLOWING_BYTES`] since the
    /// last [`Chaos::mark`]; returns both times, counted from `since`.
    fn await_recovery(&mut self, what: &str, since: Instant, version: u64) -> (Duration, Duration) {
        let deadline = since + RECOVERY;
        self.wait_until(&format!("policy version > v{version} within {RECOVERY:?} of {what}"), deadline, |c| {
            (c.version() > version).then_some(())
        });
        let recovery = since.elapsed();
        self.wait_until(&format!("every actor sending within {RECOVERY:?} of {what}"), deadline, |c| {
            c.actors.iter().all(|a| a.proxy.sent() >= a.mark + FLOWING_BYTES).then_some(())
        });
        (recovery, since.elapsed())
    }

    /// [`Chaos::await_recovery`] after `event`, recorded and printed.
    fn recovered(&mut self, event: Event, since: Instant, version: u64) {
        let (recovery, flowing) = self.await_recovery(event.name(), since, version);
        self.stats.recoveries.push((event.name(), recovery));
        self.stats.flowing.push((event.name(), flowing));
        println!(
            "[chaos] {:7.1} s  {} recovered: policy advanced after {:.2} s, all {} actors sending after {:.2} s",
            self.elapsed(),
            event.name(),
            recovery.as_secs_f64(),
            self.actors.len(),
            flowing.as_secs_f64()
        );
    }

    /// The next event: a shuffled round of every kind first (so that a short run sees them all), then random
    /// ones; scaling stays within [`MIN_ACTORS`]..=[`MAX_ACTORS`].
    fn next_event(&mut self, plan: &mut Vec<Event>) -> Event {
        let event = plan.pop().unwrap_or_else(|| *WEIGHTED.choose(&mut self.rng).expect("events"));
        match event {
            Event::ScaleUp if self.actors.len() >= MAX_ACTORS => Event::ScaleDown,
            Event::ScaleDown if self.actors.len() <= MIN_ACTORS => Event::ScaleUp,
            e => e,
        }
    }

    fn inject(&mut self, event: Event) {
        *self.stats.events.entry(event.name()).or_default() += 1;
        let version = self.version();
        self.mark();
        match event {
            Event::KillActor => {
                let i = self.rng.random_range(0..self.actors.len());
                let mut victim = self.actors.remove(i);
                victim.proc.kill();
                println!(
                    "[chaos] {:7.1} s  kill-actor: SIGKILL {}, replacement started",
                    self.elapsed(),
                    victim.proc.name
                );
                drop(victim);
                self.spawn_actor();
                self.recovered(event, Instant::now(), version);
            }
            Event::KillLearner => self.kill_learner(),
            Event::CutActor => self.cut_actor(),
            Event::ScaleUp => {
                self.spawn_actor();
                println!("[chaos] {:7.1} s  scale-up: now {} actors", self.elapsed(), self.actors.len());
                self.recovered(event, Instant::now(), version);
            }
            Event::ScaleDown => {
                let i = self.rng.random_range(0..self.actors.len());
                let mut leaving = self.actors.remove(i);
                let since = Instant::now();
                leaving.proc.signal("TERM");
                let status = leaving.proc.wait_exit(RECOVERY, || {});
                assert!(
                    status.success(),
                    "{} exited with {status} after SIGTERM\n{}",
                    leaving.proc.name,
                    leaving.proc.tail(20)
                );
                println!(
                    "[chaos] {:7.1} s  scale-down: {} left on SIGTERM ({status}), now {} actors",
                    self.elapsed(),
                    leaving.proc.name,
                    self.actors.len()
                );
                self.recovered(event, since, version);
            }
        }
        self.check();
    }

    /// Cuts one actor's network for a few seconds (in long runs sometimes past the keepalive) and restores it.
    fn cut_actor(&mut self) {
        let i = self.rng.random_range(0..self.actors.len());
        let (mode, length) = if self.long_run && self.rng.random_bool(0.3) {
            (Link::Partition, LONG_CUT)
        } else {
            let mode = if self.rng.random_bool(0.5) { Link::Partition } else { Link::Reset };
            (mode, Duration::from_millis(self.rng.random_range(2000..6000)))
        };
        let name = self.actors[i].proc.name.clone();
        let sessions = |c: &Self| c.actors[i].proc.log().matches("connected to learner").count();
        let before = sessions(self);
        println!("[chaos] {:7.1} s  cut-actor: {name} {mode:?} for {:.1} s", self.elapsed(), length.as_secs_f64());
        self.actors[i].proxy.set(mode);
        self.steady(length);
        self.actors[i].proxy.set(Link::Up);
        let restored = Instant::now();
        let version = self.version();
        self.mark();
        // A reset ends the actor's session, and so does a partition the keepalive notices; a shorter one must not.
        let reconnected = if mode == Link::Reset || length > KEEPALIVE {
            self.wait_until(&format!("{name} to reconnect"), restored + RECOVERY, |c| {
                (sessions(c) > before).then_some(())
            });
            Some(restored.elapsed())
        } else {
            None
        };
        self.recovered(Event::CutActor, restored, version);
        if reconnected.is_none() {
            let after = sessions(self);
            assert_eq!(after, before, "{name} reconnected after a {length:?} partition, shorter than the keepalive");
        }
        self.stats.cuts.push((mode, length, reconnected));
    }

    /// SIGKILLs the learner, restarts it with `--resume` on the same port and run directory after a random pause,
    /// and checks that it continues from the newest checkpoint on disk at the kill.
    fn kill_learner(&mut self) {
        let _ = self.check_rejections();
        self.learner.proc.kill();
        self.learner_up = false;
        let killed = Instant::now();
        let old_name = self.learner.proc.name.clone();
        let old_rows = self.learner.progress();
        let (ck_version, ck_path) =
            self.learner.checkpoints().pop().expect("a checkpoint before the learner is killed");
        let ck = learner::run::checkpoint::load(&ck_path, &self.cfg)
            .unwrap_or_else(|e| panic!("newest checkpoint at the kill does not load: {e}"));
        assert_eq!(ck.version(), ck_version, "{} holds another version", ck_path.display());
        let ck_steps = ck.env_steps();
        if let Some(row) = old_rows.iter().find(|r| r.policy_version == ck_version) {
            assert_eq!(row.env_steps, ck_steps, "progress row and checkpoint of v{ck_version} disagree on env steps");
        }
        let down = Duration::from_millis(self.rng.random_range(0..3000));
        println!(
            "[chaos] {:7.1} s  kill-learner: SIGKILL {old_name} at v{}; newest checkpoint v{ck_version} ({ck_steps} env \
             steps); restart in {:.1} s",
            self.elapsed(),
            max_version(&old_rows).unwrap_or(0),
            down.as_secs_f64()
        );
        self.steady(down);
        self.learner = self.start_learner(true);
        let restarted = Instant::now();
        self.learner_started = restarted;
        self.learner_up = true;
        let first_new = self.wait("a progress row of the restarted learner", RECOVERY, |c| {
            first_new_row(&old_rows, &c.learner.progress())
        });
        let downtime = killed.elapsed();
        let log = self.learner.proc.log();
        let resumed = log.lines().find(|l| l.contains("resumed")).unwrap_or_else(|| {
            panic!("no `resumed` in the log of {}\n{}", self.learner.proc.name, self.learner.proc.tail(40))
        });
        assert!(
            !resumed.contains("older checkpoint") && resumed.contains(&format!("version={ck_version} ")),
            "did not resume from the newest checkpoint v{ck_version}: {resumed}"
        );
        assert!(
            first_new.policy_version > ck_version,
            "versions went backwards: first row after the restart is v{}, the newest checkpoint at the kill v{ck_version}",
            first_new.policy_version
        );
        assert!(
            first_new.env_steps > ck_steps,
            "env steps did not continue: {} after the restart, {ck_steps} in the checkpoint",
            first_new.env_steps
        );
        println!(
            "[chaos] {:7.1} s  kill-learner: {} resumed from v{ck_version}; first new row v{} at {} env steps, {:.2} s \
             after the kill, {:.2} s after the restart",
            self.elapsed(),
            self.learner.proc.name,
            first_new.policy_version,
            first_new.env_steps,
            downtime.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        );
        self.stats.downtime.push(downtime);
        // Recovery counts from the restart; every actor must come back to the new learner.
        self.recovered(Event::KillLearner, restarted, first_new.policy_version.saturating_sub(1));
    }

    /// The checks after every event: checkpoints load, progress is monotonic.
    fn check(&mut self) {
        for (version, path) in checkpoints(&self.learner.run_dir.join("checkpoints")) {
            match learner::run::checkpoint::load(&path, &self.cfg) {
                Ok(t) => {
                    assert_eq!(t.version(), version, "{} holds another version", path.display());
                    self.stats.loads += 1;
                    self.stats.verified.insert(path);
                }
                // Rotated away (keep_checkpoints) between the listing and the read.
                Err(_) if !path.exists() => {}
                Err(e) => panic!("checkpoint does not load: {e}"),
            }
        }
        let rows = self.learner.progress();
        for w in rows.windows(2) {
            assert!(
                w[1].policy_version >= w[0].policy_version && w[1].env_steps >= w[0].env_steps,
                "progress.csv goes backwards: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
    }

    /// Asserts that the running learner rejected nothing as `future_version` or `unknown_actor`; notes other
    /// rejections. Returns its metrics.
    fn check_rejections(&mut self) -> String {
        let name = self.learner.proc.name.clone();
        let metrics = self.wait(&format!("/metrics of {name}"), Duration::from_secs(10), |c| c.learner.metrics());
        let rejected: Vec<(String, f64)> = samples(&metrics, "proxima_learner_rejected_total")
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(labels, v)| (labels.to_string(), v))
            .collect();
        for reason in ["future_version", "unknown_actor"] {
            let n: f64 =
                rejected.iter().filter(|(l, _)| l.contains(&format!("reason=\"{reason}\""))).map(|(_, v)| v).sum();
            assert_eq!(
                n,
                0.0,
                "{name} rejected {n} rollouts as {reason}: {rejected:?}\n{}",
                self.learner.proc.tail(40)
            );
        }
        if !rejected.is_empty() {
            self.stats.other_rejections.push(format!("{name}: {rejected:?}"));
        }
        metrics
    }

    /// Waits until both registry gauges equal the number of live actors.
    fn check_registry(&mut self) -> Duration {
        let started = Instant::now();
        let live = self.actors.len() as f64;
        let bound = Duration::from_secs(ACTOR_IDLE_SECONDS + 12);
        self.wait(&format!("registry gauges at {live} actors"), bound, |c| {
            let m = c.learner.metrics()?;
            let gauge = |name: &str| samples(&m, name).first().map(|s| s.1);
            (gauge("proxima_learner_registered_actors") == Some(live)
                && gauge("proxima_learner_connected_actors") == Some(live))
            .then_some(())
        });
        started.elapsed()
    }
}

/// Keeps the temporary directory (logs, run directory) when the test fails, and says where.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("[chaos] logs and run directory kept in {}", dir.keep().display());
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|e| panic!("{name}={value:?}: {e}")))
}

#[test]
fn chaos_soak() {
    tests::bin_path("learner");
    tests::bin_path("actor");
    let duration = Duration::from_secs(env_u64("PROXIMA_CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS));
    let seed = env_u64("PROXIMA_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    println!(
        "[chaos] seed {seed} (PROXIMA_CHAOS_SEED={seed} replays the event sequence), {} s of events",
        duration.as_secs()
    );
    let tmp = KeepOnPanic(Some(tempfile::Builder::new().prefix("proxima-chaos-").tempdir().expect("temp dir")));
    let dir = tmp.0.as_ref().expect("temp dir").path().to_path_buf();
    let overrides: Vec<String> = [
        "server.checkpoint_every=2".to_string(),
        format!("server.actor_idle_seconds={ACTOR_IDLE_SECONDS}"),
        "total_steps=1000000000000".into(),
        "target_return=1000000.0".into(),
    ]
    .into();
    let config = tests::workspace_root().join("configs/cartpole.toml");
    let cfg = TrainConfig::load(Some(&config), &overrides).expect("the chaos config loads");
    let port = free_port();
    let runs = dir.join("runs");
    let args: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let learner = Learner::start(&dir, "learner-1", &runs, "chaos", port, &args, false);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("proxy runtime");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let initial = rng.random_range(3..=4);
    let mut chaos = Chaos {
        actors: Vec::new(),
        learner,
        learner_up: true,
        learner_started: Instant::now(),
        learners: 1,
        next_actor: 0,
        rng,
        long_run: duration > LONG_RUN,
        dir,
        port,
        overrides,
        cfg,
        started: Instant::now(),
        stats: Stats::default(),
        rt,
    };
    for _ in 0..initial {
        chaos.spawn_actor();
    }
    chaos.wait("a first checkpoint", Duration::from_secs(60), |c| c.learner.checkpoints().pop());
    let started = chaos.started;
    chaos.await_recovery("the start", started, 0);
    println!("[chaos] {:7.1} s  training with {initial} actors; injecting events", chaos.elapsed());

    let mut plan = Event::ALL.to_vec();
    plan.shuffle(&mut chaos.rng);
    let events_started = Instant::now();
    while events_started.elapsed() < duration {
        let pause = Duration::from_millis(chaos.rng.random_range(1000..3000));
        chaos.steady(pause);
        let event = chaos.next_event(&mut plan);
        chaos.inject(event);
    }

    let registry = chaos.check_registry();
    let metrics = chaos.check_rejections();
    let outcomes: Vec<String> = samples(&metrics, "proxima_learner_rollouts_total")
        .iter()
        .filter_map(|(labels, v)| {
            let outcome = labels.split(',').find_map(|l| l.strip_prefix("outcome=\""))?.trim_end_matches('"');
            Some(format!("{outcome} {v}"))
        })
        .collect();
    let name = chaos.learner.proc.name.clone();
    let status = chaos.learner.terminate(Duration::from_secs(60));
    chaos.learner_up = false;
    assert!(status.success(), "{name} exited with {status} after SIGTERM\n{}", chaos.learner.proc.tail(40));
    let rows = chaos.learner.progress();
    let last = rows.last().expect("progress rows").clone();
    let (final_version, final_path) = chaos.learner.checkpoints().pop().expect("a final checkpoint");
    assert_eq!(final_version, last.policy_version, "the final checkpoint holds the final policy");
    chaos.check();
    assert!(chaos.stats.verified.contains(&final_path), "final checkpoint not verified");

    let s = &chaos.stats;
    let by_kind: Vec<String> = s.events.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let cuts: Vec<String> = s
        .cuts
        .iter()
        .map(|(mode, length, reconnected)| match reconnected {
            Some(r) => format!("{mode:?} {:.1} s (reconnected {:.2} s after)", length.as_secs_f64(), r.as_secs_f64()),
            None => format!("{mode:?} {:.1} s (same session)", length.as_secs_f64()),
        })
        .collect();
    let (worst_kind, worst) = Stats::worst(&s.recoveries);
    let (worst_flow_kind, worst_flow) = Stats::worst(&s.flowing);
    let mean = s.recoveries.iter().map(|(_, d)| d.as_secs_f64()).sum::<f64>() / s.recoveries.len().max(1) as f64;
    let (rss_lo, rss_hi) = s.rss.unwrap_or_default();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "[chaos] summary: seed {seed}, {:.0} s ({:.0} s of events); events {} ({}); cuts [{}]; recoveries {}/{}, \
         policy advancing again after at most {:.2} s ({worst_kind}), mean {mean:.2} s; every actor sending again \
         after at most {:.2} s ({worst_flow_kind}); learner processes {}, SIGKILL to the successor's first progress row \
         at most {:.2} s; checkpoints verified {} distinct ({} loads); \
         learner RSS {:.1}..{:.1} MiB; registry matched {} live actors {:.1} s after the last event; final v{} at {} \
         env steps; last learner's rollouts by outcome [{}]; rejections: {:?}",
        chaos.elapsed(),
        events_started.elapsed().as_secs_f64(),
        s.events.values().sum::<usize>(),
        by_kind.join(", "),
        cuts.join(", "),
        s.recoveries.len(),
        s.events.values().sum::<usize>(),
        worst.as_secs_f64(),
        worst_flow.as_secs_f64(),
        chaos.learners,
        s.downtime.iter().max().copied().unwrap_or_default().as_secs_f64(),
        s.verified.len(),
        s.loads,
        mib(rss_lo),
        mib(rss_hi),
        chaos.actors.len(),
        registry.as_secs_f64(),
        last.policy_version,
        last.env_steps,
        outcomes.join(", "),
        s.other_rejections
    );
}
