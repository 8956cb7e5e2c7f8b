//! Server life cycle: health, version, graceful shutdown, concurrency caps, metrics.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use remotemedia::nodes::Registry;
use remotemedia::proto::{self, execute_response};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

fn gate_request() -> proto::ExecuteRequest {
    execute_request(manifest(vec![node("gate", "TestGate", "")], vec![]), vec![("gate", f32_audio(&[0.5], 8_000, 1))])
}

async fn health(s: &TestServer, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(s.channel().await);
    let r = client.check(HealthCheckRequest { service: service.into() }).await?;
    Ok(r.into_inner().status())
}

#[tokio::test]
async fn health_serves_both_names_and_probe_agrees() {
    let s = start(&[]).await;
    assert_eq!(health(&s, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(health(&s, "remotemedia.v1.PipelineService").await.unwrap(), ServingStatus::Serving);
    remotemedia::probe::probe(&s.addr.to_string(), "", Duration::from_secs(2)).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn get_version_lists_every_node_type_and_answers_compatibility() {
    let (s, _gate) = gated_server(&[]).await;
    let mut client = s.client().await;
    for (v, ok) in [("", true), ("v1", true), ("1", true), ("1.4.0", true), ("v2", false)] {
        let r = client.get_version(proto::VersionRequest { client_version: v.into() }).await.unwrap().into_inner();
        assert_eq!(r.compatible, ok, "{v}");
        let info = r.version_info.unwrap();
        assert_eq!(info.protocol_version, "v1");
        assert_eq!(info.supported_protocols, ["v1"]);
        assert_eq!(
            info.supported_node_types,
            [
                "AudioChunkerNode",
                "AudioResampleNode",
                "ChannelMixerNode",
                "FormatConverterNode",
                "GainNode",
                "PassThroughNode",
                "TestGate",
                "VADNode"
            ]
        );
        assert_eq!(info.runtime_version, env!("CARGO_PKG_VERSION"));
        assert!(info.build_timestamp.ends_with('Z') && info.build_timestamp.len() == 20, "{}", info.build_timestamp);
        if !ok {
            assert!(r.compatibility_message.contains("supported versions: v1"));
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_work_finish_reports_not_serving_and_refuses_new_work() {
    let (mut s, gate) = gated_server(&[]).await;
    let mut client = s.client().await;
    let in_flight = tokio::spawn(async move { client.execute_pipeline(gate_request()).await });
    wait_until(|| gate.entered.load(Ordering::SeqCst) == 1, "the request to reach the node").await;

    s.begin_shutdown();
    wait_until(|| s.state.is_draining(), "drain to start").await;
    assert_eq!(health(&s, "").await.unwrap(), ServingStatus::NotServing);
    assert_eq!(health(&s, "remotemedia.v1.PipelineService").await.unwrap(), ServingStatus::NotServing);

    let refused = s.client().await.execute_pipeline(gate_request()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.get_error_details().error_info().unwrap().reason, "INTERNAL");

    gate.open.store(true, Ordering::SeqCst);
    let done = in_flight.await.unwrap().expect("the in-flight request completes").into_inner();
    assert!(matches!(done.outcome, Some(execute_response::Outcome::Result(_))));
    s.stop().await;
}

#[tokio::test]
async fn after_the_grace_period_running_work_is_cancelled() {
    let (mut s, gate) = gated_server(&[("grace_period_ms", "50")]).await;
    let mut client = s.client().await;
    let in_flight = tokio::spawn(async move { client.execute_pipeline(gate_request()).await });
    wait_until(|| gate.entered.load(Ordering::SeqCst) == 1, "the request to reach the node").await;
    s.begin_shutdown();
    let outcome = in_flight.await.unwrap();
    // Cut by the shutdown, not abandoned by its client: UNAVAILABLE, so clients retry elsewhere.
    assert_eq!(outcome.unwrap_err().code(), Code::Unavailable);
    assert_eq!(gate.cancelled.load(Ordering::SeqCst), 1, "the node saw the cancellation");
    s.stop().await;
}

#[tokio::test]
async fn over_the_concurrency_cap_is_resource_exhausted_with_retry_info() {
    let (s, gate) = gated_server(&[("max_concurrent_executions", "1")]).await;
    let mut client = s.client().await;
    let first = tokio::spawn(async move { client.execute_pipeline(gate_request()).await });
    wait_until(|| gate.entered.load(Ordering::SeqCst) == 1, "the first request to run").await;

    let refused = s.client().await.execute_pipeline(gate_request()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let details = refused.get_error_details();
    assert_eq!(details.error_info().unwrap().reason, "RESOURCE_LIMIT");
    assert!(details.retry_info().unwrap().retry_delay.unwrap() > Duration::ZERO);
    assert!(refused.message().contains("max_concurrent_executions"), "{}", refused.message());

    gate.open.store(true, Ordering::SeqCst);
    first.await.unwrap().unwrap();
    let next = s.client().await.execute_pipeline(gate_request()).await.unwrap().into_inner();
    assert!(matches!(next.outcome, Some(execute_response::Outcome::Result(_))), "the next request is served");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_execution_stops_the_work() {
    let (s, gate) = gated_server(&[]).await;
    let mut client = s.client().await;
    let call = tokio::spawn(async move { client.execute_pipeline(gate_request()).await });
    wait_until(|| gate.entered.load(Ordering::SeqCst) == 1, "the request to run").await;
    call.abort();
    wait_until(|| gate.cancelled.load(Ordering::SeqCst) == 1, "the node to be cancelled").await;
    wait_until(|| s.state.inflight.count() == 0, "in-flight count to drop").await;
    s.stop().await;
}

#[tokio::test]
async fn the_metrics_endpoint_counts_requests() {
    let s = start(&[]).await;
    let before = s.metrics_text().await;
    let mut client = s.client().await;
    for _ in 0..3 {
        client.get_version(proto::VersionRequest::default()).await.unwrap();
    }
    let after = s.metrics_text().await;
    let count = |text: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("remotemedia_requests_total{")
                    && l.contains("rpc=\"GetVersion\"")
                    && l.contains("code=\"OK\"")
                    && l.contains("outcome=\"success\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count(&after) >= count(&before) + 3.0, "before {}, after {}", count(&before), count(&after));
    assert!(after.contains("# TYPE remotemedia_request_duration_seconds histogram"), "{after}");
    s.stop().await;
}

#[tokio::test]
async fn a_public_address_without_tokens_is_refused() {
    let config = remotemedia::Config::with(&[("listen", "0.0.0.0:0"), ("metrics_listen", "off")]).unwrap();
    let err = remotemedia::bind(config, Registry::builtin()).await.err().expect("refused");
    assert!(err.to_string().contains("refusing to listen on 0.0.0.0:0 without authentication"), "{err}");
    let config = remotemedia::Config::with(&[
        ("listen", "0.0.0.0:0"),
        ("metrics_listen", "off"),
        ("allow_unauthenticated", "true"),
    ])
    .unwrap();
    assert!(remotemedia::bind(config, Registry::builtin()).await.is_ok());
}
