//! The soak driver behind `scripts/soak` (issue 16, build item 6): an open-loop load of mixed
//! transit and bulk requests at a fixed rate against a running rootseal, with HSM faults
//! injected on a schedule, reporting per minute the requests, errors by kind, p50/p99 latency and
//! the server's RSS, and failing on any lost ciphertext or a growing RSS trend.
//!
//! Open loop: requests are issued on a clock (`--rate` per second) whatever the answers, and a
//! latency is measured from the moment a request was due, so a stalled server shows as latency
//! (no coordinated omission). In-flight requests are bounded (`--max-in-flight`); a request due
//! while the bound is reached is not sent and is counted as `shed (client in-flight cap)`; the
//! p50/p99 columns are of the requests sent (answered or timed out), never of shed ones.
//!
//! Lost ciphertext: every successful encrypt (single, batch, bulk) is remembered, in a bounded
//! ring of recent ones and a bounded sample kept for the whole run; decrypts are drawn from the
//! ring and compared with their plaintext, and at the end every remembered ciphertext is
//! decrypted again. A ciphertext that no longer opens to its plaintext is lost.
//!
//! Faults (`--hsm-pid-file`, `--hsm-restart`): every `--fault-every` seconds, alternately, the
//! HSM side's process group is hung (SIGSTOP for `--hang-secs`, then SIGCONT) or killed (SIGKILL, `--down-secs`
//! later the restart command runs). The key is rotated every `--rotate-every` seconds.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// The command line (`--name value` pairs).
struct Args {
    addr: String,
    token: String,
    key: String,
    rate: f64,
    duration: Duration,
    rootseal_pid: u32,
    hsm_pid_file: Option<PathBuf>,
    hsm_restart: Option<String>,
    fault_every: Duration,
    hang: Duration,
    down: Duration,
    rotate_every: Duration,
    max_in_flight: usize,
    report: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut m = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let k = k
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {k}"))?
            .to_owned();
        let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
        m.insert(k, v);
    }
    let get = |k: &str| m.get(k).cloned();
    let need = |k: &str| get(k).ok_or_else(|| format!("--{k} is required"));
    let num = |k: &str, d: f64| -> Result<f64, String> {
        get(k).map_or(Ok(d), |v| {
            v.parse().map_err(|_| format!("--{k}: not a number"))
        })
    };
    let secs = |k: &str, d: f64| num(k, d).map(Duration::from_secs_f64);
    Ok(Args {
        addr: need("addr")?,
        token: need("token")?,
        key: get("key").unwrap_or_else(|| "soak".to_owned()),
        rate: num("rate", 1000.0)?,
        duration: secs("duration", 3600.0)?,
        rootseal_pid: need("rootseal-pid")?
            .parse()
            .map_err(|_| "--rootseal-pid: not a pid")?,
        hsm_pid_file: get("hsm-pid-file").map(PathBuf::from),
        hsm_restart: get("hsm-restart"),
        fault_every: secs("fault-every", 300.0)?,
        hang: secs("hang-secs", 10.0)?,
        down: secs("down-secs", 5.0)?,
        rotate_every: secs("rotate-every", 600.0)?,
        max_in_flight: num("max-in-flight", 512.0)? as usize,
        report: PathBuf::from(need("report")?),
    })
}

/// A small xorshift generator (the mix and the plaintexts need no cryptographic randomness).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One minute of results.
#[derive(Default)]
struct Minute {
    latencies_us: Vec<u32>,
    kinds: BTreeMap<String, u64>,
    rss_kib: Vec<u64>,
}

/// What every request task shares.
struct Shared {
    args: Args,
    client: reqwest::Client,
    t0: Instant,
    minutes: Mutex<Vec<Minute>>,
    /// Recent (ciphertext, plaintext) pairs, transit `vault:` form.
    ring: Mutex<Vec<(String, Vec<u8>)>>,
    /// Recent bulk batches (`rsb1:` items and their plaintexts).
    bulk_ring: Mutex<Vec<BulkBatch>>,
    /// A sample of every successful encrypt, kept for the final check.
    kept: Mutex<Vec<(String, Vec<u8>)>>,
    kept_bulk: Mutex<Vec<(String, Vec<u8>)>>,
    lost: Mutex<Vec<String>>,
    encrypted: AtomicU64,
    events: Mutex<Vec<String>>,
}

/// A bulk batch: its `rsb1:` items and their plaintexts.
type BulkBatch = (Vec<String>, Vec<Vec<u8>>);

