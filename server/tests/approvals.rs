//! 1,000 approvals at once against 500 free GPUs, through two servers' connections to one
//! database (two stores, as two replicas have), on SQLite and PostgreSQL: exactly 500 requests
//! get a GPU, no GPU is claimed twice, the other 500 wait with the reason, and none gives up.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use passage_server::scheduler::{self, PlaceError};
use passage_server::store::Store;

const HOSTS: usize = 125;
const APPROVALS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_approvals_on_two_replicas_claim_each_gpu_once() {
    common::on_every_backend(|url| async move {
        let one = Arc::new(Store::open(&url).await.unwrap());
        let two = Arc::new(Store::open(&url).await.unwrap());
        let names: Vec<(String, String)> = (0..HOSTS)
            .map(|i| (format!("gpu-{i:03}"), "simulated".to_string()))
            .collect();
        one.sync_hosts(&names).await.unwrap();
        let (inventory, gpus) = common::simulated_inventory().await;
        for (name, _) in &names {
            one.record_inventory(name, &inventory, &gpus, &[])
                .await
                .unwrap();
            one.register_image(&common::debian_image_on(name))
                .await
                .unwrap();
        }
        let free = one.free_gpus("H100 PCIe").await.unwrap().len();
        assert_eq!(free, HOSTS * 4, "500 free H100s");
        let user = one.create_user("ada", "not a hash", false).await.unwrap();
        let form = common::h100_form(1);
        let mut requests = Vec::with_capacity(APPROVALS);
        for _ in 0..APPROVALS {
            requests.push(one.create_request(user.id, &form).await.unwrap());
        }

        let began = Instant::now();
        let mut approvals = tokio::task::JoinSet::new();
        for (i, id) in requests.iter().copied().enumerate() {
            let store = Arc::clone(if i % 2 == 0 { &one } else { &two });
            approvals.spawn(async move { (id, scheduler::place(&store, id).await) });
        }
        let (mut placed, mut waiting) = (HashSet::new(), 0);
        while let Some(joined) = approvals.join_next().await {
            match joined.unwrap() {
                (id, Ok(_)) => assert!(placed.insert(id)),
                (_, Err(PlaceError::NoFit(reason))) => {
                    assert!(reason.contains("none free"), "{reason}");
                    waiting += 1;
                }
                (id, Err(e)) => panic!("request {id}: {e}"),
            }
        }
        eprintln!(
            "{APPROVALS} approvals against {free} GPUs on {:?}: {:?}",
            one.backend(),
            began.elapsed()
        );
        assert_eq!((placed.len(), waiting), (free, APPROVALS - free));
        let claims = one.claims().await.unwrap();
        let gpus: HashSet<(String, String)> = claims
            .iter()
            .map(|(h, a, _)| (h.clone(), a.clone()))
            .collect();
        assert_eq!(gpus.len(), claims.len(), "no function is claimed twice");
        let holders: HashSet<i64> = claims.iter().map(|(_, _, r)| *r).collect();
        assert_eq!(
            holders, placed,
            "every placed request holds, and only those"
        );
        assert!(two.free_gpus("H100 PCIe").await.unwrap().is_empty());
        one.close().await;
        two.close().await;
    })
    .await;
}
