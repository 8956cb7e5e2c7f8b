//! `ExecutePipeline` end to end against an in-process server.

mod common;

use common::*;
use remotemedia::proto::{self, ErrorType, RuntimeHint};
use serde_json::Value;
use tonic::Code;

async fn execute(s: &TestServer, req: proto::ExecuteRequest) -> proto::ExecuteResponse {
    s.client().await.execute_pipeline(req).await.expect("OK status").into_inner()
}

fn violations(e: &proto::ErrorResponse) -> Vec<(String, String)> {
    let ctx: Value = serde_json::from_str(&e.context).expect("context is JSON");
    ctx["violations"]
        .as_array()
        .expect("violations list")
        .iter()
        .map(|v| (v["field"].as_str().unwrap().to_owned(), v["description"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_gain_pipeline_returns_scaled_audio_and_metrics() {
    let s = start(&[]).await;
    let m = manifest(
        vec![node("in", "PassThroughNode", ""), node("g", "GainNode", r#"{"gain": 0.5}"#)],
        vec![connect("in", "g")],
    );
    let res =
        expect_result(execute(&s, execute_request(m, vec![("in", f32_audio(&[0.5, -1.0, 0.25], 16_000, 1))])).await);
    assert_eq!(f32_samples(&res.audio_outputs["g"]), [0.25, -0.5, 0.125]);
    assert_eq!(res.audio_outputs["g"].sample_rate, 16_000);
    assert_eq!(res.status, proto::ExecutionStatus::Success as i32);
    let metrics = res.metrics.unwrap();
    assert!(metrics.wall_time_ms > 0.0);
    assert_eq!(metrics.memory_used_bytes, 24, "input and output, 12 bytes each");
    let g = &metrics.node_metrics["g"];
    assert_eq!(g.samples_processed, 3);
    assert_eq!(g.memory_bytes, 12);
    let custom: Value = serde_json::from_str(&g.custom_metrics).unwrap();
    assert_eq!(custom["runtime"], "rust");
    assert_eq!(res.node_results.len(), 2);
    assert!(res.node_results.iter().all(|r| r.status == proto::NodeStatus::Success as i32));
    s.stop().await;
}

#[tokio::test]
async fn integer_audio_keeps_its_format() {
    let s = start(&[]).await;
    let m = manifest(vec![node("g", "GainNode", r#"{"gain_db": 0}"#)], vec![]);
    let res = expect_result(execute(&s, execute_request(m, vec![("g", i16_audio(&[-32768, 0, 32767], 8_000))])).await);
    let out = &res.audio_outputs["g"];
    assert_eq!(out.format, proto::AudioFormat::I16 as i32);
    assert_eq!(out.samples.as_ref(), i16_audio(&[-32768, 0, 32767], 8_000).samples.as_ref());
    s.stop().await;
}

#[tokio::test]
async fn a_diamond_delivers_both_branches_to_the_join() {
    let s = start(&[]).await;
    let m = manifest(
        vec![
            node("a", "PassThroughNode", ""),
            node("b", "GainNode", r#"{"gain": 2}"#),
            node("c", "GainNode", r#"{"gain": 3}"#),
            node("d", "PassThroughNode", ""),
        ],
        vec![connect("a", "b"), connect("a", "c"), connect("b", "d"), connect("c", "d")],
    );
    let res = expect_result(execute(&s, execute_request(m, vec![("a", f32_audio(&[0.1], 8_000, 1))])).await);
    let d = f32_samples(&res.audio_outputs["d"]);
    assert!((d[0] - 0.5).abs() < 1e-6, "d = b + c = 2x + 3x: {d:?}");
    assert_eq!(res.audio_outputs.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn output_nodes_and_data_inputs_come_back() {
    let s = start(&[]).await;
    let m = manifest(
        vec![node("a", "GainNode", r#"{"gain": 2}"#), node("b", "PassThroughNode", "")],
        vec![connect("a", "b")],
    );
    let mut req = execute_request(m, vec![("a", f32_audio(&[0.25], 8_000, 1))]);
    req.output_nodes = vec!["a".into()];
    req.data_inputs.insert("b".into(), r#"{"label": "x"}"#.into());
    let res = expect_result(execute(&s, req).await);
    assert_eq!(f32_samples(&res.audio_outputs["a"]), [0.5]);
    assert_eq!(f32_samples(&res.audio_outputs["b"]), [0.5]);
    let data: Value = serde_json::from_str(&res.data_outputs["b"]).unwrap();
    assert_eq!(data, serde_json::json!({"data": {"label": "x"}}));
    s.stop().await;
}

#[tokio::test]
async fn each_validation_rule_names_its_culprit() {
    let s = start(&[]).await;
    let audio = || f32_audio(&[0.0], 8_000, 1);
    let mut wrong_version = manifest(vec![node("a", "GainNode", "")], vec![]);
    wrong_version.version = "v2".into();
    let mut rustpython = node("a", "GainNode", "");
    rustpython.runtime_hint = RuntimeHint::Rustpython as i32;
    let mut wasm = node("a", "GainNode", "");
    wasm.runtime_hint = RuntimeHint::CpythonWasm as i32;
    let cases: Vec<(&str, proto::ExecuteRequest, &str, &str)> = vec![
        (
            "version",
            execute_request(wrong_version, vec![("a", audio())]),
            "version",
            "manifest version must be \"v1\", got \"v2\"",
        ),
        ("empty", execute_request(manifest(vec![], vec![]), vec![]), "nodes", "manifest has no nodes"),
        (
            "duplicate id",
            execute_request(
                manifest(vec![node("a", "GainNode", ""), node("a", "GainNode", "")], vec![]),
                vec![("a", audio())],
            ),
            "nodes[1].id",
            "node id `a` is used by nodes[0] and nodes[1]",
        ),
        (
            "unknown type",
            execute_request(manifest(vec![node("a", "Reverb", "")], vec![]), vec![("a", audio())]),
            "nodes[0].node_type",
            "unknown node type `Reverb`",
        ),
        (
            "params not JSON",
            execute_request(manifest(vec![node("a", "GainNode", "{gain:")], vec![]), vec![("a", audio())]),
            "nodes[0].params",
            "node `a`: params are not valid JSON",
        ),
        (
            "bad param type",
            execute_request(
                manifest(vec![node("a", "GainNode", r#"{"gain_db": "loud"}"#)], vec![]),
                vec![("a", audio())],
            ),
            "nodes[0].params.gain_db",
            "node `a` (GainNode): parameter `gain_db` must be a number between -120 and 60, got \"loud\"",
        ),
        (
            "unknown connection target",
            execute_request(
                manifest(vec![node("a", "GainNode", "")], vec![connect("a", "ghost")]),
                vec![("a", audio())],
            ),
            "connections[0].to",
            "`to` names unknown node `ghost`",
        ),
        (
            "self loop",
            execute_request(manifest(vec![node("a", "GainNode", "")], vec![connect("a", "a")]), vec![("a", audio())]),
            "connections[0]",
            "node `a` is connected to itself",
        ),
        (
            "cycle",
            execute_request(
                manifest(
                    vec![
                        node("s", "PassThroughNode", ""),
                        node("a", "PassThroughNode", ""),
                        node("b", "PassThroughNode", ""),
                    ],
                    vec![connect("s", "a"), connect("a", "b"), connect("b", "a")],
                ),
                vec![("s", audio())],
            ),
            "connections",
            "connections form a cycle: a → b → a",
        ),
        (
            "source without input",
            execute_request(manifest(vec![node("a", "GainNode", "")], vec![]), vec![]),
            "audio_inputs[a]",
            "node `a` is a source (nothing connects into it) but the request has no audio_inputs or data_inputs for it",
        ),
        (
            "input for unknown node",
            execute_request(manifest(vec![node("a", "GainNode", "")], vec![]), vec![("a", audio()), ("zz", audio())]),
            "audio_inputs[zz]",
            "audio_inputs names unknown node `zz`",
        ),
        (
            "rustpython",
            execute_request(manifest(vec![rustpython], vec![]), vec![("a", audio())]),
            "nodes[0].runtime_hint",
            "runtime hint RUNTIME_HINT_RUSTPYTHON is unsupported",
        ),
        (
            "wasm",
            execute_request(manifest(vec![wasm], vec![]), vec![("a", audio())]),
            "nodes[0].runtime_hint",
            "runtime hint RUNTIME_HINT_CPYTHON_WASM is unsupported",
        ),
    ];
    for (name, req, field, text) in cases {
        let e = expect_error(execute(&s, req).await);
        assert_eq!(e.error_type, ErrorType::Validation as i32, "{name}: {e:?}");
        let v = violations(&e);
        assert!(v.iter().any(|(f, d)| f == field && d.contains(text)), "{name}: expected {field}: {text:?} in {v:?}");
        assert!(e.message.contains(text), "{name}: message {:?} should contain {text:?}", e.message);
        if name == "unknown type" {
            // The available types are named once per error, in the message and the context.
            let types = "available node types: AudioChunkerNode, AudioResampleNode, ChannelMixerNode, \
                         FormatConverterNode, GainNode, PassThroughNode, VADNode";
            assert!(e.message.contains(types), "{}", e.message);
            let context: Value = serde_json::from_str(&e.context).unwrap();
            assert_eq!(context["available_node_types"].as_array().map(Vec::len), Some(7), "{context}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn malformed_audio_is_a_validation_error_never_a_truncation() {
    let s = start(&[]).await;
    let m = || manifest(vec![node("a", "GainNode", "")], vec![]);
    let mut short = f32_audio(&[0.0, 0.0], 8_000, 1);
    short.num_samples = 3;
    let mut unspecified = f32_audio(&[0.0], 8_000, 1);
    unspecified.format = 0;
    let cases = [
        (short, "samples holds 8 bytes but num_samples 3"),
        (unspecified, "AUDIO_FORMAT_UNSPECIFIED"),
        (f32_audio(&[0.0], 0, 1), "sample_rate must be > 0"),
        (f32_audio(&[0.0], 8_000, 0), "channels must be between 1 and 256, got 0"),
        (f32_audio(&[0.0, 0.0, 0.0], 8_000, 2), "num_samples 3 is not a multiple of channels 2"),
    ];
    for (buffer, text) in cases {
        let e = expect_error(execute(&s, execute_request(m(), vec![("a", buffer)])).await);
        assert_eq!(e.error_type, ErrorType::Validation as i32);
        assert!(e.message.contains(text) && e.message.contains("audio_inputs[a]"), "{text}: {}", e.message);
    }
    s.stop().await;
}

#[tokio::test]
async fn several_faults_come_back_together() {
    let s = start(&[]).await;
    let mut m = manifest(
        vec![node("a", "Nope", ""), node("a", "GainNode", "[]"), node("c", "GainNode", r#"{"gain": -1}"#)],
        vec![connect("c", "ghost"), connect("c", "c")],
    );
    m.version = "1.0".into();
    let e = expect_error(execute(&s, execute_request(m, vec![("a", f32_audio(&[0.0], 8_000, 1))])).await);
    let fields: Vec<String> = violations(&e).into_iter().map(|(f, _)| f).collect();
    for expected in [
        "version",
        "nodes[0].node_type",
        "nodes[1].id",
        "nodes[1].params",
        "nodes[2].params.gain",
        "connections[0].to",
        "connections[1]",
        "audio_inputs[c]",
    ] {
        assert!(fields.iter().any(|f| f == expected), "missing {expected} in {fields:?}");
    }
    assert!(e.message.starts_with(&format!("invalid pipeline, {} problems:", fields.len())), "{}", e.message);
    s.stop().await;
}

#[tokio::test]
async fn node_failures_come_back_in_band_naming_the_node() {
    let s = start(&[]).await;
    let m = manifest(vec![node("g", "GainNode", "")], vec![]);
    let e = expect_error(execute(&s, execute_request(m, vec![("g", f32_audio(&[0.0, f32::NAN], 8_000, 1))])).await);
    assert_eq!(e.error_type, ErrorType::NodeExecution as i32);
    assert_eq!(e.failing_node_id, "g");
    assert!(e.message.contains("input sample 1 is NaN"), "{}", e.message);
    let ctx: Value = serde_json::from_str(&e.context).unwrap();
    assert_eq!(ctx["node_type"], "GainNode");
    assert_eq!(ctx["retryable"], false);
    s.stop().await;
}

#[tokio::test]
async fn limits_above_the_caps_are_refused_naming_the_cap() {
    let s = start(&[]).await;
    let m = manifest(vec![node("g", "GainNode", "")], vec![]);
    let mut req = execute_request(m.clone(), vec![("g", f32_audio(&[0.0], 8_000, 1))]);
    req.resource_limits = Some(proto::ResourceLimits { max_timeout_ms: 31_000, ..Default::default() });
    let e = expect_error(execute(&s, req).await);
    assert_eq!(e.error_type, ErrorType::ResourceLimit as i32);
    assert!(e.message.contains("server cap of 30000 ms (max_timeout_ms)"), "{}", e.message);

    let mut req = execute_request(m, vec![("g", f32_audio(&[0.0; 10], 8_000, 1))]);
    req.resource_limits = Some(proto::ResourceLimits { max_audio_samples: 5, ..Default::default() });
    let e = expect_error(execute(&s, req).await);
    assert_eq!(e.error_type, ErrorType::ResourceLimit as i32);
    assert!(e.message.contains("audio_inputs[g] has 10 samples, over the limit of 5"), "{}", e.message);
    s.stop().await;
}

#[tokio::test]
async fn an_unsupported_client_version_is_refused_with_the_supported_list() {
    let s = start(&[]).await;
    let mut req =
        execute_request(manifest(vec![node("g", "GainNode", "")], vec![]), vec![("g", f32_audio(&[0.0], 8_000, 1))]);
    req.client_version = "v2".into();
    let status = s.client().await.execute_pipeline(req).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("supported versions: v1"), "{}", status.message());
    s.stop().await;
}

#[tokio::test]
async fn gzip_requests_and_responses_work() {
    let s = start(&[]).await;
    let mut client = s
        .client()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let m = manifest(vec![node("g", "GainNode", r#"{"gain": 2}"#)], vec![]);
    let res =
        client.execute_pipeline(execute_request(m, vec![("g", f32_audio(&[0.125; 1000], 8_000, 1))])).await.unwrap();
    assert_eq!(res.metadata().get("grpc-encoding").unwrap(), "gzip", "a gzip request gets a gzip response");
    assert_eq!(f32_samples(&expect_result(res.into_inner()).audio_outputs["g"]), vec![0.25; 1000]);
    s.stop().await;
}

/// The encoding of the response to a plain request from a client that accepts gzip.
async fn response_encoding(policy: Option<&str>) -> Option<String> {
    let overrides: Vec<(&str, &str)> = policy.map(|p| ("response_compression", p)).into_iter().collect();
    let s = start(&overrides).await;
    let mut client = s.client().await.accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let m = manifest(vec![node("g", "GainNode", "")], vec![]);
    let res = client.execute_pipeline(execute_request(m, vec![("g", f32_audio(&[0.5; 100], 8_000, 1))])).await.unwrap();
    let encoding = res.metadata().get("grpc-encoding").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(f32_samples(&expect_result(res.into_inner()).audio_outputs["g"]), vec![0.5; 100]);
    s.stop().await;
    encoding
}

#[tokio::test]
async fn responses_are_compressed_only_as_the_policy_says() {
    assert_eq!(response_encoding(None).await, None, "default `mirror`: a plain request gets a plain response");
    assert_eq!(response_encoding(Some("off")).await, None);
    assert_eq!(response_encoding(Some("accepted")).await.as_deref(), Some("gzip"));
}

#[tokio::test]
async fn a_request_id_is_echoed_or_generated() {
    let s = start(&[]).await;
    let mut client = s.client().await;
    let mut req = tonic::Request::new(proto::VersionRequest::default());
    req.metadata_mut().insert("x-request-id", "abc-123".parse().unwrap());
    let resp = client.get_version(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "abc-123");
    let resp = client.get_version(proto::VersionRequest::default()).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap().len(), 32);
    s.stop().await;
}
