//! Policy compile time and memory: 10,000 pods, 1,000 NetworkPolicies, 20
//! AdminNetworkPolicies and a baseline (the issue's shape, [`Shape::ISSUE`]), compiled
//! for every pod (what all nodes together compute), plus a tenth of that.
//!
//! Memory: peak resident set size (`VmHWM`) of this process, reset through
//! `/proc/self/clear_refs` after the world is built, so the figure printed per shape
//! (once, before the timing runs) is the world plus one compile. (The workspace
//! forbids `unsafe`, so no counting global allocator here.)

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use weft_routing::policy::synthetic::{Shape, compile_all, world};

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn memory(label: &str, shape: Shape) {
    let set = world(shape);
    // "5" resets the peak RSS to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (before, _) = rss();
    let start = Instant::now();
    let (endpoints, rules) = compile_all(&set);
    let took = start.elapsed();
    let (_, peak) = rss();
    println!(
        "{label}: {endpoints} restricted endpoints, {rules} compiled rules; one compile {took:.2?}; RSS with the world {before:.1} MiB, peak during the compile {peak:.1} MiB"
    );
}

fn bench(c: &mut Criterion) {
    let small = Shape {
        pods: 1_000,
        namespaces: 100,
        policies: 100,
        admin: 20,
    };
    memory("1k pods / 100 policies", small);
    memory("10k pods / 1k policies", Shape::ISSUE);
    let mut group = c.benchmark_group("policy_compile");
    group.sample_size(10);
    let set = world(small);
    group.bench_function("1k_pods_100_policies_20_anps", |b| b.iter(|| compile_all(&set)));
    let set = world(Shape::ISSUE);
    group.bench_function("10k_pods_1k_policies_20_anps", |b| b.iter(|| compile_all(&set)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
