use std::f64::consts::PI;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::nodes::{INPUT, NodeErrorKind, OUTPUT, PortValue};

fn ctx() -> NodeContext {
    NodeContext::new("rs", "AudioResampleNode", CancellationToken::new())
}

fn node(params: Value) -> Box<dyn Node> {
    ResampleFactory.build(params.as_object().unwrap()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Resamples `samples` in one call (process + flush), as an ExecutePipeline does.
fn once(params: Value, samples: &[f32], rate: u32, channels: u32) -> AudioBuffer {
    let output_rate = params["output_rate"].as_u64().unwrap() as u32;
    let mut n = node(params);
    let c = ctx();
    let mut out = n
        .process(
            Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(samples.to_vec(), rate, channels))),
            &c,
        )
        .unwrap();
    out.append(n.flush(&c).unwrap()).unwrap();
    match out.audio(OUTPUT) {
        Ok(a) => a.clone(),
        // Nothing came out (the input was shorter than one output frame).
        Err(_) => AudioBuffer::from_f32(Vec::new(), output_rate, channels),
    }
}

fn sine(freq: f64, rate: u32, frames: usize, amp: f64, phase: f64) -> Vec<f32> {
    (0..frames).map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate) + phase).sin()) as f32).collect()
}

/// Least-squares fit of `a·sin + b·cos` at `freq` over `x[from..to]`: (amplitude, phase).
fn fit(x: &[f32], freq: f64, rate: u32, from: usize, to: usize) -> (f64, f64) {
    let (mut ss, mut cc, mut sc, mut xs, mut xc) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, &v) in x.iter().enumerate().take(to).skip(from) {
        let w = 2.0 * PI * freq * i as f64 / f64::from(rate);
        let (s, c) = w.sin_cos();
        ss += s * s;
        cc += c * c;
        sc += s * c;
        xs += f64::from(v) * s;
        xc += f64::from(v) * c;
    }
    let det = ss * cc - sc * sc;
    let a = (xs * cc - xc * sc) / det;
    let b = (xc * ss - xs * sc) / det;
    ((a * a + b * b).sqrt(), b.atan2(a))
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

fn db(x: f64) -> f64 {
    20.0 * x.log10()
}

/// Passband gain (dB) and phase error (radians) of a 1 s sine through the resampler.
fn passband(params: &Value, fin: u32, fout: u32, freq: f64) -> (f64, f64) {
    let amp = 0.5;
    let phase = 0.3;
    let out = once(params.clone(), &sine(freq, fin, fin as usize, amp, phase), fin, 1);
    let x = out.as_f32();
    let n = x.len();
    let (a, ph) = fit(&x, freq, fout, n / 8, n - n / 8);
    let mut err = (ph - phase).rem_euclid(2.0 * PI);
    if err > PI {
        err -= 2.0 * PI;
    }
    (db(a / amp), err)
}

const PAIRS: &[(u32, u32)] = &[
    (48_000, 16_000),
    (44_100, 16_000),
    (16_000, 48_000),
    (22_050, 16_000),
    (8_000, 16_000),
    (32_000, 44_100),
    (96_000, 48_000),
    (44_100, 48_000),
    (44_101, 16_000),
    // Large down-sampling ratios: the output side of the block sets the transition band.
    (96_000, 8_000),
    (192_000, 8_000),
    (48_000, 1_000),
    (768_000, 8_000),
];

#[test]
fn high_quality_passband_is_flat_and_keeps_phase() {
    let params = json!({"output_rate": 0, "quality": "high"});
    for &(fin, fout) in PAIRS {
        let mut p = params.clone();
        p["output_rate"] = json!(fout);
        let nyq = f64::from(fin.min(fout)) / 2.0;
        for k in 1..=18 {
            let f = 0.9 * nyq * f64::from(k) / 18.0;
            let (g, ph) = passband(&p, fin, fout, f);
            assert!(g.abs() < 0.05, "{fin}->{fout} at {f:.0} Hz: gain {g:.4} dB");
            assert!(ph.abs() < 1e-3, "{fin}->{fout} at {f:.0} Hz: phase error {ph:.2e} rad");
        }
    }
}

