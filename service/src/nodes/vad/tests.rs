use std::f32::consts::PI;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::audio::AudioBuffer;
use crate::nodes::{INPUT, NodeErrorKind};

const RATE: u32 = 16_000;

fn ctx() -> NodeContext {
    NodeContext::new("vad", "VADNode", CancellationToken::new())
}

fn node(params: Value) -> Box<dyn Node> {
    VadFactory.build(params.as_object().unwrap()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A deterministic xorshift generator for noise.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

fn scale_to_dbfs(x: &mut [f32], dbfs: f32) {
    let g = 10f32.powf(dbfs / 20.0) / rms(x);
    x.iter_mut().for_each(|v| *v *= g);
}

fn white(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| r.uniform()).collect()
}

/// Pink noise (Paul Kellet's economy filter over white noise).
fn pink(n: usize, seed: u64) -> Vec<f32> {
    let (mut b0, mut b1, mut b2) = (0.0f32, 0.0f32, 0.0f32);
    white(n, seed)
        .into_iter()
        .map(|w| {
            b0 = 0.99765 * b0 + w * 0.0990460;
            b1 = 0.96300 * b1 + w * 0.2965164;
            b2 = 0.57000 * b2 + w * 1.0526913;
            b0 + b1 + b2 + w * 0.1848
        })
        .collect()
}

/// Vowel-like sound: harmonics of 140 Hz shaped by formants at 600, 1200 and 2500 Hz, with
/// syllable-rate modulation.
fn voiced(n: usize) -> Vec<f32> {
    let formant = |f: f32, centre: f32, width: f32| 1.0 / (1.0 + ((f - centre) / width).powi(2));
    let gains: Vec<f32> = (1..=28)
        .map(|k| {
            let f = 140.0 * k as f32;
            formant(f, 600.0, 150.0) + 0.5 * formant(f, 1_200.0, 200.0) + 0.2 * formant(f, 2_500.0, 300.0)
        })
        .collect();
    (0..n)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let env = 0.6 + 0.4 * (2.0 * PI * 4.0 * t).sin();
            let tone: f32 =
                gains.iter().enumerate().map(|(k, g)| g * (2.0 * PI * 140.0 * (k + 1) as f32 * t).sin()).sum();
            env * tone
        })
        .collect()
}

fn silence(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

fn seconds(s: f32) -> usize {
    (s * RATE as f32) as usize
}

/// Runs the node over `x` in chunks of `chunk` samples (0 = one piece) and returns the segments.
fn segments(params: Value, x: &[f32], chunk: usize) -> Vec<Segment> {
    let mut n = node(params);
    let c = ctx();
    let mut found = Vec::new();
    let mut collect = |p: Ports| {
        if let Some(Value::Array(list)) = p.get("segments").and_then(PortValue::as_data) {
            for s in list {
                found.push(Segment {
                    start_s: s["start_s"].as_f64().unwrap(),
                    end_s: s["end_s"].as_f64().unwrap(),
                    energy_db: s["energy_db"].as_f64().unwrap(),
                });
            }
        }
    };
    let size = if chunk == 0 { x.len() } else { chunk };
    for part in x.chunks(size) {
        let out = n
            .process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(part.to_vec(), RATE, 1))), &c)
            .unwrap();
        assert_eq!(out.audio(OUTPUT).unwrap().num_samples(), part.len(), "audio passes through");
        collect(out);
    }
    collect(n.flush(&c).unwrap());
    found
}

fn speech_between_silences(speech_s: f32, lead_s: f32, tail_s: f32, level_db: f32) -> Vec<f32> {
    let mut v = voiced(seconds(speech_s));
    scale_to_dbfs(&mut v, level_db);
    [silence(seconds(lead_s)), v, silence(seconds(tail_s))].concat()
}

#[test]
fn finds_one_segment_with_accurate_boundaries() {
    let x = speech_between_silences(1.5, 1.0, 1.0, -20.0);
    let segs = segments(json!({}), &x, 0);
    assert_eq!(segs.len(), 1, "{segs:?}");
    let s = segs[0];
    assert!((s.start_s - 1.0).abs() <= 0.03, "start {}", s.start_s);
    assert!((s.end_s - 2.5).abs() <= 0.03, "end {}", s.end_s);
    assert!((s.energy_db - -20.0).abs() < 2.0, "energy {}", s.energy_db);
}

/// Brown noise (integrated white noise, leaky so it stays bounded).
fn brown(n: usize, seed: u64) -> Vec<f32> {
    let mut acc = 0.0f32;
    white(n, seed)
        .into_iter()
        .map(|w| {
            acc = 0.998 * acc + 0.05 * w;
            acc
        })
        .collect()
}

