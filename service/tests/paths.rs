//! Paths that are not exactly one of the pipeline service's methods: refused, and counted and
//! logged as `other`, never as the method their last segment names. In a file of its own: the
//! metrics are process-wide, and other test files count GetVersion's refusals exactly.

mod common;

use common::*;

#[tokio::test]
async fn a_path_ending_in_a_method_name_is_not_that_method() {
    let s = start(&[]).await;
    let text = s.metrics_text().await;
    let (version, other) = (counter(&text, "GetVersion", "UNIMPLEMENTED"), counter(&text, "other", "UNIMPLEMENTED"));
    let paths = [
        "/remotemedia.v1.PipelineService/x/GetVersion",
        "/remotemedia.v1.PipelineService//GetVersion",
        "/remotemedia.v1.PipelineService/GetVersion/",
    ];
    for path in paths {
        let a = raw(s.addr, path, &[("content-type", "application/grpc")], frame(&[], 0, 0)).await;
        assert_eq!(a.grpc_status, Some(tonic::Code::Unimplemented as i32), "{path}: {a:?}");
    }
    let text = s.metrics_text().await;
    assert_eq!(counter(&text, "GetVersion", "UNIMPLEMENTED"), version, "not counted as GetVersion");
    assert_eq!(counter(&text, "other", "UNIMPLEMENTED"), other + paths.len() as f64, "counted as other, once each");
    s.stop().await;
}
