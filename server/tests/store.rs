//! The store on both of its databases: SQLite always, PostgreSQL when `PASSAGE_TEST_POSTGRES_URL`
//! names a server where the test may create databases (the CI script starts one).

mod common;

use std::time::Duration;

use passage_app::inventory::{GpuState, HostState};
use passage_server::store::{Backend, Store};

#[tokio::test]
async fn inventories_are_recorded_listed_and_aged() {
    common::on_every_backend(|url| async move {
        let store = Store::open(&url).await.unwrap();
        assert_eq!(
            store.backend(),
            if url.starts_with("sqlite") {
                Backend::Sqlite
            } else {
                Backend::Postgres
            }
        );
        store
            .sync_hosts(&[
                ("a".into(), "simulated".into()),
                ("b".into(), "qemu:///system".into()),
            ])
            .await
            .unwrap();
        let hosts = store.hosts().await.unwrap();
        assert!(
            hosts
                .iter()
                .all(|h| h.state == HostState::Pending && h.gpu_count == 0)
        );

        let (inventory, gpus) = common::simulated_inventory().await;
        store
            .record_inventory("a", &inventory, &gpus, &[])
            .await
            .unwrap();
        store
            .record_failure("b", "cannot connect: refused")
            .await
            .unwrap();
        let hosts = store.hosts().await.unwrap();
        assert_eq!(
            (hosts[0].state, hosts[0].gpu_count),
            (HostState::Reachable, 8)
        );
        assert_eq!(hosts[1].state, HostState::Unreachable);
        assert_eq!(hosts[1].error.as_deref(), Some("cannot connect: refused"));

        let listed = store.gpus().await.unwrap();
        assert_eq!(listed.len(), 8);
        let ada = listed.iter().find(|g| g.address == "0000:e3:00.0").unwrap();
        let members: Vec<(&str, &str, bool)> = ada
            .iommu_group
            .as_ref()
            .unwrap()
            .members
            .iter()
            .map(|m| (m.address.as_str(), m.class.as_str(), m.same_device))
            .collect();
        assert_eq!(
            members,
            vec![
                ("0000:e3:00.0", "VGA controller", true),
                ("0000:e3:00.1", "Audio device", true)
            ]
        );
        assert_eq!(
            ada.link.as_ref().unwrap().current.as_deref(),
            Some("PCIe Gen4 x16")
        );

        // Recording the same inventory again changes nothing but the times.
        store
            .record_inventory("a", &inventory, &gpus, &[])
            .await
            .unwrap();
        assert_eq!(store.gpus().await.unwrap().len(), 8);

        // A GPU that disappears is kept as missing; the others stay available. Inventory times
        // are milliseconds: the next inventory must come in a later one.
        let recorded = passage_server::store::now_ms();
        common::wait_for(
            "the clock to pass a millisecond",
            Duration::from_secs(1),
            || async {
                let now = passage_server::store::now_ms();
                if now > recorded {
                    Ok(())
                } else {
                    Err(format!("{now}"))
                }
            },
        )
        .await;
        store
            .record_inventory("a", &inventory, &gpus[1..], &[])
            .await
            .unwrap();
        let listed = store.gpus().await.unwrap();
        let states: Vec<GpuState> = listed.iter().map(|g| g.state).collect();
        assert_eq!(states[0], GpuState::Missing);
        assert!(states[1..].iter().all(|s| *s == GpuState::Available));
        assert_eq!(store.hosts().await.unwrap()[0].gpu_count, 7);

        // The host fails: its GPUs keep their record and say so.
        store.record_failure("a", "gone").await.unwrap();
        assert!(
            store.gpus().await.unwrap()[1..]
                .iter()
                .all(|g| g.state == GpuState::HostUnreachable)
        );

        // A host that leaves the configuration is no longer listed, and comes back with its data.
        store
            .sync_hosts(&[("b".into(), "qemu:///system".into())])
            .await
            .unwrap();
        assert_eq!(store.hosts().await.unwrap().len(), 1);
        assert!(store.gpus().await.unwrap().is_empty());
        store
            .sync_hosts(&[
                ("a".into(), "simulated".into()),
                ("b".into(), "qemu:///system".into()),
            ])
            .await
            .unwrap();
        assert_eq!(store.gpus().await.unwrap().len(), 8);
        store.close().await;

        // Opening again applies no migration twice and finds everything.
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.gpus().await.unwrap().len(), 8);
        store.close().await;
    })
    .await;
}

