//! `make bench-idle`: the CPU an idle Envoy (2 workers, filter-mode layout, no traffic) spends,
//! with canary-gate's comparison ticking every 250 ms and every 1000 ms, with canary-gate but no
//! gate, and without canary-gate: utime + stime of the Envoy process (all its threads, from
//! `/proc/PID/stat`) over a measurement period after a 5 s warm-up.
//!
//! The Envoys of the scenarios idle side by side over the same period, so a busy machine
//! affects them alike.
//!
//! Usage: `bench_idle [SECONDS] [SCENARIO,...|all] [ROUNDS]` (default 60 s, every scenario,
//! one round; scenarios: `compare250`, `compare1000`, `nogate`, `without`).

use canary_harness::{filter_config, gated_config, median, Backend, Envoy, EnvoyOptions, Layout};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

struct Scenario {
    name: &'static str,
    about: &'static str,
    /// The filter's configuration; `None`: no canary-gate in the filter chain.
    filter: Option<fn() -> String>,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "compare250",
        about: "canary-gate, gate {\"compare\": {}} (eval_ms 250)",
        filter: Some(|| gated_config(10.0, r#"{"compare": {}}"#)),
    },
    Scenario {
        name: "compare1000",
        about: "canary-gate, gate {\"compare\": {}, \"eval_ms\": 1000}",
        filter: Some(|| gated_config(10.0, r#"{"compare": {}, "eval_ms": 1000}"#)),
    },
    Scenario { name: "nogate", about: "canary-gate, no gate (eval_ms 250)", filter: Some(|| filter_config(10.0)) },
    Scenario { name: "without", about: "no canary-gate in the filter chain", filter: None },
];

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of process `pid` (every thread), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// The shipped filter-mode bootstrap without the canary-gate HTTP filter.
fn without_canary_gate(bootstrap: String) -> String {
    let start = bootstrap.find("- name: canary-gate\n").expect("the bootstrap has the canary-gate filter");
    let start = bootstrap[..start].rfind('\n').map_or(0, |i| i + 1);
    let end = bootstrap[start..].find("- name: envoy.filters.http.router").expect("a router filter") + start;
    let end = bootstrap[..end].rfind('\n').map_or(end, |i| i + 1);
    format!("{}{}", &bootstrap[..start], &bootstrap[end..])
}

/// utime + stime per thread group of process `pid`, in clock ticks: (main thread, workers, others).
fn cpu_ticks_by_thread(pid: u32) -> [u64; 3] {
    let mut out = [0; 3];
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks: u64 = [14, 15].iter().filter_map(|n| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok())).sum();
        let group = if tid == pid {
            0
        } else if comm.starts_with("wrk:") {
            1
        } else {
            2
        };
        out[group] += ticks;
    }
    out
}

/// An idle Envoy of one scenario, with its backends.
struct Idle {
    envoy: Envoy,
    _backends: (Backend, Backend),
}

fn start(scenario: &Scenario) -> Idle {
    let (stable, canary) = (Backend::start("stable", &[]), Backend::start("canary", &[]));
    let filter_json = scenario.filter.map(|f| f()).unwrap_or_else(|| filter_config(10.0));
    let edit: &dyn Fn(String) -> String = if scenario.filter.is_some() { &|s| s } else { &without_canary_gate };
    let envoy = Envoy::start(
        EnvoyOptions { layout: Layout::FilterMode, filter_json: &filter_json, workers: 2, edit },
        &stable,
        &canary,
    );
    let loaded = envoy.log().contains("wasm log canary-gate");
    assert_eq!(loaded, scenario.filter.is_some(), "canary-gate loaded: {loaded}\n{}", envoy.log());
    Idle { envoy, _backends: (stable, canary) }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60).max(1);
    let picked: Vec<String> =
        args.next().filter(|p| p != "all").map(|p| p.split(',').map(str::to_string).collect()).unwrap_or_default();
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    if let Some(unknown) = picked.iter().find(|p| !SCENARIOS.iter().any(|s| s.name == p.as_str())) {
        eprintln!("unknown scenario `{unknown}`");
        std::process::exit(2);
    }
    let scenarios: Vec<&Scenario> =
        SCENARIOS.iter().filter(|s| picked.is_empty() || picked.iter().any(|p| p == s.name)).collect();
    let ticks_per_s = clock_ticks();
    println!(
        "idle Envoys (2 workers each, filter mode, no traffic), one per scenario, measured side by side: CPU \
         (utime + stime of every thread, {ticks_per_s} ticks/s) over {seconds} s after a 5 s warm-up, {rounds} round(s)"
    );
    let mut percents: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 1..=rounds {
        let idle: Vec<Idle> = scenarios.iter().map(|s| start(s)).collect();
        sleep(Duration::from_secs(5));
        let before: Vec<(u64, [u64; 3])> =
            idle.iter().map(|i| (cpu_ticks(i.envoy.pid()), cpu_ticks_by_thread(i.envoy.pid()))).collect();
        let t0 = Instant::now();
        sleep(Duration::from_secs(seconds));
        let elapsed = t0.elapsed().as_secs_f64();
        println!("round {round}:");
        for (k, (scenario, i)) in scenarios.iter().zip(&idle).enumerate() {
            let (total, threads) = (cpu_ticks(i.envoy.pid()), cpu_ticks_by_thread(i.envoy.pid()));
            let percent = |ticks: u64| 100.0 * ticks as f64 / ticks_per_s / elapsed;
            let p = percent(total - before[k].0);
            let [main, workers, others] = [0, 1, 2].map(|g| percent(threads[g] - before[k].1[g]));
            println!(
                "  {:<12} {p:6.3}% of one core (main thread {main:.3}, workers {workers:.3}, other threads {others:.3})  \
                 {}",
                scenario.name, scenario.about
            );
            percents[k].push(p);
        }
    }
    let medians: Vec<(&str, f64)> =
        scenarios.iter().zip(percents.iter_mut()).map(|(s, v)| (s.name, median(v))).collect();
    println!("\nmedian over {rounds} round(s), % of one core:");
    for (name, p) in &medians {
        println!("  {name:<12} {p:6.3}%");
    }
    if let Some(&(_, base)) = medians.iter().find(|(name, _)| *name == "without") {
        println!("attributable to canary-gate's VMs (main thread + 2 workers), over Envoy without it:");
        for (name, p) in medians.iter().filter(|(name, _)| *name != "without") {
            println!("  {name:<12} {:+6.3} points of one core", p - base);
        }
    }
}
