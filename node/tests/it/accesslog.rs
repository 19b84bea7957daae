//! The access log as operators configure it: a template, chosen JSON fields, a file that
//! logrotate moves away and SIGHUP reopens, and bad flags refused at startup.

use std::time::Duration;

use http::StatusCode;

use crate::harness::*;
use crate::nodes::routes_config;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

fn hangup(gw: &Gateway) {
    let ok = std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_templated_access_log_file_is_reopened_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    let up = Upstream::start("up", Behaviour::Echo).await;
    let mut gw = Gateway::start(
        &[("c.yaml", &routes_config(&up, &["r0"]))],
        &[
            "--access-log-file",
            file.to_str().unwrap(),
            "--access-log-format",
            "$client \"$method $uri\" $status route=$route ${duration_ms}ms $$",
        ],
    );
    assert_eq!(get(&gw.url("/r0?first=1"), &[]).await.0, StatusCode::OK);
    let first = testkit::eventually("the first line in the file", Duration::from_secs(5), || {
        lines(&file).into_iter().find(|l| l.contains("first=1"))
    });
    let re = regex::Regex::new(r#"^127\.0\.0\.1 "GET /r0\?first=1" 200 route=r0 [0-9]+\.[0-9]{3}ms \$$"#).unwrap();
    assert!(re.is_match(&first), "{first:?}");
    // Nothing of it went to stdout.
    assert!(!gw.logs().iter().any(|l| l.contains("first=1")), "{:?}", gw.logs());

    // logrotate moves the file away: lines still go to the moved file until SIGHUP.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    assert_eq!(get(&gw.url("/r0?before=1"), &[]).await.0, StatusCode::OK);
    testkit::eventually("the line in the moved file", Duration::from_secs(5), || {
        lines(&rotated).iter().any(|l| l.contains("before=1")).then_some(())
    });
    hangup(&gw);
    testkit::eventually("the reopen logged", Duration::from_secs(5), || {
        gw.logs().iter().any(|l| l.contains("SIGHUP: access log reopened")).then_some(())
    });
    assert_eq!(get(&gw.url("/r0?after=1"), &[]).await.0, StatusCode::OK);
    testkit::eventually("the line in the new file", Duration::from_secs(5), || {
        lines(&file).iter().any(|l| l.contains("after=1")).then_some(())
    });
    assert!(!lines(&rotated).iter().any(|l| l.contains("after=1")));
    assert_eq!(gw.exited(), None, "SIGHUP must not stop the node");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_fields_are_chosen_and_sighup_without_a_file_is_harmless() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    let mut gw =
        Gateway::start(&[("c.yaml", &routes_config(&up, &["r0"]))], &["--access-log-fields", "status,route,uri,time"]);
    assert_eq!(get(&gw.url("/r0?q=%22x%22"), &[]).await.0, StatusCode::OK);
    let line = testkit::eventually("the JSON line", Duration::from_secs(5), || {
        gw.logs().into_iter().find(|l| l.contains("/r0?q="))
    });
    // Those fields, in that order, and no other.
    assert!(line.starts_with(r#"{"status":200,"route":"r0","uri":"/r0?q=%22x%22","time":""#), "{line}");
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line).unwrap();
    assert_eq!(v.len(), 4, "{line}");
    let time = v["time"].as_str().unwrap();
    assert!(regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").unwrap().is_match(time), "{time}");

    hangup(&gw);
    testkit::eventually("the SIGHUP noted", Duration::from_secs(5), || {
        gw.logs().iter().any(|l| l.contains("no access log file to reopen")).then_some(())
    });
    assert_eq!(gw.exited(), None);
    assert_eq!(get(&gw.url("/r0"), &[]).await.0, StatusCode::OK);
}

#[test]
fn bad_access_log_flags_stop_the_node_at_startup_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, expect) in [
        (vec!["--access-log-format", "$client $agent"], "unknown access-log field `agent`"),
        (vec!["--access-log-fields", "status,size"], "unknown access-log field `size`"),
        (
            vec!["--access-log-file", "/nonexistent/dir/access.log"],
            "cannot open the access log /nonexistent/dir/access.log",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftgated"))
            .args(["--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--config-dir"])
            .arg(dir.path())
            .args(&flags)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started:\n{text}");
        assert!(text.contains(expect), "{flags:?}: {text}");
    }
}