const RING: usize = 20_000;
const KEPT: usize = 60_000;
const KEEP_EVERY: u64 = 50;
const BATCH: usize = 16;
const BULK: usize = 32;

impl Shared {
    fn minute(&self, at: Instant) -> usize {
        (at.saturating_duration_since(self.t0).as_secs() / 60) as usize
    }

    fn record(&self, due: Instant, kind: &str) {
        let lat = due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let mut m = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.minute(due);
        while m.len() <= i {
            m.push(Minute::default());
        }
        // Latency is of answered requests only: a shed request was never sent.
        if !kind.starts_with("shed") {
            m[i].latencies_us.push(lat);
        }
        *m[i].kinds.entry(kind.to_owned()).or_default() += 1;
    }

    fn event(&self, what: String) {
        let t = self.t0.elapsed().as_secs();
        eprintln!("soak: {:>4}m{:02}s {what}", t / 60, t % 60);
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}m{:02}s {what}", t / 60, t % 60));
    }

    fn remember(&self, ct: String, pt: Vec<u8>, rng: &mut Rng) {
        let n = self.encrypted.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(KEEP_EVERY) {
            let mut k = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if k.len() < KEPT {
                k.push((ct.clone(), pt.clone()));
            }
        }
        let mut r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() < RING {
            r.push((ct, pt));
        } else {
            let i = rng.below(RING);
            r[i] = (ct, pt);
        }
    }

    fn pick(&self, rng: &mut Rng) -> Option<(String, Vec<u8>)> {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (!r.is_empty()).then(|| r[rng.below(r.len())].clone())
    }

    fn lose(&self, what: String) {
        eprintln!("soak: LOST {what}");
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}/v1/{path}", self.args.addr);
        let r = self
            .client
            .post(url)
            .header("X-Vault-Token", &self.args.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout (30 s)".to_owned()
                } else if e.is_connect() {
                    "connection refused".to_owned()
                } else {
                    "transport error".to_owned()
                }
            })?;
        let status = r.status().as_u16();
        // The body is read under the same 30 s deadline: a timeout there is a timeout, not a
        // malformed answer.
        let body = r.bytes().await.map_err(|e| {
            if e.is_timeout() {
                "timeout (30 s)".to_owned()
            } else {
                "transport error (body)".to_owned()
            }
        })?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 {
            if v.is_null() {
                return Err("200 with a body that is not JSON".to_owned());
            }
            return Ok(v);
        }
        let msg = v["errors"][0].as_str().unwrap_or("(no message)");
        let msg: String = msg.chars().take(60).collect();
        Err(format!("{status}: {msg}"))
    }
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn plaintext_of(v: &Value) -> Option<Vec<u8>> {
    B64.decode(v["plaintext"].as_str()?).ok()
}

