//! Fault injection: errors at a rate, throttling with Retry-After, delays, and a
//! kube-runtime watcher that still converges through them.

mod sim_support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use sim_support::{WAIT, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("configmap")
}

async fn client_without_retries(sim: &kubernaut_testkit::sim::Simulator) -> kube::Client {
    let kubeconfig = Kubeconfig::from_yaml(sim.kubeconfig_yaml()).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

async fn raw_get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn injected_errors_reach_the_client_as_status_objects() {
    let (sim, _) = start().await;
    let client = client_without_retries(&sim).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    sim.faults().fail_next(1, 500);
    match cms.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            (status.code, status.reason.as_str()),
            (500, "InternalError")
        ),
        other => panic!("expected an injected 500, got {other:?}"),
    }
    assert!(
        cms.list(&Default::default()).await.is_ok(),
        "only the next request fails"
    );

    sim.faults().set_error_rate(1.0, 503);
    match cms.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 503),
        other => panic!("expected an injected 503, got {other:?}"),
    }
    sim.faults().clear();
    assert!(cms.list(&Default::default()).await.is_ok());
}

#[tokio::test]
async fn throttled_responses_carry_retry_after_and_kube_retries_them() {
    let (sim, client) = start().await;
    sim.faults().fail_next(1, 429);
    let raw = raw_get(sim.url(), "/api/v1/namespaces/default/configmaps").await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 0"), "{raw}");
    assert!(raw.contains("\"reason\":\"TooManyRequests\""), "{raw}");

    sim.faults().set_throttle_rate(1.0, 1);
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let create = tokio::spawn({
        let cms = cms.clone();
        async move {
            cms.create(&PostParams::default(), &config_map("throttled"))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.faults().clear();
    let created = tokio::time::timeout(WAIT, create)
        .await
        .expect("finishes")
        .expect("joins");
    assert!(
        created.is_ok(),
        "the client retried after Retry-After: {created:?}"
    );
}

#[tokio::test]
async fn delays_slow_every_response_down() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    sim.faults().set_delay(Duration::from_millis(300));
    let started = std::time::Instant::now();
    cms.list(&Default::default()).await.expect("list");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_watcher_converges_through_errors_dropped_streams_and_gone() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut objects = watcher(cms.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    sim.faults().set_error_rate(0.3, 503);
    let mut wanted = BTreeSet::new();
    for i in 0..10 {
        let name = format!("cm-{i}");
        cms.create(&PostParams::default(), &config_map(&name))
            .await
            .expect("create is retried by kube");
        wanted.insert(name);
        if i == 3 {
            sim.faults().drop_watches();
        }
        if i == 6 {
            sim.faults().force_gone();
        }
    }
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen != wanted {
        match tokio::time::timeout_at(deadline, objects.next())
            .await
            .expect("converges in time")
        {
            Some(Ok(cm)) => {
                seen.insert(cm.name_any());
            }
            Some(Err(_)) => {}
            None => panic!("the watcher stream ended"),
        }
    }
    sim.faults().clear();
}
