//! A panic on any thread is logged as a JSON ERROR line on standard output (where the log goes),
//! not only as text on standard error. The test runs itself as a child process, which installs
//! the server's logging and panics on a thread, and reads what the child wrote.

use std::process::Command;

const CHILD: &str = "REMOTEMEDIA_PANIC_TEST_CHILD";

#[test]
fn a_panic_is_logged_as_an_error_line() {
    if std::env::var_os(CHILD).is_some() {
        remotemedia::telemetry::init(remotemedia::config::LogFormat::Json, "info").unwrap();
        let joined = std::thread::Builder::new()
            .name("doomed".into())
            .spawn(|| panic!("the {} went wrong", "frobnicator"))
            .unwrap()
            .join();
        assert!(joined.is_err());
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new(me)
        .args(["--exact", "a_panic_is_logged_as_an_error_line", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        // The test harness's own text may precede a line on the same line.
        .filter_map(|l| l.find('{').and_then(|start| serde_json::from_str::<serde_json::Value>(&l[start..]).ok()))
        .find(|r| r["message"] == "a thread panicked")
        .unwrap_or_else(|| panic!("no panic line in the child's output:\n{stdout}"));
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["panic"], "the frobnicator went wrong");
    assert_eq!(line["thread"], "doomed");
    assert!(line["location"].as_str().unwrap().starts_with("tests/panics.rs:"), "{line}");
    // The default hook still writes the panic to standard error.
    assert!(String::from_utf8_lossy(&out.stderr).contains("the frobnicator went wrong"));
}