#[test]
fn steady_white_pink_noise_and_hum_are_not_speech() {
    let n = seconds(4.0);
    let mut w = white(n, 1);
    scale_to_dbfs(&mut w, -15.0);
    let mut p = pink(n, 2);
    scale_to_dbfs(&mut p, -15.0);
    let mut hum: Vec<f32> = (0..n).map(|i| (2.0 * PI * 50.0 * i as f32 / RATE as f32).sin()).collect();
    scale_to_dbfs(&mut hum, -10.0);
    let mut b = brown(n, 3);
    scale_to_dbfs(&mut b, -15.0);
    for (name, x) in [("white", w), ("pink", p), ("brown", b), ("hum", hum)] {
        let lead = [silence(seconds(0.5)), x].concat();
        assert_eq!(segments(json!({}), &lead, 0), [], "{name}");
    }
}

#[test]
fn speech_in_noise_at_10_db_snr_is_found_and_noise_alone_is_not() {
    for (name, noise) in
        [("white", white(seconds(5.0), 7)), ("pink", pink(seconds(5.0), 9)), ("brown", brown(seconds(5.0), 11))]
    {
        let mut v = voiced(seconds(1.5));
        scale_to_dbfs(&mut v, -20.0);
        let mut x = noise;
        scale_to_dbfs(&mut x, -30.0);
        for (i, s) in v.iter().enumerate() {
            x[seconds(2.0) + i] += s;
        }
        let segs = segments(json!({}), &x, 0);
        assert_eq!(segs.len(), 1, "{name}: {segs:?}");
        assert!((segs[0].start_s - 2.0).abs() <= 0.06, "{name}: {segs:?}");
        assert!((segs[0].end_s - 3.5).abs() <= 0.06, "{name}: {segs:?}");
    }
}

#[test]
fn chunked_input_gives_the_same_segments() {
    let x = [speech_between_silences(0.8, 0.5, 0.7, -18.0), speech_between_silences(1.0, 0.2, 0.6, -25.0)].concat();
    let whole = segments(json!({}), &x, 0);
    assert_eq!(whole.len(), 2, "{whole:?}");
    for chunk in [320, 160, 1_000, 7] {
        assert_eq!(segments(json!({}), &x, chunk), whole, "chunks of {chunk}");
    }
}

#[test]
fn a_stream_emits_each_segment_when_it_closes_and_flushes_the_open_one() {
    let x = [speech_between_silences(0.6, 0.5, 0.6, -20.0), speech_between_silences(0.6, 0.0, 0.0, -20.0)].concat();
    let mut n = node(json!({"min_silence_ms": 300}));
    let c = ctx();
    let mut when = Vec::new();
    for (i, part) in x.chunks(seconds(0.02)).enumerate() {
        let out = n
            .process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(part.to_vec(), RATE, 1))), &c)
            .unwrap();
        if out.contains("segments") {
            when.push(i);
        }
    }
    assert_eq!(when.len(), 1, "one segment closed during the stream");
    // It closed once 300 ms of silence followed the speech that ended at 1.1 s.
    let closed_at = (when[0] + 1) as f64 * 0.02;
    assert!((1.38..=1.5).contains(&closed_at), "closed at {closed_at}");
    let tail = n.flush(&c).unwrap();
    let open = tail.get("segments").and_then(PortValue::as_data).unwrap().as_array().unwrap().clone();
    assert_eq!(open.len(), 1, "the open segment is flushed");
    assert!((open[0]["end_s"].as_f64().unwrap() - 2.3).abs() < 0.04, "{open:?}");
}

#[test]
fn short_bursts_are_ignored_and_short_gaps_are_bridged() {
    let burst = speech_between_silences(0.03, 0.5, 0.5, -20.0);
    assert_eq!(segments(json!({"min_speech_ms": 90}), &burst, 0), []);
    let gap = [speech_between_silences(0.5, 0.5, 0.0, -20.0), speech_between_silences(0.5, 0.15, 0.5, -20.0)].concat();
    assert_eq!(segments(json!({"min_silence_ms": 300}), &gap, 0).len(), 1, "a 150 ms gap is bridged");
    assert_eq!(segments(json!({"min_silence_ms": 60}), &gap, 0).len(), 2, "unless the hangover is shorter");
}

#[test]
fn the_threshold_sets_the_quietest_speech() {
    let quiet = speech_between_silences(1.0, 0.5, 0.5, -40.0);
    assert_eq!(segments(json!({}), &quiet, 0), [], "-40 dBFS is below the default -30");
    assert_eq!(segments(json!({"threshold_db": -50}), &quiet, 0).len(), 1);
}