/// A tone above the output Nyquist frequency must not come back (as an alias) above -90 dB.
/// The tone fades in and out over 0.25 s (a hard onset would put broadband energy into the
/// passband) and lasts three filter lengths, so the middle of the output is steady state.
fn stopband_db(params: &Value, fin: u32, fout: u32, freq: f64) -> f64 {
    let amp = 0.5;
    let fi = fin as usize;
    let (block, _) = block_frames(fin, fout, Quality::High);
    let frames = (3 * 2 * block).max(fi);
    let fade = fi / 4;
    let mut x = sine(freq, fin, frames, amp, 0.0);
    for i in 0..fade {
        let g = (0.5 - 0.5 * (PI * i as f64 / fade as f64).cos()) as f32;
        x[i] *= g;
        x[frames - 1 - i] *= g;
    }
    let out = once(params.clone(), &x, fin, 1);
    let y = out.as_f32();
    let n = y.len();
    db(rms(&y[n / 3..n - n / 3]) / (amp / 2f64.sqrt()))
}

#[test]
fn high_quality_attenuates_tones_above_the_output_nyquist_by_90_db() {
    for &(fin, fout) in PAIRS.iter().filter(|(i, o)| i > o) {
        let p = json!({"output_rate": fout, "quality": "high"});
        let out_nyq = f64::from(fout) / 2.0;
        let in_nyq = f64::from(fin) / 2.0;
        for k in 0..=10 {
            let f = out_nyq * 1.02 + (in_nyq * 0.98 - out_nyq * 1.02) * f64::from(k) / 10.0;
            let level = stopband_db(&p, fin, fout, f);
            assert!(level <= -90.0, "{fin}->{fout}: tone at {f:.0} Hz leaks at {level:.1} dB");
        }
    }
}

#[test]
fn lower_qualities_roll_off_earlier_but_reject_aliases_as_well() {
    for (q, flat_to) in [("medium", 0.85), ("low", 0.75)] {
        for &(fin, fout) in &[(48_000, 16_000), (96_000, 48_000), (44_100, 16_000), (96_000, 8_000), (48_000, 1_000)] {
            let p = json!({"output_rate": fout, "quality": q});
            let nyq = f64::from(fin.min(fout)) / 2.0;
            for k in 1..=6 {
                let f = flat_to * nyq * f64::from(k) / 6.0;
                let (g, ph) = passband(&p, fin, fout, f);
                assert!(g.abs() < 0.1, "{q} {fin}->{fout} at {f:.0} Hz: {g:.3} dB");
                assert!(ph.abs() < 1e-3, "{q} {fin}->{fout} at {f:.0} Hz: phase {ph:.2e}");
            }
            let level = stopband_db(&p, fin, fout, f64::from(fout) / 2.0 * 1.05);
            assert!(level <= -90.0, "{q} {fin}->{fout}: stopband {level:.1} dB");
        }
    }
}

#[test]
fn output_length_is_round_of_input_times_ratio() {
    for &(fin, fout) in PAIRS {
        for frames in [1usize, 2, 7, 160, 1001, 4_799, 48_000] {
            for q in ["low", "medium", "high"] {
                let out = once(json!({"output_rate": fout, "quality": q}), &vec![0.1; frames * 2], fin, 2);
                let expected = (frames as f64 * f64::from(fout) / f64::from(fin)).round() as usize;
                assert_eq!(out.frames(), expected, "{fin}->{fout} {q}, {frames} frames");
                assert_eq!(out.channels(), 2);
                assert_eq!(out.sample_rate(), fout);
            }
        }
    }
}

/// Feeds `samples` in chunks of the given sizes (cycled), then flushes.
fn chunked(params: Value, samples: &[f32], rate: u32, channels: u32, sizes: &[usize]) -> Vec<f32> {
    let mut n = node(params);
    let c = ctx();
    let mut out = Vec::new();
    let mut at = 0;
    let ch = channels as usize;
    for &size in sizes.iter().cycle() {
        if at >= samples.len() {
            break;
        }
        let end = (at + size * ch).min(samples.len());
        let p = n
            .process(
                Ports::new()
                    .with(INPUT, PortValue::Audio(AudioBuffer::from_f32(samples[at..end].to_vec(), rate, channels))),
                &c,
            )
            .unwrap();
        if let Ok(a) = p.audio(OUTPUT) {
            out.extend_from_slice(&a.as_f32());
        }
        at = end;
    }
    if let Ok(a) = n.flush(&c).unwrap().audio(OUTPUT) {
        out.extend_from_slice(&a.as_f32());
    }
    out
}

