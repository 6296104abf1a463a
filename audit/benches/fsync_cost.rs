//! What one `fdatasync` costs the machine (`scripts/bench-audit`, the anchor of the block-mode
//! figure): a loop, alone in its process, that does what the audit writer does for a group
//! (one 3,000-byte write into zeros already written ahead, then `fdatasync`) back to back for
//! `FSYNC_SECS` seconds (default 6) in `FSYNC_DIR` (default the system's temporary directory).
//! Run beside a server under load, the requests/s it takes away, against the syncs/s it makes,
//! is the machine time of one sync. Prints
//! `BENCH fsync_loop syncs=N secs=S per_s=R lat_us=L`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

fn main() {
    let secs: f64 = std::env::var("FSYNC_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6.0);
    let dir = std::env::var_os("FSYNC_DIR").map_or_else(std::env::temp_dir, Into::into);
    let path = dir.join(format!("rootseal-fsync-cost-{}", std::process::id()));
    const SPAN: u64 = 64 << 20;
    const WRITE: usize = 3000;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create the loop's file");
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..SPAN / zeros.len() as u64 {
        f.write_all(&zeros).unwrap();
    }
    f.sync_all().unwrap();
    let buf = vec![b'a'; WRITE];
    let (mut n, mut at) = (0u64, 0u64);
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    while t0.elapsed() < limit {
        f.write_all_at(&buf, at).unwrap();
        f.sync_data().unwrap();
        n += 1;
        at = (at + WRITE as u64) % (SPAN - WRITE as u64);
    }
    let s = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    if n > 0 {
        println!(
            "BENCH fsync_loop syncs={n} secs={s:.2} per_s={:.0} lat_us={:.0}",
            n as f64 / s,
            s / n as f64 * 1e6
        );
    }
}