#[test]
fn every_frame_size_works_and_stereo_is_averaged() {
    let x = speech_between_silences(1.0, 0.5, 0.5, -20.0);
    for ms in [10, 20, 30] {
        assert_eq!(segments(json!({"frame_ms": ms}), &x, 0).len(), 1, "{ms} ms");
    }
    let stereo: Vec<f32> = x.iter().flat_map(|v| [*v, *v]).collect();
    let mut n = node(json!({}));
    let mut out =
        n.process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(stereo, RATE, 2))), &ctx()).unwrap();
    out.append(n.flush(&ctx()).unwrap()).unwrap();
    assert_eq!(out.get("segments").unwrap().as_data().unwrap().as_array().unwrap().len(), 1);
}

#[test]
fn parameters_and_inputs_are_checked() {
    let errs = VadFactory.build(json!({"frame_ms": 25, "threshold_db": 3}).as_object().unwrap()).err().unwrap();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.contains("`frame_ms` must be 10, 20 or 30, got 25")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("`threshold_db` must be a number between -100 and 0, got 3")), "{text:?}");
    let mut n = node(json!({}));
    let err = n
        .process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(vec![0.0; 10], 4_000, 1))), &ctx())
        .unwrap_err();
    assert!(err.message.contains("4000 Hz is below the 8000 Hz"), "{}", err.message);
    assert!(err.message.contains("put an AudioResampleNode"), "{}", err.message);
    assert_eq!(err.kind, NodeErrorKind::Validation, "audio the node does not take is a VALIDATION error");
}

#[test]
fn features_separate_harmonic_sound_from_noise() {
    let mut a = Analyzer::new(480, RATE);
    let mut v = voiced(480);
    scale_to_dbfs(&mut v, -20.0);
    let f = a.analyze(&v);
    assert!((f.energy_db - -20.0).abs() < 0.5 && f.flatness < 0.1 && f.band_ratio > 0.9, "{f:?}");
    let mut w = white(480, 3);
    scale_to_dbfs(&mut w, -20.0);
    let f = a.analyze(&w);
    assert!(f.flatness > 0.4, "{f:?}");
    assert!(f.band_db < f.energy_db, "the band holds part of the energy: {f:?}");
    assert_eq!(a.analyze(&[0.0; 480]).energy_db, FLOOR_DB);
}

#[test]
fn a_dc_offset_changes_no_feature_and_no_segment() {
    let x = speech_between_silences(1.5, 1.0, 1.0, -20.0);
    let clean = segments(json!({}), &x, 0);
    assert_eq!(clean.len(), 1, "{clean:?}");
    for offset in [0.1f32, 0.2, 0.3, -0.25] {
        let shifted: Vec<f32> = x.iter().map(|v| v + offset).collect();
        let found = segments(json!({}), &shifted, 0);
        assert_eq!(found.len(), 1, "DC {offset}: {found:?}");
        assert!((found[0].start_s - clean[0].start_s).abs() < 1e-9, "DC {offset}: {found:?}");
        assert!((found[0].end_s - clean[0].end_s).abs() < 1e-9, "DC {offset}: {found:?}");
        assert!((found[0].energy_db - clean[0].energy_db).abs() < 0.05, "DC {offset}: {found:?}");
    }
    // Pure offset is silence from the first sample on.
    let mut dc = DcBlocker::new(RATE);
    assert!((0..1_000).all(|_| dc.filter(0.2) == 0.0));
    // A slow drift is removed too, and a 150 Hz tone, the bottom of the speech band, is kept.
    let mut dc = DcBlocker::new(RATE);
    let drift: Vec<f32> = (0..seconds(20.0)).map(|i| 0.3 * (2.0 * PI * 0.1 * i as f32 / RATE as f32).sin()).collect();
    let out: Vec<f32> = drift.iter().map(|&x| dc.filter(x)).collect();
    assert!(rms(&out) < 0.03 * rms(&drift), "drift left: {}", rms(&out) / rms(&drift));
    let mut dc = DcBlocker::new(RATE);
    let tone: Vec<f32> = (0..seconds(1.0)).map(|i| (2.0 * PI * 150.0 * i as f32 / RATE as f32).sin()).collect();
    let out: Vec<f32> = tone.iter().map(|&x| dc.filter(x)).collect();
    assert!((rms(&out[seconds(0.5)..]) / rms(&tone[seconds(0.5)..]) - 1.0).abs() < 0.01);
}