#[test]
fn chunked_streaming_matches_the_one_shot_output_exactly() {
    let mut x = sine(440.0, 48_000, 48_000, 0.4, 0.0);
    for (i, v) in sine(3_000.0, 48_000, 48_000, 0.2, 1.0).iter().enumerate() {
        x[i] += v;
    }
    let stereo: Vec<f32> = x.iter().zip(x.iter().rev()).flat_map(|(a, b)| [*a, *b]).collect();
    for q in ["low", "medium", "high"] {
        for (fin, fout) in [(48_000, 16_000), (48_000, 44_100), (48_000, 96_000)] {
            let p = json!({"output_rate": fout, "quality": q});
            let whole = once(p.clone(), &stereo, fin, 2).as_f32().into_owned();
            for sizes in [&[960usize][..], &[320], &[1, 7, 1000, 33, 4096], &[48_000]] {
                let parts = chunked(p.clone(), &stereo, fin, 2, sizes);
                assert_eq!(parts.len(), whole.len(), "{q} {fin}->{fout} {sizes:?}");
                assert!(parts == whole, "{q} {fin}->{fout} {sizes:?}: chunked output differs");
            }
        }
    }
}

#[test]
fn channels_are_resampled_independently() {
    let left = sine(1_000.0, 48_000, 24_000, 0.5, 0.0);
    let right = sine(2_500.0, 48_000, 24_000, 0.25, 0.0);
    let stereo: Vec<f32> = left.iter().zip(&right).flat_map(|(l, r)| [*l, *r]).collect();
    let out = once(json!({"output_rate": 16_000}), &stereo, 48_000, 2);
    let x = out.as_f32();
    let l: Vec<f32> = x.iter().step_by(2).copied().collect();
    let r: Vec<f32> = x.iter().skip(1).step_by(2).copied().collect();
    // 6400 samples at 16 kHz hold whole periods of both tones, so the two fits are orthogonal.
    let (from, to) = (800, 7_200);
    assert!((fit(&l, 1_000.0, 16_000, from, to).0 - 0.5).abs() < 1e-4);
    assert!(fit(&l, 2_500.0, 16_000, from, to).0 < 1e-5, "no crosstalk into the left channel");
    assert!((fit(&r, 2_500.0, 16_000, from, to).0 - 0.25).abs() < 1e-4);
    assert!(fit(&r, 1_000.0, 16_000, from, to).0 < 1e-5, "no crosstalk into the right channel");
}

#[test]
fn integer_audio_keeps_its_format() {
    let mut n = node(json!({"output_rate": 8_000}));
    let c = ctx();
    let x: Vec<i16> = sine(300.0, 16_000, 1_600, 0.5, 0.0).iter().map(|&v| (v * 32_767.0) as i16).collect();
    let mut out =
        n.process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_i16(x, 16_000, 1))), &c).unwrap();
    out.append(n.flush(&c).unwrap()).unwrap();
    let a = out.audio(OUTPUT).unwrap();
    assert_eq!(a.format(), SampleFormat::I16);
    assert_eq!(a.frames(), 800);
}

#[test]
fn equal_rates_pass_the_buffer_through_without_copying() {
    let mut n = node(json!({"output_rate": 16_000}));
    let a = AudioBuffer::from_f32(vec![0.1; 100], 16_000, 1);
    let ptr = a.bytes().as_ptr();
    let out = n.process(Ports::new().with(INPUT, PortValue::Audio(a)), &ctx()).unwrap();
    assert_eq!(out.audio(OUTPUT).unwrap().bytes().as_ptr(), ptr);
    let tail = n.flush(&ctx()).unwrap();
    assert_eq!(tail.audio(OUTPUT).unwrap(), &AudioBuffer::from_f32(vec![], 16_000, 1), "an empty tail");
}

#[test]
fn parameters_are_checked_by_name() {
    let errs =
        ResampleFactory.build(json!({"quality": "best", "output_rate": "fast"}).as_object().unwrap()).err().unwrap();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("`output_rate` must be an integer between 1000 and 768000, got \"fast\"")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("`quality` must be one of \"low\", \"medium\", \"high\", got \"best\"")),
        "{text:?}"
    );
    let errs = ResampleFactory.build(json!({}).as_object().unwrap()).err().unwrap();
    assert!(errs[0].to_string().contains("`output_rate` is required"));
}

