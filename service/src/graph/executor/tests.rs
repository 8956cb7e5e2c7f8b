//! Executor tests with test-only node types (never registered by the server).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::graph::{Backoff, Edge, PipelineConfig};
use crate::nodes::{
    AsyncNode, AsyncOutput, INPUT, Node, NodeErrorKind, NodeFactory, NodeSpec, OUTPUT, ParamSpec, Params, PortSpec,
};

fn audio(samples: Vec<f32>) -> Ports {
    Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(samples, 8_000, 1)))
}

fn inputs(pairs: &[(&str, Ports)]) -> BTreeMap<String, Ports> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn shape(fed: &[&str]) -> RequestShape {
    RequestShape { audio_inputs: Some(fed.iter().map(|s| s.to_string()).collect()), ..Default::default() }
}

fn out_audio(out: &RunOutput, id: &str) -> Vec<f32> {
    let node = out.outputs.iter().find(|o| *o.node_id == *id).unwrap_or_else(|| panic!("no output for {id}"));
    node.ports.audio(OUTPUT).unwrap().as_f32().into_owned()
}

/// A factory from a closure, for test-only node types.
struct TestFactory<F> {
    name: &'static str,
    inputs: &'static [&'static str],
    make: F,
}

impl<F> NodeFactory for TestFactory<F>
where
    F: Fn() -> Box<dyn Node> + Send + Sync + 'static,
{
    fn spec(&self) -> NodeSpec {
        let spec = NodeSpec::new(self.name, "a test node").output(PortSpec::audio(OUTPUT, "audio"));
        self.inputs.iter().fold(spec, |s, port| s.input(PortSpec::audio(port, "audio")))
    }
    fn create(&self, _params: &Params) -> Box<dyn Node> {
        (self.make)()
    }
}

