//! Compiles `proto/remotemedia/v1/*.proto` with protox (a pure-Rust protobuf compiler, so no
//! `protoc` is needed on the machine), generates the prost messages and tonic stubs into
//! `OUT_DIR`, writes the encoded descriptor set used by gRPC reflection, and stamps the build
//! time into `REMOTEMEDIA_BUILD_TIMESTAMP`.
//!
//! For the embedded interpreter it adds an rpath to the libpython pyo3 links against (so the
//! binary never loads another Python's library) and records that interpreter's `sys.prefix` as
//! the default `python_home` (`REMOTEMEDIA_DEFAULT_PYTHON_HOME`).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

const PROTO_FILES: &[&str] = &[
    "remotemedia/v1/common.proto",
    "remotemedia/v1/manifest.proto",
    "remotemedia/v1/execution.proto",
    "remotemedia/v1/streaming.proto",
    "remotemedia/v1/service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from("../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let files: Vec<PathBuf> = PROTO_FILES.iter().map(|f| proto_root.join(f)).collect();
    let descriptors = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("remotemedia_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure()
        // prost's codec with encode/decode timed into the server's metrics.
        .codec_path("crate::grpc::codec::TimedCodec")
        // Audio samples stay in the request's buffer: `bytes::Bytes` slices instead of `Vec<u8>` copies.
        .bytes(".remotemedia.v1.AudioBuffer.samples")
        .compile_fds(descriptors)?;

    pyo3_build_config::add_libpython_rpath_link_args();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let interpreter = pyo3_build_config::get();
    let prefix = interpreter
        .executable()
        .and_then(|exe| std::process::Command::new(exe).args(["-c", "import sys; print(sys.prefix)"]).output().ok())
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=REMOTEMEDIA_DEFAULT_PYTHON_HOME={prefix}");

    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<u64>()?,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
    };
    println!("cargo:rustc-env=REMOTEMEDIA_BUILD_TIMESTAMP={}", rfc3339(epoch));
    Ok(())
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (days-from-civil inverse).
fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3_600, (secs / 60) % 60, secs % 60)
}
