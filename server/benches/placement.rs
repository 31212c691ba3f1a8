//! One placement decision on a large simulated fleet: the bundled simulated host (8 GPUs, 4 of
//! them H100 PCIe, on 2 NUMA nodes and PCIe switches) recorded under `PLACEMENT_HOSTS` names
//! (default 1,000) in a fresh SQLite file. Three figures per round, median and spread (p10-p90)
//! of `PLACEMENT_ROUNDS` rounds (default 200). Each round another request claims a GPU and is
//! released (the inventory changes, as it does between two approvals), then:
//!
//! - the free H100s are read: from the database, the inventory having changed (the baseline),
//! - `scheduler::choose` picks 1 GPU, then 2 behind one switch, from that list,
//! - one whole decision right after the change: the read, then the choice,
//! - one whole decision on the unchanged inventory: the free list from memory (after the
//!   change counter is read), then the choice.
//!
//! `cargo bench -p passage-server --bench placement`

use std::time::{Duration, Instant};

use passage_hypervisor::{GpuVendors, LibvirtHost, classify};
use passage_server::scheduler::choose;
use passage_server::store::Store;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and the 10th and 90th percentiles, in microseconds.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    format!("{:>9.1} [{:.1}-{:.1}]", at(0.5), at(0.1), at(0.9))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let hosts = setting("PLACEMENT_HOSTS", 1000);
    let rounds = setting("PLACEMENT_ROUNDS", 200);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("fleet.db").display()
    ))
    .await
    .expect("the database");

    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/hosts/simulated-host.xml");
    let host = LibvirtHost::new(format!("test://{file}"), Duration::from_secs(10))
        .expect("the simulated host");
    let inventory = host.inventory().await.expect("its inventory");
    host.disconnect().await;
    let gpus = classify(&inventory.devices, &GpuVendors::default());
    let names: Vec<(String, String)> = (0..hosts)
        .map(|i| (format!("gpu-{i:04}"), format!("test://{file}")))
        .collect();
    store.sync_hosts(&names).await.expect("hosts");
    for (name, _) in &names {
        store
            .record_inventory(name, &inventory, &gpus, &[])
            .await
            .expect("an inventory");
    }

    let user = store
        .create_user(
            "bench",
            "not a password hash: this account never signs in",
            false,
        )
        .await
        .expect("a user");
    let form = passage_app::requests::RequestForm {
        gpu_model: "H100 PCIe".into(),
        gpu_count: 1,
        vcpus: 4,
        memory_mib: 8192,
        disk_gib: 20,
        image: "debian-12".into(),
        hypervisor: "kvm".into(),
        lease_hours: 1,
        reason: "placement benchmark".into(),
    };

    let (mut read, mut one, mut two, mut whole) = (vec![], vec![], vec![], vec![]);
    let mut unchanged = vec![];
    let mut free_count = 0;
    for round in 0..rounds {
        // A change since the last decision: a GPU on some host claimed, then released.
        let free = store.free_gpus("H100 PCIe").await.expect("free GPUs");
        let request = store
            .create_request(user.id, &form)
            .await
            .expect("a request");
        let elsewhere = &free[(round * 7) % free.len()..][..1];
        store.claim(request, elsewhere).await.expect("a claim");
        store.release(request).await.expect("a release");

        let began = Instant::now();
        let free = store.free_gpus("H100 PCIe").await.expect("free GPUs");
        let read_at = Instant::now();
        read.push(read_at - began);
        free_count = free.len();

        let began = Instant::now();
        let picked = choose(free.iter(), 1).expect("a fit for 1");
        one.push(began.elapsed());
        assert_eq!(picked.len(), 1);
        whole.push(read_at.elapsed() + read[read.len() - 1]);

        let began = Instant::now();
        let picked = choose(free.iter(), 2).expect("a fit for 2");
        two.push(began.elapsed());
        assert_eq!(picked.len(), 2);

        let began = Instant::now();
        let kept = store.free_gpus("H100 PCIe").await.expect("free GPUs");
        let picked = choose(kept.iter(), 1).expect("a fit for 1");
        unchanged.push(began.elapsed());
        assert_eq!(picked.len(), 1);
    }
    println!(
        "{hosts} hosts, {} GPUs, {free_count} free H100 PCIe; {rounds} rounds; microseconds, median [p10-p90]",
        hosts * gpus.len()
    );
    println!(
        "read the free H100s after a change (baseline) {}",
        summary(read.clone())
    );
    println!(
        "choose 1 GPU                                  {}",
        summary(one)
    );
    println!(
        "choose 2 GPUs (one switch)                    {}",
        summary(two)
    );
    println!(
        "one decision after a change: read + choose 1  {}",
        summary(whole.clone())
    );
    println!(
        "one decision, inventory unchanged             {}",
        summary(unchanged.clone())
    );
    let median = |mut t: Vec<Duration>| {
        t.sort();
        t[t.len() / 2].as_secs_f64()
    };
    let read = median(read);
    println!(
        "decision after a change / read: {:.2}; decision on an unchanged inventory / read: {:.3}",
        median(whole) / read,
        median(unchanged) / read
    );
}
