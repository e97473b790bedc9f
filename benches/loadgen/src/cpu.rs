//! CPU time of this process and of watched processes (the proxy, the backend), read
//! from `/proc/PID/stat`, so each result line says how busy everyone was during the
//! measured window: the load generator must stay well below 100% of its core.

use tokio::time::Instant;

/// `/proc` reports CPU time in clock ticks; Linux fixes USER_HZ at 100.
const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of `pid` ("self" for this process) in seconds; 0 if unreadable.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS_PER_SEC
}

/// CPU usage of this process and of `watch` between [`Sampler::start`] and [`Sampler::finish`].
pub struct Sampler {
    watch: Vec<String>,
    t0: Instant,
    own0: f64,
    watched0: Vec<f64>,
}

impl Sampler {
    /// Takes the first sample.
    pub fn start(watch: &[String]) -> Self {
        Self {
            watch: watch.to_vec(),
            t0: Instant::now(),
            own0: cpu_seconds("self"),
            watched0: watch.iter().map(|p| cpu_seconds(p)).collect(),
        }
    }

    /// `cpu_pct=… watch_cpu_pct=a,b` (percent of one core) since [`Sampler::start`].
    pub fn finish(&self) -> String {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let own = (cpu_seconds("self") - self.own0) / wall * 100.0;
        let watched: Vec<String> = self
            .watch
            .iter()
            .zip(&self.watched0)
            .map(|(p, c0)| format!("{:.1}", (cpu_seconds(p) - c0) / wall * 100.0))
            .collect();
        format!(
            "cpu_pct={own:.1} watch_cpu_pct={}",
            if watched.is_empty() {
                "-".into()
            } else {
                watched.join(",")
            }
        )
    }
}