fn register<F>(r: &mut Registry, name: &'static str, make: F)
where
    F: Fn() -> Box<dyn Node> + Send + Sync + 'static,
{
    r.register(TestFactory { name, inputs: &[INPUT], make });
}

/// A node built from a closure over its inputs.
struct FnNode<F>(F);

impl<F> Node for FnNode<F>
where
    F: FnMut(Ports, &NodeContext) -> Result<Ports, NodeError> + Send + 'static,
{
    fn process(&mut self, inputs: Ports, ctx: &NodeContext) -> Result<Ports, NodeError> {
        (self.0)(inputs, ctx)
    }
}

fn gain(g: f64) -> String {
    json!({ "gain": g }).to_string()
}

#[tokio::test]
async fn a_diamond_mixes_both_branches_at_the_join() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("diamond")
        .node("a", "PassThroughNode", "")
        .node("b", "GainNode", &gain(2.0))
        .node("c", "GainNode", &gain(3.0))
        .node("d", "PassThroughNode", "")
        .connect("a", "b")
        .connect("a", "c")
        .connect("b", "d")
        .connect("c", "d");
    let mut p = engine.build(&m, &shape(&["a"])).await.unwrap();
    let out = p
        .run(inputs(&[("a", audio(vec![0.1, -0.1]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    let d = out_audio(&out, "d");
    assert!((d[0] - 0.5).abs() < 1e-6 && (d[1] + 0.5).abs() < 1e-6, "{d:?}");
    assert_eq!(out.outputs.len(), 1, "only the sink is returned");
    let order: Vec<&str> = out.nodes.iter().map(|r| &*r.node_id).collect();
    assert_eq!(order[0], "a");
    assert_eq!(order[3], "d");
}

#[tokio::test]
async fn fan_in_by_port_keeps_the_ports_apart() {
    let engine = engine_with(|r| {
        r.register(TestFactory {
            name: "Concat",
            inputs: &["left", "right"],
            make: || -> Box<dyn Node> {
                Box::new(FnNode(|inp: Ports, _: &NodeContext| {
                    let joined = inp.audio("left")?.concat(inp.audio("right")?)?;
                    Ok(Ports::audio_output(joined))
                }))
            },
        })
    });
    let m = Manifest::new("fan-in")
        .node("src", "PassThroughNode", "")
        .node("loud", "GainNode", &gain(2.0))
        .node("cat", "Concat", "")
        .edge(Edge::new("src", "cat").ports("output", "left"))
        .edge(Edge::new("loud", "cat").ports("output", "right"))
        .connect("src", "loud");
    let mut p = engine.build(&m, &shape(&["src"])).await.unwrap();
    let out = p
        .run(inputs(&[("src", audio(vec![0.25]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out_audio(&out, "cat"), [0.25, 0.5]);
}

#[tokio::test]
async fn fan_out_shares_the_buffer_with_every_consumer() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("fan-out")
        .node("a", "PassThroughNode", "")
        .node("b", "PassThroughNode", "")
        .node("c", "PassThroughNode", "")
        .connect("a", "b")
        .connect("a", "c");
    let input = audio(vec![0.5; 64]);
    let ptr = input.audio(INPUT).unwrap().bytes().as_ptr();
    let mut p = engine.build(&m, &shape(&["a"])).await.unwrap();
    let out =
        p.run(inputs(&[("a", input)]), Mode::Once, RunLimits::default(), &CancellationToken::new()).await.unwrap();
    for id in ["b", "c"] {
        let o = out.outputs.iter().find(|o| *o.node_id == *id).unwrap();
        assert_eq!(o.ports.audio(OUTPUT).unwrap().bytes().as_ptr(), ptr, "{id} got a copy");
    }
    assert_eq!(out.peak_memory_bytes, 256, "one shared buffer is counted once");
}

/// Two heavy nodes that each wait for the other to start: they can only both finish if the
/// executor runs them at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_run_concurrently_on_the_blocking_pool() {
    let (tx_a, rx_a) = mpsc::channel::<()>();
    let (tx_b, rx_b) = mpsc::channel::<()>();
    let ends = Arc::new(Mutex::new(vec![(tx_a, rx_b), (tx_b, rx_a)]));
    let engine = engine_with(move |r| {
        let ends = ends.clone();
        r.register(TestFactory {
            name: "Rendezvous",
            inputs: &[INPUT],
            make: move || -> Box<dyn Node> {
                let (tx, rx) = ends.lock().unwrap().pop().expect("two instances");
                Box::new(Rendezvous { tx, rx })
            },
        })
    });
    struct Rendezvous {
        tx: mpsc::Sender<()>,
        rx: mpsc::Receiver<()>,
    }
    impl Node for Rendezvous {
        fn process(&mut self, inputs: Ports, ctx: &NodeContext) -> Result<Ports, NodeError> {
            self.tx.send(()).unwrap();
            self.rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| NodeError::internal(format!("{} ran alone", ctx.node_id)))?;
            Ok(Ports::audio_output(inputs.audio(INPUT)?.clone()))
        }
        fn is_heavy(&self, _: &Ports) -> bool {
            true
        }
    }
    let m = Manifest::new("branches")
        .node("src", "PassThroughNode", "")
        .node("x", "Rendezvous", "")
        .node("y", "Rendezvous", "")
        .connect("src", "x")
        .connect("src", "y");
    let mut p = engine.build(&m, &shape(&["src"])).await.unwrap();
    let out = p
        .run(inputs(&[("src", audio(vec![1.0]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.outputs.len(), 2);
}

struct Sleeper;

#[async_trait]
impl AsyncNode for Sleeper {
    async fn process(&self, inputs: Ports, _ctx: &NodeContext) -> Result<AsyncOutput, NodeError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(AsyncOutput { outputs: Ports::audio_output(inputs.audio(INPUT)?.clone()), ..Default::default() })
    }
    async fn flush(&self, _ctx: &NodeContext) -> Result<AsyncOutput, NodeError> {
        Ok(AsyncOutput::default())
    }
}

struct SleeperRuntime;

#[async_trait]
impl crate::nodes::ForeignNodes for SleeperRuntime {
    fn declarations(&self) -> Vec<NodeSpec> {
        vec![
            NodeSpec::new("Sleeper", "sleeps")
                .input(PortSpec::audio(INPUT, "audio"))
                .output(PortSpec::audio(OUTPUT, "audio")),
        ]
    }
    async fn create(&self, _t: &str, _id: &str, _p: &Params) -> Result<Arc<dyn AsyncNode>, Vec<ParamError>> {
        Ok(Arc::new(Sleeper))
    }
}

#[tokio::test(start_paused = true)]
async fn two_slow_async_branches_take_the_time_of_one() {
    let engine = engine_with(|r| r.attach_foreign(Arc::new(SleeperRuntime)).expect("no twin to disagree"));
    let m = Manifest::new("slow")
        .node("src", "PassThroughNode", "")
        .node("x", "Sleeper", "")
        .node("y", "Sleeper", "")
        .node("z", "Sleeper", "")
        .connect("src", "x")
        .connect("src", "y")
        .connect("x", "z");
    let mut p = engine.build(&m, &shape(&["src"])).await.unwrap();
    let start = tokio::time::Instant::now();
    let out = p
        .run(inputs(&[("src", audio(vec![1.0]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    // x and y overlap (1 s), then z (1 s): 2 s of virtual time, not 3.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(out.outputs.len(), 2);
    let x = out.nodes.iter().find(|r| &*r.node_id == "x").unwrap();
    assert_eq!(x.runtime, crate::nodes::Runtime::Python);
}

/// Fails with `kind` for the first `fail` calls, then passes audio through. Counts calls.
/// A node that runs until its call is cancelled.
fn spin() -> Box<dyn Node> {
    Box::new(FnNode(|_: Ports, ctx: &NodeContext| {
        loop {
            ctx.check_cancelled()?;
            std::thread::yield_now();
        }
    }))
}

fn flaky(calls: Arc<AtomicU32>, fail: u32, kind: NodeErrorKind) -> impl Fn() -> Box<dyn Node> + Send + Sync {
    move || {
        let calls = calls.clone();
        Box::new(FnNode(move |inp: Ports, _: &NodeContext| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= fail {
                return Err(NodeError::new(kind, format!("failure {n}")));
            }
            Ok(Ports::audio_output(inp.audio(INPUT)?.clone()))
        }))
    }
}

async fn run_flaky(engine: &Engine, config: PipelineConfig) -> Result<RunOutput, ExecError> {
    let mut m = Manifest::new("flaky").node("f", "Flaky", "");
    m.config = config;
    let mut p = engine.build(&m, &shape(&["f"])).await.unwrap();
    p.run(inputs(&[("f", audio(vec![0.5]))]), Mode::Once, RunLimits::default(), &CancellationToken::new()).await
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_after_100_200_400_ms() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Flaky", flaky(calls.clone(), 3, NodeErrorKind::Transient)));
    let start = tokio::time::Instant::now();
    let out = run_flaky(&engine, PipelineConfig::default()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(out.nodes[0].attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_three() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Flaky", flaky(calls.clone(), 100, NodeErrorKind::Transient)));
    let start = tokio::time::Instant::now();
    let err = run_flaky(&engine, PipelineConfig::default()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    assert!(matches!(&err, ExecError::Node { attempts: 4, node_id, .. } if node_id == "f"), "{err:?}");
    assert!(err.to_string().contains("failed after 4 attempts: failure 4"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_fail_at_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Flaky", flaky(calls.clone(), 100, NodeErrorKind::InvalidInput)));
    let start = tokio::time::Instant::now();
    let err = run_flaky(&engine, PipelineConfig::default()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(err, ExecError::Node { attempts: 1, .. }));
}

#[tokio::test(start_paused = true)]
async fn the_retry_policy_comes_from_the_pipeline_config() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Flaky", flaky(calls.clone(), 100, NodeErrorKind::Transient)));
    let config = PipelineConfig {
        retry: RetryPolicy { max_retries: 1, backoff: Backoff::Fixed(Duration::from_millis(50)) },
        ..PipelineConfig::default()
    };
    let start = tokio::time::Instant::now();
    run_flaky(&engine, config).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_five_failures_skips_the_node_and_half_opens() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Flaky", flaky(calls.clone(), 5, NodeErrorKind::Internal)));
    for n in 1..=5 {
        let err = run_flaky(&engine, PipelineConfig::default()).await.unwrap_err();
        assert!(matches!(err, ExecError::Node { .. }), "run {n}: {err:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5, "internal errors are not retried");

    let err = run_flaky(&engine, PipelineConfig::default()).await.unwrap_err();
    assert!(
        matches!(&err, ExecError::CircuitOpen { failures: 5, retry_after, node_id, .. } if node_id == "f" && *retry_after == Duration::from_secs(30)),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5, "an open breaker skips the node");

    tokio::time::advance(Duration::from_secs(30)).await;
    let out = run_flaky(&engine, PipelineConfig::default()).await.unwrap();
    assert_eq!(out.nodes[0].attempts, 1, "the half-open trial succeeded");
    assert_eq!(engine.breakers().failures("Flaky"), 0);
}

#[tokio::test(start_paused = true)]
async fn retries_count_toward_the_breaker() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Flaky", flaky(calls.clone(), 100, NodeErrorKind::Transient)));
    run_flaky(&engine, PipelineConfig::default()).await.unwrap_err();
    assert_eq!(engine.breakers().failures("Flaky"), 4);
    let err = run_flaky(&engine, PipelineConfig::default()).await.unwrap_err();
    assert!(matches!(err, ExecError::CircuitOpen { .. }), "the fifth failure opened it mid-retry: {err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_node_that_checks_the_token_stops_on_cancel() {
    let engine = engine_with(|r| register(r, "Spin", spin));
    let m = Manifest::new("spin").node("s", "Spin", "");
    let mut p = engine.build(&m, &shape(&["s"])).await.unwrap();
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move { cancel.cancel() })
    };
    let big = audio(vec![0.0; 100_000]);
    let err = p.run(inputs(&[("s", big)]), Mode::Once, RunLimits::default(), &cancel).await.unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(err, ExecError::Cancelled), "{err:?}");
}

#[tokio::test]
async fn the_time_limit_cancels_running_nodes() {
    let stopped = Arc::new(AtomicU32::new(0));
    let flag = stopped.clone();
    let engine = engine_with(move |r| {
        let flag = flag.clone();
        register(r, "Spin", move || {
            let flag = flag.clone();
            Box::new(FnNode(move |_: Ports, ctx: &NodeContext| {
                loop {
                    if ctx.check_cancelled().is_err() {
                        flag.fetch_add(1, Ordering::SeqCst);
                        return Err(NodeError::cancelled());
                    }
                    std::thread::yield_now();
                }
            }))
        })
    });
    let m = Manifest::new("spin").node("s", "Spin", "");
    let mut p = engine.build(&m, &shape(&["s"])).await.unwrap();
    let limits = RunLimits { timeout: Some(Duration::from_millis(20)), max_memory_bytes: None };
    let err = p
        .run(inputs(&[("s", audio(vec![0.0; 100_000]))]), Mode::Once, limits, &CancellationToken::new())
        .await
        .unwrap_err();
    match &err {
        ExecError::Timeout { limit, running } => {
            assert_eq!(*limit, Duration::from_millis(20));
            assert_eq!(running, &["s"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("time limit of 20 ms (running: s)"), "{err}");
    let again = p
        .run(inputs(&[("s", audio(vec![0.0]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(again, ExecError::Internal(_)), "a pipeline that lost nodes refuses to run: {again:?}");
}

#[tokio::test]
async fn a_failed_run_keeps_the_reports_of_the_nodes_it_called() {
    let calls = Arc::new(AtomicU32::new(0));
    let engine = engine_with(|r| register(r, "Broken", flaky(calls.clone(), u32::MAX, NodeErrorKind::Internal)));
    let m = Manifest::new("m").node("g", "GainNode", &gain(2.0)).node("b", "Broken", "").connect("g", "b");
    let mut p = engine.build(&m, &shape(&["g"])).await.unwrap();
    let err = p
        .run(inputs(&[("g", audio(vec![0.5]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Node { .. }), "{err:?}");
    let reports = p.take_failed_reports();
    let seen: Vec<(&str, NodeStatus)> = reports.iter().map(|r| (&*r.node_id, r.status)).collect();
    assert_eq!(seen, [("g", NodeStatus::Success), ("b", NodeStatus::Failed)]);
    assert!(p.take_failed_reports().is_empty(), "taken once");
}

#[tokio::test]
async fn a_timed_out_run_keeps_the_reports_of_the_nodes_that_finished() {
    let engine = engine_with(|r| register(r, "Spin", spin));
    let m = Manifest::new("m").node("g", "GainNode", &gain(2.0)).node("s", "Spin", "").connect("g", "s");
    let mut p = engine.build(&m, &shape(&["g"])).await.unwrap();
    let limits = RunLimits { timeout: Some(Duration::from_millis(20)), max_memory_bytes: None };
    let err = p
        .run(inputs(&[("g", audio(vec![0.0; 100_000]))]), Mode::Once, limits, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(&err, ExecError::Timeout { running, .. } if running == &["s"]), "{err:?}");
    let reports = p.take_failed_reports();
    assert_eq!(reports.iter().map(|r| (&*r.node_id, r.status)).collect::<Vec<_>>(), [("g", NodeStatus::Success)]);
}

#[tokio::test]
async fn the_memory_limit_stops_a_pipeline_that_holds_too_much() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("mem").node("a", "GainNode", &gain(2.0)).node("b", "GainNode", &gain(2.0)).connect("a", "b");
    let mut p = engine.build(&m, &shape(&["a"])).await.unwrap();
    let limits = RunLimits { timeout: None, max_memory_bytes: Some(6_000) };
    let err = p
        .run(inputs(&[("a", audio(vec![0.1; 1_000]))]), Mode::Once, limits, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::MemoryLimit { limit: 6_000, needed: 8_000, node_id: Some(node_id) } if node_id == "a"),
        "{err:?}"
    );
    // Inputs over the limit on their own: no node is to blame, and none is named.
    let limits = RunLimits { timeout: None, max_memory_bytes: Some(1_000) };
    let err = p
        .run(inputs(&[("a", audio(vec![0.1; 1_000]))]), Mode::Once, limits, &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(&err, ExecError::MemoryLimit { limit: 1_000, needed: 4_000, node_id: None }), "{err:?}");
    assert_eq!(err.node_id(), None);
    assert_eq!(
        err.to_string(),
        "execution exceeded its memory limit of 1000 bytes: the request's inputs brought the pipeline to 4000 bytes"
    );
}

/// Heavy nodes that hold an output `times` their input's size for a while, counting how many
/// hold one at once. With `reserve`, each reserves its output first, as expanding nodes do.
struct Holder {
    times: usize,
    reserve: bool,
    holding: Arc<AtomicU32>,
    most: Arc<AtomicU32>,
}

impl Node for Holder {
    fn output_bytes(&self, inputs: &Ports) -> Option<u64> {
        let bytes = inputs.audio(INPUT).ok()?.bytes().len() * self.times;
        self.reserve.then_some(bytes as u64)
    }
    fn process(&mut self, inputs: Ports, ctx: &NodeContext) -> Result<Ports, NodeError> {
        let input = inputs.audio(INPUT)?.as_f32().into_owned();
        let bytes = (4 * input.len() * self.times) as u64;
        if self.reserve {
            ctx.reserve_output(bytes)?;
        }
        let output = input.repeat(self.times);
        let now = self.holding.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        self.holding.fetch_sub(1, Ordering::SeqCst);
        Ok(Ports::audio_output(crate::audio::AudioBuffer::from_f32(output, 16_000, 1)))
    }
    fn is_heavy(&self, _: &Ports) -> bool {
        true
    }
}

/// A fan-out of 64 heavy branches under a memory limit with room for a few of their outputs:
/// the branches' outputs held at once stay within the limit (calls running at once used to
/// each see only what the run held when they started: all 64 ran at once), and the run ends
/// with MemoryLimit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_branches_share_the_memory_limit() {
    for (times, reserve) in [(8, true), (1, false)] {
        let (holding, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (h, m) = (holding.clone(), most.clone());
        let engine = engine_with(move |r| {
            register(r, "Holder", move || -> Box<dyn Node> {
                Box::new(Holder { times, reserve, holding: h.clone(), most: m.clone() })
            })
        });
        let mut manifest = Manifest::new("fan-out").node("src", "PassThroughNode", "");
        for b in 0..64 {
            let id = format!("b{b}");
            manifest = manifest.node(&id, "Holder", "").connect("src", &id);
        }
        let mut p = engine.build(&manifest, &shape(&["src"])).await.unwrap();
        let (input_bytes, output_bytes) = (4_000u64, 4_000 * times as u64);
        let limit = input_bytes + 6 * output_bytes;
        let limits = RunLimits { timeout: None, max_memory_bytes: Some(limit) };
        let err = p
            .run(inputs(&[("src", audio(vec![0.1; 1_000]))]), Mode::Once, limits, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::MemoryLimit { .. }), "{err:?}");
        let most = u64::from(most.load(Ordering::SeqCst));
        if !reserve {
            // Branches that reserve nothing still run side by side, as many as there is room for.
            assert!(most >= 2, "the branches ran one at a time");
        }
        assert!(
            input_bytes + most * output_bytes <= limit,
            "{most} outputs of {output_bytes} bytes held at once under a limit of {limit} (times {times})"
        );
    }
}

/// A fan-out into chains (an upmix by 8, then back down) under a limit with room for every
/// chain's final output but for only a few of the upmixes at once: each branch runs on to its
/// second stage, which frees the upmix, so the run fits. Starting every first stage before any
/// second one (as the ready queue used to) held all the upmixes and failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_into_chains_runs_each_chain_on_and_fits_a_tight_limit() {
    let (holding, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let engine = engine_with(move |r| {
        register(r, "Holder", move || -> Box<dyn Node> {
            Box::new(Holder { times: 8, reserve: true, holding: holding.clone(), most: most.clone() })
        });
        register(r, "Shrink", || -> Box<dyn Node> {
            Box::new(FnNode(|inputs: Ports, _: &NodeContext| {
                let x = inputs.audio(INPUT)?.as_f32().into_owned();
                Ok(Ports::audio_output(crate::audio::AudioBuffer::from_f32(x[..x.len() / 8].to_vec(), 16_000, 1)))
            }))
        });
    });
    let mut manifest = Manifest::new("chains").node("src", "PassThroughNode", "");
    for b in 0..64 {
        let (up, down) = (format!("up{b}"), format!("down{b}"));
        manifest = manifest.node(&up, "Holder", "").node(&down, "Shrink", "").connect("src", &up).connect(&up, &down);
    }
    let mut p = engine.build(&manifest, &shape(&["src"])).await.unwrap();
    let (input, upmix) = (4_000u64, 32_000u64);
    // The input, every chain's output (an input's size), room for four upmixes, and for one
    // second stage's output while the upmix it reads is still held.
    let limit = input + 64 * input + 4 * (upmix + input) + input;
    let limits = RunLimits { timeout: None, max_memory_bytes: Some(limit) };
    let out = p
        .run(inputs(&[("src", audio(vec![0.25; 1_000]))]), Mode::Once, limits, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.outputs.len(), 64);
    assert!(out.outputs.iter().all(|o| o.ports.audio(OUTPUT).unwrap().as_f32().iter().all(|&v| v == 0.25)));
}

#[tokio::test]
async fn metrics_are_recorded_per_node() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("m").node("a", "GainNode", &gain(0.5)).node("b", "PassThroughNode", "").connect("a", "b");
    let mut p = engine.build(&m, &shape(&["a"])).await.unwrap();
    let out = p
        .run(inputs(&[("a", audio(vec![0.5; 4_000]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    let a = &out.nodes[0];
    assert_eq!(&*a.node_id, "a");
    assert_eq!(a.samples_processed, 4_000);
    assert_eq!(a.memory_bytes, 16_000);
    assert!(a.execution_time > Duration::ZERO);
    assert_eq!(a.custom_metrics_json()["runtime"], json!("rust"));
    assert_eq!(out.peak_memory_bytes, 32_000, "input and gain output were both alive");
    assert!(out.wall_time >= a.execution_time);
}

#[tokio::test]
async fn building_reports_bad_parameters_of_every_node() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("p")
        .node("a", "GainNode", r#"{"gain_db": "x"}"#)
        .node("b", "PassThroughNode", r#"{"unexpected": 1}"#)
        .node("c", "Nope", "")
        .connect("a", "b");
    let err = engine.build(&m, &shape(&["a"])).await.err().unwrap();
    let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        ["nodes[0].params.gain_db", "nodes[1].params.unexpected", "nodes[2].node_type", "audio_inputs[c]"]
    );
    assert!(
        err.violations[0].message.starts_with("node `a` (GainNode): parameter `gain_db` must be a number"),
        "{}",
        err.violations[0].message
    );
    assert!(err.to_string().starts_with("invalid pipeline, 4 problems: (1) node `a`"), "{err}");
}

/// Python-like nodes whose construction refuses a `voice` it does not have, as
/// TextToSpeechNode's does; counts the nodes it built.
struct PickyRuntime(AtomicU32);

#[async_trait]
impl crate::nodes::ForeignNodes for PickyRuntime {
    fn declarations(&self) -> Vec<NodeSpec> {
        vec![
            NodeSpec::new("Picky", "checks its voice when built")
                .input(PortSpec::audio(INPUT, "audio"))
                .output(PortSpec::audio(OUTPUT, "audio"))
                .param(ParamSpec::text("voice", 16).default("known")),
        ]
    }
    async fn create(&self, _t: &str, _id: &str, p: &Params) -> Result<Arc<dyn AsyncNode>, Vec<ParamError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        match p.str("voice") {
            "known" => Ok(Arc::new(Sleeper)),
            other => Err(vec![ParamError::new("voice", format!("names no voice: `{other}`"))]),
        }
    }
}

#[tokio::test]
async fn a_check_only_construction_makes_is_reported_with_the_other_violations() {
    let picky = Arc::new(PickyRuntime(AtomicU32::new(0)));
    let engine = engine_with(|r| r.attach_foreign(picky.clone()).expect("no twin to disagree"));
    let m = Manifest::new("p")
        .node("a", "GainNode", r#"{"gain_db": "x"}"#)
        .node("t", "Picky", r#"{"voice": "zz"}"#)
        .node("u", "Picky", r#"{"voice": 7}"#)
        .connect("a", "t");
    let err = engine.build(&m, &shape(&["a", "u"])).await.err().unwrap();
    let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["nodes[0].params.gain_db", "nodes[2].params.voice", "nodes[1].params.voice"]);
    assert_eq!(err.violations[2].message, "node `t` (Picky): parameter `voice` names no voice: `zz`");
    assert_eq!(picky.0.load(Ordering::SeqCst), 1, "only the node that passed its own checks was built");
}

/// Sums every sample it has seen and emits the running total on flush.
struct Accumulate {
    total: f32,
}

impl Node for Accumulate {
    fn process(&mut self, inputs: Ports, _ctx: &NodeContext) -> Result<Ports, NodeError> {
        self.total += inputs.audio(INPUT)?.as_f32().iter().sum::<f32>();
        Ok(Ports::new())
    }
    fn flush(&mut self, _ctx: &NodeContext) -> Result<Ports, NodeError> {
        Ok(Ports::audio_output(AudioBuffer::from_f32(vec![self.total], 8_000, 1)))
    }
}

#[tokio::test]
async fn chunks_keep_node_state_and_flush_emits_the_tail() {
    let engine = engine_with(|r| register(r, "Accumulate", || Box::new(Accumulate { total: 0.0 })));
    let m = Manifest::new("s").node("g", "GainNode", &gain(2.0)).node("acc", "Accumulate", "").connect("g", "acc");
    let mut p = engine.build(&m, &RequestShape::stream()).await.unwrap();
    let cancel = CancellationToken::new();
    for chunk in [vec![0.25, 0.25], vec![0.5]] {
        let out = p.run(inputs(&[("g", audio(chunk))]), Mode::Chunk, RunLimits::default(), &cancel).await.unwrap();
        assert!(out.outputs.is_empty(), "the accumulator holds its output until flush");
    }
    let out = p.run(BTreeMap::new(), Mode::Flush, RunLimits::default(), &cancel).await.unwrap();
    assert_eq!(out_audio(&out, "acc"), [2.0]);
}

#[tokio::test]
async fn a_chunk_runs_only_what_is_downstream_of_its_node() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("s")
        .node("a", "PassThroughNode", "")
        .node("b", "PassThroughNode", "")
        .node("c", "PassThroughNode", "")
        .connect("a", "c")
        .connect("b", "c");
    let mut p = engine.build(&m, &RequestShape::stream()).await.unwrap();
    let out = p
        .run(inputs(&[("b", audio(vec![0.5]))]), Mode::Chunk, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    let ran: Vec<&str> = out.nodes.iter().map(|r| &*r.node_id).collect();
    assert_eq!(ran, ["b", "c"]);
    assert_eq!(out_audio(&out, "c"), [0.5]);
}

#[tokio::test]
async fn a_panicking_node_becomes_an_internal_error_and_the_pipeline_survives() {
    let engine = engine_with(|r| {
        register(r, "Boom", || {
            Box::new(FnNode(|inp: Ports, _: &NodeContext| {
                if inp.audio(INPUT)?.as_f32()[0] < 0.0 {
                    panic!("negative first sample");
                }
                Ok(Ports::audio_output(inp.audio(INPUT)?.clone()))
            }))
        })
    });
    let m = Manifest::new("boom").node("x", "Boom", "");
    let mut p = engine.build(&m, &RequestShape::stream()).await.unwrap();
    let cancel = CancellationToken::new();
    let err = p.run(inputs(&[("x", audio(vec![-1.0]))]), Mode::Chunk, RunLimits::default(), &cancel).await.unwrap_err();
    assert!(err.to_string().contains("panicked: negative first sample"), "{err}");
    let out = p.run(inputs(&[("x", audio(vec![1.0]))]), Mode::Chunk, RunLimits::default(), &cancel).await.unwrap();
    assert_eq!(out_audio(&out, "x"), [1.0]);
}

#[tokio::test]
async fn data_outputs_that_nothing_consumes_are_returned() {
    let engine = engine_with(|r| {
        r.register(TestFactory {
            name: "Tagger",
            inputs: &[INPUT],
            make: || -> Box<dyn Node> {
                Box::new(FnNode(|inp: Ports, _: &NodeContext| {
                    let a = inp.audio(INPUT)?;
                    Ok(Ports::audio_output(a.clone()).with("stats", PortValue::data(json!({"n": a.num_samples()}))))
                }))
            },
        })
    });
    let m = Manifest::new("d").node("t", "Tagger", "").node("p", "PassThroughNode", "").connect("t", "p");
    let mut p = engine.build(&m, &shape(&["t"])).await.unwrap();
    let out = p
        .run(inputs(&[("t", audio(vec![0.0; 3]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    let t = out.outputs.iter().find(|o| &*o.node_id == "t").expect("t's unconsumed stats are returned");
    assert_eq!(t.ports.len(), 1);
    assert_eq!(t.ports.get("stats").unwrap().as_data().unwrap(), &json!({"n": 3}));
}

#[tokio::test]
async fn requested_output_nodes_return_their_audio() {
    let engine = engine_with(|_| {});
    let m = Manifest::new("o").node("a", "GainNode", &gain(2.0)).node("b", "GainNode", &gain(2.0)).connect("a", "b");
    let s = RequestShape { output_nodes: vec!["a".into()], ..shape(&["a"]) };
    let mut p = engine.build(&m, &s).await.unwrap();
    let out = p
        .run(inputs(&[("a", audio(vec![0.1]))]), Mode::Once, RunLimits::default(), &CancellationToken::new())
        .await
        .unwrap();
    assert!((out_audio(&out, "a")[0] - 0.2).abs() < 1e-6);
    assert!((out_audio(&out, "b")[0] - 0.4).abs() < 1e-6);
}