#[test]
fn inputs_are_checked() {
    let c = ctx();
    let feed = |n: &mut Box<dyn Node>, a: AudioBuffer| n.process(Ports::new().with(INPUT, PortValue::Audio(a)), &c);
    let mut n = node(json!({"output_rate": 16_000, "input_rate": 48_000}));
    let err = feed(&mut n, AudioBuffer::from_f32(vec![0.0; 10], 44_100, 1)).unwrap_err();
    assert!(err.message.contains("input audio is 44100 Hz but parameter input_rate is 48000 Hz"), "{}", err.message);
    assert_eq!(err.field.as_deref(), Some("input.sample_rate"));
    assert_eq!(err.kind, NodeErrorKind::Validation, "audio the node does not take is a VALIDATION error");

    let mut n = node(json!({"output_rate": 16_000}));
    feed(&mut n, AudioBuffer::from_f32(vec![0.0; 10], 48_000, 1)).unwrap();
    let err = feed(&mut n, AudioBuffer::from_f32(vec![0.0; 10], 48_000, 2)).unwrap_err();
    assert!(err.message.contains("input channels changed from 1 to 2 within the stream"), "{}", err.message);
    assert_eq!(err.kind, NodeErrorKind::Validation);
    let err = feed(&mut n, AudioBuffer::from_f32(vec![0.0, f32::INFINITY], 48_000, 1)).unwrap_err();
    assert!(err.message.contains("input sample 1 is inf"), "{}", err.message);
    // Empty input is valid: an empty output at the output rate.
    let out = feed(&mut n, AudioBuffer::from_f32(vec![], 48_000, 1)).unwrap();
    assert_eq!(out.audio(OUTPUT).unwrap(), &AudioBuffer::from_f32(vec![], 16_000, 1));
}

#[test]
fn a_call_with_no_output_yet_returns_an_empty_buffer_at_the_output_rate() {
    let mut n = node(json!({"output_rate": 16_000}));
    let input = PortValue::Audio(AudioBuffer::from_f32(vec![0.5], 44_100, 1));
    let out = n.process(Ports::new().with(INPUT, input), &ctx()).unwrap();
    assert_eq!(out.audio(OUTPUT).unwrap(), &AudioBuffer::from_f32(vec![], 16_000, 1));
    let tail = n.flush(&ctx()).unwrap();
    assert_eq!(tail.audio(OUTPUT).unwrap().frames(), 0, "round(1 × 16000 / 44100) = 0 frames in all");
}

#[test]
fn streams_sharing_a_design_carry_no_state_between_them() {
    let x = sine(1_234.0, 44_100, 30_000, 0.5, 0.2);
    let p = json!({"output_rate": 22_050, "quality": "medium"});
    let first = once(p.clone(), &x, 44_100, 1).as_f32().into_owned();
    // The next requests at these rates use the same filter and plans, and the same thread's
    // transform buffers.
    let noise: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    once(p.clone(), &noise, 44_100, 1);
    let again = once(p, &x, 44_100, 1).as_f32().into_owned();
    assert!(first == again, "a stream's output depends on nothing another stream did");
}

#[test]
fn reported_latencies_match_the_docs() {
    // docs/nodes.md states the block and filter delay per quality at 48 -> 16 kHz.
    for (q, block_ms, delay_ms) in [(Quality::High, 32.0, 16.0), (Quality::Medium, 16.0, 8.0), (Quality::Low, 8.0, 4.0)]
    {
        let d = fft::design(48_000, 16_000, q).unwrap();
        let block = d.block_in as f64 / 48.0;
        let delay = d.delay() as f64 / 16.0;
        assert!((block - block_ms).abs() < 1.0, "{q:?}: block {block:.1} ms");
        assert!((delay - delay_ms).abs() < 1.0, "{q:?}: delay {delay:.1} ms");
    }
    // And the blocks of large down-sampling ratios, at high quality.
    for (fin, fout, block_ms) in [(96_000, 8_000, 64.0), (48_000, 1_000, 512.0)] {
        let d = fft::design(fin, fout, Quality::High).unwrap();
        assert_eq!(d.block_out, 512, "{fin} -> {fout}");
        assert_eq!(d.block_in as f64 * 1000.0 / f64::from(fin), block_ms, "{fin} -> {fout}");
    }
}