/// One request of the mix; returns its kind (`ok` or the error).
async fn one(s: &Shared, rng: &mut Rng) -> String {
    let key = &s.args.key;
    let roll = rng.below(100);
    let r: Result<(), String> = async {
        match roll {
            0..=39 => {
                let pt = rng.bytes(32);
                let v = s
                    .call(
                        &format!("transit/encrypt/{key}"),
                        json!({"plaintext": b64(&pt)}),
                    )
                    .await?;
                let ct = v["data"]["ciphertext"]
                    .as_str()
                    .ok_or("200 without ciphertext")?;
                s.remember(ct.to_owned(), pt, rng);
                Ok(())
            }
            40..=69 => {
                let Some((ct, pt)) = s.pick(rng) else {
                    return Ok(());
                };
                match s
                    .call(&format!("transit/decrypt/{key}"), json!({"ciphertext": ct}))
                    .await
                {
                    Ok(v) if plaintext_of(&v["data"]).as_deref() == Some(&pt[..]) => Ok(()),
                    Ok(_) => {
                        s.lose(format!("decrypt gave another plaintext for {ct}"));
                        Err("LOST: wrong plaintext".to_owned())
                    }
                    Err(e) if e.starts_with("400") => {
                        s.lose(format!("decrypt refused {ct}: {e}"));
                        Err(format!("LOST: {e}"))
                    }
                    Err(e) => Err(e),
                }
            }
            70..=79 => {
                let Some((ct, pt)) = s.pick(rng) else {
                    return Ok(());
                };
                let v = s
                    .call(&format!("transit/rewrap/{key}"), json!({"ciphertext": ct}))
                    .await;
                match v {
                    Ok(v) => {
                        let new = v["data"]["ciphertext"]
                            .as_str()
                            .ok_or("200 without ciphertext")?;
                        s.remember(new.to_owned(), pt, rng);
                        Ok(())
                    }
                    Err(e) if e.starts_with("400") => {
                        s.lose(format!("rewrap refused {ct}: {e}"));
                        Err(format!("LOST: {e}"))
                    }
                    Err(e) => Err(e),
                }
            }
            80..=89 => {
                let pts: Vec<Vec<u8>> = (0..BATCH).map(|_| rng.bytes(32)).collect();
                let items: Vec<Value> = pts.iter().map(|p| json!({"plaintext": b64(p)})).collect();
                let v = s
                    .call(
                        &format!("transit/encrypt/{key}"),
                        json!({"batch_input": items}),
                    )
                    .await?;
                let res = v["data"]["batch_results"]
                    .as_array()
                    .ok_or("200 without batch_results")?;
                for (r, pt) in res.iter().zip(pts) {
                    match r["ciphertext"].as_str() {
                        Some(ct) => s.remember(ct.to_owned(), pt, rng),
                        None => return Err("batch item without ciphertext".to_owned()),
                    }
                }
                Ok(())
            }
            90..=94 => {
                let pts: Vec<Vec<u8>> = (0..BULK).map(|_| rng.bytes(64)).collect();
                let items: Vec<Value> = pts.iter().map(|p| json!({"plaintext": b64(p)})).collect();
                let v = s
                    .call(
                        &format!("transit/bulk-seal/{key}"),
                        json!({"batch_input": items}),
                    )
                    .await?;
                let res = v["data"]["batch_results"]
                    .as_array()
                    .ok_or("200 without batch_results")?;
                let cts: Vec<String> = res
                    .iter()
                    .filter_map(|r| r["ciphertext"].as_str().map(str::to_owned))
                    .collect();
                if cts.len() != pts.len() {
                    return Err("bulk item without ciphertext".to_owned());
                }
                if s.encrypted
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(10)
                {
                    let mut k = s.kept_bulk.lock().unwrap_or_else(|p| p.into_inner());
                    if k.len() < KEPT {
                        k.push((cts[0].clone(), pts[0].clone()));
                    }
                }
                let mut br = s.bulk_ring.lock().unwrap_or_else(|p| p.into_inner());
                if br.len() < 200 {
                    br.push((cts, pts));
                } else {
                    let i = rng.below(200);
                    br[i] = (cts, pts);
                }
                Ok(())
            }
            _ => {
                let picked = {
                    let br = s.bulk_ring.lock().unwrap_or_else(|p| p.into_inner());
                    (!br.is_empty()).then(|| br[rng.below(br.len())].clone())
                };
                let Some((cts, pts)) = picked else {
                    return Ok(());
                };
                let items: Vec<Value> = cts.iter().map(|c| json!({"ciphertext": c})).collect();
                let v = match s
                    .call(
                        &format!("transit/bulk-unseal/{key}"),
                        json!({"batch_input": items}),
                    )
                    .await
                {
                    Ok(v) => v,
                    Err(e) if e.starts_with("400") => {
                        s.lose(format!("bulk-unseal refused a batch: {e}"));
                        return Err(format!("LOST: {e}"));
                    }
                    Err(e) => return Err(e),
                };
                let res = v["data"]["batch_results"]
                    .as_array()
                    .ok_or("200 without batch_results")?;
                for (r, pt) in res.iter().zip(&pts) {
                    if plaintext_of(r).as_deref() != Some(&pt[..]) {
                        s.lose("a bulk item did not unseal to its plaintext".to_owned());
                        return Err("LOST: bulk item".to_owned());
                    }
                }
                Ok(())
            }
        }
    }
    .await;
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e,
    }
}

