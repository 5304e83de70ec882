//! Watch semantics: resumption, bookmarks, streaming lists, `410 Expired`, and
//! kube-runtime's watcher recovering from them.

mod sim_support;

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use kubernaut_testkit::sim::Simulator;
use serde_json::json;
use sim_support::{WAIT, client_for, start};

fn config_map(name: &str, tier: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"tier": tier}}, "data": {"k": "v"}}),
    )
    .expect("configmap")
}

async fn next<S, T>(stream: &mut S) -> T
where
    S: futures_util::Stream<Item = T> + Unpin,
{
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event before the timeout")
        .expect("the stream to continue")
}

fn describe(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
        WatchEvent::Bookmark(_) => "BOOKMARK".to_owned(),
        WatchEvent::Error(s) => format!("ERROR {} {}", s.code, s.reason),
    }
}

#[tokio::test]
async fn a_watch_resumes_from_a_resource_version_in_order() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .expect("create a");
    let rv = a.resource_version().expect("rv");
    cms.create(&PostParams::default(), &config_map("b", "web"))
        .await
        .expect("create b");
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .expect("modify a");
    cms.delete("b", &Default::default())
        .await
        .expect("delete b");

    let mut stream = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut stream).await.expect("event")));
    }
    assert_eq!(seen, ["ADDED b", "MODIFIED a", "DELETED b"]);
}

#[tokio::test]
async fn a_too_old_resource_version_gets_an_expired_error_event() {
    let sim = Simulator::builder()
        .time_scale(50.0)
        .watch_history(5)
        .start()
        .await
        .expect("sim");
    let client = client_for(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = cms
        .create(&PostParams::default(), &config_map("first", "web"))
        .await
        .expect("create");
    let old_rv = first.resource_version().expect("rv");
    for i in 0..10 {
        cms.create(
            &PostParams::default(),
            &config_map(&format!("cm-{i}"), "web"),
        )
        .await
        .expect("create");
    }
    let mut stream = cms
        .watch(&WatchParams::default(), &old_rv)
        .await
        .expect("HTTP 200 on the watch")
        .boxed();
    match next(&mut stream).await.expect("decodes") {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected an ERROR event, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn label_selected_watches_see_objects_leave_and_enter() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .expect("create");
    let mut stream = cms
        .watch(
            &WatchParams::default().labels("tier=web").timeout(10),
            &a.resource_version().expect("rv"),
        )
        .await
        .expect("watch")
        .boxed();
    cms.create(&PostParams::default(), &config_map("db", "db"))
        .await
        .expect("create db");
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "db"}}})),
    )
    .await
    .expect("relabel");
    cms.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}})),
    )
    .await
    .expect("relabel");
    let first = describe(&next(&mut stream).await.expect("event"));
    let second = describe(&next(&mut stream).await.expect("event"));
    assert_eq!([first, second], ["DELETED a", "ADDED db"]);
}

#[tokio::test]
async fn watches_send_bookmarks_and_end_at_their_timeout() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", "web"))
        .await
        .expect("create");
    let rv: u64 = a.resource_version().expect("rv").parse().expect("numeric");
    let mut stream = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default().timeout(3)
            },
            &rv.to_string(),
        )
        .await
        .expect("watch")
        .boxed();
    match next(&mut stream).await.expect("event") {
        WatchEvent::Bookmark(b) => {
            let brv: u64 = b.metadata.resource_version.parse().expect("numeric");
            assert!(brv >= rv);
        }
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
    let ended = tokio::time::timeout(WAIT, async { while stream.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the watch ends after timeoutSeconds");
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let (_sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for name in ["a", "b"] {
        cms.create(&PostParams::default(), &config_map(name, "web"))
            .await
            .expect("create");
    }
    let mut events = watcher(cms.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match next(&mut events).await.expect("no error") {
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["a", "b"]);
    cms.create(&PostParams::default(), &config_map("c", "web"))
        .await
        .expect("create");
    loop {
        if let watcher::Event::Apply(o) = next(&mut events).await.expect("no error") {
            assert_eq!(o.name_any(), "c");
            break;
        }
    }
}

#[tokio::test]
async fn kube_runtime_watcher_relists_after_410_gone() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    cms.create(&PostParams::default(), &config_map("a", "web"))
        .await
        .expect("create");
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    loop {
        if matches!(
            next(&mut events).await.expect("no error"),
            watcher::Event::InitDone
        ) {
            break;
        }
    }
    sim.faults().force_gone();
    cms.create(&PostParams::default(), &config_map("b", "web"))
        .await
        .expect("create");

    let mut saw_gone = false;
    let mut relisted = Vec::new();
    loop {
        match next(&mut events).await {
            Err(watcher::Error::WatchError(status)) => {
                assert_eq!(status.code, 410);
                saw_gone = true;
            }
            Err(other) => panic!("unexpected watcher error {other:?}"),
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(o)) => relisted.push(o.name_any()),
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
        }
    }
    assert!(saw_gone, "the watcher saw the 410 Expired ERROR event");
    assert_eq!(relisted, ["a", "b"], "and relisted everything");
}

#[tokio::test]
async fn dropped_watch_streams_are_resumed_without_losing_events() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut events = watcher(cms.clone(), watcher::Config::default()).boxed();
    loop {
        if matches!(
            next(&mut events).await.expect("no error"),
            watcher::Event::InitDone
        ) {
            break;
        }
    }
    sim.faults().drop_watches();
    tokio::time::sleep(Duration::from_millis(50)).await;
    cms.create(&PostParams::default(), &config_map("after-drop", "web"))
        .await
        .expect("create");
    let name = loop {
        match next(&mut events).await.expect("no error") {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => break o.name_any(),
            _ => {}
        }
    };
    assert_eq!(name, "after-drop");
}