/// Blocks through rubato's own `Fft`, built with the settings the shared design uses.
fn rubato_blocks(fin: u32, fout: u32, q: Quality, ch: usize, blocks: &[Vec<f32>]) -> Vec<f32> {
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{FixedSync, Indexing, Resampler, WindowFunction};
    let (a, b) = (fin as usize, fout as usize);
    let (block, _) = block_frames(fin, fout, q);
    let mut r =
        rubato::Fft::<f32>::new_custom(a, b, block, 1, ch, WindowFunction::BlackmanHarris2, FixedSync::Input).unwrap();
    let mut out = Vec::new();
    let mut input = vec![0.0; block * ch];
    for x in blocks {
        input[..x.len()].copy_from_slice(x);
        let mut y = vec![0.0; r.output_frames_next() * ch];
        let (frames, _) = (y.len() / ch, ());
        let adapter_in = InterleavedSlice::new(&input, ch, block).unwrap();
        let mut adapter_out = InterleavedSlice::new_mut(&mut y, ch, frames).unwrap();
        let indexing = Indexing::new().partial_len(x.len() / ch);
        let (_, written) = r.process_into_buffer(&adapter_in, &mut adapter_out, Some(&indexing)).unwrap();
        out.extend_from_slice(&y[..written * ch]);
    }
    out
}

#[test]
fn the_output_is_rubatos() {
    // Down, up, an odd ratio, two channels, every quality; whole blocks, a short block and an
    // empty one (silence), as a stream feeds them.
    let cases = [
        (48_000, 16_000, Quality::High, 1),
        (16_000, 48_000, Quality::Medium, 1),
        (44_100, 16_000, Quality::High, 2),
        (8_000, 22_050, Quality::Low, 2),
    ];
    for (fin, fout, q, ch) in cases {
        let design = fft::design(fin, fout, q).unwrap();
        let n = design.block_in * ch;
        let noise: Vec<f32> = (0..3 * n).map(|i| ((i * 7919 + 13) % 2003) as f32 / 2003.0 - 0.5).collect();
        let blocks =
            vec![noise[..n].to_vec(), noise[n..2 * n].to_vec(), noise[2 * n..2 * n + n / 3 / ch * ch].to_vec(), vec![]];
        let mut ours = fft::Fft::new(design.clone(), ch);
        let mut got = Vec::new();
        for x in &blocks {
            let start = got.len();
            got.resize(start + design.block_out * ch, 0.0);
            ours.block(x, &mut got[start..]).unwrap();
        }
        let want = rubato_blocks(fin, fout, q, ch, &blocks);
        assert_eq!(got.len(), want.len(), "{fin} -> {fout} Hz");
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(got == want, "{fin} -> {fout} Hz, {q:?}, {ch} channels: differs from rubato by up to {worst:e}");
    }
}

#[test]
fn a_thread_keeps_the_buffers_of_short_designs_only() {
    // Run on a thread of its own: the buffers are per thread.
    std::thread::spawn(|| {
        assert_eq!(fft::design(44_101, 16_000, Quality::Low).unwrap().block_in, 4 * 44_101, "as docs/nodes.md says");
        let short = fft::design(48_000, 16_000, Quality::High).unwrap();
        let mut r = fft::Fft::new(short.clone(), 1);
        r.block(&[0.5; 100], &mut vec![0.0; short.block_out]).unwrap();
        let kept = fft::scratch_held();
        assert!(kept >= 2 * short.block_in, "the buffers stay for the next block: {kept}");
        // 44 101 Hz shares no factor with 16 000: blocks of 176 404 frames, megabytes of buffers.
        let long = fft::design(44_101, 16_000, Quality::High).unwrap();
        let mut r = fft::Fft::new(long.clone(), 1);
        r.block(&[0.5; 100], &mut vec![0.0; long.block_out]).unwrap();
        assert_eq!(fft::scratch_held(), 0, "a long design's buffers are freed after its block");
    })
    .join()
    .unwrap();
}