/// Signals the HSM side's whole process group (`p11-kit server` forks a `p11-kit-remote` per
/// connection, which does the PKCS#11 work; the script starts the server as a group leader).
fn signal(pgid: &str, sig: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Every `fault_every`: hang then kill, alternately; every `rotate_every`: rotate the key.
async fn faults(s: Arc<Shared>, end: Instant) {
    let (Some(pid_file), Some(restart)) = (s.args.hsm_pid_file.clone(), s.args.hsm_restart.clone())
    else {
        return;
    };
    let mut n = 0u32;
    loop {
        let next = s.t0 + s.args.fault_every * (n + 1);
        if next + s.args.fault_every / 2 > end {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let pid = pid.trim().to_owned();
        if n.is_multiple_of(2) {
            s.event(format!(
                "fault: HSM hung (SIGSTOP p11-kit server {pid}) for {:?}",
                s.args.hang
            ));
            signal(&pid, "STOP");
            tokio::time::sleep(s.args.hang).await;
            signal(&pid, "CONT");
            s.event("fault: HSM resumed (SIGCONT)".to_owned());
        } else {
            s.event(format!(
                "fault: HSM killed (SIGKILL p11-kit server {pid}), down {:?}",
                s.args.down
            ));
            signal(&pid, "KILL");
            tokio::time::sleep(s.args.down).await;
            let ok = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&restart)
                .status()
                .await
                .is_ok_and(|st| st.success());
            s.event(format!("fault: HSM restarted (ok: {ok})"));
        }
        n += 1;
    }
}

async fn rotations(s: Arc<Shared>, end: Instant) {
    let mut n = 1u32;
    loop {
        let next = s.t0 + s.args.rotate_every * n;
        if next > end {
            return;
        }
        tokio::time::sleep_until(next.into()).await;
        for _ in 0..30 {
            match s
                .call(&format!("transit/keys/{}/rotate", s.args.key), json!({}))
                .await
            {
                Ok(_) => {
                    s.event("key rotated".to_owned());
                    break;
                }
                Err(e) => {
                    s.event(format!("rotate: {e} (retrying)"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        n += 1;
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn sample_rss(s: Arc<Shared>, end: Instant) {
    let mut t = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < end {
        t.tick().await;
        let Some(kib) = rss_kib(s.args.rootseal_pid) else {
            s.event("rootseal is gone".to_owned());
            return;
        };
        let i = s.minute(Instant::now());
        let mut m = s.minutes.lock().unwrap_or_else(|p| p.into_inner());
        while m.len() <= i {
            m.push(Minute::default());
        }
        m[i].rss_kib.push(kib);
    }
}

/// Decrypts every kept ciphertext again (batches of 100), retrying while the HSM is away.
async fn final_check(s: &Shared) -> (usize, usize) {
    let mut pairs: Vec<(String, Vec<u8>)> =
        s.kept.lock().unwrap_or_else(|p| p.into_inner()).clone();
    pairs.extend(
        s.ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned(),
    );
    let bulk: Vec<(String, Vec<u8>)> = s
        .kept_bulk
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut lost = 0;
    for (path, set) in [("decrypt", &pairs), ("bulk-unseal", &bulk)] {
        for chunk in set.chunks(100) {
            let items: Vec<Value> = chunk
                .iter()
                .map(|(c, _)| json!({"ciphertext": c}))
                .collect();
            let mut answer = None;
            for _ in 0..60 {
                match s
                    .call(
                        &format!("transit/{path}/{}", s.args.key),
                        json!({"batch_input": items}),
                    )
                    .await
                {
                    Ok(v) => {
                        answer = Some(v);
                        break;
                    }
                    Err(e) if e.starts_with("400") => break,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            let res = answer
                .as_ref()
                .and_then(|v| v["data"]["batch_results"].as_array().cloned())
                .unwrap_or_default();
            for (i, (ct, pt)) in chunk.iter().enumerate() {
                if res.get(i).and_then(plaintext_of).as_deref() != Some(&pt[..]) {
                    lost += 1;
                    s.lose(format!("final check: {path} of {ct} failed"));
                }
            }
        }
    }
    (pairs.len() + bulk.len(), lost)
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i]) / 1000.0
}

/// Least-squares slope of `ys` per step.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    num / den
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rootseal-soak: {e}");
            std::process::exit(2);
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()
        .expect("http client");
    let t0 = Instant::now();
    let end = t0 + args.duration;
    let s = Arc::new(Shared {
        args,
        client,
        t0,
        minutes: Mutex::new(Vec::new()),
        ring: Mutex::new(Vec::new()),
        bulk_ring: Mutex::new(Vec::new()),
        kept: Mutex::new(Vec::new()),
        kept_bulk: Mutex::new(Vec::new()),
        lost: Mutex::new(Vec::new()),
        encrypted: AtomicU64::new(0),
        events: Mutex::new(Vec::new()),
    });
    s.event(format!(
        "start: {} req/s for {:?}, faults every {:?}",
        s.args.rate, s.args.duration, s.args.fault_every
    ));
    let side = [
        tokio::spawn(faults(s.clone(), end)),
        tokio::spawn(rotations(s.clone(), end)),
        tokio::spawn(sample_rss(s.clone(), end)),
    ];
    let slots = Arc::new(tokio::sync::Semaphore::new(s.args.max_in_flight));
    let mut issued: u64 = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(std::process::id());
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = (now.duration_since(t0).as_secs_f64() * s.args.rate) as u64;
        while issued < due {
            let at = t0 + Duration::from_secs_f64(issued as f64 / s.args.rate);
            issued += 1;
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let s = s.clone();
                    let mut rng = Rng(seed | 1);
                    tasks.spawn(async move {
                        let kind = one(&s, &mut rng).await;
                        s.record(at, &kind);
                        drop(permit);
                    });
                }
                Err(_) => s.record(at, "shed (client in-flight cap)"),
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    for h in side {
        let _ = h.await;
    }
    s.event("load done; final check of every kept ciphertext".to_owned());
    let (checked, final_lost) = final_check(&s).await;
    report(&s, checked, final_lost);
}

fn report(s: &Shared, checked: usize, final_lost: usize) {
    let mut minutes = std::mem::take(&mut *s.minutes.lock().unwrap_or_else(|p| p.into_inner()));
    let mut out = String::new();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    out.push_str(
        "| minute | due | sent | ok | 503 | timeout | other errors | shed | p50 ms | p99 ms | RSS MB (max) |\n",
    );
    out.push_str(
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut rss_means = Vec::new();
    for (i, m) in minutes.iter_mut().enumerate() {
        let sent = m.latencies_us.len() as u64;
        let count = |f: &dyn Fn(&str) -> bool| -> u64 {
            m.kinds.iter().filter(|(k, _)| f(k)).map(|(_, c)| c).sum()
        };
        let ok = count(&|k| k == "ok");
        let unavailable = count(&|k| k.starts_with("503"));
        let timeouts = count(&|k| k.starts_with("timeout"));
        let shed = count(&|k| k.starts_with("shed"));
        let other = sent - ok - unavailable - timeouts;
        for (k, c) in &m.kinds {
            *totals.entry(k.clone()).or_default() += c;
        }
        let rss_max = m.rss_kib.iter().max().copied().unwrap_or(0);
        if !m.rss_kib.is_empty() {
            rss_means.push(m.rss_kib.iter().sum::<u64>() as f64 / m.rss_kib.len() as f64 / 1024.0);
        }
        out.push_str(&format!(
            "| {} | {} | {sent} | {ok} | {unavailable} | {timeouts} | {other} | {shed} | {:.2} | {:.2} | {:.1} |\n",
            i + 1,
            sent + shed,
            pct(&mut m.latencies_us, 0.50),
            pct(&mut m.latencies_us, 0.99),
            rss_max as f64 / 1024.0
        ));
    }
    out.push_str("\n| result | count |\n| --- | ---: |\n");
    for (k, c) in &totals {
        out.push_str(&format!("| {k} | {c} |\n"));
    }
    // RSS trend over the run after warm-up (the first fifth, at least one minute).
    let skip = (rss_means.len() / 5).max(1).min(rss_means.len());
    let steady = &rss_means[skip..];
    let per_min = slope(steady);
    let mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    let growth = per_min * steady.len() as f64;
    let rss_grows = growth > (mean * 0.10).max(2.0);
    let lost = s.lost.lock().unwrap_or_else(|p| p.into_inner()).len();
    out.push_str(&format!(
        "\nRSS after warm-up: mean {mean:.1} MB, trend {per_min:+.3} MB/min ({growth:+.1} MB over \
         {} min){}\n",
        steady.len(),
        if rss_grows { ": GROWING" } else { ": flat" }
    ));
    out.push_str(&format!(
        "Final check: {checked} kept ciphertexts decrypted again, {final_lost} failed; lost in all: {lost}\n"
    ));
    out.push_str("\nEvents:\n");
    for e in s.events.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push_str(&format!("- {e}\n"));
    }
    let verdict = if lost == 0 && !rss_grows {
        "PASS"
    } else {
        "FAIL"
    };
    out.push_str(&format!("\nVerdict: {verdict}\n"));
    print!("{out}");
    if let Err(e) = std::fs::write(&s.args.report, &out) {
        eprintln!(
            "rootseal-soak: cannot write {}: {e}",
            s.args.report.display()
        );
    }
    if verdict != "PASS" {
        std::process::exit(1);
    }
}
