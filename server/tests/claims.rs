//! GPU claims under contention, on SQLite and PostgreSQL: many approvals at once, from two
//! database pools standing for two server processes, never give one GPU twice.

mod common;

use std::collections::HashSet;

use passage_app::requests::RequestForm;
use passage_server::scheduler::{self, PlaceError};
use passage_server::store::Store;

fn request(model: &str, count: i64) -> RequestForm {
    RequestForm {
        gpu_model: model.into(),
        gpu_count: count,
        vcpus: 8,
        memory_mib: 32768,
        disk_gib: 100,
        image: "debian-12".into(),
        hypervisor: "kvm".into(),
        lease_hours: 24,
        reason: "benchmarks".into(),
    }
}

async fn prepared(url: &str) -> (Store, i64) {
    let store = Store::open(url).await.unwrap();
    store
        .sync_hosts(&[("sim".into(), "simulated".into())])
        .await
        .unwrap();
    let (inventory, gpus) = common::simulated_inventory().await;
    store
        .record_inventory("sim", &inventory, &gpus, &[])
        .await
        .unwrap();
    store
        .register_image(&common::debian_image_on("sim"))
        .await
        .unwrap();
    let user = store
        .create_user("ada", "not-a-real-hash", false)
        .await
        .unwrap();
    (store, user.id)
}