/// Two servers on one database: what one changes, the other sees on its next request, although
/// each answers the GPU list and who a token is from memory while nothing changed.
#[tokio::test]
async fn another_servers_changes_are_seen_at_once() {
    common::on_every_backend(|url| async move {
        let here = Store::open(&url).await.unwrap();
        let there = Store::open(&url).await.unwrap();

        let ada = here.create_user("ada", "x", true).await.unwrap();
        let token = here
            .create_token(ada.id, "script", "token-hash", None)
            .await
            .unwrap();
        here.create_session(
            "session-hash",
            ada.id,
            passage_server::store::now_ms() + 60_000,
        )
        .await
        .unwrap();
        for _ in 0..3 {
            assert_eq!(
                here.token_user("token-hash").await.unwrap().unwrap().id,
                ada.id
            );
            assert_eq!(
                here.session_user("session-hash").await.unwrap().unwrap().id,
                ada.id
            );
        }
        assert!(here.token_user("no-such-hash").await.unwrap().is_none());

        // Revoked there: refused here on the very next lookup.
        assert!(there.revoke_token(ada.id, token.id).await.unwrap());
        assert!(here.token_user("token-hash").await.unwrap().is_none());
        // Demoted there: the session here carries the new role at once.
        there.create_user("grace", "x", true).await.unwrap();
        assert_eq!(
            there.set_admin("ada", false).await.unwrap(),
            passage_server::store::AccountChange::Done
        );
        assert!(
            !here
                .session_user("session-hash")
                .await
                .unwrap()
                .unwrap()
                .is_admin
        );
        there.delete_session("session-hash").await.unwrap();
        assert!(here.session_user("session-hash").await.unwrap().is_none());

        // The inventory: recorded there, listed here; each change there shows here.
        there
            .sync_hosts(&[("a".into(), "simulated".into())])
            .await
            .unwrap();
        assert!(here.gpus().await.unwrap().is_empty());
        let (inventory, gpus) = common::simulated_inventory().await;
        there
            .record_inventory("a", &inventory, &gpus, &[])
            .await
            .unwrap();
        assert_eq!(here.gpus().await.unwrap().len(), 8);
        assert_eq!(here.hosts().await.unwrap()[0].gpu_count, 8);
        if here.backend() == Backend::Sqlite {
            // Nothing changed: the same list, not a new read.
            let listed = here.gpus().await.unwrap();
            assert!(std::sync::Arc::ptr_eq(&listed, &here.gpus().await.unwrap()));
        }
        // Free GPUs for placement: a claim there, and a domain there that this installation did
        // not make, take GPUs out of the list here at once.
        let free = here.free_gpus("H100 PCIe").await.unwrap();
        assert_eq!(free.len(), 4);
        if here.backend() == Backend::Sqlite {
            let again = here.free_gpus("H100 PCIe").await.unwrap();
            assert!(
                std::sync::Arc::ptr_eq(&free, &again),
                "kept while nothing changed"
            );
        }
        let request = there
            .create_request(ada.id, &common::h100_form(1))
            .await
            .unwrap();
        there.claim(request, &free[..1]).await.unwrap();
        let left = here.free_gpus("H100 PCIe").await.unwrap();
        assert_eq!(left.len(), 3);
        assert!(left.iter().all(|g| g.address != free[0].address));
        let seen = passage_server::store::SeenDomain {
            host: "a",
            uuid: "5f0c2e1a-0000-4000-8000-000000000001",
            name: "someone-elses",
            installation: None,
            state: "running",
            devices: &free[1].functions.join(", "),
        };
        assert!(there.saw_unknown_domain(&seen).await.unwrap());
        let left = here.free_gpus("H100 PCIe").await.unwrap();
        assert_eq!(left.len(), 2, "the domain's GPU is not free: {left:?}");
        // Seen again, holding the same: the list stays as it was.
        there.saw_unknown_domain(&seen).await.unwrap();
        if here.backend() == Backend::Sqlite {
            assert!(std::sync::Arc::ptr_eq(
                &left,
                &here.free_gpus("H100 PCIe").await.unwrap()
            ));
        }

        there.record_failure("a", "gone").await.unwrap();
        let listed = here.gpus().await.unwrap();
        let (claimed, rest): (Vec<_>, Vec<_>) =
            listed.iter().partition(|g| g.state == GpuState::Claimed);
        assert_eq!(claimed.len(), 1, "a claim outlives its host's reachability");
        assert!(rest.iter().all(|g| g.state == GpuState::HostUnreachable));
        assert_eq!(here.hosts().await.unwrap()[0].state, HostState::Unreachable);
        here.close().await;
        there.close().await;
    })
    .await;
}