#[test]
fn speech_at_the_very_first_sample_is_found() {
    let x = speech_between_silences(1.0, 0.0, 1.0, -20.0);
    let found = segments(json!({}), &x, 0);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].start_s < 0.001 && (found[0].end_s - 1.0).abs() <= 0.03, "{found:?}");
    // The same streamed in 20 ms chunks.
    assert_eq!(segments(json!({}), &x, seconds(0.02)), found);
}

#[test]
fn bursts_that_start_the_stream_each_give_a_segment() {
    let burst = speech_between_silences(0.5, 0.0, 0.5, -12.0);
    let x: Vec<f32> = burst.iter().copied().cycle().take(burst.len() * 5).collect();
    let found = segments(json!({}), &x, seconds(0.02));
    assert_eq!(found.len(), 5, "{found:?}");
    for (i, s) in found.iter().enumerate() {
        assert!((s.start_s - i as f64).abs() <= 0.03, "{found:?}");
    }
}

#[test]
fn a_speech_like_background_from_the_start_becomes_the_floor() {
    // A steady harmonic buzz (a machine: harmonic, in the speech band, above the threshold, so
    // speech-like in every feature of a single frame) from the first sample on. With no pause to
    // measure a floor from, its own quietest level becomes the floor after 3 s, and speech above
    // it is still found.
    let n = seconds(12.0);
    let mut x: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            (1..=30).map(|k| (2.0 * PI * 100.0 * k as f32 * t).sin() / (1.0 + (k as f32 - 8.0).abs())).sum()
        })
        .collect();
    scale_to_dbfs(&mut x, -28.0);
    let mut talk = voiced(seconds(1.0));
    scale_to_dbfs(&mut talk, -8.0);
    for (i, v) in talk.iter().enumerate() {
        x[seconds(9.0) + i] += *v;
    }
    let found = segments(json!({}), &x, 0);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].start_s < 0.001 && (found[0].end_s - 3.0).abs() <= 0.1, "{found:?}");
    assert!((found[1].start_s - 9.0).abs() <= 0.1 && (found[1].end_s - 10.0).abs() <= 0.1, "{found:?}");
}

#[test]
fn padding_widens_segments_without_overlap_or_leaving_the_audio() {
    let x = [speech_between_silences(0.6, 0.5, 0.5, -20.0), speech_between_silences(0.6, 0.0, 0.3, -20.0)].concat();
    let plain = segments(json!({}), &x, 0);
    assert_eq!(plain.len(), 2, "{plain:?}");
    let padded = segments(json!({"speech_pad_ms": 100}), &x, 0);
    for (p, q) in plain.iter().zip(&padded) {
        assert!((q.start_s - (p.start_s - 0.1)).abs() < 1e-9 && (q.end_s - (p.end_s + 0.1)).abs() < 1e-9, "{padded:?}");
    }
    let wide = segments(json!({"speech_pad_ms": 2000}), &x, 0);
    let total = x.len() as f64 / f64::from(RATE);
    assert_eq!(wide.len(), 2, "{wide:?}");
    assert_eq!(wide[0].start_s, 0.0);
    assert!((wide[1].end_s - total).abs() < 1e-9, "{wide:?}");
    assert!(wide[0].end_s <= wide[1].start_s, "padding shares the gap: {wide:?}");
    let gap_middle = (plain[0].end_s + plain[1].start_s) / 2.0;
    assert!((wide[0].end_s - gap_middle).abs() < 1e-3, "{wide:?}");
    for chunk in [160, 320, 7] {
        assert_eq!(segments(json!({"speech_pad_ms": 2000}), &x, chunk), wide, "chunks of {chunk}");
        assert_eq!(segments(json!({"speech_pad_ms": 100}), &x, chunk), padded, "chunks of {chunk}");
    }
}

#[test]
fn a_padded_segment_is_emitted_once_its_padding_has_been_seen() {
    let x = speech_between_silences(0.6, 0.5, 2.0, -20.0);
    let mut n = node(json!({"min_silence_ms": 300, "speech_pad_ms": 500}));
    let c = ctx();
    let mut when = None;
    for (i, part) in x.chunks(seconds(0.02)).enumerate() {
        let out = n
            .process(Ports::new().with(INPUT, PortValue::Audio(AudioBuffer::from_f32(part.to_vec(), RATE, 1))), &c)
            .unwrap();
        if out.contains("segments") {
            when = Some((i + 1) as f64 * 0.02);
        }
    }
    // Speech ends at 1.1 s; the segment is out once 500 ms of padding has followed it.
    let when = when.expect("emitted during the stream");
    assert!((1.6..=1.7).contains(&when), "emitted at {when}");
}