#[tokio::test]
async fn fifty_concurrent_approvals_never_share_a_gpu() {
    common::on_every_backend(|url| async move {
        let (first, user) = prepared(&url).await;
        // A second pool on the same database stands for a second server process.
        let second = Store::open(&url).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..50 {
            ids.push(
                first
                    .create_request(user, &request("H100 PCIe", 1))
                    .await
                    .unwrap(),
            );
        }
        let mut approvals = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let id = *id;
            approvals.spawn(async move { scheduler::place(&store, id).await });
        }
        let mut placed = Vec::new();
        let mut waiting = 0;
        while let Some(result) = approvals.join_next().await {
            match result.unwrap() {
                Ok(placement) => placed.push(placement),
                Err(PlaceError::NoFit(reason)) => {
                    assert!(reason.contains("H100 PCIe"), "{reason}");
                    waiting += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(placed.len(), 4, "the simulated host has four H100s");
        assert_eq!(waiting, 46);
        let gpus: HashSet<String> = placed.iter().flat_map(|p| p.gpus.clone()).collect();
        assert_eq!(gpus.len(), 4, "every H100 is held once");
        let claims = first.claims().await.unwrap();
        assert_eq!(claims.len(), 4);
        let holders: HashSet<i64> = claims.iter().map(|c| c.2).collect();
        assert_eq!(holders.len(), 4, "by four different requests");

        // Releasing one lets a waiting request in, first come first served is up to the caller.
        let (.., holder) = claims[0].clone();
        first.release(holder).await.unwrap();
        let next = ids
            .iter()
            .find(|id| !holders.contains(id))
            .copied()
            .unwrap();
        let placement = scheduler::place(&second, next).await.unwrap();
        assert_eq!(placement.gpus, vec![claims[0].1.clone()]);
        first.close().await;
        second.close().await;
    })
    .await;
}

#[tokio::test]
async fn whole_iommu_groups_are_claimed_and_numa_nodes_kept_together() {
    common::on_every_backend(|url| async move {
        let (store, user) = prepared(&url).await;
        let ada = store
            .create_request(user, &request("RTX 6000 Ada Generation", 1))
            .await
            .unwrap();
        let placement = scheduler::place(&store, ada).await.unwrap();
        assert_eq!(placement.gpus, vec!["0000:e3:00.0"]);
        let claimed: Vec<String> = store
            .claims()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.2 == ada)
            .map(|c| c.1)
            .collect();
        assert_eq!(
            claimed,
            vec!["0000:e3:00.0", "0000:e3:00.1"],
            "the audio function goes along"
        );

        let pair = store
            .create_request(user, &request("A100 PCIe 80GB", 2))
            .await
            .unwrap();
        let placement = scheduler::place(&store, pair).await.unwrap();
        assert_eq!(placement.numa_node, Some(1));
        assert_eq!(placement.gpus.len(), 2);

        let too_many = store
            .create_request(user, &request("H100 PCIe", 5))
            .await
            .unwrap();
        let err = scheduler::place(&store, too_many).await.unwrap_err();
        assert!(matches!(err, PlaceError::NoFit(_)), "{err}");
        // A request that is placed cannot be placed again.
        assert!(matches!(
            scheduler::place(&store, pair).await,
            Err(PlaceError::NotPlaceable(_))
        ));
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn gpu_pairs_go_behind_one_pcie_switch_and_single_gpus_leave_it_whole() {
    common::on_every_backend(|url| async move {
        let (store, user) = prepared(&url).await;
        // The simulated host's H100s at 3d and 4e sit behind one switch; 17 and 2a do not.
        let gpus = store.gpus().await.unwrap();
        let root = |address: &str| {
            gpus.iter()
                .find(|g| g.address == address)
                .and_then(|g| g.pcie_root.clone())
        };
        assert_eq!(root("0000:3d:00.0"), root("0000:4e:00.0"));
        assert!(root("0000:3d:00.0").is_some());
        assert_ne!(root("0000:17:00.0"), root("0000:3d:00.0"));

        let single = store
            .create_request(user, &request("H100 PCIe", 1))
            .await
            .unwrap();
        let placement = scheduler::place(&store, single).await.unwrap();
        assert!(
            !["0000:3d:00.0", "0000:4e:00.0"].contains(&placement.gpus[0].as_str()),
            "a single GPU does not break up the switch pair: {:?}",
            placement.gpus
        );
        let pair = store
            .create_request(user, &request("H100 PCIe", 2))
            .await
            .unwrap();
        let placement = scheduler::place(&store, pair).await.unwrap();
        let mut placed = placement.gpus.clone();
        placed.sort();
        assert_eq!(placed, vec!["0000:3d:00.0", "0000:4e:00.0"]);
        assert_eq!(placement.numa_node, Some(0));
        store.close().await;
    })
    .await;
}

/// Every claimed function of `request`.
async fn claims_of(store: &Store, request: i64) -> usize {
    store
        .claims()
        .await
        .unwrap()
        .iter()
        .filter(|(_, _, r)| *r == request)
        .count()
}

async fn state_of(store: &Store, request: i64) -> String {
    store.request_needs(request).await.unwrap().unwrap().state
}

#[tokio::test]
async fn a_request_placed_twice_at_once_holds_its_gpus_once() {
    common::on_every_backend(|url| async move {
        let (first, user) = prepared(&url).await;
        let second = Store::open(&url).await.unwrap();
        for round in 0..12 {
            let id = first
                .create_request(user, &request("H100 PCIe", 1))
                .await
                .unwrap();
            let (a, b) = tokio::join!(scheduler::place(&first, id), scheduler::place(&second, id));
            let placed = [&a, &b].iter().filter(|r| r.is_ok()).count();
            assert_eq!(placed, 1, "round {round}: {a:?} / {b:?}");
            for other in [&a, &b] {
                if let Err(e) = other {
                    assert!(matches!(e, PlaceError::NotPlaceable(_)), "{e:?}");
                }
            }
            assert_eq!(claims_of(&first, id).await, 1, "round {round}");
            first.release(id).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn a_request_denied_before_its_claim_is_written_gets_nothing() {
    common::on_every_backend(|url| async move {
        let (store, user) = prepared(&url).await;
        let id = store
            .create_request(user, &request("H100 PCIe", 2))
            .await
            .unwrap();
        // The scheduler read the request as pending and chose GPUs; then an admin denied it.
        let free = store.free_gpus("H100 PCIe").await.unwrap();
        assert!(store.deny(id, "not now").await.unwrap());
        let outcome = store.claim(id, &free[..2]).await.unwrap();
        assert_eq!(outcome, passage_server::store::ClaimOutcome::NotOpen);
        assert_eq!(claims_of(&store, id).await, 0);
        assert_eq!(state_of(&store, id).await, "denied");
        // The scheduler says so rather than placing it.
        let placed = scheduler::place(&store, id).await;
        assert!(
            matches!(placed, Err(PlaceError::NotPlaceable(_))),
            "{placed:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_placed_request_never_flips_back_to_waiting() {
    common::on_every_backend(|url| async move {
        let (store, user) = prepared(&url).await;
        let id = store
            .create_request(user, &request("H100 PCIe", 1))
            .await
            .unwrap();
        scheduler::place(&store, id).await.unwrap();
        // A second placement that found no GPU writes its reason only if the request is open.
        assert!(!store.mark_waiting(id, "waiting for 1 GPU").await.unwrap());
        assert_eq!(state_of(&store, id).await, "placed");
        assert_eq!(claims_of(&store, id).await, 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_filings_stay_within_the_open_request_quota() {
    common::on_every_backend(|url| async move {
        let (first, user) = prepared(&url).await;
        let second = Store::open(&url).await.unwrap();
        let mut filings = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            filings.spawn(async move {
                store
                    .create_request_within(user, &request("H100 PCIe", 1), 3)
                    .await
                    .unwrap()
            });
        }
        let filed = filings
            .join_all()
            .await
            .into_iter()
            .filter(Option::is_some)
            .count();
        assert_eq!(filed, 3, "a quota of 3 open requests");
        assert_eq!(first.usage(user).await.unwrap().1, 3);
    })
    .await;
}

#[tokio::test]
async fn concurrent_approvals_stay_within_the_gpu_quota() {
    common::on_every_backend(|url| async move {
        let (first, user) = prepared(&url).await;
        let second = Store::open(&url).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(
                first
                    .create_request(user, &request("H100 PCIe", 1))
                    .await
                    .unwrap(),
            );
        }
        let mut approvals = tokio::task::JoinSet::new();
        for (i, id) in ids.into_iter().enumerate() {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            approvals.spawn(async move {
                scheduler::place_with(&store, id, &Default::default(), Some(2)).await
            });
        }
        let outcomes = approvals.join_all().await;
        let placed = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(placed, 2, "a quota of 2 GPUs: {outcomes:?}");
        for refused in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert!(matches!(refused, PlaceError::OverQuota(_)), "{refused:?}");
        }
        assert_eq!(first.usage(user).await.unwrap().0, 2);
        assert_eq!(first.claims().await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn one_server_among_several_holds_a_vm_at_a_time() {
    common::on_every_backend(|url| async move {
        let (first, _) = prepared(&url).await;
        let second = Store::open(&url).await.unwrap();
        let ttl = std::time::Duration::from_secs(60);
        for round in 0..20 {
            let name = format!("vm:{round}");
            let (a, b) = tokio::join!(
                first.take_lease(&name, "server-a", ttl),
                second.take_lease(&name, "server-b", ttl)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(a ^ b, "round {round}: exactly one holder ({a}, {b})");
            let winner = if a { "server-a" } else { "server-b" };
            first.drop_lease(&name, winner).await.unwrap();
            assert!(second.take_lease(&name, "server-c", ttl).await.unwrap());
        }
    })
    .await;
}

#[tokio::test]
async fn a_gpu_held_by_a_domain_of_another_installation_is_not_free() {
    common::on_every_backend(|url| async move {
        let (store, _) = prepared(&url).await;
        let before = store.free_gpus("H100 PCIe").await.unwrap();
        let taken = before[0].functions.join(", ");
        assert!(
            store
                .saw_unknown_domain(&passage_server::store::SeenDomain {
                    host: "sim",
                    uuid: "9f1c2b7e-0000-4000-8000-000000000001",
                    name: "passage-vm-7",
                    installation: Some("another"),
                    state: "running",
                    devices: &taken,
                })
                .await
                .unwrap()
        );
        let after = store.free_gpus("H100 PCIe").await.unwrap();
        assert_eq!(after.len(), before.len() - 1);
        assert!(after.iter().all(|g| g.address != before[0].address));
        // Once it is gone from the host, its GPU is free again.
        store.forget_unknown_domains("sim", &[]).await.unwrap();
        assert_eq!(
            store.free_gpus("H100 PCIe").await.unwrap().len(),
            before.len()
        );
    })
    .await;
}
