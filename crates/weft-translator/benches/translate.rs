//! Translation + IPAM throughput: 10,000 pods in 1,000 namespaces (100 isolated) and
//! 2,000 services, applied and flushed in one batch (the benchmark shape).

use criterion::{Criterion, criterion_group, criterion_main};
use weft_model::{InputChange, InputObject};
use weft_translator::Translator;

fn objects(pods: usize, namespaces: usize, isolated: usize, services: usize) -> Vec<InputObject> {
    weft_translator::synthetic::cluster_manifests(pods, namespaces, isolated, services)
        .into_iter()
        .map(|v| InputObject::from_value(v).expect("valid"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let objs = objects(10_000, 1_000, 100, 2_000);
    let mut group = c.benchmark_group("translate");
    group.sample_size(10);
    group.bench_function("10k_pods_1k_ns_2k_services", |b| {
        b.iter(|| {
            let mut t = Translator::new();
            for o in &objs {
                t.apply(InputChange::Upsert(o.clone())).expect("accepted");
            }
            t.flush().len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
